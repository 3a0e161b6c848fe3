"""Embeddings for retrieval: an embedded default that needs no network, or a provider.

The default is WordLlama's `l2_supercat` 256-dim static model, which the `wordllama` wheel
ships inside the package (weights and tokenizer): CPU and numpy only, ~0.3 s to load, well
under a second for 1,000 passages. Its `load()` would look for the tokenizer elsewhere and
then download it; pointing `cache_dir` at the package's own directory with
`disable_download=True` loads it from the wheel, so `vos dev`, the tests and a fresh install
work offline and nothing is fetched at run time.

A configured embedding provider (the agents file's `embedding:` block) goes through
`app.agents.providers.build_embedder` (Ollama `/api/embed`, OpenAI-compatible
`/v1/embeddings`); `ProviderEmbedder` gives it the same interface as the default.

Every embedder has a `name` (stored with each passage: a model change means re-embedding)
and `embed(texts) -> numpy float32 array (n, dim)`, rows L2-normalised so a dot product is
the cosine similarity.

Example:
    embedder = default_embedder()          # loaded once per process
    vectors = embedder.embed(["rotate the key", "key rotation"])
    float(vectors[0] @ vectors[1])         # cosine similarity, e.g. 0.8
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

import numpy as np

DEFAULT_MODEL = "l2_supercat"
DEFAULT_DIM = 256


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length (or zero)."""


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero (no NaN).

    Example:
        >>> normalise(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


class WordLlamaEmbedder:
    """The embedded default: WordLlama loaded from the wheel, downloads disabled.

    Example:
        >>> WordLlamaEmbedder().name
        'wordllama/l2_supercat-256'
    """

    def __init__(self, config: str = DEFAULT_MODEL, dim: int = DEFAULT_DIM):
        import wordllama  # imported here: only retrieval needs it, and it loads numpy

        package_dir = os.path.dirname(wordllama.__file__)
        # cache_dir = the package itself: weights/ and tokenizers/ are inside the wheel.
        self._model = wordllama.WordLlama.load(config=config, dim=dim, cache_dir=package_dir,
                                               disable_download=True)
        self.name = f"wordllama/{config}-{dim}"
        self.dim = dim

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalise(self._model.embed(list(texts)))


class ProviderEmbedder:
    """A provider embedder (`build_embedder(...)`) behind the same interface.

    Example:
        ProviderEmbedder(build_embedder("ollama", "http://100.64.0.1:11434",
                                        "nomic-embed-text"), "ollama")
    """

    def __init__(self, embedder, provider: str, batch: int = 64):
        self._embedder = embedder
        self.name = f"{provider}/{embedder.model}"
        self._batch = batch

    def embed(self, texts: list[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch):
            rows.extend(self._embedder.embed(list(texts[start:start + self._batch])))
        return normalise(np.array(rows, dtype=np.float32).reshape(len(texts), -1))


_default: WordLlamaEmbedder | None = None
_lock = threading.Lock()


def default_embedder() -> WordLlamaEmbedder:
    """The process-wide embedded model (loaded on first use, then shared)."""
    global _default
    with _lock:
        if _default is None:
            _default = WordLlamaEmbedder()
        return _default

"""Embeddings for retrieval: an embedded default that needs no network, or a provider.

The default is WordLlama's `l2_supercat` 256-dim static model, which the `wordllama` wheel
ships inside the package (weights and tokenizer): CPU and numpy only, ~0.3 s to load, well
under a second for 1,000 passages. Its `load()` would look for the tokenizer elsewhere and
then download it; pointing `cache_dir` at the package's own directory with
`disable_download=True` loads it from the wheel, so `vos dev`, the tests and a fresh install
work offline and nothing is fetched at run time.

A configured embedding provider (the agents file's `embedding:` block) goes through
`app.agents.providers.build_embedder` (Ollama `/api/embed`, OpenAI-compatible
`/v1/embeddings`); `ProviderEmbedder` gives it the same interface as the default, and
`build_retrieval_embedder(cfg.embedding, os.environ)` builds the one a file configures (the
worker, `vos agents work --config`, and `vos docs add --config` use it). A provider that
fails raises `EmbeddingUnavailable`: at query time retrieval then ranks lexically only and
logs `embedding_unavailable` (a task never fails for it); at ingest nothing is written.

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
from collections.abc import Mapping
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


class EmbeddingUnavailable(RuntimeError):  # noqa: N818 - reads as the condition it is
    """The embedding provider could not be reached or refused the request (an outage, a
    rate limit, a rejected key). Retrieval answers it by ranking lexically only (see
    `app.agents.retrieval.retrieve`); ingest refuses and writes nothing."""

    def __init__(self, name: str, kind: str, message: str):
        super().__init__(f"embedding provider {name} unavailable: {message}")
        self.name, self.kind = name, kind


class EmbeddingDimensionError(ValueError):
    """An embedder's vectors have another dimension than the vectors stored under its name:
    the model behind the name changed. Not retried and not papered over: the operator
    names the new model (a distinct `embedding.model`, e.g. with its tag) so the passages
    are re-embedded, or removes and re-adds the documents."""


class ProviderEmbedder:
    """A provider embedder (`build_embedder(...)`) behind the same interface as the default.

    `name` is `{provider}/{model}` (stored with each passage, so a change of provider or
    model re-embeds the tenant's passages on the next retrieval). Inputs go `batch` per
    request; the rows come back float32 and L2-normalised. A provider failure raises
    `EmbeddingUnavailable`; rows of differing length raise `EmbeddingDimensionError`.

    Example:
        ProviderEmbedder(build_embedder("ollama", "http://100.64.0.1:11434",
                                        "nomic-embed-text"), "ollama")
    """

    def __init__(self, embedder, provider: str, batch: int = 64):
        if batch < 1:
            raise ValueError("batch: must be at least 1")
        self._embedder = embedder
        self.provider, self.model = provider, embedder.model
        self.name = f"{provider}/{embedder.model}"
        self.dim: int | None = None  # learnt from the first answer
        self._batch = batch

    def embed(self, texts: list[str]) -> np.ndarray:
        from app.agents.providers import ProviderError

        texts = list(texts)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch):
            try:
                rows.extend(self._embedder.embed(texts[start:start + self._batch]))
            except ProviderError as exc:
                raise EmbeddingUnavailable(self.name, exc.kind, str(exc)) from exc
        dims = {len(row) for row in rows}
        if self.dim is not None:
            dims.add(self.dim)
        if len(dims) > 1 or 0 in dims:
            raise EmbeddingDimensionError(
                f"embedding provider {self.name} returned vectors of {sorted(dims)} "
                "dimensions; one model has one dimension")
        if not rows:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        self.dim = len(rows[0])
        return normalise(np.array(rows, dtype=np.float32))


def build_retrieval_embedder(config, environ: Mapping[str, str], *,
                             timeout: float = 30.0, sanitizer=None) -> Embedder:
    """The tenant's embedder from the agents file's `embedding:` block (an
    `app.agents.spec.EmbeddingConfig`, or None for the embedded default). The key is read
    from `environ` by the name in `api_key_env`; a name given but unset is a ValueError
    naming the variable (Ollama needs no key).

    Example:
        embedder = build_retrieval_embedder(cfg.embedding, os.environ)
        embedder.name    # 'ollama/nomic-embed-text', or 'wordllama/l2_supercat-256'
    """
    if config is None:
        return default_embedder()
    from app.agents.envnames import key_from_env
    from app.agents.providers import build_embedder

    key = key_from_env(environ, config.api_key_env, f"embedding ({config.provider})")
    inner = build_embedder(config.provider, str(config.base_url).rstrip("/"), config.model,
                           key, timeout=timeout, sanitizer=sanitizer)
    return ProviderEmbedder(inner, config.provider)


_default: WordLlamaEmbedder | None = None
_lock = threading.Lock()


def default_embedder() -> WordLlamaEmbedder:
    """The process-wide embedded model (loaded on first use, then shared)."""
    global _default
    with _lock:
        if _default is None:
            _default = WordLlamaEmbedder()
        return _default

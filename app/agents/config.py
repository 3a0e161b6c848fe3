"""Deployments and the default chain, validated before anything connects.

The operator describes providers as data (JSON, e.g. in the env file as
`VOS_AGENTS_CONFIG`); keys are referenced by the *name* of an environment variable and
resolved from the mapping the caller passes in (the CLI passes `os.environ`), so no key ever
sits in the config itself.

Example:
    >>> cfg = WorkforceConfig.model_validate({"deployments": [
    ...     {"name": "local", "provider": "ollama", "base_url": "http://127.0.0.1:11434/v1",
    ...      "model": "llama3.1:8b", "context_window": 8192}]})
    >>> cfg.default_chain
    ['local']
"""

from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, model_validator

from app.agents.prefix import ToolSpec
from app.agents.providers import build_provider
from app.agents.router import Accounting, Deployment, RetryPolicy, Router
from app.agents.sanitize import PII_PATTERNS, Sanitizer


class DeploymentConfig(BaseModel):
    """One model at one provider."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    provider: Literal["anthropic", "openai", "openrouter", "ollama"]
    base_url: HttpUrl
    model: str = Field(min_length=1)
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(default=1024, gt=0)
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the key")
    stream: bool = False
    timeout_seconds: float = Field(default=60, gt=0, le=600)


class ToolConfig(BaseModel):
    """A tool definition that is part of every agent's stable (cached) prefix."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str
    parameters: dict = Field(default_factory=lambda: {"type": "object", "properties": {}})


class WorkforceConfig(BaseModel):
    """All deployments, the chain agents use unless their model_preferences say otherwise,
    the retry policy, the PII patterns to redact, and the shared system prompt and tools."""

    deployments: list[DeploymentConfig] = Field(min_length=1)
    system_prompt: str = "You are an agent of the Agent VOS. Answer from the context given."
    tools: list[ToolConfig] = Field(default_factory=list)
    default_chain: list[str] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    pii: list[str] = Field(default_factory=lambda: ["email"])
    retrieval_token_budget: int = Field(default=600, ge=0, le=100_000)

    @model_validator(mode="after")
    def _chain_names_exist(self) -> "WorkforceConfig":
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names must be unique, got {names}")
        if not self.default_chain:
            self.default_chain = names
        unknown = [n for n in self.default_chain if n not in names]
        if unknown:
            raise ValueError(f"default_chain names {unknown} are not deployments ({names})")
        bad_pii = [p for p in self.pii if p not in PII_PATTERNS]
        if bad_pii:
            raise ValueError(
                f"unknown pii pattern(s) {bad_pii}; choose from {sorted(PII_PATTERNS)}")
        return self


def tool_specs(config: WorkforceConfig) -> tuple[ToolSpec, ...]:
    """The configured tools as prompt ToolSpecs."""
    return tuple(ToolSpec(t.name, t.description, t.parameters) for t in config.tools)


def build_router(config: WorkforceConfig, accounting: Accounting,
                 environ: dict[str, str]) -> Router:
    """SDK-backed deployments from `config`, keys looked up in `environ` by name.

    A missing key is an error naming the variable to set (Ollama needs none).
    """
    sanitizer = Sanitizer(pii=tuple(config.pii))
    deployments = []
    for d in config.deployments:
        key = ""
        if d.api_key_env:
            key = environ.get(d.api_key_env, "")
            if not key:
                raise ValueError(f"deployment {d.name!r} needs its API key: set the "
                                 f"environment variable {d.api_key_env}")
        elif d.provider != "ollama":
            raise ValueError(f"deployment {d.name!r} ({d.provider}) has no api_key_env; name "
                             "the environment variable that holds its key")
        provider = build_provider(d.provider, str(d.base_url).rstrip("/"), key,
                                  timeout=d.timeout_seconds, stream=d.stream,
                                  sanitizer=sanitizer)
        deployments.append(Deployment(d.name, provider, d.model, d.context_window,
                                      d.max_output_tokens))
    return Router(deployments, accounting, default_chain=config.default_chain,
                  policy=config.retry, sanitizer=sanitizer)

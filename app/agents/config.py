"""Deployments and the default chain, validated before anything connects.

The operator describes providers as data: the agents file (`app.agents.spec.AgentsFile`
extends `WorkforceConfig`; YAML or JSON, see examples/agents.yaml); keys are referenced by
the *name* of an environment variable (a value that looks like a key is refused) and
resolved from the mapping the caller passes in (the CLI passes `os.environ`), so no key ever
sits in the config itself.

Example:
    >>> cfg = WorkforceConfig.model_validate({"deployments": [
    ...     {"name": "local", "provider": "ollama", "base_url": "http://127.0.0.1:11434",
    ...      "model": "llama3.1:8b", "context_window": 8192}]})
    >>> cfg.default_chain
    ['local']
"""

from decimal import Decimal
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.agents.envnames import check_env_name, key_from_env  # noqa: F401 - check_env_name: re-exported for spec.py
from app.agents.prefix import ToolSpec
from app.agents.providers import build_provider
from app.agents.router import Accounting, Deployment, RetryPolicy, Router
from app.agents.sanitize import PII_PATTERNS, Sanitizer
from app.agents.tools import BUILTIN_TOOLS, HttpToolConfig, check_schema

# Provider kinds that need no key: a local Ollama, native API or its OpenAI-compatible /v1.
KEYLESS_PROVIDERS = ("ollama", "ollama-openai")


def price_provider(kind: str) -> str:
    """The `model_prices.provider` a deployment of this provider kind is priced under: both
    Ollama kinds are one provider (same models, same $0 list price).

    Example:
        >>> price_provider("ollama-openai"), price_provider("anthropic")
        ('ollama', 'anthropic')
    """
    return "ollama" if kind in KEYLESS_PROVIDERS else kind


class PriceOverride(BaseModel):
    """A deployment's own price (USD per million tokens), used instead of the built-in list
    price: `vos agents apply` writes it as a new model_prices version when it differs from
    the one in force. Cache prices default to the input price (no discount assumed)."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: Decimal = Field(ge=0, le=100_000)
    output_per_mtok: Decimal = Field(ge=0, le=100_000)
    cache_read_per_mtok: Decimal | None = Field(default=None, ge=0, le=100_000)
    cache_write_per_mtok: Decimal | None = Field(default=None, ge=0, le=100_000)

    def resolved(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """(input, output, cache read, cache write), the cache ones defaulted."""
        read = self.input_per_mtok if self.cache_read_per_mtok is None else \
            self.cache_read_per_mtok
        write = self.input_per_mtok if self.cache_write_per_mtok is None else \
            self.cache_write_per_mtok
        return self.input_per_mtok, self.output_per_mtok, read, write


class DeploymentConfig(BaseModel):
    """One model at one provider."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    provider: Literal["anthropic", "openai", "openrouter", "ollama", "ollama-openai"]
    base_url: HttpUrl
    model: str = Field(min_length=1)
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(default=1024, gt=0)
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the key")
    stream: bool = False
    timeout_seconds: float = Field(default=60, gt=0, le=600)
    prices: PriceOverride | None = None

    _key_name = field_validator("api_key_env")(lambda v: check_env_name(v))


class ToolConfig(BaseModel):
    """A tool an agent may call, declared once in the file (agents list it by name).

    `kind: declared` (the default) is a definition only: the model sees it in the prompt's
    stable (cached) prefix. `kind: http` is also called: the worker POSTs the call's
    arguments to `http.url` (on the mesh) and returns the answer to the model
    (`app.agents.tools.call_http_tool`); its `parameters` must fit the schema subset the
    worker checks (`app.agents.tools.check_schema`). The built-in names (delegate,
    search_knowledge, report) are taken: agents list those without declaring them.

    Example:
        >>> ToolConfig.model_validate({"name": "uptime", "description": "d", "kind": "http",
        ...                            "http": {"url": "http://100.64.0.7:8080/up"}}).http.method
        'POST'
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str
    kind: Literal["declared", "http"] = "declared"
    parameters: dict = Field(default_factory=lambda: {"type": "object", "properties": {}})
    # validate_default: "kind: http without an http: block" is reported at `http`
    http: HttpToolConfig | None = Field(None, validate_default=True)

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in BUILTIN_TOOLS:
            raise ValueError(f"{value!r} is a built-in tool: agents list it under tools: "
                             "without declaring it; give your tool another name")
        return value

    @field_validator("parameters")
    @classmethod
    def _checkable_schema(cls, value: dict, info: ValidationInfo) -> dict:
        if info.data.get("kind") == "http":
            problems = check_schema(value)
            if value.get("type") != "object":
                problems.insert(0, "parameters: an HTTP tool takes a JSON object "
                                   "(type: object)")
            if problems:
                raise ValueError("; ".join(problems))
        return value

    @field_validator("http")
    @classmethod
    def _http_block(cls, value: HttpToolConfig | None,
                    info: ValidationInfo) -> HttpToolConfig | None:
        kind = info.data.get("kind")
        if kind == "http" and value is None:
            raise ValueError("kind http needs an http: block (url, timeout_seconds, "
                             "headers_env)")
        if kind == "declared" and value is not None:
            raise ValueError("only a kind: http tool has an http: block (add kind: http)")
        return value


class WorkforceConfig(BaseModel):
    """All deployments, the chain agents use unless their model_preferences say otherwise,
    the retry policy, the PII patterns to redact, and the shared system prompt and tools.
    A key it does not know is an error (a typo must not silently fall back to a default)."""

    # pydantic's error text would quote the input: a key pasted where a variable NAME belongs
    # (api_key_env, headers_env) must not reach a log or a terminal that way
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    deployments: list[DeploymentConfig] = Field(min_length=1)
    system_prompt: str = "You are an agent of the Agent VOS. Answer from the context given."
    tools: list[ToolConfig] = Field(default_factory=list)
    default_chain: list[str] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    pii: list[str] = Field(default_factory=lambda: ["email"])
    retrieval_token_budget: int = Field(default=1000, ge=0, le=100_000)

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
        key = key_from_env(environ, d.api_key_env, f"deployment {d.name!r}")
        if not d.api_key_env and d.provider not in KEYLESS_PROVIDERS:
            raise ValueError(f"deployment {d.name!r} ({d.provider}) has no api_key_env; name "
                             "the environment variable that holds its key")
        provider = build_provider(d.provider, str(d.base_url).rstrip("/"), key,
                                  timeout=d.timeout_seconds, stream=d.stream,
                                  sanitizer=sanitizer)
        deployments.append(Deployment(d.name, provider, d.model, d.context_window,
                                      d.max_output_tokens))
    return Router(deployments, accounting, default_chain=config.default_chain,
                  policy=config.retry, sanitizer=sanitizer)

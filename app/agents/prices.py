"""Token usage normalisation and price math.

Providers count cached tokens differently. Anthropic's `input_tokens` *excludes* cache reads
and cache writes (they come in `cache_read_input_tokens` / `cache_creation_input_tokens`);
OpenAI's `prompt_tokens` *includes* `prompt_tokens_details.cached_tokens` (and, on OpenRouter,
`cache_write_tokens`). Everything is normalised to four disjoint counts before pricing.

Example:
    >>> usage = Usage(uncached_input=1000, cache_read=2000, cache_write=0, output=100)
    >>> price = Price("anthropic", "claude-sonnet-4-5", Decimal("3"), Decimal("15"),
    ...               Decimal("0.30"), Decimal("3.75"))
    >>> cost_usd(usage, price)
    Decimal('0.00510000')
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("0.00000001")
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Usage:
    """Disjoint token counts of one call: every input token is in exactly one bucket."""

    uncached_input: int
    cache_read: int
    cache_write: int
    output: int

    @property
    def total_input(self) -> int:
        return self.uncached_input + self.cache_read + self.cache_write


@dataclass(frozen=True)
class Price:
    """USD per million tokens for one model, valid from `effective_from` on.

    Example:
        >>> Price("openai", "gpt-4.1", Decimal(2), Decimal(8), Decimal("0.5"), Decimal(2)).model
        'gpt-4.1'
    """

    provider: str
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    effective_from: datetime = EPOCH
    version: str = "builtin"
    id: Any = None


def cost_usd(usage: Usage, price: Price) -> Decimal:
    """Price `usage` exactly (Decimal), rounded to 1e-8 USD."""
    total = (
        usage.uncached_input * price.input_per_mtok
        + usage.cache_read * price.cache_read_per_mtok
        + usage.cache_write * price.cache_write_per_mtok
        + usage.output * price.output_per_mtok
    ) / MILLION
    return total.quantize(COST_QUANTUM)


def billable_equivalent_input(usage: Usage, price: Price) -> float:
    """Input tokens weighted by their price relative to an uncached input token.

    A cache read at a 90 % discount counts 0.1; a cache write at +25 % counts 1.25.

    Example:
        >>> p = Price("anthropic", "m", Decimal(3), Decimal(15), Decimal("0.3"), Decimal("3.75"))
        >>> billable_equivalent_input(Usage(100, 1000, 0, 5), p)
        200.0
    """
    if price.input_per_mtok == 0:
        return float(usage.total_input)
    read_weight = price.cache_read_per_mtok / price.input_per_mtok
    write_weight = price.cache_write_per_mtok / price.input_per_mtok
    return float(usage.uncached_input + usage.cache_read * read_weight
                 + usage.cache_write * write_weight)


def usage_from_anthropic(usage: Any) -> Usage:
    """Normalise an Anthropic `Usage`: `input_tokens` already excludes the cache buckets."""
    return Usage(
        uncached_input=usage.input_tokens or 0,
        cache_read=usage.cache_read_input_tokens or 0,
        cache_write=usage.cache_creation_input_tokens or 0,
        output=usage.output_tokens or 0,
    )


def usage_from_openai(usage: Any) -> Usage:
    """Normalise an OpenAI `CompletionUsage`: `prompt_tokens` includes the cache buckets."""
    details = getattr(usage, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", None) or 0) if details else 0
    written = (getattr(details, "cache_write_tokens", None) or 0) if details else 0
    uncached = usage.prompt_tokens - cached - written
    if uncached < 0:
        raise ValueError(
            f"provider reported prompt_tokens={usage.prompt_tokens} smaller than cached "
            f"{cached} + written {written}; refusing to price an impossible usage"
        )
    return Usage(uncached, cached, written, usage.completion_tokens or 0)


class PriceBook:
    """Versioned prices: the newest row whose `effective_from` is not after the call wins.

    Example:
        >>> book = PriceBook(DEFAULT_PRICES)
        >>> book.price_at("openai", "gpt-4.1-mini").input_per_mtok
        Decimal('0.40')
    """

    def __init__(self, prices: list[Price] | tuple[Price, ...]):
        self._prices = sorted(prices, key=lambda p: p.effective_from, reverse=True)

    def price_at(self, provider: str, model: str, at: datetime | None = None) -> Price:
        at = at or datetime.now(UTC)
        for price in self._prices:
            if price.provider == provider and price.model == model and price.effective_from <= at:
                return price
        raise LookupError(
            f"no price for {provider}/{model} effective at {at.isoformat()}; add a row to "
            "model_prices (see app/agents/prices.py DEFAULT_PRICES for the shape)"
        )


def _price(provider: str, model: str, inp: str, out: str, read: str, write: str) -> Price:
    return Price(provider, model, Decimal(inp), Decimal(out), Decimal(read), Decimal(write),
                 EPOCH, "2025-11-public-list")


# Public list prices (USD / million tokens; Anthropic cache read 0.1x, 5-minute write 1.25x
# of input). Operators add newer rows with a later effective_from instead of editing.
# OpenAI bills no cache-write premium, so its write price equals the input price.
DEFAULT_PRICES: tuple[Price, ...] = (
    _price("anthropic", "claude-sonnet-4-6", "3.00", "15.00", "0.30", "3.75"),
    _price("anthropic", "claude-sonnet-4-5", "3.00", "15.00", "0.30", "3.75"),
    _price("anthropic", "claude-haiku-4-5", "1.00", "5.00", "0.10", "1.25"),
    _price("anthropic", "claude-opus-4-6", "5.00", "25.00", "0.50", "6.25"),
    _price("openai", "gpt-4.1", "2.00", "8.00", "0.50", "2.00"),
    _price("openai", "gpt-4.1-mini", "0.40", "1.60", "0.10", "0.40"),
    _price("openai", "gpt-4o-mini", "0.15", "0.60", "0.075", "0.15"),
    _price("openrouter", "anthropic/claude-sonnet-4.6", "3.00", "15.00", "0.30", "3.75"),
    _price("openrouter", "openai/gpt-4.1-mini", "0.40", "1.60", "0.10", "0.40"),
    _price("ollama", "llama3.1:8b", "0", "0", "0", "0"),
    _price("ollama", "qwen2.5:14b", "0", "0", "0", "0"),
)

"""Usage normalisation and price math, against figures computed by hand."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace as NS

import pytest

from app.agents.budgets import worst_case_cost, worst_case_usage
from app.agents.prices import (
    DEFAULT_PRICES,
    Price,
    PriceBook,
    Usage,
    billable_equivalent_input,
    cost_usd,
    usage_from_anthropic,
    usage_from_openai,
)

SONNET = Price("anthropic", "claude-sonnet-4-6", Decimal("3"), Decimal("15"), Decimal("0.30"),
               Decimal("3.75"))
GPT41 = Price("openai", "gpt-4.1", Decimal("2"), Decimal("8"), Decimal("0.50"), Decimal("2"))


def test_anthropic_input_tokens_exclude_cache_buckets():
    raw = NS(input_tokens=58, cache_read_input_tokens=1600, cache_creation_input_tokens=0,
             output_tokens=10)
    assert usage_from_anthropic(raw) == Usage(58, 1600, 0, 10)


def test_anthropic_missing_cache_fields_count_as_zero():
    raw = NS(input_tokens=7, cache_read_input_tokens=None, cache_creation_input_tokens=None,
             output_tokens=3)
    assert usage_from_anthropic(raw) == Usage(7, 0, 0, 3)


def test_openai_prompt_tokens_include_cached_tokens():
    raw = NS(prompt_tokens=1659, completion_tokens=10,
             prompt_tokens_details=NS(cached_tokens=1536, cache_write_tokens=None))
    assert usage_from_openai(raw) == Usage(123, 1536, 0, 10)


def test_openrouter_cache_writes_are_part_of_prompt_tokens():
    raw = NS(prompt_tokens=2000, completion_tokens=5,
             prompt_tokens_details=NS(cached_tokens=0, cache_write_tokens=1800))
    assert usage_from_openai(raw) == Usage(200, 0, 1800, 5)


def test_openai_without_details_is_all_uncached():
    raw = NS(prompt_tokens=40, completion_tokens=2, prompt_tokens_details=None)
    assert usage_from_openai(raw) == Usage(40, 0, 0, 2)


def test_impossible_openai_usage_is_refused():
    raw = NS(prompt_tokens=10, completion_tokens=1,
             prompt_tokens_details=NS(cached_tokens=50, cache_write_tokens=None))
    with pytest.raises(ValueError, match="impossible usage"):
        usage_from_openai(raw)


def test_costs_match_hand_computation():
    # Sonnet, cache write call: 58*3 + 1600*3.75 + 10*15 = 174 + 6000 + 150 = 6324 µ$.
    assert cost_usd(Usage(58, 0, 1600, 10), SONNET) == Decimal("0.00632400")
    # Sonnet, cache read call: 174 + 1600*0.30 + 150 = 804 µ$.
    assert cost_usd(Usage(58, 1600, 0, 10), SONNET) == Decimal("0.00080400")
    # GPT-4.1 uncached: 1659*2 + 10*8 = 3398 µ$; cached: 123*2 + 1536*0.5 + 80 = 1094 µ$.
    assert cost_usd(Usage(1659, 0, 0, 10), GPT41) == Decimal("0.00339800")
    assert cost_usd(Usage(123, 1536, 0, 10), GPT41) == Decimal("0.00109400")


def test_billable_equivalent_weights_cache_reads_and_writes():
    assert billable_equivalent_input(Usage(100, 1000, 0, 0), SONNET) == pytest.approx(200)
    assert billable_equivalent_input(Usage(0, 0, 1000, 0), SONNET) == pytest.approx(1250)
    assert billable_equivalent_input(Usage(123, 1536, 0, 0), GPT41) == pytest.approx(507)


def test_price_book_uses_the_version_in_force():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    old = SONNET
    new = Price(SONNET.provider, SONNET.model, Decimal("2"), Decimal("10"), Decimal("0.2"),
                Decimal("2.5"), now - timedelta(days=1), "cut")
    book = PriceBook([old, new])
    assert book.price_at(SONNET.provider, SONNET.model, now).version == "cut"
    assert book.price_at(SONNET.provider, SONNET.model, now - timedelta(days=2)) is old


def test_unknown_model_price_is_a_clear_error():
    with pytest.raises(LookupError, match="no price for openai/gpt-9.*model_prices"):
        PriceBook(DEFAULT_PRICES).price_at("openai", "gpt-9")


def test_worst_case_is_an_upper_bound_of_what_a_call_can_cost():
    worst = worst_case_usage(1000, 256)  # 1000 is already a bound (bytes): no pad
    assert worst == Usage(1000, 0, 0, 256)
    # Any split of the 1000 input tokens into cache buckets costs no more than the worst
    # case, which prices every input token at the dearest rate (here the cache write).
    for split in (Usage(1000, 0, 0, 256), Usage(0, 1000, 0, 256), Usage(0, 0, 1000, 256)):
        assert cost_usd(split, SONNET) <= worst_case_cost(worst, SONNET)
    assert worst_case_cost(worst, SONNET) == cost_usd(Usage(0, 0, 1000, 256), SONNET)

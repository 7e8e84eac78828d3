"""Token cost from the price table: exact USD values, the ``*`` default, and malformed tables failing at start-up."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ryot_telemetry import ConfigurationError, PriceTable, configure
from ryot_telemetry.testing import capture
from support.fakes import ChatParams, Choice, Completion, Message, ScriptedRouter, usage

COST = "ryot.token.cost_estimate.usd"
PRICES = {"gpt-small": {"prompt": 0.0015, "completion": 0.002}, "*": {"prompt": 0.01, "completion": 0.03}}


async def call(cap, model: str, prompt: int, completion: int) -> None:
    resp = Completion(model=model, choices=[Choice(message=Message(content="x"))], usage=usage(prompt, completion))
    router = cap.instrument_router(ScriptedRouter(response=resp))
    await router.openai_chat_completion(ChatParams(model=model))


async def test_exact_cost_for_a_priced_model() -> None:
    """600 prompt tokens at 0.0015/1k = 0.0009 USD, 200 completion tokens at 0.002/1k = 0.0004 USD."""
    cap = capture(prices=PRICES)
    try:
        await call(cap, "gpt-small", 600, 200)
        await call(cap, "gpt-small", 600, 200)
        cap.collect()
        assert cap.value(COST, model="gpt-small", token_type="prompt") == pytest.approx(0.0018, rel=1e-12)
        assert cap.value(COST, model="gpt-small", token_type="completion") == pytest.approx(0.0008, rel=1e-12)
    finally:
        cap.shutdown()


async def test_star_entry_prices_unlisted_models() -> None:
    """A model not in the table is priced by ``*``: 1000 prompt at 0.01/1k and 100 completion at 0.03/1k."""
    cap = capture(prices=PRICES)
    try:
        await call(cap, "other", 1000, 100)
        cap.collect()
        assert cap.value(COST, model="other", token_type="prompt") == pytest.approx(0.01, rel=1e-12)
        assert cap.value(COST, model="other", token_type="completion") == pytest.approx(0.003, rel=1e-12)
    finally:
        cap.shutdown()


async def test_no_table_or_unpriced_model_means_no_cost() -> None:
    """Without a price table, or for a model the table does not price (no ``*``), no cost series exists."""
    cap = capture()
    cap2 = capture(prices={"a": {"prompt": 1, "completion": 1}})
    try:
        await call(cap, "m", 600, 200)
        await call(cap2, "b", 600, 200)
        cap.collect()
        cap2.collect()
        assert cap.points(COST) == []
        assert cap2.points(COST) == []
    finally:
        cap.shutdown()
        cap2.shutdown()


def test_price_table_from_json_file(tmp_path: Path) -> None:
    """from_file reads {"model": {"prompt", "completion"}}; a missing side prices at 0; ``*`` is the default."""
    p = tmp_path / "prices.json"
    p.write_text(json.dumps({"m": {"prompt": 0.5}, "*": [0.1, 0.2]}))
    t = PriceTable.from_file(p)
    assert (t.get("m").prompt, t.get("m").completion) == (0.5, 0.0)
    assert (t.get("x").prompt, t.get("x").completion) == (0.1, 0.2)
    assert len(t) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed price table"),
        (json.dumps({"m": {"prompt": -1}}), "price table entry for 'm': prompt must be a finite number >= 0, got -1"),
        (json.dumps({"m": {"input": 1}}), "price table entry for 'm' must be"),
        (json.dumps(["m"]), "price table must be a mapping of model -> prices, got list"),
    ],
)
def test_malformed_table_is_one_clear_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, message: str
) -> None:
    """configure() with a malformed table (argument or RYOT_TELEMETRY_PRICE_TABLE) raises one ConfigurationError."""
    p = tmp_path / "prices.json"
    p.write_text(content)
    with pytest.raises(ConfigurationError) as info:
        configure(exporters="none", prices=str(p), gpu=False)
    assert str(info.value).startswith(f"prices: {p}: " if message != "malformed price table" else "prices: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    monkeypatch.setenv("RYOT_TELEMETRY_PRICE_TABLE", str(p))
    with pytest.raises(ConfigurationError, match=r"^RYOT_TELEMETRY_PRICE_TABLE: "):
        configure(exporters="none", gpu=False)


def test_missing_price_file_names_the_path(tmp_path: Path) -> None:
    """A price table path that does not exist fails at start-up naming the file."""
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigurationError, match=re.escape(f"prices: cannot read price table {missing}")):
        configure(exporters="none", prices=missing, gpu=False)


async def cached_call(cap, model: str, prompt: int, completion: int, cached: int | None) -> None:
    resp = Completion(
        model=model, choices=[Choice(message=Message(content="x"))], usage=usage(prompt, completion, cached)
    )
    router = cap.instrument_router(ScriptedRouter(response=resp))
    await router.openai_chat_completion(ChatParams(model=model))


async def test_cached_prompt_tokens_are_priced_at_the_cached_price() -> None:
    """1000 prompt tokens, 400 of them cached: 600 at 0.003/1k (0.0018) as prompt, 400 at 0.0003/1k (0.00012) as
    cached_prompt; completion unchanged. Exact to 1e-9, twice (the counter adds up)."""
    prices = {"m": {"prompt": 0.003, "completion": 0.015, "cached_prompt": 0.0003}}
    cap = capture(prices=prices)
    try:
        for _ in range(2):
            await cached_call(cap, "m", 1000, 50, 400)
        cap.collect()
        assert cap.value(COST, model="m", token_type="prompt") == pytest.approx(2 * 0.0018, abs=1e-9)
        assert cap.value(COST, model="m", token_type="cached_prompt") == pytest.approx(2 * 0.00012, abs=1e-9)
        assert cap.value(COST, model="m", token_type="completion") == pytest.approx(2 * 0.00075, abs=1e-9)
        assert {p.attributes["token_type"] for p in cap.points(COST)} == {"prompt", "cached_prompt", "completion"}
    finally:
        cap.shutdown()


async def test_cached_price_defaults_to_the_prompt_price_and_the_total_is_unchanged() -> None:
    """Without a cached_prompt price the cached part is priced as prompt: the prompt and cached_prompt series add
    up to what the whole prompt costs (1000 x 0.003/1k = 0.003)."""
    cap = capture(prices={"m": {"prompt": 0.003, "completion": 0.015}})
    try:
        await cached_call(cap, "m", 1000, 50, 400)
        cap.collect()
        prompt = cap.value(COST, model="m", token_type="prompt")
        cached = cap.value(COST, model="m", token_type="cached_prompt")
        assert (prompt, cached) == (pytest.approx(0.0018, abs=1e-9), pytest.approx(0.0012, abs=1e-9))
        assert prompt + cached == pytest.approx(0.003, abs=1e-9)
    finally:
        cap.shutdown()


@pytest.mark.parametrize(
    ("cached", "prompt_usd", "cached_usd"),
    [
        (None, 0.003, None),  # no cache report: all prompt
        (0, 0.003, None),  # nothing cached: no cached_prompt series
        (1000, None, 0.0003),  # all cached
        (1500, None, 0.0003),  # more cached than prompt: the whole prompt, at the cached price
    ],
)
async def test_cached_split_edges(cached: int | None, prompt_usd: float | None, cached_usd: float | None) -> None:
    """Absent, zero, whole and excess cached counts split 1000 prompt tokens as the SPEC's formula says."""
    cap = capture(prices={"m": {"prompt": 0.003, "completion": 0.0, "cached_prompt": 0.0003}})
    try:
        await cached_call(cap, "m", 1000, 0, cached)
        cap.collect()
        got = {p.attributes["token_type"]: p.value for p in cap.points(COST)}
        want = {k: v for k, v in (("prompt", prompt_usd), ("cached_prompt", cached_usd)) if v is not None}
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == pytest.approx(v, abs=1e-9)
    finally:
        cap.shutdown()


def test_price_table_reads_cached_prompt_from_a_file(tmp_path: Path) -> None:
    """from_file takes an optional cached_prompt per model; absent (or null) means the prompt price."""
    p = tmp_path / "prices.json"
    p.write_text(json.dumps({"m": {"prompt": 0.5, "completion": 1, "cached_prompt": 0.05}, "n": {"prompt": 0.5}}))
    t = PriceTable.from_file(p)
    assert (t.get("m").prompt, t.get("m").completion, t.get("m").cached_prompt) == (0.5, 1.0, 0.05)
    assert t.get("n").cached_prompt is None
    assert PriceTable({"x": {"prompt": 1, "cached_prompt": None}}).get("x").cached_prompt is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"prompt": 1, "cached_prompt": -0.1},
            "prices: price table entry for 'm': cached_prompt must be a finite number >= 0, got -0.1",
        ),
        (
            {"prompt": 1, "cached_prompt": "cheap"},
            "prices: price table entry for 'm': cached_prompt must be a finite number >= 0, got 'cheap'",
        ),
        (
            {"prompt": 1, "cached_prompt": float("nan")},
            "prices: price table entry for 'm': cached_prompt must be a finite number >= 0, got nan",
        ),
        (
            {"prompt": 1, "cache_read": 0.1},
            "prices: price table entry for 'm' must be {'prompt': <usd per 1k>, 'completion': <usd per 1k>} "
            "(optionally 'cached_prompt': <usd per 1k>), got {'prompt': 1, 'cache_read': 0.1}",
        ),
    ],
)
def test_bad_cached_price_is_one_clear_configuration_error(entry: dict, message: str) -> None:
    """A cached_prompt price that is not a finite number >= 0, or a misspelt key, fails configure() at start-up."""
    with pytest.raises(ConfigurationError) as e:
        configure(exporters="none", prices={"m": entry}, gpu=False)
    assert str(e.value) == message

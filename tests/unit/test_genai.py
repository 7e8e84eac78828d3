"""Dual emission of the OpenTelemetry GenAI semantic-convention metrics: exact points, buckets and attributes."""

from __future__ import annotations

import itertools

import pytest

import ryot_telemetry._wrapper as _wrapper
from fakes import (
    ChatParams,
    Choice,
    Completion,
    CompletionParams,
    ScriptedRouter,
    content_chunk,
    usage,
    usage_chunk,
)
from ryot_telemetry import _recorder
from ryot_telemetry.genai import SEMCONV
from ryot_telemetry.testing import Capture, capture

BOUNDS = {s.name: s.buckets for s in SEMCONV}
DUR = "gen_ai.server.request.duration"
TTFT = "gen_ai.server.time_to_first_token"
TPOT = "gen_ai.server.time_per_output_token"
USAGE = "gen_ai.client.token.usage"
BASE = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "vllm",
    "gen_ai.request.model": "m",
    "gen_ai.response.model": "m-2024",
}


@pytest.fixture
def scap() -> Capture:
    c = capture(semconv=True, genai_provider="vllm")
    yield c
    c.shutdown()


def clock(monkeypatch: pytest.MonkeyPatch, *times: float) -> None:
    """Script the wrapper/recorder clock: the given times in order, then the last one forever."""
    ticks = itertools.chain(times, itertools.repeat(times[-1]))
    fake = lambda: next(ticks)  # noqa: E731
    monkeypatch.setattr(_recorder, "_clock", fake)
    monkeypatch.setattr(_wrapper, "_clock", fake)


def counts(name: str, value: float) -> tuple[int, ...]:
    """The bucket counts of a single observation ``value`` under the metric's semconv boundaries."""
    bounds = BOUNDS[name]
    i = next((k for k, b in enumerate(bounds) if value <= b), len(bounds))
    return tuple(1 if k == i else 0 for k in range(len(bounds) + 1))


async def test_stream_emits_all_four_with_exact_values(scap: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream: start 10.0, first token 10.5, end 12.0, usage 12/4 -> duration 2.0, TTFT 0.5, TPOT 0.5, usage 12/4."""
    clock(monkeypatch, 10.0, 10.5, 12.0)
    chunks = [content_chunk(str(i), model="m-2024") for i in range(4)] + [usage_chunk(usage(12, 4), model="m-2024")]
    router = scap.instrument_router(ScriptedRouter(chunks=chunks))
    [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    scap.collect()
    # 2.0 s falls in (1.28, 2.56]; 0.5 s sits on a boundary (upper-inclusive); 12 tokens in (4, 16], 4 in (1, 4]
    assert [counts(n, v).index(1) for n, v in ((DUR, 2.0), (TTFT, 0.5), (TPOT, 0.5), (USAGE, 12), (USAGE, 4))] == [
        8,
        9,
        9,
        2,
        1,
    ]
    for name, value in ((DUR, 2.0), (TTFT, 0.5), (TPOT, 0.5)):
        h = scap.histogram(name, **BASE)
        assert h is not None, name
        assert (h.count, h.sum) == (1, value), name
        assert h.explicit_bounds == BOUNDS[name], name
        assert h.bucket_counts == counts(name, value), name
        assert scap.series(name) == [BASE]
    assert scap.series(USAGE) == [
        {**BASE, "gen_ai.token.type": "input"},
        {**BASE, "gen_ai.token.type": "output"},
    ]
    for token_type, n in (("input", 12), ("output", 4)):
        h = scap.histogram(USAGE, **BASE, **{"gen_ai.token.type": token_type})
        assert (h.count, h.sum, h.bucket_counts) == (1, n, counts(USAGE, n))
        assert h.explicit_bounds == BOUNDS[USAGE]


async def test_failure_carries_error_type_and_no_ttft(scap: Capture) -> None:
    """A failing call: one duration point with error.type=oom, and no TTFT, TPOT or token usage."""
    router = scap.instrument_router(ScriptedRouter(raises=MemoryError("CUDA out of memory")))
    with pytest.raises(MemoryError):
        await router.openai_chat_completion(ChatParams(model="m"))
    scap.collect()
    base = {k: v for k, v in BASE.items() if k != "gen_ai.response.model"}
    assert scap.series(DUR) == [{**base, "error.type": "oom"}]
    assert scap.histogram(DUR, **base, **{"error.type": "oom"}).count == 1
    assert [scap.points(n) for n in (TTFT, TPOT, USAGE)] == [[], [], []]


async def test_partial_stream_has_error_type_but_no_ttft(scap: Capture) -> None:
    """A stream failing after 2 chunks: duration with error.type=inference_error, no TTFT (successes only)."""
    chunks = [content_chunk(str(i), model="m-2024") for i in range(5)]
    router = scap.instrument_router(ScriptedRouter(chunks=chunks, raises=RuntimeError("boom"), raise_after=2))
    with pytest.raises(RuntimeError):
        [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    scap.collect()
    assert scap.series(DUR) == [{**BASE, "error.type": "inference_error"}]
    assert scap.points(TTFT) == []


async def test_text_completion_operation_name(scap: Capture) -> None:
    """openai_completion is gen_ai.operation.name=text_completion; usage gives input and output points."""
    resp = Completion(model="m-2024", choices=[Choice(text="x")], usage=usage(5, 3))
    router = scap.instrument_router(ScriptedRouter(response=resp))
    await router.openai_completion(CompletionParams(model="m"))
    scap.collect()
    attrs = {**BASE, "gen_ai.operation.name": "text_completion"}
    assert scap.series(DUR) == [attrs]
    assert scap.histogram(USAGE, **attrs, **{"gen_ai.token.type": "output"}).sum == 3
    assert scap.points(TTFT) == []  # non-stream: no first-token time


async def test_off_by_default(cap: Capture) -> None:
    """Without semconv=True (or RYOT_TELEMETRY_GENAI_SEMCONV) no gen_ai.* metric has points."""
    resp = Completion(choices=[Choice(text="x")], usage=usage(5, 3))
    router = cap.instrument_router(ScriptedRouter(response=resp))
    await router.openai_chat_completion(ChatParams(model="m"))
    cap.collect()
    assert cap.points("ryot.inference.requests") != []
    assert [n for n in cap._points if n.startswith("gen_ai.")] == []


async def test_env_switch_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """RYOT_TELEMETRY_GENAI_SEMCONV=true and RYOT_TELEMETRY_GENAI_PROVIDER=tgi enable it with that provider name."""
    monkeypatch.setenv("RYOT_TELEMETRY_GENAI_SEMCONV", "true")
    monkeypatch.setenv("RYOT_TELEMETRY_GENAI_PROVIDER", "tgi")
    c = capture()
    try:
        router = c.instrument_router(ScriptedRouter(response=Completion(choices=[Choice(text="x")])))
        await router.openai_chat_completion(ChatParams(model="m"))
        c.collect()
        assert [a["gen_ai.provider.name"] for a in c.series(DUR)] == ["tgi"]
    finally:
        c.shutdown()


async def test_semconv_response_models_do_not_use_the_request_model_budget() -> None:
    """With max_models=2, a dated response model name does not push a second request model into __overflow__."""
    c = capture(semconv=True, max_models=2)
    try:
        r1 = c.instrument_router(ScriptedRouter(response=Completion(model="gpt-4o-2024-08-06", usage=usage(3, 1))))
        await r1.openai_chat_completion(ChatParams(model="gpt-4o"))
        c.collect()
        await r1.openai_chat_completion(ChatParams(model="llama-3"))
        c.collect()
        assert {s["model"] for s in c.series("ryot.inference.requests")} == {"gpt-4o", "llama-3"}
    finally:
        c.shutdown()

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


async def test_stream_emits_the_three_server_metrics_with_exact_values(
    scap: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stream: start 10.0, first token 10.5, end 12.0, usage 12/4 -> duration 2.0, TTFT 0.5, TPOT 0.5."""
    clock(monkeypatch, 10.0, 10.5, 12.0)
    chunks = [content_chunk(str(i), model="m-2024") for i in range(4)] + [usage_chunk(usage(12, 4), model="m-2024")]
    router = scap.instrument_router(ScriptedRouter(chunks=chunks))
    [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    scap.collect()
    # 2.0 s falls in (1.28, 2.56]; 0.5 s sits on a boundary (upper-inclusive)
    assert [counts(n, v).index(1) for n, v in ((DUR, 2.0), (TTFT, 0.5), (TPOT, 0.5))] == [8, 9, 9]
    for name, value in ((DUR, 2.0), (TTFT, 0.5), (TPOT, 0.5)):
        h = scap.histogram(name, **BASE)
        assert h is not None, name
        assert (h.count, h.sum) == (1, value), name
        assert h.explicit_bounds == BOUNDS[name], name
        assert h.bucket_counts == counts(name, value), name
        assert scap.series(name) == [BASE]
    assert sorted(n for n in scap._points if n.startswith("gen_ai.")) == sorted(BOUNDS)  # no client metric


async def test_failure_carries_error_type_and_no_ttft(scap: Capture) -> None:
    """A failing call: one duration point with error.type=oom, and no TTFT or TPOT."""
    router = scap.instrument_router(ScriptedRouter(raises=MemoryError("CUDA out of memory")))
    with pytest.raises(MemoryError):
        await router.openai_chat_completion(ChatParams(model="m"))
    scap.collect()
    base = {k: v for k, v in BASE.items() if k != "gen_ai.response.model"}
    assert scap.series(DUR) == [{**base, "error.type": "oom"}]
    assert scap.histogram(DUR, **base, **{"error.type": "oom"}).count == 1
    assert [scap.points(n) for n in (TTFT, TPOT)] == [[], []]


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
    """openai_completion is gen_ai.operation.name=text_completion."""
    resp = Completion(model="m-2024", choices=[Choice(text="x")], usage=usage(5, 3))
    router = scap.instrument_router(ScriptedRouter(response=resp))
    await router.openai_completion(CompletionParams(model="m"))
    scap.collect()
    attrs = {**BASE, "gen_ai.operation.name": "text_completion"}
    assert scap.series(DUR) == [attrs]
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


def _semconv_instruments() -> dict[str, tuple[str, str, str]]:
    """name -> (instrument kind, unit, description) as the semconv package's own factories create them."""
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm

    made: dict[str, tuple[str, str, str]] = {}

    class Recording:
        def create_histogram(self, name: str, unit: str = "", description: str = "", **kw: object) -> None:
            made[name] = ("histogram", unit, description)

        def create_counter(self, name: str, unit: str = "", description: str = "", **kw: object) -> None:
            made[name] = ("counter", unit, description)

    for factory in (
        gm.create_gen_ai_server_request_duration,
        gm.create_gen_ai_server_time_to_first_token,
        gm.create_gen_ai_server_time_per_output_token,
    ):
        factory(Recording())  # type: ignore[arg-type]
    return made


def test_semconv_metrics_match_the_semantic_conventions_package() -> None:
    """Names, units and instrument kinds are the semconv package's server metrics, and nothing else (no client metric
    without gen_ai.client.operation.duration: the router is the server side)."""
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm

    from ryot_telemetry.genai import SemconvInstruments

    expected = _semconv_instruments()
    assert set(expected) == {
        gm.GEN_AI_SERVER_REQUEST_DURATION,
        gm.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
        gm.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
    }
    mine: dict[str, tuple[str, str]] = {}

    class Recording:
        def create_histogram(self, name: str, unit: str = "", description: str = "", **kw: object) -> None:
            mine[name] = ("histogram", unit)

    SemconvInstruments(Recording())  # type: ignore[arg-type]
    assert mine == {name: (kind, unit) for name, (kind, unit, _) in expected.items()}
    assert {s.name for s in SEMCONV} == set(expected)
    assert gm.GEN_AI_CLIENT_TOKEN_USAGE not in mine and gm.GEN_AI_CLIENT_OPERATION_DURATION not in mine


def test_semconv_attributes_are_the_conventions_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attribute key on the semconv points, success and failure alike, is a semconv attribute constant, with
    server.address / server.port from RYOT_TELEMETRY_GENAI_SERVER and operation names from the package's values."""
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
    from opentelemetry.semconv.attributes import error_attributes, server_attributes

    monkeypatch.setenv("RYOT_TELEMETRY_GENAI_SERVER", "router.internal:8321")
    c = capture(semconv=True, genai_provider="vllm")
    try:
        ok = Completion(model="m-2024", choices=[Choice(text="x")], usage=usage(5, 3))
        router = c.instrument_router(ScriptedRouter(response=ok))
        import asyncio

        asyncio.run(router.openai_chat_completion(ChatParams(model="m")))
        asyncio.run(router.openai_completion(CompletionParams(model="m")))
        bad = c.instrument_router(ScriptedRouter(raises=TimeoutError()))
        with pytest.raises(TimeoutError):
            asyncio.run(bad.openai_chat_completion(ChatParams(model="m")))
        c.collect()
        series = c.series(DUR)
    finally:
        c.shutdown()
    server = {server_attributes.SERVER_ADDRESS: "router.internal", server_attributes.SERVER_PORT: 8321}
    common = {
        ga.GEN_AI_PROVIDER_NAME: "vllm",
        ga.GEN_AI_REQUEST_MODEL: "m",
        **server,
    }
    chat, text = ga.GenAiOperationNameValues.CHAT.value, ga.GenAiOperationNameValues.TEXT_COMPLETION.value
    assert sorted(series, key=repr) == sorted(
        [
            {**common, ga.GEN_AI_OPERATION_NAME: chat, ga.GEN_AI_RESPONSE_MODEL: "m-2024"},
            {**common, ga.GEN_AI_OPERATION_NAME: text, ga.GEN_AI_RESPONSE_MODEL: "m-2024"},
            {**common, ga.GEN_AI_OPERATION_NAME: chat, error_attributes.ERROR_TYPE: "timeout"},
        ],
        key=repr,
    )
    allowed = {
        ga.GEN_AI_OPERATION_NAME,
        ga.GEN_AI_PROVIDER_NAME,
        ga.GEN_AI_REQUEST_MODEL,
        ga.GEN_AI_RESPONSE_MODEL,
        server_attributes.SERVER_ADDRESS,
        server_attributes.SERVER_PORT,
    }
    for s in SEMCONV:
        # the Views' attribute filters keep exactly these keys (plus error.type on the duration)
        assert set(s.attributes) == allowed | ({error_attributes.ERROR_TYPE} if s.name == DUR else set()), s.name


def test_meter_schema_url_is_a_published_semconv_schema() -> None:
    """Every meter of ours declares the semantic-convention schema whose GenAI names it follows (1.37.0 introduced
    gen_ai.provider.name)."""
    from opentelemetry.semconv.schemas import Schemas

    from ryot_telemetry.genai import SCHEMA_URL

    assert Schemas.V1_37_0.value == SCHEMA_URL
    c = capture(semconv=True)
    try:
        assert c.meter._instrumentation_scope.schema_url == SCHEMA_URL
    finally:
        c.shutdown()


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("router.internal:8321", ("router.internal", 8321)),
        ("10.0.0.7:443", ("10.0.0.7", 443)),
        ("[::1]:8321", ("::1", 8321)),
    ],
)
def test_parse_server_accepts_host_and_port(value: str, parsed: tuple[str, int]) -> None:
    """host:port, IPv4 and bracketed IPv6 give (server.address, server.port)."""
    from ryot_telemetry.genai import parse_server

    assert parse_server(value) == parsed


@pytest.mark.parametrize("value", ["router.internal", "router:0", "router:70000", ":8321", "::1:8321", "router:http"])
def test_bad_genai_server_is_a_configuration_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """server.port is required with server.address, so a value without a valid port fails at start-up."""
    from ryot_telemetry import ConfigurationError

    monkeypatch.setenv("RYOT_TELEMETRY_GENAI_SERVER", value)
    with pytest.raises(ConfigurationError, match="RYOT_TELEMETRY_GENAI_SERVER: GenAI server must be host:port"):
        capture(semconv=True)

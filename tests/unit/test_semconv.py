"""Dual emission of the OpenTelemetry GenAI semantic-convention metrics: exact points, buckets and attributes."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

import ryot_telemetry.router.wrapper as _wrapper
from ryot_telemetry.recording import recorder as _recorder
from ryot_telemetry.recording import request as _request
from ryot_telemetry.recording import semconv as _semconv
from ryot_telemetry.recording.semconv import SEMCONV
from ryot_telemetry.testing import Capture, capture
from support.fakes import (
    ChatParams,
    Choice,
    Completion,
    CompletionParams,
    ScriptedRouter,
    content_chunk,
    usage,
    usage_chunk,
)
from support.floors import needs_chunk_metrics

BOUNDS = {s.name: s.buckets for s in SEMCONV}
DUR = "gen_ai.server.request.duration"
TTFT = "gen_ai.server.time_to_first_token"
TPOT = "gen_ai.server.time_per_output_token"
CDUR = "gen_ai.client.operation.duration"
USAGE = "gen_ai.client.token.usage"
TTFC = "gen_ai.client.operation.time_to_first_chunk"
TPOC = "gen_ai.client.operation.time_per_output_chunk"
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
    monkeypatch.setattr(_request, "_clock", fake)
    monkeypatch.setattr(_wrapper, "_clock", fake)


def counts(name: str, value: float) -> tuple[int, ...]:
    """The bucket counts of a single observation ``value`` under the metric's semconv boundaries."""
    bounds = BOUNDS[name]
    i = next((k for k, b in enumerate(bounds) if value <= b), len(bounds))
    return tuple(1 if k == i else 0 for k in range(len(bounds) + 1))


@needs_chunk_metrics
async def test_stream_emits_the_server_and_client_metrics_with_exact_values(
    scap: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stream: start 10.0, chunks arriving at 10.25 (first token taken at 10.5), 10.75, 11.0, 11.5 and 11.75 (the
    usage chunk), end 12.0, usage 12/4 -> server and client duration 2.0, TTFT 0.5, TPOT 0.5, token usage 12 input
    / 4 output, time to first chunk 0.25 and one time-per-output-chunk point per later chunk: 0.5, 0.25, 0.5,
    0.25."""
    clock(monkeypatch, 10.0, 10.25, 10.5, 10.75, 11.0, 11.5, 11.75, 12.0)
    chunks = [content_chunk(str(i), model="m-2024") for i in range(4)] + [usage_chunk(usage(12, 4), model="m-2024")]
    router = scap.instrument_router(ScriptedRouter(chunks=chunks))
    [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    scap.collect()
    # 2.0 s falls in (1.28, 2.56]; 0.5 s sits on a boundary (upper-inclusive); 12 tokens in (4, 16], 4 in (1, 4]
    assert [
        counts(n, v).index(1) for n, v in ((DUR, 2.0), (TTFT, 0.5), (TPOT, 0.5), (CDUR, 2.0), (USAGE, 12), (USAGE, 4))
    ] == [8, 9, 9, 8, 2, 1]
    for name, value in ((DUR, 2.0), (TTFT, 0.5), (TPOT, 0.5), (CDUR, 2.0), (TTFC, 0.25)):
        h = scap.histogram(name, **BASE)
        assert h is not None, name
        assert (h.count, h.sum) == (1, value), name
        assert h.explicit_bounds == BOUNDS[name], name
        assert h.bucket_counts == counts(name, value), name
        assert scap.series(name) == [BASE]
    per_chunk = scap.histogram(TPOC, **BASE)
    assert (per_chunk.count, per_chunk.sum) == (4, 1.5)
    assert per_chunk.explicit_bounds == BOUNDS[TPOC]
    assert per_chunk.bucket_counts == tuple(a + a for a in map(sum, zip(counts(TPOC, 0.5), counts(TPOC, 0.25))))
    assert scap.series(USAGE) == [
        {**BASE, "gen_ai.token.type": "input"},
        {**BASE, "gen_ai.token.type": "output"},
    ]
    for token_type, n in (("input", 12), ("output", 4)):
        h = scap.histogram(USAGE, **BASE, **{"gen_ai.token.type": token_type})
        assert (h.count, h.sum, h.bucket_counts) == (1, n, counts(USAGE, n))
        assert h.explicit_bounds == BOUNDS[USAGE]
    assert (
        sorted(n for n in scap._points if n.startswith("gen_ai."))
        == sorted(BOUNDS)
        == sorted([DUR, TTFT, TPOT, CDUR, USAGE, TTFC, TPOC])
    )


@needs_chunk_metrics
async def test_chunk_metrics_only_for_streams_and_for_every_chunk_received(
    scap: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-streaming call has no chunk metrics; a stream failing after 2 of 5 chunks has its time to first chunk
    and one gap (the chunks that arrived), whatever its error."""
    resp = Completion(model="m-2024", choices=[Choice(text="x")], usage=usage(5, 3))
    await scap.instrument_router(ScriptedRouter(response=resp)).openai_chat_completion(ChatParams(model="m"))
    scap.collect()
    assert (scap.points(TTFC), scap.points(TPOC)) == ([], [])
    clock(monkeypatch, 20.0, 20.5, 20.5, 21.0, 22.0)
    chunks = [content_chunk(str(i), model="m-2024") for i in range(5)]
    broken = scap.instrument_router(ScriptedRouter(chunks=chunks, raises=RuntimeError("boom"), raise_after=2))
    with pytest.raises(RuntimeError):
        [c async for c in await broken.openai_chat_completion(ChatParams(model="m", stream=True))]
    scap.collect()
    assert (scap.histogram(TTFC, **BASE).count, scap.histogram(TTFC, **BASE).sum) == (1, 0.5)
    assert (scap.histogram(TPOC, **BASE).count, scap.histogram(TPOC, **BASE).sum) == (1, 0.5)


async def test_failure_carries_error_type_and_no_ttft(scap: Capture) -> None:
    """A failing call: one server and one client duration point with error.type=oom, and no TTFT, TPOT or token
    usage."""
    router = scap.instrument_router(ScriptedRouter(raises=MemoryError("CUDA out of memory")))
    with pytest.raises(MemoryError):
        await router.openai_chat_completion(ChatParams(model="m"))
    scap.collect()
    base = {k: v for k, v in BASE.items() if k != "gen_ai.response.model"}
    for name in (DUR, CDUR):
        assert scap.series(name) == [{**base, "error.type": "oom"}], name
        assert scap.histogram(name, **base, **{"error.type": "oom"}).count == 1, name
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
    assert scap.series(DUR) == scap.series(CDUR) == [attrs]
    assert scap.points(TTFT) == []  # non-stream: no first-token time
    assert scap.histogram(USAGE, **attrs, **{"gen_ai.token.type": "input"}).sum == 5
    assert scap.histogram(USAGE, **attrs, **{"gen_ai.token.type": "output"}).sum == 3


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


def test_every_genai_metric_of_the_semconv_package_is_emitted_or_not_measurable_with_a_reason() -> None:
    """Iterates the installed package's GenAI metric constants (each GEN_AI_* name with its create_gen_ai_*
    factory): each is either emitted, with the name, unit, kind and description its factory creates, or listed as
    not measurable with a reason. A package upgrade that adds a metric fails here until it is emitted or listed."""
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm

    from ryot_telemetry.recording.semconv import MEASURED, NOT_MEASURABLE, SemconvInstruments, package_metrics

    constants = {c for c, v in vars(gm).items() if c.startswith("GEN_AI_") and isinstance(v, str)}
    assert len(constants) >= 5  # 0.58b0 (the floor) defines five, 0.63b0 on seven
    assert package_metrics().keys() == constants  # every metric constant has its factory
    unaccounted = sorted(c for c in constants if c not in MEASURED and not NOT_MEASURABLE.get(c, "").strip())
    assert unaccounted == []
    assert not set(MEASURED) & set(NOT_MEASURABLE)
    emitted = {s.constant for s in SEMCONV}
    assert emitted == set(MEASURED) & constants
    mine: dict[str, tuple[str, str, str, str]] = {}

    class Recording:
        def create_histogram(self, name: str, unit: str = "", description: str = "", **kw: object) -> None:
            mine[name] = ("histogram", name, unit, description)

    SemconvInstruments(Recording())  # type: ignore[arg-type]
    assert mine == {getattr(gm, c): package_metrics()[c] for c in emitted}


async def test_every_emitted_semconv_metric_has_points_from_a_router(scap: Capture) -> None:
    """A stream, a plain call and a failure through a fake router give points to every semconv metric ryot emits:
    each metric listed as emitted is measured, not only declared."""
    chunks = [content_chunk(str(i), model="m-2024") for i in range(3)] + [usage_chunk(usage(6, 3), model="m-2024")]
    stream = scap.instrument_router(ScriptedRouter(chunks=chunks))
    [c async for c in await stream.openai_chat_completion(ChatParams(model="m", stream=True))]
    plain = scap.instrument_router(ScriptedRouter(response=Completion(usage=usage(2, 2))))
    await plain.openai_chat_completion(ChatParams(model="m"))
    failing = scap.instrument_router(ScriptedRouter(raises=TimeoutError()))
    with pytest.raises(TimeoutError):
        await failing.openai_chat_completion(ChatParams(model="m"))
    scap.collect()
    assert sorted(s.name for s in SEMCONV if not scap.points(s.name)) == []


def test_token_usage_detail_of_the_package_is_accounted_for() -> None:
    """Every gen_ai.usage.* attribute and gen_ai.token.type value of the package is accounted for: the token types
    are the ones gen_ai.client.token.usage carries; cache-read and reasoning tokens, span attributes only in the
    package (no metric, no token type), say where ryot counts them."""
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

    from ryot_telemetry.recording.semconv import INPUT, OUTPUT, TOKEN_DETAIL

    usage_attrs = {c for c in vars(ga) if c.startswith("GEN_AI_USAGE_")}
    assert usage_attrs and sorted(usage_attrs - set(TOKEN_DETAIL)) == []
    assert {v.value for v in ga.GenAiTokenTypeValues} == {INPUT, OUTPUT}
    assert "ryot_cached_prompt_tokens_total" in TOKEN_DETAIL["GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS"]
    assert "ryot_reasoning_tokens_total" in TOKEN_DETAIL["GEN_AI_USAGE_REASONING_OUTPUT_TOKENS"]


def _sets(attrs: Iterable[dict[str, object]]) -> set[frozenset[tuple[str, object]]]:
    return {frozenset(a.items()) for a in attrs}


def test_semconv_attributes_are_the_conventions_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attribute key on the semconv points, success and failure alike, is a semconv attribute constant, with
    server.address / server.port from RYOT_TELEMETRY_GENAI_SERVER on the server metrics only (on a client metric
    they would name the provider) and operation and token-type values from the package's enums."""
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm
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
        series = {name: c.series(name) for name in (DUR, CDUR, USAGE)}
    finally:
        c.shutdown()
    server = {server_attributes.SERVER_ADDRESS: "router.internal", server_attributes.SERVER_PORT: 8321}
    common = {ga.GEN_AI_PROVIDER_NAME: "vllm", ga.GEN_AI_REQUEST_MODEL: "m"}
    chat, text = ga.GenAiOperationNameValues.CHAT.value, ga.GenAiOperationNameValues.TEXT_COMPLETION.value
    client = [
        {**common, ga.GEN_AI_OPERATION_NAME: chat, ga.GEN_AI_RESPONSE_MODEL: "m-2024"},
        {**common, ga.GEN_AI_OPERATION_NAME: text, ga.GEN_AI_RESPONSE_MODEL: "m-2024"},
        {**common, ga.GEN_AI_OPERATION_NAME: chat, error_attributes.ERROR_TYPE: "timeout"},
    ]
    assert _sets(series[DUR]) == _sets({**a, **server} for a in client)
    assert _sets(series[CDUR]) == _sets(client)
    tokens = [ga.GenAiTokenTypeValues.INPUT.value, ga.GenAiTokenTypeValues.COMPLETION.value]  # "input", "output"
    assert _sets(series[USAGE]) == _sets({**a, ga.GEN_AI_TOKEN_TYPE: t} for a in client[:2] for t in tokens)
    assert [len(series[n]) for n in (DUR, CDUR, USAGE)] == [3, 3, 4]
    client_keys = {ga.GEN_AI_OPERATION_NAME, ga.GEN_AI_PROVIDER_NAME, ga.GEN_AI_REQUEST_MODEL, ga.GEN_AI_RESPONSE_MODEL}
    server_keys = client_keys | {server_attributes.SERVER_ADDRESS, server_attributes.SERVER_PORT}
    error = {error_attributes.ERROR_TYPE}
    # the Views' attribute filters keep exactly these keys (the chunk metrics where the package defines them)
    expected = {
        "GEN_AI_SERVER_REQUEST_DURATION": server_keys | error,
        "GEN_AI_SERVER_TIME_TO_FIRST_TOKEN": server_keys,
        "GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN": server_keys,
        "GEN_AI_CLIENT_OPERATION_DURATION": client_keys | error,
        "GEN_AI_CLIENT_TOKEN_USAGE": client_keys | {ga.GEN_AI_TOKEN_TYPE},
        "GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK": client_keys,
        "GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK": client_keys,
    }
    assert {s.name: set(s.attributes) for s in SEMCONV} == {
        getattr(gm, c): keys for c, keys in expected.items() if hasattr(gm, c)
    }


def test_meter_schema_url_is_a_published_semconv_schema() -> None:
    """Every meter of ours declares the semantic-convention schema whose GenAI names it follows (1.37.0 introduced
    gen_ai.provider.name)."""
    from opentelemetry.semconv.schemas import Schemas

    from ryot_telemetry.recording.semconv import SCHEMA_URL

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
    from ryot_telemetry.settings import parse_server

    assert parse_server(value) == parsed


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


def _without_chunk_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the installed package look like one older than 0.63b0: no chunk-metric constants or factories, and what
    semconv.py derives from the package at import derived again."""
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm

    for constant in _semconv.ADDED_IN:
        monkeypatch.delattr(gm, constant, raising=False)
        monkeypatch.delattr(gm, f"create_{constant.lower()}", raising=False)
    monkeypatch.setattr(_semconv, "SEMCONV", _semconv._specs())
    monkeypatch.setattr(_semconv, "UNAVAILABLE", _semconv._unavailable())


def _start_up_warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [r for r in caplog.record_tuples if r[0] == "ryot_telemetry" and "does not define" in r[2]]


async def test_older_package_names_the_missing_metrics_once_and_emits_the_rest_exactly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With a package that lacks the chunk metrics (as 0.58b0, the floor, does), start-up logs one WARNING naming
    both and the release that adds them; the stream of the exact-values test gives exactly the five other metrics,
    with the same values, and no chunk metric."""
    from importlib.metadata import version

    _without_chunk_metrics(monkeypatch)
    assert _semconv.UNAVAILABLE == (
        "GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK",
        "GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK",
    )
    caplog.set_level("WARNING", logger="ryot_telemetry")
    c = capture(semconv=True, genai_provider="vllm")
    try:
        assert _start_up_warnings(caplog) == [
            (
                "ryot_telemetry",
                30,
                "ryot-telemetry: the installed opentelemetry-semantic-conventions "
                f"{version('opentelemetry-semantic-conventions')} does not define the GenAI metrics "
                "gen_ai.client.operation.time_to_first_chunk, gen_ai.client.operation.time_per_output_chunk, so "
                "they are not emitted (the other GenAI metrics are); opentelemetry-semantic-conventions>=0.63b0 "
                "defines them",
            )
        ]
        clock(monkeypatch, 10.0, 10.25, 10.5, 10.75, 11.0, 11.5, 11.75, 12.0)
        chunks = [content_chunk(str(i), model="m-2024") for i in range(4)]
        chunks.append(usage_chunk(usage(12, 4), model="m-2024"))
        router = c.instrument_router(ScriptedRouter(chunks=chunks))
        [x async for x in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
        c.collect()
        assert sorted(n for n in c._points if n.startswith("gen_ai.")) == sorted([DUR, TTFT, TPOT, CDUR, USAGE])
        for name, value in ((DUR, 2.0), (TTFT, 0.5), (TPOT, 0.5), (CDUR, 2.0)):
            h = c.histogram(name, **BASE)
            assert (h.count, h.sum, h.explicit_bounds) == (1, value, BOUNDS[name]), name
            assert h.bucket_counts == counts(name, value), name
        for token_type, n in (("input", 12), ("output", 4)):
            h = c.histogram(USAGE, **BASE, **{"gen_ai.token.type": token_type})
            assert (h.count, h.sum, h.bucket_counts) == (1, n, counts(USAGE, n))
        assert (c.points(TTFC), c.points(TPOC)) == ([], [])
    finally:
        c.shutdown()
    assert len(_start_up_warnings(caplog)) == 1  # once, at start-up, not per request


@needs_chunk_metrics
def test_package_with_every_metric_logs_nothing_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    """With a package that defines every measured metric, start-up names none as unavailable."""
    caplog.set_level("WARNING", logger="ryot_telemetry")
    assert (_semconv.UNAVAILABLE, _semconv.unavailable_message()) == ((), None)
    capture(semconv=True).shutdown()
    assert _start_up_warnings(caplog) == []


def test_unavailable_metrics_are_what_the_package_lacks_and_each_has_its_name() -> None:
    """UNAVAILABLE is exactly the measured constants the installed package lacks, and each is named in ADDED_IN
    (so the start-up message names a metric, not a constant)."""
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm

    assert tuple(c for c in _semconv.MEASURED if not hasattr(gm, c)) == _semconv.UNAVAILABLE
    assert [c for c in _semconv.UNAVAILABLE if c not in _semconv.ADDED_IN] == []
    assert not any(s.constant in _semconv.UNAVAILABLE for s in SEMCONV)


@needs_chunk_metrics
def test_added_in_names_are_the_newer_packages_names() -> None:
    """The names ADDED_IN types for an older package's message are the newer package's own constants."""
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm

    assert {c: getattr(gm, c) for c in _semconv.ADDED_IN} == {c: n for c, (n, _) in _semconv.ADDED_IN.items()}

"""Malformed chunks, usage and labels from a provider or caller: no crash, no negative counter, bounded labels."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import ryot_telemetry
from ryot_telemetry.recording.labels import OVERFLOW
from ryot_telemetry.testing import Capture, capture
from support.fakes import ChatParams, Completion, ScriptedRouter, content_chunk, usage, usage_chunk

REQ = "ryot.inference.requests"
TOK = "ryot.tokens.generated"
COUNTERS = (REQ, "ryot.inference.errors", TOK, "ryot.token.cost_estimate.usd")


def _assert_no_negative_counter(cap: Capture) -> None:
    for name in COUNTERS:
        assert all(p.value >= 0 for p in cap.points(name)), name


def _tokens(cap: Capture, token_type: str, mode: str = "standard", model: str = "m") -> float | None:
    return cap.value(TOK, model=model, token_type=token_type, generation_mode=mode)


class Exploding:
    """A chunk whose ``choices`` and ``usage`` raise when read, like a half-initialised SDK object."""

    @property
    def choices(self) -> Any:
        raise RuntimeError("no choices")

    @property
    def usage(self) -> Any:
        raise RuntimeError("no usage")


async def test_junk_chunks_pass_through_unchanged_and_the_stream_counts(cap: Capture) -> None:
    """None, dicts, strings, ints, objects without or with odd choices: the caller gets each one, one success."""
    chunks: list[Any] = [
        None,
        {"id": "no-choices"},
        "a bare string",
        42,
        SimpleNamespace(choices=None),
        SimpleNamespace(choices=5),  # not iterable
        Exploding(),
        SimpleNamespace(choices=[SimpleNamespace(delta=None, text=None)]),
        {"choices": [{"delta": {"content": "first"}}]},  # the first chunk with content
        content_chunk("second"),
    ]

    class JunkRouter:
        async def openai_chat_completion(self, params: Any) -> Any:
            return self._stream()

        async def _stream(self) -> Any:
            for c in chunks:
                yield c

    router = cap.instrument_router(JunkRouter())
    got = [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    assert len(got) == len(chunks) and all(a is b for a, b in zip(got, chunks))
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.histogram("ryot.ttft.latency", model="m", prompt_size="tiny").count == 1
    assert cap.points(TOK) == []  # no usage arrived: no tokens invented
    _assert_no_negative_counter(cap)


@pytest.mark.parametrize(
    ("usage", "prompt", "completion"),
    [
        ({"prompt_tokens": 12}, 12, None),
        ({"completion_tokens": 9}, None, 9),
        ({}, None, None),
        ({"prompt_tokens": -5, "completion_tokens": 7}, None, 7),
        ({"prompt_tokens": 4, "completion_tokens": -1}, 4, None),
        ({"prompt_tokens": "12", "completion_tokens": None}, None, None),
        ({"prompt_tokens": True, "completion_tokens": 3.0}, None, 3),
        ({"prompt_tokens": 2.5, "completion_tokens": float("nan")}, None, None),
        (SimpleNamespace(prompt_tokens=8), 8, None),
        ("lots of tokens", None, None),
        (17, None, None),
    ],
)
async def test_malformed_usage_is_ignored_field_by_field(
    cap: Capture, usage: Any, prompt: int | None, completion: int | None
) -> None:
    """Usage with missing, negative, non-integer fields or of a wrong type: only valid counts are recorded."""
    resp = Completion(usage=None)
    object.__setattr__(resp, "usage", usage)
    router = cap.instrument_router(ScriptedRouter(response=resp))
    assert await router.openai_chat_completion(ChatParams(model="m")) is resp
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert _tokens(cap, "prompt") == prompt
    assert _tokens(cap, "completion") == completion
    _assert_no_negative_counter(cap)


async def test_implausible_usage_logs_one_clear_warning_per_model(
    cap: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """An implausible token count is dropped with one warning per model naming the model, field and value."""
    resp = Completion(usage=None)
    object.__setattr__(resp, "usage", {"prompt_tokens": -5, "completion_tokens": 2})
    router = cap.instrument_router(ScriptedRouter(response=resp))
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        for model in ("m", "m", "other", "m"):
            await router.openai_chat_completion(ChatParams(model=model))
        cap.collect()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"ryot-telemetry: model {model!r}: implausible usage.prompt_tokens=-5 (negative, not an integer, or above "
        "2**53) ignored for that request; further ones for this model are not logged"
        for model in ("m", "other")
    ]
    assert _tokens(cap, "completion") == 6
    assert _tokens(cap, "prompt") is None


async def test_negative_or_excess_cached_tokens(cap: Capture) -> None:
    """cached_tokens < 0 is ignored (no effectiveness point); cached > prompt is capped at ratio 1.0."""
    for cached in (-3, 50):
        resp = Completion(usage=None)
        usage = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": cached}}
        object.__setattr__(resp, "usage", usage)
        router = cap.instrument_router(ScriptedRouter(response=resp))
        await router.openai_chat_completion(ChatParams(model="m"))
    cap.collect()
    eff = cap.histogram("ryot.prompt_cache.effectiveness", model="m")
    assert (eff.count, eff.sum) == (1, 1.0)
    assert _tokens(cap, "prompt") == 20


@pytest.mark.parametrize(
    ("model", "label"),
    [
        (None, "unknown"),
        ("", "unknown"),
        (["a", "list"], "unknown"),
        ({"a": "dict"}, "unknown"),
        (7, "7"),
        ("x" * 100_000, "x" * 128),
        ("模型-ñ-🚀", "模型-ñ-🚀"),
        ("🚀" * 200, "🚀" * 128),
    ],
    ids=["none", "empty", "list", "dict", "int", "huge", "unicode", "huge-unicode"],
)
async def test_odd_model_names_become_bounded_labels_and_still_count(model: Any, label: str) -> None:
    """Model names of any type and length: the request counts under a label of at most 128 characters."""
    cap = capture()
    try:
        router = cap.instrument_router(ScriptedRouter(response=Completion()))
        await router.openai_chat_completion({"model": model, "messages": []})
        cap.collect()
        assert cap.series(REQ) == [{"model": label, "endpoint": "chat_completion", "status": "success"}]
    finally:
        cap.shutdown()


async def test_bad_request_shapes_are_batch_size_one(cap: Capture) -> None:
    """n that is negative, a string, a bool or a float, and params that are None: batch_size 1, no crash."""
    resp = Completion()
    router = cap.instrument_router(ScriptedRouter(response=resp))
    for n in (-3, "4", True, 2.0):
        assert await router.openai_chat_completion({"model": "m", "messages": [], "n": n}) is resp
    cap.collect()
    assert cap.series("ryot.inference.latency") == [{"model": "m", "batch_size": "1", "generation_mode": "standard"}]
    assert cap.histogram("ryot.batch_size.distribution", model="m", request_type="standard").sum == 4

    class NoneParamsRouter:
        async def openai_chat_completion(self, params: Any) -> Any:
            return resp

    other = cap.instrument_router(NoneParamsRouter())
    assert await other.openai_chat_completion(None) is resp
    cap.collect()
    assert cap.value(REQ, model="unknown", endpoint="chat_completion", status="success") == 1


def test_label_values_with_quotes_controls_surrogates_and_unicode_survive_the_exposition() -> None:
    """Quotes, backslashes and any printable Unicode come back from the scrape as sent; control characters and
    lone surrogates (unencodable as UTF-8) come back as U+FFFD, after clipping to 128 characters."""
    names = ['a"quoted"', "back\\slash", "模型-🚀", "x" * 500, "new\nline", "sur\ud800rogate", "\x00\x1b[31m\x7f\x85"]
    tel = ryot_telemetry.configure(
        exporters="prometheus", prometheus_registry="private", start_prometheus_server=False, gpu=False
    )
    try:
        rec = tel.recorder
        for name in names:
            rec.start(name, "chat_completion", "standard").success(rec)
        text = generate_latest(tel.registry).decode()
        got = {
            s.labels["model"]
            for fam in text_string_to_metric_families(text)
            if fam.name == "ryot_inference_requests"
            for s in fam.samples
        }
        assert got == {*names[:3], "x" * 128, "new\ufffdline", "sur\ufffdrogate", "\ufffd\ufffd[31m\ufffd\ufffd"}
    finally:
        tel.shutdown()


async def test_flood_of_model_names_is_capped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """250 distinct names with max_models=100: 100 labels plus __overflow__, and exactly one warning."""
    cap = capture(max_models=100)
    try:
        router = cap.instrument_router(ScriptedRouter(response=Completion()))
        with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
            for i in range(250):
                await router.openai_chat_completion({"model": f"flood-{i}", "messages": []})
        cap.collect()
        labels = {s["model"] for s in cap.series(REQ)}
        assert len(labels) == 101 and OVERFLOW in labels
        assert cap.value(REQ, model=OVERFLOW, endpoint="chat_completion", status="success") == 150
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "more than 100 distinct model names" in warnings[0]
    finally:
        cap.shutdown()


def test_max_models_past_the_sdk_series_limit_keeps_every_series() -> None:
    """max_models=150 and every latency label combination of 150 models: 2,700 series, past the SDK's default limit
    of 2,000 per metric, each kept under its own labels (none folded into the SDK's otel.metric.overflow)."""
    cap = capture(max_models=150)
    try:
        rec = cap.recorder
        for i in range(150):
            for endpoint, mode in (
                ("chat_completion", "standard"),
                ("chat_completion", "streaming"),
                ("completion", "batch"),
            ):
                for batch in (1, 3, 6, 12, 24, 40):
                    rec.start(f"m{i}", endpoint, mode, batch).success(rec)
        cap.collect()
        series = cap.series("ryot.inference.latency")
        assert len(series) == 150 * 18
        assert not [s for s in series if "otel.metric.overflow" in s]
        assert {s["model"] for s in series} == {f"m{i}" for i in range(150)}
    finally:
        cap.shutdown()


class ModelNotFound(Exception):
    """What a router raises for a model it does not serve (classified by its 404)."""

    status_code = 404


class OnlyServes:
    """A router that knows a fixed set of models and raises ``ModelNotFound`` for any other name."""

    def __init__(self, models: set[str], delay: float = 0.0, chunks: list[Any] | None = None) -> None:
        self.models = models
        self.delay = delay
        self.chunks = chunks

    async def openai_chat_completion(self, params: Any) -> Any:
        if params["model"] not in self.models:
            raise ModelNotFound(f"model {params['model']!r} not found")
        if self.delay:
            await asyncio.sleep(self.delay)
        if params.get("stream"):
            return self._stream()
        return Completion(model=params["model"])

    async def _stream(self) -> Any:
        for c in self.chunks or [content_chunk("x")]:
            await asyncio.sleep(self.delay)
            yield c


async def test_made_up_names_take_no_slot_so_real_models_keep_theirs() -> None:
    """100 unknown names (model_not_found) go to __unknown__ without a slot; with max_models=3 the three real
    models keep their labels, and a model_not_found for a name that has a slot is filed under that name."""
    cap = capture(max_models=3)
    try:
        router = cap.instrument_router(OnlyServes({"a", "b", "c"}))
        for i in range(100):
            with pytest.raises(ModelNotFound):
                await router.openai_chat_completion({"model": f"bogus-{i}", "messages": []})
        for m in ("a", "b", "c"):
            await router.openai_chat_completion({"model": m, "messages": []})
        router.models.discard("a")  # "a" unregistered at run time: its slot stays
        with pytest.raises(ModelNotFound):
            await router.openai_chat_completion({"model": "a", "messages": []})
        cap.collect()
        nf = {"endpoint": "chat_completion", "status": "error", "error_type": "model_not_found"}
        assert cap.series(REQ) == [
            {"model": "__unknown__", **nf},
            {"model": "a", **nf},
            {"model": "a", "endpoint": "chat_completion", "status": "success"},
            {"model": "b", "endpoint": "chat_completion", "status": "success"},
            {"model": "c", "endpoint": "chat_completion", "status": "success"},
        ]
        assert cap.value(REQ, model="__unknown__", **nf) == 100
        assert sorted(cap.recorder.models._map) == ["a", "b", "c"]
    finally:
        cap.shutdown()


async def test_first_request_of_a_model_is_in_flight_under_unknown_until_the_router_accepts_it() -> None:
    """A name without a slot is in flight under __unknown__; a returned stream moves it to its own label at once,
    and once the name has a slot later requests are in flight under it from their start."""
    cap = capture()
    try:
        router = cap.instrument_router(OnlyServes({"m"}, delay=0.05))

        def active() -> dict[str, int]:
            return {k[0]: v for k, v in cap.recorder.active().items() if v}

        task = asyncio.ensure_future(router.openai_chat_completion({"model": "m", "messages": []}))
        await asyncio.sleep(0.01)
        assert active() == {"__unknown__": 1}
        await task
        assert active() == {}
        stream_router = cap.instrument_router(OnlyServes({"s"}, delay=0.05))
        stream = await stream_router.openai_chat_completion({"model": "s", "messages": [], "stream": True})
        assert active() == {"s": 1}  # the router returned a stream: it accepted "s"
        assert [c async for c in stream] == [content_chunk("x")]
        task = asyncio.ensure_future(router.openai_chat_completion({"model": "m", "messages": []}))
        await asyncio.sleep(0.01)
        assert active() == {"m": 1}
        await task
        cap.collect()
        assert {s["model"] for s in cap.series(REQ)} == {"m", "s"}
        in_flight = {(p.attributes["model"], p.value) for p in cap.points("ryot.active_inference_requests")}
        assert in_flight == {("__unknown__", 0), ("m", 0), ("s", 0)}
    finally:
        cap.shutdown()


async def test_the_label_cache_keeps_only_clipped_names() -> None:
    """30 requests with distinct 10 MB model names (request and response): telemetry keeps no reference to any of
    them, only their 128-character clips (the label map, the series), so memory cannot hold 2 x 30 x 10 MB."""
    cap = capture(semconv=True)
    try:

        class Serves:  # keeps nothing of the request (ScriptedRouter keeps every params it saw)
            async def openai_chat_completion(self, params: Any) -> Any:
                return Completion(model=params["model"], usage=usage(5, 5))  # gen_ai.response.model: 10 MB too

        router = cap.instrument_router(Serves())
        await router.openai_chat_completion({"model": "warm-up", "messages": []})
        cap.collect()
        kept = []
        for i in range(30):
            name = f"{i:03d}" + "x" * 10_000_000
            alone = sys.getrefcount(name)
            await router.openai_chat_completion({"model": name, "messages": []})
            cap.collect()
            gc.collect()
            kept.append(sys.getrefcount(name) - alone)  # references telemetry still holds after the call
            del name
        assert kept == [0] * 30
        labels = {s["model"] for s in cap.series(REQ)} - {"warm-up"}
        assert labels == {f"{i:03d}" + "x" * 125 for i in range(30)}
        assert all(len(k) <= 128 for k in cap.recorder.models._map)
    finally:
        cap.shutdown()


def test_names_equal_after_clipping_share_one_label_and_one_slot() -> None:
    """Names that differ only past the length cap are one model to the label map: one slot, one label."""
    from ryot_telemetry.recording.labels import ModelLabels

    labels = ModelLabels(max_models=2, max_length=8)
    assert labels("abcdefgh-one") == labels("abcdefgh-two") == "abcdefgh"
    assert labels("other") == "other"
    assert labels("abcdefgh-three") == "abcdefgh"  # not __overflow__: the same clipped name
    assert labels("\ud800\x00-new") == OVERFLOW


def _otlp_bytes(cap: Capture) -> bytes:
    """What the OTLP exporter would send for one collection (the encoding step a bad label value breaks)."""
    return encode_metrics(cap.reader.get_metrics_data()).SerializeToString()


async def test_hostile_model_names_keep_the_scrape_and_otlp_working() -> None:
    """A lone surrogate, control characters and a 1 MB name: the scrape parses and OTLP encodes, every time."""
    tel = ryot_telemetry.configure(
        exporters="prometheus", prometheus_registry="private", start_prometheus_server=False, gpu=False, semconv=True
    )
    try:
        names = ["\ud800", "ok\udfff\x00\x07", "\x1b]0;title\x07", "y" * 1_000_000, "\U0010ffff\ufffe"]
        chunks = [content_chunk("a", model="\udc80resp"), content_chunk("b"), usage_chunk(usage(3, 4))]
        router = tel.instrument_router(ScriptedRouter(response=Completion(model="\ud800r"), chunks=chunks))
        for name in names:
            await router.openai_chat_completion(ChatParams(model=name))
            stream = await router.openai_chat_completion(ChatParams(model=name, stream=True))
            assert [c async for c in stream] == chunks[:2]
        for _ in range(2):  # and the next scrape too
            text = generate_latest(tel.registry).decode()
            got = {
                s.labels["model"]
                for fam in text_string_to_metric_families(text)
                if fam.name == "ryot_inference_requests"
                for s in fam.samples
            }
            assert got == {"\ufffd", "ok\ufffd\ufffd\ufffd", "\ufffd]0;title\ufffd", "y" * 128, "\U0010ffff\ufffe"}
            assert 'gen_ai_response_model="\ufffdresp"' in text
            assert 'gen_ai_response_model="\ufffdr"' in text
    finally:
        tel.shutdown()


@pytest.mark.parametrize(
    "bad",
    [2**64 - 1, 1e20, 10**400, -1, float("inf"), float("nan"), float("-inf"), 2.5, "12", True, 2**53 + 1],
    ids=["u64-underflow", "1e20", "10^400", "negative", "inf", "nan", "-inf", "fraction", "string", "bool", "2^53+1"],
)
async def test_implausible_usage_never_reaches_the_instruments_or_other_requests(cap: Capture, bad: Any) -> None:
    """An implausible count is dropped for its request only: the other requests drained with it keep their tokens,
    and OTLP still encodes this collection and the next one."""
    resp_bad = Completion(usage=None)
    object.__setattr__(resp_bad, "usage", {"prompt_tokens": 7, "completion_tokens": bad})
    router_ok = cap.instrument_router(ScriptedRouter(response=Completion(usage=usage(10, 20, cached=4))))
    router_bad = cap.instrument_router(ScriptedRouter(response=resp_bad))
    for _ in range(3):
        await router_ok.openai_chat_completion(ChatParams(model="m"))
        await router_bad.openai_chat_completion(ChatParams(model="m"))
    assert len(_otlp_bytes(cap)) > 0
    await router_ok.openai_chat_completion(ChatParams(model="m"))
    assert len(_otlp_bytes(cap)) > 0
    cap.collect()
    assert _tokens(cap, "completion") == 80
    assert _tokens(cap, "prompt") == 4 * 10 + 3 * 7
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 7
    assert cap.histogram("ryot.tokens_per_second", model="m").count == 4


def test_usage_at_2_to_the_53_is_still_taken(cap: Capture) -> None:
    """2**53 itself is plausible (the SPEC bound is inclusive); the recorder API checks counts set directly too."""
    rec = cap.recorder
    for completion in (2**53, 2**53 + 1, -3, 1.5):
        req = rec.start("m", "chat_completion", "standard")
        req.completion_tokens = completion  # type: ignore[assignment]
        req.success(rec)
    cap.collect()
    assert _tokens(cap, "completion") == 2**53


def test_token_counter_saturates_at_int64_so_otlp_keeps_encoding(
    cap: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """1,100 requests of 2**53 tokens each (each plausible) would pass 2**63 - 1: the series stops at 2**63 - 1,
    with a warning, and every collection still encodes for OTLP."""
    rec = cap.recorder
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        for _ in range(11):
            for _ in range(100):
                req = rec.start("m", "chat_completion", "standard")
                req.completion_tokens = 2**53
                req.success(rec)
            assert len(_otlp_bytes(cap)) > 0
    cap.collect()
    assert _tokens(cap, "completion") == 2**63 - 1  # saturated: it stays at the most OTLP can carry
    assert any("reached 2**63 - 1 tokens" in r.getMessage() for r in caplog.records)

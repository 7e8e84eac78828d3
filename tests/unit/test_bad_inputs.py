"""Malformed chunks, usage and labels from a provider or caller: no crash, no negative counter, bounded labels."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import ryot_telemetry
from fakes import ChatParams, Completion, ScriptedRouter, content_chunk
from ryot_telemetry.testing import Capture, capture

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


async def test_negative_usage_logs_one_clear_warning(cap: Capture, caplog: pytest.LogCaptureFixture) -> None:
    """A negative token count is dropped with a warning naming the field and the value."""
    resp = Completion(usage=None)
    object.__setattr__(resp, "usage", {"prompt_tokens": -5, "completion_tokens": 2})
    router = cap.instrument_router(ScriptedRouter(response=resp))
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        await router.openai_chat_completion(ChatParams(model="m"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["ryot-telemetry: provider reported negative usage.prompt_tokens=-5; ignored"]


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


def test_label_values_with_quotes_newlines_and_unicode_survive_the_exposition() -> None:
    """Prometheus text escapes quotes, backslashes and newlines; parsing the scrape gives the labels back."""
    names = ['a"quoted"', "back\\slash", "new\nline", "模型-🚀", "x" * 500]
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
        assert got == {*names[:4], "x" * 128}
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
        assert len(labels) == 101 and ryot_telemetry.OVERFLOW in labels
        assert cap.value(REQ, model=ryot_telemetry.OVERFLOW, endpoint="chat_completion", status="success") == 150
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "more than 100 distinct model names" in warnings[0]
    finally:
        cap.shutdown()

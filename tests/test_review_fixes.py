"""Regression tests for defects found in review: each pins behaviour that was once wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from fakes import ChatParams, Completion, ScriptedRouter, content_chunk, usage, usage_chunk
from ryot_telemetry import classify
from ryot_telemetry.instrumentor import RyotInstrumentor
from ryot_telemetry.testing import Capture, capture

REQ = "ryot.inference.requests"


class StreamOptions(BaseModel):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class TypedParams(BaseModel):
    model: str
    messages: list[dict[str, Any]] = []
    stream: bool = True
    stream_options: StreamOptions | None = None


class ReadsTypedOptions(ScriptedRouter):
    """A router that reads stream_options as the typed model it declares."""

    async def openai_chat_completion(self, params: TypedParams) -> Any:
        opts = params.stream_options
        self.seen = (
            type(opts).__name__,
            opts.include_usage if opts else None,
            opts.include_obfuscation if opts else None,
        )
        return await self._call(params.model_dump())


async def test_typed_stream_options_keep_their_type_and_fields(cap: Capture) -> None:
    """A pydantic stream_options stays that type, keeps its other fields, and gains include_usage."""
    inner = ReadsTypedOptions(chunks=[content_chunk("a"), usage_chunk(usage(5, 1))])
    router = cap.instrument_router(inner)
    params = TypedParams(model="m", stream_options=StreamOptions(include_obfuscation=True))
    got = [c async for c in await router.openai_chat_completion(params)]
    assert inner.seen == ("StreamOptions", True, True)
    assert params.stream_options == StreamOptions(include_obfuscation=True)  # the caller's object is untouched
    assert len(got) == 1
    none_given = TypedParams(model="m")
    [c async for c in await router.openai_chat_completion(none_given)]
    assert inner.seen == ("StreamOptions", True, None)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (type("ZoomError", (Exception,), {})("x"), "inference_error"),
        (type("BoomError", (Exception,), {})("x"), "inference_error"),
        (type("OOMError", (Exception,), {})("x"), "oom"),
        (type("CudaOOMError", (Exception,), {})("x"), "oom"),
        (type("OutOfMemoryError", (RuntimeError,), {})("x"), "oom"),
        (type("OomKilled", (Exception,), {})("x"), "oom"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "oom"),
    ],
)
def test_oom_is_matched_as_a_word_not_a_substring(exc: BaseException, expected: str) -> None:
    """ZoomError is not an OOM; OOMError, CudaOOMError, OutOfMemoryError and 'out of memory' are."""
    assert classify(exc) == expected


async def test_semconv_response_models_do_not_use_the_request_model_budget() -> None:
    """With max_models=2, a dated response model name does not push a second request model into __overflow__."""
    c = capture(semconv=True, max_models=2)
    try:
        r1 = c.instrument_router(ScriptedRouter(response=Completion(model="gpt-4o-2024-08-06", usage=usage(3, 1))))
        await r1.openai_chat_completion(ChatParams(model="gpt-4o"))
        c.collect()
        await r1.openai_chat_completion(ChatParams(model="llama-3"))
        c.collect()
        assert {s["model"] for s in c.series(REQ)} == {"gpt-4o", "llama-3"}
    finally:
        c.shutdown()


def test_engine_kv_hit_ratio_context_type_is_validated(cap: Capture) -> None:
    """Only the catalogue's context types are accepted, so an engine cannot grow the series without bound."""
    with pytest.raises(ValueError, match="context_type must be one of conversation, batch, streaming"):
        cap.recorder.set_kv_cache_hit_ratio("m", "ctx-123", 0.5)
    with pytest.raises(ValueError, match="hit ratio must be a number within"):
        cap.recorder.set_kv_cache_hit_ratio("m", "batch", "0.5")
    cap.recorder.set_kv_cache_hit_ratio("m", "batch", 0.75)
    cap.collect()
    assert cap.value("ryot.kv_cache.hit_ratio", model="m", context_type="batch") == 0.75


class _Base:
    def __init__(self) -> None:
        self.inner = ScriptedRouter(response=Completion(usage=usage(3, 1)))

    async def openai_chat_completion(self, params: Any) -> Any:
        return await self.inner.openai_chat_completion(params)


class _Inherits(_Base):
    pass


class _Overrides(_Base):
    async def openai_chat_completion(self, params: Any) -> Any:
        return await super().openai_chat_completion(params)


async def test_base_and_subclass_both_instrumented_count_each_call_once() -> None:
    """router_classes=[Base, Sub]: a call on Sub counts once, whether Sub inherits or overrides and calls super()."""
    c = capture()
    inst = RyotInstrumentor()
    inst.instrument(recorder=c.recorder, router_classes=[_Base, _Inherits, _Overrides])
    try:
        await _Inherits().openai_chat_completion(ChatParams(model="m"))
        await _Overrides().openai_chat_completion(ChatParams(model="m"))
        await _Base().openai_chat_completion(ChatParams(model="m"))
        c.collect()
        assert c.value(REQ, model="m", endpoint="chat_completion", status="success") == 3
    finally:
        inst.uninstrument()
        c.shutdown()


async def test_keyword_style_router_without_stream_options_is_called_as_the_caller_did(cap: Capture) -> None:
    """A router taking keyword arguments but no stream_options gets exactly the caller's keywords."""

    class KeywordRouter:
        async def openai_chat_completion(self, model: str, messages: list, stream: bool = False) -> Any:
            async def gen() -> Any:
                yield content_chunk("a", model=model)

            return gen()

    router = cap.instrument_router(KeywordRouter())
    got = [c async for c in await router.openai_chat_completion(model="m", messages=[], stream=True)]
    assert len(got) == 1
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1


async def test_keyword_style_router_with_stream_options_is_asked_for_usage(cap: Capture) -> None:
    """A keyword-style router that declares stream_options receives include_usage, and its usage is read."""
    seen: list[Any] = []

    class KeywordRouter:
        async def openai_chat_completion(
            self, model: str, messages: list, stream: bool = False, stream_options: dict | None = None
        ) -> Any:
            seen.append(stream_options)

            async def gen() -> Any:
                yield content_chunk("a", model=model)
                yield usage_chunk(usage(9, 1), model=model)

            return gen()

    router = cap.instrument_router(KeywordRouter())
    got = [c async for c in await router.openai_chat_completion(model="m", messages=[], stream=True)]
    assert len(got) == 1 and seen == [{"include_usage": True}]
    cap.collect()
    assert cap.value("ryot.tokens.generated", model="m", token_type="prompt", generation_mode="streaming") == 9


async def test_closing_an_object_stream_calls_its_close(cap: Capture) -> None:
    """A provider stream object with an async close() (like openai's AsyncStream) is closed when the caller closes."""

    class ObjectStream:
        def __init__(self) -> None:
            self.closed = False
            self._left = [content_chunk("a"), content_chunk("b")]

        def __aiter__(self) -> Any:
            return self

        async def __anext__(self) -> Any:
            if not self._left:
                raise StopAsyncIteration
            return self._left.pop(0)

        async def close(self) -> None:
            self.closed = True

    stream = ObjectStream()

    class Router:
        async def openai_chat_completion(self, params: Any) -> Any:
            return stream

    router = cap.instrument_router(Router())
    traced = await router.openai_chat_completion(ChatParams(model="m", stream=True))
    async for _ in traced:
        break
    await traced.aclose()
    assert stream.closed is True


def test_sliding_window_ignores_values_older_than_the_ring() -> None:
    """A request drained more than 15 minutes late does not wipe the newer second sharing its ring slot."""
    from ryot_telemetry.derived import _Ring

    ring = _Ring()
    ring.add(1000, 50)
    ring.add(100, 7)  # 900 s older, same slot: outside every window
    assert ring.sum(1000, 60) == 50


def test_configure_twice_without_shutdown_warns(caplog: pytest.LogCaptureFixture) -> None:
    """A second configure() while the first still runs logs a warning naming the fix."""
    from ryot_telemetry import configure

    first = configure(exporters="none", gpu=False)
    try:
        second = configure(exporters="none", gpu=False)
        second.shutdown()
    finally:
        first.shutdown()
    assert any("configure() called again" in r.getMessage() for r in caplog.records)

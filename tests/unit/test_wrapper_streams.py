"""Stream edge cases: what the caller sees is unchanged, and every exit path is accounted exactly once."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import inspect
import itertools
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import pytest
from pydantic import BaseModel

from ryot_telemetry.recording import recorder as _recorder
from ryot_telemetry.recording import request as _request
from ryot_telemetry.router import wrapper as _wrapper
from ryot_telemetry.testing import Capture
from support.fakes import (
    ChatChunk,
    ChatParams,
    ChunkChoice,
    Completion,
    CompletionParams,
    Delta,
    KeyErrorStream,
    ScriptedRouter,
    content_chunk,
    usage,
    usage_chunk,
)
from support.floors import needs_chunk_metrics

REQ = "ryot.inference.requests"
ACTIVE = "ryot.active_inference_requests"


def active(cap: Capture, request_type: str = "streaming", endpoint: str = "chat_completion") -> float | None:
    return cap.value(ACTIVE, model="m", request_type=request_type, endpoint=endpoint)


async def test_caller_that_asked_for_usage_sees_the_usage_chunk(cap: Capture) -> None:
    """With stream_options.include_usage set by the caller, the usage-only chunk is passed through."""
    chunks = [content_chunk("a"), usage_chunk(usage(10, 1))]
    inner = ScriptedRouter(chunks=chunks)
    router = cap.instrument_router(inner)
    params = ChatParams(model="m", stream=True, stream_options={"include_usage": True})
    got = [c async for c in await router.openai_chat_completion(params)]
    assert got == chunks
    assert inner.calls[0] is params  # nothing to inject: the caller's object goes through as is


async def test_params_are_never_mutated(cap: Capture) -> None:
    """Usage is requested on a copy; the caller's params object keeps stream_options=None."""
    inner = ScriptedRouter(chunks=[content_chunk("a"), usage_chunk(usage(10, 1))])
    router = cap.instrument_router(inner)
    params = ChatParams(model="m", stream=True)
    [c async for c in await router.openai_chat_completion(params)]
    assert params.stream_options is None
    assert inner.calls[0].stream_options == {"include_usage": True}
    assert inner.calls[0] is not params


async def test_dict_params_and_dict_chunks(cap: Capture) -> None:
    """Dict params, dict chunks and dict usage work like pydantic ones."""
    chunks = [
        {"choices": [{"delta": {"content": "hi"}}]},
        {"choices": [{"delta": {"content": "!"}}]},
        {"choices": [], "usage": {"prompt_tokens": 70, "completion_tokens": 2}},
    ]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    params = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    got = [c async for c in await router.openai_chat_completion(params)]
    assert got == chunks[:2]
    assert "stream_options" not in params
    cap.collect()
    assert cap.value("ryot.tokens.generated", model="m", token_type="prompt", generation_mode="streaming") == 70
    assert cap.histogram("ryot.ttft.latency", model="m", prompt_size="small").count == 1


async def test_mid_stream_failure_is_partial_and_counts_the_error(cap: Capture) -> None:
    """A provider failing after 2 chunks: caller gets both chunks then the same exception; status=partial."""
    exc = RuntimeError("CUDA error: an illegal memory access was encountered")
    router = cap.instrument_router(
        ScriptedRouter(chunks=[content_chunk("a"), content_chunk("b"), content_chunk("c")], raises=exc, raise_after=2)
    )
    got = []
    with pytest.raises(RuntimeError) as info:
        async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True)):
            got.append(c)
    assert info.value is exc and len(got) == 2
    cap.collect()
    assert cap.series(REQ) == [{"model": "m", "endpoint": "chat_completion", "status": "partial"}]
    assert cap.value("ryot.inference.errors", model="m", error_type="cuda_error", severity="critical") == 1
    assert active(cap) == 0


async def test_failure_before_first_chunk_is_an_error(cap: Capture) -> None:
    """A stream that fails before delivering anything is status=error with its error_type."""
    exc = ValueError("prompt is too long: maximum context length is 8192")
    router = cap.instrument_router(ScriptedRouter(chunks=[content_chunk("a")], raises=exc, raise_after=0))
    with pytest.raises(ValueError):
        async for _ in await router.openai_chat_completion(ChatParams(model="m", stream=True)):
            pass
    cap.collect()
    assert (
        cap.value(REQ, model="m", endpoint="chat_completion", status="error", error_type="context_length_exceeded") == 1
    )
    assert cap.value("ryot.inference.errors", model="m", error_type="context_length_exceeded", severity="info") == 1


async def test_abandoned_stream_is_finalised_when_garbage_collected(cap: Capture) -> None:
    """A consumer that breaks and drops the stream: the loop's async-gen finaliser closes it; active returns to 0."""
    inner = ScriptedRouter(chunks=[content_chunk(str(i)) for i in range(5)])
    router = cap.instrument_router(inner)

    async def consume_two() -> None:
        n = 0
        async for _ in await router.openai_chat_completion(ChatParams(model="m", stream=True)):
            n += 1
            if n == 2:
                break

    await consume_two()
    gc.collect()
    for _ in range(5):
        await asyncio.sleep(0)
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    assert active(cap) == 0
    assert inner.closed == 1


async def test_stream_task_cancelled_mid_stream(cap: Capture) -> None:
    """Cancelling the consuming task mid-stream: CancelledError propagates, status=partial, active 0."""
    router = cap.instrument_router(ScriptedRouter(chunks=[content_chunk(str(i)) for i in range(50)], chunk_delay=0.01))

    async def consume() -> None:
        async for _ in await router.openai_chat_completion(ChatParams(model="m", stream=True)):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    assert active(cap) == 0


async def test_exact_ttft_and_tpot_from_controlled_clock(cap: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fake clock: TTFT 0.3 s, latency 1.3 s, 5 tokens -> TPOT (1.3-0.3)/4 = 0.25 s, tokens/s 5/1.3."""
    ticks = itertools.chain([10.0, 10.3, 11.3], itertools.repeat(11.3))  # start, first content, end, collection
    monkeypatch.setattr(_recorder, "_clock", lambda: next(ticks))
    monkeypatch.setattr(_request, "_clock", _recorder._clock)
    import ryot_telemetry.router.wrapper as w

    monkeypatch.setattr(w, "_clock", _recorder._clock)
    chunks = [ChatChunk(choices=[ChunkChoice(delta=Delta(role="assistant", content=""))])]  # role-only: not content
    chunks += [content_chunk(str(i)) for i in range(5)] + [usage_chunk(usage(12, 5))]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    cap.collect()
    ttft = cap.histogram("ryot.ttft.latency", model="m", prompt_size="tiny")
    assert ttft.sum == pytest.approx(0.3) and ttft.bucket_counts == (0, 0, 0, 0, 0, 0, 1, 0, 0, 0)
    tpot = cap.histogram("ryot.time_per_output_token", model="m")
    assert tpot.sum == pytest.approx(0.25) and tpot.bucket_counts == (0,) * 12 + (1, 0, 0, 0, 0)
    tps = cap.histogram("ryot.tokens_per_second", model="m")
    assert tps.sum == pytest.approx(5 / 1.3) and tps.bucket_counts == (1, 0, 0, 0, 0, 0, 0, 0, 0)
    lat = cap.histogram("ryot.inference.latency", model="m", batch_size="1", generation_mode="streaming")
    assert lat.sum == pytest.approx(1.3) and lat.bucket_counts == (0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0)


async def test_tool_call_chunk_counts_as_first_token(cap: Capture) -> None:
    """A first chunk carrying only a tool call starts TTFT."""
    chunks = [ChatChunk(choices=[ChunkChoice(delta=Delta(tool_calls=[{"index": 0, "id": "t"}]))])]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    cap.collect()
    assert len(cap.points("ryot.ttft.latency")) == 1


async def test_no_usage_estimates_prompt_size_and_invents_no_tokens(cap: Capture) -> None:
    """Without usage: prompt_size from text (~chars/4), no token counts, the request still counts."""
    router = cap.instrument_router(ScriptedRouter(chunks=[content_chunk("a")]))
    params = CompletionParams(model="m", prompt="x" * 4000, stream=True)  # ~1000 tokens -> medium
    [c async for c in await router.openai_completion(params)]
    cap.collect()
    assert cap.series("ryot.ttft.latency") == [{"model": "m", "prompt_size": "medium"}]
    assert cap.points("ryot.tokens.generated") == []
    assert cap.value(REQ, model="m", endpoint="completion", status="success") == 1


async def test_empty_stream_is_success_without_ttft(cap: Capture) -> None:
    """A stream that ends with no chunk is a success with no TTFT point."""
    router = cap.instrument_router(ScriptedRouter(chunks=[]))
    assert [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))] == []
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.points("ryot.ttft.latency") == []


async def test_stream_result_is_an_async_iterator() -> None:
    """The wrapped stream passes the HTTP layer's isinstance(result, AsyncIterator) check."""
    from ryot_telemetry.testing import capture

    c = capture()
    router = c.instrument_router(ScriptedRouter(chunks=[content_chunk("a")]))
    result = await router.openai_chat_completion(ChatParams(model="m", stream=True))
    assert isinstance(result, AsyncIterator)
    await result.aclose()
    c.shutdown()


async def test_instrument_twice_is_a_noop_and_uninstrument_restores(cap: Capture) -> None:
    """Double instrumentation records once; uninstrument_router removes the wrapper."""
    from ryot_telemetry import uninstrument_router

    inner = ScriptedRouter(response=None)
    cap.instrument_router(inner)
    cap.instrument_router(inner)
    await inner.openai_chat_completion(ChatParams(model="m"))
    uninstrument_router(inner)
    await inner.openai_chat_completion(ChatParams(model="m"))
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert "openai_chat_completion" not in vars(inner)


def test_not_a_router_is_a_clear_error(cap: Capture) -> None:
    """Wrapping an object without the OpenAI methods raises TypeError naming the problem."""
    with pytest.raises(TypeError, match="neither openai_chat_completion nor openai_completion"):
        cap.instrument_router(object())


async def test_usage_on_a_content_chunk_is_stripped_for_callers_who_did_not_ask(cap: Capture) -> None:
    """A provider that puts usage on its last content chunk: tokens recorded, caller sees that chunk with usage None."""
    last = ChatChunk(choices=[ChunkChoice(delta=Delta(content="b"))], usage=usage(30, 2))
    chunks = [content_chunk("a"), last]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks, usage_only_if_asked=False))
    got = [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    assert got[0] is chunks[0]
    assert got[1] == last.model_copy(update={"usage": None}) and last.usage is not None
    asked = [
        c
        async for c in await router.openai_chat_completion(
            ChatParams(model="m", stream=True, stream_options={"include_usage": True})
        )
    ]
    assert asked[1] is last
    cap.collect()
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="streaming") == 4


class _Wrapped:
    """Shaped like ogx's OpenAIChatCompletionChunkWithReasoning / OpenAIChatCompletionWithReasoning."""

    def __init__(self, chunk: object = None, completion: object = None, reasoning_content: str | None = None) -> None:
        self.chunk, self.completion, self.reasoning_content = chunk, completion, reasoning_content


class _ReasoningRouter(ScriptedRouter):
    async def openai_chat_completions_with_reasoning(self, params: ChatParams) -> object:
        inner = await self._call(params)
        if not params.stream:
            return _Wrapped(completion=inner, reasoning_content="hmm")

        async def gen() -> AsyncIterator[_Wrapped]:
            yield _Wrapped(chunk=ChatChunk(choices=[]), reasoning_content="thinking")
            async for c in inner:
                yield _Wrapped(chunk=c)

        return gen()


async def test_reasoning_method_reads_inside_the_wrappers(cap: Capture) -> None:
    """ogx's reasoning method: TTFT from the reasoning chunk, usage from the wrapped chunk, wrappers unchanged."""
    chunks = [content_chunk("a"), usage_chunk(usage(100, 1))]
    router = cap.instrument_router(_ReasoningRouter(chunks=chunks, response=Completion(usage=usage(10, 4))))
    params = ChatParams(model="m", stream=True, stream_options={"include_usage": True})
    got = [w async for w in await router.openai_chat_completions_with_reasoning(params)]
    assert [w.chunk for w in got[1:]] == chunks and got[0].reasoning_content == "thinking"
    single = await router.openai_chat_completions_with_reasoning(ChatParams(model="m"))
    assert isinstance(single, _Wrapped)
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 2
    assert cap.value("ryot.tokens.generated", model="m", token_type="prompt", generation_mode="streaming") == 100
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="standard") == 4
    assert cap.histogram("ryot.ttft.latency", model="m", prompt_size="small").count == 1


@needs_chunk_metrics
async def test_reasoning_stream_gives_the_semconv_chunk_metrics_one_point_per_wrapper() -> None:
    """With semconv on, ogx's reasoning stream (3 wrappers: reasoning, content, usage) gives one time to first
    chunk and 2 time-per-output-chunk points; the wrappers still reach the caller unchanged."""
    from ryot_telemetry.testing import capture

    c = capture(semconv=True)
    try:
        chunks = [content_chunk("a"), usage_chunk(usage(100, 1))]
        router = c.instrument_router(_ReasoningRouter(chunks=chunks))
        params = ChatParams(model="m", stream=True, stream_options={"include_usage": True})
        got = [w async for w in await router.openai_chat_completions_with_reasoning(params)]
        assert [w.chunk for w in got[1:]] == chunks
        c.collect()
        first = c.points("gen_ai.client.operation.time_to_first_chunk")
        per_chunk = c.points("gen_ai.client.operation.time_per_output_chunk")
        assert [p.count for p in first] == [1] and [p.count for p in per_chunk] == [2]
    finally:
        c.shutdown()


class _NextOnly:
    """An async iterator with ``__anext__`` but no ``__aiter__`` (legal behind an iterable's ``__aiter__``)."""

    def __init__(self, items: list[object]) -> None:
        self._items = list(items)

    def __anext__(self) -> object:
        async def step() -> object:
            if not self._items:
                raise StopAsyncIteration
            return self._items.pop(0)

        return step()


class _Restartable:
    """An iterable whose ``__aiter__`` starts over each time: the wrapper must iterate it once, not twice."""

    def __init__(self, items: list[object]) -> None:
        self.items = items
        self.aiter_calls = 0

    def __aiter__(self) -> _NextOnly:
        self.aiter_calls += 1
        return _NextOnly(self.items)


async def test_iterables_that_restart_or_lack_aiter_are_iterated_once(cap: Capture) -> None:
    """A stream object whose __aiter__ returns a fresh __anext__-only iterator: every chunk exactly once, usage read."""
    chunks = [content_chunk("a"), content_chunk("b"), content_chunk("c"), usage_chunk(usage(7, 3))]
    stream = _Restartable(chunks)

    class Router:
        async def openai_chat_completion(self, params: ChatParams) -> object:
            return stream

    router = cap.instrument_router(Router())
    got = [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    assert got == chunks[:3] and stream.aiter_calls == 1
    cap.collect()
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="streaming") == 3


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


async def test_tpot_is_per_choice_for_n_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    """n=4, 44 completion tokens (usage sums the choices): 11 per choice -> TPOT (1.3-0.3)/10 = 0.1 s, in the
    Ryot histogram and the GenAI semconv one alike; tokens/s stays per request (44/1.3)."""
    from ryot_telemetry.testing import capture

    cap = capture(semconv=True)
    # start, first chunk's arrival (semconv notes every chunk's), first token, three more arrivals, end
    ticks = itertools.chain([10.0, 10.1, 10.3, 10.5, 10.8, 11.0, 11.3], itertools.repeat(11.3))
    monkeypatch.setattr(_recorder, "_clock", lambda: next(ticks))
    monkeypatch.setattr(_request, "_clock", _recorder._clock)
    import ryot_telemetry.router.wrapper as w

    monkeypatch.setattr(w, "_clock", _recorder._clock)
    try:
        chunks = [content_chunk(str(i)) for i in range(3)] + [usage_chunk(usage(12, 44))]
        router = cap.instrument_router(ScriptedRouter(chunks=chunks))
        [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True, n=4))]
        cap.collect()
        tpot = cap.histogram("ryot.time_per_output_token", model="m")
        assert tpot.count == 1 and tpot.sum == pytest.approx(0.1)
        sem = [p for p in cap.points("gen_ai.server.time_per_output_token")]
        assert len(sem) == 1 and sem[0].count == 1 and sem[0].sum == pytest.approx(0.1)
        assert cap.histogram("ryot.tokens_per_second", model="m").sum == pytest.approx(44 / 1.3)
    finally:
        cap.shutdown()


async def test_no_tpot_below_two_tokens_per_choice(cap: Capture) -> None:
    """n=4 with 7 completion tokens is 1.75 tokens per choice: no decode interval to measure, no TPOT point."""
    chunks = [content_chunk("a"), usage_chunk(usage(12, 7))]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True, n=4))]
    cap.collect()
    assert cap.points("ryot.time_per_output_token") == []
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="streaming") == 7


def _field(p: Any, name: str) -> Any:
    """Attribute access where the params class offers it, as a router typed for its own params class does."""
    if isinstance(p, AttrDict):
        return p.__getattr__(name)
    if isinstance(p, dict):
        return p.get(name)
    return getattr(p, name)


class AttrDict(dict):  # type: ignore[type-arg]
    """The attribute-style dict idiom: ``d.key`` reads ``d["key"]`` and raises KeyError when absent."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


class NoCopyAttrDict(AttrDict):
    """An attribute-style dict that cannot be copied with ``copy.copy`` (as on Python 3.10), only rebuilt."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("not copyable")


@dataclasses.dataclass(frozen=True)
class DataclassParams:
    model: str
    messages: list[dict[str, Any]]
    stream: bool = True
    stream_options: dict[str, Any] | None = None


class TupleParams(NamedTuple):
    model: str
    messages: list[dict[str, Any]]
    stream: bool = True
    stream_options: dict[str, Any] | None = None


@pytest.mark.parametrize(
    "params",
    [
        AttrDict(model="m", messages=[], stream=True),
        NoCopyAttrDict(model="m", messages=[], stream=True),
        collections.OrderedDict(model="m", messages=[], stream=True),
        collections.defaultdict(None, model="m", messages=[], stream=True),
        DataclassParams(model="m", messages=[]),
        TupleParams(model="m", messages=[]),
    ],
    ids=["attrdict", "attrdict-no-copy", "ordereddict", "defaultdict", "dataclass", "namedtuple"],
)
async def test_params_keep_their_exact_type_when_usage_is_requested(cap: Capture, params: Any) -> None:
    """The params the provider receives are of the caller's exact class (a router reading ``params.stream`` on an
    attribute-style dict keeps working), carry include_usage, and the caller's object is left untouched."""
    chunks = [content_chunk("a"), usage_chunk(usage(5, 2))]
    seen: list[Any] = []

    class Router:
        async def openai_chat_completion(self, p: Any) -> Any:
            seen.append(p)
            opts = _field(p, "stream_options")
            assert _field(p, "stream") is True

            async def gen() -> AsyncIterator[Any]:
                for c in chunks if opts and opts["include_usage"] else chunks[:1]:
                    yield c

            return gen()

    before = repr(params)
    router = cap.instrument_router(Router())
    got = [c async for c in await router.openai_chat_completion(params)]
    assert got == chunks[:1]  # the usage chunk we asked for is hidden
    assert type(seen[0]) is type(params) and seen[0] is not params
    assert _field(seen[0], "stream_options") == {"include_usage": True}
    assert repr(params) == before
    assert ("stream_options" not in params) if isinstance(params, dict) else params.stream_options is None
    cap.collect()
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="streaming") == 2


async def test_stream_object_whose_getattr_raises_keyerror_passes_through(cap: Capture) -> None:
    """Telemetry never reads the stream through its ``__getattr__``: same chunks, one success, in-flight 0 —
    also when the caller closes the wrapped stream early."""
    chunks = [content_chunk("a"), content_chunk("b"), usage_chunk(usage(5, 2))]

    class Router:
        async def openai_chat_completion(self, p: Any) -> Any:
            return KeyErrorStream(chunks)

    router = cap.instrument_router(Router())
    got = [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    assert got == chunks[:2]
    stream = await router.openai_chat_completion(ChatParams(model="m", stream=True))
    assert await stream.__anext__() == chunks[0]
    await stream.aclose()
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    assert cap.value(ACTIVE, model="m", request_type="streaming", endpoint="chat_completion") == 0


# --- every router shape, unchanged (SPEC) ----------------------------------------------------------------------


class AsyncGenRouter:
    """A router whose openai_chat_completion is itself an async generator (``async def ...: yield``)."""

    def __init__(self, chunks: list[Any], raises: BaseException | None = None, raise_after: int = 0) -> None:
        self.chunks, self.raises, self.raise_after = chunks, raises, raise_after
        self.calls: list[Any] = []
        self.finished = 0

    async def openai_chat_completion(self, params: Any) -> AsyncIterator[Any]:
        self.calls.append(params)
        include_usage = bool((params.stream_options or {}).get("include_usage"))
        try:
            for i, c in enumerate(self.chunks):
                if self.raises is not None and i == self.raise_after:
                    raise self.raises
                if c.usage is None or include_usage:
                    yield c
        finally:
            self.finished += 1


async def test_async_generator_method_stays_an_async_generator(cap: Capture) -> None:
    """``async for c in router.method(p)`` works: the method is still an async generator function, the call an
    async generator; the caller gets the very chunks (the usage chunk we asked for hidden), TTFT and tokens count."""
    chunks = [content_chunk("a"), content_chunk("b"), usage_chunk(usage(300, 2))]
    inner = AsyncGenRouter(chunks)
    router = cap.instrument_router(inner)
    assert inspect.isasyncgenfunction(router.openai_chat_completion)
    gen = router.openai_chat_completion(ChatParams(model="m", stream=True))
    assert inspect.isasyncgen(gen)
    got = [c async for c in gen]
    assert len(got) == 2 and got[0] is chunks[0] and got[1] is chunks[1]
    assert inner.calls[0].stream_options == {"include_usage": True} and inner.finished == 1
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value("ryot.tokens.generated", model="m", token_type="prompt", generation_mode="streaming") == 300
    assert cap.histogram("ryot.ttft.latency", model="m", prompt_size="small").count == 1
    assert cap.recorder.active() == {("__unknown__", "streaming", "chat_completion"): 0}


async def test_async_generator_method_failing_or_closed_is_accounted_once(cap: Capture) -> None:
    """Mid-stream failure: the same exception object after 1 chunk, status partial; a caller closing after one
    chunk: partial, the provider's generator finished; a model name the router rejects never takes a slot."""
    exc = ValueError("Model 'nope' not found")
    exc.status_code = 404  # type: ignore[attr-defined]
    router = cap.instrument_router(AsyncGenRouter([content_chunk("a"), content_chunk("b")], exc, raise_after=1))
    got = []
    with pytest.raises(ValueError) as info:
        async for c in router.openai_chat_completion(ChatParams(model="m", stream=True)):
            got.append(c)
    assert info.value is exc and len(got) == 1
    inner = AsyncGenRouter([content_chunk("a"), content_chunk("b")])
    gen = cap.instrument_router(inner).openai_chat_completion(ChatParams(model="m", stream=True))
    assert (await gen.__anext__()).choices[0].delta.content == "a"
    await gen.aclose()
    assert inner.finished == 1
    rejected = cap.instrument_router(AsyncGenRouter([content_chunk("a")], exc, raise_after=0))
    with pytest.raises(ValueError):
        async for _ in rejected.openai_chat_completion(ChatParams(model="nope", stream=True)):
            pass
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 2
    assert cap.value("ryot.inference.errors", model="m", error_type="model_not_found", severity="info") == 1
    assert (
        cap.value(REQ, model="__unknown__", endpoint="chat_completion", status="error", error_type="model_not_found")
        == 1
    )
    assert set(cap.recorder.active().values()) == {0}


async def test_async_generator_method_never_iterated_ends_when_dropped(cap: Capture) -> None:
    """An async generator the caller creates and drops (or closes) without iterating: no request stays in flight."""
    inner = AsyncGenRouter([content_chunk("a")])
    router = cap.instrument_router(inner)
    router.openai_chat_completion(ChatParams(model="m", stream=True))  # dropped at once
    gen = router.openai_chat_completion(ChatParams(model="m", stream=True))
    await gen.aclose()
    del gen
    gc.collect()
    for _ in range(5):  # the loop's finaliser hook closes the dropped one in a task of its own
        await asyncio.sleep(0)
    cap.collect()
    assert cap.value(REQ, model="__unknown__", endpoint="chat_completion", status="partial") == 2
    assert cap.recorder.active() == {("__unknown__", "streaming", "chat_completion"): 0}
    assert inner.calls == []  # the provider's generator never ran


class UsageRaises:
    """A content chunk whose ``usage`` property raises KeyboardInterrupt (and ``model`` SystemExit)."""

    def __init__(self, text: str) -> None:
        self.choices = [ChunkChoice(delta=Delta(content=text))]

    @property
    def usage(self) -> Any:
        raise KeyboardInterrupt("from usage")

    @property
    def model(self) -> Any:
        raise SystemExit("from model")


async def test_chunk_whose_usage_property_raises_keyboard_interrupt_goes_through(cap: Capture) -> None:
    """Chunks whose ``usage`` raises KeyboardInterrupt, before and after the first content chunk: the caller gets
    every chunk (same objects), the stream succeeds, the next request still works."""
    from ryot_telemetry.testing import capture

    cap = capture(semconv=True)
    try:
        chunks = [UsageRaises(t) for t in "abc"]

        class Router:
            async def openai_chat_completion(self, params: Any) -> Any:
                async def gen() -> AsyncIterator[Any]:
                    for c in chunks:
                        yield c

                return gen()

        router = cap.instrument_router(Router())
        got = [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
        assert len(got) == 3 and all(g is c for g, c in zip(got, chunks))
        cap.collect()
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
        assert cap.histogram("ryot.ttft.latency", model="m", prompt_size="tiny").count == 1
        # in flight under __unknown__ until the router returned a stream (it accepted the name), then under "m"
        assert cap.recorder.active() == {
            ("__unknown__", "streaming", "chat_completion"): 0,
            ("m", "streaming", "chat_completion"): 0,
        }
    finally:
        cap.shutdown()


@pytest.mark.parametrize("mapping", [dict, collections.OrderedDict], ids=["dict", "ordereddict"])
async def test_usage_only_mapping_stream_is_read_and_hidden_alike(cap: Capture, mapping: type) -> None:
    """A stream of one usage-only chunk, as dicts or OrderedDicts alike: the usage counts and the chunk, which the
    caller did not ask for, is hidden."""
    chunk = mapping(choices=[], usage=mapping(prompt_tokens=11, completion_tokens=4))
    router = cap.instrument_router(ScriptedRouter(chunks=[chunk]))
    got = [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    assert got == []
    asked = ChatParams(model="m", stream=True, stream_options={"include_usage": True})
    got = [c async for c in await router.openai_chat_completion(asked)]
    assert len(got) == 1 and got[0] is chunk
    cap.collect()
    assert cap.value("ryot.tokens.generated", model="m", token_type="prompt", generation_mode="streaming") == 22
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="streaming") == 8


class ClassRaises:
    """A chunk whose ``__class__`` (which ``isinstance`` consults) and every other read raise KeyboardInterrupt."""

    @property
    def __class__(self) -> Any:  # type: ignore[override]
        raise KeyboardInterrupt("from __class__")

    def __getattr__(self, name: str) -> Any:
        raise KeyboardInterrupt(name)


async def test_hostile_chunk_before_the_usage_chunk_never_breaks_the_drain(cap: Capture) -> None:
    """The chunk before a usage-only chunk is read again at drain time (for a finish reason): when every read of
    it raises KeyboardInterrupt, the caller still has its chunks and the collection records the request."""
    hostile = ClassRaises()
    chunks = [content_chunk("a"), hostile, usage_chunk(usage(6, 2))]

    class Router:  # yields the chunks without reading them (ScriptedRouter reads their usage)
        async def openai_chat_completion(self, params: Any) -> Any:
            async def gen() -> AsyncIterator[Any]:
                for c in chunks:
                    yield c

            return gen()

    router = cap.instrument_router(Router())
    got = [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    assert len(got) == 2 and got[0] is chunks[0] and got[1] is hostile
    try:
        cap.collect()
    except BaseException as e:  # a KeyboardInterrupt would abort the whole session instead of failing this test
        raise AssertionError(f"the collection raised {e!r}") from e
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="streaming") == 2


def test_streams_of_a_loop_closed_without_shutdown_asyncgens_end_as_partial() -> None:
    """Two streams left open when their event loop is closed without ``shutdown_asyncgens()``: nothing can close
    them any more, yet once collected both requests end as partial and in-flight is back to 0."""
    from ryot_telemetry.testing import capture

    cap = capture()
    try:
        router = cap.instrument_router(ScriptedRouter(chunks=[content_chunk(str(i)) for i in range(5)]))
        agen_router = cap.instrument_router(AsyncGenRouter([content_chunk(str(i)) for i in range(5)]))

        async def open_streams() -> list[Any]:
            a = await router.openai_chat_completion(ChatParams(model="m", stream=True))
            b = agen_router.openai_chat_completion(ChatParams(model="m", stream=True))
            await a.__anext__()
            await b.__anext__()
            return [a, b]

        loop = asyncio.new_event_loop()
        streams = loop.run_until_complete(open_streams())
        assert cap.recorder.active()[("m", "streaming", "chat_completion")] == 2
        loop.close()  # no shutdown_asyncgens(): the loop's finaliser hook does nothing once closed
        del streams
        gc.collect()
        cap.collect()
        assert cap.recorder.active()[("m", "streaming", "chat_completion")] == 0
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 2
    finally:
        cap.shutdown()


# --- outcomes, estimates and engine timings, read once per stream from its final chunks -------------------------

FIN = "ryot.finish_reasons"
EST = "ryot.estimated_tokens"
LLAMA_TIMINGS = {
    "cache_n": 40,
    "prompt_n": 20,
    "prompt_ms": 12.5,
    "prompt_per_token_ms": 0.625,
    "predicted_n": 3,
    "predicted_ms": 18.0,
    "predicted_per_token_ms": 9.0,
}


def _llama_stream(reason: str = "length") -> list[ChatChunk]:
    """As llama-server streams: a role chunk, content, a finish chunk, then usage with ``timings`` on the last."""
    return [
        ChatChunk(choices=[ChunkChoice(delta=Delta(role="assistant", content=None))]),
        content_chunk("a"),
        content_chunk("b"),
        content_chunk("c"),
        ChatChunk(choices=[ChunkChoice(delta=Delta(), finish_reason=reason)]),
        ChatChunk(choices=[], usage=usage(60, 3, cached=40), timings=LLAMA_TIMINGS),
    ]


@pytest.mark.parametrize("asks_usage", [False, True])
async def test_finish_reason_and_engine_timings_come_from_the_final_chunks(cap: Capture, asks_usage: bool) -> None:
    """llama.cpp's shape, usage asked by the caller or not: finish_reason length once, cached 40, prefill 12.5 ms,
    engine TPOT 9 ms, one outside-engine TTFT; the caller gets the provider's chunks (minus the usage it did not
    ask for), timings included."""
    chunks = _llama_stream()
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    options = {"include_usage": True} if asks_usage else None
    got = [
        c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True, stream_options=options))
    ]
    assert got == (chunks if asks_usage else chunks[:-1])
    cap.collect()
    assert cap.series(FIN) == [{"model": "m", "endpoint": "chat_completion", "finish_reason": "length"}]
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="length") == 1
    assert cap.value("ryot.cached_prompt_tokens", model="m", generation_mode="streaming") == 40
    pre = cap.histogram("ryot.engine.prefill", model="m")
    assert (pre.count, pre.sum) == (1, 0.0125)
    tpot = cap.histogram("ryot.engine.time_per_output_token", model="m")
    assert (tpot.count, tpot.sum) == (1, 0.009)
    assert cap.histogram("ryot.ttft.outside_engine", model="m").count == 1
    assert cap.series(EST) == []


def _finishing(reason: str, text: str | None = None, u: Any = None) -> ChatChunk:
    return ChatChunk(choices=[ChunkChoice(delta=Delta(content=text), finish_reason=reason)], usage=u)


ASKED_USAGE_SHAPES = {
    # OpenAI: a finish chunk, then the usage-only chunk
    "usage-only-chunk-last": [*map(content_chunk, "abc"), _finishing("stop"), usage_chunk(usage(10, 3))],
    # usage and the finish reason on the last content chunk
    "usage-on-the-last-content-chunk": [*map(content_chunk, "ab"), _finishing("length", "c", usage(10, 3))],
    # vLLM's continuous usage stats: every chunk carries the running total
    "usage-on-every-chunk": [
        *(ChatChunk(choices=[ChunkChoice(delta=Delta(content=t))], usage=usage(10, i + 1)) for i, t in enumerate("ab")),
        _finishing("stop", "c", usage(10, 3)),
    ],
    # one chunk without usage after the one with usage and the finish reason
    "usage-before-a-trailing-chunk": [*map(content_chunk, "ab"), _finishing("stop", None, usage(10, 3)), ChatChunk()],
}


@pytest.mark.parametrize("shape", sorted(ASKED_USAGE_SHAPES))
async def test_usage_the_caller_asked_for_is_read_from_the_final_chunks(cap: Capture, shape: str) -> None:
    """With usage asked for by the caller (nothing to hide), the hot loop reads no chunk's usage; the stream's end
    reads it from its last chunk or the one before: the caller gets every chunk, usage gives 10 + 3 tokens, the
    finish reason comes from the final chunks, nothing is estimated."""
    chunks = ASKED_USAGE_SHAPES[shape]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    params = ChatParams(model="m", stream=True, stream_options={"include_usage": True})
    got = [c async for c in await router.openai_chat_completion(params)]
    assert len(got) == len(chunks) and all(a is b for a, b in zip(got, chunks))
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    tokens = {p.attributes["token_type"]: p.value for p in cap.points("ryot.tokens.generated")}
    assert tokens == {"prompt": 10, "completion": 3}
    reason = "length" if shape == "usage-on-the-last-content-chunk" else "stop"
    assert cap.series(FIN) == [{"model": "m", "endpoint": "chat_completion", "finish_reason": reason}]
    assert cap.series(EST) == []


async def test_usage_the_caller_asked_for_on_an_early_chunk_only_is_not_read(cap: Capture) -> None:
    """The limit of reading usage late: usage on a chunk three from the end (no provider is known to send it so)
    is not read when the caller asked for usage; the stream is estimated from its 4 content chunks instead."""
    chunks = [content_chunk("a"), _finishing("stop", "b", usage(10, 3)), *map(content_chunk, "cd")]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    params = ChatParams(model="m", stream=True, stream_options={"include_usage": True})
    assert [c async for c in await router.openai_chat_completion(params)] == chunks
    cap.collect()
    assert cap.series("ryot.tokens.generated") == []
    assert cap.value(EST, model="m", token_type="completion") == 4


async def test_usage_the_caller_asked_for_is_read_when_the_provider_fails_after_it(cap: Capture) -> None:
    """Usage asked for by the caller, the provider failing after the usage chunk: partial with its error, the
    usage's tokens, no estimate; the caller gets every chunk, then the provider's very exception."""
    exc = RuntimeError("connection reset")
    chunks = [*map(content_chunk, "abc"), usage_chunk(usage(10, 3))]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks, raises=exc, raise_after=4))
    params = ChatParams(model="m", stream=True, stream_options={"include_usage": True})
    got = []
    with pytest.raises(RuntimeError) as info:
        async for c in await router.openai_chat_completion(params):
            got.append(c)
    assert info.value is exc and got == chunks
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    tokens = {p.attributes["token_type"]: p.value for p in cap.points("ryot.tokens.generated")}
    assert tokens == {"prompt": 10, "completion": 3}
    assert cap.series(EST) == []


class _UsageRaises(ChatChunk):
    """A final chunk whose ``usage`` raises a BaseException that is not an Exception."""

    def __getattribute__(self, name: str) -> Any:
        if name == "usage":
            raise KeyboardInterrupt("usage")
        return super().__getattribute__(name)


async def test_a_final_chunk_whose_usage_raises_is_delivered_and_the_stream_estimated(cap: Capture) -> None:
    """Usage asked for by the caller and read late: the last chunk's ``usage`` raising KeyboardInterrupt stays
    telemetry's (the caller gets every chunk and a normal end); the request is a success, estimated at 3."""
    last = _UsageRaises(choices=[ChunkChoice(delta=Delta(content="c"), finish_reason="stop")])
    chunks = [content_chunk("a"), content_chunk("b"), last]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    params = ChatParams(model="m", stream=True, stream_options={"include_usage": True})
    got = [c async for c in await router.openai_chat_completion(params)]
    assert len(got) == 3 and got[-1] is last
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value(EST, model="m", token_type="completion") == 3
    assert cap.series("ryot.tokens.generated") == []


async def test_stream_the_client_abandons_is_aborted_and_estimated_from_its_chunks(cap: Capture) -> None:
    """A client that hangs up after 3 content chunks (no usage ever arrives): finish_reason abort once, estimated
    completion 3 and prompt 10 (a 40-character message / 4), no usage tokens, status partial."""
    chunks = _llama_stream()[:4] + [content_chunk(f"x{i}") for i in range(5)]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    params = ChatParams(model="m", stream=True, messages=[{"role": "user", "content": "x" * 40}])
    stream = await router.openai_chat_completion(params)
    got = [await stream.__anext__() for _ in range(4)]  # the role chunk and 3 content chunks
    await stream.aclose()
    assert got == chunks[:4]
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    assert cap.series(FIN) == [{"model": "m", "endpoint": "chat_completion", "finish_reason": "abort"}]
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="abort") == 1
    assert cap.value(EST, model="m", token_type="completion") == 3
    assert cap.value(EST, model="m", token_type="prompt") == 10
    assert cap.series("ryot.tokens.generated") == []
    assert cap.histogram("ryot.engine.prefill", model="m") is None  # no timings arrive on an abandoned stream


async def test_broken_stream_is_estimated_and_counts_no_finish_reason(cap: Capture) -> None:
    """A provider failing after 2 content chunks: partial with its error, estimated completion 2, no finish."""
    exc = RuntimeError("engine died")
    router = cap.instrument_router(
        ScriptedRouter(chunks=[content_chunk("a"), content_chunk("b"), content_chunk("c")], raises=exc, raise_after=2)
    )
    with pytest.raises(RuntimeError):
        [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    assert cap.series(FIN) == []
    assert cap.value(EST, model="m", token_type="completion") == 2


async def test_stream_that_ends_without_usage_estimates_only_its_content_chunks(cap: Capture) -> None:
    """A provider that never sends usage: 2 content chunks then a finish chunk: finish stop, estimated 2 (the finish
    chunk carries no token), success."""
    chunks = [
        content_chunk("a"),
        content_chunk("b"),
        ChatChunk(choices=[ChunkChoice(delta=Delta(), finish_reason="stop")]),
    ]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    assert [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))] == chunks
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="stop") == 1
    assert cap.value(EST, model="m", token_type="completion") == 2


async def test_each_choice_of_an_n_choice_stream_counts_its_own_finish_reason(cap: Capture) -> None:
    """n=2, the choices finishing in different chunks (stop, then length) before the usage chunk: one each."""
    chunks = [
        ChatChunk(
            choices=[ChunkChoice(index=0, delta=Delta(content="a")), ChunkChoice(index=1, delta=Delta(content="b"))]
        ),
        ChatChunk(choices=[ChunkChoice(index=0, delta=Delta(), finish_reason="stop")]),
        ChatChunk(choices=[ChunkChoice(index=1, delta=Delta(content="c"))]),
        ChatChunk(choices=[ChunkChoice(index=1, delta=Delta(), finish_reason="length")]),
        usage_chunk(usage(10, 3)),
    ]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    assert [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True, n=2))] == chunks[:4]
    cap.collect()
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="stop") == 1
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="length") == 1
    assert len(cap.series(FIN)) == 2


async def test_dict_chunks_and_vllm_metrics_give_finish_reason_and_engine_timings(cap: Capture) -> None:
    """Dict chunks with vLLM's per-request ``metrics`` on the usage chunk (queue 10 ms, TTFT-in-engine 40 ms, mean
    ITL 12 ms): finish tool_calls, prefill 0.04 s, engine TPOT 0.012 s."""
    metrics = {"time_to_first_token_ms": 40.0, "generation_time_ms": 24.0, "queue_time_ms": 10.0, "mean_itl_ms": 12.0}
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t"}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}, "metrics": metrics},
    ]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    params = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    assert [c async for c in await router.openai_chat_completion(params)] == chunks[:2]
    cap.collect()
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="tool_calls") == 1
    assert cap.histogram("ryot.engine.prefill", model="m").sum == 0.04
    assert cap.histogram("ryot.engine.time_per_output_token", model="m").sum == 0.012


async def test_reasoning_method_records_finish_reason_and_estimates_an_abandoned_stream(cap: Capture) -> None:
    """ogx's reasoning wrappers: a stream that runs out counts its finish reason; one the caller closes after the
    first content is aborted and estimated from its content chunks."""
    done = [
        content_chunk("a"),
        ChatChunk(choices=[ChunkChoice(delta=Delta(), finish_reason="stop")]),
        usage_chunk(usage(9, 1)),
    ]
    router = cap.instrument_router(_ReasoningRouter(chunks=done, response=Completion(usage=usage(10, 4))))
    params = ChatParams(model="m", stream=True, stream_options={"include_usage": True})
    [w async for w in await router.openai_chat_completions_with_reasoning(params)]
    stream = await router.openai_chat_completions_with_reasoning(params)
    for _ in range(2):  # the reasoning-only wrapper, then the first content chunk
        await stream.__anext__()
    await stream.aclose()
    cap.collect()
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="stop") == 1
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="abort") == 1
    assert cap.value(EST, model="m", token_type="completion") == 2  # the reasoning wrapper and "a" carry content


RUN = len(_wrapper._STEP)  # chunks the hot loop counts by table lookups before a run starts again


@pytest.mark.parametrize("taken", [RUN - 1, RUN, RUN + 1, 2 * RUN + 7])
@pytest.mark.parametrize("asks_usage", [False, True])
async def test_long_stream_counts_every_content_chunk_it_delivered(cap: Capture, taken: int, asks_usage: bool) -> None:
    """A stream of 2 runs and 10 chunks more, closed after ``taken`` chunks, around and past the ends of the hot
    loop's runs, usage hidden or asked for: every chunk reaches the caller once, in order, and the estimate is
    exactly ``taken``."""
    chunks = [content_chunk(str(i)) for i in range(2 * RUN + 10)]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    options = {"include_usage": True} if asks_usage else None
    stream = await router.openai_chat_completion(ChatParams(model="m", stream=True, stream_options=options))
    got = [await stream.__anext__() for _ in range(taken)]
    await stream.aclose()
    assert all(a is b for a, b in zip(got, chunks)) and len(got) == taken
    cap.collect()
    assert cap.value("ryot.estimated_tokens", model="m", token_type="completion") == taken


@pytest.mark.parametrize("asks_usage", [False, True])
async def test_provider_error_at_a_run_boundary_reaches_the_caller_unchanged(cap: Capture, asks_usage: bool) -> None:
    """A provider raising IndexError right after a run of the count (where its table lookup runs out): the caller
    gets those chunks, then that very exception; partial, estimated exactly."""
    exc = IndexError("provider bug")
    chunks = [content_chunk(str(i)) for i in range(RUN + 50)]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks, raises=exc, raise_after=RUN))
    options = {"include_usage": True} if asks_usage else None
    got = []
    with pytest.raises(IndexError) as info:
        async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True, stream_options=options)):
            got.append(c)
    assert info.value is exc and len(got) == RUN and got[-1] is chunks[RUN - 1]
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    assert cap.value("ryot.estimated_tokens", model="m", token_type="completion") == RUN


async def test_long_stream_without_usage_that_runs_out_is_estimated_exactly(cap: Capture) -> None:
    """1,500 content chunks and no usage, read to the end: all delivered, estimated 1,500, success."""
    chunks = [content_chunk(str(i)) for i in range(1500)]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    got = [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
    assert len(got) == 1500 and all(a is b for a, b in zip(got, chunks))
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value("ryot.estimated_tokens", model="m", token_type="completion") == 1500


async def test_semconv_hot_loop_counts_chunks_and_keeps_the_final_ones_too() -> None:
    """With semconv on (the loop that notes chunk arrivals): a stream closed after 4 content chunks is estimated
    at 4, and a full llama.cpp-shaped stream still gives its finish reason and engine timings."""
    from ryot_telemetry.testing import capture

    cap = capture(semconv=True)
    try:
        cap.recorder.models("m")
        router = cap.instrument_router(ScriptedRouter(chunks=[content_chunk(str(i)) for i in range(9)]))
        stream = await router.openai_chat_completion(ChatParams(model="m", stream=True))
        for _ in range(4):
            await stream.__anext__()
        await stream.aclose()
        router = cap.instrument_router(ScriptedRouter(chunks=_llama_stream("stop")))
        [c async for c in await router.openai_chat_completion(ChatParams(model="m", stream=True))]
        cap.collect()
        assert cap.value(EST, model="m", token_type="completion") == 4
        assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="stop") == 1
        assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="abort") == 1
        assert cap.histogram("ryot.engine.prefill", model="m").sum == 0.0125
    finally:
        cap.shutdown()


class AiterRaises:
    """A stream object whose ``__aiter__`` method raises."""

    def __aiter__(self) -> Any:
        raise ValueError("no stream today")


class AiterPropertyRaises:
    """A result whose ``__aiter__`` is a property raising something other than AttributeError."""

    @property
    def __aiter__(self) -> Any:
        raise ValueError("not iterable today")


@pytest.mark.parametrize(
    ("result", "raised", "match"),
    [
        (AiterRaises(), ValueError, "no stream today"),
        # AttributeError: what the bare async for meets too
        (AiterPropertyRaises(), AttributeError, "does not have __aiter__"),
    ],
    ids=["aiter-method-raises", "aiter-property-raises"],
)
async def test_stream_whose_aiter_raises_is_recorded_as_the_error_the_caller_gets(
    cap: Capture, result: Any, raised: type[Exception], match: str
) -> None:
    """The router returns a stream whose ``__aiter__`` raises (a method, or a property ``async for`` cannot use):
    the caller gets that very object and its own ``async for`` raises as without telemetry; the request counts once
    as that error (issue 22: it counted as a success), in-flight 0."""

    class Router:
        async def openai_chat_completion(self, params: Any) -> Any:
            return result

    router = cap.instrument_router(Router())
    got = await router.openai_chat_completion(ChatParams(model="m", stream=True))
    assert got is result
    with pytest.raises(raised, match=match):
        async for _ in got:
            pass
    cap.collect()
    assert cap.series(REQ) == [
        {"model": "m", "endpoint": "chat_completion", "status": "error", "error_type": "inference_error"}
    ]
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="error", error_type="inference_error") == 1
    assert cap.recorder.active() == {("__unknown__", "streaming", "chat_completion"): 0}


class _Pooled:
    """A provider's chunk (weak-referenceable), its text large enough to matter if a queued request kept it."""

    def __init__(self, text: str, usage: Any = None, finish: str | None = None, timings: Any = None) -> None:
        self.choices = [
            {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish},
        ]
        self.usage = usage
        self.model = "m"
        self.timings = timings


async def test_a_queued_request_holds_none_of_the_providers_objects(cap: Capture) -> None:
    """Plain calls and streams (with and without semconv): once the caller drops the response or chunks, they are
    freed while their requests still wait for the drain; the drain then records their outcome exactly."""
    import weakref

    refs: list[weakref.ref[Any]] = []
    u = {"prompt_tokens": 3, "completion_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 1}}
    timings = {"prompt_ms": 40.0, "predicted_n": 2, "predicted_per_token_ms": 10.0}

    class Router:
        async def openai_chat_completion(self, params: Any) -> Any:
            if not params.stream:
                response = _Pooled("x" * 65536, u, "length", timings)
                refs.append(weakref.ref(response))
                return response

            async def gen() -> Any:
                chunks = [
                    _Pooled("x" * 65536),
                    _Pooled("y" * 65536),
                    _Pooled("", None, "stop", timings),
                    _Pooled("", u),
                ]
                chunks[-1].choices = []
                refs.extend(weakref.ref(c) for c in chunks)
                for c in chunks:
                    yield c

            return gen()

    router = cap.instrument_router(Router())
    rec = cap.recorder
    rec.stop_drainer()
    got = await router.openai_chat_completion(ChatParams(model="m"))
    assert got.choices[0]["finish_reason"] == "length"
    del got
    stream = await router.openai_chat_completion(ChatParams(model="m", stream=True))
    seen = [c.choices[0]["finish_reason"] if c.choices else None async for c in stream]
    assert seen == [None, None, "stop"]  # the usage chunk the caller did not ask for is not delivered
    del stream
    assert len(rec._pending) == 2
    assert len(refs) == 5
    assert [r() for r in refs] == [None] * 5  # freed with no gc.collect(), the requests still queued
    cap.collect()
    fin = "ryot.finish_reasons"
    assert cap.value(fin, model="m", endpoint="chat_completion", finish_reason="length") == 1
    assert cap.value(fin, model="m", endpoint="chat_completion", finish_reason="stop") == 1
    assert cap.value("ryot.reasoning_tokens", model="m", generation_mode="standard") == 1
    assert cap.value("ryot.reasoning_tokens", model="m", generation_mode="streaming") == 1
    prefill = cap.histogram("ryot.engine.prefill", model="m")
    assert prefill is not None and (prefill.count, prefill.sum) == (2, pytest.approx(0.08))


def _ns_chunk(content: str | None, usage: Any = None) -> Any:
    from types import SimpleNamespace

    delta = SimpleNamespace(content=content)
    choices = [SimpleNamespace(index=0, delta=delta, finish_reason=None)] if content is not None else []
    return SimpleNamespace(model="m", choices=choices, usage=usage)


@pytest.mark.parametrize(
    "prompt",
    [-1, 10**30, float("nan"), float("inf"), True, "12", None, 7],
    ids=["negative", "huge", "nan", "inf", "bool", "str", "none", "plain"],
)
async def test_usage_read_late_is_judged_as_usage_read_per_chunk(prompt: Any) -> None:
    """The same usage, hostile counts included, gives the same tokens whether the caller asked for it (read from the
    final chunks) or ryot hid it (read chunk by chunk): one reader judges both."""
    from types import SimpleNamespace

    from ryot_telemetry.testing import capture

    got = []
    for options in ({"include_usage": True}, None):
        cap = capture()
        try:
            u = SimpleNamespace(prompt_tokens=prompt, completion_tokens=3, total_tokens=None)
            chunks = [_ns_chunk("a"), _ns_chunk("b"), _ns_chunk("c"), _ns_chunk(None, u)]
            router = cap.instrument_router(ScriptedRouter(chunks=chunks))
            params = ChatParams(model="m", stream=True, stream_options=options)
            [c async for c in await router.openai_chat_completion(params)]
            cap.collect()
            tokens = {p.attributes["token_type"]: p.value for p in cap.points("ryot.tokens.generated")}
            estimated = {p.attributes["token_type"]: p.value for p in cap.points(EST)}
            got.append((tokens, estimated))
        finally:
            cap.shutdown()
    assert got[0] == got[1]
    # an implausible prompt count is dropped, the completion count kept: nothing is estimated where usage came
    assert got[0] == ({"prompt": 7, "completion": 3} if prompt == 7 else {"completion": 3}, {})

"""The router wrapper records exactly what the SPEC assigns to a router."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from ryot_telemetry.testing import Capture
from support.fakes import (
    ChatParams,
    Choice,
    Completion,
    CompletionParams,
    Message,
    ScriptedRouter,
    content_chunk,
    usage,
    usage_chunk,
)

REQ = "ryot.inference.requests"


async def test_stream_with_usage_records_ttft_tokens_and_cache(cap: Capture) -> None:
    """5 content chunks + usage (600/5, cached 300): TTFT in prompt_size=medium, tokens 600/5, cache 0.5."""
    chunks = [content_chunk(f"t{i}") for i in range(5)] + [usage_chunk(usage(600, 5, cached=300))]
    router = cap.instrument_router(ScriptedRouter(chunks=chunks))
    stream = await router.openai_chat_completion(ChatParams(model="m", stream=True))
    got = [c async for c in stream]
    assert got == chunks[:5]  # the usage-only chunk the caller did not ask for is hidden
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    ttft = cap.histogram("ryot.ttft.latency", model="m", prompt_size="medium")
    assert ttft is not None and ttft.count == 1
    assert cap.value("ryot.tokens.generated", model="m", token_type="prompt", generation_mode="streaming") == 600
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="streaming") == 5
    eff = cap.histogram("ryot.prompt_cache.effectiveness", model="m")
    assert eff is not None and eff.sum == 0.5
    assert eff.bucket_counts == (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0)
    assert cap.histogram("ryot.time_per_output_token", model="m").count == 1
    assert (
        cap.value("ryot.active_inference_requests", model="m", request_type="streaming", endpoint="chat_completion")
        == 0
    )


async def test_timeout_error_reaches_caller_unchanged(cap: Capture) -> None:
    """TimeoutError: status=timeout, error_type=timeout, severity=warning, same exception object."""
    exc = TimeoutError("slow")
    router = cap.instrument_router(ScriptedRouter(raises=exc))
    with pytest.raises(TimeoutError) as info:
        await router.openai_chat_completion(ChatParams(model="m"))
    assert info.value is exc
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="timeout", error_type="timeout") == 1
    assert cap.value("ryot.inference.errors", model="m", error_type="timeout", severity="warning") == 1


async def test_consumer_break_is_partial_and_active_returns_to_zero(cap: Capture) -> None:
    """Breaking after 2 chunks and closing: status=partial, active back to 0, provider stream closed."""
    inner = ScriptedRouter(chunks=[content_chunk(f"t{i}") for i in range(5)])
    router = cap.instrument_router(inner)
    stream = await router.openai_chat_completion(ChatParams(model="m", stream=True))
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 2:
            break
    await stream.aclose()
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    assert (
        cap.value("ryot.active_inference_requests", model="m", request_type="streaming", endpoint="chat_completion")
        == 0
    )
    assert inner.closed == 1


async def test_non_stream_usage_and_exact_latency_series(cap: Capture) -> None:
    """A non-stream chat call records usage tokens and one latency point in batch_size=1, standard."""
    resp = Completion(choices=[Choice(message=Message(content="x"))], usage=usage(40, 10))
    router = cap.instrument_router(ScriptedRouter(response=resp))
    assert await router.openai_chat_completion(ChatParams(model="m")) is resp
    cap.collect()
    assert cap.series("ryot.inference.latency") == [{"model": "m", "batch_size": "1", "generation_mode": "standard"}]
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="standard") == 10
    assert cap.points("ryot.ttft.latency") == []
    b = cap.histogram("ryot.batch_size.distribution", model="m", request_type="standard")
    assert (b.count, b.sum) == (1, 1)


async def test_batch_completion_buckets_batch_size(cap: Capture) -> None:
    """A completion with 6 prompts is generation_mode=batch, batch_size=5-8."""
    resp = Completion(choices=[Choice(text="x")], usage=usage(60, 6))
    router = cap.instrument_router(ScriptedRouter(response=resp))
    await router.openai_completion(CompletionParams(model="m", prompt=["a"] * 6))
    cap.collect()
    assert cap.series("ryot.inference.latency") == [{"model": "m", "batch_size": "5-8", "generation_mode": "batch"}]
    b = cap.histogram("ryot.batch_size.distribution", model="m", request_type="batch")
    assert b.sum == 6 and b.bucket_counts == (0, 0, 0, 1, 0, 0, 0, 0)


async def test_task_cancellation_returns_active_to_zero(cap: Capture) -> None:
    """Cancelling a task awaiting a non-stream call: status=partial, active 0, CancelledError propagates."""
    await cap.instrument_router(ScriptedRouter(response=Completion())).openai_chat_completion(ChatParams(model="m"))
    router = cap.instrument_router(ScriptedRouter(response=Completion(), delay=10))  # "m" has its label slot
    task = asyncio.ensure_future(router.openai_chat_completion(ChatParams(model="m")))
    await asyncio.sleep(0.01)
    cap.collect()
    assert (
        cap.value("ryot.active_inference_requests", model="m", request_type="standard", endpoint="chat_completion") == 1
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cap.collect()
    assert (
        cap.value("ryot.active_inference_requests", model="m", request_type="standard", endpoint="chat_completion") == 0
    )
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1


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


class KeyErrorResult:
    """A response whose instance ``__getattr__`` raises KeyError for anything it lacks (the AttrDict idiom)."""

    def __getattr__(self, name: str) -> object:
        raise KeyError(name)


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream-flag-but-no-stream"])
async def test_result_whose_getattr_raises_keyerror_passes_through(cap: Capture, stream: bool) -> None:
    """The caller gets the very object back, no KeyError from telemetry; the request counts, in-flight is 0."""
    result = KeyErrorResult()

    class Router:
        async def openai_chat_completion(self, params: object) -> object:
            return result

    router = cap.instrument_router(Router())
    assert await router.openai_chat_completion(ChatParams(model="m", stream=stream)) is result
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    mode = "streaming" if stream else "standard"
    # a first request of "m" was in flight under __unknown__ (the name had no label slot yet)
    assert cap.recorder.active() == {("__unknown__", mode, "chat_completion"): 0}


# --- every router shape, unchanged (SPEC) ----------------------------------------------------------------------


async def test_sync_method_stays_sync_and_returns_the_very_object(cap: Capture) -> None:
    """A synchronous openai_chat_completion stays synchronous: not a coroutine function, the call returns the
    router's own object (no coroutine), and the request is recorded with its usage."""
    resp = Completion(choices=[Choice(message=Message(content="x"))], usage=usage(40, 10))

    class SyncRouter:
        def openai_chat_completion(self, params: Any) -> Any:
            return resp

    router = cap.instrument_router(SyncRouter())
    assert not inspect.iscoroutinefunction(router.openai_chat_completion)
    assert router.openai_chat_completion(ChatParams(model="m")) is resp
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="standard") == 10
    assert cap.recorder.active() == {("__unknown__", "standard", "chat_completion"): 0}


async def test_sync_method_handing_back_a_coroutine_stays_awaitable(cap: Capture) -> None:
    """A sync method returning a coroutine: the call returns a coroutine at once (the request in flight), and
    awaiting it gives the router's object; the request ends when the caller's await does."""
    resp = Completion(usage=usage(7, 3))

    class Delegating:
        def openai_chat_completion(self, params: Any) -> Any:
            return self._impl(params)

        async def _impl(self, params: Any) -> Any:
            await asyncio.sleep(0)
            return resp

    await cap.instrument_router(ScriptedRouter(response=resp)).openai_chat_completion(ChatParams(model="m"))
    router = cap.instrument_router(Delegating())
    pending = router.openai_chat_completion(ChatParams(model="m"))
    assert inspect.iscoroutine(pending)
    assert cap.recorder.active()[("m", "standard", "chat_completion")] == 1
    assert await pending is resp
    assert cap.recorder.active()[("m", "standard", "chat_completion")] == 0
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 2
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="standard") == 6


async def test_sync_method_raising_stop_iteration_raises_that_very_exception(cap: Capture) -> None:
    """StopIteration cannot leave a coroutine; the sync path still hands the caller the router's own object, with
    no context of telemetry's attached."""
    exc = StopIteration("done")

    class SyncRouter:
        def openai_chat_completion(self, params: Any) -> Any:
            raise exc

    router = cap.instrument_router(SyncRouter())
    with pytest.raises(StopIteration) as info:
        router.openai_chat_completion(ChatParams(model="m"))
    assert info.value is exc and exc.__context__ is None and exc.__cause__ is None
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="error", error_type="inference_error") == 1


class HostileError(Exception):
    """A provider exception every read of which raises a BaseException: ``__str__``, ``status_code``, ``response``."""

    def __str__(self) -> str:
        raise KeyboardInterrupt("from __str__")

    @property
    def status_code(self) -> int:
        raise SystemExit("from status_code")

    @property
    def response(self) -> Any:
        raise GeneratorExit("from response")


async def test_exception_whose_reads_raise_base_exceptions_reaches_the_caller_unchanged(cap: Capture) -> None:
    """An exception whose __str__ raises KeyboardInterrupt (and whose status_code / response raise other
    BaseExceptions) reaches the caller as the same object; it counts as an inference_error, in-flight 0."""
    exc = HostileError()
    router = cap.instrument_router(ScriptedRouter(raises=exc))
    with pytest.raises(HostileError) as info:
        await router.openai_chat_completion(ChatParams(model="m"))
    assert info.value is exc
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="error", error_type="inference_error") == 1
    assert cap.value("ryot.inference.errors", model="m", error_type="inference_error", severity="warning") == 1
    assert cap.recorder.active() == {("__unknown__", "standard", "chat_completion"): 0}


class HostileResponse:
    """A response whose every field raises a BaseException when read."""

    @property
    def usage(self) -> Any:
        raise KeyboardInterrupt("from usage")

    @property
    def model(self) -> Any:
        raise SystemExit("from model")

    @property
    def choices(self) -> Any:
        raise asyncio.CancelledError("from choices")


@pytest.mark.parametrize("method", ["openai_chat_completion", "openai_chat_completions_with_reasoning"])
async def test_response_whose_reads_raise_base_exceptions_is_returned_as_is(method: str) -> None:
    """Telemetry's reads of a response (usage, model, choices) raising KeyboardInterrupt, SystemExit or
    CancelledError: the caller gets the very response, the request counts once as a success without tokens."""
    from ryot_telemetry.testing import capture

    cap = capture(semconv=True)  # semconv reads the response's model too
    resp = HostileResponse()

    class Router:
        async def openai_chat_completion(self, params: Any) -> Any:
            return resp

        async def openai_chat_completions_with_reasoning(self, params: Any) -> Any:
            return resp

    try:
        router = cap.instrument_router(Router())
        assert await getattr(router, method)(ChatParams(model="m")) is resp
        cap.collect()
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
        assert cap.points("ryot.tokens.generated") == []
        assert cap.recorder.active() == {("__unknown__", "standard", "chat_completion"): 0}
    finally:
        cap.shutdown()


async def test_callable_object_method_is_called_through_with_its_own_shape(cap: Capture) -> None:
    """A method that is a callable object (``async def __call__``, which inspect calls no coroutine function) is
    called as a sync method: the caller still awaits it and gets the router's object; the request records."""
    resp = Completion(usage=usage(5, 2))

    class AsyncCallable:
        async def __call__(self, params: Any) -> Any:
            return resp

    class Router:
        def __init__(self) -> None:
            self.openai_chat_completion = AsyncCallable()

    router = cap.instrument_router(Router())
    assert await router.openai_chat_completion(ChatParams(model="m")) is resp
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1


def test_non_callable_attribute_is_left_untouched(cap: Capture) -> None:
    """A router attribute of a method's name that is not callable stays exactly as it was; the others are wrapped."""
    marker = ("not", "a", "method")

    class Router(ScriptedRouter):
        openai_completion = marker  # type: ignore[assignment]

    router = cap.instrument_router(Router(response=None))
    assert router.openai_completion is marker
    assert "openai_completion" not in vars(router) and "openai_chat_completion" in vars(router)


async def test_wrapped_method_keeps_name_signature_and_is_copied_like_a_function(cap: Capture) -> None:
    """The wrapped method keeps its name and signature; copying the router shares the method as for a function."""
    import copy

    router = cap.instrument_router(ScriptedRouter(response=None))
    method = router.openai_chat_completion
    assert method.__name__ == "openai_chat_completion"
    assert inspect.signature(method) == inspect.signature(ScriptedRouter(response=None).openai_chat_completion)
    assert list(inspect.signature(method).parameters) == ["params"]
    assert inspect.iscoroutinefunction(method)
    assert copy.copy(method) is method and copy.deepcopy(method) is method


FIN = "ryot.finish_reasons"


async def test_response_finish_reasons_reasoning_tokens_and_engine_timings(cap: Capture) -> None:
    """A llama.cpp response (choices length and tool_calls, 3 reasoning tokens, ``timings``): one finish count each,
    reasoning 3, prefill 25 ms and TPOT 8 ms from ``timings``; no outside-engine time without a TTFT."""
    timings = {"prompt_n": 12, "prompt_ms": 25.0, "predicted_n": 9, "predicted_per_token_ms": 8.0}
    response = Completion(
        choices=[Choice(index=0, finish_reason="length"), Choice(index=1, finish_reason="tool_calls")],
        usage=usage(12, 9, reasoning=3),
        timings=timings,
    )
    router = cap.instrument_router(ScriptedRouter(response=response))
    assert await router.openai_chat_completion(ChatParams(model="m", n=2)) is response
    cap.collect()
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="length") == 1
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="tool_calls") == 1
    assert cap.value("ryot.reasoning_tokens", model="m", generation_mode="standard") == 3
    assert cap.histogram("ryot.engine.prefill", model="m").sum == 0.025
    assert cap.histogram("ryot.engine.time_per_output_token", model="m").sum == 0.008
    assert cap.histogram("ryot.ttft.outside_engine", model="m") is None


@pytest.mark.parametrize(
    "bad", [-1.0, float("nan"), float("inf"), "12", True, None, 10**12, [1.0], {"ms": 1}], ids=repr
)
async def test_implausible_engine_timings_are_ignored(cap: Capture, bad: Any) -> None:
    """A prompt_ms that is negative, not finite, not a number or above a day: no engine timing at all, the request
    recorded as usual; an unknown finish reason counts as other."""
    response = Completion(choices=[Choice(finish_reason="eos_token")], usage=usage(4, 2), timings={"prompt_ms": bad})
    router = cap.instrument_router(ScriptedRouter(response=response))
    assert await router.openai_chat_completion(ChatParams(model="m")) is response
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.histogram("ryot.engine.prefill", model="m") is None
    assert cap.series(FIN) == [{"model": "m", "endpoint": "chat_completion", "finish_reason": "other"}]


async def test_a_single_token_answer_reports_no_engine_tpot(cap: Capture) -> None:
    """llama.cpp reports predicted_per_token_ms 0 until two tokens were generated: predicted_n 1 gives no TPOT."""
    timings = {"prompt_ms": 3.0, "predicted_n": 1, "predicted_per_token_ms": 0.0}
    router = cap.instrument_router(ScriptedRouter(response=Completion(usage=usage(4, 1), timings=timings)))
    await router.openai_completion(CompletionParams(model="m"))
    cap.collect()
    assert cap.histogram("ryot.engine.prefill", model="m").count == 1
    assert cap.histogram("ryot.engine.time_per_output_token", model="m") is None


LENGTH_BOUNDS = tuple(float(2**k) for k in range(4, 18))


async def test_length_histograms_count_usage_into_powers_of_two_buckets(cap: Capture) -> None:
    """Prompt lengths 10, 16, 17, 131072, 131073 and completion lengths 0, 5, 100, 40, 2 from usage land in the
    exact power-of-two buckets; a stream without usage (its tokens only estimated) adds nothing."""
    for prompt, completion in ((10, 0), (16, 5), (17, 100), (131072, 40), (131073, 2)):
        router = cap.instrument_router(ScriptedRouter(response=Completion(usage=usage(prompt, completion))))
        await router.openai_chat_completion(ChatParams(model="m"))
    stream = cap.instrument_router(ScriptedRouter(chunks=[content_chunk("a"), content_chunk("b")]))
    async for _ in await stream.openai_chat_completion(ChatParams(model="m", stream=True)):
        pass
    cap.collect()
    p = cap.histogram("ryot.request.prompt_tokens", model="m")
    assert p is not None and p.explicit_bounds == LENGTH_BOUNDS
    assert (p.count, p.sum) == (5, 10 + 16 + 17 + 131072 + 131073)
    assert p.bucket_counts == (2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1)
    c = cap.histogram("ryot.request.completion_tokens", model="m")
    assert c is not None and (c.count, c.sum) == (5, 147)
    assert c.bucket_counts == (3, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert cap.value("ryot.estimated_tokens", model="m", token_type="completion") == 2


async def test_engine_queue_time_is_recorded_only_when_the_engine_reports_it(cap: Capture) -> None:
    """vLLM's queue_time_ms 50 gives one 0.05 s observation (TTFT buckets); vLLM metrics without a queue time and
    llama.cpp's timings (which carry none) record nothing."""
    responses = [
        Completion(usage=usage(4, 2), metrics={"queue_time_ms": 50.0, "time_to_first_token_ms": 10.0}),
        Completion(usage=usage(4, 2), metrics={"queue_time_ms": None, "time_to_first_token_ms": 10.0}),
        Completion(usage=usage(4, 2), timings={"prompt_ms": 3.0, "predicted_n": 2, "predicted_per_token_ms": 1.0}),
    ]
    for response in responses:
        router = cap.instrument_router(ScriptedRouter(response=response))
        await router.openai_chat_completion(ChatParams(model="m"))
    cap.collect()
    q = cap.histogram("ryot.engine.queue", model="m")
    assert q is not None
    assert (q.count, q.sum) == (1, 0.05)
    assert q.explicit_bounds == (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
    assert q.bucket_counts == (0, 0, 0, 1, 0, 0, 0, 0, 0, 0)
    assert cap.histogram("ryot.engine.prefill", model="m").count == 3  # type: ignore[union-attr]

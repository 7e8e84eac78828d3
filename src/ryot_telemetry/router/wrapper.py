"""Wraps a llama-stack-style router's ``openai_chat_completion`` / ``openai_completion``.

The contract: the caller gets exactly what the router returns or raises (same objects, same chunks, same
exception), whatever the telemetry code does. Every telemetry step is guarded; on any internal failure the call
goes through untouched.

The wrapper keeps the shape of what it wraps (SPEC "Every router shape, unchanged"): a coroutine method stays one,
a synchronous method stays synchronous (a coroutine it hands back is awaited when the caller awaits it), an async
generator method stays an async generator. ``method_shape`` tells them apart once, when a method is wrapped.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import contextvars
import inspect
import logging
import types
from array import array
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from ..catalogue import CHAT_COMPLETION as CHAT
from ..catalogue import COMPLETION as COMPLETION
from ..catalogue import STREAMING
from ..recording import provider
from ..recording.provider import get, has_content, note_finish, prompt_chars, request_shape, stream_outcome
from ..recording.recorder import Recorder
from ..recording.request import Request
from ..recording.request import clock as _clock
from .params import accepts_stream_options, with_usage, without_usage
from .specialise import specialise

_log = logging.getLogger("ryot_telemetry")

REASONING_METHOD = "openai_chat_completions_with_reasoning"
"""ogx's reasoning-aware chat completion, called by its Responses layer: it returns/yields wrappers with
``.completion`` / ``.chunk`` (the OpenAI object) and ``.reasoning_content``."""
METHODS = {"openai_chat_completion": CHAT, "openai_completion": COMPLETION, REASONING_METHOD: CHAT}
_MARK = "__ryot_telemetry_wrapped__"
_ABANDON = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt, SystemExit)
COROUTINE = "coroutine"
SYNC = "sync"
ASYNC_GENERATOR = "async_generator"
_PRIMED = object()
_CURRENT: contextvars.ContextVar[object] = contextvars.ContextVar("ryot_telemetry_call", default=None)


def read_usage(req: Request, usage: Any) -> None:
    """Take prompt/completion/cached/reasoning token counts from an OpenAI-style ``usage`` object or dict; the
    implausible ones are noted on the request (briefly described, never kept) for the recorder's warning."""
    req.prompt_tokens, req.completion_tokens, req.cached_tokens, req.reasoning_tokens, bad = provider.read_usage(usage)
    if bad is not None:
        req.note_implausible(bad)


def _succeed(rec: Recorder, req: Request) -> None:
    try:
        req.success(rec)
    except BaseException:
        _log.debug("ryot-telemetry: failed to record the end of a request", exc_info=True)


def _end(rec: Recorder, req: Request, exc: BaseException) -> None:
    """End ``req`` with the caller's exception ``exc``; never raises (the caller re-raises ``exc`` itself)."""
    try:
        # type(), not isinstance(): isinstance may consult an exception's own ``__class__`` property
        if issubclass(type(exc), _ABANDON):
            req.abandon(rec)
        else:
            req.fail(rec, exc)
    except BaseException:
        _log.debug("ryot-telemetry: failed to record the end of a request", exc_info=True)


async def traced_call(
    rec: Recorder,
    endpoint: str,
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    reasoning: bool = False,
    key: object = None,
    shape: str | None = None,
) -> Any:
    """Call ``wrapped(*args, **kwargs)`` (the router method, already bound) and record it.

    ``reasoning``: the method returns ogx's reasoning wrappers (see ``REASONING_METHOD``). ``key``: identifies
    the (router instance, method); a call nested inside a traced call with the same key — a subclass and its base
    both instrumented, one calling the other — goes through unrecorded, so the request counts once.
    ``shape``: None for a coroutine method, awaited here; ``SYNC`` or ``ASYNC_GENERATOR`` (``method_shape``) for a
    method called, not awaited, this coroutine then run by ``_drive``, so the caller gets the method's own shape.
    (None rather than ``COROUTINE``: the per-request checks of the common case stay a local's identity test.)
    """
    if key is not None and _CURRENT.get() == key:
        return await wrapped(*args, **kwargs) if shape is None else _called(wrapped, args, kwargs)
    call_args, call_kwargs = args, kwargs
    req: Request | None = None
    try:
        if args:
            params = args[0]
        else:
            params = kwargs.get("params", kwargs)
        model, stream, mode, batch_size = request_shape(endpoint, params)
        hide_usage = False
        if stream and not reasoning:  # ogx's Responses layer always asks for usage on the reasoning path
            new_params, wants_usage = with_usage(params)
            if new_params is not params:
                hide_usage = not wants_usage
                if args:
                    call_args = (new_params, *args[1:])
                elif "params" in kwargs:
                    call_kwargs = {**kwargs, "params": new_params}
                elif accepts_stream_options(wrapped):
                    call_kwargs = new_params
                else:
                    hide_usage = False  # a keyword-style router without stream_options: call it as the caller did
        if shape is not None and shape is ASYNC_GENERATOR:
            stream, mode = True, STREAMING  # it streams whatever its params say
        tenant_of = rec.tenant_of  # the opt-in tenant label: resolved once, before start(); never raises
        tenant = tenant_of(params) if tenant_of is not None else None
        req = rec.start(model, endpoint, mode, batch_size)
        if tenant is not None:
            req.tenant = tenant
    except BaseException:
        _log.debug("ryot-telemetry: could not start recording; calling through", exc_info=True)
    if req is None:
        return await wrapped(*args, **kwargs) if shape is None else _called(wrapped, args, kwargs)

    token = _CURRENT.set(key) if key is not None else None
    try:
        if shape is None:
            result = await wrapped(*call_args, **call_kwargs)
        else:
            result = wrapped(*call_args, **call_kwargs)
    except BaseException as exc:
        _end(rec, req, exc)
        if shape is not None and issubclass(type(exc), StopIteration):
            raise _Carried(exc) from None  # a coroutine cannot raise StopIteration: _drive re-raises it
        raise
    finally:
        if token is not None:
            _CURRENT.reset(token)

    streamed = result
    if shape is not None:
        if shape is SYNC:
            try:
                later = issubclass(type(result), collections.abc.Coroutine)
            except BaseException:
                later = False
            if later:  # a sync method handing back a coroutine: it runs when the caller awaits what we return
                try:
                    result = streamed = await _Later(result)
                except BaseException as exc:
                    _end(rec, req, exc)
                    raise
        elif key is not None:
            streamed = _Keyed(result, key)
    try:
        # ``async for`` resolves __aiter__ on the type: so does telemetry (``aiter``), never through an instance
        # __getattr__ (an attribute-style dict raising KeyError, say). A result whose __aiter__ raises is returned
        # as is, recorded as the error the caller's own ``async for`` meets.
        it = _single_iterator(streamed) if stream and hasattr(type(streamed), "__aiter__") else None
    except BaseException as exc:
        _end(rec, req, exc)
        return result
    if it is not None:
        try:
            if req.awaiting_admission and shape is not ASYNC_GENERATOR:
                req.admit(rec)  # the router returned a stream: it accepted the model name
            note_times = rec.semconv is not None
            watch = hide_usage or note_times
            loop = _STREAMS[watch, note_times]
            traced = loop(
                rec, req, streamed, it, hide_usage, endpoint, params, _Collected(req), reasoning, watch, note_times
            )
            # Run it to its first (internal) yield, inside the try that sees every exit: a stream the caller
            # closes or drops before iterating it is then finalised too, instead of staying in flight forever.
            await traced.asend(None)
            return traced
        except BaseException:
            _log.debug("ryot-telemetry: could not wrap the stream; returning it as is", exc_info=True)
            _succeed(rec, req)
            return result
    try:
        if reasoning and get(result, "choices") is None:
            result_view = get(result, "completion") or result
        else:
            result_view = result
        usage = get(result_view, "usage")
        if usage is not None:
            read_usage(req, usage)
        if rec.semconv is not None:
            req.response_model = rec.response_models.key(get(result_view, "model"))
        try:  # finish reasons and engine timings, as plain values: the response itself is not kept
            req.finish, req.timings = provider.outcome(result_view)
        except BaseException:  # loses the outcome only
            _log.debug("ryot-telemetry: could not read a response's outcome", exc_info=True)
        req.success(rec)
    except BaseException:
        _log.debug("ryot-telemetry: could not read the response", exc_info=True)
        _succeed(rec, req)
    return result


def method_shape(fn: Any) -> str:
    """How a router method answers, told once when it is wrapped: ``coroutine``, ``async_generator``, or ``sync``
    for any other callable (a coroutine that one hands back is still awaited when the caller awaits it)."""
    try:
        if inspect.isasyncgenfunction(fn):
            return ASYNC_GENERATOR
        if inspect.iscoroutinefunction(fn):
            return COROUTINE
    except BaseException:
        _log.debug("ryot-telemetry: could not inspect %r; calling it as a sync method", fn, exc_info=True)
    return SYNC


class _Carried(Exception):
    """Carries a sync method's StopIteration out of ``traced_call`` (a coroutine turns it into RuntimeError)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc


def _called(wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A sync or async-generator method called through unrecorded, inside ``traced_call``."""
    try:
        return wrapped(*args, **kwargs)
    except StopIteration as exc:
        raise _Carried(exc) from None


class _Later:
    """Awaited by ``traced_call`` when a sync method hands back a coroutine: suspends the traced call out of
    ``_drive``, to be resumed by ``_resumed`` with what that coroutine returns or raises."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Any) -> None:
        self.awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self)


def _drive(coro: collections.abc.Coroutine[Any, Any, Any]) -> Any:
    """Run ``traced_call`` of a sync or async-generator method in the caller's own call: it finishes without
    suspending (it returns the result, or the primed traced stream), except where a sync method handed back a
    coroutine; the caller then gets a coroutine finishing the traced call when awaited."""
    try:
        later = coro.send(None)
    except StopIteration as stop:
        return stop.value
    except _Carried as carried:
        exc = carried.exc
    else:
        return _resumed(coro, later.awaitable)
    raise exc  # outside the handler: the router's exception gets no context of ours


async def _resumed(coro: collections.abc.Coroutine[Any, Any, Any], awaitable: Any) -> Any:
    try:
        value = await awaitable
    except BaseException as e:
        exc = e
    else:
        return await _continue(coro, value, None)
    return await _continue(coro, None, exc)  # traced_call records exc and re-raises it


@types.coroutine
def _continue(
    coro: collections.abc.Coroutine[Any, Any, Any], value: Any, exc: BaseException | None
) -> Generator[Any, Any, Any]:
    """Resume the suspended ``coro`` with ``value`` (or ``exc``) and run it to its end, passing on what it awaits."""
    while True:
        try:
            yielded = coro.send(value) if exc is None else coro.throw(exc)
        except StopIteration as stop:
            return stop.value
        try:
            value, exc = (yield yielded), None
        except BaseException as e:
            value, exc = None, e


class _Keyed:
    """The stream of an async-generator method under a nested guard (``key``): each step runs with the key set, so
    the same method called from inside it (a subclass iterating its instrumented base) goes through unrecorded."""

    __slots__ = ("_gen", "_key")

    def __init__(self, gen: Any, key: object) -> None:
        self._gen = gen
        self._key = key

    def __aiter__(self) -> _Keyed:
        return self

    async def __anext__(self) -> Any:
        token = _CURRENT.set(self._key)
        try:
            return await type(self._gen).__anext__(self._gen)
        finally:
            with contextlib.suppress(ValueError):  # stepped from another context: nothing of ours to restore
                _CURRENT.reset(token)

    def aclose(self) -> Any:
        return self._gen.aclose()


class _Collected:
    """Held by a traced stream's frame from its creation: when the stream is collected unfinished and nothing
    closed it (its event loop closed without ``shutdown_asyncgens()``, say), the request ends as partial, so
    in-flight goes back to 0. A finished request is left alone."""

    __slots__ = ("req",)

    def __init__(self, req: Request) -> None:
        self.req = req

    def __del__(self) -> None:
        req = self.req
        if not req.done:
            try:
                req.abandon()
            except BaseException:  # a finaliser must not raise; the request is then simply not recorded
                _log.debug("ryot-telemetry: could not end a collected stream's request", exc_info=True)


async def _traced_stream(
    rec: Recorder,
    req: Request,
    stream: Any,
    it: Any,
    hide_usage: bool,
    endpoint: str,
    params: Any,
    collected: _Collected,
    reasoning: bool,
    watch: bool,
    note_times: bool,
) -> AsyncGenerator[Any, None]:
    """Yields the provider's items unchanged (minus the usage-only chunk the caller did not ask for): the one
    stream loop, for every kind of stream, in two phases over one iterator ``it`` (``_single_iterator(stream)``).

    Head: every item is inspected in full (content for TTFT, the response model, finish reasons of several
    choices, usage) until the first content chunk. For ogx's reasoning wrappers (``reasoning``) the OpenAI chunk
    is ``item.chunk`` and the head lasts the whole stream, as it does for mapping chunks (dicts of any class) and
    streams of several choices (whose choices finish in different chunks). Lean: after the first content chunk,
    the object chunks of a single-choice stream are counted and the last two kept; the outcome (finish reasons,
    engine timings) is read from the final chunks when the stream ends. With ``note_times`` (semconv on) the lean
    loop notes each chunk's arrival; with ``watch`` (a usage chunk to hide, or semconv on) it reads each chunk's
    ``usage``; without, usage is read once, from the final chunks, when the stream ends: providers send it on
    their last chunk (OpenAI's usage-only chunk, llama.cpp's final chunk; vLLM's continuous usage on every chunk,
    the last one holding the total).

    ``watch`` and ``note_times`` are constants in the copies ``_STREAMS`` holds (``specialise``): the hot loop
    of each copy carries only its own steps, with no test of a flag per chunk. The per-chunk hooks are inline,
    not calls (a call per chunk would cost more than the whole lean loop). Each of telemetry's own steps is
    guarded, so whatever it raises the chunk still goes to the caller and the request is recorded with what is
    known; the ``except`` around the loops only ever sees the provider's exceptions (from ``it``) and the
    consumer's (thrown in at ``yield``). ``collected`` ends the request if the stream is collected unfinished.
    """
    delivered = seen = late = False
    n = counted = 0  # items delivered from the first content chunk on (counted + n): the estimate if no usage arrives
    last = prev = final = before = None  # the last chunk delivered and the one before it (kept only when usage is
    # read late); the last usage chunk, and the chunk delivered before it
    finished: dict[int, str] | None = {} if req.batch_size > 1 else None
    lean = not reasoning and finished is None
    times = None  # the semconv chunk metrics: every chunk's arrival time (none noted with semconv off)
    try:
        yield _PRIMED  # taken by traced_call, never seen by the caller
        if note_times:
            times = req.chunk_times = array("d")
        async for item in it:
            out = chunk = item
            try:
                if times is not None:
                    times.append(_clock())
                if reasoning:
                    chunk = get(item, "chunk")
                if not seen and (has_content(chunk) or (reasoning and get(item, "reasoning_content"))):
                    req.first_token = _clock()
                    seen = True
                    lean = lean and not issubclass(type(chunk), dict)
                    if note_times:  # semconv on: its metrics also take the response model
                        req.response_model = _response_model(rec, chunk)
                if finished is not None:
                    note_finish(chunk, finished)
                usage = get(chunk, "usage")
                if usage is not None:
                    final, before = chunk, last
                    out = _take_usage(req, item, usage, hide_usage)
            except BaseException:  # a provider's property may raise anything: the item still goes through
                _log.debug("ryot-telemetry: could not inspect a chunk", exc_info=True)
            if out is _SKIP:
                continue
            delivered = True
            if seen:
                n += 1
            last = chunk
            yield out
            if seen and lean:
                break
        else:
            lean = False  # the stream ended within the head
        if lean:
            late = True  # the hot loop ran: where it reads no usage per chunk, usage is read from the final chunks
            step = _STEP
            async for chunk in it:  # the hot loop
                if note_times and times is not None:
                    try:
                        times.append(_clock())
                    except BaseException:  # telemetry gives up on the chunk times, never on the chunk
                        times = req.chunk_times = None
                if watch:
                    try:
                        usage = chunk.usage
                    except BaseException:
                        usage = _get_quietly(chunk, "usage")
                    if usage is not None:
                        final, before = chunk, last
                        chunk = _take_usage(req, chunk, usage, hide_usage)
                        if chunk is _SKIP:
                            continue
                try:
                    n = step[n]
                except IndexError:  # nothing else in this try raises it: the table ran out, a new run starts
                    counted += n
                    n = 1
                if not watch:
                    prev = last
                last = chunk
                yield chunk
    except BaseException as exc:
        req.chunks = counted + n
        if not watch and late:  # (``not watch``: a copy that reads usage per chunk has no late read at all)
            _late_usage(req, last, prev)
        await _stream_failed(rec, req, delivered, endpoint, params, stream, exc)
        raise
    if not watch and late:
        final, before = _late_usage(req, last, prev) or (final, before)
    _stream_complete(req, counted + n, last, final, before, finished)
    _stream_ended(req, delivered, endpoint, params)
    _succeed(rec, req)


_STREAMS = {
    (watch, note_times): specialise(_traced_stream, watch=watch, note_times=note_times)
    for watch, note_times in ((False, False), (True, False), (True, True))
}
"""The stream loop's copies by ``(watch, note_times)``: semconv on implies watching each chunk."""

_STEP = tuple(range(1, 4097))
"""``_STEP[n] == n + 1``: the hot loop counts by one tuple lookup, where ``n += 1`` creates and frees an int object
per chunk past 256 (the dearest step of the loop after the iteration itself). Every 4,096 chunks the lookup runs
out, raising IndexError inside a ``try`` that holds nothing else, and the count starts a new run. A count, never a
limit: the Hypothesis stream test runs lengths past the table's end with fresh, reused and repeated chunk objects."""


def _late_usage(req: Request, last: Any, prev: Any) -> tuple[Any, Any] | None:
    """The usage of a stream whose hot loop left it unread: from its last chunk, else the one before. Returns the
    final chunks for its outcome (the usage chunk, and the one delivered before it if known), or None when neither
    carries usage. Never raises: what cannot be read is left unread."""
    for chunk, earlier in ((last, prev), (prev, None)):
        if chunk is None:
            break
        try:
            usage = get(chunk, "usage")
            if usage is not None:
                read_usage(req, usage)
                return chunk, earlier
        except BaseException:
            _log.debug("ryot-telemetry: could not read a stream's usage", exc_info=True)
    return None


def _stream_complete(req: Request, n: int, last: Any, final: Any, before: Any, finished: dict[int, str] | None) -> None:
    """A stream that ran to its end: its outcome (finish reasons, engine timings) read from its final chunks now,
    into plain values, so the queued request holds none of the provider's objects."""
    req.chunks = n
    try:
        if final is None:  # no usage came: the last chunk is the final one
            final, before = last, None
            if last is not None and n > 0 and not has_content(last):
                req.chunks = n - 1  # the chunk that only carried the finish reason is not a token
        req.finish, req.timings = stream_outcome(final, before, finished)
    except BaseException:
        _log.debug("ryot-telemetry: could not read the end of a stream", exc_info=True)


_SKIP = object()


def _response_model(rec: Recorder, chunk: Any) -> str | None:
    """The clipped response model of a chunk; None where it cannot be read (the chunk's usage is still read)."""
    try:
        return rec.response_models.key(get(chunk, "model"))
    except BaseException:
        _log.debug("ryot-telemetry: could not read a chunk's model", exc_info=True)
        return None


def _take_usage(req: Request, chunk: Any, usage: Any, hide_usage: bool) -> Any:
    """Record usage; returns the chunk to yield, or ``_SKIP`` for the usage-only chunk the caller did not ask for
    (hidden even where its usage cannot be read: the caller never asked for that chunk). Never raises: where the
    chunk cannot be looked at, it goes to the caller as sent."""
    try:
        read_usage(req, usage)
    except BaseException:
        _log.debug("ryot-telemetry: could not read usage", exc_info=True)
    if hide_usage:
        try:
            if not get(chunk, "choices"):
                return _SKIP  # the usage-only chunk we asked for: the caller never sees it
            return without_usage(chunk)  # usage riding on a content chunk: strip what we added
        except BaseException:
            _log.debug("ryot-telemetry: could not strip usage from a chunk", exc_info=True)
    return chunk


def _get_quietly(obj: Any, name: str) -> Any:
    try:
        return get(obj, name)
    except BaseException:
        return None


class _Iter:
    """Gives an ``__anext__``-only iterator the ``__aiter__`` that two ``async for`` loops over it need."""

    __slots__ = ("_next",)

    def __init__(self, it: Any) -> None:
        # bound from the type, as ``async for`` does: never through an instance ``__getattr__``
        self._next = type(it).__anext__.__get__(it)

    def __aiter__(self) -> _Iter:
        return self

    def __anext__(self) -> Any:
        return self._next()  # the iterator's own awaitable: no extra coroutine per chunk


def _single_iterator(stream: Any) -> Any:
    """``stream``'s iterator, usable by consecutive ``async for`` loops without restarting it.

    Special methods are looked up on the type, exactly as ``async for stream`` would look them up.
    """
    it = aiter(stream)  # the very lookup and checks of ``async for``: what raises here raises there
    again = getattr(type(it), "__aiter__", None)
    if again is not None and again(it) is it:
        return it
    return _Iter(it)


async def _stream_failed(
    rec: Recorder, req: Request, delivered: bool, endpoint: str, params: Any, stream: Any, exc: BaseException
) -> None:
    """A stream ended by an exception, a consumer's close or a cancellation; the caller re-raises ``exc``."""
    _stream_ended(req, delivered, endpoint, params)
    _end(rec, req, exc)
    if issubclass(type(exc), GeneratorExit):  # type(): an exception's own __class__ may raise
        # The consumer closed us: close the provider's stream as it would have been (aclose() for async
        # generators, close() for stream objects such as openai's AsyncStream).
        try:
            close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
        except BaseException:  # an instance __getattr__ raising something else than AttributeError
            close = None
        if close is not None:
            closed = close()
            if inspect.isawaitable(closed):
                await closed


def _stream_ended(req: Request, delivered: bool, endpoint: str, params: Any) -> None:
    """What a finished stream (any exit) leaves on its request before it is recorded."""
    req.delivered = delivered
    if req.prompt_tokens is None and req.first_token is not None:
        try:
            req.prompt_chars = prompt_chars(endpoint, params)
        except BaseException:
            req.prompt_chars = None


def is_traced(method: Any) -> bool:
    """Is ``method`` already wrapped by this module (``instrument_router`` on an instance)?"""
    return getattr(method, _MARK, None) is not None


def traced(
    rec: Recorder,
    endpoint: str,
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    shape: str = COROUTINE,
    reasoning: bool = False,
    key: object = None,
) -> Any:
    """Call the router method ``wrapped`` and record it, answering in the method's own ``shape``
    (``method_shape``): a coroutine for a coroutine method, else what the method itself returns."""
    if shape is COROUTINE:
        return traced_call(rec, endpoint, wrapped, args, kwargs, reasoning=reasoning, key=key)
    return _drive(traced_call(rec, endpoint, wrapped, args, kwargs, reasoning=reasoning, key=key, shape=shape))

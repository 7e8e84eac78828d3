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
import copy
import dataclasses
import functools
import inspect
import logging
import operator
import types
import typing
from array import array
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import wrapt

from ..catalogue import BATCH, STANDARD, STREAMING
from ..catalogue import CHAT_COMPLETION as CHAT
from ..catalogue import COMPLETION as COMPLETION
from ..export.assembly import default_recorder
from ..recording.outcomes import StreamEnd, note_finish
from ..recording.recorder import MAX_COUNT, Recorder, Request, _clock, describe_count

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


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(req: Request, obj: Any, name: str) -> int | None:
    """A usage count as an int in [0, 2**53]; None when absent or implausible. An implausible one is noted on
    the request (briefly described, never kept), for the recorder's once-per-model warning (SPEC).

    An integral float (``3.0``, as some JSON encoders write counts) is taken; a bool, a fractional or non-finite
    float, a string, a negative count or one above 2**53 (an unsigned underflow reports 2**64 - 1) is not.
    """
    v = _get(obj, name)
    if type(v) is int and 0 <= v <= MAX_COUNT:
        return v  # the common case, first
    if v is None:
        return None
    n: Any = v
    if type(v) is not int:
        if isinstance(v, bool):
            n = None
        elif isinstance(v, float):
            n = int(v) if v.is_integer() else None  # is_integer() is False for inf and nan too
        else:
            try:
                n = operator.index(v)  # int subclasses, numpy integers
            except BaseException:  # a provider's __index__ may raise anything
                n = None
    if n is not None and 0 <= n <= MAX_COUNT:
        return int(n)
    req.note_implausible(name, describe_count(v))
    return None


def read_usage(req: Request, usage: Any) -> None:
    """Take prompt/completion/cached token counts from an OpenAI-style ``usage`` object or dict."""
    req.prompt_tokens = _count(req, usage, "prompt_tokens")
    req.completion_tokens = _count(req, usage, "completion_tokens")
    details = _get(usage, "prompt_tokens_details")
    req.cached_tokens = _count(req, details, "cached_tokens") if details is not None else None


def _has_content(chunk: Any) -> bool:
    """Does this chunk carry generated content: text, a tool call or reasoning?"""
    choices = _get(chunk, "choices")
    if not choices:
        return False
    for choice in choices:
        if _get(choice, "text"):
            return True
        delta = _get(choice, "delta")
        if delta is not None and (
            _get(delta, "content")
            or _get(delta, "tool_calls")
            or _get(delta, "reasoning_content")
            or _get(delta, "reasoning")
            or _get(delta, "function_call")
        ):
            return True
    return False


def _prompt_chars(endpoint: str, params: Any) -> int:
    """Characters of request text; only used to estimate prompt_size when the provider sent no usage."""
    if endpoint == COMPLETION:
        prompt = _get(params, "prompt")
        if isinstance(prompt, str):
            return len(prompt)
        if isinstance(prompt, list):
            if prompt and isinstance(prompt[0], int):
                return 4 * len(prompt)  # token ids: ~4 characters each
            return sum(len(p) if isinstance(p, str) else 4 * len(p) for p in prompt if isinstance(p, (str, list)))
        return 0
    total = 0
    for msg in _get(params, "messages") or ():
        content = _get(msg, "content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                text = _get(part, "text")
                if isinstance(text, str):
                    total += len(text)
    return total


def request_shape(endpoint: str, params: Any) -> tuple[Any, bool, str, int]:
    """(model, stream, generation_mode, batch_size) of a request, read before the router can change it."""
    model = _get(params, "model")
    stream = bool(_get(params, "stream"))
    n = _get(params, "n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    prompts = 1
    is_batch = False
    if endpoint == COMPLETION:
        prompt = _get(params, "prompt")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            prompts = len(prompt)
            is_batch = True
    mode = STREAMING if stream else (BATCH if is_batch else STANDARD)
    return model, stream, mode, prompts * n


def with_usage(params: Any) -> tuple[Any, bool]:
    """Params asking the provider for usage on streams, and whether the caller asked for it itself.

    Never mutates the caller's objects, and the copy is of the caller's exact type: dicts and dict subclasses are
    copied (an attribute-style dict stays one), pydantic models go through ``model_copy``, dataclasses and
    namedtuples with a ``stream_options`` field through ``replace``; a typed ``stream_options`` stays of its type.
    Where no faithful copy can be made, the params go through unchanged.
    """
    opts = _get(params, "stream_options")
    if opts is not None and _get(opts, "include_usage"):
        return params, True
    new_opts = _options_with_usage(opts, params)
    if new_opts is None:
        return params, False
    if isinstance(params, dict):
        copied = _dict_with(params, "stream_options", new_opts)
        return (params, False) if copied is None else (copied, False)
    model_copy = getattr(params, "model_copy", None)
    fields = getattr(type(params), "model_fields", None)
    if callable(model_copy) and (fields is None or "stream_options" in fields or _allows_extra(params)):
        return model_copy(update={"stream_options": new_opts}), False
    if _has_field(params, "stream_options"):
        copied = _replaced(params, stream_options=new_opts)
        if copied is not None and type(copied) is type(params):
            return copied, False
    return params, False  # an object we cannot safely copy: leave it, usage may then be absent


def _has_field(obj: Any, name: str) -> bool:
    """Is ``name`` a field of a dataclass instance or a namedtuple?"""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return any(f.name == name and f.init for f in dataclasses.fields(obj))
    return isinstance(obj, tuple) and name in (getattr(type(obj), "_fields", None) or ())


def _dict_with(d: dict[Any, Any], key: str, value: Any) -> dict[Any, Any] | None:
    """A copy of ``d``, of ``d``'s exact type, with ``d[key] = value``; None where no faithful copy can be made.

    A plain dict is rebuilt directly (the common, fast case). A subclass is copied with ``copy.copy`` (which keeps
    the class and its instance state), or else by calling the class on ``d`` (``AttrDict(d)``: on Python 3.10
    ``copy.copy`` asks an attribute-style dict for ``__getstate__`` and gets a KeyError). Either copy must be a
    distinct object of the same type holding the same items and instance attributes, or it is not used.
    """
    if type(d) is dict:
        return {**d, key: value}
    for make in (copy.copy, type(d)):
        try:
            new = make(d)
            if _same_dict(new, d):
                new[key] = value  # through the class's own __setitem__, as the caller's code would set it
                return new
        except BaseException:
            _log.debug("ryot-telemetry: could not copy %s params", type(d).__name__, exc_info=True)
    return None


def _same_dict(new: Any, d: dict[Any, Any]) -> bool:
    """Is ``new`` a faithful, distinct copy of the dict subclass instance ``d``?"""
    if new is d or type(new) is not type(d) or dict.__len__(new) != dict.__len__(d):
        return False
    if not all(dict.get(new, k, _MISSING) is v for k, v in dict.items(d)):
        return False
    get = object.__getattribute__
    try:
        state = get(d, "__dict__")
    except AttributeError:  # __slots__ only
        return True
    return bool(get(new, "__dict__") == state)


_MISSING = object()


def _options_with_usage(opts: Any, params: Any) -> Any:
    """``opts`` plus include_usage=True, of the same kind; None when that cannot be built faithfully."""
    try:
        if opts is None:
            cls = _typed_options_class(params)
            return cls(include_usage=True) if cls is not None else {"include_usage": True}
        return _replaced(opts, include_usage=True)
    except BaseException:
        _log.debug("ryot-telemetry: could not add include_usage to stream_options", exc_info=True)
    return None


def _typed_options_class(params: Any) -> Any:
    """The model class a pydantic ``stream_options`` field is typed with (``X | None``), or None for dict/Any."""
    field = (getattr(type(params), "model_fields", None) or {}).get("stream_options")
    if field is None:
        return None
    annotation = field.annotation
    for candidate in typing.get_args(annotation) or (annotation,):
        if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
            return candidate
    return None


def _accepts_stream_options(fn: Any) -> bool:
    """Does a keyword-style router method take ``stream_options`` (or ``**kwargs``)? Cached per function."""
    return _signature_accepts_stream_options(getattr(fn, "__func__", fn))


@functools.lru_cache(maxsize=1024)
def _signature_accepts_stream_options(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "stream_options" or p.kind is p.VAR_KEYWORD for p in params)


def _allows_extra(params: Any) -> bool:
    config = getattr(type(params), "model_config", None) or {}
    return config.get("extra") == "allow"


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
                elif _accepts_stream_options(wrapped):
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
        # ``async for`` resolves __aiter__ on the type: so does telemetry, never through an instance __getattr__
        # (an attribute-style dict raising KeyError, say). A result ``async for`` cannot iterate (an __aiter__
        # property raising, say) is returned as is.
        it = _single_iterator(streamed) if stream and hasattr(type(streamed), "__aiter__") else None
    except BaseException:
        it = None
    if it is not None:
        try:
            if req._pending is not None and shape is not ASYNC_GENERATOR:
                req.admit(rec)  # the router returned a stream: it accepted the model name
            if reasoning:
                traced = _traced_reasoning_stream(rec, req, streamed, it, endpoint, params, _Collected(req))
            else:
                traced = _traced_stream(rec, req, streamed, it, hide_usage, endpoint, params, _Collected(req))
            # Run it to its first (internal) yield, inside the try that sees every exit: a stream the caller
            # closes or drops before iterating it is then finalised too, instead of staying in flight forever.
            await traced.asend(None)
            return traced
        except BaseException:
            _log.debug("ryot-telemetry: could not wrap the stream; returning it as is", exc_info=True)
            _succeed(rec, req)
            return result
    try:
        if reasoning and _get(result, "choices") is None:
            result_view = _get(result, "completion") or result
        else:
            result_view = result
        usage = _get(result_view, "usage")
        if usage is not None:
            read_usage(req, usage)
        req.final = result_view  # finish reasons, reasoning tokens, engine timings: read at drain time
        if rec.semconv is not None:
            req.response_model = rec.response_models.key(_get(result_view, "model"))
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
        if not req._done:
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
) -> AsyncGenerator[Any, None]:
    """Yields the provider's chunks unchanged (minus the usage-only chunk the caller did not ask for).

    Two loops over one iterator ``it`` (``_single_iterator(stream)``): every chunk is inspected in full until the
    first content chunk (TTFT); after it, object chunks go through a lean loop that only looks for ``usage``,
    counts the chunk and keeps it as the last one (finish reasons and engine timings are read from the final chunks
    at drain time). Mapping chunks (dicts of any class), and streams of several choices (whose choices finish in
    different chunks), stay in the first loop. ``collected`` ends the request if the stream is collected unfinished.
    """
    delivered = False  # a flag, not a count: the partial rule needs no more, and it is cheaper per chunk
    first = None
    want_model = rec.semconv is not None
    n = counted = 0  # chunks delivered from the first content chunk on: the completion estimate if no usage arrives
    last = final = before = None  # the last chunk delivered; the last usage chunk, and the one delivered before it
    finished: dict[int, str] | None = {} if req.batch_size > 1 else None
    try:
        yield _PRIMED  # taken by traced_call, never seen by the caller
        # the semconv chunk metrics: every chunk's arrival time (none noted with semconv off)
        times = req.chunk_times = array("d") if want_model else None
        async for chunk in it:
            if times is not None:
                times.append(_clock())
            try:
                if first is None and _has_content(chunk):
                    req.first_token = _clock()
                    first = chunk
                    if want_model:
                        req.response_model = _response_model(rec, chunk)
                if finished is not None:
                    note_finish(chunk, finished)
                usage = _get(chunk, "usage")
                if usage is not None:
                    final, before = chunk, last
                    chunk = _take_usage(req, chunk, usage, hide_usage)
                    if chunk is _SKIP:
                        continue
            except BaseException:  # a provider's property may raise anything: the chunk still goes through
                _log.debug("ryot-telemetry: could not inspect a chunk", exc_info=True)
            delivered = True
            if first is not None:
                n += 1
            last = chunk
            yield chunk
            if first is not None and not issubclass(type(first), dict) and finished is None:
                break
        lean = first is not None and not issubclass(type(first), dict) and finished is None
        if lean and times is not None:
            append = times.append
            async for chunk in it:  # the hot loop with semconv on: the lean loop below, noting each arrival
                append(_clock())
                try:
                    usage = chunk.usage
                except BaseException:
                    usage = _get_quietly(chunk, "usage")
                if usage is not None:
                    final, before = chunk, last
                    try:
                        chunk = _take_usage(req, chunk, usage, hide_usage)
                    except BaseException:
                        _log.debug("ryot-telemetry: could not read usage", exc_info=True)
                    if chunk is _SKIP:
                        continue
                n += 1
                last = chunk
                yield chunk
        elif lean:
            step = _NEXT
            while True:
                try:
                    async for chunk in it:  # the hot loop: per chunk, one attribute read, one lookup, one store
                        try:
                            usage = chunk.usage
                        except BaseException:
                            usage = _get_quietly(chunk, "usage")
                        if usage is not None:
                            final, before = chunk, last
                            try:
                                chunk = _take_usage(req, chunk, usage, hide_usage)
                            except BaseException:
                                _log.debug("ryot-telemetry: could not read usage", exc_info=True)
                            if chunk is _SKIP:
                                continue
                        n = step[n]
                        last = chunk
                        yield chunk
                    break
                except IndexError:
                    if n != len(step) or last is chunk:
                        raise  # not the count's own: the provider's (or the consumer's), unchanged
                # _NEXT ran out: this chunk is counted as the first of the next run of the loop
                counted, n, last = counted + n, 1, chunk
                yield chunk
    except BaseException as exc:
        req.final = StreamEnd(None, None, counted + n)
        await _stream_failed(rec, req, delivered, endpoint, params, stream, exc)
        raise
    _stream_complete(req, counted + n, last, final, before, finished)
    _stream_ended(req, delivered, endpoint, params)
    _succeed(rec, req)


def _stream_complete(req: Request, n: int, last: Any, final: Any, before: Any, finished: dict[int, str] | None) -> None:
    """A stream that ran to its end keeps its final chunks for the drain (finish reasons, engine timings)."""
    try:
        if final is None:  # no usage came: the last chunk is the final one
            final, before = last, None
            if last is not None and n > 0 and not _has_content(last):
                n -= 1  # the chunk that only carried the finish reason is not a token
        req.final = StreamEnd(final, before, n, finished)
    except BaseException:
        _log.debug("ryot-telemetry: could not keep the end of a stream", exc_info=True)


_SKIP = object()
_NEXT = tuple(range(1, 1025))
"""``_NEXT[n] == n + 1``: the hot loop counts chunks by one tuple lookup, where ``n += 1`` would create an int
object per chunk past 256 (the dearest step of the loop). Every 1,024 chunks the lookup runs out (one IndexError)
and the loop resumes with a fresh count."""


def _response_model(rec: Recorder, chunk: Any) -> str | None:
    """The clipped response model of a chunk; None where it cannot be read (the chunk's usage is still read)."""
    try:
        return rec.response_models.key(_get(chunk, "model"))
    except BaseException:
        _log.debug("ryot-telemetry: could not read a chunk's model", exc_info=True)
        return None


def _take_usage(req: Request, chunk: Any, usage: Any, hide_usage: bool) -> Any:
    """Record usage; returns the chunk to yield, or ``_SKIP`` for the usage-only chunk the caller did not ask for
    (hidden even where its usage cannot be read: the caller never asked for that chunk)."""
    try:
        read_usage(req, usage)
    except BaseException:
        _log.debug("ryot-telemetry: could not read usage", exc_info=True)
    if hide_usage:
        if not _get(chunk, "choices"):
            return _SKIP  # the usage-only chunk we asked for: the caller never sees it
        return _without_usage(chunk)  # usage riding on a content chunk: strip what we added
    return chunk


def _get_quietly(obj: Any, name: str) -> Any:
    try:
        return _get(obj, name)
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
    it = type(stream).__aiter__(stream)
    aiter = getattr(type(it), "__aiter__", None)
    if aiter is not None and aiter(it) is it:
        return it
    return _Iter(it)


async def _traced_reasoning_stream(
    rec: Recorder, req: Request, stream: Any, it: Any, endpoint: str, params: Any, collected: _Collected
) -> AsyncGenerator[Any, None]:
    """Like ``_traced_stream`` for ogx's reasoning wrappers: inspects ``wrapper.chunk``, yields the wrapper."""
    delivered = False
    seen = False
    n = 0
    last = final = before = None
    finished: dict[int, str] | None = {} if req.batch_size > 1 else None
    try:
        yield _PRIMED
        times = req.chunk_times = array("d") if rec.semconv is not None else None
        async for wrapper in it:
            chunk = None
            if times is not None:
                times.append(_clock())
            try:
                chunk = _get(wrapper, "chunk")
                if not seen and (_get(wrapper, "reasoning_content") or _has_content(chunk)):
                    req.first_token = _clock()
                    seen = True
                    if rec.semconv is not None:
                        req.response_model = rec.response_models.key(_get(chunk, "model"))
                if finished is not None:
                    note_finish(chunk, finished)
                usage = _get(chunk, "usage")
                if usage is not None:
                    final, before = chunk, last
                    read_usage(req, usage)
            except BaseException:
                _log.debug("ryot-telemetry: could not inspect a chunk", exc_info=True)
            delivered = True
            if seen:
                n += 1
            last = chunk
            yield wrapper
    except BaseException as exc:
        req.final = StreamEnd(None, None, n)
        await _stream_failed(rec, req, delivered, endpoint, params, stream, exc)
        raise
    _stream_complete(req, n, last, final, before, finished)
    _stream_ended(req, delivered, endpoint, params)
    _succeed(rec, req)


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


def _without_usage(chunk: Any) -> Any:
    """A copy of ``chunk`` with ``usage=None``, as the provider would have sent it had we not asked for usage."""
    copy = _replaced(chunk, usage=None)
    return chunk if copy is None else copy


def _replaced(obj: Any, **changes: Any) -> Any:
    """A copy of ``obj`` (dict of any class, pydantic model, dataclass or namedtuple) with ``changes``, of
    ``obj``'s type; None if it is none of those or cannot be copied faithfully."""
    if isinstance(obj, dict):
        new: Any = obj
        for k, v in changes.items():
            new = _dict_with(new, k, v)
            if new is None:
                return None
        return new
    model_copy = getattr(obj, "model_copy", None)
    if callable(model_copy):
        return model_copy(update=changes)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, tuple) and all(k in (getattr(type(obj), "_fields", None) or ()) for k in changes):
        return obj._replace(**changes)  # type: ignore[attr-defined]
    return None


def _stream_ended(req: Request, delivered: bool, endpoint: str, params: Any) -> None:
    """What a finished stream (any exit) leaves on its request before it is recorded."""
    req.delivered = delivered
    if req.prompt_tokens is None and req.first_token is not None:
        try:
            req.prompt_chars = _prompt_chars(endpoint, params)
        except BaseException:
            req.prompt_chars = None


class _TracedMethod(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A router instance's method as ``instrument_router`` leaves it: a wrapt proxy, so the method keeps its name,
    signature and shape (``inspect.iscoroutinefunction`` / ``isasyncgenfunction`` answer as for the original)."""

    __ryot_telemetry_wrapped__ = True  # _MARK, found on the class: the proxy forwards other attributes

    def __copy__(self) -> _TracedMethod:
        return self  # as for a plain function: a copied router shares it

    def __deepcopy__(self, memo: dict[int, Any]) -> _TracedMethod:
        return self


def _make_method(rec: Recorder, endpoint: str, original: Callable[..., Any], reasoning: bool) -> _TracedMethod:
    shape = method_shape(original)
    if shape is COROUTINE:

        def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return traced_call(rec, endpoint, wrapped, args, kwargs, reasoning=reasoning)

    else:

        def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return _drive(traced_call(rec, endpoint, wrapped, args, kwargs, reasoning=reasoning, shape=shape))

    return _TracedMethod(original, wrapper)


def instrument_router(router: Any, recorder: Recorder | None = None) -> Any:
    """Record every ``openai_chat_completion`` / ``openai_completion`` call made on this router instance
    (and ogx's ``openai_chat_completions_with_reasoning`` where the router has it).

    Wraps the instance (not its class); returns the router. Calling it twice is a no-op.
    ``uninstrument_router`` undoes it.
    """
    if recorder is None:
        recorder = default_recorder()
    found = False
    for name, endpoint in METHODS.items():
        original = getattr(router, name, None)
        if original is None or not callable(original):
            continue  # not a method: left untouched
        found = found or name != REASONING_METHOD
        if getattr(original, _MARK, None) is not None:
            continue
        setattr(router, name, _make_method(recorder, endpoint, original, name == REASONING_METHOD))
    if not found:
        raise TypeError(
            f"{type(router).__name__} has neither openai_chat_completion nor openai_completion; "
            "is it a llama-stack-style router?"
        )
    return router


def uninstrument_router(router: Any) -> Any:
    """Remove what ``instrument_router`` added to this instance."""
    for name in METHODS:
        method = router.__dict__.get(name) if hasattr(router, "__dict__") else None
        if method is not None and getattr(method, _MARK, None) is not None:
            delattr(router, name)
    return router

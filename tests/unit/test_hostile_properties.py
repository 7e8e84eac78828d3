"""Property tests (Hypothesis): nothing a client or a provider sends changes the call or breaks an exporter.

Every example draws a model name (any code point: lone surrogates, control characters, long), usage counts of any
kind (ints of any size, floats incl. inf/nan, strings, bools), the shape of params, chunks and results (dict, a dict
subclass with attribute access, OrderedDict, dataclass, pydantic, namedtuple) and an outcome. For each: the caller
gets what the unwrapped router gives, the router gets params of the caller's exact type, in-flight ends at 0, the
scrape parses with prometheus_client's parser and the OTLP payload encodes. One recorder shared by all examples is
checked by ``promtool check metrics`` at the end (one promtool run, not one per example).

Deterministic for CI: ``derandomize=True`` and no example database; a modest example count.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import shutil
import subprocess
import types
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

import ryot_telemetry
from ryot_telemetry._compat import prometheus_reader
from ryot_telemetry.router import wrapper
from support.fakes import KeyErrorStream

PROFILE = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- shapes ----------------------------------------------------------------------------------------------------


class AttrDict(dict):  # type: ignore[type-arg]
    """The attribute-style dict idiom: ``d.key`` reads ``d["key"]`` and raises KeyError when absent."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


@dataclasses.dataclass
class DcParams:
    model: Any
    messages: list[Any]
    stream: Any = None
    n: Any = None
    stream_options: Any = None


class NtParams(NamedTuple):
    model: Any
    messages: list[Any]
    stream: Any = None
    n: Any = None
    stream_options: Any = None


class PdParams(BaseModel):
    model: Any
    messages: list[Any]
    stream: Any = None
    n: Any = None
    stream_options: Any = None


@dataclasses.dataclass
class DcObj:
    id: str
    model: Any
    choices: list[Any]
    usage: Any = None


class NtObj(NamedTuple):
    id: str
    model: Any
    choices: list[Any]
    usage: Any = None


class PdObj(BaseModel):
    id: str
    model: Any
    choices: list[Any]
    usage: Any = None


class KeyErrorResult:
    """A response whose instance ``__getattr__`` raises KeyError for anything it lacks."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __getattr__(self, name: str) -> Any:
        raise KeyError(name)

    def __eq__(self, other: object) -> bool:
        return type(other) is KeyErrorResult and other.tag == self.tag

    def __hash__(self) -> int:
        return hash(self.tag)

    def __repr__(self) -> str:
        return f"KeyErrorResult({self.tag!r})"


def _mapping(cls: Callable[..., Any]) -> Callable[..., Any]:
    return lambda **kw: cls(kw) if cls is not dict else dict(kw)


PARAMS: dict[str, Callable[..., Any]] = {
    "dict": dict,
    "attrdict": _mapping(AttrDict),
    "ordereddict": _mapping(collections.OrderedDict),
    "dataclass": DcParams,
    "namedtuple": NtParams,
    "pydantic": PdParams,
}
OBJECTS: dict[str, Callable[..., Any]] = {
    "dict": dict,
    "attrdict": _mapping(AttrDict),
    "ordereddict": _mapping(collections.OrderedDict),
    "dataclass": DcObj,
    "namedtuple": NtObj,
    "pydantic": PdObj,
}


def field(obj: Any, name: str) -> Any:
    """How a router reads its own params: a key of a mapping, else an attribute."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


class ModelNotFound(Exception):
    status_code = 404


# --- the provider ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Example:
    model: Any
    response_model: Any
    params_shape: str
    chunk_shape: str
    stream: bool
    n: Any
    caller_asks_usage: bool
    outcome: str  # ok, model_not_found, error, mid_stream_error, keyerror
    prompt: Any
    completion: Any
    cached: Any

    def params(self) -> Any:
        opts = {"include_usage": True} if self.caller_asks_usage else None
        kw: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": "hi"}]}
        kw.update(stream=self.stream, n=self.n)
        if opts is not None or self.params_shape in ("dataclass", "namedtuple", "pydantic"):
            kw["stream_options"] = opts
        return PARAMS[self.params_shape](**kw)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached},
        }


class Router:
    """Builds fresh objects from the example on every call, so a bare and a wrapped call can be compared."""

    def __init__(self, ex: Example) -> None:
        self.ex = ex
        self.seen: list[Any] = []

    async def openai_chat_completion(self, params: Any) -> Any:
        self.seen.append(params)
        ex = self.ex
        if ex.outcome == "model_not_found":
            raise ModelNotFound(f"model {ex.model!r} not found")
        if ex.outcome == "error":
            raise RuntimeError("boom")
        make = OBJECTS[ex.chunk_shape]
        if not field(params, "stream"):
            if ex.outcome == "keyerror":
                return KeyErrorResult("r")
            return make(id="r", model=ex.response_model, choices=[{"message": {"content": "hi"}}], usage=ex.usage())
        opts = field(params, "stream_options")
        include_usage = bool(opts and opts.get("include_usage"))
        items = [
            make(id=f"c{i}", model=ex.response_model, choices=[{"delta": {"content": t}}]) for i, t in enumerate("ab")
        ]
        if include_usage:  # the OpenAI way: one more chunk, no choices, only usage
            items.append(make(id="u", model=ex.response_model, choices=[], usage=ex.usage()))
        if ex.outcome == "keyerror":
            return KeyErrorStream(items)
        return self._gen(items, ex.outcome == "mid_stream_error")

    async def _gen(self, items: list[Any], fail: bool) -> AsyncIterator[Any]:
        for i, item in enumerate(items):
            if fail and i == 1:
                raise RuntimeError("provider died mid-stream")
            yield item


async def outcome_of(call: Callable[[Any], Any], params: Any) -> tuple[Any, ...]:
    """What a caller observes: the result (or each chunk) and the exception, by type and repr (nan-safe)."""
    try:
        result = await call(params)
    except Exception as e:
        return ("raised", type(e), e.args)
    if not hasattr(type(result), "__aiter__"):
        return ("returned", type(result), repr(result))
    got: list[tuple[type, str]] = []
    try:
        async for chunk in result:
            got.append((type(chunk), repr(chunk)))
    except Exception as e:
        return ("streamed", got, type(e), e.args)
    return ("streamed", got)


# --- strategies ------------------------------------------------------------------------------------------------

_ANY_CHAR = st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs", "Cc"]))
NAMES = st.one_of(
    st.text(_ANY_CHAR, min_size=1, max_size=40),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "new\nline", "\x1b[31mred", "\u2028", "\ufeff", "m"]),
    st.builds(lambda c, k: c * k, _ANY_CHAR, st.integers(100, 3000)),
    st.none(),
    st.integers(),
)
COUNTS = st.one_of(
    st.none(),
    st.integers(0, 5000),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.integers(2**53 - 2, 2**53 + 2),
    st.sampled_from([2**64 - 1, 2**63, 10**400, 1e20, -1]),
    st.floats(),
    st.booleans(),
    st.text(max_size=3),
)
SHAPES = st.sampled_from(sorted(PARAMS))
EXAMPLES = st.builds(
    Example,
    model=NAMES,
    response_model=NAMES,
    params_shape=SHAPES,
    chunk_shape=SHAPES,
    stream=st.booleans(),
    n=st.sampled_from([None, 1, 2, 4, -1, 0, "2", True, 2.5]),
    caller_asks_usage=st.booleans(),
    outcome=st.sampled_from(["ok", "ok", "ok", "model_not_found", "error", "mid_stream_error", "keyerror"]),
    prompt=COUNTS,
    completion=COUNTS,
    cached=COUNTS,
)


# --- the stack under test ---------------------------------------------------------------------------------------


class Stack:
    """A MeterProvider with a Prometheus reader (private registry) and an in-memory reader standing in for OTLP."""

    def __init__(self, max_models: int = 100) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.memory = InMemoryMetricReader()
        self.provider = MeterProvider(
            metric_readers=[prometheus_reader(self.registry), self.memory],
            views=ryot_telemetry.views(),
        )
        meter = self.provider.get_meter("ryot_telemetry")
        self.recorder = ryot_telemetry.build_recorder(meter, semconv=True, max_models=max_models)

    def exposition(self) -> str:
        return generate_latest(self.registry).decode("utf-8")

    def otlp(self) -> bytes:
        return encode_metrics(self.memory.get_metrics_data()).SerializeToString()


def assert_exports(stack: Stack) -> str:
    text = stack.exposition()
    families = list(text_string_to_metric_families(text))
    assert any(f.name == "ryot_inference_requests" for f in families)
    assert len(stack.otlp()) > 0
    return text


def test_hostile_requests_never_change_the_call_and_always_export() -> None:
    """Any name, usage, shapes and outcome: same result as unwrapped, exact params type, in-flight 0, the scrape
    parses, OTLP encodes — per example on a fresh stack, and on one stack shared by every example, whose final
    scrape then passes ``promtool check metrics`` (one promtool run for the whole batch)."""
    shared = Stack(max_models=20)

    @PROFILE
    @given(ex=EXAMPLES)
    def one_example(ex: Example) -> None:
        stack = Stack()
        try:
            asyncio.run(_check_one(stack, shared, ex))
            assert_exports(stack)
            assert len(shared.otlp()) > 0  # the shared scrape is parsed once, at the end (the parser is slow)
        finally:
            stack.provider.shutdown()

    try:
        one_example()
        text = assert_exports(shared)
        if shutil.which("promtool") is None:
            pytest.skip("promtool is not installed (scripts/setup.sh test installs it)")
        out = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
        assert out.returncode == 0, (out.stdout + out.stderr).decode()[-2000:]
    finally:
        shared.provider.shutdown()


async def _check_one(stack: Stack, shared: Stack, ex: Example) -> None:
    bare = Router(ex)
    expected = await outcome_of(bare.openai_chat_completion, ex.params())
    for rec in (stack.recorder, shared.recorder):
        inner = Router(ex)
        wrapped = ryot_telemetry.instrument_router(inner, rec)
        params = ex.params()
        before = (type(params), repr(params))
        assert await outcome_of(wrapped.openai_chat_completion, params) == expected
        assert (type(params), repr(params)) == before  # the caller's params are never changed
        assert [type(p) for p in inner.seen] == [type(params)]  # the router gets the caller's exact type
        assert all(v == 0 for v in rec.active().values()), rec.active()
        if rec is stack.recorder:
            assert completion_tokens(stack) == expected_completion(ex, inner.seen[0])


def plausible(v: Any) -> int | None:
    """The SPEC's rule, written independently of the implementation: an integer value in [0, 2**53]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not v.is_integer():
        return None
    return int(v) if 0 <= v <= 2**53 else None


def expected_completion(ex: Example, seen_params: Any) -> int | None:
    """Completion tokens the fresh stack must show: the count if usage reached the wrapper and is plausible."""
    if ex.outcome in ("model_not_found", "error") or (ex.outcome == "mid_stream_error" and ex.stream):
        return None  # raised before usage, or (mid-stream) before the usage chunk
    if ex.stream:
        opts = field(seen_params, "stream_options")
        if not (opts and opts.get("include_usage")):
            return None  # the provider was not asked, so it sent no usage
    elif ex.outcome == "keyerror":
        return None  # usage cannot be read from that response
    return plausible(ex.completion)


def completion_tokens(stack: Stack) -> int | None:
    data = stack.memory.get_metrics_data()
    values = [
        p.value
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "ryot.tokens.generated"
        for p in m.data.data_points
        if p.attributes.get("token_type") == "completion"
    ]
    return sum(values) if values else None


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(name=NAMES, max_length=st.integers(1, 200))
def test_every_label_is_short_encodable_and_kept_where_it_can_be(name: Any, max_length: int) -> None:
    """Any name: the label is valid UTF-8, at most max_length code points, equal to the name where the name was
    short and printable-safe, and the label map keys only clipped strings."""
    from ryot_telemetry.recording.labels import ModelLabels

    labels = ModelLabels(max_models=5, max_length=max_length)
    label = labels(name)
    label.encode("utf-8")  # raises for a surrogate
    assert len(label) <= max(max_length, len("unknown"))
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in label)
    if isinstance(name, str) and 0 < len(name) <= max_length and name.isprintable():
        assert label == name
    assert all(type(k) is str and len(k) <= max_length for k in labels._map)


_RECORDER = ryot_telemetry.build_recorder(MeterProvider().get_meter("ryot_telemetry"))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=COUNTS)
def test_usage_counts_follow_the_spec_rule(value: Any) -> None:
    """The wrapper takes a usage count exactly when the SPEC's rule (independently written above) allows it."""
    from ryot_telemetry.router.wrapper import read_usage

    req = _RECORDER.start("m", "chat_completion", "standard")
    read_usage(req, {"completion_tokens": value})
    req.abandon()
    assert req.completion_tokens == plausible(value)
    assert (req._implausible is not None) == (value is not None and plausible(value) is None)


# --- every router shape, unchanged: router shapes x result shapes x exception shapes ---------------------------
#
# Each example draws what a provider does (return a result, raise before answering, or stream chunks and perhaps
# raise mid-stream), the kinds of objects it hands over (well-formed ones of every class above, or hostile ones
# whose every read raises a drawn exception, BaseException subclasses included), the exception it raises (plain,
# hostile, or a BaseException) and how the caller consumes a stream (to the end, closing it early, dropping it).
# The same behaviour runs on a bare router and on the wrapped one, per router shape (coroutine, sync, sync handing
# back a coroutine, async generator, callable object) and wrapping (instrument_router, the instrumentor on a
# class, and on a class whose base is wrapped too): the caller must observe the very same objects and exception.

RAISED: dict[str, type[BaseException]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "AttributeError": AttributeError,
    "TypeError": TypeError,
    "RecursionError": RecursionError,
    "MemoryError": MemoryError,
    "StopIteration": StopIteration,
    "StopAsyncIteration": StopAsyncIteration,
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": SystemExit,
    "GeneratorExit": GeneratorExit,
    "CancelledError": asyncio.CancelledError,
    "BaseException": type("CustomBaseException", (BaseException,), {}),
}
_HOSTILE_FIELDS = (
    "usage",
    "model",
    "choices",
    "completion",
    "chunk",
    "reasoning_content",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "get",
    "model_copy",
    "aclose",
    "close",
)


def _raising(exc: type[BaseException], what: str) -> Any:
    def read(self: Any) -> Any:
        raise exc(what)

    return property(read)


def hostile_object(exc: type[BaseException]) -> Any:
    """An object every read of which raises ``exc``: its fields, ``__getattr__`` and ``__class__`` (which
    ``isinstance`` consults)."""

    def getattr_(self: Any, name: str) -> Any:
        raise exc(name)

    ns: dict[str, Any] = {name: _raising(exc, name) for name in _HOSTILE_FIELDS}
    ns.update(__getattr__=getattr_, __class__=_raising(exc, "__class__"))
    return type("Hostile", (), ns)()


def hostile_exception(exc: type[BaseException]) -> BaseException:
    """A provider exception whose ``__str__``, ``status_code``, ``response`` and ``__class__`` raise ``exc``."""

    def str_(self: Any) -> str:
        raise exc("__str__")

    ns = {
        "__str__": str_,
        "status_code": _raising(exc, "status_code"),
        "response": _raising(exc, "response"),
        "__class__": _raising(exc, "__class__"),
    }
    return type("HostileError", (Exception,), ns)()


class AiterProperty:
    """A result whose ``__aiter__`` is a property raising: ``async for`` cannot iterate it."""

    def __init__(self, exc: type[BaseException]) -> None:
        self.exc = exc

    @property
    def __aiter__(self) -> Any:
        raise self.exc("__aiter__")


class StreamObject:
    """A provider stream object (not a generator) whose instance ``__getattr__`` raises a drawn exception."""

    def __init__(self, items: list[Any], exc: type[BaseException]) -> None:
        self._items = iter(items)
        self._exc = exc

    def __getattr__(self, name: str) -> Any:
        raise self._exc(name)

    def __aiter__(self) -> StreamObject:
        return self

    async def __anext__(self) -> Any:
        for item in self._items:
            if type(item) is _Raise:  # type(): a hostile chunk's __class__ raises
                raise item.exc
            return item
        raise StopAsyncIteration


@dataclasses.dataclass
class _Raise:
    exc: BaseException


@dataclasses.dataclass
class Behaviour:
    """One provider behaviour, built afresh for each run from a drawn spec: its objects are compared by identity."""

    outcome: str  # "return", "raise", "stream"
    result: Any = None
    exc: BaseException | None = None
    chunks: list[Any] = dataclasses.field(default_factory=list)
    usage_chunk: Any = None
    fail_at: int | None = None  # raise ``exc`` before this chunk
    stream_object: type[BaseException] | None = None  # stream as a StreamObject with this __getattr__ exception

    def items(self, params: Any) -> list[Any]:
        opts = field(params, "stream_options")
        asked = bool(opts and field(opts, "include_usage"))
        items: list[Any] = list(self.chunks)
        if self.usage_chunk is not None and asked:
            items.append(self.usage_chunk)
        if self.fail_at is not None:
            items.insert(min(self.fail_at, len(items)), _Raise(self.exc))  # type: ignore[arg-type]
        return items

    def stream(self, params: Any) -> Any:
        items = self.items(params)
        if self.stream_object is not None:
            return StreamObject(items, self.stream_object)
        return _agen(items)

    def answer(self, params: Any) -> Any:
        """The provider's answer (a sync view): raise, return, or hand back a stream."""
        if self.outcome == "raise":
            raise self.exc  # type: ignore[misc]
        if self.outcome == "stream":
            return self.stream(params)
        return self.result


async def _agen(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        if type(item) is _Raise:  # type(): a hostile chunk's __class__ raises
            raise item.exc
        yield item


@dataclasses.dataclass(frozen=True)
class Spec:
    outcome: str
    result: tuple[str, str]  # (kind, detail)
    exc: tuple[str, str]
    chunks: tuple[tuple[str, str], ...]
    usage_chunk: tuple[str, str] | None
    fail_at: int | None
    stream_object: str | None
    stream: bool
    caller_asks_usage: bool
    consumer: tuple[str, int]  # ("all" | "close" | "drop", after how many chunks)

    def build(self) -> Behaviour:
        return Behaviour(
            outcome=self.outcome,
            result=_make_result(self.result),
            exc=_make_exception(self.exc),
            chunks=[_make_chunk(c, i) for i, c in enumerate(self.chunks)],
            usage_chunk=None if self.usage_chunk is None else _make_usage_chunk(self.usage_chunk),
            fail_at=self.fail_at,
            stream_object=None if self.stream_object is None else RAISED[self.stream_object],
        )

    def params(self) -> Any:
        opts = {"include_usage": True} if self.caller_asks_usage else None
        messages = [{"role": "user", "content": "hi"}]
        return PdParams(model="m", messages=messages, stream=self.stream, stream_options=opts)


def _make_result(kind: tuple[str, str]) -> Any:
    what, detail = kind
    if what == "object":
        usage = {"prompt_tokens": 5, "completion_tokens": 3}
        return OBJECTS[detail](id="r", model="m", choices=[{"message": {"content": "hi"}}], usage=usage)
    if what == "hostile":
        return hostile_object(RAISED[detail])
    if what == "aiter_property":
        return AiterProperty(RAISED[detail])
    return None


def _make_exception(kind: tuple[str, str]) -> BaseException:
    what, detail = kind
    if what == "hostile":
        return hostile_exception(RAISED[detail])
    if what == "model_not_found":
        return ModelNotFound("model 'm' not found")
    return RAISED[detail](detail)


def _make_chunk(kind: tuple[str, str], i: int) -> Any:
    what, detail = kind
    if what == "hostile":
        return hostile_object(RAISED[detail])
    return OBJECTS[detail](id=f"c{i}", model="m", choices=[{"delta": {"content": f"t{i}"}}])


def _make_usage_chunk(kind: tuple[str, str]) -> Any:
    what, detail = kind
    usage: Any = {"prompt_tokens": 7, "completion_tokens": 2}
    if what == "hostile_usage":
        usage = hostile_object(RAISED[detail[1:]]) if detail.startswith("!") else usage
        detail = detail.split("!")[0] or "dict"
    return OBJECTS[detail](id="u", model="m", choices=[], usage=usage)


_RAISED_NAMES = st.sampled_from(sorted(RAISED))
_SHAPE_NAMES = st.sampled_from(sorted(OBJECTS))
RESULTS = st.one_of(
    st.tuples(st.just("object"), _SHAPE_NAMES),
    st.tuples(st.just("hostile"), _RAISED_NAMES),
    st.tuples(st.just("aiter_property"), _RAISED_NAMES),
    st.tuples(st.just("none"), st.just("")),
)
EXCEPTIONS = st.one_of(
    st.tuples(st.just("plain"), _RAISED_NAMES),
    st.tuples(st.just("hostile"), _RAISED_NAMES),
    st.tuples(st.just("model_not_found"), st.just("")),
)
CHUNKS = st.one_of(st.tuples(st.just("object"), _SHAPE_NAMES), st.tuples(st.just("hostile"), _RAISED_NAMES))
USAGE_CHUNKS = st.one_of(
    st.none(),
    st.tuples(st.just("object"), _SHAPE_NAMES),
    st.builds(lambda shape, exc: ("hostile_usage", f"{shape}!{exc}"), _SHAPE_NAMES, _RAISED_NAMES),
)
SPECS = st.builds(
    Spec,
    outcome=st.sampled_from(["return", "raise", "stream", "stream"]),
    result=RESULTS,
    exc=EXCEPTIONS,
    chunks=st.lists(CHUNKS, max_size=4).map(tuple),
    usage_chunk=USAGE_CHUNKS,
    fail_at=st.sampled_from([None, None, None, 0, 1, 2, 3, 5]),  # mostly streams that run out
    stream_object=st.one_of(st.none(), _RAISED_NAMES),
    stream=st.sampled_from([True, True, False]),
    caller_asks_usage=st.booleans(),
    consumer=st.tuples(st.sampled_from(["all", "close", "drop"]), st.integers(0, 3)),
)


# Router shapes: the same behaviour behind each kind of method.


class CoroutineRouter:
    def __init__(self, b: Behaviour) -> None:
        self.b = b

    async def openai_chat_completion(self, params: Any) -> Any:
        return self.b.answer(params)


class SyncRouter:
    def __init__(self, b: Behaviour) -> None:
        self.b = b

    def openai_chat_completion(self, params: Any) -> Any:
        return self.b.answer(params)


class SyncCoroutineRouter:
    """A sync method handing back a coroutine (a thin sync facade over an async implementation)."""

    def __init__(self, b: Behaviour) -> None:
        self.b = b

    def openai_chat_completion(self, params: Any) -> Any:
        return self._impl(params)

    async def _impl(self, params: Any) -> Any:
        return self.b.answer(params)


class AsyncGeneratorRouter:
    """An async generator method: raising before answering is raising on the first step."""

    def __init__(self, b: Behaviour) -> None:
        self.b = b

    async def openai_chat_completion(self, params: Any) -> AsyncIterator[Any]:
        b = self.b
        if b.outcome == "raise":
            raise b.exc  # type: ignore[misc]
        for item in b.items(params):
            if type(item) is _Raise:  # type(): a hostile chunk's __class__ raises
                raise item.exc
            yield item


class _AsyncCallable:
    def __init__(self, b: Behaviour) -> None:
        self.b = b

    async def __call__(self, params: Any) -> Any:
        return self.b.answer(params)


class CallableObjectRouter:
    """The method is an instance attribute holding a callable object (``async def __call__``)."""

    def __init__(self, b: Behaviour) -> None:
        self.openai_chat_completion = _AsyncCallable(b)


ROUTER_SHAPES: dict[str, type] = {
    "coroutine": CoroutineRouter,
    "sync": SyncRouter,
    "sync_coroutine": SyncCoroutineRouter,
    "async_generator": AsyncGeneratorRouter,
    "callable_object": CallableObjectRouter,
}
WRAPPINGS = ("instance", "class", "class_nested")
SHAPE_CASES = [(w, s) for w in WRAPPINGS for s in ROUTER_SHAPES if not (s == "callable_object" and w != "instance")]


def _name(b: Behaviour, obj: Any) -> Any:
    """What the caller holds, named by identity among the behaviour's own objects."""
    if obj is None:
        return None
    if obj is b.result:
        return "result"
    if obj is b.exc:
        return "exc"
    if obj is b.usage_chunk:
        return "usage_chunk"
    for i, c in enumerate(b.chunks):
        if obj is c:
            return ("chunk", i)
    return ("other", type(obj).__name__)


def _raised(b: Behaviour, e: BaseException) -> tuple[Any, ...]:
    return ("raised", _name(b, e), type(e).__name__, _name(b, e.__cause__), _name(b, e.__context__))


async def observe(method: Any, b: Behaviour, spec: Spec) -> tuple[Any, ...]:
    """What a caller observes: the call's kind, then the result or each chunk, and the exception — by identity."""
    params = spec.params()
    try:
        r = method(params)
    except BaseException as e:
        return ("call", *_raised(b, e))
    # type(), not isinstance(): a hostile result's __class__ raises
    kind = {types.CoroutineType: "coroutine", types.AsyncGeneratorType: "asyncgen"}.get(type(r), "other")
    if kind == "coroutine":
        try:
            r = await r
        except BaseException as e:
            return (kind, *_raised(b, e))
    name = _name(b, r)
    if name in (None, "result"):
        return (kind if kind == "coroutine" else "returned", name)
    how, after = spec.consumer
    got: list[Any] = []
    it = type(r).__aiter__(r)
    try:
        while True:
            if how != "all" and len(got) == after:
                break
            got.append(_name(b, await type(it).__anext__(it)))
    except StopAsyncIteration:
        return (kind if kind != "other" else "asyncgen", "streamed", got)
    except BaseException as e:
        return (kind if kind != "other" else "asyncgen", "streamed", got, *_raised(b, e))
    if how == "close":
        aclose = getattr(type(r), "aclose", None)
        if aclose is not None:
            await aclose(r)
    del r, it  # "drop": the loop's finaliser hook closes what is left (no cycle: no gc.collect() needed)
    for _ in range(3):
        await asyncio.sleep(0)
    return (kind if kind != "other" else "asyncgen", "stopped", got, how)


@dataclasses.dataclass
class Wrapped:
    """Router classes as the instrumentor wraps them: a subclass per shape (the bare class stays unwrapped), and for
    ``class_nested`` a subclass of that subclass, both wrapped, so one call passes two wrappers."""

    instrumentor: Any
    classes: dict[tuple[str, str], type]


def _instrument_classes(recorder: Any) -> Wrapped:
    from ryot_telemetry.router.instrumentor import RyotInstrumentor

    classes: dict[tuple[str, str], type] = {}
    to_wrap: list[type] = []
    for shape, bare in ROUTER_SHAPES.items():
        if shape == "callable_object":
            continue
        sub = type(f"Wrapped{bare.__name__}", (bare,), {})
        leaf = type(f"Nested{bare.__name__}", (sub,), {})
        classes[("class", shape)] = type(f"Alone{bare.__name__}", (bare,), {})
        classes[("class_nested", shape)] = leaf
        to_wrap += [classes[("class", shape)], sub, leaf]
    inst = RyotInstrumentor()
    inst.instrument(recorder=recorder, router_classes=to_wrap)
    return Wrapped(inst, classes)


HOSTILE_BEFORE_USAGE = Spec(
    outcome="stream",
    result=("none", ""),
    exc=("plain", "ValueError"),
    chunks=(("object", "dict"), ("hostile", "KeyboardInterrupt")),
    usage_chunk=("object", "dict"),
    fail_at=None,
    stream_object=None,
    stream=True,
    caller_asks_usage=False,
    consumer=("all", 0),
)
"""A hostile chunk just before the usage chunk: the drain reads it for a finish reason (its __class__ raises
KeyboardInterrupt), after the caller has its chunks; the scrape must still work."""

_SHAPE_EXAMPLES = int(os.environ.get("RYOT_SHAPE_EXAMPLES", "200"))
"""Examples per router shape and wrapping (13 of them): bounded for the default run (a few seconds each);
``RYOT_SHAPE_EXAMPLES=3000`` runs thousands per shape."""


@pytest.mark.parametrize(("wrapping", "shape"), SHAPE_CASES, ids=[f"{w}-{s}" for w, s in SHAPE_CASES])
def test_every_router_shape_gives_the_caller_exactly_what_the_router_gives(wrapping: str, shape: str) -> None:
    """Per router shape and wrapping, any behaviour: the caller observes the very objects (result, chunks,
    exception, its cause and context) of the bare router, the call keeps its kind (a coroutine stays one, an
    async generator stays one), in-flight ends at 0 with no gc.collect(), and after every example the OTLP payload
    encodes; the scrape of everything recorded so far parses every 64 examples and at the end."""
    stack = Stack(max_models=20)
    wrapped = _instrument_classes(stack.recorder) if wrapping != "instance" else None
    ran = 0

    @settings(PROFILE, max_examples=_SHAPE_EXAMPLES)
    @given(spec=SPECS)
    @example(spec=HOSTILE_BEFORE_USAGE)
    def one_example(spec: Spec) -> None:
        nonlocal ran
        ran += 1
        bare_b, wrapped_b = spec.build(), spec.build()
        bare = ROUTER_SHAPES[shape](bare_b)
        if wrapped is None:
            router = ryot_telemetry.instrument_router(ROUTER_SHAPES[shape](wrapped_b), stack.recorder)
        else:
            router = wrapped.classes[(wrapping, shape)](wrapped_b)
        expected = asyncio.run(observe(bare.openai_chat_completion, bare_b, spec))
        assert asyncio.run(observe(router.openai_chat_completion, wrapped_b, spec)) == expected
        assert all(v == 0 for v in stack.recorder.active().values()), stack.recorder.active()
        try:  # a BaseException here (a provider object read at drain time, say) is a failure, not an abort
            assert len(stack.otlp()) > 0  # a full collection, OTLP-encoded
            if ran % 64 == 0:  # the text exposition of everything so far (its formatting is the slow part)
                assert_exports(stack)
        except BaseException as e:
            if isinstance(e, AssertionError):
                raise
            raise AssertionError(f"exporting raised {e!r}") from e

    try:
        one_example()
        assert ran >= _SHAPE_EXAMPLES
        assert_exports(stack)
    finally:
        if wrapped is not None:
            wrapped.instrumentor.uninstrument()
        stack.provider.shutdown()


# --- every stream length, every repetition of chunk objects (issue 22) -------------------------------------------

_STREAM_EXAMPLES = int(os.environ.get("RYOT_STREAM_EXAMPLES", "40"))
"""Examples of the stream-length property: bounded for the default run (well under a minute);
``RYOT_STREAM_EXAMPLES=400`` runs ten times as many."""


class _AttrChunk:
    """An attribute object chunk, neither a dict nor a pydantic model (weak-referenceable, as a pooled one)."""

    def __init__(self, content: str | None, usage: Any = None) -> None:
        delta = types.SimpleNamespace(content=content, role=None, tool_calls=None)
        self.choices = [types.SimpleNamespace(index=0, delta=delta, text=None, finish_reason=None)] if content else []
        self.usage = usage
        self.model = "m"


class _Reasoning:
    """ogx's reasoning wrapper around an OpenAI chunk."""

    def __init__(self, chunk: Any) -> None:
        self.chunk = chunk
        self.reasoning_content = None


def _chunk(kind: str, content: str | None, usage: Any = None) -> Any:
    from support.fakes import ChatChunk, ChunkChoice, Delta

    if kind == "dict":
        choices = [{"index": 0, "delta": {"content": content}}] if content else []
        return {"choices": choices, "usage": usage, "model": "m"}
    if kind == "attr":
        return _AttrChunk(content, usage)
    return ChatChunk(choices=[ChunkChoice(delta=Delta(content=content))] if content else [], usage=usage)


class _StreamSpec(NamedTuple):
    length: int  # content chunks
    leading: int  # chunks without content before the first content chunk (a role chunk, keep-alives)
    kind: str  # object (pydantic), attr, dict
    repetition: str  # fresh, reused (one object for every chunk), repeated (each object twice in a row)
    usage: bool  # the provider sends a usage chunk when asked
    caller_asks_usage: bool
    semconv: bool
    reasoning: bool


_RUN = len(wrapper._STEP)  # chunks the hot loop counts by table lookups before a run starts again
_RUN_ENDS = (_RUN - 1, _RUN, _RUN + 1)

STREAM_SPECS = st.builds(
    _StreamSpec,
    length=st.one_of(st.sampled_from((0, 1, 2, 255, 256, 257, *_RUN_ENDS, 2 * _RUN + 1)), st.integers(0, 2 * _RUN + 1)),
    leading=st.integers(0, 2),
    kind=st.sampled_from(("object", "attr", "dict")),
    repetition=st.sampled_from(("fresh", "reused", "repeated")),
    usage=st.booleans(),
    caller_asks_usage=st.booleans(),
    semconv=st.booleans(),
    reasoning=st.booleans(),
)


def _stream_items(spec: _StreamSpec) -> tuple[list[Any], Any]:
    """(the stream's items, its usage chunk or None) as the provider sends them when asked for usage."""
    from support.fakes import usage as make_usage

    lead = _chunk(spec.kind, None)
    items: list[Any] = [lead] * spec.leading
    if spec.repetition == "reused":
        one = _chunk(spec.kind, "tok")
        items += [one] * spec.length
    elif spec.repetition == "repeated":
        pairs = [_chunk(spec.kind, "tok") for _ in range((spec.length + 1) // 2)]
        items += [c for c in pairs for _ in (0, 1)][: spec.length]
    else:
        items += [_chunk(spec.kind, "tok") for _ in range(spec.length)]
    usage_chunk = None
    if spec.usage:
        u = make_usage(7, spec.length + 3)
        usage_chunk = _chunk(spec.kind, None, u.model_dump() if spec.kind == "dict" else u)
    if spec.reasoning:
        wrappers = {id(c): _Reasoning(c) for c in [*items, usage_chunk] if c is not None}
        items = [wrappers[id(c)] for c in items]
        usage_chunk = wrappers[id(usage_chunk)] if usage_chunk is not None else None
    return items, usage_chunk


class _StreamRouter:
    def __init__(self, items: list[Any], usage_chunk: Any) -> None:
        self.items, self.usage_chunk = items, usage_chunk

    def _stream(self, asked: bool) -> AsyncIterator[Any]:
        async def gen() -> AsyncIterator[Any]:
            for item in self.items:
                yield item
            if self.usage_chunk is not None and asked:
                yield self.usage_chunk

        return gen()

    async def openai_chat_completion(self, params: Any) -> Any:
        return self._stream(bool((params.stream_options or {}).get("include_usage")))

    async def openai_chat_completions_with_reasoning(self, params: Any) -> Any:
        return self._stream(True)  # ogx's Responses layer always asks for usage


@pytest.mark.parametrize("copies", ["specialised", "generic"])
def test_any_stream_length_and_chunk_repetition_reaches_the_caller_whole(
    copies: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams of 0 to two runs of the hot loop's count and one chunk more, fresh, reused or repeated objects,
    dicts, pydantic or attribute objects, with or without usage (hidden or asked for), semconv and reasoning: the
    caller gets every chunk (the very objects), the request counts once as a success with the exact token counts
    (usage, else the chunk estimate), and in-flight ends at 0. Through the stream loop's specialised copies, and
    through its one definition testing its flags as it runs (what serves where no source can be had)."""
    from ryot_telemetry.testing import capture
    from support.fakes import ChatParams

    if copies == "generic":
        for key in wrapper._STREAMS:
            monkeypatch.setitem(wrapper._STREAMS, key, wrapper._traced_stream)

    @settings(PROFILE, max_examples=_STREAM_EXAMPLES)
    @given(spec=STREAM_SPECS)
    @example(spec=_StreamSpec(_RUN + 1, 1, "object", "reused", False, False, False, False))
    @example(spec=_StreamSpec(_RUN + 1, 1, "object", "reused", True, True, False, False))
    @example(spec=_StreamSpec(2 * _RUN + 1, 0, "attr", "repeated", True, False, True, False))
    def one(spec: _StreamSpec) -> None:
        items, usage_chunk = _stream_items(spec)
        cap = capture(semconv=spec.semconv)
        try:
            router = cap.instrument_router(_StreamRouter(items, usage_chunk))
            opts = {"include_usage": True} if spec.caller_asks_usage else None
            params = ChatParams(model="m", stream=True, stream_options=opts)

            async def consume() -> list[Any]:
                call = (
                    router.openai_chat_completions_with_reasoning if spec.reasoning else router.openai_chat_completion
                )
                return [c async for c in await call(params)]

            got = asyncio.run(consume())
            expected = list(items)
            if usage_chunk is not None and (spec.caller_asks_usage or spec.reasoning):
                expected.append(usage_chunk)
            assert len(got) == len(expected)
            assert all(a is b for a, b in zip(got, expected))
            cap.recorder.drain(release_held=True)
            cap.collect()
            assert cap.value("ryot.inference.requests", model="m", endpoint="chat_completion", status="success") == 1
            assert len(cap.series("ryot.inference.requests")) == 1
            tokens = {p.attributes["token_type"]: p.value for p in cap.points("ryot.tokens.generated")}
            estimated = {p.attributes["token_type"]: p.value for p in cap.points("ryot.estimated_tokens")}
            if usage_chunk is not None:
                assert tokens == {"prompt": 7, "completion": spec.length + 3}
                assert estimated == {}
            else:
                assert tokens == {}
                assert estimated.get("completion") == (spec.length or None)
            assert all(v == 0 for v in cap.recorder.active().values())
        finally:
            cap.shutdown()

    one()

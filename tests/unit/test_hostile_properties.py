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
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

import ryot_telemetry
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
            metric_readers=[PrometheusMetricReader(registry=self.registry), self.memory],
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

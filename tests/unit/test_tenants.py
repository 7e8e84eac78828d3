"""The opt-in tenant label: exact per-tenant counters, the max_tenants bound, hostile values, failing resolvers."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import warnings
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import ryot_telemetry
from ryot_telemetry import catalogue
from ryot_telemetry.recording.tenants import Tenants
from ryot_telemetry.settings import ConfigurationError
from ryot_telemetry.testing import Capture, capture
from support.fakes import ChatParams, Choice, Completion, Message, ScriptedRouter, content_chunk, usage, usage_chunk

REQ = "ryot.inference.requests"
TOK = "ryot.tokens.generated"
COST = "ryot.token.cost_estimate.usd"
SLO = "ryot.slo.requests"
PRICES = {"m": {"prompt": 0.002, "completion": 0.004}}
COUNTERS = {m.name for m in catalogue.CATALOGUE if catalogue.TENANT in m.opt_in_labels}


def _response(prompt: int = 100, completion: int = 10) -> Completion:
    return Completion(model="m", choices=[Choice(message=Message(content="x"))], usage=usage(prompt, completion))


def _call(router: Any, params: Any) -> Any:
    return asyncio.run(router.openai_chat_completion(params))


def _params(tenant: str | None) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": {"tenant": tenant}}


def _tenants_of(cap: Capture, name: str) -> dict[str, float]:
    """Value by tenant of a counter whose other labels are the same on every series."""
    return {p.attributes["tenant"]: p.value for p in cap.points(name)}


def test_per_tenant_counters_exact_overflow_after_max_tenants_no_label_on_histograms_or_gauges() -> None:
    """metadata.tenant with max_tenants=2: acme and globex get their own series with exact requests, tokens, cost
    and SLO counts; initech and hooli share __overflow__; a request without a tenant is __unknown__; no histogram
    or gauge has a tenant label."""
    cap = capture(tenant="metadata.tenant", max_tenants=2, prices=PRICES, slos={"*": {"latency": 30.0}})
    try:
        router = cap.instrument_router(ScriptedRouter(response=_response()))
        for tenant in ("acme", "globex", "acme", "initech", "acme", "hooli", None):
            _call(router, _params(tenant))
        cap.collect()
        expected = {"acme": 3, "globex": 1, "__overflow__": 2, "__unknown__": 1}
        assert cap.series(REQ) == sorted(
            ({"model": "m", "endpoint": "chat_completion", "status": "success", "tenant": t} for t in expected),
            key=lambda a: sorted(a.items()),
        )
        assert _tenants_of(cap, REQ) == expected
        prompt = {p.attributes["tenant"]: p.value for p in cap.points(TOK) if p.attributes["token_type"] == "prompt"}
        assert prompt == {t: 100 * n for t, n in expected.items()}
        completion = {
            p.attributes["tenant"]: p.value for p in cap.points(TOK) if p.attributes["token_type"] == "completion"
        }
        assert completion == {t: 10 * n for t, n in expected.items()}
        cost = {p.attributes["tenant"]: p.value for p in cap.points(COST) if p.attributes["token_type"] == "prompt"}
        assert cost.keys() == expected.keys()
        for t, n in expected.items():  # 100 prompt tokens at 0.002 per 1k each
            assert cost[t] == pytest.approx(n * 0.0002, abs=1e-12)
        assert {(p.attributes["result"], p.attributes["tenant"]): p.value for p in cap.points(SLO)} == {
            ("met", t): n for t, n in expected.items()
        }
        assert cap.recorder.tenants is not None and cap.recorder.tenants.labels() == ["acme", "globex"]
        for name in {p for p in cap._points} - COUNTERS:
            assert all("tenant" not in (pt.attributes or {}) for pt in cap.points(name)), name
        assert {"ryot.inference.latency", "ryot.active_inference_requests"} <= set(cap._points)
    finally:
        cap.shutdown()


def test_a_tenant_keeps_its_series_and_counts_after_the_budget_is_spent() -> None:
    """Once max_tenants is reached, the tenants with a slot go on counting in their own series (no eviction), new
    ones count in __overflow__, and every counter only grows from one collection to the next."""
    cap = capture(tenant="metadata.tenant", max_tenants=1)
    try:
        router = cap.instrument_router(ScriptedRouter(response=_response()))
        _call(router, _params("acme"))
        first = _tenants_of(cap.collect(), REQ)
        for i in range(5):
            _call(router, _params(f"new-{i}"))
            _call(router, _params("acme"))
        second = _tenants_of(cap.collect(), REQ)
        assert (first, second) == ({"acme": 1}, {"acme": 6, "__overflow__": 5})
    finally:
        cap.shutdown()


def test_off_by_default_no_tenant_label_anywhere() -> None:
    """Without a tenant setting, no series of any metric has a tenant label, even when params carry one."""
    cap = capture(prices=PRICES, slos={"*": {"latency": 30.0}})
    try:
        assert cap.recorder.tenants is None
        _call(cap.instrument_router(ScriptedRouter(response=_response())), _params("acme"))
        cap.collect()
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
        for name in cap._points:
            assert all("tenant" not in (p.attributes or {}) for p in cap.points(name)), name
    finally:
        cap.shutdown()


class Extra(BaseModel):
    """ogx's request models allow extra fields: OpenAI's ``metadata`` arrives as one."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]] = []
    stream: bool | None = None


@dataclasses.dataclass
class Meta:
    tenant: str


@dataclasses.dataclass
class Plain:
    model: str
    metadata: Any
    user: Any = None
    stream: bool = False


class AttrDict(dict):  # type: ignore[type-arg]
    """An attribute-style dict whose missing attributes raise KeyError."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


@pytest.mark.parametrize(
    ("source", "params", "expected"),
    [
        ("metadata.tenant", {"model": "m", "metadata": {"tenant": "acme"}}, "acme"),
        ("metadata.tenant", Extra(model="m", metadata={"tenant": "acme"}), "acme"),  # pydantic extra field
        ("metadata.tenant", Plain("m", Meta("acme")), "acme"),  # objects all the way
        ("metadata.tenant", AttrDict(model="m", metadata=AttrDict(tenant="acme")), "acme"),
        ("metadata.tenant", AttrDict(model="m"), "__unknown__"),  # KeyError from __getattr__: just missing
        ("user", ChatParams(model="m"), "__unknown__"),  # no such field
        ("user", Plain("m", None, user=42), "42"),  # numbers as the model label takes them
        ("user", {"model": "m", "user": ""}, "__unknown__"),  # empty
        ("metadata.tenant", {"model": "m", "metadata": ["acme"]}, "__unknown__"),  # not a mapping or object
        ("metadata.org.team", {"model": "m", "metadata": {"org": {"team": "infra"}}}, "infra"),  # deeper paths
        ("metadata.org.team", {"model": "m", "metadata": None}, "__unknown__"),
        (lambda p: p["metadata"]["tenant"].upper(), {"model": "m", "metadata": {"tenant": "acme"}}, "ACME"),
        ("metadata.x-tenant", {"model": "m", "metadata": {"x-tenant": "acme"}}, "acme"),  # not an identifier
        ("metadata.class", Extra(model="m", metadata={"class": "acme"}), "acme"),  # a keyword
        ("metadata.x-tenant", Plain("m", None), "__unknown__"),
    ],
    ids=[
        "dict",
        "pydantic-extra",
        "dataclass",
        "attrdict",
        "attrdict-missing",
        "no-field",
        "int",
        "empty",
        "list",
        "three-steps",
        "three-steps-none",
        "callable",
        "non-identifier-key",
        "keyword-key",
        "non-identifier-missing",
    ],
)
def test_params_are_read_as_the_wrapper_reads_them(source: Any, params: Any, expected: str) -> None:
    """Dicts, pydantic models (extra fields too), dataclasses and attribute-style dicts all resolve; anything
    unusable is __unknown__."""
    cap = capture(tenant=source)
    try:
        router = cap.instrument_router(ScriptedRouter(response=_response()))
        assert _call(router, params) is router.response
        assert _tenants_of(cap.collect(), REQ) == {expected: 1}
    finally:
        cap.shutdown()


def test_a_callable_gets_the_callers_params_once_per_request() -> None:
    """The callable receives the very params object the caller passed, once per request, streams included."""
    seen: list[Any] = []

    def tenant_of(params: Any) -> str:
        seen.append(params)
        return "acme"

    cap = capture(tenant=tenant_of)
    try:
        chunks = [content_chunk("a"), content_chunk("b"), usage_chunk(usage(5, 2))]
        router = cap.instrument_router(ScriptedRouter(response=_response(), chunks=chunks))
        plain, streamed = ChatParams(model="m"), ChatParams(model="m", stream=True)

        async def run() -> None:
            await router.openai_chat_completion(plain)
            stream = await router.openai_chat_completion(streamed)
            assert [c.choices[0].delta.content async for c in stream] == ["a", "b"]

        asyncio.run(run())
        assert seen == [plain, streamed] and seen[0] is plain and seen[1] is streamed
        cap.collect()
        assert cap.value(TOK, model="m", token_type="completion", generation_mode="streaming", tenant="acme") == 2
    finally:
        cap.shutdown()


class Hostile:
    """Params whose ``metadata`` property raises."""

    model = "m"
    stream = False

    @property
    def metadata(self) -> Any:
        raise RuntimeError("boom")


def _boom(params: Any) -> str:
    raise ValueError("no tenant")


class BadStr(int):
    def __str__(self) -> str:
        raise RuntimeError("no str")


@pytest.mark.parametrize(
    ("source", "params"),
    [
        (_boom, {"model": "m"}),
        ("user", {"model": "m", "user": BadStr(7)}),  # a value whose str() raises
    ],
)
def test_a_raising_resolver_never_breaks_the_call(caplog: pytest.LogCaptureFixture, source: Any, params: Any) -> None:
    """The caller gets the router's own response; the requests count under __unknown__; one warning, once."""
    cap = capture(tenant=source)
    try:
        router = cap.instrument_router(ScriptedRouter(response=_response()))
        with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
            results = [_call(router, params) for _ in range(3)]
        assert all(r is router.response for r in results)
        assert _tenants_of(cap.collect(), REQ) == {"__unknown__": 3}
        warnings = [r.getMessage() for r in caplog.records if "tenant resolver" in r.getMessage()]
        assert len(warnings) == 1 and "counted under tenant='__unknown__'" in warnings[0]
    finally:
        cap.shutdown()


def test_a_property_that_raises_is_a_missing_tenant() -> None:
    """A params attribute whose read raises is treated as absent (as the wrapper's reads treat it): __unknown__."""
    cap = capture(tenant="metadata.tenant")
    try:
        router = cap.instrument_router(ScriptedRouter(response=_response()))
        assert _call(router, Hostile()) is router.response
        assert _tenants_of(cap.collect(), REQ) == {"__unknown__": 1}
    finally:
        cap.shutdown()


def test_hostile_tenant_values_are_clipped_and_encodable_and_memory_holds_only_the_clipped_value() -> None:
    """A 10 MB tenant is clipped to max_label_length before the request keeps it; control characters and lone
    surrogates become U+FFFD; each takes one slot."""
    huge = "t" * 10_000_000
    cap = capture(tenant="user", max_label_length=16)
    try:
        tenants = cap.recorder.tenants
        assert tenants is not None
        kept = tenants.of({"user": huge})
        assert kept == "t" * 16 and len(kept) == 16
        router = cap.instrument_router(ScriptedRouter(response=_response()))
        for value in (huge, "bad\nname\x00", "lone\ud800surrogate"):
            _call(router, {"model": "m", "user": value})
        assert _tenants_of(cap.collect(), REQ) == {"t" * 16: 1, "bad\ufffdname\ufffd": 1, "lone\ufffdsurrogate": 1}
        assert all(len(label) <= 16 for label in tenants.labels())
    finally:
        cap.shutdown()


def test_recorder_api_requests_take_a_tenant_set_on_the_request() -> None:
    """A request recorded through the Recorder API is labelled with the tenant set on it, bounded the same way;
    one that sets none is __unknown__."""
    cap = capture(tenant="metadata.tenant")
    try:
        rec = cap.recorder
        with rec.request(model="m", endpoint="chat_completion", mode="standard") as req:
            req.tenant = "acme"
        with rec.request(model="m", endpoint="chat_completion", mode="standard"):
            pass
        assert _tenants_of(cap.collect(), REQ) == {"acme": 1, "__unknown__": 1}
    finally:
        cap.shutdown()


def test_overflow_warning_names_the_variable(caplog: pytest.LogCaptureFixture) -> None:
    """Past max_tenants one warning says tenants overflowed and which variable raises the budget."""
    t = Tenants("user", max_tenants=1)
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        assert [t.label(t.of({"user": u})) for u in ("a", "b", "c", "a")] == ["a", "__overflow__", "__overflow__", "a"]
    assert [r.getMessage() for r in caplog.records] == [
        "ryot-telemetry: more than 1 distinct tenants; further ones are recorded as '__overflow__' "
        "(raise RYOT_TELEMETRY_MAX_TENANTS if this is expected)"
    ]


def test_ogx_sources_read_the_authenticated_user_of_the_calls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """ogx:principal / ogx:tenant_id read get_authenticated_user() in the context the call runs in (ogx's auth
    middleware sets it per request); no user (ogx without auth) is __unknown__. The real server is in
    tests/e2e/test_llama_stack.py; here a stand-in module with ogx's function and User fields."""
    import contextvars
    import importlib.machinery
    import sys
    import types

    current: contextvars.ContextVar[Any] = contextvars.ContextVar("user", default=None)
    modules = {}
    for name in ("ogx", "ogx.core", "ogx.core.request_headers"):
        modules[name] = types.ModuleType(name)
        modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, modules[name])
    modules["ogx.core.request_headers"].get_authenticated_user = current.get  # type: ignore[attr-defined]

    @dataclasses.dataclass
    class User:
        principal: str
        tenant_id: str | None = None

    for source, expected in (("ogx:principal", {"alice": 1, "bob": 1}), ("ogx:tenant_id", {"acme": 2})):
        cap = capture(tenant=source)
        try:
            router = cap.instrument_router(ScriptedRouter(response=_response()))

            async def as_user(user: Any, router: Any = router) -> None:
                current.set(user)  # this task's context, as ogx's middleware sets it for the request
                await router.openai_chat_completion(ChatParams(model="m"))

            async def run() -> None:
                for user in (User("alice", "acme"), User("bob", "acme"), None):
                    await asyncio.create_task(as_user(user))

            asyncio.run(run())
            assert _tenants_of(cap.collect(), REQ) == {**expected, "__unknown__": 1}, source
        finally:
            cap.shutdown()


class Halt(BaseException):
    """A BaseException that is not an Exception, as a resolver's KeyboardInterrupt-like error would be."""


class Interrupt(KeyboardInterrupt):
    """A KeyboardInterrupt subclass, raised where telemetry reads the tenant."""


def _halt(params: Any) -> str:
    raise Halt("stop")


def _interrupt(params: Any) -> str:
    raise Interrupt()


class HaltingMetadata:
    """Params whose ``metadata`` attribute raises a BaseException subclass."""

    model = "m"
    stream = False

    @property
    def metadata(self) -> Any:
        raise Halt("attribute")


class HaltingStr(int):
    """A tenant value whose ``__str__`` raises a BaseException subclass."""

    def __str__(self) -> str:
        raise Halt("str")


class HaltingCall:
    """A callable object whose ``__call__`` raises KeyboardInterrupt-like."""

    def __call__(self, params: Any) -> str:
        raise Interrupt()


@pytest.mark.parametrize(
    ("source", "params", "warned"),
    [
        (_halt, {"model": "m"}, "Halt"),
        (_interrupt, {"model": "m"}, "Interrupt"),
        (HaltingCall(), {"model": "m"}, "Interrupt"),
        (lambda p: HaltingStr(7), {"model": "m"}, "Halt"),
        ("user", {"model": "m", "user": HaltingStr(7)}, "Halt"),  # compiled path, the value's __str__
        ("metadata.tenant", HaltingMetadata(), None),  # compiled path, a step's attribute: a missing tenant
        ("metadata.x-tenant", HaltingMetadata(), None),  # stepped path (not an identifier), the same
        ("x-user", {"model": "m", "x-user": HaltingStr(7)}, "Halt"),  # stepped path, the value's __str__
    ],
    ids=[
        "resolver",
        "resolver-keyboardinterrupt",
        "callable-object",
        "resolver-value-str",
        "path-value-str",
        "path-attribute",
        "stepped-path-attribute",
        "stepped-path-value-str",
    ],
)
def test_a_base_exception_while_resolving_counts_the_request_under_unknown(
    caplog: pytest.LogCaptureFixture, source: Any, params: Any, warned: str | None
) -> None:
    """A BaseException that is not an Exception, from the resolver, a path step's attribute or the value's
    __str__, leaves the call untouched and counts every request under __unknown__ (it was left uncounted)."""
    cap = capture(tenant=source)
    try:
        router = cap.instrument_router(ScriptedRouter(response=_response()))
        with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
            results = [_call(router, params) for _ in range(3)]
        assert all(r is router.response for r in results)
        cap.collect()
        assert cap.series(REQ) == [
            {"model": "m", "endpoint": "chat_completion", "status": "success", "tenant": "__unknown__"}
        ]
        assert _tenants_of(cap, REQ) == {"__unknown__": 3}
        assert cap.value(TOK, model="m", token_type="prompt", generation_mode="standard", tenant="__unknown__") == 300
        messages = [r.getMessage() for r in caplog.records if "tenant resolver" in r.getMessage()]
        if warned is None:
            assert messages == []
        else:
            assert len(messages) == 1 and f" raised {warned}; " in messages[0]
    finally:
        cap.shutdown()


def test_a_recorder_api_tenant_whose_str_raises_a_base_exception_is_unknown() -> None:
    """A tenant set through the Recorder API whose __str__ raises a BaseException subclass is labelled
    __unknown__ at the drain; the request is counted."""
    cap = capture(tenant="metadata.tenant")
    try:
        with cap.recorder.request(model="m", endpoint="chat_completion", mode="standard") as req:
            req.tenant = HaltingStr(3)
        assert _tenants_of(cap.collect(), REQ) == {"__unknown__": 1}
    finally:
        cap.shutdown()


async def _async_resolver(params: Any) -> str:
    return "acme"


async def _async_gen_resolver(params: Any) -> Any:
    yield "acme"


class AsyncCall:
    """A callable object whose ``__call__`` is a coroutine function."""

    async def __call__(self, params: Any) -> str:
        return "acme"

    def __repr__(self) -> str:
        return "AsyncCall()"


@pytest.mark.parametrize(
    ("resolver", "shown"),
    [
        (_async_resolver, f"{_async_resolver!r}"),
        (_async_gen_resolver, f"{_async_gen_resolver!r}"),
        (AsyncCall(), "AsyncCall()"),
        (functools.partial(_async_resolver), None),
    ],
    ids=["async-def", "async-generator", "async-call", "partial"],
)
def test_an_async_resolver_is_refused_at_configure_with_one_line(resolver: Any, shown: str | None) -> None:
    """An async def resolver (or an object whose __call__ is async, or a partial of one) is refused at start-up
    with one line naming the argument, instead of labelling every request __unknown__ with a "never awaited"
    warning each."""
    with pytest.raises(ConfigurationError) as info:
        capture(tenant=resolver)
    message = str(info.value)
    assert message == (
        f"tenant: {shown if shown is not None else repr(resolver)} is async; the tenant resolver must be a plain "
        "function returning the tenant (it runs on the request path, where nothing awaits it)"
    )
    assert "\n" not in message
    with pytest.raises(ConfigurationError, match=r"^tenant: .* is async; "):
        ryot_telemetry.configure(tenant=resolver, exporters="none")


def test_a_sync_resolver_returning_a_coroutine_is_unknown_without_a_never_awaited_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plain callable that hands back a coroutine counts under __unknown__; the coroutine is closed, so Python
    warns no "never awaited" per request; one log line says what happened."""
    cap = capture(tenant=lambda params: _async_resolver(params))
    try:
        router = cap.instrument_router(ScriptedRouter(response=_response()))
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
            warnings.simplefilter("always")
            for _ in range(3):
                _call(router, _params("acme"))
            gc.collect()
        assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
        assert _tenants_of(cap.collect(), REQ) == {"__unknown__": 3}
        messages = [r.getMessage() for r in caplog.records if "tenant resolver" in r.getMessage()]
        assert len(messages) == 1 and " raised TypeError; " in messages[0]
    finally:
        cap.shutdown()

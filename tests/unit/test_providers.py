"""``ryot_model_info``: the provider of each model holding a slot, from the routing table or a user callable."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from ryot_telemetry.router.instrumentor import RyotInstrumentor
from ryot_telemetry.settings import ConfigurationError, Settings
from ryot_telemetry.testing import Capture, capture
from support.fakes import ChatParams, Completion, ScriptedRouter

INFO = "ryot.model.info"
UNKNOWN = {"provider": "unknown", "provider_type": "unknown", "provider_model_id": "unknown"}


class Spec:
    def __init__(self, provider_type: Any) -> None:
        self.provider_type = provider_type


class Impl:
    """A provider implementation, with the spec ogx's resolver attaches to it."""

    def __init__(self, provider_type: Any) -> None:
        self.__provider_spec__ = Spec(provider_type)


class Registered:
    """A registered model object (ogx's ``ModelWithOwner``): ``provider_id`` and ``provider_resource_id``."""

    def __init__(self, provider_id: Any, provider_resource_id: Any) -> None:
        self.provider_id = provider_id
        self.provider_resource_id = provider_resource_id


class Registry:
    def __init__(self, models: dict[str, Registered]) -> None:
        self.cache = {("model", k): v for k, v in models.items()}


class Table:
    """The parts of ogx's ``ModelsRoutingTable`` that ryot reads: ``dist_registry.cache`` and
    ``impls_by_provider_id``."""

    def __init__(self, models: dict[str, Registered], impls: dict[str, Any]) -> None:
        self.dist_registry = Registry(models)
        self.impls_by_provider_id = impls


class OgxShapedRouter(ScriptedRouter):
    """A scripted router with an ogx-shaped ``routing_table``."""

    def __init__(self, table: Any, **kw: Any) -> None:
        super().__init__(response=Completion(), **kw)
        self.routing_table = table


def _table() -> Table:
    return Table(
        {"llama-8b": Registered("vllm", "meta-llama/Llama-3.1-8B"), "gpt": Registered("openai", "gpt-4o")},
        {"vllm": Impl("remote::vllm"), "openai": Impl("remote::openai")},
    )


def _call(router: Any, *models: str) -> None:
    async def run() -> None:
        for m in models:
            await router.openai_chat_completion(ChatParams(model=m))

    asyncio.run(run())


def _infos(cap: Capture) -> list[dict[str, Any]]:
    cap.collect()
    return cap.series(INFO)


@pytest.fixture
def fresh() -> Any:
    made: list[Capture] = []

    def make(**settings: Any) -> Capture:
        c = capture(**settings)
        made.append(c)
        return c

    yield make
    for c in made:
        c.shutdown()


def test_routing_table_names_the_provider_of_each_model_that_served(fresh: Any) -> None:
    """Two served models: one series each, with the registered provider id, its spec's type and the provider's
    model id; a model without requests has none."""
    cap = fresh()
    router = cap.instrument_router(OgxShapedRouter(_table()))
    assert _infos(cap) == []
    _call(router, "llama-8b", "gpt", "llama-8b")
    assert _infos(cap) == [
        {"model": "gpt", "provider": "openai", "provider_type": "remote::openai", "provider_model_id": "gpt-4o"},
        {
            "model": "llama-8b",
            "provider": "vllm",
            "provider_type": "remote::vllm",
            "provider_model_id": "meta-llama/Llama-3.1-8B",
        },
    ]
    assert (
        cap.value(INFO, model="gpt", provider="openai", provider_type="remote::openai", provider_model_id="gpt-4o") == 1
    )


def test_provider_slash_model_fallback_is_split_as_ogx_does(fresh: Any) -> None:
    """An unregistered ``vllm/some-model`` (ogx routes it to provider vllm) shows provider vllm, model some-model;
    a prefix that is no provider says nothing."""
    cap = fresh()
    router = cap.instrument_router(OgxShapedRouter(_table()))
    _call(router, "vllm/some-model", "nope/x")
    assert _infos(cap) == [
        {"model": "nope/x", **UNKNOWN},
        {
            "model": "vllm/some-model",
            "provider": "vllm",
            "provider_type": "remote::vllm",
            "provider_model_id": "some-model",
        },
    ]


class CountingResolver:
    def __init__(self, answer: Any = "openai", raises: BaseException | None = None) -> None:
        self.asked: list[str] = []
        self.answer = answer
        self.raises = raises

    def __call__(self, model: str) -> Any:
        self.asked.append(model)
        if self.raises is not None:
            raise self.raises
        return self.answer


def test_lookup_happens_once_per_model_not_per_request_or_collection(fresh: Any) -> None:
    """100 requests for 2 models and 5 collections: the callable is asked exactly once per model."""
    resolver = CountingResolver({"provider": "together", "provider_type": "remote::together"})
    cap = fresh(provider=resolver)
    router = cap.instrument_router(ScriptedRouter(response=Completion()))
    _call(router, *(["a", "b"] * 50))
    for _ in range(5):
        infos = _infos(cap)
    assert sorted(resolver.asked) == ["a", "b"]
    assert infos == [
        {"model": m, "provider": "together", "provider_type": "remote::together", "provider_model_id": "unknown"}
        for m in ("a", "b")
    ]


def test_user_mapping_with_default(fresh: Any) -> None:
    """A mapping answers per model, ``"*"`` for the others."""
    cap = fresh(provider={"gpt": {"provider": "openai", "provider_model_id": "gpt-4o"}, "*": "vllm"})
    router = cap.instrument_router(ScriptedRouter(response=Completion()))
    _call(router, "gpt", "other")
    assert _infos(cap) == [
        {"model": "gpt", "provider": "openai", "provider_type": "unknown", "provider_model_id": "gpt-4o"},
        {"model": "other", "provider": "vllm", "provider_type": "unknown", "provider_model_id": "unknown"},
    ]


def test_raising_resolver_shows_unknown_logs_once_and_gives_up_after_three_tries(
    fresh: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A callable raising KeyboardInterrupt: the call succeeds, the model shows unknown, one WARNING, and the
    callable is asked at 3 collections, not at every one."""
    resolver = CountingResolver(raises=KeyboardInterrupt("resolver"))
    cap = fresh(provider=resolver)
    router = cap.instrument_router(ScriptedRouter(response=Completion()))
    _call(router, "m")
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        for _ in range(6):
            assert _infos(cap) == [{"model": "m", **UNKNOWN}]
    assert resolver.asked == ["m", "m", "m"]
    assert [r.getMessage() for r in caplog.records] == ["ryot-telemetry: looking up the provider of a model failed"]


class Explodes:
    """Every attribute read raises a BaseException."""

    def __getattribute__(self, name: str) -> Any:
        raise SystemExit(f"read {name}")


class OddRegistry:
    def __init__(self, cache: Any = None, get_cached: Any = None) -> None:
        self.cache = cache
        if get_cached is not None:
            self.get_cached = get_cached


def _raise(*a: Any) -> Any:
    raise GeneratorExit("get_cached")


@pytest.mark.parametrize(
    "table",
    [
        pytest.param(Explodes(), id="table whose reads raise"),
        pytest.param(Table({"m": Explodes()}, {}), id="registered object whose reads raise"),  # type: ignore[dict-item]
        pytest.param(Table({"m": Registered(42, None)}, {}), id="provider id an int"),
        pytest.param(Table({"m": Registered(None, "x")}, {}), id="provider id None"),
        pytest.param(type("T", (), {"dist_registry": OddRegistry(cache=[1, 2, 3])})(), id="cache a list"),
        pytest.param(type("T", (), {"dist_registry": OddRegistry(get_cached=_raise)})(), id="get_cached raises"),
        pytest.param(type("T", (), {"dist_registry": OddRegistry(cache={("model", "m"): 7})})(), id="entry an int"),
        pytest.param(42, id="routing_table an int"),
    ],
)
def test_routing_tables_that_raise_or_answer_odd_objects_show_unknown(fresh: Any, table: Any) -> None:
    """Whatever the routing table does, the call succeeds and the model shows provider unknown."""
    cap = fresh()
    router = cap.instrument_router(OgxShapedRouter(table))
    _call(router, "m")
    assert router.calls and _infos(cap) == [{"model": "m", **UNKNOWN}]


class SneakyStr(str):
    """A str subclass whose own methods lie."""

    def __str__(self) -> str:
        raise KeyboardInterrupt("__str__")

    def __getitem__(self, item: Any) -> str:
        raise SystemExit("__getitem__")


@pytest.mark.parametrize(
    ("provider_id", "expected"),
    [
        pytest.param("p" * 10_000_000, "p" * 128, id="10 MB id clipped to 128"),
        pytest.param("bad\udcff\x00id", "bad\ufffd\ufffdid", id="lone surrogate and NUL replaced"),
        pytest.param(b"caf\xc3\xa9 \xff\xfe", "caf\u00e9 \ufffd\ufffd", id="bytes, not UTF-8, decoded with U+FFFD"),
        pytest.param(SneakyStr("sneaky"), "sneaky", id="str subclass whose methods raise"),
        pytest.param("", "unknown", id="empty"),
    ],
)
def test_hostile_provider_ids_are_clipped_and_made_encodable(fresh: Any, provider_id: Any, expected: str) -> None:
    """Huge, non-UTF-8 and lying provider ids become bounded, encodable label values (or unknown)."""
    cap = fresh(provider=lambda model: {"provider": provider_id, "provider_type": provider_id})
    router = cap.instrument_router(ScriptedRouter(response=Completion()))
    _call(router, "m")
    other = expected if expected != "unknown" else "unknown"
    assert _infos(cap) == [{"model": "m", "provider": expected, "provider_type": other, "provider_model_id": "unknown"}]


def test_ten_thousand_distinct_providers_stay_bounded_by_the_model_slots(fresh: Any) -> None:
    """10,000 models each with its own provider, max_models=50: 50 series, the callable asked 50 times, and the
    overflowed requests under __overflow__ get no series of their own."""
    resolver = CountingResolver()
    resolver.answer = None
    cap = fresh(max_models=50, provider=lambda m: resolver(m) or f"provider-{m}")
    router = cap.instrument_router(ScriptedRouter(response=Completion()))
    _call(router, *(f"m{i}" for i in range(10_000)))
    infos = _infos(cap)
    assert len(infos) == 50 and len(resolver.asked) == 50
    assert infos[0] == {
        "model": "m0",
        "provider": "provider-m0",
        "provider_type": "unknown",
        "provider_model_id": "unknown",
    }
    assert {i["model"] for i in infos} == {f"m{i}" for i in range(50)}


def test_a_router_seen_later_resolves_models_that_were_unknown(fresh: Any) -> None:
    """A model unknown to the first router's table is looked up again when another router is seen."""
    cap = fresh()
    empty = cap.instrument_router(OgxShapedRouter(Table({}, {})))
    _call(empty, "gpt")
    for _ in range(4):
        assert _infos(cap) == [{"model": "gpt", **UNKNOWN}]
    full = cap.instrument_router(OgxShapedRouter(_table()))
    _call(full, "gpt")
    assert _infos(cap) == [
        {"model": "gpt", "provider": "openai", "provider_type": "remote::openai", "provider_model_id": "gpt-4o"}
    ]


def test_instrumentor_tells_the_routing_table_of_the_instance_it_wrapped(fresh: Any) -> None:
    """Under RyotInstrumentor (class wrapping) the routing table of the instance the calls went through answers."""

    class InstrumentedRouter(OgxShapedRouter):
        pass

    cap = fresh()
    inst = RyotInstrumentor()
    inst.instrument(recorder=cap.recorder, router_classes=[InstrumentedRouter])
    router = InstrumentedRouter(_table())  # alive at the collection, as a server's router is (kept weakly)
    try:
        _call(router, "llama-8b")
    finally:
        inst.uninstrument()
    assert _infos(cap) == [
        {
            "model": "llama-8b",
            "provider": "vllm",
            "provider_type": "remote::vllm",
            "provider_model_id": "meta-llama/Llama-3.1-8B",
        }
    ]


async def _coroutine_resolver(model: str) -> str:
    return "x"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("openai", r"provider must be a callable given the model name, or a mapping; got 'openai'"),
        (42, r"provider must be a callable given the model name, or a mapping; got 42"),
        (_coroutine_resolver, r"provider: .* is a coroutine function; it is called at collection, give a plain one"),
        (lambda a, b: a, r"provider: .* must take one argument, the model name"),
        ({"m": 42}, r"provider: entry 'm': expected model -> provider id or .*got 42"),
        ({"m": {"provider": "x", "region": "eu"}}, r"provider: entry 'm': expected model -> provider id or"),
    ],
)
def test_bad_provider_setting_fails_at_start_up_naming_it(value: Any, message: str) -> None:
    """A provider that is not a one-argument callable or a mapping of valid answers is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match=message):
        Settings.load(provider=value)


def _snapshot(models: list[str]) -> Any:
    """One worker's cumulative OTLP snapshot after one request per model (provider from a mapping)."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    cap = capture(provider={"a": "openai", "*": "vllm"})
    try:
        router = cap.instrument_router(ScriptedRouter(response=Completion()))
        _call(router, *models)
        data = cap.reader.get_metrics_data()
    finally:
        cap.shutdown()
    req = ExportMetricsServiceRequest()
    req.ParseFromString(encode_metrics(data).SerializeToString())
    return req


def test_workers_model_info_merges_to_the_union_at_one() -> None:
    """Multi-process mode: two live workers' ryot_model_info merge to the union of their models, each 1 (not 2)."""
    from opentelemetry.sdk.resources import Resource

    from ryot_telemetry.multiproc.directory import Merged

    merged = Merged()
    merged.add(_snapshot(["a", "b"]), live=True)
    merged.add(_snapshot(["a", "c"]), live=True)
    metrics = {m.name: m for m in merged.metrics_data(Resource({})).resource_metrics[0].scope_metrics[0].metrics}
    points = {(p.attributes["model"], p.attributes["provider"]): p.value for p in metrics[INFO].data.data_points}
    assert points == {("a", "openai"): 1, ("b", "vllm"): 1, ("c", "vllm"): 1}

"""``RyotInstrumentor`` on plain router classes, in process: wrapping, unwrapping, counting once, configuration."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ryot_telemetry import ConfigurationError, views
from ryot_telemetry.router.instrumentor import ROUTER_MODULES, RyotInstrumentor
from ryot_telemetry.testing import Capture, capture
from support.fakes import ChatParams, Completion, CompletionParams, ScriptedRouter, content_chunk, usage, usage_chunk

REQ = "ryot.inference.requests"


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class PlainRouter(ScriptedRouter):
    """A router class of our own, wrapped at class level (the methods are its base's)."""


class OwnMethodsRouter:
    """Defines both methods itself, so unwrapping restores the very same functions."""

    async def openai_chat_completion(self, params: Any) -> dict[str, Any]:
        return {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}

    async def openai_completion(self, params: Any) -> dict[str, Any]:
        return {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1}}


@pytest.fixture
def instrumented() -> Iterator[tuple[RyotInstrumentor, Capture]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=views())
    inst = RyotInstrumentor()
    inst.instrument(meter_provider=provider, router_classes=[PlainRouter, OwnMethodsRouter])
    try:
        yield inst, Capture(provider, reader, inst.recorder)
    finally:
        inst.uninstrument()
        provider.shutdown()


def test_dependencies_are_empty_so_either_package_alone_loads_it() -> None:
    """instrumentation_dependencies() is empty: requiring both ogx and llama-stack would skip a lone one."""
    assert tuple(RyotInstrumentor().instrumentation_dependencies()) == ()


async def test_class_wrap_records_every_instance_into_the_given_meter_provider(
    instrumented: tuple[RyotInstrumentor, Capture],
) -> None:
    """Two instances of a wrapped class: 2 chat + 1 completion requests, usage tokens, exact per-series counts."""
    inst, cap = instrumented
    a, b = OwnMethodsRouter(), OwnMethodsRouter()
    await a.openai_chat_completion(ChatParams(model="m"))
    await b.openai_chat_completion(ChatParams(model="m"))
    await b.openai_completion(CompletionParams(model="m"))
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 2
    assert cap.value(REQ, model="m", endpoint="completion", status="success") == 1
    assert cap.value("ryot.tokens.generated", model="m", token_type="prompt", generation_mode="standard") == 10
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="standard") == 5
    expected = sorted(f"{c.__module__}.{c.__qualname__}" for c in (PlainRouter, OwnMethodsRouter))
    assert inst.wrapped_classes == sorted(
        [*expected, *(f"{m}.InferenceRouter" for m in ROUTER_MODULES if _importable(m))]
    )


async def test_class_wrap_stream_is_async_iterator_and_hides_usage_chunk(
    instrumented: tuple[RyotInstrumentor, Capture],
) -> None:
    """A wrapped inherited method streams as an AsyncIterator, hides the usage chunk, records 40/3 tokens."""
    _, cap = instrumented
    chunks = [content_chunk("a"), content_chunk("b"), content_chunk("c"), usage_chunk(usage(40, 3))]
    router = PlainRouter(chunks=chunks)
    params = ChatParams(model="m", stream=True)
    stream = await router.openai_chat_completion(params)
    assert isinstance(stream, AsyncIterator)
    got = [c async for c in stream]
    assert got == chunks[:3] and all(x is y for x, y in zip(got, chunks))
    assert params.stream_options is None  # the caller's params were copied, not mutated
    assert router.calls[0].stream_options == {"include_usage": True}
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value("ryot.tokens.generated", model="m", token_type="prompt", generation_mode="streaming") == 40
    assert cap.value("ryot.tokens.generated", model="m", token_type="completion", generation_mode="streaming") == 3
    assert cap.histogram("ryot.ttft.latency", model="m", prompt_size="tiny").count == 1


async def test_uninstrument_restores_the_classes_and_stops_recording() -> None:
    """After uninstrument(): own methods are the original functions, inherited ones are gone, nothing records."""
    own = {n: OwnMethodsRouter.__dict__[n] for n in ("openai_chat_completion", "openai_completion")}
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=views())
    inst = RyotInstrumentor()
    inst.instrument(meter_provider=provider, router_classes=[PlainRouter, OwnMethodsRouter])
    assert OwnMethodsRouter.__dict__["openai_chat_completion"] is not own["openai_chat_completion"]
    assert "openai_completion" in PlainRouter.__dict__
    inst.uninstrument()
    assert {n: OwnMethodsRouter.__dict__[n] for n in own} == own
    assert "openai_chat_completion" not in PlainRouter.__dict__ and "openai_completion" not in PlainRouter.__dict__
    await OwnMethodsRouter().openai_chat_completion(ChatParams(model="m"))
    cap = Capture(provider, reader, inst.recorder).collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") is None
    provider.shutdown()


async def test_instance_and_class_instrumentation_count_a_request_once(
    instrumented: tuple[RyotInstrumentor, Capture],
) -> None:
    """instrument_router() on an instance of a class-wrapped router: each call still counts exactly once."""
    _, cap = instrumented
    router = cap.instrument_router(OwnMethodsRouter())
    await router.openai_chat_completion(ChatParams(model="m"))
    await OwnMethodsRouter().openai_chat_completion(ChatParams(model="m"))
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 2
    assert cap.value("ryot.tokens.generated", model="m", token_type="prompt", generation_mode="standard") == 6


def test_bad_router_class_name_fails_with_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """RYOT_TELEMETRY_ROUTER_CLASSES naming a missing class raises ConfigurationError and wraps nothing."""
    monkeypatch.setenv("RYOT_TELEMETRY_ROUTER_CLASSES", "toy_router_nowhere:Router")
    inst = RyotInstrumentor()
    with pytest.raises(
        ConfigurationError, match=r"RYOT_TELEMETRY_ROUTER_CLASSES: cannot load 'toy_router_nowhere:Router'"
    ):
        inst.instrument(meter_provider=MeterProvider())
    assert not inst.is_instrumented_by_opentelemetry
    assert "openai_completion" not in PlainRouter.__dict__


def test_configurator_reads_sdk_otlp_exporter_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_METRICS_EXPORTER=prometheus,otlp_proto_http means prometheus + otlp over http/protobuf (one parser)."""
    from ryot_telemetry.settings import Settings

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus, otlp_proto_http")
    s = Settings.load()
    assert (s.exporters, s.otlp_protocol) == (("prometheus", "otlp"), "http/protobuf")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp_proto_grpc")
    s = Settings.load()
    assert (s.exporters, s.otlp_protocol) == (("otlp",), "grpc")
    monkeypatch.delenv("OTEL_METRICS_EXPORTER")
    s = Settings.load()
    assert (s.exporters, s.otlp_protocol) == (("prometheus",), "grpc")


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


# --- every router shape, unchanged (SPEC), on classes ----------------------------------------------------------


class _SyncRouter:
    def openai_chat_completion(self, params: Any) -> Any:
        return {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 2}}


class _AsyncGenRouter:
    async def openai_chat_completion(self, params: Any) -> AsyncIterator[Any]:
        yield content_chunk("a")
        if (params.stream_options or {}).get("include_usage"):
            yield usage_chunk(usage(9, 1))


class _AsyncGenBase:
    async def openai_chat_completion(self, params: Any) -> AsyncIterator[Any]:
        yield content_chunk("a")
        yield content_chunk("b")


class _AsyncGenSub(_AsyncGenBase):
    async def openai_chat_completion(self, params: Any) -> AsyncIterator[Any]:
        async for c in super().openai_chat_completion(params):
            yield c


async def test_class_wrap_keeps_sync_and_async_generator_methods_as_they_are() -> None:
    """The instrumentor keeps the shape too: a sync method stays sync (same object back), an async generator method
    stays one (``async for`` over the call); a subclass iterating its instrumented base counts once."""
    c = capture()
    inst = RyotInstrumentor()
    inst.instrument(recorder=c.recorder, router_classes=[_SyncRouter, _AsyncGenRouter, _AsyncGenBase, _AsyncGenSub])
    try:
        assert not inspect.iscoroutinefunction(_SyncRouter().openai_chat_completion)
        assert _SyncRouter().openai_chat_completion(ChatParams(model="s"))["usage"]["prompt_tokens"] == 8
        assert inspect.isasyncgenfunction(_AsyncGenRouter().openai_chat_completion)
        gen = _AsyncGenRouter().openai_chat_completion(ChatParams(model="g", stream=True))
        assert inspect.isasyncgen(gen)
        assert [ch.choices[0].delta.content for ch in [x async for x in gen]] == ["a"]
        sub = [x async for x in _AsyncGenSub().openai_chat_completion(ChatParams(model="n", stream=True))]
        assert [ch.choices[0].delta.content for ch in sub] == ["a", "b"]
        c.collect()
        assert c.value(REQ, model="s", endpoint="chat_completion", status="success") == 1
        assert c.value("ryot.tokens.generated", model="s", token_type="prompt", generation_mode="standard") == 8
        assert c.value(REQ, model="g", endpoint="chat_completion", status="success") == 1
        assert c.value("ryot.tokens.generated", model="g", token_type="prompt", generation_mode="streaming") == 9
        assert c.value(REQ, model="n", endpoint="chat_completion", status="success") == 1
        assert set(c.recorder.active().values()) == {0}
    finally:
        inst.uninstrument()
        c.shutdown()


_STOP = StopIteration("the router's own")


class _StopBase:
    def openai_chat_completion(self, params: Any) -> Any:
        raise _STOP


class _StopSub(_StopBase):
    pass


def test_nested_sync_wrappers_pass_a_stop_iteration_through_unchanged() -> None:
    """Base and subclass both wrapped, a sync method raising StopIteration: the inner wrapper passes the call through
    (counted once, by the outer one) and the caller gets that very StopIteration, not a coroutine's RuntimeError."""
    c = capture()
    inst = RyotInstrumentor()
    inst.instrument(recorder=c.recorder, router_classes=[_StopBase, _StopSub])
    try:
        with pytest.raises(StopIteration) as info:
            _StopSub().openai_chat_completion(ChatParams(model="m"))
        assert info.value is _STOP and _STOP.__context__ is None
        c.collect()
        assert c.value(REQ, model="m", endpoint="chat_completion", status="error", error_type="inference_error") == 1
    finally:
        inst.uninstrument()
        c.shutdown()


# --- module paths an earlier README or docs page documented --------------------------------------------------------

MOVED = {
    "ryot_telemetry.instrumentor": ("ryot_telemetry.router.instrumentor", "RyotInstrumentor"),
    "ryot_telemetry.dashboard": ("ryot_telemetry.artifacts.dashboard", "build_dashboard"),
    "ryot_telemetry.gpu": ("ryot_telemetry.sources.gpu", "NvmlBackend"),
    "ryot_telemetry.engine": ("ryot_telemetry.sources.engine", "EngineMetrics"),
    "ryot_telemetry.simulate": ("ryot_telemetry.demo.simulate", "SimulatedRouter"),
    "ryot_telemetry.router.distro": ("ryot_telemetry.distro", "RyotDistro"),
}


def _forget(monkeypatch: pytest.MonkeyPatch, old: str) -> None:
    """Make ``old`` unimported again, so the test sees what a fresh process sees."""
    import sys

    parent, _, child = old.rpartition(".")
    monkeypatch.delitem(sys.modules, old, raising=False)
    monkeypatch.delattr(sys.modules[parent], child, raising=False)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_still_imports_with_a_deprecation_warning(monkeypatch: pytest.MonkeyPatch, old: str) -> None:
    """``from <old path> import <name>`` gives the very object of the new module, with one DeprecationWarning
    naming the new path; the module keeps its own name and spec."""
    import importlib
    import warnings

    new, name = MOVED[old]
    module = importlib.import_module(new)
    _forget(monkeypatch, old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(f"from {old} import {name} as found", namespace := {})  # the import statement itself
    assert namespace["found"] is getattr(module, name)
    assert [(w.category, str(w.message)) for w in caught] == [
        (DeprecationWarning, f"{old} is deprecated and is removed in the next minor release; use {new}")
    ]
    assert caught[0].filename == "<string>"  # the importing line, not the import machinery
    assert importlib.import_module(old) is module and module.__name__ == new and module.__spec__.name == new


def test_the_readme_import_of_before_the_move_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """``from ryot_telemetry.instrumentor import RyotInstrumentor`` (the README before House v2) instruments a
    router class and records into a capture, as the new path does."""
    import warnings

    _forget(monkeypatch, "ryot_telemetry.instrumentor")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ryot_telemetry.instrumentor import RyotInstrumentor as Old
    assert Old is RyotInstrumentor
    cap = capture()
    inst = Old()
    try:
        inst.instrument(recorder=cap.recorder, router_classes=[PlainRouter])
        router = PlainRouter(response=Completion(model="m", choices=[], usage=usage(3, 2)))
        import asyncio

        asyncio.run(router.openai_chat_completion(ChatParams(model="m")))
        assert cap.collect().value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    finally:
        inst.uninstrument()
        cap.shutdown()


def test_an_unknown_module_under_the_package_is_still_not_found() -> None:
    """The finder for moved paths answers only for them: any other missing module is ModuleNotFoundError."""
    import importlib

    with pytest.raises(ModuleNotFoundError, match=r"^No module named 'ryot_telemetry\.no_such_module'$"):
        importlib.import_module("ryot_telemetry.no_such_module")


def test_python_dash_m_of_an_old_module_path_runs_the_new_module(tmp_path: Any) -> None:
    """``python -m ryot_telemetry.dashboard FILE`` (documented before the move) writes the same dashboard as the
    new path, and says on stderr, by default filters, which path to use."""
    import subprocess
    import sys

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    ran = [
        subprocess.run(
            [sys.executable, "-m", module, str(out)], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        for module, out in (("ryot_telemetry.dashboard", old), ("ryot_telemetry.artifacts.dashboard", new))
    ]
    assert [r.returncode for r in ran] == [0, 0], [r.stderr for r in ran]
    assert old.read_text() == new.read_text() and len(new.read_text()) > 1000
    assert (
        ran[0].stderr.count(
            "DeprecationWarning: ryot_telemetry.dashboard is deprecated and is removed in the next minor release; "
            "use ryot_telemetry.artifacts.dashboard"
        )
        == 1
    )
    assert "DeprecationWarning" not in ran[1].stderr


def test_loaded_by_opentelemetry_instrument_a_configuration_error_is_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With skip_dep_check (how opentelemetry-instrument's loader calls every instrumentor) a ConfigurationError
    is logged once as one line and not raised; nothing is wrapped. Called from code, it still raises."""
    import logging

    from ryot_telemetry import _state

    monkeypatch.setattr(_state, "_once", set())
    monkeypatch.setenv("RYOT_TELEMETRY_MAX_MODELS", "abc")
    with caplog.at_level(logging.DEBUG, logger="ryot_telemetry"):
        for _ in range(2):
            inst = RyotInstrumentor()
            assert inst.instrument(skip_dep_check=True, router_classes=[PlainRouter]) is None
            assert "openai_completion" not in PlainRouter.__dict__ and not inst.is_instrumented_by_opentelemetry
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("ERROR", "ryot-telemetry: metrics not configured: RYOT_TELEMETRY_MAX_MODELS='abc': expected an integer", None)
    ]
    with pytest.raises(ConfigurationError, match=r"^RYOT_TELEMETRY_MAX_MODELS='abc': expected an integer$"):
        RyotInstrumentor().instrument(router_classes=[PlainRouter])

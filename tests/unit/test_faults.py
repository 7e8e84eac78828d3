"""Faults inside telemetry (instruments, queue, exporter, NVML) never change what a caller gets from the router."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import ryot_telemetry
from ryot_telemetry.testing import Capture
from support.fakes import ChatParams, Completion, CompletionParams, ScriptedRouter, content_chunk, usage, usage_chunk
from support.ports import free_port

REQ = "ryot.inference.requests"
INSTRUMENTS = ("requests", "errors", "tokens", "cost", "latency", "ttft", "tpot", "batch", "tps", "cache_eff")


class Boom(Exception):
    """A failure inside telemetry."""


class Raising:
    """Stands in for an OTel instrument whose every measurement raises."""

    def add(self, *args: Any, **kwargs: Any) -> None:
        raise Boom("add")

    def record(self, *args: Any, **kwargs: Any) -> None:
        raise Boom("record")


async def _traffic(instrument: Any) -> int:
    """Five calls of every shape through ``instrument(router)``; asserts each returns/raises the provider's own
    objects, and returns how many calls were made."""
    resp = Completion(usage=usage(40, 10, cached=20))
    r = instrument(ScriptedRouter(response=resp))
    assert await r.openai_chat_completion(ChatParams(model="m")) is resp
    assert await r.openai_completion(CompletionParams(model="m", prompt=["a", "b"])) is resp

    exc = RuntimeError("engine error")
    r = instrument(ScriptedRouter(raises=exc))
    with pytest.raises(RuntimeError) as info:
        await r.openai_chat_completion(ChatParams(model="m"))
    assert info.value is exc

    chunks = [content_chunk(f"t{i}") for i in range(3)] + [usage_chunk(usage(40, 3))]
    r = instrument(ScriptedRouter(chunks=chunks))
    got = [c async for c in await r.openai_chat_completion(ChatParams(model="m", stream=True))]
    assert len(got) == 3 and all(a is b for a, b in zip(got, chunks))

    mid = ConnectionResetError("engine crashed")
    r = instrument(ScriptedRouter(chunks=chunks, raises=mid, raise_after=2))
    got = []
    with pytest.raises(ConnectionResetError) as info:
        async for c in await r.openai_chat_completion(ChatParams(model="m", stream=True)):
            got.append(c)
    assert info.value is mid
    assert len(got) == 2 and all(a is b for a, b in zip(got, chunks))
    return 5


def _requests_total(points: list[Any]) -> int:
    return sum(p.value for p in points)


async def test_instruments_raising_on_every_measurement_leave_calls_untouched(
    cap: Capture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every add/record raises: callers get the provider's objects, collection still works, failures logged."""
    for name in INSTRUMENTS:
        monkeypatch.setattr(cap.recorder.measure, name, Raising())
    caplog.set_level(logging.DEBUG, logger="ryot_telemetry")
    await _traffic(cap.instrument_router)
    cap.collect()
    assert cap.points(REQ) == []
    assert {p.value for p in cap.points("ryot.active_inference_requests")} == {0}
    assert "ryot-telemetry: failed to record a request" in caplog.text


async def test_queue_fault_when_a_request_ends_leaves_calls_untouched(
    cap: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handing the finished request to the queue raises: every call still returns/raises the provider's own."""

    def submit(req: Any) -> None:
        raise Boom("queue")

    monkeypatch.setattr(cap.recorder, "submit", submit)
    await _traffic(cap.instrument_router)
    cap.collect()
    assert cap.points(REQ) == []


async def test_inline_drain_fault_leaves_calls_untouched(cap: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a one-request queue every finish drains inline; a drain that raises changes nothing for callers."""

    def drain() -> int:
        raise Boom("drain")

    monkeypatch.setattr(cap.recorder, "max_pending", 1)
    monkeypatch.setattr(cap.recorder, "drain", drain)
    assert await _traffic(cap.instrument_router) == 5


async def test_start_fault_calls_through_unrecorded(cap: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a request raises: the call goes straight through and nothing is recorded for it."""

    def start(*args: Any, **kwargs: Any) -> None:
        raise Boom("start")

    monkeypatch.setattr(cap.recorder, "start", start)
    await _traffic(cap.instrument_router)
    cap.collect()
    assert cap.points(REQ) == []
    assert cap.points("ryot.active_inference_requests") == []


@pytest.fixture
def in_memory() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for tel in made:
        tel.shutdown()


def _export_refused(tel: Any) -> bool:
    """An OTLP export has been refused: ryot's own verdict on the attempt (``export.outcome``), whatever the
    installed exporter logs (its messages differ between releases, and some log nothing)."""
    from ryot_telemetry.export.outcome import Outcome

    return any(getattr(getattr(r, "otlp", None), "last", None) is Outcome.REFUSED for r in tel.readers)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_otlp_endpoint_down_changes_nothing_for_callers_or_other_readers(
    protocol: str, monkeypatch: pytest.MonkeyPatch, in_memory: list[Any]
) -> None:
    """OTLP to a closed loopback port, exporting every 50 ms: calls untouched, the in-memory reader exact."""
    # Each export (and the final one at shutdown) gives up after 0.2 s: connection refused is immediate, the
    # rest of a timeout is only retry back-off.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.2")
    reader = InMemoryMetricReader()
    tel = ryot_telemetry.configure(
        exporters="otlp",
        otlp_endpoint=f"http://127.0.0.1:{free_port()}",
        otlp_protocol=protocol,
        export_interval_ms=50,
        readers=[reader],
        gpu=False,
    )
    in_memory.append(tel)
    calls = await _traffic(tel.instrument_router)
    for _ in range(100):  # until an export has been refused
        if _export_refused(tel):
            break
        await asyncio.sleep(0.05)
    assert _export_refused(tel)
    calls += await _traffic(tel.instrument_router)
    data = reader.get_metrics_data()
    points = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == REQ
        for p in m.data.data_points
    ]
    assert _requests_total(points) == calls == 10


class NvmlError(Exception):
    """Like pynvml.NVMLError: carries an NVML return code as ``.value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class DeadNvml:
    """nvmlInit itself fails, as with a driver/library mismatch."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any) -> Any:
            raise NvmlError(999)

        return fail


class FlakyNvml:
    """One device is found, then every query about it raises an unknown NVML error."""

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return object()

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any) -> Any:
            raise NvmlError(999)

        return fail


@pytest.mark.parametrize("backend", [DeadNvml(), FlakyNvml()], ids=["init-raises", "queries-raise"])
async def test_nvml_raising_changes_nothing_for_callers(backend: Any, in_memory: list[Any]) -> None:
    """NVML raising at init or on every query: calls untouched, request counts exact, no GPU values invented."""
    reader = InMemoryMetricReader()
    tel = ryot_telemetry.configure(exporters="none", readers=[reader], gpu=True, gpu_backend=backend)
    in_memory.append(tel)
    calls = await _traffic(tel.instrument_router)
    for _ in range(2):  # two collections: two NVML sweeps
        data = reader.get_metrics_data()
    by_name: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                by_name.setdefault(m.name, []).extend(m.data.data_points)
    assert _requests_total(by_name[REQ]) == calls == 5
    gpu_points = [p for name, pts in by_name.items() if name.startswith("ryot.gpu.") for p in pts]
    assert gpu_points == []

"""Multi-process mode in one process: the merge itself, GPU once per scrape, earlier runs, idle hand-off, settings.

The real-process tests (uvicorn workers, forks, SIGKILL, port take-over, OTLP, ogx) are in
tests/e2e/test_multiprocess.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.polling import until

MODEL = "llama-3.1-8b-instruct"


def _samples(text: str, name: str, **match: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``match``."""
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items()):
                total += s.value
    return total


def _series(text: str, name: str) -> list[dict[str, str]]:
    return [dict(s.labels) for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name]


def test_port_held_by_a_foreign_process_is_still_a_configuration_error() -> None:
    """A port held by a process that is not part of this server (here: a socket of the test itself) still fails
    configure() with one ConfigurationError."""
    from ryot_telemetry import ConfigurationError, configure

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigurationError, match="cannot serve /metrics"):
            configure(prometheus_host="127.0.0.1", prometheus_port=port, prometheus_registry="private", gpu=False)


@pytest.mark.parametrize(
    ("path", "message"),
    [("/nonexistent/ryot-mp", "no such directory"), ("/proc/self", "not writable")],
)
def test_missing_or_unwritable_directory_is_one_configuration_error(path: str, message: str) -> None:
    """A missing or unwritable directory fails configure() with one ConfigurationError naming the variable."""
    from ryot_telemetry import ConfigurationError, configure

    with pytest.raises(ConfigurationError, match=f"multiproc_dir=.*{message}"):
        configure(multiproc_dir=path, exporters="none", gpu=False)
    os.environ["RYOT_TELEMETRY_MULTIPROC_DIR"] = path
    try:
        with pytest.raises(ConfigurationError, match=f"RYOT_TELEMETRY_MULTIPROC_DIR=.*{message}"):
            configure(exporters="none", gpu=False)
    finally:
        del os.environ["RYOT_TELEMETRY_MULTIPROC_DIR"]


def _recorded(latencies: list[float], tokens: int) -> bytes:
    """One worker's cumulative OTLP snapshot after requests with the given latencies and completion tokens each."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    from ryot_telemetry.testing import capture

    cap = capture()
    rec = cap.recorder
    for latency in latencies:
        req = rec.start(model="m", endpoint="chat_completion", mode="streaming")
        req.start -= latency
        req.first_token = req.start + latency / 2
        req.prompt_tokens, req.completion_tokens = 10, tokens
        req.success(rec)
        req.end = req.start + latency
    data = cap.reader.get_metrics_data()
    cap.provider.shutdown()
    return encode_metrics(data).SerializeToString()


def test_histograms_counters_and_live_gauges_merge_exactly() -> None:
    """Two workers' snapshots: every latency bucket, the sum and count add up; counters add; a dead worker's
    counters and histograms stay while its in-flight and sliding-rate series do not."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.sdk.resources import Resource

    from ryot_telemetry.multiproc.directory import Merged

    a, b = ExportMetricsServiceRequest(), ExportMetricsServiceRequest()
    a.ParseFromString(_recorded([0.02, 0.3, 3.0], 5))
    b.ParseFromString(_recorded([0.02, 0.7], 7))
    merged = Merged()
    merged.add(a, live=True)
    merged.add(b, live=False)
    data = merged.metrics_data(Resource({}))
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    (lat,) = metrics["ryot.inference.latency"].data.data_points
    assert lat.explicit_bounds == [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
    assert lat.bucket_counts == [0, 2, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0]
    assert lat.count == 5
    assert lat.sum == pytest.approx(0.02 + 0.3 + 3.0 + 0.02 + 0.7)
    tokens = {p.attributes["token_type"]: p.value for p in metrics["ryot.tokens.generated"].data.data_points}
    assert tokens == {"prompt": 50, "completion": 3 * 5 + 2 * 7}
    (requests,) = metrics["ryot.inference.requests"].data.data_points
    assert requests.value == 5
    # Only the live worker's levels: its in-flight series (all 0) and its own sliding windows.
    inflight = metrics["ryot.active_inference_requests"].data.data_points
    assert inflight and all(p.value == 0 for p in inflight)
    rates = {p.attributes["time_window"] for p in metrics["ryot.sliding_tokens_per_second"].data.data_points}
    assert rates == {"1m", "5m", "15m"}


def test_the_live_sum_policy_is_the_catalogues() -> None:
    """The merge sums over live workers exactly the metrics the catalogue marks ``multiprocess=LIVE_SUM`` (the
    in-flight counter and the sliding token rate), and only levels carry that mark: a counter or histogram summed
    over live workers alone would lose what a dead worker handed over."""
    from ryot_telemetry.catalogue import CATALOGUE, LIVE_SUM, Instrument, MultiProcess
    from ryot_telemetry.multiproc.directory import LIVE_SUMMED

    assert {"ryot.active_inference_requests", "ryot.sliding_tokens_per_second"} == LIVE_SUMMED
    levels = {Instrument.GAUGE, Instrument.OBSERVABLE_GAUGE, Instrument.OBSERVABLE_UP_DOWN_COUNTER}
    assert {m.instrument for m in CATALOGUE if m.multiprocess is LIVE_SUM} <= levels
    assert {m.multiprocess for m in CATALOGUE} == set(MultiProcess)


def test_a_gauge_outside_the_live_sum_policy_comes_from_the_latest_live_writer() -> None:
    """Two live workers' ``ryot.queue.depth`` (by kind: not summed) merge to the newer value; their
    ``ryot.sliding_tokens_per_second`` (live-sum) to the sum."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from ryot_telemetry.multiproc.directory import Merged

    def snapshot(name: str, value: float, at: int) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        m = req.resource_metrics.add().scope_metrics.add().metrics.add()
        m.name = name
        p = m.gauge.data_points.add()
        p.as_double, p.time_unix_nano = value, at
        return req

    merged = Merged()
    for name in ("ryot.queue.depth", "ryot.sliding_tokens_per_second"):
        merged.add(snapshot(name, 3.0, 200), live=True)
        merged.add(snapshot(name, 5.0, 100), live=True)
    assert merged.gauge_value("ryot.queue.depth") == 3.0
    assert merged.gauge_value("ryot.sliding_tokens_per_second") == 8.0


def test_gpu_swept_once_per_scrape_and_never_by_the_hand_off(tmp_path: Path) -> None:
    """NVML is read by the process answering the scrape, once per scrape; the workers' 0.5 s hand-offs never
    sweep. The token-efficiency ratio is the merged 1-minute token rate over the device's memory percent."""
    import asyncio

    from prometheus_client import generate_latest

    from ryot_telemetry import configure
    from ryot_telemetry.demo.simulate import SimulatedRouter
    from support.nvml import two_gpus

    fake = two_gpus()
    tel = configure(
        multiproc_dir=tmp_path,
        prometheus_registry="private",
        start_prometheus_server=False,
        gpu_backend=fake,
        gpu_models={0: MODEL},
    )
    try:
        router = tel.instrument_router(SimulatedRouter(speed=0, error_rate=0, timeout_rate=0))
        asyncio.run(router.openai_chat_completion({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}))
        (own,) = tmp_path.glob("w-*.pb")
        assert until(lambda: _samples_of(own, "ryot.inference.requests") == 1, within=5)  # handed off
        assert tel.gpu.sweeps == 0
        text = generate_latest(tel.registry).decode()
        assert tel.gpu.sweeps == 1
        assert _samples(text, "ryot_gpu_memory_usage_bytes", device_id="0", memory_type="used") == 20 * 1024**3
        assert len(_series(text, "ryot_gpu_utilization_percent")) == 2
        rate = _samples(text, "ryot_sliding_tokens_per_second", model=MODEL, time_window="1m")
        assert rate > 0
        assert _samples(text, "ryot_token_efficiency_ratio", model=MODEL) == pytest.approx(rate / 25.0)
        generate_latest(tel.registry)
        assert tel.gpu.sweeps == 2
    finally:
        tel.shutdown()


def test_files_of_an_earlier_run_are_removed_not_counted(tmp_path: Path) -> None:
    """A worker file whose process and server (parent) are both gone is from an earlier run: the leader removes
    it and the new run starts from zero; an archive of a server that is gone goes too."""
    from prometheus_client import generate_latest

    from ryot_telemetry import configure

    dead = 4_000_000  # above any pid_max: never a live process
    (tmp_path / f"w-{dead}-1-{dead + 1}-1.pb").write_bytes(_recorded([0.1], 5))
    (tmp_path / f"archive-{dead + 1}-1.pb").write_bytes(_recorded([0.1, 0.2], 5))
    tel = configure(multiproc_dir=tmp_path, prometheus_registry="private", start_prometheus_server=False, gpu=False)
    try:
        assert _samples(generate_latest(tel.registry).decode(), "ryot_inference_requests_total") == 0

        def cleaned() -> bool:  # by the leader's housekeeping tick; the scrape above left its record (new series)
            rest = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("w-"))
            return rest == ["collected-prometheus", "leader.lock"] and len(list(tmp_path.glob("w-*.pb"))) == 1

        assert until(cleaned, within=5)
    finally:
        tel.shutdown()


def test_multiprocess_exposition_has_the_single_process_series(tmp_path: Path) -> None:
    """The same traffic exposed in single-process and in multi-process mode gives the same families and label
    sets (the merged data goes through the same OTel Prometheus translation)."""
    import asyncio

    from prometheus_client import generate_latest

    from ryot_telemetry import configure
    from ryot_telemetry.demo.simulate import SimulatedRouter

    def series(mp: Path | None) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        tel = configure(multiproc_dir=mp, prometheus_registry="private", start_prometheus_server=False, gpu=False)
        try:
            router = tel.instrument_router(SimulatedRouter(speed=0, error_rate=0.3, timeout_rate=0.1, seed=7))

            async def traffic() -> None:
                for i in range(40):
                    params = {"model": MODEL, "messages": [{"role": "user", "content": "x" * i}], "stream": i % 2 == 0}
                    with contextlib.suppress(Exception):
                        result = await router.openai_chat_completion(params)
                        if params["stream"]:
                            async for _ in result:
                                pass

            asyncio.run(traffic())

            def scrape() -> str:
                text = generate_latest(tel.registry).decode()
                return text if _samples(text, "ryot_inference_requests_total") == 40 else ""

            # in multi-process mode, until the worker's 0.5 s hand-off has brought all 40 into the merge
            text = until(scrape, within=5)
        finally:
            tel.shutdown()
        return {
            (s.name, tuple(sorted(s.labels.items())))
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name != "target_info"
        }

    single, multi = series(None), series(tmp_path)
    assert single == multi
    assert any(name == "ryot_inference_errors_total" for name, _ in multi)


def _recorded_tenants(users: list[str]) -> bytes:
    """One worker's cumulative OTLP snapshot after one request per entry of ``users`` (tenant="user", at most 2)."""
    import asyncio

    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    from ryot_telemetry.demo.simulate import SimulatedRouter
    from ryot_telemetry.testing import capture

    cap = capture(tenant="user", max_tenants=2, prices={"*": {"prompt": 0.001, "completion": 0.002}})
    router = cap.instrument_router(SimulatedRouter(speed=0, error_rate=0, timeout_rate=0))

    async def traffic() -> None:
        for user in users:
            params = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "user": user}
            await router.openai_chat_completion(params)

    asyncio.run(traffic())
    data = cap.reader.get_metrics_data()
    cap.provider.shutdown()
    return encode_metrics(data).SerializeToString()


def test_tenant_labels_survive_the_merge_exactly() -> None:
    """Two workers' tenant series merge by tenant: request counts add per tenant (each worker's own slots and
    __overflow__ included), tokens and cost keep the label, histograms stay without it."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.sdk.resources import Resource

    from ryot_telemetry.multiproc.directory import Merged

    a, b = ExportMetricsServiceRequest(), ExportMetricsServiceRequest()
    a.ParseFromString(_recorded_tenants(["acme", "acme", "globex", "initech"]))
    b.ParseFromString(_recorded_tenants(["globex", "acme", "hooli"]))
    merged = Merged()
    merged.add(a, live=True)
    merged.add(b, live=False)
    data = merged.metrics_data(Resource({}))
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    requests = {p.attributes["tenant"]: p.value for p in metrics["ryot.inference.requests"].data.data_points}
    assert requests == {"acme": 3, "globex": 2, "__overflow__": 2}
    for name in ("ryot.tokens.generated", "ryot.token.cost_estimate.usd"):
        tenants = {p.attributes["tenant"] for p in metrics[name].data.data_points}
        assert tenants == {"acme", "globex", "__overflow__"}, name
    (lat,) = metrics["ryot.inference.latency"].data.data_points
    assert "tenant" not in lat.attributes and lat.count == 7


def test_multiprocess_exposition_carries_the_tenant_label(tmp_path: Path) -> None:
    """configure(tenant=...) in multi-process mode: the merged scrape has the single-process tenant series with
    exact counts."""
    import asyncio

    from prometheus_client import generate_latest

    from ryot_telemetry import configure
    from ryot_telemetry.demo.simulate import SimulatedRouter

    users = ["acme", "globex", "acme", None, "initech"]

    def scrape(mp: Path | None) -> str:
        tel = configure(
            multiproc_dir=mp,
            prometheus_registry="private",
            start_prometheus_server=False,
            gpu=False,
            tenant="metadata.tenant",
            max_tenants=2,
        )
        try:
            router = tel.instrument_router(SimulatedRouter(speed=0, error_rate=0, timeout_rate=0))

            async def traffic() -> None:
                for user in users:
                    metadata = {"tenant": user}
                    params = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "metadata": metadata}
                    await router.openai_chat_completion(params)

            asyncio.run(traffic())

            def complete() -> str:
                text = generate_latest(tel.registry).decode()
                return text if _samples(text, "ryot_inference_requests_total") == len(users) else ""

            return until(complete, within=5)  # multi-process: until the 0.5 s hand-off brought all of them
        finally:
            tel.shutdown()

    single, multi = scrape(None), scrape(tmp_path)
    for text in (single, multi):
        counts = {
            t: _samples(text, "ryot_inference_requests_total", tenant=t)
            for t in ("acme", "globex", "__overflow__", "__unknown__")
        }
        assert counts == {"acme": 2, "globex": 1, "__overflow__": 1, "__unknown__": 1}
    assert {tuple(sorted(s)) for s in _series(multi, "ryot_inference_requests_total")} == {
        tuple(sorted(s)) for s in _series(single, "ryot_inference_requests_total")
    }
    assert all("tenant" not in s for s in _series(multi, "ryot_inference_latency_seconds_bucket"))


def test_idle_worker_hands_off_only_on_activity_or_heartbeat(tmp_path: Path) -> None:
    """An idle worker does not rewrite its file every tick; a finished request is handed off within a second."""
    import asyncio

    from ryot_telemetry import configure
    from ryot_telemetry.demo.simulate import SimulatedRouter

    tel = configure(multiproc_dir=tmp_path, exporters="none", gpu=False)
    try:
        (own,) = tmp_path.glob("w-*.pb")
        first = own.stat().st_mtime_ns
        time.sleep(1.2)
        assert own.stat().st_mtime_ns == first
        router = tel.instrument_router(SimulatedRouter(speed=0, error_rate=0, timeout_rate=0))
        asyncio.run(router.openai_chat_completion({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}))
        assert until(lambda: own.stat().st_mtime_ns > first, within=1.0)
        assert until(lambda: _samples_of(own, "ryot.inference.requests") == 1, within=0.1)
    finally:
        tel.shutdown()


def _samples_of(path: Path, name: str) -> float:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    req = ExportMetricsServiceRequest.FromString(path.read_bytes())
    return sum(
        p.as_int or p.as_double
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.sum.data_points
    )


def test_other_instrumentations_on_the_worker_provider_are_merged_and_handed_off_promptly(tmp_path: Path) -> None:
    """The FastAPI instrumentation's HTTP duration histogram, recorded on a worker's provider, is in the merged
    scrape within a second (a worker with meters besides ryot's hands off every tick, not only on ryot activity)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from prometheus_client import generate_latest

    from ryot_telemetry import configure

    tel = configure(multiproc_dir=tmp_path, prometheus_registry="private", start_prometheus_server=False, gpu=False)
    try:
        app = FastAPI()

        @app.get("/ping")
        def ping() -> dict[str, str]:
            return {}

        FastAPIInstrumentor.instrument_app(app, meter_provider=tel.meter_provider)
        client = TestClient(app)
        for _ in range(3):
            assert client.get("/ping").status_code == 200

        def counts() -> list[float]:
            text = generate_latest(tel.registry).decode()
            return [
                s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
                # old or stable HTTP conventions, whichever OTEL_SEMCONV_STABILITY_OPT_IN selected in this process
                if s.name in ("http_server_duration_milliseconds_count", "http_server_request_duration_seconds_count")
            ]

        until(lambda: counts() == [3], within=1.0)
        assert counts() == [3]
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        tel.shutdown()


# --- new series at zero first, across processes ---------------------------------------------------------------


def _late_requests(tel: object, n: int) -> None:
    rec = tel.recorder  # type: ignore[attr-defined]
    for _ in range(n):
        req = rec.start("late", "chat_completion", "standard")
        req.prompt_tokens, req.completion_tokens = 10, 5
        req.success(rec)


def _late(text: str) -> float | None:
    """ryot_inference_requests_total{model="late"}, None while the series is absent."""
    values = [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "ryot_inference_requests_total" and s.labels.get("model") == "late"
    ]
    return sum(values) if values else None


@contextlib.contextmanager
def _manual_worker(directory: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    """A worker whose hand-offs the test makes itself (``mp.tick()``), and a scrape of the merged state."""
    from prometheus_client import generate_latest

    from ryot_telemetry import configure

    tel = configure(
        multiproc_dir=directory, prometheus_registry="private", start_prometheus_server=False, gpu=False, **kwargs
    )
    mp = tel.multiproc
    mp._stop.set()
    assert mp._thread is not None
    mp._thread.join()
    try:
        yield tel, mp, lambda: _late(generate_latest(tel.registry).decode())
    finally:
        tel.shutdown()


def test_a_new_series_reaches_the_merged_scrape_at_zero_before_its_first_increment(tmp_path: Path) -> None:
    """Scraping began; a worker's first 3 requests of a model are handed off as 0 until a scrape has read that
    hand-off, then as 3; a known series is never held again."""
    with _manual_worker(tmp_path) as (tel, mp, scrape):
        assert scrape() is None
        _late_requests(tel, 3)
        mp.tick()  # hands off the zero, holds the 3
        mp.tick()  # no scrape has read the zero yet: still held
        assert _samples_of(Path(mp.path), "ryot.inference.requests") == 0
        assert scrape() == 0
        mp.tick()  # that scrape began after the zero's hand-off: the 3 go out (no new request needed)
        assert [scrape(), scrape()] == [3, 3]
        _late_requests(tel, 2)
        mp.tick()
        assert scrape() == 5


def test_a_new_series_waits_for_no_scrape_when_none_has_happened_or_scraping_stopped(tmp_path: Path) -> None:
    """No scrape yet: no earlier sample to lose, the first scrape shows the counts. A scrape that stopped (older
    than FIRST_WAIT_S, its interval unknown) is not waited for either."""
    from ryot_telemetry.multiproc.collections import note_collection

    with _manual_worker(tmp_path) as (tel, mp, _scrape):
        _late_requests(tel, 3)
        mp.tick()
        assert _scrape() == 3
    (tmp_path / "collected-prometheus").unlink()
    with _manual_worker(tmp_path) as (tel, mp, _scrape):
        note_collection(str(tmp_path), "prometheus", time.monotonic() - 121)
        _late_requests(tel, 4)
        mp.tick()
        assert _samples_of(Path(mp.path), "ryot.inference.requests") == 4


def test_a_new_series_waits_for_the_leaders_otlp_export_too(tmp_path: Path) -> None:
    """With scrapes and the leader's (slower) OTLP export, the increments follow once both have read the zero;
    the OTLP receiver sees 0, then 3."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class Exporter(MetricExporter):
        def __init__(self) -> None:
            super().__init__()
            self.values: list[float | None] = []

        def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):  # type: ignore[no-untyped-def]
            points = [
                p.value
                for rm in metrics_data.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
                if m.name == "ryot.inference.requests"
                for p in m.data.data_points
                if p.attributes.get("model") == "late"
            ]
            self.values.append(sum(points) if points else None)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs):  # type: ignore[no-untyped-def]
            pass

    from ryot_telemetry.export.outcome import Attempts, ObservedExporter

    with _manual_worker(
        tmp_path, exporters=["prometheus", "otlp"], otlp_endpoint="http://127.0.0.1:9", export_interval_ms=3_600_000
    ) as (tel, mp, scrape):
        exporter = Exporter()
        mp.otlp.otlp.sender = ObservedExporter(exporter, Attempts())
        assert mp.leader
        assert scrape() is None
        mp.otlp.collect()
        _late_requests(tel, 3)
        mp.tick()
        assert scrape() == 0
        mp.tick()
        assert scrape() == 0  # the export has not read the zero yet
        mp.otlp.collect()
        mp.tick()
        assert scrape() == 3
        mp.otlp.collect()
        assert exporter.values == [None, 0, 3]


def test_a_failing_otlp_export_holds_no_new_series_back_from_the_scrape(tmp_path: Path) -> None:
    """The leader's OTLP export succeeded once, then every export fails (refused): a new series' increments reach
    the scrape after the next OTLP collection read its zero, whatever became of that export (before, the gate waited
    for a successful export: at least 10 s, 3 export intervals, of stale scrapes)."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    from ryot_telemetry.export.outcome import Attempts, ObservedExporter, Outcome

    class Exporter(MetricExporter):
        result = MetricExportResult.SUCCESS

        def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):  # type: ignore[no-untyped-def]
            return self.result

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs):  # type: ignore[no-untyped-def]
            pass

    with _manual_worker(
        tmp_path, exporters=["prometheus", "otlp"], otlp_endpoint="http://127.0.0.1:9", export_interval_ms=3_600_000
    ) as (tel, mp, scrape):
        exporter, attempts = Exporter(), Attempts()
        attempts.observed = True
        mp.otlp.otlp.sender = ObservedExporter(exporter, attempts)
        assert scrape() is None
        mp.otlp.collect()
        assert mp.otlp.otlp.last is Outcome.SUCCESS
        exporter.result = MetricExportResult.FAILURE
        _late_requests(tel, 3)
        mp.tick()
        assert scrape() == 0
        mp.otlp.collect()
        assert mp.otlp.otlp.last is Outcome.REFUSED
        mp.tick()
        assert scrape() == 3


def test_held_increments_are_in_the_last_hand_off(tmp_path: Path) -> None:
    """Counters stay exact: what the gate still holds when a worker shuts down is in its final hand-off."""
    with _manual_worker(tmp_path) as (tel, mp, scrape):
        scrape()
        _late_requests(tel, 3)
        mp.tick()
        assert scrape() == 0
        path = Path(mp.path)
    assert _samples_of(path, "ryot.inference.requests") == 3


def test_collection_records_keep_the_latest_start_and_the_interval(tmp_path: Path) -> None:
    """A collection served after a later-starting one does not move the record back; the interval is the time
    between the two latest starts; a record from the future (written before a reboot) counts as none."""
    from ryot_telemetry.multiproc.collections import note_collection, read_collection

    d = str(tmp_path)
    assert read_collection(d, "prometheus") is None
    now = time.monotonic()
    note_collection(d, "prometheus", now - 30)
    assert read_collection(d, "prometheus") == (pytest.approx(now - 30), None)
    note_collection(d, "prometheus", now - 15)
    note_collection(d, "prometheus", now - 20)  # began earlier, served later: ignored
    assert read_collection(d, "prometheus") == (pytest.approx(now - 15), pytest.approx(15))
    assert read_collection(d, "otlp") is None  # kinds are apart
    (tmp_path / "collected-otlp").write_text(f"{int((now + 3600) * 1e9)} 0")
    assert read_collection(d, "otlp") is None


def _varied_data(step: int) -> Any:
    """MetricsData with every shape the hand-off encoder meets and some it hands back to ``encode_metrics``:
    histograms (with and without sum/min/max, with exemplars), int and float sums, monotonic or not, gauges, a
    metric without points, an exponential histogram, attribute values of every type, two scopes, schema URLs."""
    from opentelemetry.sdk.metrics._internal.exemplar import Exemplar
    from opentelemetry.sdk.metrics._internal.point import Buckets as ExpBuckets
    from opentelemetry.sdk.metrics._internal.point import (
        ExponentialHistogram,
        ExponentialHistogramDataPoint,
    )
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Gauge,
        Histogram,
        HistogramDataPoint,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
        Sum,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    cum = AggregationTemporality.CUMULATIVE
    t0, t1 = 1_700_000_000_000_000_000, 1_700_000_000_000_000_000 + step * 500_000_000
    a = {"model": "m", "endpoint": "chat_completion", "status": "success"}
    odd = {"flag": True, "n": 7, "x": 0.5, "seq": ("a", "b"), "ints": (1, 2)}
    hist = Histogram(
        [
            HistogramDataPoint(a, t0, t1, 3 + step, 1.5 + step, [1, 2 + step, 0], [0.1, 1.0], 0.05, 0.9),
            HistogramDataPoint(odd, t0, t1, 0, 0.0, [0, 0, 0], [0.1, 1.0], float("inf"), float("-inf")),
            HistogramDataPoint({"model": "other"}, t0, t1, 1, None, [1, 0], [5.0], None, None),  # type: ignore[arg-type]
        ],
        cum,
    )
    ex = [
        Exemplar({"user": "u"}, 0.07, t1, span_id=0xABC, trace_id=0x1234),
        Exemplar({}, 3, t1),
    ]
    with_exemplars = Histogram([HistogramDataPoint(a, t0, t1, 2, 0.3, [1, 1, 0], [0.1, 1.0], 0.07, 0.23, ex)], cum)
    sums = Sum([NumberDataPoint(a, t0, t1, 10 + step), NumberDataPoint(odd, t0, t1, 2.5 * step)], cum, True)
    updown = Sum([NumberDataPoint({"model": "m"}, t0, t1, -step)], cum, False)
    gauge = Gauge([NumberDataPoint({"time_window": "1m"}, 0, t1, 1.25 * step), NumberDataPoint({}, t0, t1, step)])
    listy = Gauge([NumberDataPoint({"l": ["x", "y"]}, 0, t1, step)])  # type: ignore[dict-item]
    expo = ExponentialHistogram(
        [ExponentialHistogramDataPoint(a, t0, t1, 2, 3.0, 0, 1, ExpBuckets(0, [1]), ExpBuckets(0, []), 0, 1.0, 2.0)],
        cum,
    )
    ours = [
        Metric("ryot.inference.latency", "Latency", "s", hist),
        Metric("ryot.inference.requests", "Requests", "{request}", sums),
        Metric("ryot.active", "", "", updown),
        Metric("ryot.rate", "Rate", "1", gauge),
        Metric("empty.sum", "", "", Sum([], cum, True)),
        Metric("empty.hist", "", "", Histogram([], cum)),
        Metric("with.exemplars", "d", "s", with_exemplars),
    ]
    theirs = [Metric("their.listy", "", "", listy), Metric("their.expo", "e", "s", expo)]
    resource = Resource({"service.name": "svc", "service.instance.id": "i-1"}, "https://example.com/schema/r")
    scopes = [
        ScopeMetrics(
            InstrumentationScope("ryot_telemetry", "0.1.0", "https://opentelemetry.io/schemas/1.37.0"),
            ours,
            "https://opentelemetry.io/schemas/1.37.0",
        ),
        ScopeMetrics(InstrumentationScope("theirs", None, None, {"lib": "x"}), theirs, ""),
    ]
    return MetricsData([ResourceMetrics(resource, scopes, "https://example.com/schema/r")])


def test_hand_off_encoding_is_encode_metrics_byte_for_byte() -> None:
    """The hand-off's cached encoder writes exactly the bytes ``encode_metrics`` writes, on first use and on later
    hand-offs whose values changed (templates reused), and decodes to the same merge."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.sdk.metrics.export import MetricsData

    from ryot_telemetry.multiproc.directory import Merged
    from ryot_telemetry.multiproc.handoff import HandoffEncoder

    encoder = HandoffEncoder()
    for step in (1, 2, 2, 5):
        data = _varied_data(step)
        expected = encode_metrics(data).SerializeToString()
        got = encoder.encode(data)
        assert got.SerializeToString() == expected
        assert got == ExportMetricsServiceRequest.FromString(expected)
        ours, theirs = Merged(), Merged()
        ours.add(got, live=True)
        theirs.add(ExportMetricsServiceRequest.FromString(expected), live=True)
        assert {n: f.points for n, f in ours.families.items()} == {n: f.points for n, f in theirs.families.items()}
    # The cache holds the last encoding's series only (hashable attribute sets): it never outgrows the process.
    assert len(encoder._points) == 8
    assert encoder.encode(MetricsData([])).SerializeToString() == b""
    assert encoder._points == {}


def test_hand_off_file_is_encode_metrics_of_the_workers_collection(tmp_path: Path) -> None:
    """A worker's hand-off file holds what ``encode_metrics`` makes of the same collection (timestamps aside)."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from ryot_telemetry.multiproc.handoff import HandoffEncoder

    with _manual_worker(tmp_path) as (tel, mp, _scrape):
        _late_requests(tel, 4)
        encoder = HandoffEncoder()
        for _ in range(2):
            data = mp.worker_reader.get_metrics_data()
            assert encoder.encode(data) == encode_metrics(data)
        mp.snapshot()
        written = ExportMetricsServiceRequest.FromString(Path(mp.path).read_bytes())
        assert [m.name for sm in written.resource_metrics[0].scope_metrics for m in sm.metrics] == [
            m.name for sm in encode_metrics(data).resource_metrics[0].scope_metrics for m in sm.metrics
        ]
    assert _samples_of(Path(mp.path), "ryot.inference.requests") == 4


def test_hand_off_collects_and_encodes_with_the_cyclic_collector_paused(tmp_path: Path) -> None:
    """The hand-off's short-lived objects are never promoted (a promotion triggers full collections of the heap,
    more often the more series): the collector is off while it collects and encodes, on again after."""
    import gc

    with _manual_worker(tmp_path) as (tel, mp, _scrape):
        _late_requests(tel, 2)
        seen: list[bool] = []
        collect = mp.worker_reader.get_metrics_data

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(gc.isenabled())
            return collect(*args, **kwargs)

        mp.worker_reader.get_metrics_data = spy
        assert gc.isenabled()
        mp.snapshot()
        assert seen == [False] and gc.isenabled()
    assert _samples_of(Path(mp.path), "ryot.inference.requests") == 2


def test_gc_paused_resumes_only_what_it_paused_when_the_last_pauser_ends() -> None:
    """Overlapping pauses (the hand-off thread and a scrape): the collector comes back when the last ends; one that
    was off before stays off."""
    import gc

    from ryot_telemetry._state import gc_paused

    assert gc.isenabled()
    first, second = gc_paused(), gc_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_worker_reservoirs_are_empty_only_where_the_filter_never_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the exemplar filter off, a worker's views give every series the reservoir that keeps nothing (the
    SDK's would stay empty but be asked at every hand-off); with a sampling filter its hand-off carries the
    exemplars, encoded as ``encode_metrics`` encodes them."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ryot_telemetry import configure
    from ryot_telemetry.recording.instruments import no_exemplars, views

    # The empty reservoir keeps nothing even when offered every measurement; the default one keeps them.
    kept = []
    for exemplars in (False, True):
        reader = InMemoryMetricReader()
        provider = MeterProvider([reader], views=views(exemplars=exemplars), exemplar_filter=AlwaysOnExemplarFilter())
        provider.get_meter("ryot_telemetry").create_histogram("ryot.inference.latency", unit="s").record(
            0.2, {"model": "m", "batch_size": "1", "generation_mode": "standard"}
        )
        data = reader.get_metrics_data()
        kept.append(len(data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0].exemplars))
        provider.shutdown()
    assert kept == [0, 1]

    (tmp_path / "off").mkdir()
    off = configure(multiproc_dir=tmp_path / "off", exporters="none", gpu=False)
    try:
        factories = {v._exemplar_reservoir_factory for v in off.multiproc.provider._sdk_config.views}
        assert factories == {no_exemplars}
    finally:
        off.shutdown()

    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_on")
    (tmp_path / "on").mkdir()
    with _manual_worker(tmp_path / "on") as (tel, mp, _scrape):
        assert no_exemplars not in {v._exemplar_reservoir_factory for v in mp.provider._sdk_config.views}
        _late_requests(tel, 2)
        data = mp.worker_reader.get_metrics_data()
        assert any(
            p.exemplars for sm in data.resource_metrics[0].scope_metrics for m in sm.metrics for p in m.data.data_points
        )
        assert mp._encoder.encode(data) == encode_metrics(data)
        _late_requests(tel, 2)  # a collection hands its exemplars over once: new ones for the hand-off
        mp.snapshot()
        written = ExportMetricsServiceRequest.FromString(Path(mp.path).read_bytes())
        latency = [
            p
            for sm in written.resource_metrics[0].scope_metrics
            for m in sm.metrics
            if m.name == "ryot.inference.latency"
            for p in m.histogram.data_points
        ]
        assert [len(p.exemplars) for p in latency] == [1]  # both requests' latencies share a bucket


@pytest.mark.parametrize(
    ("env", "argument", "expected"),
    [
        (None, None, "server"),
        ("deployment.environment=prod, service.instance.id = mine", None, "mine"),
        (None, {"service.instance.id": "arg"}, "arg"),
    ],
)
def test_service_instance_id_is_server_wide_unless_the_user_set_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, argument: dict[str, str] | None, expected: str
) -> None:
    """Workers share one server-wide service.instance.id; one set by the user (argument, or OTEL_RESOURCE_ATTRIBUTES
    as the SDK parses it, spaces included) is kept."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from ryot_telemetry import configure
    from ryot_telemetry.multiproc.setup import server_instance_id

    if env is None:
        monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    else:
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", env)
    tel = configure(multiproc_dir=tmp_path, exporters="none", gpu=False, resource_attributes=argument)
    try:
        tel.recorder.start(MODEL, "chat_completion", "standard").success()  # something to hand off
        (own,) = tmp_path.glob("w-*.pb")
        handed = until(lambda: ExportMetricsServiceRequest.FromString(own.read_bytes()).resource_metrics, within=2.0)
        attrs = {kv.key: kv.value.string_value for kv in handed[0].resource.attributes}
        assert attrs["service.instance.id"] == (server_instance_id(str(tmp_path)) if expected == "server" else expected)
    finally:
        tel.shutdown()


class _SnapshotWorker:
    """One worker's recorder and its successive cumulative snapshots (one provider: one start time per series)."""

    def __init__(self) -> None:
        from ryot_telemetry.testing import capture

        self.cap = capture()

    def record(self, latencies: list[float], tokens: int) -> Any:
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        rec = self.cap.recorder
        for latency in latencies:
            req = rec.start(model="m", endpoint="chat_completion", mode="standard")
            req.prompt_tokens, req.completion_tokens = 10, tokens
            req.success(rec)
            req.end = req.start + latency
        return encode_metrics(self.cap.reader.get_metrics_data())

    def close(self) -> None:
        self.cap.provider.shutdown()


def _delta_points(data: Any) -> dict[str, Any]:
    return {m.name: m.data for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


class DeltaExport:
    """The leader's delta step as ``export.otlp`` takes it: ``to_delta`` of the merged totals against the baseline
    in the directory (``FileStore``), the new baseline kept by ``commit``."""

    def __init__(self, directory: str) -> None:
        from opentelemetry.sdk.resources import Resource

        from ryot_telemetry.multiproc.delta import FileStore

        self.store = FileStore(directory, Resource({}))

    def convert(self, merged: Any, resource: Any, now: int) -> tuple[Any, Any]:
        from ryot_telemetry.export.delta import to_delta

        d = to_delta(merged.metrics_data(resource, now=now), self.store.load(), now)
        return d.data, d.baseline

    def commit(self, baseline: Any, resource: Any, now: int) -> None:
        self.store.save(baseline)


def test_delta_export_sums_back_to_the_merged_totals_across_leaders_restarts_and_a_failed_export(
    tmp_path: Path,
) -> None:
    """Multi-process delta: four exports of the merged state — a worker dies and a new one starts, a new leader
    (a fresh DeltaExport reading the directory) takes over, one read misses a worker's file, one export fails —
    and the delta points, never negative, sum back to the final merged cumulative totals exactly."""
    from opentelemetry.sdk.metrics.export import AggregationTemporality
    from opentelemetry.sdk.resources import Resource

    from ryot_telemetry.multiproc.directory import Merged

    def merge(*parts: tuple[Any, bool]) -> Merged:
        merged = Merged()
        for req, live in parts:
            merged.add(req, live=live)
        return merged

    a, b, c = _SnapshotWorker(), _SnapshotWorker(), _SnapshotWorker()
    try:
        a1, b1 = a.record([0.02, 0.3, 3.0], 5), b.record([0.02, 0.7], 7)
        a2, c1 = a.record([0.2, 0.2], 5), c.record([12.0], 3)  # b died after a1/b1; c is its replacement
        a3 = a.record([0.04], 5)
    finally:
        for w in (a, b, c):
            w.close()
    resource = Resource({})
    exports = [
        merge((a1, True), (b1, True)),
        merge((a2, True), (b1, False), (c1, True)),  # new leader from here on
        merge((b1, False), (c1, True)),  # a's file unreadable for this read: its series read lower
        merge((a3, True), (b1, False), (c1, True)),  # this export fails; the next covers it
        merge((a3, True), (b1, False), (c1, True)),
    ]
    leaders = [DeltaExport(str(tmp_path)), DeltaExport(str(tmp_path))]
    sent = []
    now = time.time_ns()
    for i, merged in enumerate(exports):
        now += 10**9
        delta = leaders[0 if i == 0 else 1]
        data, baseline = delta.convert(merged, resource, now)
        if i != 3:  # the receiver got it
            sent.append((now, _delta_points(data)))
            delta.commit(baseline, resource, now)
    requests = [d["ryot.inference.requests"] for _, d in sent]
    assert all(r.aggregation_temporality == AggregationTemporality.DELTA for r in requests)
    assert [sum(p.value for p in r.data_points) for r in requests] == [5, 3, 0, 1]
    assert all(p.value >= 0 for r in requests for p in r.data_points)
    final = _delta_points(exports[-1].metrics_data(resource))
    tokens = {}
    for _, d in sent:
        for p in d["ryot.tokens.generated"].data_points:
            tokens[p.attributes["token_type"]] = tokens.get(p.attributes["token_type"], 0) + p.value
    assert tokens == {p.attributes["token_type"]: p.value for p in final["ryot.tokens.generated"].data_points}
    assert tokens == {"prompt": 90, "completion": 3 * 5 + 2 * 7 + 2 * 5 + 3 + 5}
    (cumulative,) = final["ryot.inference.latency"].data_points
    hists = [p for _, d in sent for p in d["ryot.inference.latency"].data_points]
    assert all(min(p.bucket_counts) >= 0 and p.count >= 0 for p in hists)
    assert [sum(col) for col in zip(*(p.bucket_counts for p in hists))] == list(cumulative.bucket_counts)
    assert sum(p.count for p in hists) == cumulative.count == 9
    assert sum(p.sum for p in hists) == pytest.approx(cumulative.sum, rel=1e-12)
    # each delta point starts where the last successful export ended (the failed one does not move it)
    starts = [r.data_points[0].start_time_unix_nano for r in requests[1:]]
    assert starts == [sent[0][0], sent[1][0], sent[2][0]]
    # levels (the in-flight up-down counter) stay cumulative
    assert sent[-1][1]["ryot.active_inference_requests"].aggregation_temporality == AggregationTemporality.CUMULATIVE


def test_delta_export_does_not_subtract_an_earlier_runs_baseline(tmp_path: Path) -> None:
    """A baseline left by an earlier run of the server (its series started before it was written; this run's all
    started after): the new run's first delta is its whole total, not that total minus the old one."""
    from opentelemetry.sdk.resources import Resource

    from ryot_telemetry.multiproc.directory import Merged

    old = _SnapshotWorker()
    try:
        before = old.record([0.1] * 6, 2)
        delta = DeltaExport(str(tmp_path))
        merged = Merged()
        merged.add(before, live=True)
        _, baseline = delta.convert(merged, Resource({}), time.time_ns())
        delta.commit(baseline, Resource({}), time.time_ns())
        time.sleep(0.002)
        after = _SnapshotWorker()
        try:
            merged = Merged()
            merged.add(after.record([0.1] * 2, 2), live=True)
        finally:
            after.close()
        data, _ = DeltaExport(str(tmp_path)).convert(merged, Resource({}), time.time_ns())
    finally:
        old.close()
    (point,) = _delta_points(data)["ryot.inference.requests"].data_points
    assert point.value == 2

"""OTLP export to real receivers on loopback (gRPC MetricsService and OTLP/HTTP protobuf), both protocols."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from ryot_telemetry import catalogue, configure
from ryot_telemetry.demo.simulate import ProviderError
from support.fakes import ChatParams, Choice, Completion, Message, ScriptedRouter, usage
from support.otlp_receiver import GrpcReceiver, HttpReceiver, Receiver, _attrs
from support.polling import during, until
from support.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def _sum_points(metric: metrics_pb2.Metric) -> dict[tuple[tuple[str, str], ...], int]:
    return {tuple(sorted(_attrs(p.attributes).items())): p.as_int for p in metric.sum.data_points}


def _key(**attrs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(attrs.items()))


@pytest.fixture(params=[GrpcReceiver, HttpReceiver], ids=["grpc", "http"])
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = request.param(free_port())
    yield r
    if hasattr(r, "_server"):
        r.stop()


async def test_otlp_points_carry_spec_names_buckets_and_attributes(receiver: Receiver) -> None:
    """5 successes (usage 40/10) and 1 OOM arrive as ryot.* metrics with exact counts, bounds and attributes."""
    receiver.start()
    tel = configure(
        service_name="otlp-e2e",
        exporters="otlp",
        otlp_endpoint=receiver.endpoint,
        otlp_protocol=receiver.protocol,
        export_interval_ms=200,
        gpu=False,
    )
    try:
        ok = tel.instrument_router(
            ScriptedRouter(response=Completion(choices=[Choice(message=Message(content="x"))], usage=usage(40, 10)))
        )
        for _ in range(5):
            await ok.openai_chat_completion(ChatParams(model="m"))
        bad = tel.instrument_router(ScriptedRouter(raises=ProviderError("CUDA out of memory", 500)))
        with pytest.raises(ProviderError):
            await bad.openai_chat_completion(ChatParams(model="m"))
    finally:
        tel.shutdown()  # flushes the final cumulative export

    requests, resource = receiver.latest("ryot.inference.requests")
    assert resource["service.name"] == "otlp-e2e"
    assert requests.sum.is_monotonic and requests.sum.aggregation_temporality == CUMULATIVE
    assert requests.unit == "{request}"
    assert _sum_points(requests) == {
        _key(model="m", endpoint="chat_completion", status="success"): 5,
        _key(model="m", endpoint="chat_completion", status="error", error_type="oom"): 1,
    }
    errors, _ = receiver.latest("ryot.inference.errors")
    assert _sum_points(errors) == {_key(model="m", error_type="oom", severity="critical"): 1}
    tokens, _ = receiver.latest("ryot.tokens.generated")
    assert _sum_points(tokens) == {
        _key(model="m", token_type="prompt", generation_mode="standard"): 200,
        _key(model="m", token_type="completion", generation_mode="standard"): 50,
    }
    latency, _ = receiver.latest("ryot.inference.latency")
    assert latency.unit == "s" and latency.histogram.aggregation_temporality == CUMULATIVE
    (point,) = latency.histogram.data_points
    assert _attrs(point.attributes) == {"model": "m", "batch_size": "1", "generation_mode": "standard"}
    assert tuple(point.explicit_bounds) == catalogue.get("ryot.inference.latency").buckets
    assert point.count == 6 and sum(point.bucket_counts) == 6
    assert len(point.bucket_counts) == len(point.explicit_bounds) + 1
    batch, _ = receiver.latest("ryot.batch_size.distribution")
    (bpoint,) = batch.histogram.data_points
    assert tuple(bpoint.explicit_bounds) == catalogue.get("ryot.batch_size.distribution").buckets
    assert (bpoint.count, bpoint.sum, tuple(bpoint.bucket_counts)) == (6, 6.0, (6, 0, 0, 0, 0, 0, 0, 0))
    assert {"ryot.service.info", "ryot.active_inference_requests"} <= receiver.names()


async def test_exporter_survives_receiver_down_then_up(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    """With no receiver, exports fail and retry on the reader's own thread, never on the calling one; once the
    receiver starts, the cumulative count arrives intact."""
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    tel = configure(
        exporters="otlp",
        otlp_endpoint=receiver.endpoint,
        otlp_protocol=receiver.protocol,
        export_interval_ms=100,
        gpu=False,
    )
    try:
        router = tel.instrument_router(
            ScriptedRouter(response=Completion(choices=[Choice(message=Message(content="x"))], usage=usage(4, 2)))
        )
        for i in range(300):
            await router.openai_chat_completion(ChatParams(model="m"))
            if i % 100 == 99:
                time.sleep(0.3)  # let several export attempts fail and retry in the background
        assert receiver.requests == []
        failed = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter.otlp")]
        assert failed, "the exporter never tried (and failed) to reach the missing receiver"
        # Every failed attempt and its back-off ran on the periodic reader's thread: the request path never waits.
        assert {r.thread for r in failed}.isdisjoint({threading.get_ident()})

        receiver.start()

        def arrived() -> bool:
            got = receiver.latest("ryot.inference.requests")
            return got is not None and _sum_points(got[0]) == {
                _key(model="m", endpoint="chat_completion", status="success"): 300
            }

        until(arrived, 30, "the 300 requests to reach the receiver")
    finally:
        tel.shutdown()


@pytest.mark.e2e
def test_otlp_example_flushes_everything_on_shutdown(receiver: Receiver) -> None:
    """examples/otlp_to_collector.py exits before its first export interval; shutdown() still delivers all requests."""
    receiver.start()
    example = Path(__file__).resolve().parents[2] / "examples" / "otlp_to_collector.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(example),
            "--endpoint",
            receiver.endpoint,
            "--protocol",
            receiver.protocol,
            "--requests",
            "12",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    got = receiver.latest("ryot.inference.requests")
    assert got is not None, "no export arrived"
    metric, resource = got
    assert sum(_sum_points(metric).values()) == 12
    assert resource["service.name"] == "ryot-inference"


async def test_otlp_exemplars_carry_the_trace_the_request_ran_under(receiver: Receiver) -> None:
    """Latency and TTFT exemplars point at the sampled span a request ran in, though recorded later on another
    thread; a request outside any span, one in an unsampled span and the collection's own span give none."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    from support.fakes import content_chunk

    receiver.start()
    sampled = TracerProvider(sampler=ALWAYS_ON).get_tracer("test")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    tel = configure(
        exporters="otlp",
        otlp_endpoint=receiver.endpoint,
        otlp_protocol=receiver.protocol,
        export_interval_ms=60000,  # only the final export on shutdown: everything is drained in one go
        gpu=False,
    )
    try:
        router = tel.instrument_router(ScriptedRouter(chunks=[content_chunk("a"), content_chunk("b")]))
        plain = tel.instrument_router(ScriptedRouter(response=Completion(usage=usage(4, 2))))

        async def stream() -> None:
            async for _ in await router.openai_chat_completion(ChatParams(model="traced", stream=True)):
                pass

        with sampled.start_as_current_span("POST /v1/chat/completions") as span:
            await stream()
        ctx = span.get_span_context()
        await plain.openai_chat_completion(ChatParams(model="untraced"))
        with unsampled.start_as_current_span("not sampled"):
            await plain.openai_chat_completion(ChatParams(model="unsampled"))
        with sampled.start_as_current_span("a collection inside a span"):
            tel.drain()  # drained in this span's context: it must not become anyone's exemplar
    finally:
        tel.shutdown()

    def exemplars(name: str) -> dict[str, list[tuple[bytes, bytes, float]]]:
        metric, _ = receiver.latest(name)
        points = metric.histogram.data_points if metric.HasField("histogram") else metric.sum.data_points
        return {
            _attrs(p.attributes)["model"]: [(e.trace_id, e.span_id, e.as_double) for e in p.exemplars] for p in points
        }

    trace_id, span_id = ctx.trace_id.to_bytes(16, "big"), ctx.span_id.to_bytes(8, "big")
    latency, ttft = exemplars("ryot.inference.latency"), exemplars("ryot.ttft.latency")
    assert set(latency) == {"traced", "untraced", "unsampled"}
    ((lat_trace, lat_span, lat_value),) = latency["traced"]
    assert (lat_trace, lat_span) == (trace_id, span_id) and lat_value > 0
    assert latency["untraced"] == latency["unsampled"] == []
    ((ttft_trace, ttft_span, ttft_value),) = ttft["traced"]
    assert (ttft_trace, ttft_span) == (trace_id, span_id) and 0 < ttft_value <= lat_value
    # counters recorded in the same drain carry no exemplar of the collecting span
    assert all(ex == [] for ex in exemplars("ryot.inference.requests").values())


DELTA = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


async def test_delta_temporality_sums_back_to_the_cumulative_totals(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta: counters and histograms arrive as deltas over
    several exports; per series, the deltas summed are the cumulative totals an in-memory reader of the same
    provider holds (requests, tokens, every latency bucket, count and sum), and the in-flight level stays
    cumulative."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    receiver.start()
    cumulative = InMemoryMetricReader()
    tel = configure(
        exporters="otlp",
        otlp_endpoint=receiver.endpoint,
        otlp_protocol=receiver.protocol,
        export_interval_ms=100,
        readers=[cumulative],
        gpu=False,
    )
    try:
        ok = tel.instrument_router(
            ScriptedRouter(response=Completion(choices=[Choice(message=Message(content="x"))], usage=usage(40, 10)))
        )
        bad = tel.instrument_router(ScriptedRouter(raises=ProviderError("CUDA out of memory", 500)))
        sent = 0
        for batch in (3, 4, 5):
            for _ in range(batch):
                await ok.openai_chat_completion(ChatParams(model="m"))
            with pytest.raises(ProviderError):
                await bad.openai_chat_completion(ChatParams(model="m"))
            sent += batch + 1
            until(
                lambda n=sent: sum(p.as_int for _, p in receiver.points("ryot.inference.requests")) == n,
                20,
                f"{sent} requests in the deltas",
            )
    finally:
        tel.shutdown()
    data = cumulative.get_metrics_data()
    totals = {m.name: m.data for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def key(attrs: Any) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((kv.key, kv.value.string_value) for kv in attrs))

    for name in ("ryot.inference.requests", "ryot.tokens.generated", "ryot.inference.errors"):
        points = receiver.points(name)
        assert {m.sum.aggregation_temporality for m, _ in points} == {DELTA}, name
        assert sum(1 for _, p in points if p.as_int > 0) >= 3, name  # several exports carried increments
        summed: dict[tuple[tuple[str, str], ...], int] = {}
        for _, p in points:
            assert p.as_int >= 0
            summed[key(p.attributes)] = summed.get(key(p.attributes), 0) + p.as_int
        expected = {tuple(sorted(p.attributes.items())): p.value for p in totals[name].data_points}
        assert summed == expected, name
    assert sum(summed.values()) == 3  # the errors: one per batch
    latency = receiver.points("ryot.inference.latency")
    assert {m.histogram.aggregation_temporality for m, _ in latency} == {DELTA}
    (total,) = totals["ryot.inference.latency"].data_points
    assert [sum(col) for col in zip(*(p.bucket_counts for _, p in latency))] == list(total.bucket_counts)
    assert sum(p.count for _, p in latency) == total.count == 15
    assert sum(p.sum for _, p in latency) == pytest.approx(total.sum, rel=1e-9, abs=1e-12)
    active = receiver.points("ryot.active_inference_requests")
    assert active and {m.sum.aggregation_temporality for m, _ in active} == {CUMULATIVE}


async def test_exponential_histograms_arrive_as_such_while_prometheus_keeps_explicit_buckets(
    receiver: Receiver,
) -> None:
    """otlp_histogram_aggregation=base2_exponential_bucket_histogram: ryot's histograms reach the OTLP receiver as
    exponential histograms (their Views do not force explicit buckets on that reader), while the Prometheus
    exposition of the same provider keeps the catalogue's explicit buckets."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    receiver.start()
    tel = configure(
        exporters=["otlp", "prometheus"],
        otlp_endpoint=receiver.endpoint,
        otlp_protocol=receiver.protocol,
        otlp_histogram_aggregation="base2_exponential_bucket_histogram",
        export_interval_ms=60000,
        prometheus_registry="private",
        start_prometheus_server=False,
        gpu=False,
    )
    try:
        ok = tel.instrument_router(
            ScriptedRouter(response=Completion(choices=[Choice(message=Message(content="x"))], usage=usage(40, 10)))
        )
        for _ in range(6):
            await ok.openai_chat_completion(ChatParams(model="m"))
        text = generate_latest(tel.registry).decode()
    finally:
        tel.shutdown()
    latency, _ = receiver.latest("ryot.inference.latency")
    assert latency.WhichOneof("data") == "exponential_histogram"
    (point,) = latency.exponential_histogram.data_points
    assert point.count == 6 and point.zero_count + sum(point.positive.bucket_counts) == 6
    assert latency.exponential_histogram.aggregation_temporality == CUMULATIVE
    batch, _ = receiver.latest("ryot.batch_size.distribution")
    (bpoint,) = batch.exponential_histogram.data_points
    assert (bpoint.count, bpoint.sum, bpoint.min, bpoint.max) == (6, 6.0, 1.0, 1.0)
    requests, _ = receiver.latest("ryot.inference.requests")
    assert requests.WhichOneof("data") == "sum"
    bounds = [
        s.labels["le"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "ryot_inference_latency_seconds_bucket"
    ]
    assert [float(b) for b in bounds] == [*catalogue.get("ryot.inference.latency").buckets, float("inf")]


# --- delta temporality under faults (SPEC "Promises under faults") ---------------------------------------------


def _delta_telemetry(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, timeout_s: float, interval_ms: int = 100, **kwargs: Any
) -> Any:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", str(timeout_s))
    return configure(
        exporters="otlp",
        otlp_endpoint=receiver.endpoint,
        otlp_protocol=receiver.protocol,
        export_interval_ms=interval_ms,
        gpu=False,
        **kwargs,
    )


async def _requests(tel: Any, n: int) -> None:
    router = tel.instrument_router(ScriptedRouter(response=Completion(usage=usage(4, 2))))
    for _ in range(n):
        await router.openai_chat_completion(ChatParams(model="m"))


@pytest.mark.parametrize("fault", ["down", "refuse"])
async def test_delta_outage_loses_nothing_and_force_flush_says_it_failed(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """Delta temporality with the endpoint down (connection refused) or refusing (an error answer): every export
    fails and force_flush() answers False; the increments wait, so once the endpoint is back the deltas add up to
    exactly the 10 requests sent (the SDK's delta reader delivered 3), and force_flush() answers True."""
    if fault == "refuse":
        receiver.mode = "refuse"
        receiver.start()
    tel = _delta_telemetry(receiver, monkeypatch, 0.5)
    try:
        await _requests(tel, 3)
        assert tel.force_flush() is False
        await _requests(tel, 7)
        assert tel.force_flush() is False
        time.sleep(0.5)  # periodic exports fail too
        assert receiver.total("ryot.inference.requests") == 0
        if fault == "refuse":
            assert receiver.refused >= 2
            receiver.mode = "store"
        else:
            receiver.start()
        until(lambda: receiver.total("ryot.inference.requests") == 10, 20, "10 requests in the deltas")
        assert tel.force_flush() is True
        time.sleep(0.5)
        assert receiver.total("ryot.inference.requests") == 10
    finally:
        tel.shutdown()
    assert receiver.total("ryot.inference.requests") == 10
    assert sum(p.count for _, p in receiver.points("ryot.inference.latency")) == 10


async def test_delta_export_that_timed_out_is_never_counted_twice(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector that stores each export but answers after the exporter's timeout: the outcome is unknown, so
    the export is not sent again (neither by the exporter's retries nor by the next export): the deltas never add up
    to more than the requests sent (before: 7 became 32), and force_flush() answers False."""
    receiver.mode, receiver.late_s = "late", 1.5
    receiver.start()
    tel = _delta_telemetry(receiver, monkeypatch, 0.4)
    try:
        await _requests(tel, 7)
        assert tel.force_flush() is False
        for _ in during(2.5):  # several more late exports
            assert receiver.total("ryot.inference.requests") <= 7
        assert receiver.total("ryot.inference.requests") == 7  # the first late export was stored
        receiver.mode = "store"
        time.sleep(receiver.late_s)  # the late answers still under way finish
        await _requests(tel, 3)
        until(lambda: receiver.total("ryot.inference.requests") == 10, 20, "10 requests in the deltas")
        assert tel.force_flush() is True
    finally:
        tel.shutdown()
    assert receiver.total("ryot.inference.requests") == 10


def _increments(req: Any) -> int:
    """Data points of monotonic sums and histograms with an increment in one delta export request."""
    n = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind == "sum" and m.sum.is_monotonic:
                    n += sum(1 for p in m.sum.data_points if p.as_int or p.as_double)
                elif kind == "histogram":
                    n += sum(1 for p in m.histogram.data_points if p.count)
    return n


async def test_self_metrics_count_exports_by_result_and_unconfirmed_increments(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ryot_telemetry_otlp_exports_total{result} counts each export exactly: 2 refused (endpoint down), 1 unknown
    (stored, answered after the timeout), 1 success; ..._delta_increments_unconfirmed_total counts the points with
    increments in the unknown one, exactly those the receiver stored."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    memory = InMemoryMetricReader()
    tel = _delta_telemetry(receiver, monkeypatch, 0.4, interval_ms=3_600_000, readers=[memory])

    def counts() -> dict[str, int]:
        data = memory.get_metrics_data()
        out: dict[str, int] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == "ryot.telemetry.otlp.exports":
                        out.update({str(p.attributes["result"]): p.value for p in m.data.data_points})
                    elif m.name == "ryot.telemetry.otlp.delta_increments_unconfirmed":
                        (point,) = m.data.data_points
                        out["unconfirmed"] = point.value
        return out

    try:
        assert counts() == {"success": 0, "refused": 0, "unknown": 0, "unconfirmed": 0}
        await _requests(tel, 5)
        assert (tel.force_flush(), tel.force_flush()) == (False, False)
        assert counts() == {"success": 0, "refused": 2, "unknown": 0, "unconfirmed": 0}
        receiver.mode, receiver.late_s = "late", 1.0
        receiver.start()
        assert tel.force_flush() is False
        (stored,) = receiver.requests
        assert counts() == {"success": 0, "refused": 2, "unknown": 1, "unconfirmed": _increments(stored)}
        assert _increments(stored) >= 4  # requests, both token types, the latency histogram at least
        receiver.mode = "store"
        time.sleep(receiver.late_s)
        assert tel.force_flush() is True
        assert counts() == {"success": 1, "refused": 2, "unknown": 1, "unconfirmed": _increments(stored)}
    finally:
        tel.shutdown()
    assert receiver.total("ryot.inference.requests") == 5

"""What became of an OTLP export (export/outcome.py) and the delta computed from cumulative state (export/delta.py)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import NumberDataPoint as Point
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ryot_telemetry.export.delta import Baseline, to_delta
from ryot_telemetry.export.outcome import Attempts, ObservedExporter, Outcome, grpc_stub_wrapper
from support.ports import free_port

EMPTY = MetricsData([])


class _Status(grpc.RpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self) -> tuple[()]:
        return ()


class _Stub:
    """The server's answers to successive Export calls: None (stored) or a status code; each call is logged."""

    def __init__(self, answers: list[grpc.StatusCode | None]) -> None:
        self.answers = answers
        self.calls = 0

    def Export(self, **kwargs: Any) -> object:
        answer = self.answers[self.calls]
        self.calls += 1
        if answer is not None:
            raise _Status(answer)
        return object()


class _RetryingExporter(MetricExporter):
    """As the gRPC exporter: retries retryable statuses (at most ``tries`` calls), ``batches`` Export calls each."""

    def __init__(self, client: Any, tries: int = 3, batches: int = 1) -> None:
        super().__init__()
        self.client, self.tries, self.batches = client, tries, batches

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        for _ in range(self.batches):
            for attempt in range(self.tries):
                try:
                    self.client.Export(request=None, timeout=1)
                    break
                except grpc.RpcError as e:
                    retryable = e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                    if not retryable or attempt == self.tries - 1:
                        return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def _send(answers: list[grpc.StatusCode | None], **kwargs: Any) -> tuple[Outcome, int]:
    attempts = Attempts()
    attempts.observed = True
    stub = _Stub(answers)
    sender = ObservedExporter(_RetryingExporter(grpc_stub_wrapper(attempts)(stub), **kwargs), attempts)
    return sender.send(EMPTY, 1000), stub.calls


U, D, E = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("answers", "kwargs", "expected"),
    [
        ([None], {}, (Outcome.SUCCESS, 1)),
        ([U, None], {}, (Outcome.SUCCESS, 2)),  # refused, then stored on the exporter's retry
        ([U, U, U], {}, (Outcome.REFUSED, 3)),  # never reached: every retry sent, nothing stored
        ([E], {}, (Outcome.REFUSED, 1)),  # an error answer: not stored
        ([D, None, None], {}, (Outcome.UNKNOWN, 1)),  # timed out: the retry is refused before it is sent
        ([U, D, None], {}, (Outcome.UNKNOWN, 2)),
        ([None, U, U], {"batches": 2, "tries": 2}, (Outcome.UNKNOWN, 3)),  # batch 1 stored, batch 2 not
    ],
)
def test_each_attempt_classifies_the_export(
    answers: list[grpc.StatusCode | None], kwargs: dict[str, int], expected: tuple[Outcome, int]
) -> None:
    """(outcome, Export calls that reached the server) for the gRPC statuses of successive attempts: a timeout is
    never followed by a resend; a refusal leaves the export refused only when nothing of it was stored."""
    assert _send(answers, **kwargs) == expected


def test_an_exporter_that_cannot_be_observed_fails_as_unknown() -> None:
    """Without observation (the exporter's internals moved), a failure is unknown: never resent, never doubled."""
    sender = ObservedExporter(_RetryingExporter(_Stub([U, U, U])), Attempts())
    assert sender.send(EMPTY, 1000) is Outcome.UNKNOWN


def test_http_connection_refused_is_refused_and_a_read_timeout_unknown() -> None:
    """The OTLP/HTTP session: a closed loopback port is refused (nothing sent); a server that accepts and never
    answers times out as unknown, and the exporter's retry of it is not sent."""
    import socket

    import requests

    from ryot_telemetry.export.outcome import NotResent, observing_session

    attempts = Attempts()
    session = observing_session(attempts)
    closed = free_port()
    attempts.begin()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post(f"http://127.0.0.1:{closed}/v1/metrics", data=b"x", timeout=1)
    assert (attempts.uncertain, attempts.unknown) == (False, False)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/metrics"
        attempts.begin()
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.post(url, data=b"x", timeout=0.2)
        assert attempts.unknown
        with pytest.raises(NotResent):
            session.post(url, data=b"x", timeout=0.2)
    session.close()


# --- delta from cumulative -------------------------------------------------------------------------------------


def _data(*metrics: Metric) -> MetricsData:
    scope = ScopeMetrics(InstrumentationScope("t"), list(metrics), "")
    return MetricsData([ResourceMetrics(Resource({}), [scope], "")])


def _counter(value: int, start: int = 1, at: int = 10) -> Metric:
    return Metric("c", None, None, Sum([Point({"k": "v"}, start, at, value)], AggregationTemporality.CUMULATIVE, True))


def test_counter_deltas_follow_the_baseline_given_and_never_go_negative() -> None:
    """5 then 8 then (a read missing part of the state) 6 then 9: deltas 5, 3, 0, 1 against the baselines kept;
    each delta point starts where the previous kept baseline was taken."""
    base = Baseline()
    out = []
    for now, value in ((100, 5), (200, 8), (300, 6), (400, 9)):
        d = to_delta(_data(_counter(value)), base, now)
        (metric,) = d.data.resource_metrics[0].scope_metrics[0].metrics
        (p,) = metric.data.data_points
        out.append((p.start_time_unix_nano, p.value, d.increments))
        base = d.baseline
    assert out == [(1, 5, 1), (100, 3, 1), (200, 0, 0), (300, 1, 1)]


def _exp(scale: int, offset: int, counts: list[int], zero: int = 0) -> Metric:
    point = ExponentialHistogramDataPoint(
        {},
        1,
        10,
        sum(counts) + zero,
        float(sum(counts)),
        scale,
        zero,
        Buckets(offset, counts),
        Buckets(0, []),
        0,
        0.0,
        9.0,
    )
    return Metric("e", None, None, ExponentialHistogram([point], AggregationTemporality.CUMULATIVE))


def test_exponential_histogram_delta_at_the_coarser_scale() -> None:
    """Cumulative buckets at scale 2 (indexes 4..7: 1, 2, 0, 3), then at scale 1 after a downscale (indexes 2..3:
    3+1, 3+2) with one more zero: the delta is taken at scale 1 (index 2: 1, index 3: 2) and one zero."""
    first = to_delta(_data(_exp(2, 4, [1, 2, 0, 3])), Baseline(), 100)
    second = to_delta(_data(_exp(1, 2, [4, 5], zero=1)), first.baseline, 200)
    (metric,) = second.data.resource_metrics[0].scope_metrics[0].metrics
    (p,) = metric.data.data_points
    assert metric.data.aggregation_temporality == AggregationTemporality.DELTA
    assert (p.scale, p.positive.offset, list(p.positive.bucket_counts), p.zero_count, p.count) == (1, 2, [1, 2], 1, 4)


def test_force_flush_without_otlp_answers_true_and_the_self_metrics_are_at_zero() -> None:
    """No OTLP export: force_flush() has nothing that can fail (True), and the export self-metrics are exposed at 0
    for each result."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ryot_telemetry import configure

    memory = InMemoryMetricReader()
    tel = configure(exporters="none", readers=[memory], gpu=False)
    try:
        assert tel.force_flush() is True
        data = memory.get_metrics_data()
        got = {
            (m.name, tuple(sorted(p.attributes.items()))): p.value
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name.startswith("ryot.telemetry.otlp.")
            for p in m.data.data_points
        }
    finally:
        tel.shutdown()
    assert got == {
        ("ryot.telemetry.otlp.exports", (("result", "success"),)): 0,
        ("ryot.telemetry.otlp.exports", (("result", "refused"),)): 0,
        ("ryot.telemetry.otlp.exports", (("result", "unknown"),)): 0,
        ("ryot.telemetry.otlp.delta_increments_unconfirmed", ()): 0,
    }

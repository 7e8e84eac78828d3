"""New counter series reach every reader at 0 before their first increment, so rate()/increase() count it."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from prometheus_client.parser import text_string_to_metric_families

from ryot_telemetry import configure
from ryot_telemetry.testing import capture

REQ = "ryot.inference.requests"


class Capturing(MetricExporter):
    """Keeps every export's value of ryot_inference_requests_total{model=late}; None while the series is absent."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float | None] = []
        self.tokens: list[float | None] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        found: dict[str, float] = {}
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        if p.attributes.get("model") == "late" and m.name in (REQ, "ryot.tokens.generated"):
                            found[m.name] = found.get(m.name, 0) + p.value
        self.values.append(found.get(REQ))
        self.tokens.append(found.get("ryot.tokens.generated"))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def _requests(rec: Any, model: str, n: int) -> None:
    for _ in range(n):
        req = rec.start(model, "chat_completion", "standard")
        req.prompt_tokens, req.completion_tokens = 10, 5
        req.success(rec)


def _scrape(url: str) -> float | None:
    """ryot_inference_requests_total{model="late"} summed over its series, None while absent."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values = [
        s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "ryot_inference_requests"
        for s in fam.samples
        if s.name.endswith("_total") and s.labels.get("model") == "late"
    ]
    return sum(values) if values else None


def _tokens(url: str) -> float | None:
    """ryot_tokens_generated_total{model="late"} summed over its series, None while absent."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values = [
        s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "ryot_tokens_generated"
        for s in fam.samples
        if s.name.endswith("_total") and s.labels.get("model") == "late"
    ]
    return sum(values) if values else None


def _prometheus_only() -> Any:
    return configure(
        exporters="prometheus", prometheus_host="127.0.0.1", prometheus_port=0, prometheus_registry="private"
    )


@pytest.fixture
def two_readers() -> Iterator[tuple[Any, Capturing, PeriodicExportingMetricReader]]:
    """Prometheus (scraped by the test) plus a periodic OTLP-like reader collected by the test (interval: 1 day)."""
    exporter = Capturing()
    periodic = PeriodicExportingMetricReader(exporter, export_interval_millis=86_400_000)
    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        readers=[periodic],
    )
    try:
        yield tel, exporter, periodic
    finally:
        tel.shutdown()


def test_a_new_series_is_scraped_at_zero_before_its_first_increment() -> None:
    """Scraping began; a model's first 3 requests show first as 0, then as 3 at the next scrape."""
    tel = configure(
        exporters="prometheus", prometheus_host="127.0.0.1", prometheus_port=0, prometheus_registry="private"
    )
    try:
        url = tel.prometheus_url
        assert _scrape(url) is None
        _requests(tel.recorder, "late", 3)
        assert _scrape(url) == 0
        assert _scrape(url) == 3
        _requests(tel.recorder, "late", 2)  # a known series is never held again
        assert _scrape(url) == 5
    finally:
        tel.shutdown()


def test_series_first_seen_before_any_collection_are_not_held() -> None:
    """Before any reader has collected there is no earlier sample to lose: the first scrape shows the counts."""
    tel = configure(
        exporters="prometheus", prometheus_host="127.0.0.1", prometheus_port=0, prometheus_registry="private"
    )
    try:
        _requests(tel.recorder, "late", 3)
        assert _scrape(tel.prometheus_url) == 3
    finally:
        tel.shutdown()


def test_increments_wait_until_every_reader_has_exported_the_zero(two_readers: Any) -> None:
    """With a scrape and a slower periodic export, the increments follow once both have exported the zero."""
    tel, exporter, periodic = two_readers
    url = tel.prometheus_url
    assert _scrape(url) is None
    periodic.collect()
    _requests(tel.recorder, "late", 3)
    assert [_scrape(url), _scrape(url), _scrape(url)] == [0, 0, 0]  # the periodic reader has not exported it yet
    periodic.collect()
    assert _scrape(url) == 3
    periodic.collect()
    assert exporter.values == [None, 0, 3]
    assert exporter.tokens == [None, 0, 45]  # prompt + completion series alike: 3 x (10 + 5)


def test_shutdown_exports_held_increments(two_readers: Any) -> None:
    """Counters stay exact: increments still held when the provider shuts down are in the final export."""
    tel, exporter, periodic = two_readers
    _scrape(tel.prometheus_url)
    periodic.collect()
    _requests(tel.recorder, "late", 3)
    assert _scrape(tel.prometheus_url) == 0
    tel.shutdown()
    assert exporter.values == [None, 3]


def test_a_reader_that_stopped_collecting_is_not_waited_for(two_readers: Any, monkeypatch: Any) -> None:
    """A periodic reader silent for three of its intervals no longer holds the scrape back."""
    tel, _, periodic = two_readers
    gate = tel.recorder._new_series
    now = [1000.0]
    monkeypatch.setattr(gate, "_clock", lambda: now[0])
    periodic.collect()
    now[0] += 20.0
    periodic.collect()  # interval 20 s
    _scrape(tel.prometheus_url)
    _requests(tel.recorder, "late", 3)
    assert _scrape(tel.prometheus_url) == 0
    now[0] += 59.0
    assert _scrape(tel.prometheus_url) == 0  # 59 s since the periodic reader's last export: still waited for
    now[0] += 2.0
    assert _scrape(tel.prometheus_url) == 3  # 61 s > 3 x 20 s


def test_drain_release_held_adds_everything_at_once(two_readers: Any) -> None:
    """drain(release_held=True) (used before the demo's summary) adds held increments for every reader."""
    tel, exporter, periodic = two_readers
    _scrape(tel.prometheus_url)
    periodic.collect()
    _requests(tel.recorder, "late", 3)
    assert _scrape(tel.prometheus_url) == 0
    tel.recorder.drain(release_held=True)
    periodic.collect()
    assert (_scrape(tel.prometheus_url), exporter.values) == (3, [None, 3])


def test_held_token_increments_are_capped_before_release(two_readers: Any) -> None:
    """A new token series' first increments, held by the gate and released at a collection (not through the drain),
    are within the int64 cap: 1,100 x 2**53 tokens arrive at 2**63 - 1 in every reader."""
    tel, exporter, periodic = two_readers
    _scrape(tel.prometheus_url)
    periodic.collect()
    rec = tel.recorder
    for _ in range(1100):
        req = rec.start("late", "chat_completion", "standard")
        req.completion_tokens = 2**53
        req.success(rec)
    _scrape(tel.prometheus_url)  # the zero: the increments are held
    periodic.collect()
    assert exporter.tokens[-1] == 0
    _scrape(tel.prometheus_url)  # released at the start of this collection, by the gate itself
    periodic.collect()
    assert (exporter.tokens[-1], _tokens(tel.prometheus_url)) == (2**63 - 1, float(2**63 - 1))  # text: a float


def test_in_memory_readers_never_hold_counts() -> None:
    """capture() reads are exact at once: an InMemoryMetricReader is read by code, not by a time-series database."""
    cap = capture()
    cap.collect()
    _requests(cap.recorder, "late", 3)
    assert cap.collect().value(REQ, model="late", endpoint="chat_completion", status="success") == 3


def test_in_memory_reader_beside_prometheus_sees_the_zero_then_the_count() -> None:
    """Beside a scraped Prometheus reader, an in-memory reader sees what Prometheus sees, without waiting itself."""
    memory = InMemoryMetricReader()
    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        readers=[memory],
    )
    try:
        _scrape(tel.prometheus_url)
        _requests(tel.recorder, "late", 3)

        def late() -> Sequence[float]:
            data = memory.get_metrics_data()
            assert data is not None
            return [
                p.value
                for rm in data.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
                if m.name == REQ
                for p in m.data.data_points
                if p.attributes.get("model") == "late"
            ]

        assert late() == [0]
        assert _scrape(tel.prometheus_url) == 0
        assert late() == [3]
    finally:
        tel.shutdown()


def test_held_increments_are_released_by_a_collection_without_a_drain(two_readers: Any, monkeypatch: Any) -> None:
    """Once every reader has exported the zero, the next collection adds the held increments itself, even if no
    drain runs any more (no new request, or a drain scheduled elsewhere)."""
    tel, _, periodic = two_readers
    url = tel.prometheus_url
    _scrape(url)
    periodic.collect()
    _requests(tel.recorder, "late", 3)
    assert _scrape(url) == 0
    periodic.collect()
    monkeypatch.setattr(tel.recorder._new_series, "route", lambda counts: None)
    assert _scrape(url) == 3
    assert tel.recorder._new_series.held() == 0


class ByModel(MetricExporter):
    """Every export's ryot.inference.requests totals by model (summed over the model's series)."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[dict[str, float]] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        totals: dict[str, float] = {}
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == REQ:
                        for p in m.data.data_points:
                            model = str(p.attributes["model"])
                            totals[model] = totals.get(model, 0) + p.value
        self.exports.append(totals)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


@pytest.mark.parametrize("seed", range(8))
def test_random_interleavings_keep_counts_exact_and_start_new_series_at_zero(seed: int) -> None:
    """Requests for six models, drains and two readers' collections in a random order: every reader sees each
    series non-decreasing, a model that first appears after both readers collected starts at 0 for both, and
    the final exports (after shutdown) carry exactly the requests made."""
    import random

    rng = random.Random(seed)
    exporters = [ByModel(), ByModel()]
    readers = [PeriodicExportingMetricReader(e, export_interval_millis=86_400_000) for e in exporters]
    tel = configure(exporters="none", readers=readers)
    sent: dict[str, int] = {}
    late: set[str] = set()
    collected = [False, False]
    try:
        for _ in range(120):
            op = rng.random()
            if op < 0.5:
                model = f"m{rng.randrange(6)}"
                if model not in sent and all(collected):
                    late.add(model)
                _requests(tel.recorder, model, 1)
                sent[model] = sent.get(model, 0) + 1
            elif op < 0.6:
                tel.recorder.drain()
            else:
                i = rng.randrange(2)
                readers[i].collect()
                collected[i] = True
    finally:
        tel.shutdown()
    for exporter in exporters:
        assert exporter.exports[-1] == sent
        for model in sent:
            values = [e[model] for e in exporter.exports if model in e]
            assert values == sorted(values), (model, values)
            if model in late:
                assert values[0] == 0, (model, values)
    assert late, "the seed produced no model first seen after both readers collected"


def test_concurrent_requests_and_collections_keep_counts_exact() -> None:
    """Four request threads over 20 models against two readers collecting in loops: the final exports are exact."""
    import threading

    exporters = [ByModel(), ByModel()]
    readers = [PeriodicExportingMetricReader(e, export_interval_millis=86_400_000) for e in exporters]
    tel = configure(exporters="none", readers=readers)
    done = threading.Event()

    def send(worker: int) -> None:
        for i in range(500):
            _requests(tel.recorder, f"m{(worker * 7 + i) % 20}", 1)

    def collect(reader: PeriodicExportingMetricReader) -> None:
        for _ in range(10_000):
            if done.is_set():
                break
            reader.collect()

    senders = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    collectors = [threading.Thread(target=collect, args=(r,)) for r in readers]
    try:
        for t in collectors + senders:
            t.start()
        for t in senders:
            t.join(timeout=60)
        done.set()
        for t in collectors:
            t.join(timeout=60)
    finally:
        tel.shutdown()
    expected: dict[str, int] = {}
    for w in range(4):
        for i in range(500):
            model = f"m{(w * 7 + i) % 20}"
            expected[model] = expected.get(model, 0) + 1
    assert [e.exports[-1] for e in exporters] == [expected, expected]
    for e in exporters:
        for model in expected:
            values = [x[model] for x in e.exports if model in x]
            assert values == sorted(values), model

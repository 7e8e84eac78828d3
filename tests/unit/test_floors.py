"""What keeps ryot the same on the oldest dependencies pyproject allows (the floors): the Prometheus exporter shims."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from ryot_telemetry._compat import _ReaderOnRegistry, merge_families, prometheus_reader


class _Fixed:
    """A prometheus_client collector returning the given families."""

    def __init__(self, families: list[object]) -> None:
        self.families = families

    def collect(self) -> list[object]:
        return merge_families(self.families)


def test_split_families_merge_into_one_with_missing_labels_empty() -> None:
    """Two families of one counter (with and without error_type) and two of one histogram become one family each,
    the missing label "" on every sample of it, le kept on bucket samples only: valid text, one HELP per metric."""
    ok = CounterMetricFamily("reqs", "Requests.", labels=["model", "status"])
    ok.add_metric(["a", "success"], 3)
    bad = CounterMetricFamily("reqs", "Requests.", labels=["error_type", "model", "status"])
    bad.add_metric(["timeout", "a", "error"], 1)
    h1 = HistogramMetricFamily("lat", "Latency.", labels=["model"])
    h1.add_metric(["a"], buckets=[("1.0", 1), ("+Inf", 2)], sum_value=2.5)
    h2 = HistogramMetricFamily("lat", "Latency.", labels=["error_type", "model"])
    h2.add_metric(["oom", "a"], buckets=[("1.0", 0), ("+Inf", 1)], sum_value=4.0)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Fixed([ok, bad, h1, h2]))  # type: ignore[arg-type]
    assert generate_latest(registry).decode().splitlines() == [
        "# HELP reqs_total Requests.",
        "# TYPE reqs_total counter",
        'reqs_total{error_type="",model="a",status="success"} 3.0',
        'reqs_total{error_type="timeout",model="a",status="error"} 1.0',
        "# HELP lat Latency.",
        "# TYPE lat histogram",
        'lat_bucket{error_type="",le="1.0",model="a"} 1.0',
        'lat_bucket{error_type="",le="+Inf",model="a"} 2.0',
        'lat_count{error_type="",model="a"} 2.0',
        'lat_sum{error_type="",model="a"} 2.5',
        'lat_bucket{error_type="oom",le="1.0",model="a"} 0.0',
        'lat_bucket{error_type="oom",le="+Inf",model="a"} 1.0',
        'lat_count{error_type="oom",model="a"} 1.0',
        'lat_sum{error_type="oom",model="a"} 4.0',
    ]


def test_a_lone_family_is_returned_as_it_is() -> None:
    """A metric written as one family (every newer exporter's output) is passed through, the same object."""
    ok = CounterMetricFamily("reqs", "", labels=["model"])
    ok.add_metric(["a"], 1)
    assert merge_families([ok])[0] is ok


def test_reader_exposes_an_optional_label_as_one_family_whatever_the_exporter() -> None:
    """Through the installed exporter (split families before 0.64b0), points with and without error_type are one
    family: the success series has error_type "" (absent, for Prometheus)."""
    registry = CollectorRegistry(auto_describe=True)
    provider = MeterProvider(metric_readers=[prometheus_reader(registry)])
    try:
        counter = provider.get_meter("m").create_counter("reqs")
        counter.add(1, {"model": "a", "status": "success"})
        counter.add(2, {"model": "a", "status": "error", "error_type": "Timeout"})
        families = [f for f in text_string_to_metric_families(generate_latest(registry).decode()) if f.name == "reqs"]
    finally:
        provider.shutdown()
    assert [(f.type, len(f.samples)) for f in families] == [("counter", 2)]
    samples = [
        ({k: v for k, v in s.labels.items() if not k.startswith("otel_scope_")}, s.value) for s in families[0].samples
    ]
    assert sorted(samples, key=lambda s: s[1]) == [
        ({"error_type": "", "model": "a", "status": "success"}, 1.0),
        ({"error_type": "Timeout", "model": "a", "status": "error"}, 2.0),
    ]


def test_an_older_readers_collector_moves_to_the_given_registry_and_leaves_it_at_shutdown() -> None:
    """The shim for exporters without ``registry=``: the collector is on the private registry, never on the global
    one, exposes the provider's points there, and is unregistered from it at shutdown."""
    registry = CollectorRegistry(auto_describe=True)
    reader = _ReaderOnRegistry(registry)
    assert reader._collector not in REGISTRY._collector_to_names
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("m").create_counter("moved").add(5)
    assert "moved_total" in generate_latest(registry).decode()
    provider.shutdown()
    assert generate_latest(registry) == b""
    assert reader._collector not in REGISTRY._collector_to_names

"""configure(): one clear ConfigurationError for bad configuration; code arguments win over env vars."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import pytest

from ryot_telemetry import ConfigurationError, configure, views
from ryot_telemetry.catalogue import get


def test_port_in_use_is_one_clear_error() -> None:
    """A taken scrape port fails at start-up naming the address and the fix."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigurationError, match=rf"cannot serve /metrics on 127\.0\.0\.1:{port}.*free port"):
            configure(prometheus_host="127.0.0.1", prometheus_port=port, prometheus_registry="private", gpu=False)


def test_unknown_exporter() -> None:
    """An exporter name outside prometheus/otlp/console/none is rejected with the choices."""
    with pytest.raises(ConfigurationError, match=r"unknown metrics exporter 'zipkin'; choose from prometheus, otlp"):
        configure(exporters="prometheus,zipkin", gpu=False)


def test_unknown_exporter_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_METRICS_EXPORTER is validated the same way."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "statsd")
    with pytest.raises(ConfigurationError, match="'statsd'"):
        configure(gpu=False)


def test_unsorted_buckets() -> None:
    """Bucket overrides must be strictly increasing."""
    with pytest.raises(ConfigurationError, match=r"not in strictly increasing order: \[0\.5, 0\.1\]"):
        configure(exporters="none", buckets={"ryot_inference_latency_seconds": [0.5, 0.1]}, gpu=False)


def test_buckets_for_a_counter_are_rejected() -> None:
    """Only histograms have buckets."""
    with pytest.raises(ConfigurationError, match="is a counter, not a histogram"):
        configure(exporters="none", buckets={"ryot_inference_requests_total": [1, 2]}, gpu=False)


def test_bad_buckets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """RYOT_TELEMETRY_BUCKETS must be JSON."""
    monkeypatch.setenv("RYOT_TELEMETRY_BUCKETS", "{not json")
    with pytest.raises(ConfigurationError, match="RYOT_TELEMETRY_BUCKETS is not valid JSON"):
        configure(exporters="none", gpu=False)


def test_malformed_price_table(tmp_path) -> None:
    """A price table with a negative price names the model and field."""
    with pytest.raises(ConfigurationError, match=r"price table.*'m'.*prompt must be a finite number >= 0"):
        configure(exporters="none", prices={"m": {"prompt": -1, "completion": 0}}, gpu=False)
    bad = tmp_path / "prices.json"
    bad.write_text("{")
    with pytest.raises(ConfigurationError, match="malformed price table"):
        configure(exporters="none", prices=bad, gpu=False)


def test_unknown_otlp_protocol() -> None:
    """The OTLP protocol must be grpc or http/protobuf."""
    with pytest.raises(ConfigurationError, match="unknown OTLP protocol 'thrift'"):
        configure(exporters="otlp", otlp_protocol="thrift", gpu=False)


def test_code_arguments_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus_port= beats OTEL_EXPORTER_PROMETHEUS_PORT, and bucket overrides reach the View."""
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "1")
    tel = configure(
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        gpu=False,
        buckets={"ryot.ttft.latency": [0.1, 1.0]},
    )
    try:
        assert tel.prometheus_url is not None and not tel.prometheus_url.endswith(":1/metrics")
        body = urllib.request.urlopen(tel.prometheus_url, timeout=5).read().decode()
        assert "ryot_service_info" in body
    finally:
        tel.shutdown()
    # the port is free again after shutdown (SO_REUSEADDR ignores TIME_WAIT, not a live listener)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(tel.prometheus_url.rsplit(":", 1)[1].split("/")[0])))


def test_views_carry_catalogue_buckets_and_attribute_filters() -> None:
    """views() gives every histogram its catalogue buckets and every metric its label keys."""
    by_name = {v._instrument_name: v for v in views(include_semconv=False)}
    lat = by_name["ryot.inference.latency"]
    assert lat._aggregation._boundaries == list(get("ryot.inference.latency").buckets)
    assert lat._attribute_keys == {"model", "batch_size", "generation_mode"}
    assert by_name["ryot.inference.requests"]._attribute_keys == {"model", "endpoint", "status", "error_type"}
    assert len(by_name) == 27  # the 26 SPEC table families and ryot_slo_requests_total


def test_exemplars_trace_based_where_a_reader_carries_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trace-based exemplars with OTLP/console/extra readers; off for Prometheus alone (its exporter drops them);
    OTEL_METRICS_EXEMPLAR_FILTER wins; the recorder keeps request spans only when exemplars can be sampled."""
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, TraceBasedExemplarFilter
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ryot_telemetry._recorder import RequestSpanExemplarFilter

    def built(**kw: Any) -> tuple[type, bool]:
        tel = configure(gpu=False, **kw)
        try:
            return type(tel.meter_provider._sdk_config.exemplar_filter), tel.recorder.exemplars
        finally:
            tel.shutdown()

    prom_only = {"exporters": "prometheus", "prometheus_registry": "private", "start_prometheus_server": False}
    assert built(**prom_only) == (AlwaysOffExemplarFilter, False)
    assert built(exporters="none") == (AlwaysOffExemplarFilter, False)
    assert built(exporters="none", readers=[InMemoryMetricReader()]) == (RequestSpanExemplarFilter, True)
    assert built(exporters="console", export_interval_ms=60000) == (RequestSpanExemplarFilter, True)
    assert issubclass(RequestSpanExemplarFilter, TraceBasedExemplarFilter)  # the SDK semantics, one shortcut
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_on")
    assert built(**prom_only) == (AlwaysOnExemplarFilter, True)
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
    assert built(exporters="none", readers=[InMemoryMetricReader()]) == (AlwaysOffExemplarFilter, False)
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "sometimes")
    with pytest.raises(ConfigurationError, match="OTEL_METRICS_EXEMPLAR_FILTER='sometimes': choose from trace_based"):
        configure(exporters="none", gpu=False)


def test_failed_configure_leaves_nothing_running() -> None:
    """A bad OTLP setting fails before the scrape port opens; a later configure() can take the same port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigurationError, match="unknown OTLP protocol"):
        configure(
            exporters="prometheus,otlp",
            prometheus_host="127.0.0.1",
            prometheus_port=port,
            prometheus_registry="private",
            otlp_protocol="bogus",
            gpu=False,
        )
    tel = configure(prometheus_host="127.0.0.1", prometheus_port=port, prometheus_registry="private", gpu=False)
    tel.shutdown()


def test_failure_after_the_port_opened_closes_it_and_unregisters_the_reader() -> None:
    """A bad GPU model map fails after the scrape server started: the port is freed, the registry emptied."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    with pytest.raises(ConfigurationError, match="gpu model for device"):
        configure(
            prometheus_host="127.0.0.1", prometheus_port=0, prometheus_registry=registry, gpu=True, gpu_models={0: ""}
        )
    assert list(registry._collector_to_names) == []


def test_service_name_from_resource_attributes_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_RESOURCE_ATTRIBUTES' service.name is used when neither service_name= nor OTEL_SERVICE_NAME is set."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=my-router,deployment.environment=prod")
    tel = configure(exporters="none", gpu=False)
    assert tel.meter_provider._sdk_config.resource.attributes["service.name"] == "my-router"
    tel.shutdown()
    tel = configure(exporters="none", gpu=False, service_name="explicit")
    assert tel.meter_provider._sdk_config.resource.attributes["service.name"] == "explicit"
    tel.shutdown()
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    tel = configure(exporters="none", gpu=False)
    assert tel.meter_provider._sdk_config.resource.attributes["service.name"] == "ryot-inference"
    tel.shutdown()


def test_wrong_argument_types_are_configuration_errors() -> None:
    """A string port or a float max_models is one ConfigurationError, not a TypeError from deep inside."""
    with pytest.raises(ConfigurationError, match="prometheus_port must be an integer, got '9464'"):
        configure(prometheus_port="9464", prometheus_registry="private", gpu=False)
    with pytest.raises(ConfigurationError, match=r"max_models must be an integer, got 2\.5"):
        configure(exporters="none", max_models=2.5, gpu=False)

"""configure(): one clear ConfigurationError for bad configuration; code arguments win over env vars."""

from __future__ import annotations

import logging
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ryot_telemetry import ConfigurationError, configure, views
from ryot_telemetry.catalogue import get
from support.floors import needs_series_limit
from support.ports import free_port


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


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_ipv6_host_is_served_and_shutdown_stops_the_scrape_thread() -> None:
    """An IPv6 host binds an IPv6 socket (URL in brackets); shutdown() ends the serving thread and frees the port."""
    import threading

    tel = configure(prometheus_host="::1", prometheus_port=0, prometheus_registry="private", gpu=False)
    try:
        assert tel.prometheus_url is not None and tel.prometheus_url.startswith("http://[::1]:")
        response = urllib.request.urlopen(tel.prometheus_url, timeout=5)
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "ryot_service_info" in response.read().decode()
        assert [t.name for t in threading.enumerate()].count("ryot-telemetry-scrape") == 1
    finally:
        tel.shutdown()
    assert "ryot-telemetry-scrape" not in [t.name for t in threading.enumerate()]
    port = int(tel.prometheus_url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::1", port))


def test_views_carry_catalogue_buckets_and_attribute_filters() -> None:
    """views() gives every histogram its catalogue buckets and every metric its label keys."""
    by_name = {v._instrument_name: v for v in views(include_semconv=False)}
    lat = by_name["ryot.inference.latency"]
    assert lat._aggregation._boundaries == list(get("ryot.inference.latency").buckets)
    assert lat._attribute_keys == {"model", "batch_size", "generation_mode"}
    assert by_name["ryot.inference.requests"]._attribute_keys == {"model", "endpoint", "status", "error_type", "tenant"}
    # 26 SPEC table families, ryot_slo_requests_total, 7 "Outcomes, ...", 4 GPU depth, ryot_model_info, 2 OTLP
    # export and 2 queue self-metrics, 3 from "Capacity and scaling"
    assert len(by_name) == 46


@needs_series_limit
def test_views_limit_series_to_what_bounded_labels_allow() -> None:
    """Each View's series limit is every series its labels allow with ``max_models`` names (plus __overflow__ and
    __unknown__) and one for the SDK's overflow series, never below the SDK's default of 2,000; the SDK's default
    where a label has no vocabulary in the catalogue."""
    big = {v._instrument_name: v._aggregation_cardinality_limit for v in views(include_semconv=False, max_models=1000)}
    assert big["ryot.inference.latency"] == 1002 * 6 * 3 + 1  # batch_size x generation_mode
    assert big["ryot.inference.requests"] == 1002 * 2 * 4 * 13 + 1  # endpoint x status x (12 error_types or none)
    assert big["ryot.tokens_per_second"] == 2000  # 1,002 series: the SDK's default is more
    assert big["ryot.kv_cache.size"] is None  # context_length, batch_size: no vocabulary
    assert big["ryot.gpu.utilization"] is None  # device_id
    small = {v._instrument_name: v._aggregation_cardinality_limit for v in views(include_semconv=False)}
    assert small["ryot.inference.latency"] == 2000  # 102 x 18 + 1 = 1,837: the default max_models fits the SDK's
    tenants = {
        v._instrument_name: v._aggregation_cardinality_limit for v in views(include_semconv=False, max_tenants=50)
    }
    assert tenants["ryot.inference.requests"] == 102 * 104 * 52 + 1  # x (50 tenants, __overflow__, __unknown__)
    assert tenants["ryot.inference.latency"] == 2000  # no tenant label on histograms


@needs_series_limit
def test_configured_views_carry_the_model_and_tenant_budgets() -> None:
    """The provider configure() builds limits series by the configured max_models and, with a tenant label,
    max_tenants."""
    from ryot_telemetry.testing import capture

    for settings, limit in (
        ({"max_models": 300}, 302 * 104 + 1),
        ({"tenant": "user", "max_tenants": 5}, 102 * 104 * 7 + 1),
    ):
        cap = capture(**settings)
        try:
            by_name = {v._instrument_name: v for v in cap.provider._sdk_config.views}
            assert by_name["ryot.inference.requests"]._aggregation_cardinality_limit == limit
        finally:
            cap.shutdown()


def test_exemplars_trace_based_where_a_reader_carries_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trace-based exemplars with OTLP/console/extra readers; off for Prometheus alone without a TracerProvider;
    OTEL_METRICS_EXEMPLAR_FILTER wins; the recorder keeps request spans only when exemplars can be sampled."""
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, TraceBasedExemplarFilter
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ryot_telemetry.recording.recorder import RequestSpanExemplarFilter

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


def test_failed_configure_leaves_nothing_running() -> None:
    """A bad OTLP setting fails before the scrape port opens; a later configure() can take the same port."""
    port = free_port()
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


def test_bad_gpu_model_map_fails_before_the_port_opens() -> None:
    """Settings are checked before anything starts: nothing is registered on the registry, no port opened."""
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


# --- every bad setting is one ConfigurationError naming the fix (exact messages) ---------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            '{"ryot_inference_latency_seconds": "123"}',
            "RYOT_TELEMETRY_BUCKETS: buckets for ryot_inference_latency_seconds: expected a list of numbers such as "
            "[0.1, 0.5, 1], got '123'",
        ),
        (
            '{"ryot_inference_latency_seconds": [true, 2]}',
            "RYOT_TELEMETRY_BUCKETS: buckets for ryot_inference_latency_seconds: True is not a number; expected a "
            "list of numbers, "
            "got [True, 2]",
        ),
        (
            "[1, 2]",
            "RYOT_TELEMETRY_BUCKETS must be a JSON object of name -> list, such as "
            '{"ryot_inference_latency_seconds": [0.1, 0.5, 1, 5]}',
        ),
    ],
)
def test_bad_bucket_values_from_env(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    """A string is not a bucket list (it would become 1, 2, 3) and a boolean is not a boundary."""
    monkeypatch.setenv("RYOT_TELEMETRY_BUCKETS", value)
    with pytest.raises(ConfigurationError) as e:
        configure(exporters="none", gpu=False)
    assert str(e.value) == message


def test_bool_bucket_boundaries_as_argument() -> None:
    """buckets= is checked the same way as the variable."""
    with pytest.raises(ConfigurationError) as e:
        configure(exporters="none", gpu=False, buckets={"ryot.ttft.latency": [0.1, False]})
    assert str(e.value) == (
        "buckets: buckets for ryot.ttft.latency: False is not a number; expected a list of numbers, got [0.1, False]"
    )


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "RYOT_TELEMETRY_GPU_MODELS",
            "0=a,0=b",
            "RYOT_TELEMETRY_GPU_MODELS='0=a,0=b': device 0 is named twice; give each device one model",
        ),
        (
            "RYOT_TELEMETRY_GPU",
            "maybe",
            "RYOT_TELEMETRY_GPU='maybe': expected auto, true or false",
        ),
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "10s",
            "OTEL_EXPORTER_OTLP_TIMEOUT='10s': expected a number of seconds > 0, such as 10",
        ),
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "-1",
            "OTEL_EXPORTER_OTLP_TIMEOUT='-1': expected a number of seconds > 0, such as 10",
        ),
        (
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "brotli",
            "OTEL_EXPORTER_OTLP_COMPRESSION='brotli': unknown compression; choose from gzip, deflate, none",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "collector:4317",
            "OTEL_EXPORTER_OTLP_ENDPOINT: malformed OTLP endpoint 'collector:4317'; expected a URL such as "
            "http://collector:4317 (grpc) or http://collector:4318 (http/protobuf)",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:43170000",
            "OTEL_EXPORTER_OTLP_ENDPOINT: malformed OTLP endpoint 'http://collector:43170000' "
            "(Port out of range 0-65535)",
        ),
        (
            "OTEL_METRICS_EXEMPLAR_FILTER",
            "sometimes",
            "OTEL_METRICS_EXEMPLAR_FILTER='sometimes': unknown filter; choose from always_off, always_on, trace_based",
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "soon", "OTEL_METRIC_EXPORT_INTERVAL='soon': expected an integer"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "0", "OTEL_METRIC_EXPORT_INTERVAL must be >= 1, got 0"),
        ("RYOT_TELEMETRY_MAX_MODELS", "0", "RYOT_TELEMETRY_MAX_MODELS must be >= 1, got 0"),
        ("RYOT_TELEMETRY_MAX_PENDING", "lots", "RYOT_TELEMETRY_MAX_PENDING='lots': expected an integer"),
        ("RYOT_TELEMETRY_GENAI_SEMCONV", "sure", "RYOT_TELEMETRY_GENAI_SEMCONV='sure': expected true or false"),
        (
            "RYOT_TELEMETRY_PROMETHEUS_REGISTRY",
            "shared",
            "RYOT_TELEMETRY_PROMETHEUS_REGISTRY='shared': unknown value 'shared'; choose from global, private",
        ),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "99999", "OTEL_EXPORTER_PROMETHEUS_PORT must be 0-65535, got 99999"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            "deltas",
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE='deltas': unknown value 'deltas'; choose from "
            "cumulative, delta, lowmemory",
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
            "exponential",
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION='exponential': unknown value 'exponential'; "
            "choose from explicit_bucket_histogram, base2_exponential_bucket_histogram",
        ),
        (
            "RYOT_TELEMETRY_DROP_DUPLICATES",
            "ogx,vllm",
            "RYOT_TELEMETRY_DROP_DUPLICATES='ogx,vllm': unknown source 'vllm'; choose from ogx",
        ),
        (
            "RYOT_TELEMETRY_TENANT",
            "metadata tenant",
            "RYOT_TELEMETRY_TENANT='metadata tenant': expected a dotted path into the request params such as "
            "metadata.tenant or user, or one of ogx:principal, ogx:tenant_id",
        ),
        (
            "RYOT_TELEMETRY_TENANT",
            "ogx:user",
            "RYOT_TELEMETRY_TENANT='ogx:user': expected a dotted path into the request params such as "
            "metadata.tenant or user, or one of ogx:principal, ogx:tenant_id",
        ),
        ("RYOT_TELEMETRY_MAX_TENANTS", "0", "RYOT_TELEMETRY_MAX_TENANTS must be >= 1, got 0"),
        ("RYOT_TELEMETRY_MAX_TENANTS", "many", "RYOT_TELEMETRY_MAX_TENANTS='many': expected an integer"),
    ],
)
def test_bad_environment_values(monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str) -> None:
    """Each variable is checked at start-up, whether or not the reader that uses it is on, with one message."""
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as e:
        configure(exporters="none")
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prometheus_port": "9464"}, "prometheus_port must be an integer, got '9464'"),
        ({"prometheus_port": 70000}, "prometheus_port must be 0-65535, got 70000"),
        ({"max_models": 2.5}, "max_models must be an integer, got 2.5"),
        ({"max_label_length": True}, "max_label_length must be an integer, got True"),
        ({"export_interval_ms": 0}, "export_interval_ms must be >= 1, got 0"),
        ({"semconv": "yes"}, "semconv must be True or False, got 'yes'"),
        ({"exporters": 3}, "exporters must be a string or a list of strings, got 3"),
        (
            {"exporters": ["prometheus", None]},
            "exporters must be a string or a list of strings, got ['prometheus', None]",
        ),
        ({"buckets": [0.1, 1]}, "buckets must be a mapping of metric name -> list of numbers, got [0.1, 1]"),
        ({"prices": 3}, "prices must be a PriceTable, a mapping or a file path, got 3"),
        ({"gpu": "auto"}, "gpu must be True, False or None (auto), got 'auto'"),
        ({"gpu_models": "0=a"}, "gpu_models must be a mapping of device -> model name, got '0=a'"),
        ({"gpu_models": {0: "a", "0": "b"}}, "gpu_models: device 0 is named twice ('a' and 'b')"),
        (
            {"gpu_models": {"gpu0": "a"}},
            "gpu_models: device_id must be a GPU index such as 0 or a MIG instance such as '0/1', got 'gpu0'",
        ),
        ({"otlp_endpoint": 4317}, "otlp_endpoint must be a URL string, got 4317"),
        (
            {"otlp_endpoint": "grpc://collector:4317"},
            "otlp_endpoint: malformed OTLP endpoint 'grpc://collector:4317'; expected a URL such as "
            "http://collector:4317 (grpc) or http://collector:4318 (http/protobuf)",
        ),
        ({"otlp_protocol": 1}, "otlp_protocol must be a non-empty string, got 1"),
        ({"service_name": ""}, "service_name must be a non-empty string, got ''"),
        ({"resource_attributes": ["a"]}, "resource_attributes must be a mapping of attribute name -> value, got ['a']"),
        ({"readers": [object]}, f"readers must be a list of MetricReader objects, got {object!r}"),
        ({"prometheus_registry": 1}, "prometheus_registry must be a CollectorRegistry, 'private' or 'global', got 1"),
        ({"set_global": 1}, "set_global must be True or False, got 1"),
        ({"genai_server": 8321}, "genai_server must be a 'host:port' string, got 8321"),
        (
            {"genai_server": "router"},
            "genai_server='router': expected host:port with a port 1-65535, such as router.internal:8321 "
            "(IPv6 as [addr]:port)",
        ),
        (
            {"otlp_temporality": "monthly"},
            "otlp_temporality: unknown value 'monthly'; choose from cumulative, delta, lowmemory",
        ),
        (
            {"otlp_histogram_aggregation": "native"},
            "otlp_histogram_aggregation: unknown value 'native'; choose from explicit_bucket_histogram, "
            "base2_exponential_bucket_histogram",
        ),
        ({"drop_duplicates": "litellm"}, "drop_duplicates: unknown source 'litellm'; choose from ogx"),
        ({"drop_duplicates": 1}, "drop_duplicates must be a string or a list of strings, got 1"),
        (
            {"tenant": 3},
            "tenant must be a callable, a dotted path such as 'metadata.tenant', or one of ogx:principal, "
            "ogx:tenant_id; got 3",
        ),
        (
            {"tenant": "metadata..tenant"},
            "tenant='metadata..tenant': expected a dotted path into the request params such as metadata.tenant "
            "or user, or one of ogx:principal, ogx:tenant_id",
        ),
        (
            {"tenant": ""},
            "tenant='': expected a dotted path into the request params such as metadata.tenant or user, or one "
            "of ogx:principal, ogx:tenant_id",
        ),
        ({"max_tenants": 0}, "max_tenants must be >= 1, got 0"),
        ({"max_tenants": "50"}, "max_tenants must be an integer, got '50'"),
    ],
)
def test_wrong_argument_values_are_configuration_errors(kwargs: dict, message: str) -> None:
    """A wrong type or value for any configure() argument is one ConfigurationError naming the argument."""
    kwargs = {"gpu": False, "exporters": "none", "prometheus_registry": "private", **kwargs}
    with pytest.raises(ConfigurationError) as e:
        configure(**kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("value", ["router.internal", "router:0", "router:70000", ":8321", "::1:8321", "router:http"])
def test_bad_genai_server_from_env(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """server.port is required with server.address (semconv), so RYOT_TELEMETRY_GENAI_SERVER without a valid port,
    or an IPv6 address without brackets, fails at start-up."""
    monkeypatch.setenv("RYOT_TELEMETRY_GENAI_SERVER", value)
    with pytest.raises(ConfigurationError) as e:
        configure(exporters="none")
    assert str(e.value) == (
        f"RYOT_TELEMETRY_GENAI_SERVER={value!r}: expected host:port with a port 1-65535, such as "
        "router.internal:8321 (IPv6 as [addr]:port)"
    )


def test_settings_are_frozen_and_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() keeps the Settings it ran with; changing the environment afterwards changes nothing."""
    import dataclasses

    monkeypatch.setenv("RYOT_TELEMETRY_MAX_MODELS", "7")
    tel = configure(exporters="none", gpu=False)
    try:
        monkeypatch.setenv("RYOT_TELEMETRY_MAX_MODELS", "9")
        assert tel.settings is not None
        assert tel.settings.max_models == 7
        assert tel.recorder.models.max_models == 7
        with pytest.raises(dataclasses.FrozenInstanceError):
            tel.settings.max_models = 8  # type: ignore[misc]
    finally:
        tel.shutdown()


def test_otlp_settings_are_checked_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timeout, compression and endpoint from the environment are parsed once and build the exporter."""
    from ryot_telemetry.export.readers import otlp_reader
    from ryot_telemetry.settings import Settings

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2.5")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "GZIP")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "bogus-but-overridden")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    s = Settings.load(exporters="otlp", otlp_protocol="http/protobuf")
    assert (s.otlp_timeout, s.otlp_compression, s.otlp_endpoint) == (2.5, "gzip", "http://127.0.0.1:4318")
    assert s.otlp_endpoint_source == "OTEL_EXPORTER_OTLP_ENDPOINT"
    reader = otlp_reader(s)
    try:
        assert reader.otlp.sender.exporter._endpoint == "http://127.0.0.1:4318/v1/metrics"
    finally:
        reader.shutdown()


def test_unknown_setting_is_rejected() -> None:
    """Settings.load names an unknown keyword instead of ignoring it."""
    from ryot_telemetry.settings import Settings

    with pytest.raises(ConfigurationError, match=r"^unknown setting 'max_model'; known: "):
        Settings.load(max_model=3)


def test_configure_twice_without_shutdown_warns(caplog: pytest.LogCaptureFixture) -> None:
    """A second configure() while the first still runs logs a warning naming the fix."""
    from ryot_telemetry import configure

    first = configure(exporters="none", gpu=False)
    try:
        second = configure(exporters="none", gpu=False)
        second.shutdown()
    finally:
        first.shutdown()
    assert any("configure() called again" in r.getMessage() for r in caplog.records)


def test_otlp_protocol_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """otlp_protocol= wins; then an otlp_proto_* exporter name (from exporters= when given, else the variable),
    as it names the SDK's exporter class; then the METRICS_ then the general protocol variable; else grpc."""
    from ryot_telemetry.settings import Settings

    assert Settings.load().otlp_protocol == "grpc"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert Settings.load().otlp_protocol == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
    assert Settings.load().otlp_protocol == "grpc"
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp_proto_http")
    assert Settings.load().otlp_protocol == "http/protobuf"
    assert Settings.load(exporters="otlp").otlp_protocol == "grpc"  # the argument replaces the variable's names
    assert Settings.load(exporters=["otlp_proto_http"]).otlp_protocol == "http/protobuf"
    assert Settings.load(otlp_protocol="grpc").otlp_protocol == "grpc"


def test_every_variable_settings_reads_is_documented() -> None:
    """Each OTEL_*/RYOT_TELEMETRY_* variable named in settings.py, its loaders (config/) or env.py is on the
    configuration page."""
    import ast
    import re
    from pathlib import Path

    from ryot_telemetry import env, settings

    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "reference" / "configuration.md").read_text()
    table = page[page.index("<!-- BEGIN CONFIG TABLE -->") : page.index("<!-- END CONFIG TABLE -->")]
    sources = [Path(settings.__file__), *sorted((Path(settings.__file__).parent / "config").glob("*.py"))]
    trees = [ast.parse(p.read_text()) for p in sources]
    names = {
        node.value
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"(OTEL|RYOT_TELEMETRY)_[A-Z_]+", node.value)
    }
    # the OTEL_* names settings.py takes from opentelemetry's environment_variables constants
    names |= {
        alias.name
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("environment_variables")
        for alias in node.names
    }
    names |= {v for k, v in vars(env).items() if k.startswith("RYOT_TELEMETRY_")}
    assert "OTEL_EXPORTER_OTLP_TIMEOUT" in names and "RYOT_TELEMETRY_GPU_MODELS" in names
    assert sorted(n for n in names if f"`{n}`" not in table) == []


_NOT_UTF8 = "labels and resource attributes must be UTF-8 text without control characters"
_BAD_BYTES = "bytes that are not valid UTF-8"


@pytest.mark.parametrize(
    ("var", "value", "where", "what", "position"),
    [
        # os.environ holds bytes that are not valid UTF-8 as lone surrogates (U+DC80-U+DCFF)
        ("OTEL_SERVICE_NAME", "router-\udcff", "", _BAD_BYTES, 7),
        ("OTEL_SERVICE_NAME", "router\x1b[0m", "", "the character '\\x1b'", 6),
        ("RYOT_TELEMETRY_COMPONENT", "gate\x85way", "", "the character '\\x85'", 4),
        ("RYOT_TELEMETRY_GENAI_PROVIDER", "\udc80vllm", "", _BAD_BYTES, 0),
        ("RYOT_TELEMETRY_GENAI_SERVER", "rou\x08ter:8321", "", "the character '\\x08'", 3),
        ("RYOT_TELEMETRY_GPU_MODELS", "0=llama,1=mis\udcfftral", "", _BAD_BYTES, 13),
        ("OTEL_RESOURCE_ATTRIBUTES", "team=a\x7fb", "", "the character '\\x7f'", 6),
        # percent-decoded by the SDK: %0A is a newline in the attribute value
        ("OTEL_RESOURCE_ATTRIBUTES", "team=a%0Ab", " (team)='a\\nb'", "the character '\\n'", 1),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=r%09x", " (service.name)='r\\tx'", "the character '\\t'", 1),
    ],
)
def test_unencodable_label_values_from_the_environment_are_one_configuration_error(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, where: str, what: str, position: int
) -> None:
    """Values that become labels or resource attributes are checked at start-up: a control character or invalid
    UTF-8 would otherwise break every scrape and OTLP export (issue 9), and is rejected naming the variable."""
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as err:
        configure(exporters="none", gpu=False)
    shown = where or f"={value!r}"
    assert str(err.value) == f"{var}{shown}: contains {what} at position {position}; {_NOT_UTF8}"


@pytest.mark.parametrize(
    ("arguments", "where", "what", "position"),
    [
        ({"service_name": "r\ud800"}, "service_name='r\\ud800'", "the character '\\ud800'", 1),
        ({"genai_server": "h\x01:80"}, "genai_server='h\\x01:80'", "the character '\\x01'", 1),
        ({"gpu_models": {0: "lla\x00ma"}}, "gpu_models[0]='lla\\x00ma'", "the character '\\x00'", 3),
        (
            {"resource_attributes": {"t": "x\udfff"}},
            "resource_attributes['t']='x\\udfff'",
            "the character '\\udfff'",
            1,
        ),
        ({"resource_attributes": {"t\x7f": "x"}}, "resource_attributes key='t\\x7f'", "the character '\\x7f'", 1),
    ],
)
def test_unencodable_label_values_from_arguments_are_one_configuration_error(
    arguments: dict[str, object], where: str, what: str, position: int
) -> None:
    with pytest.raises(ConfigurationError) as err:
        configure(exporters="none", gpu=False, **arguments)  # type: ignore[arg-type]
    assert str(err.value) == f"{where}: contains {what} at position {position}; {_NOT_UTF8}"


def test_non_ascii_configured_values_reach_the_scrape_and_otlp_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Printable non-ASCII values (accents, CJK, emoji, NBSP) are valid: they pass unchanged, the scrape parses and
    the OTLP payload encodes with them."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    monkeypatch.setenv("OTEL_SERVICE_NAME", "routeur-café 模型")
    monkeypatch.setenv("RYOT_TELEMETRY_COMPONENT", "passerelle\u00a0🚀")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=%C3%A9quipe-%E7%AE%97")
    reader = InMemoryMetricReader()
    tel = configure(prometheus_registry="private", start_prometheus_server=False, gpu=False, readers=[reader])
    try:
        text = generate_latest(tel.registry).decode("utf-8")
        samples = {s.name: s.labels for fam in text_string_to_metric_families(text) for s in fam.samples}
        info = samples["ryot_service_info"]
        assert (info["service"], info["component"]) == ("routeur-café 模型", "passerelle\u00a0🚀")
        assert samples["target_info"]["team"] == "équipe-算"
        payload = ExportMetricsServiceRequest.FromString(encode_metrics(reader.get_metrics_data()).SerializeToString())
        resource = {a.key: a.value.string_value for a in payload.resource_metrics[0].resource.attributes}
        assert (resource["service.name"], resource["team"]) == ("routeur-café 模型", "équipe-算")
        (info_point,) = [
            p
            for sm in payload.resource_metrics[0].scope_metrics
            for m in sm.metrics
            if m.name == "ryot.service.info"
            for p in m.gauge.data_points
        ]
        attrs = {a.key: a.value.string_value for a in info_point.attributes}
        assert (attrs["service"], attrs["component"]) == ("routeur-café 模型", "passerelle\u00a0🚀")
    finally:
        tel.shutdown()


def _no_params() -> str:
    return "acme"


def test_tenant_sources_are_checked_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A callable must take the params; ogx sources need ogx installed; good sources load as given (an environment
    value stripped), a builtin without a signature is accepted; without a source there is no tenant label."""
    from ryot_telemetry.settings import Settings

    with pytest.raises(ConfigurationError) as e:
        Settings.load(tenant=_no_params)
    assert str(e.value) == f"tenant: {_no_params!r} must take one argument, the call's params"
    monkeypatch.setitem(sys.modules, "ogx", None)  # find_spec("ogx") is then None: ogx is not installed
    for source in ("ogx:principal", "ogx:tenant_id"):
        with pytest.raises(ConfigurationError) as e:
            Settings.load(tenant=source)
        assert str(e.value) == (
            f"tenant={source!r}: reads ogx's authenticated user, but ogx is not installed here; use a dotted path "
            "such as metadata.tenant, or a callable"
        )
    assert (Settings.load().tenant, Settings.load().max_tenants) == (None, 50)
    assert Settings.load(tenant=len).tenant is len
    assert Settings.load(tenant="metadata.tenant", max_tenants=3).max_tenants == 3
    monkeypatch.setenv("RYOT_TELEMETRY_TENANT", "  user ")
    monkeypatch.setenv("RYOT_TELEMETRY_MAX_TENANTS", "7")
    loaded = Settings.load()
    assert (loaded.tenant, loaded.max_tenants) == ("user", 7)
    assert Settings.load(tenant="metadata.tenant").tenant == "metadata.tenant"  # the argument wins


@pytest.mark.parametrize(
    ("temporality", "aggregation", "expect"),
    [
        (" Delta ", "BASE2_EXPONENTIAL_BUCKET_HISTOGRAM", ("delta", "exponential", True)),
        ("LowMemory", None, ("lowmemory", "explicit", True)),
        (None, None, ("cumulative", "explicit", False)),
    ],
)
def test_otlp_temporality_and_histogram_aggregation_reach_the_exporter(
    monkeypatch: pytest.MonkeyPatch, temporality: str | None, aggregation: str | None, expect: tuple[str, ...]
) -> None:
    """The two standard variables (any case, as the newest OTLP exporters read them) reach the OTLP reader:
    (temporality, histogram aggregation, whether ryot computes deltas). The reader collects cumulative data for
    every instrument (ryot's deltas are computed from it). The arguments win over the variables."""
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

    from ryot_telemetry.export.readers import otlp_reader
    from ryot_telemetry.settings import Settings

    for var, value in (
        ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", temporality),
        ("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", aggregation),
    ):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    settings = Settings.load(exporters="otlp")
    reader = otlp_reader(settings)
    exporter = reader.otlp
    exponential = isinstance(exporter._preferred_aggregation[Histogram], ExponentialBucketHistogramAggregation)
    got = (settings.otlp_temporality, "exponential" if exponential else "explicit", exporter.delta)
    assert got == expect
    assert set(exporter._preferred_temporality.values()) == {AggregationTemporality.CUMULATIVE}
    overridden = Settings.load(otlp_temporality="cumulative", otlp_histogram_aggregation="explicit_bucket_histogram")
    assert (overridden.otlp_temporality, overridden.otlp_histogram_aggregation) == (
        "cumulative",
        "explicit_bucket_histogram",
    )
    reader.shutdown()


def test_exponential_otlp_histograms_in_multiprocess_mode_are_one_configuration_error(tmp_path: Path) -> None:
    """The merged multi-process export has explicit buckets only: asking for exponential ones fails at start-up."""
    with pytest.raises(ConfigurationError) as e:
        configure(
            multiproc_dir=tmp_path,
            exporters="otlp",
            otlp_histogram_aggregation="base2_exponential_bucket_histogram",
            gpu=False,
        )
    assert str(e.value).startswith(
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION / otlp_histogram_aggregation="
        "base2_exponential_bucket_histogram is not supported in multi-process mode (RYOT_TELEMETRY_MULTIPROC_DIR)"
    )


def test_exponential_otlp_leaves_histogram_views_to_the_readers() -> None:
    """views(explicit_buckets=False): every histogram View (ryot's and the semconv ones) has the default
    aggregation, so a reader's own preference applies (a View's aggregation would win over it); the rest keep
    their Views as before."""
    from opentelemetry.sdk.metrics.view import DefaultAggregation, ExplicitBucketHistogramAggregation

    from ryot_telemetry.catalogue import CATALOGUE

    histograms = {m.name for m in CATALOGUE if m.buckets is not None}
    explicit = {v._instrument_name: v._aggregation for v in views()}
    left = {v._instrument_name: v._aggregation for v in views(explicit_buckets=False)}
    assert explicit.keys() == left.keys()
    hist_names = {n for n, a in explicit.items() if isinstance(a, ExplicitBucketHistogramAggregation)}
    assert histograms < hist_names  # the catalogue's histograms and the semconv ones
    assert all(isinstance(left[n], DefaultAggregation) for n in hist_names)


@pytest.mark.parametrize("how", ["argument", "env", "off"])
def test_drop_duplicates_ogx_drops_only_the_ogx_instruments_ryot_supersedes(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """drop_duplicates="ogx" (or RYOT_TELEMETRY_DROP_DUPLICATES=ogx): ogx's three router histograms, recorded on
    ryot's provider as ogx records them (meter ogx.inference), have no points; ogx's model-type counter and a
    histogram of the same name on another meter keep theirs. Off (the default): all of them are there."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ryot_telemetry.recording.duplicates import SUPERSEDED
    from ryot_telemetry.settings import DUPLICATE_SOURCES

    assert tuple(SUPERSEDED) == DUPLICATE_SOURCES
    if how == "env":
        monkeypatch.setenv("RYOT_TELEMETRY_DROP_DUPLICATES", " OGX ")
    reader = InMemoryMetricReader()
    tel = configure(exporters="none", readers=[reader], gpu=False, drop_duplicates="ogx" if how == "argument" else None)
    try:
        ogx = tel.meter_provider.get_meter("ogx.inference", "1.0.0")
        attrs = {"model": "vllm/llama", "provider": "vllm", "stream": "false", "status": "success"}
        for s in SUPERSEDED["ogx"]:
            ogx.create_histogram(s.instrument, unit="s").record(0.5, attrs)
        ogx.create_counter("ogx.inference.model_type_used_total").add(1, {"model_type": "llm"})
        other = tel.meter_provider.get_meter("someone.else")
        other.create_histogram("ogx.inference.duration_seconds").record(0.5)
        data = reader.get_metrics_data()
    finally:
        tel.shutdown()
    got = sorted(
        (sm.scope.name, m.name)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.data.data_points and (m.name.startswith("ogx.") or sm.scope.name.startswith("ogx"))
    )
    kept = [
        ("ogx.inference", "ogx.inference.model_type_used_total"),
        ("someone.else", "ogx.inference.duration_seconds"),
    ]
    dropped = [("ogx.inference", s.instrument) for s in SUPERSEDED["ogx"]]
    assert got == sorted(kept if how != "off" else kept + dropped)


def test_a_superseded_instrument_is_answered_only_by_catalogue_metrics() -> None:
    """Each ogx instrument ryot supersedes names the catalogue metrics answering it; a name the catalogue does not
    know is a KeyError when the entry is declared (at import), not a wrong line in the duplicates docs."""
    from ryot_telemetry.recording.duplicates import SUPERSEDED, Superseded

    assert [s.answered_by for s in SUPERSEDED["ogx"]] == [
        ("ryot.inference.latency", "ryot.inference.requests"),
        ("ryot.ttft.latency",),
        ("ryot.tokens_per_second", "ryot.sliding_tokens_per_second"),
    ]
    with pytest.raises(KeyError, match=r"unknown ryot metric 'ryot\.inference\.latencies'"):
        Superseded("m", "i", "e", (), ("ryot.inference.latencies",), "")


def test_telemetry_drain_records_the_queue_and_collect_is_its_deprecated_spelling() -> None:
    """``Telemetry.drain()`` returns how many queued requests it recorded; ``collect()`` does the same, warning."""
    import warnings

    from ryot_telemetry import configure

    tel = configure(exporters="none", gpu=False)
    try:
        tel.recorder.stop_drainer()
        for _ in range(3):
            tel.recorder.start("m", "chat_completion", "standard").success()
        assert tel.drain() == 3
        tel.recorder.start("m", "chat_completion", "standard").success()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tel.collect()
        assert [w.category for w in caught] == [DeprecationWarning]
        assert tel.drain() == 0
    finally:
        tel.shutdown()


# --- every ConfigurationError names the variable or argument it came from ----------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "arguments", "message"),
    [
        (
            "OTEL_METRICS_EXPORTER",
            "prometheus,statsd",
            {},
            "OTEL_METRICS_EXPORTER='prometheus,statsd': unknown metrics exporter 'statsd'; "
            "choose from prometheus, otlp, console, none",
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "thrift",
            {"exporters": "otlp"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='thrift': unknown OTLP protocol 'thrift'; choose grpc or http/protobuf",
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "HTTP/JSON",
            {"exporters": "otlp"},
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL='HTTP/JSON': unknown OTLP protocol 'http/json'; "
            "choose grpc or http/protobuf",
        ),
        (
            "RYOT_TELEMETRY_BUCKETS",
            '{"ryot_inference_requests_total": [1, 2]}',
            {},
            "RYOT_TELEMETRY_BUCKETS: ryot_inference_requests_total is a counter, not a histogram: it has no buckets",
        ),
        (
            "RYOT_TELEMETRY_BUCKETS",
            '{"ryot_inference_latency_seconds": [0.5, 0.1]}',
            {"buckets": {"ryot_time_to_first_token_seconds": [0.1, 0.2]}},  # a good argument: the variable is named
            "RYOT_TELEMETRY_BUCKETS: buckets for ryot_inference_latency_seconds not in strictly increasing order: "
            "[0.5, 0.1]",
        ),
    ],
    ids=["exporter", "protocol", "metrics-protocol", "buckets-counter", "buckets-unsorted"],
)
def test_a_bad_variable_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, arguments: dict[str, Any], message: str
) -> None:
    """A bad value of each of these variables fails configure() with one line that starts with the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        configure(gpu=False, prometheus_registry="private", prometheus_port=0, **arguments)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"exporters": ["prometheus", "statsd"]},
            "exporters: unknown metrics exporter 'statsd'; choose from prometheus, otlp, console, none",
        ),
        (
            {"exporters": "otlp", "otlp_protocol": "thrift"},
            "otlp_protocol: unknown OTLP protocol 'thrift'; choose grpc or http/protobuf",
        ),
        (
            {"buckets": {"ryot_inference_requests_total": [1, 2]}},
            "buckets: ryot_inference_requests_total is a counter, not a histogram: it has no buckets",
        ),
        (
            {"buckets": {"ryot_inference_latency_seconds": "123"}},
            "buckets: buckets for ryot_inference_latency_seconds: expected a list of numbers such as [0.1, 0.5, 1], "
            "got '123'",
        ),
        (
            {"prices": {"m": {"prompt": -1}}},
            "prices: price table entry for 'm': prompt must be a finite number >= 0, got -1",
        ),
        (
            {"slos": {"m": {"ttft": -1}}},
            "slos: SLO table entry for 'm': ttft must be a number of seconds > 0, got -1",
        ),
        (
            {"gpu_models": {0: ""}},
            "gpu_models: gpu model for device 0 must be a non-empty string, got ''",
        ),
    ],
    ids=["exporters", "otlp_protocol", "buckets-counter", "buckets-not-a-list", "prices", "slos", "gpu_models"],
)
def test_a_bad_argument_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, arguments: dict[str, Any], message: str
) -> None:
    """A bad configure() argument fails with one line that starts with the argument's name, even when the
    variable of the same setting is set and valid."""
    monkeypatch.setenv("RYOT_TELEMETRY_BUCKETS", '{"ryot_inference_latency_seconds": [0.1, 1]}')
    with pytest.raises(ConfigurationError) as info:
        configure(gpu=False, prometheus_registry="private", prometheus_port=0, **arguments)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("variable", "content", "message"),
    [
        (
            "RYOT_TELEMETRY_PRICE_TABLE",
            '{"m": {"prompt": -1}}',
            "price table entry for 'm': prompt must be a finite number >= 0, got -1",
        ),
        (
            "RYOT_TELEMETRY_SLOS",
            '{"m": {"ttft": -1}}',
            "SLO table entry for 'm': ttft must be a number of seconds > 0, got -1",
        ),
    ],
    ids=["prices", "slos"],
)
def test_a_bad_table_file_from_a_variable_names_the_variable_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, content: str, message: str
) -> None:
    """A malformed price or SLO table named by its variable fails with the variable, the file and the entry."""
    table = tmp_path / "table.json"
    table.write_text(content)
    monkeypatch.setenv(variable, str(table))
    with pytest.raises(ConfigurationError) as info:
        configure(gpu=False, exporters="none")
    assert str(info.value) == f"{variable}: {table}: {message}"
    table.write_text(content)
    with pytest.raises(ConfigurationError) as info:
        configure(gpu=False, exporters="none", **{"prices" if "PRICE" in variable else "slos": str(table)})
    assert str(info.value) == f"{'prices' if 'PRICE' in variable else 'slos'}: {table}: {message}"


@pytest.mark.parametrize(
    ("value", "item"),
    [
        ("service.namespace=shop,deployment.environment", "deployment.environment"),
        ("service.namespace=shop;deployment.environment=prod", None),  # ';' is not a separator: one value, valid
        ("=prod", "=prod"),
        ("service.namespace=shop, =x", "=x"),
        ("oops", "oops"),
    ],
    ids=["missing-equals", "semicolon", "empty-key", "empty-key-later", "no-pair"],
)
def test_a_malformed_resource_attributes_variable_is_an_error(
    monkeypatch: pytest.MonkeyPatch, value: str, item: str | None
) -> None:
    """A pair of OTEL_RESOURCE_ATTRIBUTES without '=' or with an empty key fails at start-up naming the variable
    and the pair (the SDK would drop it with a log line)."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", value)
    if item is None:
        configure(gpu=False, exporters="none").shutdown()
        return
    with pytest.raises(ConfigurationError) as info:
        configure(gpu=False, exporters="none")
    assert str(info.value) == (
        f"OTEL_RESOURCE_ATTRIBUTES={value!r}: {item!r} is not key=value; expected comma-separated key=value pairs "
        "such as service.namespace=shop,deployment.environment=prod (values percent-encoded)"
    )


def test_well_formed_resource_attributes_reach_the_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """Good pairs (a trailing comma, spaces and percent-encoded values included) still reach the resource."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", " service.namespace = shop ,team=a%2Cb,")
    tel = configure(gpu=False, exporters="none")
    try:
        attributes = tel.meter_provider._sdk_config.resource.attributes
        assert (attributes["service.namespace"], attributes["team"]) == ("shop", "a,b")
    finally:
        tel.shutdown()


def test_an_unknown_ryot_variable_is_warned_about_once_naming_the_closest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A misspelt RYOT_TELEMETRY_MAX_MODEL is warned about once per process, naming RYOT_TELEMETRY_MAX_MODELS;
    known variables are not warned about."""
    from ryot_telemetry import _state

    monkeypatch.setattr(_state, "_once", set())
    monkeypatch.setenv("RYOT_TELEMETRY_MAX_MODEL", "10")
    monkeypatch.setenv("RYOT_TELEMETRY_TENANTS", "user")
    monkeypatch.setenv("RYOT_TELEMETRY_MAX_MODELS", "10")
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        for _ in range(2):
            configure(gpu=False, exporters="none").shutdown()
    assert [r.getMessage() for r in caplog.records if "not a ryot-telemetry variable" in r.getMessage()] == [
        "ryot-telemetry: RYOT_TELEMETRY_MAX_MODEL is not a ryot-telemetry variable and is ignored; "
        "did you mean RYOT_TELEMETRY_MAX_MODELS?",
        "ryot-telemetry: RYOT_TELEMETRY_TENANTS is not a ryot-telemetry variable and is ignored; "
        "did you mean RYOT_TELEMETRY_TENANT?",
    ]


def test_every_variable_env_py_declares_is_known() -> None:
    """The known names are exactly env.py's RYOT_TELEMETRY_* constants, so a new setting is never warned about."""
    from ryot_telemetry import env
    from ryot_telemetry.settings import known_variables, unknown_variables

    declared = {v for k, v in vars(env).items() if k.startswith("RYOT_TELEMETRY_")}
    assert set(known_variables()) == declared and len(declared) >= 18
    assert unknown_variables(dict.fromkeys(declared, "1")) == []
    assert unknown_variables({"RYOT_TELEMETRY_GPU_MODEL": "0=m", "OTHER": "x"}) == [
        ("RYOT_TELEMETRY_GPU_MODEL", "RYOT_TELEMETRY_GPU_MODELS")
    ]


# --- settings declared once ---------------------------------------------------------------------------------------


def test_configure_takes_exactly_the_declared_arguments_each_a_setting_with_a_docstring() -> None:
    """configure()'s keywords are the keys of settings.Arguments (its one declaration): each is a Settings field
    and has a docstring; the signature is **arguments typed Unpack[Arguments]; the docs table lists each once."""
    import dataclasses
    import inspect

    from ryot_telemetry import telemetry
    from ryot_telemetry.artifacts import docs
    from ryot_telemetry.settings import ARGUMENTS, Arguments, Settings

    assert set(Arguments.__annotations__) == ARGUMENTS and len(ARGUMENTS) == 32
    assert {f.name for f in dataclasses.fields(Settings)} >= ARGUMENTS
    declared = docs.arguments()
    assert [name for name, _, _ in declared] == list(Arguments.__annotations__)
    assert all(doc.strip() and kind for _, kind, doc in declared)
    (parameter,) = inspect.signature(telemetry.configure).parameters.values()
    assert (parameter.kind, parameter.annotation) == (inspect.Parameter.VAR_KEYWORD, "Unpack[Arguments]")
    table = docs.arguments_table().splitlines()
    assert [row.split("|")[1].strip() for row in table[2:]] == [f"`{name}`" for name in Arguments.__annotations__]
    assert telemetry.configure.__doc__ is not None
    assert telemetry.configure.__doc__.endswith(f"Arguments: {', '.join(Arguments.__annotations__)}.\n")


def test_an_argument_configure_does_not_take_is_a_type_error_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A keyword that is no argument (a typo, or a Settings field configure() does not take) is the TypeError
    Python gives for a named parameter, raised before settings are read."""
    monkeypatch.setenv("RYOT_TELEMETRY_MAX_MODELS", "abc")  # would be a ConfigurationError if settings were read
    for bad in ("prometheus_prot", "max_pending"):
        with pytest.raises(TypeError) as info:
            configure(**{bad: 1})  # type: ignore[misc]
        assert str(info.value) == f"configure() got an unexpected keyword argument {bad!r}"


def test_every_argument_given_as_none_is_the_same_as_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """None means "not given" for every declared argument: the settings equal those of no arguments at all."""
    from ryot_telemetry.settings import ARGUMENTS, Settings

    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "9999")
    monkeypatch.setenv("RYOT_TELEMETRY_MAX_MODELS", "7")
    given_none = Settings.load(**dict.fromkeys(ARGUMENTS))
    assert given_none == Settings.load()
    assert (given_none.prometheus_port, given_none.max_models, given_none.start_prometheus_server) == (9999, 7, True)


def test_otel_variable_names_come_from_the_sdk_constants() -> None:
    """settings.py, its loaders (config/), distro.py and the docs generator spell no OTEL_* variable the SDK (or
    API) defines as a string literal: they use opentelemetry's environment_variables constants."""
    import ast
    from pathlib import Path

    import opentelemetry.environment_variables as api_vars
    import opentelemetry.sdk.environment_variables as sdk_vars

    import ryot_telemetry

    defined = {n for n in (*vars(sdk_vars), *vars(api_vars)) if n.startswith("OTEL_")}
    root = Path(ryot_telemetry.__file__).parent
    literals = {
        f"{path.name}: {node.value}"
        for path in (
            root / "settings.py",
            *sorted((root / "config").glob("*.py")),
            root / "distro.py",
            root / "artifacts" / "docs.py",
        )
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in defined
    }
    assert literals == set()


def test_an_unknown_variable_whose_name_holds_a_newline_is_warned_about_on_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A variable name with a control character is shown as its repr, so the warning stays one line."""
    from ryot_telemetry import _state

    monkeypatch.setattr(_state, "_once", set())
    monkeypatch.setenv("RYOT_TELEMETRY_MAX\nMODELS", "10")
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        configure(gpu=False, exporters="none").shutdown()
    assert [r.getMessage() for r in caplog.records if "not a ryot-telemetry variable" in r.getMessage()] == [
        "ryot-telemetry: 'RYOT_TELEMETRY_MAX\\nMODELS' is not a ryot-telemetry variable and is ignored; "
        "did you mean RYOT_TELEMETRY_MAX_MODELS?"
    ]

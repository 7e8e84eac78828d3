"""What keeps ryot the same on the oldest dependencies pyproject allows (the floors): the Prometheus exporter shims;
and OTLP over gRPC as an extra."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from ryot_telemetry import ConfigurationError, configure
from ryot_telemetry._compat import RegistryPrometheusReader, merge_families, prometheus_reader
from support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
GRPC_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc.metric_exporter"
GRPC_MISSING = (
    "OTLP over gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc, the default protocol) needs the otlp-grpc extra: "
    "pip install 'ryot-telemetry[otlp-grpc]', or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
)


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
    reader = RegistryPrometheusReader(registry)
    assert reader._collector not in REGISTRY._collector_to_names
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("m").create_counter("moved").add(5)
    assert "moved_total" in generate_latest(registry).decode()
    provider.shutdown()
    assert generate_latest(registry) == b""
    assert reader._collector not in REGISTRY._collector_to_names


@pytest.fixture
def no_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gRPC exporter not installed (the base install without the otlp-grpc extra), and no OTLP settings."""
    monkeypatch.setitem(sys.modules, GRPC_EXPORTER, None)  # an import of it raises ImportError
    for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_METRICS_EXPORTER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.2")  # the final export to a closed port gives up at once


@pytest.mark.parametrize("protocol", [None, "grpc"])
def test_grpc_without_the_extra_is_one_clear_error_before_anything_listens(
    no_grpc: None, monkeypatch: pytest.MonkeyPatch, protocol: str | None
) -> None:
    """OTLP over gRPC, by default or by OTEL_EXPORTER_OTLP_PROTOCOL, without the exporter installed: one
    ConfigurationError naming the variable and the extra, raised before the scrape port is opened."""
    if protocol:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    port = free_port()
    with pytest.raises(ConfigurationError) as caught:
        configure(
            exporters="otlp,prometheus",
            otlp_endpoint="http://127.0.0.1:4317",
            prometheus_host="127.0.0.1",
            prometheus_port=port,
            prometheus_registry="private",
            gpu=False,
        )
    assert str(caught.value) == GRPC_MISSING
    assert isinstance(caught.value.__cause__, ImportError)
    with socket.socket() as s:  # nothing was left listening
        s.bind(("127.0.0.1", port))


def test_http_otlp_needs_no_grpc(no_grpc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf works with the base install alone (no gRPC exporter)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    tel = configure(exporters="otlp", otlp_endpoint=f"http://127.0.0.1:{free_port()}", gpu=False)
    try:
        exporter = tel.readers[0]._exporter.sender.exporter  # ryot's OtlpExport sends through the OTel exporter
        assert type(exporter).__module__ == "opentelemetry.exporter.otlp.proto.http.metric_exporter"
    finally:
        tel.shutdown()


def _pyproject() -> dict[str, object]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_grpc_is_an_extra_and_the_test_extra_brings_it() -> None:
    """The base install has OTLP over HTTP but no gRPC exporter; the otlp-grpc extra brings it, and so does the
    test extra (the gRPC tests need it)."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    base = [d.split(">")[0] for d in project["dependencies"]]
    extras = {k: [d.split(">")[0] for d in v] for k, v in project["optional-dependencies"].items()}
    assert "opentelemetry-exporter-otlp-proto-http" in base
    assert "opentelemetry-exporter-otlp-proto-grpc" not in base
    assert extras["otlp-grpc"] == ["opentelemetry-exporter-otlp-proto-grpc"]
    assert "opentelemetry-exporter-otlp-proto-grpc" in extras["test"]


def _floors_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("floors_script", ROOT / "scripts" / "floors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_lines_keep_the_lower_bound_and_the_marker() -> None:
    """scripts/floors.py pins a requirement's >= bound as pyproject spells it, keeps its environment marker, drops
    its extras and upper bound, and writes nothing for a requirement without a lower bound."""
    floor = _floors_script().floor
    assert [
        floor("opentelemetry-sdk>=1.37,<2"),
        floor("gunicorn>=22,<28; sys_platform != 'win32'"),
        floor("mkdocstrings[python] >= 0.26, <2"),
        floor("opentelemetry-semantic-conventions<1,>=0.58b0"),
        floor("fastapi"),
        floor("wrapt<3"),
    ] == [
        "opentelemetry-sdk==1.37",
        "gunicorn==22; sys_platform != 'win32'",
        "mkdocstrings==0.26",
        "opentelemetry-semantic-conventions==0.58b0",
        None,
        None,
    ]


def test_floors_cover_the_base_install_and_user_extras_and_with_test_the_otel_test_packages() -> None:
    """The dry run's constraints are every base and user-extra floor (not the docs, examples or test tools); the floor
    venv's add the test extra's opentelemetry-* packages, which are released with the SDK."""
    script = _floors_script()
    pyproject = {
        "project": {
            "dependencies": ["opentelemetry-sdk>=1.37,<2", "wrapt>=1.16,<3"],
            "optional-dependencies": {
                "otlp-grpc": ["opentelemetry-exporter-otlp-proto-grpc>=1.37,<2"],
                "docs": ["mkdocs>=1.6,<2"],
                "examples": ["fastapi>=0.110"],
                "test": [
                    "pytest>=8,<10",
                    "opentelemetry-proto>=1.37,<2",
                    "opentelemetry-exporter-otlp-proto-grpc>=1.37",
                ],
            },
        }
    }
    assert script.floors(pyproject) == [
        "opentelemetry-sdk==1.37",
        "wrapt==1.16",
        "opentelemetry-exporter-otlp-proto-grpc==1.37",
    ]
    assert script.floors(pyproject, test=True) == [*script.floors(pyproject), "opentelemetry-proto==1.37"]
    assert script.user_extras(pyproject) == ["otlp-grpc"]


def _release(v: str) -> tuple[tuple[int, ...], str]:
    """A version compared as PEP 440 compares these floors: 1.37 == 1.37.0."""
    m = re.match(r"(\d+(?:\.\d+)*)(.*)", v)
    assert m is not None, v
    parts = [int(p) for p in m.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts), m.group(2)


@pytest.mark.skipif(
    os.environ.get("RYOT_FLOORS_RUN") != "1",
    reason="the floors run only (scripts/test.sh runs tests/unit in .venv-floor with RYOT_FLOORS_RUN=1)",
)
def test_the_floors_run_has_every_pinned_dependency_at_its_floor() -> None:
    """In the floors run, every package scripts/floors.py pins is installed at exactly its floor, so the unit tier
    there tests the lowest versions pyproject allows."""
    from importlib.metadata import version

    pins = [line.split(";")[0].split("==") for line in _floors_script().floors(_floors_script().load(), test=True)]
    installed = {name: version(name) for name, _ in pins}
    assert {n: _release(installed[n]) for n, _ in pins} == {n: _release(f) for n, f in pins}

"""``configure()``: one MeterProvider with the catalogue's Views, fanned out to Prometheus and OTLP readers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlparse

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
)
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from . import catalogue, env
from ._instruments import METER_NAME, create_instrument, resolve_buckets, views
from ._labels import DEFAULT_MAX_LABEL_LENGTH, DEFAULT_MAX_MODELS
from ._recorder import DEFAULT_MAX_PENDING, Recorder, RequestSpanExemplarFilter
from ._wrapper import instrument_router
from .cost import PriceTable
from .slo import SloTable

_log = logging.getLogger("ryot_telemetry")

EXPORTERS = ("prometheus", "otlp", "console", "none")
PROTOCOLS = ("grpc", "http/protobuf")


class ConfigurationError(ValueError):
    """Bad configuration, reported once at start-up with what to change."""


def package_version() -> str:
    try:
        return version("ryot-telemetry")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={raw!r}: expected true or false")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r}: expected an integer") from None


def _pick(arg: Any, env_name: str, default: Any) -> Any:
    if arg is not None:
        return arg
    raw = os.environ.get(env_name)
    return raw if raw not in (None, "") else default


def _exporters(arg: str | Sequence[str] | None) -> list[str]:
    raw = arg if arg is not None else os.environ.get("OTEL_METRICS_EXPORTER")
    if raw is None or raw == "":
        names = ["prometheus"]
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
            names.append("otlp")
        return names
    names = [s.strip().lower() for s in (raw.split(",") if isinstance(raw, str) else raw) if s.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ConfigurationError(f"unknown metrics exporter {unknown[0]!r}; choose from {', '.join(EXPORTERS)}")
    return [n for n in names if n != "none"]


def _buckets(arg: Mapping[str, Sequence[float]] | None) -> dict[str, tuple[float, ...]]:
    overrides: dict[str, Sequence[float]] = {}
    raw = os.environ.get(env.RYOT_TELEMETRY_BUCKETS)
    if raw:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigurationError(f"{env.RYOT_TELEMETRY_BUCKETS} is not valid JSON: {e}") from None
        if not isinstance(parsed, dict):
            raise ConfigurationError(f"{env.RYOT_TELEMETRY_BUCKETS} must be a JSON object of name -> list")
        overrides.update(parsed)
    overrides.update(arg or {})
    try:
        return resolve_buckets(overrides)
    except ValueError as e:
        raise ConfigurationError(str(e)) from None


def _prices(arg: PriceTable | Mapping[str, Any] | str | os.PathLike[str] | None) -> PriceTable | None:
    try:
        if isinstance(arg, PriceTable):
            return arg
        if isinstance(arg, Mapping):
            return PriceTable(arg)
        if arg is not None:
            return PriceTable.from_file(arg)
        path = os.environ.get(env.RYOT_TELEMETRY_PRICE_TABLE)
        return PriceTable.from_file(path) if path else None
    except ValueError as e:
        raise ConfigurationError(f"price table: {e}") from None


def _slos(arg: SloTable | Mapping[str, Any] | str | os.PathLike[str] | None) -> SloTable | None:
    try:
        if arg is not None:
            return SloTable.load(arg)
        path = os.environ.get(env.RYOT_TELEMETRY_SLOS)
        return SloTable.from_file(path) if path else None
    except ValueError as e:
        raise ConfigurationError(f"SLO table: {e}") from None


def _otlp_reader(endpoint: str | None, protocol: str | None, interval_ms: int | None) -> MetricReader:
    proto = _pick(protocol, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", None) or _pick(
        None, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    proto = proto.strip().lower()
    if proto not in PROTOCOLS:
        raise ConfigurationError(f"unknown OTLP protocol {proto!r}; choose grpc or http/protobuf")
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        kw: dict[str, Any] = {}
        if endpoint:
            kw["endpoint"] = endpoint
            kw["insecure"] = urlparse(endpoint).scheme != "https"
        exporter: Any = GrpcExporter(**kw)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

        if endpoint and not urlparse(endpoint).path.rstrip("/").endswith("/v1/metrics"):
            endpoint = endpoint.rstrip("/") + "/v1/metrics"
        exporter = HttpExporter(endpoint=endpoint) if endpoint else HttpExporter()
    return PeriodicExportingMetricReader(exporter, export_interval_millis=_interval(interval_ms))


def _interval(interval_ms: int | None) -> int:
    interval = interval_ms if interval_ms is not None else _env_int("OTEL_METRIC_EXPORT_INTERVAL", 60000)
    if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
        raise ConfigurationError(f"export interval must be a whole number of ms > 0, got {interval!r}")
    return interval


def _whole(name: str, value: Any) -> Any:
    """Integer arguments are checked up front, so a wrong type is a ConfigurationError rather than a TypeError."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    return value


def _resource(service_name: str | None, attributes: Mapping[str, str] | None) -> Resource:
    """service.name: the argument, else OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, else ryot-inference."""
    resource = Resource.create(dict(attributes or {}))
    if service_name:
        return resource.merge(Resource({SERVICE_NAME: service_name}))
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return resource.merge(Resource({SERVICE_NAME: "ryot-inference"}))
    return resource


@dataclass
class Telemetry:
    """What ``configure()`` built. ``shutdown()`` flushes OTLP and frees the scrape port."""

    meter_provider: MeterProvider
    meter: Meter
    recorder: Recorder
    readers: list[MetricReader]
    prometheus_url: str | None = None
    registry: Any = None
    _server: Any = None
    _closers: list[Any] = field(default_factory=list)
    _closed: bool = False
    engine: Any = None  # EngineMetrics: model loads, evictions, start-up phases, queue, KV cache, GPU breakdowns
    gpu: Any = None  # GpuGauges: the NVML gauges

    def instrument_router(self, router: Any) -> Any:
        """Wrap ``router``'s OpenAI-style methods so they record into this telemetry."""
        return instrument_router(router, self.recorder)

    def collect(self) -> None:
        """Record queued measurements now (they are otherwise recorded at the next scrape/export)."""
        self.recorder.drain()

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.meter_provider.shutdown()
        except Exception:
            _log.warning("ryot-telemetry: error while shutting down the meter provider", exc_info=True)
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                _log.debug("ryot-telemetry: error while shutting down", exc_info=True)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        global _current
        if _current is self:
            _current = None

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


_current: Telemetry | None = None
_default_lock = threading.Lock()
# Keyed by the provider object itself (weakly): an id() could be reused by a later provider after this one is freed.
_default_recorders: weakref.WeakKeyDictionary[Any, Recorder] = weakref.WeakKeyDictionary()


def default_recorder() -> Recorder:
    """The recorder of the last ``configure()``, else one on the global MeterProvider (made once)."""
    if _current is not None:
        return _current.recorder
    provider = metrics.get_meter_provider()
    with _default_lock:
        rec = _default_recorders.get(provider)
        if rec is None:
            rec = _default_recorders[provider] = build_recorder(provider.get_meter(METER_NAME, package_version()))
        return rec


def build_recorder(meter: Meter, **overrides: Any) -> Recorder:
    """A Recorder configured from ``RYOT_TELEMETRY_*`` variables, with keyword overrides."""
    semconv = overrides.pop("semconv", None)
    kw: dict[str, Any] = {
        "buckets": _buckets(overrides.pop("buckets", None)),
        "max_models": _env_int(env.RYOT_TELEMETRY_MAX_MODELS, DEFAULT_MAX_MODELS),
        "max_label_length": _env_int(env.RYOT_TELEMETRY_MAX_LABEL_LENGTH, DEFAULT_MAX_LABEL_LENGTH),
        "prices": _prices(overrides.pop("prices", None)),
        "semconv": semconv if semconv is not None else _env_bool(env.RYOT_TELEMETRY_GENAI_SEMCONV, False),
        "genai_provider": _pick(
            overrides.pop("genai_provider", None), env.RYOT_TELEMETRY_GENAI_PROVIDER, "llama_stack"
        ),
        "max_pending": _env_int(env.RYOT_TELEMETRY_MAX_PENDING, DEFAULT_MAX_PENDING),
        "slos": _slos(overrides.pop("slos", None)),
        "exemplars": not isinstance(exemplar_filter(), AlwaysOffExemplarFilter),
    }
    kw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Recorder(meter, **kw)
    except ValueError as e:
        raise ConfigurationError(str(e)) from None


_EXEMPLAR_FILTERS: dict[str, Callable[[], ExemplarFilter]] = {
    "trace_based": RequestSpanExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
}


def exemplar_filter(enabled: bool = True) -> ExemplarFilter:
    """``OTEL_METRICS_EXEMPLAR_FILTER`` when set; else trace-based, or off when ``enabled`` is false.

    Trace-based: a request that ran inside a sampled span gives its latency and TTFT an exemplar pointing at that
    trace (the recorder keeps the span context until it records). ``configure()`` turns them off when only the
    Prometheus reader is used: opentelemetry-python's Prometheus exporter drops exemplars, so keeping them would
    cost time for nothing.
    """
    raw = os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER", "").strip().lower()
    if raw:
        if raw not in _EXEMPLAR_FILTERS:
            raise ConfigurationError(
                f"OTEL_METRICS_EXEMPLAR_FILTER={raw!r}: choose from {', '.join(_EXEMPLAR_FILTERS)}"
            )
        return _EXEMPLAR_FILTERS[raw]()
    return RequestSpanExemplarFilter() if enabled else AlwaysOffExemplarFilter()


def install_service_info(meter: Meter, service: str, component: str) -> None:
    attrs = {"version": package_version(), "service": service, "component": component}

    def observe(options: CallbackOptions) -> list[Observation]:
        return [Observation(1, attrs)]

    create_instrument(meter, catalogue.get("ryot.service.info"), callbacks=[observe])


def configure(
    *,
    service_name: str | None = None,
    exporters: str | Sequence[str] | None = None,
    prometheus_host: str | None = None,
    prometheus_port: int | None = None,
    prometheus_registry: Any = None,
    start_prometheus_server: bool = True,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    export_interval_ms: int | None = None,
    buckets: Mapping[str, Sequence[float]] | None = None,
    prices: PriceTable | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    slos: SloTable | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    semconv: bool | None = None,
    genai_provider: str | None = None,
    max_models: int | None = None,
    max_label_length: int | None = None,
    gpu: bool | None = None,
    gpu_models: Mapping[int, str] | None = None,
    gpu_backend: Any = None,
    readers: Sequence[MetricReader] = (),
    resource_attributes: Mapping[str, str] | None = None,
    set_global: bool = False,
) -> Telemetry:
    """Build the MeterProvider, readers and recorder. Raises ``ConfigurationError`` with one clear message.

    ``exporters``: any of prometheus, otlp, console, none (default: ``OTEL_METRICS_EXPORTER``, else prometheus,
    plus otlp when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set). ``prometheus_registry``: a
    ``prometheus_client.CollectorRegistry``, or ``"private"`` for a fresh one exposing only these metrics.
    ``readers``: extra readers, e.g. an ``InMemoryMetricReader`` in tests. ``slos``: an SLO table (mapping, path
    or ``SloTable``; default ``RYOT_TELEMETRY_SLOS``) enabling ``ryot_slo_requests_total``.
    """
    global _current
    if _current is not None and not _current._closed:
        _log.warning(
            "ryot-telemetry: configure() called again while an earlier Telemetry is still running; "
            "call .shutdown() on it first, or both will export (duplicate series on a shared registry)"
        )
    names = _exporters(exporters)
    bucket_map = _buckets(buckets)
    _whole("max_models", max_models)
    _whole("max_label_length", max_label_length)
    resource = _resource(service_name, resource_attributes)
    service = str(resource.attributes[SERVICE_NAME])
    all_readers: list[MetricReader] = list(readers)
    closers: list[Any] = []
    registry = None
    server = None
    prom_url = None

    # Readers that start nothing are built (and their settings checked) before the scrape port is opened.
    if "otlp" in names:
        all_readers.append(_otlp_reader(otlp_endpoint, otlp_protocol, export_interval_ms))
    if "console" in names:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        all_readers.append(
            PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=_interval(export_interval_ms))
        )
    ours = all_readers[len(readers) :]
    try:
        if "prometheus" in names:
            registry, server, prom_url = _prometheus(
                prometheus_registry, prometheus_host, prometheus_port, start_prometheus_server, all_readers
            )
            ours = all_readers[len(readers) :]
        exemplars = exemplar_filter(enabled=_carries_exemplars(names, readers))
        provider = MeterProvider(
            metric_readers=all_readers, resource=resource, views=views(bucket_map), exemplar_filter=exemplars
        )
        ours = []  # the provider owns the readers now: its shutdown shuts them down
        try:
            meter = provider.get_meter(METER_NAME, package_version())
            recorder = build_recorder(
                meter,
                buckets=bucket_map,
                prices=prices,
                semconv=semconv,
                genai_provider=genai_provider,
                max_models=max_models,
                max_label_length=max_label_length,
                slos=slos,
                exemplars=not isinstance(exemplars, AlwaysOffExemplarFilter),
            )
            install_service_info(meter, service, _pick(None, env.RYOT_TELEMETRY_COMPONENT, "inference-router"))
            from .engine import EngineMetrics
            from .gpu import install_gpu_gauges, install_token_efficiency

            try:
                gpu_gauges = install_gpu_gauges(meter, enabled=gpu, models=gpu_models, backend=gpu_backend)
            except ValueError as e:
                raise ConfigurationError(str(e)) from None
            closers.append(gpu_gauges.close)
            install_token_efficiency(meter, recorder, gpu_gauges)
            engine = EngineMetrics(meter, recorder=recorder, gpu=gpu_gauges, buckets=bucket_map)
        except BaseException:
            with contextlib.suppress(Exception):
                provider.shutdown()
            raise
    except BaseException:
        # Nothing half-started survives a failed configure(): NVML, our readers, the scrape port.
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()
        for reader in ours:
            with contextlib.suppress(Exception):
                reader.shutdown()
        if server is not None:
            server.shutdown()
            server.server_close()
        raise

    if set_global:
        metrics.set_meter_provider(provider)
    tel = Telemetry(
        provider, meter, recorder, all_readers, prom_url, registry, server, closers, engine=engine, gpu=gpu_gauges
    )
    _current = tel
    return tel


def _carries_exemplars(names: Sequence[str], readers: Sequence[MetricReader]) -> bool:
    """OTLP, console and caller-supplied readers can carry exemplars; the Prometheus reader drops them."""
    return bool(readers) or "otlp" in names or "console" in names


def _prometheus(
    registry_arg: Any, host_arg: str | None, port_arg: int | None, start_server: bool, readers: list[MetricReader]
) -> tuple[Any, Any, str | None]:
    """The Prometheus registry, scrape server and reader (appended to ``readers``)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY, CollectorRegistry

    reg_choice = _pick(registry_arg, env.RYOT_TELEMETRY_PROMETHEUS_REGISTRY, "global")
    if isinstance(reg_choice, str):
        if reg_choice not in ("private", "global"):
            raise ConfigurationError(
                f"{env.RYOT_TELEMETRY_PROMETHEUS_REGISTRY}={reg_choice!r}: expected private or global"
            )
        registry = CollectorRegistry(auto_describe=True) if reg_choice == "private" else REGISTRY
    else:
        registry = reg_choice
    host = _pick(host_arg, "OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
    port = (
        _whole("prometheus_port", port_arg) if port_arg is not None else _env_int("OTEL_EXPORTER_PROMETHEUS_PORT", 9464)
    )
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"Prometheus port must be 0-65535, got {port}")
    server = None
    url = None
    if start_server:
        server = _start_http_server(host, port, registry)
        url = f"http://{_url_host(host)}:{server.server_address[1]}/metrics"
    try:
        readers.append(PrometheusMetricReader(registry=registry))
    except BaseException:
        if server is not None:
            server.shutdown()
            server.server_close()
        raise
    return registry, server, url


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _start_http_server(host: str, port: int, registry: Any) -> Any:
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise ConfigurationError(
            f"cannot serve /metrics on {host}:{port}: {e.strerror or e} "
            "(set OTEL_EXPORTER_PROMETHEUS_PORT or prometheus_port= to a free port, 0 for any)"
        ) from None
    return server

"""The metric readers ``configure()`` builds from its settings, and the Prometheus scrape server.

Readers that start nothing (OTLP, console) are built before the scrape port is opened, so most bad settings fail
before anything listens; whatever was started is registered on the caller's ``ExitStack`` and undone if a later
step of ``configure()`` fails.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

from .settings import ConfigurationError, Settings

__all__ = ["Exposition", "build_readers"]


@dataclass
class Exposition:
    """The readers (the user's extra ones first), and the Prometheus registry, server and URL when serving."""

    readers: list[MetricReader] = field(default_factory=list)
    registry: Any = None
    server: Any = None
    url: str | None = None


def build_readers(settings: Settings, closers: ExitStack, unowned: ExitStack) -> Exposition:
    """Readers and scrape server for ``settings.exporters``.

    ``closers``: what stays to undo at shutdown (the scrape server). ``unowned``: reader shut-downs, to run only
    if ``configure()`` fails before a MeterProvider takes the readers over (the caller then empties it).
    """
    out = Exposition(readers=list(settings.readers))
    if "otlp" in settings.exporters:
        out.readers.append(_owned(unowned, _otlp_reader(settings)))
    if "console" in settings.exporters:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        reader = PeriodicExportingMetricReader(
            ConsoleMetricExporter(), export_interval_millis=settings.export_interval_ms
        )
        out.readers.append(_owned(unowned, reader))
    if "prometheus" in settings.exporters:
        _prometheus(settings, out, closers, unowned)
    return out


def _owned(unowned: ExitStack, reader: MetricReader) -> MetricReader:
    unowned.callback(reader.shutdown)
    return reader


def _otlp_reader(settings: Settings) -> MetricReader:
    endpoint = settings.otlp_endpoint
    kw: dict[str, Any] = {}
    if settings.otlp_timeout is not None:
        kw["timeout"] = settings.otlp_timeout
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        if settings.otlp_compression is not None:
            from grpc import Compression

            kw["compression"] = {
                "gzip": Compression.Gzip,
                "deflate": Compression.Deflate,
                "none": Compression.NoCompression,
            }[settings.otlp_compression]
        if endpoint:
            kw["endpoint"] = endpoint
            # An endpoint given as an argument decides security by its scheme; from the environment, the
            # exporter also honours OTEL_EXPORTER_OTLP_INSECURE, as without ryot.
            if settings.otlp_endpoint_source == "argument":
                kw["insecure"] = urlparse(endpoint).scheme != "https"
        exporter: Any = GrpcExporter(**kw)
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

        if settings.otlp_compression is not None:
            kw["compression"] = HttpCompression(settings.otlp_compression)
        if endpoint:
            # A signal-specific endpoint (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) is used as given; a base one gets
            # the metrics path, as the OTLP exporter specification says.
            full = settings.otlp_endpoint_source == "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
            if not full and not urlparse(endpoint).path.rstrip("/").endswith("/v1/metrics"):
                endpoint = endpoint.rstrip("/") + "/v1/metrics"
            kw["endpoint"] = endpoint
        exporter = HttpExporter(**kw)
    return PeriodicExportingMetricReader(exporter, export_interval_millis=settings.export_interval_ms)


def _prometheus(settings: Settings, out: Exposition, closers: ExitStack, unowned: ExitStack) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY, CollectorRegistry

    choice = settings.prometheus_registry
    if isinstance(choice, str):
        out.registry = CollectorRegistry(auto_describe=True) if choice == "private" else REGISTRY
    else:
        out.registry = choice
    if settings.start_prometheus_server:
        out.server = _start_http_server(settings.prometheus_host, settings.prometheus_port, out.registry)
        closers.callback(_stop_server, out.server)
        out.url = f"http://{_url_host(settings.prometheus_host)}:{out.server.server_address[1]}/metrics"
    out.readers.append(_owned(unowned, PrometheusMetricReader(registry=out.registry)))


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


def _stop_server(server: Any) -> None:
    server.shutdown()
    server.server_close()

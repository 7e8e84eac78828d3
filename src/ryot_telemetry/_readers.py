"""The metric readers ``configure()`` builds from its settings, and the Prometheus scrape server.

Readers that start nothing (OTLP, console) are built before the scrape port is opened, so most bad settings fail
before anything listens; whatever was started is registered on the caller's ``ExitStack`` and undone if a later
step of ``configure()`` fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

from . import env
from .settings import ConfigurationError, Settings

_log = logging.getLogger("ryot_telemetry")

__all__ = ["Exposition", "build_readers", "otlp_exporter", "registry_for"]


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
    return PeriodicExportingMetricReader(otlp_exporter(settings), export_interval_millis=settings.export_interval_ms)


def otlp_exporter(settings: Settings) -> Any:
    """The OTLP metric exporter (gRPC or HTTP) the settings describe."""
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
    return exporter


def _prometheus(settings: Settings, out: Exposition, closers: ExitStack, unowned: ExitStack) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    out.registry = registry_for(settings)
    if settings.start_prometheus_server:
        out.server = _start_http_server(settings.prometheus_host, settings.prometheus_port, out.registry)
        if out.server is not None:
            closers.callback(_stop_server, out.server)
            out.url = f"http://{_url_host(settings.prometheus_host)}:{out.server.server_address[1]}/metrics"
    out.readers.append(_owned(unowned, PrometheusMetricReader(registry=out.registry)))


def registry_for(settings: Settings) -> Any:
    """The prometheus_client registry to expose: the one given, a private one, or the global default."""
    from prometheus_client import REGISTRY, CollectorRegistry

    choice = settings.prometheus_registry
    if isinstance(choice, str):
        return CollectorRegistry(auto_describe=True) if choice == "private" else REGISTRY
    return choice


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _start_http_server(host: str, port: int, registry: Any) -> Any:
    """The scrape server; None when another worker of this server already holds the port (logged once)."""
    from prometheus_client import start_http_server

    from ._ports import port_held_by_same_server

    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        if port and port_held_by_same_server(port, host):
            _log.warning(
                "ryot-telemetry: %s:%d is already served by another worker of this server, so this worker's "
                "metrics are not on it; set %s=<a shared directory> so that every scrape shows the whole "
                "server's totals",
                host,
                port,
                env.RYOT_TELEMETRY_MULTIPROC_DIR,
            )
            return None
        raise ConfigurationError(
            f"cannot serve /metrics on {host}:{port}: {e.strerror or e} "
            "(set OTEL_EXPORTER_PROMETHEUS_PORT or prometheus_port= to a free port, 0 for any)"
        ) from None
    _owners[server] = os.getpid()
    return server


def _stop_server(server: Any) -> None:
    if _owners.get(server) != os.getpid():
        # A forked child: the serving thread lives in the parent only, so shutdown() would wait for ever.
        server.server_close()
        return
    server.shutdown()
    server.server_close()


_owners: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
"""Each scrape server and the pid of the process whose thread serves it."""


def _close_inherited_servers() -> None:
    """After ``os.fork()``: the child closes its copy of every scrape socket, so it never holds a port that only
    the parent serves (a port held by a child outliving its parent would accept scrapes nobody answers)."""
    for server in list(_owners.keys()):
        with contextlib.suppress(Exception):
            server.socket.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_servers)

"""The metric readers ``configure()`` builds from its settings, and the Prometheus scrape server.

Readers that start nothing (OTLP, console) are built before the scrape port is opened, so most bad settings fail
before anything listens; whatever was started is registered on the caller's ``ExitStack`` and undone if a later
step of ``configure()`` fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import weakref
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from socketserver import TCPServer, ThreadingMixIn
from typing import Any
from urllib.parse import urlparse
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

from .. import env
from .._compat import observe_grpc_stub, set_collect_callback
from ..settings import ConfigurationError, Settings
from .otlp import OtlpExport, OtlpReader
from .outcome import Attempts, ObservedExporter, grpc_stub_wrapper, observing_session

_log = logging.getLogger("ryot_telemetry")

_HTTP_CREDENTIAL_VARIABLES = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_METRICS_CREDENTIAL_PROVIDER",
)
"""Variables with which opentelemetry-exporter-otlp-proto-http (newer releases) builds its own requests session
(names private to the SDK, so spelled here)."""

__all__ = [
    "Exposition",
    "ScrapeServer",
    "build_readers",
    "console_reader",
    "otlp_exporter",
    "otlp_reader",
    "registry_for",
    "serve_metrics",
    "url_host",
]


@dataclass
class Exposition:
    """What the settings' exporters need, decided once for both modes.

    ``readers``: the readers of this process's MeterProvider (the user's extra ones first). ``otlp``: the OTLP reader
    (in one process also in ``readers``; in multi-process mode fed with the merged totals by the leader). The
    Prometheus ``registry``, and in one process the ``server`` and its ``url``; in multi-process mode ``serve``
    opens the scrape server when this process leads (``url`` is where it will be).
    """

    readers: list[MetricReader] = field(default_factory=list)
    otlp: OtlpReader | None = None
    registry: Any = None
    server: Any = None
    url: str | None = None
    serve: Callable[[], Any] | None = None


def build_readers(settings: Settings, closers: ExitStack, unowned: ExitStack, *, multiproc: bool = False) -> Exposition:
    """Readers and scrape server for ``settings.exporters``.

    ``closers``: what stays to undo at shutdown (the scrape server). ``unowned``: reader shut-downs, to run only
    if ``configure()`` fails before a MeterProvider takes the readers over (the caller then empties it).
    ``multiproc``: multi-process mode: the OTLP reader and the Prometheus exposition read the merged totals, so they
    are not this process's provider's readers, and the scrape port is opened by the leader (``serve``).
    """
    out = Exposition(readers=list(settings.readers))
    if "otlp" in settings.exporters:
        out.otlp = otlp_reader(settings)
        unowned.callback(out.otlp.shutdown)
        if multiproc:
            # Collects nothing until the leader's feed is installed (multiproc.export), not even a warning.
            set_collect_callback(out.otlp, lambda _reader, timeout_millis=0: None)
        else:
            out.readers.append(out.otlp)
    if "console" in settings.exporters:
        out.readers.append(_owned(unowned, console_reader(settings)))
    if "prometheus" in settings.exporters:
        if multiproc:
            _prometheus_later(settings, out)
        else:
            _prometheus(settings, out, closers, unowned)
    return out


def _owned(unowned: ExitStack, reader: MetricReader) -> MetricReader:
    unowned.callback(reader.shutdown)
    return reader


def console_reader(settings: Settings) -> MetricReader:
    """The ``console`` exporter: metrics printed to stdout every export interval."""
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

    return PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=settings.export_interval_ms)


def otlp_reader(settings: Settings) -> OtlpReader:
    """The OTLP reader: cumulative collections, deltas computed by ryot where asked (``export.otlp``)."""
    from .temporality import delta_export, preferred_aggregation

    attempts = Attempts()
    sender = ObservedExporter(otlp_exporter(settings, attempts), attempts)
    export = OtlpExport(
        sender,
        delta=delta_export(settings),
        aggregation=preferred_aggregation(settings.otlp_histogram_aggregation),
    )
    return OtlpReader(export, export_interval_millis=settings.export_interval_ms)


def otlp_exporter(settings: Settings, attempts: Attempts | None = None) -> Any:
    """The OTLP metric exporter (gRPC or HTTP) the settings describe; with ``attempts``, observed
    (``export.outcome``). It is asked for cumulative data: delta temporality is ryot's (``export.delta``)."""
    from .temporality import cumulative, preferred_aggregation

    endpoint = settings.otlp_endpoint
    # Histogram aggregation as Settings read it (the exporter would only warn on a bad value).
    kw: dict[str, Any] = {
        "preferred_temporality": cumulative(),
        "preferred_aggregation": preferred_aggregation(settings.otlp_histogram_aggregation),
    }
    if settings.otlp_timeout is not None:
        kw["timeout"] = settings.otlp_timeout
    if settings.otlp_protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter
        except ImportError as e:  # gRPC is an extra: Prometheus-only services need no grpcio
            raise ConfigurationError(
                "OTLP over gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc, the default protocol) needs the otlp-grpc extra: "
                "pip install 'ryot-telemetry[otlp-grpc]', or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
            ) from e

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
        if attempts is not None:
            attempts.observed = observe_grpc_stub(exporter, grpc_stub_wrapper(attempts))
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
        # A session from the exporter's credential-provider variables (newer exporters) is the user's: kept, and
        # then the attempts are not observed (a failure counts as unknown: never resent, never counted twice).
        if attempts is not None and not any(os.environ.get(v) for v in _HTTP_CREDENTIAL_VARIABLES):
            kw["session"] = observing_session(attempts)
        exporter = HttpExporter(**kw)
    return exporter


def _prometheus_later(settings: Settings, out: Exposition) -> None:
    """Multi-process mode: the registry now, the scrape server when this process leads."""
    out.registry = registry = registry_for(settings)
    if settings.start_prometheus_server:
        host, port = settings.prometheus_host, settings.prometheus_port
        out.url = f"http://{url_host(host)}:{port}/metrics"

        def serve() -> Any:
            return serve_metrics(host, port, registry)

        out.serve = serve


def _prometheus(settings: Settings, out: Exposition, closers: ExitStack, unowned: ExitStack) -> None:
    from .exemplars import ExemplarPrometheusReader

    out.registry = registry_for(settings)
    if settings.start_prometheus_server:
        out.server = _start_http_server(settings.prometheus_host, settings.prometheus_port, out.registry)
        if out.server is not None:
            closers.callback(_stop_server, out.server)
            out.url = f"http://{url_host(settings.prometheus_host)}:{out.server.server_address[1]}/metrics"
    out.readers.append(_owned(unowned, ExemplarPrometheusReader(out.registry)))


def registry_for(settings: Settings) -> Any:
    """The prometheus_client registry to expose: the one given, a private one, or the global default."""
    from prometheus_client import REGISTRY, CollectorRegistry

    choice = settings.prometheus_registry
    if isinstance(choice, str):
        return CollectorRegistry(auto_describe=True) if choice == "private" else REGISTRY
    return choice


def url_host(host: str) -> str:
    """``host`` as it stands in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def _start_http_server(host: str, port: int, registry: Any) -> Any:
    """The scrape server; None when another worker of this server already holds the port (logged once)."""
    from .ports import port_held_by_same_server

    try:
        return serve_metrics(host, port, registry)
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


def _stop_server(server: ScrapeServer) -> None:
    server.shutdown()
    server.server_close()


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One daemon thread per scrape, so a slow scraper never holds up another or the process's exit."""

    daemon_threads = True
    # handle_request() is only called once the socket is ready: it never waits (a connection reset before the
    # accept is dropped, not waited on).
    timeout = 0

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves socket.getfqdn(host): a reverse DNS lookup that can take seconds on a
        # host without DNS, only to fill the unused SERVER_NAME.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class ScrapeServer:
    """``/metrics`` (prometheus_client's WSGI app) served on a daemon thread that stops at once.

    prometheus_client's ``start_http_server`` polls for shutdown every 0.5 s, so each ``shutdown()`` waited up to
    half a second; this loop also waits on a wake-up socket, so ``shutdown()`` returns as soon as the thread has
    seen it. Same address handling (IPv4 or IPv6 by what ``host`` resolves to) and the same answers.
    """

    def __init__(self, host: str, port: int, registry: Any) -> None:
        from .exemplars import scrape_app

        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]  # as prometheus_client: IPv4 or IPv6 by what the host resolves to
        server_class = type("_Server", (_ThreadingWSGIServer,), {"address_family": family})
        self._httpd: WSGIServer = make_server(
            str(sockaddr[0]), port, scrape_app(registry), server_class, handler_class=_QuietHandler
        )
        self._wake_r, self._wake_w = socket.socketpair()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._serve, name="ryot-telemetry-scrape", daemon=True)
        self._thread.start()
        _servers.add(self)

    @property
    def server_address(self) -> Any:
        """(host, port, ...) the socket is bound to: the port chosen by the system when 0 was asked for."""
        return self._httpd.server_address

    @property
    def socket(self) -> socket.socket:
        return self._httpd.socket

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._httpd, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj is self._wake_r for key, _ in ready):
                    return
                self._httpd.handle_request()

    def shutdown(self) -> None:
        """Stop serving and wait for the serving thread (not for scrapes in flight, as prometheus_client)."""
        if self._pid != os.getpid():
            return  # a forked child: the serving thread lives in the parent, which a wake-up would stop
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join()

    def server_close(self) -> None:
        """Close the listening socket (the port is free once this returns) and the wake-up pair."""
        self._httpd.server_close()
        self._wake_r.close()
        self._wake_w.close()
        _servers.discard(self)


def serve_metrics(host: str, port: int, registry: Any) -> ScrapeServer:
    """Serve ``registry`` on ``host:port`` (0: any free port); OSError when the address cannot be bound."""
    return ScrapeServer(host, port, registry)


_servers: weakref.WeakSet[ScrapeServer] = weakref.WeakSet()
"""The scrape servers of this process (and, in a forked child, of its parent)."""


def _close_inherited_servers() -> None:
    """After ``os.fork()``: the child closes its copy of every scrape socket, so it never holds a port that only
    the parent serves (a port held by a child outliving its parent would accept scrapes nobody answers)."""
    for server in list(_servers):
        with contextlib.suppress(Exception):
            server.socket.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_servers)

"""``configure()``: one MeterProvider with the catalogue's Views, fanned out to Prometheus and OTLP readers.

Settings are loaded and checked first (``settings.py``), then the readers and scrape server (``export.readers``),
the provider, and the instruments (``export.assembly``). Everything started is registered on one ``ExitStack``:
undone in reverse order if a later step fails, or at ``Telemetry.shutdown()``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from . import _state
from .engine import EngineMetrics
from .export.assembly import (
    assemble,
    build_recorder,
    default_recorder,
    exemplar_filter,
    install_service_info,
    package_version,
)
from .export.readers import build_readers
from .pricing import PriceTable
from .recording.recorder import Recorder
from .router.instance import instrument_router
from .settings import EXPORTERS, PROTOCOLS, ConfigurationError, Settings
from .slo import SloTable
from .sources.gpu import GpuGauges

__all__ = [
    "EXPORTERS",
    "PROTOCOLS",
    "ConfigurationError",
    "Telemetry",
    "build_recorder",
    "configure",
    "default_recorder",
    "exemplar_filter",
    "install_service_info",
    "package_version",
]

_log = logging.getLogger("ryot_telemetry")


@dataclass
class Telemetry:
    """What ``configure()`` built. ``shutdown()`` flushes OTLP and frees the scrape port."""

    meter_provider: MeterProvider
    meter: Meter
    recorder: Recorder
    readers: list[MetricReader]
    prometheus_url: str | None = None
    registry: Any = None
    engine: EngineMetrics | None = None  # model loads, evictions, start-up phases, queue, KV cache, GPU breakdowns
    gpu: GpuGauges | None = None  # the NVML gauges
    settings: Settings | None = None  # what it was configured with
    multiproc: Any = None  # multiproc.MultiProcess: this process's part in multi-process mode
    # What shutdown() releases, in reverse order of registration; set by configure() once everything started.
    _closers: ExitStack = field(default_factory=ExitStack, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    def instrument_router(self, router: Any) -> Any:
        """Wrap ``router``'s OpenAI-style methods so they record into this telemetry."""
        return instrument_router(router, self.recorder)

    def drain(self, *, release_held: bool = False) -> int:
        """Record the queued requests now (every collection starts with this drain anyway); returns how many.
        ``release_held``: see ``Recorder.drain``."""
        return self.recorder.drain(release_held=release_held)

    def collect(self) -> None:
        """Deprecated spelling of ``drain()``."""
        warnings.warn("Telemetry.collect() is deprecated; use Telemetry.drain()", DeprecationWarning, stacklevel=2)
        self.drain()

    def shutdown(self) -> None:
        """Flush and stop the provider, then release NVML and the scrape port (each step once, errors logged)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._closers.close()
        except Exception:
            _log.debug("ryot-telemetry: error while shutting down", exc_info=True)
        _state.unset_current(self)

    @property
    def closed(self) -> bool:
        """Whether ``shutdown()`` ran."""
        return self._closed

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _resource(service_name: str | None, attributes: Mapping[str, str]) -> Resource:
    """service.name: the argument or OTEL_SERVICE_NAME, else OTEL_RESOURCE_ATTRIBUTES', else ryot-inference."""
    resource = Resource.create(dict(attributes))
    if service_name:
        return resource.merge(Resource({SERVICE_NAME: service_name}))
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return resource.merge(Resource({SERVICE_NAME: "ryot-inference"}))
    return resource


def _logged(step: Callable[[], object], what: str, level: int = logging.DEBUG) -> Callable[[], None]:
    """A shut-down step that logs its failure instead of stopping the steps after it."""

    def run() -> None:
        try:
            step()
        except Exception:
            _log.log(level, "ryot-telemetry: error while shutting down %s", what, exc_info=True)

    return run


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
    genai_server: str | None = None,
    max_models: int | None = None,
    max_label_length: int | None = None,
    gpu: bool | None = None,
    gpu_models: Mapping[Any, str] | None = None,
    gpu_backend: Any = None,
    readers: Sequence[MetricReader] = (),
    resource_attributes: Mapping[str, str] | None = None,
    set_global: bool = False,
    multiproc_dir: str | os.PathLike[str] | None = None,
    otlp_temporality: str | None = None,
    otlp_histogram_aggregation: str | None = None,
    drop_duplicates: str | Sequence[str] | None = None,
    tenant: str | Callable[[Any], object] | None = None,
    max_tenants: int | None = None,
) -> Telemetry:
    """Build the MeterProvider, readers and recorder. Raises ``ConfigurationError`` with one clear message.

    ``exporters``: any of prometheus, otlp, console, none (default: ``OTEL_METRICS_EXPORTER``, else prometheus,
    plus otlp when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set). ``prometheus_registry``: a
    ``prometheus_client.CollectorRegistry``, or ``"private"`` for a fresh one exposing only these metrics.
    ``readers``: extra readers, e.g. an ``InMemoryMetricReader`` in tests. ``multiproc_dir`` (else
    ``RYOT_TELEMETRY_MULTIPROC_DIR``): multi-process mode, every worker of a server shows the server's totals.
    Every argument is described in ``settings.Settings``; None means "from the environment, else the default".
    ``genai_server``: ``host:port`` clients reach this server at, for ``server.address`` / ``server.port`` of the
    semconv metrics.
    ``slos``: an SLO table (mapping, path or ``SloTable``; default ``RYOT_TELEMETRY_SLOS``) enabling
    ``ryot_slo_requests_total``.
    ``otlp_temporality``: cumulative, delta or lowmemory (else ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``);
    ``otlp_histogram_aggregation``: explicit_bucket_histogram or base2_exponential_bucket_histogram (else
    ``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION``). Both apply to OTLP only.
    ``drop_duplicates``: ``"ogx"`` (else ``RYOT_TELEMETRY_DROP_DUPLICATES``) drops ogx's own router histograms that
    ryot's metrics supersede.
    ``tenant`` (else ``RYOT_TELEMETRY_TENANT``): adds a bounded ``tenant`` label (at most ``max_tenants``, default
    50) to the request, token, cost and SLO counters: a callable given the call's params, a dotted path into them
    (``metadata.tenant``, ``user``), or ``ogx:principal`` / ``ogx:tenant_id`` (ogx's authenticated user).
    """
    settings = Settings.load(
        service_name=service_name,
        exporters=exporters,
        prometheus_host=prometheus_host,
        prometheus_port=prometheus_port,
        prometheus_registry=prometheus_registry,
        start_prometheus_server=start_prometheus_server,
        otlp_endpoint=otlp_endpoint,
        otlp_protocol=otlp_protocol,
        export_interval_ms=export_interval_ms,
        buckets=buckets,
        prices=prices,
        slos=slos,
        semconv=semconv,
        genai_provider=genai_provider,
        genai_server=genai_server,
        max_models=max_models,
        max_label_length=max_label_length,
        gpu=gpu,
        gpu_models=gpu_models,
        gpu_backend=gpu_backend,
        readers=readers,
        resource_attributes=resource_attributes,
        set_global=set_global,
        multiproc_dir=multiproc_dir,
        otlp_temporality=otlp_temporality,
        otlp_histogram_aggregation=otlp_histogram_aggregation,
        drop_duplicates=drop_duplicates,
        tenant=tenant,
        max_tenants=max_tenants,
    )
    return configure_from(settings)


def configure_from(settings: Settings) -> Telemetry:
    """``configure()`` for ready ``Settings``."""
    running = _state.current()
    if running is not None and not running.closed:
        _log.warning(
            "ryot-telemetry: configure() called again while an earlier Telemetry is still running; "
            "call .shutdown() on it first, or both will export (duplicate series on a shared registry)"
        )
    resource = _resource(settings.service_name, settings.resource_attributes)
    if settings.multiproc_dir is not None:
        from .multiproc.worker import configure_process

        part = configure_process(settings, resource)
        provider, meter, recorder, readers = part.provider, part.meter, part.recorder, part.readers
        url, registry, engine, gpu, multiproc, owned = (
            part.url, part.registry, part.engine, part.gpu, part.multiproc, part.closers
        )
    else:
        with ExitStack() as closers:
            with ExitStack() as unowned:
                exposition = build_readers(settings, closers, unowned)
                # Shut-down order (reverse of registration): provider (final OTLP export), then NVML, then the port.
                parts = assemble(settings, exposition.readers, closers, resource=resource)
                unowned.pop_all()  # the provider owns the readers now: its shutdown shuts them down
            parts.recorder.start_drainer()  # records the queue in paced slices, off the scrape path
            closers.callback(parts.recorder.stop_drainer)
            owned = closers.pop_all()  # configure() succeeded: the Telemetry releases them at shutdown
        provider, meter, recorder, readers = parts.provider, parts.meter, parts.recorder, exposition.readers
        url, registry, engine, gpu, multiproc = exposition.url, exposition.registry, parts.engine, parts.gpu, None

    if settings.set_global:
        metrics.set_meter_provider(provider)
    tel = Telemetry(
        meter_provider=provider,
        meter=meter,
        recorder=recorder,
        readers=readers,
        prometheus_url=url,
        registry=registry,
        engine=engine,
        gpu=gpu,
        settings=settings,
        multiproc=multiproc,
    )
    tel._closers = owned
    _state.replace_current(tel)
    return tel

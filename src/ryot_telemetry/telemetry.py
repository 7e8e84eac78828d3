"""``configure()``: one MeterProvider with the catalogue's Views, fanned out to Prometheus and OTLP readers.

Settings are loaded and checked first (``settings.py``), then the readers and scrape server (``export.readers``),
the provider, and the instruments (``export.assembly``). Everything started is registered on one ``ExitStack``:
undone in reverse order if a later step fails, or at ``Telemetry.shutdown()``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from . import _state
from .export.assembly import (
    assemble,
    build_recorder,
    default_recorder,
    exemplar_filter,
    install_service_info,
    package_version,
)
from .export.otlp import install_self_metrics
from .export.readers import build_readers
from .recording.recorder import Recorder
from .router.instance import instrument_router
from .settings import ARGUMENTS, EXPORTERS, PROTOCOLS, Arguments, ConfigurationError, Settings, unknown_variables
from .sources.engine import EngineMetrics
from .sources.gpu import GpuGauges

if TYPE_CHECKING:  # annotations only (postponed): no runtime need for typing_extensions on 3.10
    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

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
    "warn_unknown_variables",
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
        wrapped = instrument_router(router, self.recorder)
        providers = _state.model_providers(self.recorder)
        if providers is not None:
            providers.seen(router)  # ryot_model_info asks its routing table, at collection time
        return wrapped

    def drain(self, *, release_held: bool = False) -> int:
        """Record the queued requests now (every collection starts with this drain anyway); returns how many.
        ``release_held``: see ``Recorder.drain``."""
        return self.recorder.drain(release_held=release_held)

    def collect(self) -> None:
        """Deprecated spelling of ``drain()``."""
        warnings.warn("Telemetry.collect() is deprecated; use Telemetry.drain()", DeprecationWarning, stacklevel=2)
        self.drain()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Export what was recorded now, on every reader (in multi-process mode: hand it off, and export the
        server's totals when this process leads); False when an export failed (an OTLP endpoint down, refusing
        or timing out), as the OpenTelemetry SDK's own ``force_flush`` does not say."""
        if self.multiproc is not None:
            return bool(self.multiproc.flush(timeout_millis))
        ok = True
        for reader in self.readers:
            try:
                ok = reader.force_flush(timeout_millis) is not False and ok
            except Exception:
                ok = False
        return ok

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


def warn_unknown_variables() -> None:
    """Warn, once per variable and process, about each ``RYOT_TELEMETRY_*`` variable set that is not one of ours,
    naming the closest known one: a misspelt name would otherwise be ignored without a word."""
    for name, closest in unknown_variables():
        if _state.first_time(f"unknown variable {name}"):
            name = name if name.isprintable() else repr(name)  # one line, whatever the name holds
            _log.warning(
                "ryot-telemetry: %s is not a ryot-telemetry variable and is ignored; did you mean %s?", name, closest
            )


def configure(**arguments: Unpack[Arguments]) -> Telemetry:
    """Build the MeterProvider, readers and recorder; raises ``ConfigurationError`` with one clear message naming
    the argument or variable at fault, before anything starts.

    The keyword arguments are the keys of ``settings.Arguments``, each declared and documented there once (the
    configuration reference lists them): ``exporters=``, ``prometheus_port=``, ``otlp_endpoint=``, ``prices=``,
    ``slos=``, ``tenant=``, ``readers=``, ``set_global=``, ... An argument left out, or None, means "from its
    ``OTEL_*`` / ``RYOT_TELEMETRY_*`` variable, else the default"; an argument given wins over the variable.
    """
    unexpected = sorted(set(arguments) - ARGUMENTS)
    if unexpected:  # as Python says it for a named parameter: Settings has fields configure() does not take
        raise TypeError(f"configure() got an unexpected keyword argument {unexpected[0]!r}")
    warn_unknown_variables()
    return configure_from(Settings.load(**arguments))


# help(configure) lists the names its ``**arguments`` take (their types and meaning: ``settings.Arguments``).
configure.__doc__ = f"{configure.__doc__}\n    Arguments: {', '.join(Arguments.__annotations__)}.\n"


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
        from .multiproc.setup import configure_process

        part = configure_process(settings, resource)
        provider, meter, recorder, readers = part.provider, part.meter, part.recorder, part.readers
        url, registry, engine, gpu, multiproc, owned = (
            part.url,
            part.registry,
            part.engine,
            part.gpu,
            part.multiproc,
            part.closers,
        )
    else:
        with ExitStack() as closers:
            with ExitStack() as unowned:
                exposition = build_readers(settings, closers, unowned)
                # Shut-down order (reverse of registration): provider (final OTLP export), then NVML, then the port.
                parts = assemble(settings, exposition.readers, closers, resource=resource)
                unowned.pop_all()  # the provider owns the readers now: its shutdown shuts them down
            install_self_metrics(parts.meter, exposition.otlp)  # ryot.telemetry.otlp.*
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

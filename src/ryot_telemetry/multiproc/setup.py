"""``configure()`` in multi-process mode: this process's provider, hand-off and share of the server duties.

The readers are decided by ``export.readers.build_readers`` as in one process (``multiproc=True``: the OTLP reader
and the Prometheus exposition read the merged totals instead of this process's provider).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from .. import env
from ..export.assembly import ServerSide, assemble
from ..export.otlp import install_self_metrics
from ..export.readers import build_readers
from ..recording.recorder import Recorder
from .view import MergedRates, merged_prometheus_reader
from .worker import MultiProcess

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.sdk.metrics import MeterProvider

    from ..settings import Settings
    from ..sources.engine import EngineMetrics
    from ..sources.gpu import GpuGauges

__all__ = ["Process", "configure_process", "server_instance_id"]


def server_instance_id(directory: str) -> str:
    """``service.instance.id`` of the whole server: one per host and directory, whichever process exports.

    The SDK gives each process its own random id; merged totals exported under it would start a new stream at
    every change of leader, and a receiver summing over instances would count the server twice.
    """
    import socket
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ryot-telemetry://{socket.gethostname()}{directory}"))


@dataclass
class Process:
    """What ``configure_process`` built, for ``configure()`` to wrap in its ``Telemetry``."""

    provider: MeterProvider
    meter: Meter
    recorder: Recorder
    readers: list[Any]
    url: str | None
    registry: Any
    closers: contextlib.ExitStack
    engine: EngineMetrics
    gpu: GpuGauges
    multiproc: MultiProcess


def configure_process(settings: Settings, resource: Resource) -> Process:
    """``configure()`` in multi-process mode.

    Two providers: the worker's (every instrument but NVML's, read by the hand-off reader and the user's readers)
    and the server's (service info, NVML gauges, token efficiency), read only when this process answers a scrape or
    exports for the server. Whatever was started is undone if a later step fails, as in ``configure()``.
    """
    directory = settings.multiproc_dir
    assert directory is not None
    from ..export.temporality import exponential_otlp

    if exponential_otlp(settings):
        from ..settings import ConfigurationError

        raise ConfigurationError(
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION / otlp_histogram_aggregation="
            "base2_exponential_bucket_histogram is not supported in multi-process mode "
            f"({env.RYOT_TELEMETRY_MULTIPROC_DIR}): the workers' histograms are merged bucket by bucket on explicit "
            "boundaries; use explicit_bucket_histogram (the default), or export from a single process"
        )
    from opentelemetry.sdk.resources import OTELResourceDetector

    # a user's own service.instance.id (argument, or OTEL_RESOURCE_ATTRIBUTES as the SDK parses it) wins
    if (
        "service.instance.id" not in settings.resource_attributes
        and "service.instance.id" not in OTELResourceDetector().detect().attributes
    ):
        resource = resource.merge(Resource({"service.instance.id": server_instance_id(directory)}))
    with contextlib.ExitStack() as closers:
        with contextlib.ExitStack() as unowned:
            exposition = build_readers(settings, closers, unowned, multiproc=True)
            worker_readers = exposition.readers
            hand_off = InMemoryMetricReader()
            worker_readers.append(hand_off)
            server_reader = InMemoryMetricReader()
            rates = MergedRates()
            parts = assemble(
                settings,
                worker_readers,
                closers,
                resource=resource,
                server=ServerSide(readers=[server_reader], rates=rates),
            )
            unowned.pop_all()  # the provider owns its readers now; the OTLP reader is the MultiProcess's
        provider, meter, recorder = parts.provider, parts.meter, parts.recorder
        mp = MultiProcess(
            directory,
            worker_reader=hand_off,
            server_reader=server_reader,
            resource=resource,
            recorder=recorder,
            provider=provider,
            rates=rates,
            serve=exposition.serve,
            otlp=exposition.otlp,
        )
        install_self_metrics(meter, exposition.otlp)  # counted by the leader, handed off as any other metric
        if exposition.registry is not None:
            closers.callback(merged_prometheus_reader(mp.scrape_data, exposition.registry).shutdown)
        # Runs first at shutdown: the final hand-off while the provider still collects, then the export, the port
        # and the lock.
        closers.callback(mp.close)
        mp.start()
        owned = closers.pop_all()
    return Process(
        provider,
        meter,
        recorder,
        worker_readers,
        exposition.url,
        exposition.registry,
        owned,
        parts.engine,
        parts.gpu,
        mp,
    )

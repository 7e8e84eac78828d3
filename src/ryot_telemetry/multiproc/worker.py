"""Multi-process mode: one exact set of metrics across the worker processes of one server.

Switched on by ``RYOT_TELEMETRY_MULTIPROC_DIR=<dir>`` (or ``configure(multiproc_dir=...)``). How it works:

- **Hand-off.** Each process records into its own MeterProvider as in single-process mode. A background thread
  collects it every ``SNAPSHOT_INTERVAL`` seconds (cumulative, through an ``InMemoryMetricReader``) and writes the
  result, OTLP-protobuf encoded, to ``<dir>/w-<pid>-<start>-<ppid>-<pstart>.pb`` (temporary file, then
  ``os.replace``: a reader never sees half a file). ``start`` is the process's start time, so a reused pid is never
  mistaken for the old process.
- **Merge.** Whichever process answers a scrape reads every file and merges them: sums and histograms are added
  (every bucket, sum and count) over all files, live or dead; gauges come from live processes only: in-flight
  requests and sliding tokens/s are summed, other gauges (engine-reported values) are taken from the most recent
  writer. The merged data goes out through the OpenTelemetry Prometheus exporter's own translation. GPU gauges,
  ``ryot_service_info`` and the token-efficiency ratio are read once, by the answering process, at the scrape.
- **Leader.** One process holds ``<dir>/leader.lock`` (a POSIX lock, released by the kernel when its holder dies,
  even by SIGKILL). The leader serves the scrape port, exports the merged totals over OTLP, and folds the files of
  dead workers into ``archive-<ppid>-<pstart>.pb`` (one per server), so that counters never decrease and the
  directory stays bounded. The other processes retry the lock every tick and take over within one tick.
- **New series at zero first.** Whoever serves a scrape (or the leader's OTLP export) records when it began
  reading the directory in ``<dir>/collected-<kind>``; a worker's new-series gate (``recording.new_series``) holds a new
  counter series' increments until every such collection that is still running began after the hand-off that
  carried its zero.
- **Previous runs.** A server is identified by the parent of its workers (the uvicorn / gunicorn master). Files of
  dead processes whose server is gone too belong to an earlier run and are removed; a new run starts from zero.

The directory side (identity, merge, archive, housekeeping) is in ``directory.py``; this module is the process side.

Forked children (``os.fork()`` after ``configure()``, gunicorn ``--preload``): in this mode a child becomes a worker
of its own that counts from zero (the at-fork handlers below); in any mode it closes the inherited scrape socket and
never waits for the parent's server thread (``_readers``).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource

from .. import env
from .._compat import meter_count, prometheus_reader, set_collect_callback
from .._state import gc_paused
from ..export.assembly import ServerSide, assemble
from ..export.readers import console_reader, otlp_exporter, registry_for, serve_metrics, url_host
from ..recording.new_series import NewSeriesGate
from ..recording.recorder import Recorder
from .delta import DeltaExport
from .directory import Merged, _Ident, _write_atomic, housekeep, read_server
from .handoff import HandoffEncoder

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.sdk.metrics import MeterProvider

    from ..engine import EngineMetrics
    from ..settings import Settings
    from ..sources.gpu import GpuGauges

_log = logging.getLogger("ryot_telemetry")

SNAPSHOT_INTERVAL = 0.5
"""Seconds between two hand-offs of a worker's state (and between two leader-lock attempts)."""

HEARTBEAT = 5.0
"""Longest time between two hand-offs of an idle worker (no request started or ended): sliding windows and
engine-reported gauges are then at most this old. A request that starts or ends is handed off at the next tick."""

_LOCK_NAME = "leader.lock"

COLLECTORS = ("prometheus", "otlp")
"""Kinds of server-wide collection whose progress is recorded in ``<dir>/collected-<kind>`` (new series gate)."""

_HANDOFFS_KEPT = 256
"""Hand-offs remembered for the new-series gate: (time written, zero epoch it carried)."""


def _collected_path(directory: str, kind: str) -> str:
    return os.path.join(directory, f"collected-{kind}")


def note_collection(directory: str, kind: str, started: float) -> None:
    """Record that a collection of ``kind`` which began reading the directory at ``started`` (``time.monotonic``,
    one clock for every process of the host) was served: ``<started ns> <previous started ns>``, atomically."""
    path = _collected_path(directory, kind)
    previous = read_collection(directory, kind)
    start_ns = int(started * 1e9)
    prev_ns = 0 if previous is None else int(previous[0] * 1e9)
    if prev_ns >= start_ns:
        return  # a collection that began later (served concurrently) is already recorded
    _write_atomic(path, f"{start_ns} {prev_ns}".encode())


def read_collection(directory: str, kind: str) -> tuple[float, float | None] | None:
    """(start of the last recorded collection of ``kind``, seconds since the one before or None); None if none or
    if it is in the future (a file left from before a reboot: the monotonic clock restarted)."""
    try:
        with open(_collected_path(directory, kind), "rb") as f:
            start_ns, prev_ns = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    start = start_ns / 1e9
    if start > time.monotonic():
        return None
    return start, ((start_ns - prev_ns) / 1e9 if 0 < prev_ns < start_ns else None)


# --- the per-process side -------------------------------------------------------------------------------------


def merged_prometheus_reader(produce: Callable[[], MetricsData], registry: Any) -> PrometheusMetricReader:
    """The OTel Prometheus reader on ``registry``, fed with the merged server state instead of a provider's.

    The reader is attached to no MeterProvider: its collect callback (the hook a provider installs) returns the
    merged data, and the OTel exporter translates it to Prometheus families itself (names, units, ``_total``, scope
    labels), so no exposition format is written here (the hook is the SDK's private provider-to-reader one: see
    ``_compat``).
    """
    reader = prometheus_reader(registry)

    def collect(_reader: Any, timeout_millis: float = 10_000) -> MetricsData | None:
        try:
            return produce()
        except Exception:
            _log.warning("ryot-telemetry: could not merge the worker processes' metrics", exc_info=True)
            return None

    set_collect_callback(reader, collect)
    return reader


class MergedRates:
    """Completion tokens/s for the efficiency gauge (``derived.TokenRates``), from the merged sliding windows of
    every live worker (the last merge this process made)."""

    def __init__(self) -> None:
        self.merged: Merged | None = None

    def rate(self, model: str, seconds: int = 60) -> float | None:
        if self.merged is None:
            return None
        return self.merged.gauge_value("ryot.sliding_tokens_per_second", model=model, time_window="1m")


_instances: weakref.WeakSet[MultiProcess] = weakref.WeakSet()


class MultiProcess:
    """One process's part in multi-process mode: hand-off thread, leader duties, merged exposition and export."""

    def __init__(
        self,
        directory: str,
        *,
        worker_reader: InMemoryMetricReader,
        server_reader: InMemoryMetricReader,
        resource: Resource,
        recorder: Recorder,
        rates: MergedRates,
        provider: Any = None,
        serve: Callable[[], Any] | None,
        otlp: MetricExporter | None,
        export_interval_s: float,
        delta: bool = False,
    ) -> None:
        self.directory = directory
        self.worker_reader = worker_reader
        self.server_reader = server_reader
        self.resource = resource
        self.recorder = recorder
        self.provider = provider
        self.rates = rates
        self._serve = serve
        self._otlp = otlp
        self._export_interval = export_interval_s
        # OTLP delta temporality: computed from the merged cumulative state (see delta.py)
        self._delta = DeltaExport(directory) if delta and otlp is not None else None
        self.server: Any = None
        self._serve_warned = False
        self.me = _Ident.mine()
        self._pid = os.getpid()
        self._baseline: ExportMetricsServiceRequest | None = None
        self._encoder = HandoffEncoder()  # encode_metrics' output, with each series' attributes encoded once
        self._lock_fd: int | None = None
        self._collect_lock = threading.Lock()
        self._merge_lock = threading.Lock()
        self._stop = threading.Event()
        self._next_export = time.monotonic() + export_interval_s
        self._thread: threading.Thread | None = None
        self._closed = False
        self._write_warned = False
        self._last_activity: Any = None
        self._last_write = 0.0
        # New series at zero first (``recording.new_series``), across processes: a worker's gate waits for the
        # server's scrapes and OTLP exports (recorded in the directory by whoever serves them) to have read a
        # hand-off that carried the zero, as it waits for its own readers in single-process mode.
        self.gate: NewSeriesGate | None = recorder.new_series
        self._remote: dict[str, Any] = {}
        self._handoffs: list[tuple[float, int]] = []  # (monotonic time the file was replaced, zero epoch in it)
        self._collected_epoch = 0
        self._advanced = False  # a server collection read a newer zero since the last hand-off
        if self.gate is not None:
            self._remote = {kind: self.gate.remote() for kind in COLLECTORS}
            self.gate.track(worker_reader, self._note_epoch)
        _instances.add(self)

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.me.file_name)

    @property
    def leader(self) -> bool:
        return self._lock_fd is not None

    # - hand-off

    def _note_epoch(self, epoch: int) -> None:
        self._collected_epoch = epoch

    def _refresh_collectors(self) -> None:
        """Tell the gate how far the server's collections have read: a collection that began after a hand-off was
        written has that hand-off's zeros."""
        if self.gate is None:
            return
        handoffs = self._handoffs
        for kind, state in self._remote.items():
            seen = read_collection(self.directory, kind)
            if seen is None:
                self.gate.update_remote(state, 0, None, None)
                continue
            started, interval = seen
            epoch = max((e for written, e in handoffs if written < started), default=0)
            if epoch > state.seen:
                self._advanced = True
            self.gate.update_remote(state, epoch, started, interval)

    def _activity(self) -> Any:
        """Changes whenever a request starts or ends (whoever drained it); None when it cannot be read, or when
        other meters record on this provider too (the FastAPI instrumentation, say): then every tick hands off."""
        if self.provider is not None and meter_count(self.provider) != 1:
            return None
        try:
            return self.recorder.activity()
        except Exception:
            return None

    def snapshot(self, *, idle_skip: bool = False) -> None:
        """Collect this process's cumulative state and hand it to the directory (atomically).

        ``idle_skip``: skip it when no request started or ended since the last hand-off, unless ``HEARTBEAT``
        seconds have passed (an idle worker then costs nothing between heartbeats) or a server collection has read
        the zero of a series whose increments are held (they go out now)."""
        activity = self._activity()
        if (
            idle_skip
            and activity is not None
            and not (self._advanced and self.gate is not None and self.gate.held())
            and activity == self._last_activity
            and time.monotonic() - self._last_write < HEARTBEAT
        ):
            return
        with self._collect_lock, gc_paused():
            data = self.worker_reader.get_metrics_data()
            # Nothing recorded yet still leaves a file: the directory shows every live worker.
            req = self._encoder.encode(data) if data is not None else ExportMetricsServiceRequest()
            if self._baseline is not None:
                merged = Merged()
                merged.add(req, live=True)
                merged.add(self._baseline, live=True, sign=-1)
                req = self._encoder.encode(merged.metrics_data(self.resource))
            _write_atomic(self.path, req.SerializeToString())
            self._last_activity, self._last_write = activity, time.monotonic()
            self._advanced = False
            self._handoffs.append((self._last_write, self._collected_epoch))
            del self._handoffs[:-_HANDOFFS_KEPT]

    # - merged view

    def merged(self) -> Merged:
        merged = read_server(self.directory, self.me)
        self.rates.merged = merged
        local = self.server_reader.get_metrics_data()  # GPU sweep, service info, token efficiency: once, here
        if local is not None:
            merged.add(encode_metrics(local), live=True)
        return merged

    def metrics_data(self) -> MetricsData:
        with self._merge_lock:
            return self.merged().metrics_data(self.resource)

    def scrape_data(self) -> MetricsData:
        """``metrics_data`` for a Prometheus scrape, recorded in the directory once served (new series gate)."""
        started = time.monotonic()
        data = self.metrics_data()
        self._note_collection("prometheus", started)
        return data

    def _note_collection(self, kind: str, started: float) -> None:
        try:
            note_collection(self.directory, kind, started)
        except OSError:
            _log.debug("ryot-telemetry: could not record a %s collection", kind, exc_info=True)

    # - leader duties

    def _try_lead(self) -> None:
        if self._lock_fd is not None:
            return
        if any(other is not self and other.leader and other.directory == self.directory for other in _instances):
            return  # POSIX locks belong to the process: a second instance here would "win" it and then free it
        fd = os.open(os.path.join(self.directory, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            return
        self._lock_fd = fd
        _log.debug("ryot-telemetry: pid %d leads the multi-process directory %s", os.getpid(), self.directory)

    def _lead(self) -> None:
        if self._serve is not None and self.server is None:
            try:
                self.server = self._serve()
            except OSError as e:
                if not self._serve_warned:
                    self._serve_warned = True
                    _log.warning("ryot-telemetry: the multi-process leader cannot open the scrape port: %s", e)
        try:
            housekeep(self.directory, self.me, self.resource)
        except OSError:
            _log.debug("ryot-telemetry: multi-process housekeeping failed", exc_info=True)
        if self._otlp is not None and time.monotonic() >= self._next_export:
            self._next_export = time.monotonic() + self._export_interval
            self.export()

    def export(self) -> None:
        if self._otlp is None:
            return
        started = time.monotonic()
        baseline = None
        try:
            if self._delta is None:
                data = self.metrics_data()
            else:
                with self._merge_lock:
                    merged = self.merged()
                now = time.time_ns()
                data, baseline = self._delta.convert(merged, self.resource, now)
            result = self._otlp.export(data)
        except Exception:
            _log.debug("ryot-telemetry: merged OTLP export failed", exc_info=True)
            return
        if result == MetricExportResult.SUCCESS:
            if self._delta is not None and baseline is not None:
                try:
                    self._delta.commit(baseline, self.resource, now)
                except OSError as e:
                    _log.warning("ryot-telemetry: could not keep the OTLP delta baseline: %s", e)
            self._note_collection("otlp", started)

    def tick(self) -> None:
        try:
            self._refresh_collectors()
        except Exception:
            _log.debug("ryot-telemetry: could not read the server's collections", exc_info=True)
        try:
            self.snapshot(idle_skip=True)
            self._write_warned = False
        except Exception as e:
            # Once per failure spell (a directory removed under a running server would otherwise log every tick).
            level = logging.DEBUG if self._write_warned else logging.WARNING
            self._write_warned = True
            _log.log(level, "ryot-telemetry: could not write %s: %s", self.path, e)
        try:
            self._try_lead()
            if self.leader:
                self._lead()
        except Exception:
            _log.debug("ryot-telemetry: multi-process leader step failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(SNAPSHOT_INTERVAL):
            self.tick()

    def start(self) -> None:
        self.tick()
        self._thread = threading.Thread(target=self._run, name="ryot-multiproc", daemon=True)
        self._thread.start()
        # A worker that exits without shutdown() (a server stopping its workers) still hands over its last
        # requests. Registered after the MeterProvider's own exit hook, so it runs first (atexit is LIFO).
        ref = weakref.ref(self)

        def at_exit() -> None:
            mp = ref()
            if mp is not None and mp._pid == os.getpid():
                mp.close()

        atexit.register(at_exit)

    def close(self) -> None:
        """Hand over the final state, export it when leading, give up the leadership and the port."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.gate is not None:
            with contextlib.suppress(Exception):
                self.gate.close()  # the last hand-off carries every held increment: counters stay exact
        with contextlib.suppress(Exception):
            self.snapshot()
        if self._otlp is not None and self.leader:
            self.export()  # the final totals, as a PeriodicExportingMetricReader does at shutdown
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    # - fork

    def _before_fork(self) -> None:
        self._collect_lock.acquire()
        try:
            data = self.worker_reader.get_metrics_data()
            self._fork_baseline = encode_metrics(data) if data is not None else None
        except Exception:
            self._fork_baseline = None

    def _after_fork_parent(self) -> None:
        self._collect_lock.release()

    def _after_fork_child(self) -> None:
        """The child is a worker of its own: new identity and file, counts from zero, no inherited port or lock."""
        self._collect_lock = threading.Lock()
        self._merge_lock = threading.Lock()
        self._encoder = HandoffEncoder()
        self._baseline = getattr(self, "_fork_baseline", None)
        self.me = _Ident.mine()
        self._last_write = 0.0  # a new identity: its first hand-off is due at once
        self._handoffs = []
        self._pid = os.getpid()  # exit hook: the child hands over its own state at exit
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.socket.close()
            self.server = None
        self._lock_fd = None  # POSIX locks are not inherited; the descriptor is closed below
        self._stop = threading.Event()
        self._thread = None
        if not self._closed:
            with contextlib.suppress(Exception):
                self.recorder.reset_after_fork()
            self._thread = threading.Thread(target=self._run, name="ryot-multiproc", daemon=True)
            self._thread.start()


def _fork_prepare() -> None:
    for mp in list(_instances):
        if not mp._closed:
            mp._before_fork()


def _fork_parent() -> None:
    for mp in list(_instances):
        if not mp._closed:
            mp._after_fork_parent()


def _fork_child() -> None:
    for mp in list(_instances):
        lock_fd = mp._lock_fd
        if not mp._closed:
            mp._after_fork_child()
        if lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock_fd)
            mp._lock_fd = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_fork_prepare, after_in_parent=_fork_parent, after_in_child=_fork_child)


# --- assembly ---------------------------------------------------------------------------------------------------


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
    """``configure()`` in multi-process mode: this process's provider, hand-off and share of the server duties.

    Two providers: the worker's (every instrument but NVML's, read by the hand-off reader and the user's readers)
    and the server's (service info, NVML gauges, token efficiency), read only when this process answers a scrape or
    exports for the server. Whatever was started is undone if a later step fails, as in ``configure()``.
    """
    directory = settings.multiproc_dir
    assert directory is not None
    from ..export.temporality import delta_export, exponential_otlp

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
    registry = serve = url = None
    if "prometheus" in settings.exporters:
        registry = registry_for(settings)
        if settings.start_prometheus_server:
            host, port, reg = settings.prometheus_host, settings.prometheus_port, registry
            url = f"http://{url_host(host)}:{port}/metrics"

            def serve() -> Any:
                return serve_metrics(host, port, reg)

    with contextlib.ExitStack() as closers:
        otlp = otlp_exporter(settings) if "otlp" in settings.exporters else None
        if otlp is not None:
            closers.callback(otlp.shutdown)
        worker_readers: list[Any] = list(settings.readers)
        if "console" in settings.exporters:
            worker_readers.append(console_reader(settings))
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
        provider, meter, recorder = parts.provider, parts.meter, parts.recorder
        mp = MultiProcess(
            directory,
            worker_reader=hand_off,
            server_reader=server_reader,
            resource=resource,
            recorder=recorder,
            provider=provider,
            rates=rates,
            serve=serve,
            otlp=otlp,
            export_interval_s=settings.export_interval_ms / 1000.0,
            delta=delta_export(settings),
        )
        if registry is not None:
            closers.callback(merged_prometheus_reader(mp.scrape_data, registry).shutdown)
        # Runs first at shutdown: the final hand-off while the provider still collects, then the port and lock.
        closers.callback(mp.close)
        mp.start()
        owned = closers.pop_all()
    return Process(provider, meter, recorder, worker_readers, url, registry, owned, parts.engine, parts.gpu, mp)

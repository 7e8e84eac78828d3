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
- **Previous runs.** A server is identified by the parent of its workers (the uvicorn / gunicorn master). Files of
  dead processes whose server is gone too belong to an earlier run and are removed; a new run starts from zero.

Without the variable, forked children (``os.fork()`` after ``configure()``) close the inherited scrape socket and
never wait for the parent's server thread; with it, a child becomes a worker of its own that counts from zero.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ._compat import set_collect_callback

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.sdk.metrics import MeterProvider

    from ._recorder import Recorder
    from .engine import EngineMetrics
    from .gpu import GpuGauges
    from .settings import Settings

_log = logging.getLogger("ryot_telemetry")

SNAPSHOT_INTERVAL = 0.5
"""Seconds between two hand-offs of a worker's state (and between two leader-lock attempts)."""

HEARTBEAT = 5.0
"""Longest time between two hand-offs of an idle worker (no request started or ended): sliding windows and
engine-reported gauges are then at most this old. A request that starts or ends is handed off at the next tick."""

LIVE_SUM = frozenset({"ryot.active_inference_requests", "ryot.sliding_tokens_per_second"})
"""Gauges summed over live processes; every other gauge is taken from the most recent live writer. (In-flight is an
up-down counter: like every non-monotonic sum it is summed over live processes only.)"""

_FOLDED_KEY = "ryot.multiproc.folded"
_LOCK_NAME = "leader.lock"


# --- process identity -----------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """State and start time (clock ticks since boot) of ``pid`` from Linux ``/proc``; None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        return fields[0].decode(), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def proc_start(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot; 0 where unknown."""
    stat = _stat(pid)
    return 0 if stat is None else stat[1]


def alive(pid: int, start: int) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs: a reused pid has another start time, and
    a killed worker its master has not reaped yet (a zombie) is dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _stat(pid)
    if stat is None:
        return True  # exists but cannot be read: trust the pid
    state, now = stat
    if state in ("Z", "X"):
        return False
    return start == 0 or now == start


@dataclass(frozen=True)
class _Ident:
    pid: int
    start: int
    ppid: int
    pstart: int

    @classmethod
    def mine(cls) -> _Ident:
        pid, ppid = os.getpid(), os.getppid()
        return cls(pid, proc_start(pid), ppid, proc_start(ppid))

    @property
    def file_name(self) -> str:
        return f"w-{self.pid}-{self.start}-{self.ppid}-{self.pstart}.pb"

    @property
    def archive_name(self) -> str:
        return f"archive-{self.ppid}-{self.pstart}.pb"

    @classmethod
    def parse(cls, name: str) -> _Ident | None:
        if not (name.startswith("w-") and name.endswith(".pb")):
            return None
        try:
            pid, start, ppid, pstart = (int(p) for p in name[2:-3].split("-"))
        except ValueError:
            return None
        return cls(pid, start, ppid, pstart)


# --- merging ----------------------------------------------------------------------------------------------------


def _any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_any_value(x) for x in v.array_value.values)
    return getattr(v, kind)


def _attrs_key(kvs: Iterable[Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((kv.key, _any_value(kv.value)) for kv in kvs))


@dataclass
class _Hist:
    bounds: tuple[float, ...]
    counts: list[int]
    count: int = 0
    total: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")


@dataclass
class _Family:
    name: str
    description: str
    unit: str
    kind: str  # sum, gauge, histogram
    monotonic: bool = True
    scope: tuple[str, str, str] = ("", "", "")  # name, version, schema URL
    start: int = 0
    points: dict[tuple[tuple[str, Any], ...], Any] = field(default_factory=dict)
    stamps: dict[tuple[tuple[str, Any], ...], int] = field(default_factory=dict)  # gauges: time of the value


class Merged:
    """Metric families merged over several cumulative OTLP snapshots (keyed by name, then attribute set)."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}
        self._mismatch_warned: set[str] = set()

    def add(self, req: ExportMetricsServiceRequest, *, live: bool, sign: int = 1) -> None:
        """Add one snapshot. Gauges count only from ``live`` processes; ``sign=-1`` subtracts (fork baselines)."""
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                scope = (sm.scope.name, sm.scope.version, sm.schema_url)
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind == "sum" and m.sum.is_monotonic:
                        self._add_sum(m, scope, sign)
                    elif kind == "sum" and live and sign > 0:
                        # Non-monotonic sums (the in-flight up-down counter) are levels: live processes only.
                        self._add_sum(m, scope, sign)
                    elif kind == "histogram":
                        self._add_hist(m, scope, sign)
                    elif kind == "gauge" and live and sign > 0:
                        self._add_gauge(m, scope)

    def _family(self, m: Any, scope: tuple[str, str, str], kind: str, monotonic: bool = True) -> _Family:
        fam = self.families.get(m.name)
        if fam is None:
            fam = self.families[m.name] = _Family(m.name, m.description, m.unit, kind, monotonic, scope)
        return fam

    def _add_sum(self, m: Any, scope: tuple[str, str, str], sign: int) -> None:
        fam = self._family(m, scope, "sum", m.sum.is_monotonic)
        if fam.kind != "sum":
            return
        for p in m.sum.data_points:
            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
            key = _attrs_key(p.attributes)
            fam.points[key] = fam.points.get(key, 0) + sign * value
            if p.start_time_unix_nano and (not fam.start or p.start_time_unix_nano < fam.start):
                fam.start = p.start_time_unix_nano

    def _add_hist(self, m: Any, scope: tuple[str, str, str], sign: int) -> None:
        fam = self._family(m, scope, "histogram")
        if fam.kind != "histogram":
            return
        for p in m.histogram.data_points:
            key = _attrs_key(p.attributes)
            bounds = tuple(p.explicit_bounds)
            h = fam.points.get(key)
            if h is None:
                h = fam.points[key] = _Hist(bounds, [0] * (len(bounds) + 1))
            if h.bounds != bounds:
                if m.name not in self._mismatch_warned:
                    self._mismatch_warned.add(m.name)
                    _log.warning(
                        "ryot-telemetry: workers disagree on the buckets of %s; a worker's points were skipped "
                        "(give every worker the same RYOT_TELEMETRY_BUCKETS)",
                        m.name,
                    )
                continue
            for i, c in enumerate(p.bucket_counts):
                h.counts[i] += sign * c
            h.count += sign * p.count
            h.total += sign * p.sum
            if sign > 0 and p.count:
                if p.HasField("min"):
                    h.min = min(h.min, p.min)
                if p.HasField("max"):
                    h.max = max(h.max, p.max)
            if p.start_time_unix_nano and (not fam.start or p.start_time_unix_nano < fam.start):
                fam.start = p.start_time_unix_nano

    def _add_gauge(self, m: Any, scope: tuple[str, str, str]) -> None:
        fam = self._family(m, scope, "gauge")
        if fam.kind != "gauge":
            return
        summed = m.name in LIVE_SUM
        for p in m.gauge.data_points:
            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
            key = _attrs_key(p.attributes)
            if summed:
                fam.points[key] = fam.points.get(key, 0) + value
            elif key not in fam.points or p.time_unix_nano >= fam.stamps.get(key, 0):
                fam.points[key] = value
                fam.stamps[key] = p.time_unix_nano

    def gauge_value(self, name: str, **attrs: str) -> float | None:
        fam = self.families.get(name)
        if fam is None:
            return None
        value = fam.points.get(tuple(sorted(attrs.items())))
        return None if value is None else float(value)

    def cumulative_only(self) -> Merged:
        """Monotonic sums and histograms only (what a dead worker leaves behind, and what the archive keeps)."""
        out = Merged()
        out.families = {n: f for n, f in self.families.items() if f.kind == "histogram" or f.monotonic}
        return out

    def metrics_data(self, resource: Resource, *, now: int | None = None) -> MetricsData:
        """The merged families as SDK ``MetricsData`` (what exporters and the Prometheus translation take)."""
        now = now or time.time_ns()
        by_scope: dict[tuple[str, str, str], list[Metric]] = {}
        for fam in self.families.values():
            start = fam.start or now
            if fam.kind == "sum":
                data: Any = Sum(
                    data_points=[NumberDataPoint(dict(k), start, now, v) for k, v in fam.points.items()],
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=fam.monotonic,
                )
            elif fam.kind == "histogram":
                data = Histogram(
                    data_points=[
                        HistogramDataPoint(
                            dict(k),
                            start,
                            now,
                            h.count,
                            h.total,
                            list(h.counts),
                            list(h.bounds),
                            h.min if h.count else 0.0,
                            h.max if h.count else 0.0,
                        )
                        for k, h in fam.points.items()
                    ],
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                )
            else:
                data = Gauge(data_points=[NumberDataPoint(dict(k), 0, now, v) for k, v in fam.points.items()])
            if fam.points:
                by_scope.setdefault(fam.scope, []).append(Metric(fam.name, fam.description, fam.unit, data))
        scopes = [
            ScopeMetrics(InstrumentationScope(n, v or None, u or None), ms, u) for (n, v, u), ms in by_scope.items()
        ]
        return MetricsData([ResourceMetrics(resource, scopes, "")])


def _read(path: str) -> ExportMetricsServiceRequest | None:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    req = ExportMetricsServiceRequest()
    try:
        req.ParseFromString(raw)
    except Exception:
        _log.warning("ryot-telemetry: skipping unreadable multi-process file %s", path)
        return None
    return req


def _write_atomic(path: str, payload: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)


def _folded(req: ExportMetricsServiceRequest | None) -> set[str]:
    if req is None:
        return set()
    for rm in req.resource_metrics:
        for kv in rm.resource.attributes:
            if kv.key == _FOLDED_KEY:
                return {str(x) for x in (_any_value(kv.value) or ())}
    return set()


def read_server(directory: str, me: _Ident) -> Merged:
    """Merge every worker file of this server and its archive. Files are read before the archive, so a file folded
    into the archive meanwhile is counted once: from the archive if the archive already names it, else as a file."""
    files: list[tuple[str, ExportMetricsServiceRequest, bool]] = []
    for name in sorted(os.listdir(directory)):
        ident = _Ident.parse(name)
        if ident is None:
            continue
        same_server = (ident.ppid, ident.pstart) == (me.ppid, me.pstart)
        live = alive(ident.pid, ident.start)
        if not same_server and not live and not alive(ident.ppid, ident.pstart):
            continue  # an earlier run of the server
        req = _read(os.path.join(directory, name))
        if req is not None:
            files.append((name, req, live))
    merged = Merged()
    folded: set[str] = set()
    for archive in _archives(directory):
        req = _read(os.path.join(directory, archive))
        if req is not None:
            folded |= _folded(req)
            merged.add(req, live=False)
    for name, req, live in files:
        if name not in folded:
            merged.add(req, live=live)
    return merged


def _archives(directory: str) -> list[str]:
    """Archives of servers that still run (the parent named in the file name is alive)."""
    out = []
    for name in os.listdir(directory):
        if name.startswith("archive-") and name.endswith(".pb"):
            try:
                ppid, pstart = (int(p) for p in name[8:-3].split("-"))
            except ValueError:
                continue
            if alive(ppid, pstart):
                out.append(name)
    return out


def housekeep(directory: str, me: _Ident, resource: Resource) -> int:
    """Leader only: fold dead workers into their server's archive, drop earlier runs and stale temporary files.

    Returns how many worker files were folded. Idempotent if interrupted: a folded file is named in the archive
    before it is removed, and readers skip files the archive names.
    """
    names = os.listdir(directory)
    present = set(names)
    dead: dict[str, list[str]] = {}  # archive name -> dead worker files
    for name in names:
        path = os.path.join(directory, name)
        if ".tmp." in name:
            with contextlib.suppress(ValueError):
                if not alive(int(name.rsplit(".", 1)[1]), 0):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            continue
        if name.startswith("archive-") and name.endswith(".pb"):
            try:
                ppid, pstart = (int(p) for p in name[8:-3].split("-"))
            except ValueError:
                continue
            if not alive(ppid, pstart):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # an earlier run's archive
            continue
        ident = _Ident.parse(name)
        if ident is None or alive(ident.pid, ident.start):
            continue
        if not alive(ident.ppid, ident.pstart):
            with contextlib.suppress(OSError):
                os.unlink(path)  # an earlier run
            continue
        dead.setdefault(ident.archive_name, []).append(name)
    folded_total = 0
    for archive_name, worker_files in dead.items():
        archive_path = os.path.join(directory, archive_name)
        archive = _read(archive_path)
        already = _folded(archive)
        merged = Merged()
        if archive is not None:
            merged.add(archive, live=False)
        new = []
        for name in sorted(worker_files):
            if name in already:
                new.append(name)
                continue
            req = _read(os.path.join(directory, name))
            if req is not None:
                merged.add(req, live=False)
            new.append(name)
        # Name only files still present: the set stays bounded however many workers come and go.
        keep = sorted((already | set(new)) & present)
        payload = encode_metrics(
            merged.cumulative_only().metrics_data(resource.merge(Resource({_FOLDED_KEY: keep})))
        ).SerializeToString()
        _write_atomic(archive_path, payload)
        for name in new:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
        folded_total += len(new)
    return folded_total


# --- the per-process side -------------------------------------------------------------------------------------


def merged_prometheus_reader(produce: Callable[[], MetricsData], registry: Any) -> PrometheusMetricReader:
    """The OTel Prometheus reader on ``registry``, fed with the merged server state instead of a provider's.

    The reader is attached to no MeterProvider: its collect callback (the hook a provider installs) returns the
    merged data, and the OTel exporter translates it to Prometheus families itself (names, units, ``_total``, scope
    labels), so no exposition format is written here (the hook is the SDK's private provider-to-reader one: see
    ``_compat``).
    """
    reader = PrometheusMetricReader(registry=registry)

    def collect(_reader: Any, timeout_millis: float = 10_000) -> MetricsData | None:
        try:
            return produce()
        except Exception:
            _log.warning("ryot-telemetry: could not merge the worker processes' metrics", exc_info=True)
            return None

    set_collect_callback(reader, collect)
    return reader


class _MergedRates:
    """What ``install_token_efficiency`` reads from a recorder, answered from the merged sliding windows."""

    def __init__(self, max_length: int) -> None:
        self.models = self
        self.windows = self
        self.max_length = max_length
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
        recorder: Any,
        rates: _MergedRates,
        serve: Callable[[], Any] | None,
        otlp: MetricExporter | None,
        export_interval_s: float,
    ) -> None:
        self.directory = directory
        self.worker_reader = worker_reader
        self.server_reader = server_reader
        self.resource = resource
        self.recorder = recorder
        self.rates = rates
        self._serve = serve
        self._otlp = otlp
        self._export_interval = export_interval_s
        self.server: Any = None
        self._serve_warned = False
        self.me = _Ident.mine()
        self._pid = os.getpid()
        self._baseline: ExportMetricsServiceRequest | None = None
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
        _instances.add(self)

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.me.file_name)

    @property
    def leader(self) -> bool:
        return self._lock_fd is not None

    # - hand-off

    def _activity(self) -> Any:
        """Changes whenever a request starts or ends (whoever drained it); None when it cannot be read."""
        try:
            return tuple((repr(a.enter), repr(a.exit)) for a in list(self.recorder._active.values()))
        except Exception:
            return None

    def snapshot(self, *, idle_skip: bool = False) -> None:
        """Collect this process's cumulative state and hand it to the directory (atomically).

        ``idle_skip``: skip it when no request started or ended since the last hand-off, unless ``HEARTBEAT``
        seconds have passed (an idle worker then costs nothing between heartbeats)."""
        activity = self._activity()
        if (
            idle_skip
            and activity is not None
            and activity == self._last_activity
            and time.monotonic() - self._last_write < HEARTBEAT
        ):
            return
        with self._collect_lock:
            data = self.worker_reader.get_metrics_data()
            # Nothing recorded yet still leaves a file: the directory shows every live worker.
            req = encode_metrics(data) if data is not None else ExportMetricsServiceRequest()
            if self._baseline is not None:
                merged = Merged()
                merged.add(req, live=True)
                merged.add(self._baseline, live=True, sign=-1)
                req = encode_metrics(merged.metrics_data(self.resource))
            _write_atomic(self.path, req.SerializeToString())
            self._last_activity, self._last_write = activity, time.monotonic()

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
        try:
            self._otlp.export(self.metrics_data())
        except Exception:
            _log.debug("ryot-telemetry: merged OTLP export failed", exc_info=True)

    def tick(self) -> None:
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
        self._baseline = getattr(self, "_fork_baseline", None)
        self.me = _Ident.mine()
        self._last_write = 0.0  # a new identity: its first hand-off is due at once
        self._pid = os.getpid()  # exit hook: the child hands over its own state at exit
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.socket.close()
            self.server = None
        self._lock_fd = None  # POSIX locks are not inherited; the descriptor is closed below
        self._stop = threading.Event()
        self._thread = None
        if not self._closed:
            reset_recorder_after_fork(self.recorder)
            self._thread = threading.Thread(target=self._run, name="ryot-multiproc", daemon=True)
            self._thread.start()


def reset_recorder_after_fork(recorder: Any) -> None:
    """A forked child has none of its parent's requests: not the queued ones, not those in flight, not their
    tokens in the sliding windows (all of them belong to, and are recorded by, the parent)."""
    with contextlib.suppress(Exception):
        recorder._pending.clear()
    with contextlib.suppress(Exception):
        import itertools

        for active in list(recorder._active.values()):
            active.enter = itertools.count()
            active.exit = itertools.count()
    with contextlib.suppress(Exception):
        recorder.windows.__init__()  # in place: the derived gauges hold this very object


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
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

    from ._assembly import build_recorder, exemplar_filter, install_service_info, ryot_meter
    from ._instruments import views
    from ._readers import otlp_exporter, registry_for
    from .derived import install_token_efficiency
    from .engine import EngineMetrics
    from .gpu import gauges_for

    directory = settings.multiproc_dir
    assert directory is not None
    if "service.instance.id" not in settings.resource_attributes and "service.instance.id=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        resource = resource.merge(Resource({"service.instance.id": server_instance_id(directory)}))
    registry = serve = url = None
    if "prometheus" in settings.exporters:
        registry = registry_for(settings)
        if settings.start_prometheus_server:
            from prometheus_client import start_http_server

            host, port, reg = settings.prometheus_host, settings.prometheus_port, registry
            url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"

            def serve() -> Any:
                return start_http_server(port, addr=host, registry=reg)[0]

    with contextlib.ExitStack() as closers:
        otlp = otlp_exporter(settings) if "otlp" in settings.exporters else None
        if otlp is not None:
            closers.callback(otlp.shutdown)
        worker_readers: list[Any] = list(settings.readers)
        if "console" in settings.exporters:
            worker_readers.append(
                PeriodicExportingMetricReader(
                    ConsoleMetricExporter(), export_interval_millis=settings.export_interval_ms
                )
            )
        hand_off = InMemoryMetricReader()
        worker_readers.append(hand_off)
        provider = MeterProvider(
            metric_readers=worker_readers,
            resource=resource,
            views=views(settings.buckets),
            exemplar_filter=exemplar_filter(settings),
        )
        closers.callback(provider.shutdown)
        server_reader = InMemoryMetricReader()
        server_provider = MeterProvider(
            metric_readers=[server_reader], resource=resource, views=views(settings.buckets)
        )
        closers.callback(server_provider.shutdown)
        meter = ryot_meter(provider)
        recorder = build_recorder(meter, settings)
        # Worker side: engine-reported GPU memory breakdowns only; NVML is read once, by the answering process.
        breakdowns = gauges_for(meter, False, settings.gpu_models, None)
        engine = EngineMetrics(meter, recorder=recorder, gpu=breakdowns, buckets=settings.buckets)
        server_meter = ryot_meter(server_provider)
        install_service_info(server_meter, str(resource.attributes.get("service.name", "")), settings.component)
        gpu = gauges_for(server_meter, settings.gpu, settings.gpu_models, settings.gpu_backend)
        closers.callback(gpu.close)
        rates = _MergedRates(recorder.models.max_length)
        install_token_efficiency(server_meter, rates, gpu)
        mp = MultiProcess(
            directory,
            worker_reader=hand_off,
            server_reader=server_reader,
            resource=resource,
            recorder=recorder,
            rates=rates,
            serve=serve,
            otlp=otlp,
            export_interval_s=settings.export_interval_ms / 1000.0,
        )
        if registry is not None:
            closers.callback(merged_prometheus_reader(mp.metrics_data, registry).shutdown)
        # Runs first at shutdown: the final hand-off while the provider still collects, then the port and lock.
        closers.callback(mp.close)
        mp.start()
        owned = closers.pop_all()
    return Process(provider, meter, recorder, worker_readers, url, registry, owned, engine, gpu, mp)

"""The multi-process directory: process identity, the merge of cumulative OTLP snapshots, and housekeeping.

Every file is an OTLP ``ExportMetricsServiceRequest`` (cumulative). ``Merged`` adds them up: monotonic sums and
histograms over every file, live or dead (what a dead worker handed over stays counted); gauges and non-monotonic
sums (the in-flight up-down counter) over live processes only. ``housekeep`` (the leader's job) folds dead workers'
files into their server's archive and removes what earlier runs left. ``worker.py`` is the process side (the
module docstring there lists the other rooms).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ..catalogue import CATALOGUE, LIVE_SUM

__all__ = ["LIVE_SUMMED", "Merged", "alive", "housekeep", "proc_start", "read_server"]

_log = logging.getLogger("ryot_telemetry")

LIVE_SUMMED = frozenset(m.name for m in CATALOGUE if m.multiprocess is LIVE_SUM)
"""Metrics the catalogue marks ``multiprocess=LIVE_SUM``: their gauges are summed over live processes; every other
gauge is taken from the most recent live writer. (In-flight is an up-down counter: like every non-monotonic sum it
is summed over live processes only.)"""

_FOLDED_KEY = "ryot.multiproc.folded"


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
        summed = m.name in LIVE_SUMMED
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

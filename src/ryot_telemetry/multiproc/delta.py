"""Delta temporality for the multi-process leader's OTLP export, computed from the merged cumulative state.

The workers hand off cumulative state and the leader merges it (``directory.Merged``). For a receiver that wants
delta (``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta`` or ``lowmemory``), each export sends, per series,
the merged cumulative value minus the value the last successful export was computed from (the *baseline*):

- **Exact**: deltas summed over the exports are the merged cumulative totals, because each delta is taken from the
  same merged totals the cumulative export would send. A failed export leaves the baseline where it was, so the
  next delta covers both intervals (nothing is lost, as the SDK's own delta reader would lose it).
- **Never negative**: the merged totals only grow (dead workers' counts stay, folded into the archive); should a
  series ever read lower (a worker file unreadable for one read), it gets a zero delta and keeps its baseline, so
  the counts come back once, not twice.
- **Across leaders**: the baseline lives in the directory (``otlp-delta.pb``, written atomically after each
  successful export), so a worker taking the export over continues from where the last leader stopped instead of
  sending the whole total again.
- **Restarts**: a worker that restarts is a new file starting at zero, its predecessor's counts stay in the merge:
  the totals do not move back. A whole new run of the server starts a family over: when every point of a merged
  family started after the baseline was written, the baseline of that family belongs to an earlier run and is not
  used.

Non-monotonic sums (the in-flight up-down counter) and gauges stay as they are, as the OTLP exporters' delta
preference leaves them. ``lowmemory`` is ``delta`` here: the merged data no longer tells which sums came from
observable counters.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource

from .directory import Merged, _Hist, _write_atomic

__all__ = ["STATE_NAME", "DeltaExport"]

_log = logging.getLogger("ryot_telemetry")

STATE_NAME = "otlp-delta.pb"
"""The baseline of the last successful delta export, in the multi-process directory."""

_EXPORTED_AT = "ryot.multiproc.delta_exported_at"
"""Resource attribute of the state file: when its baseline was exported (ns since the epoch)."""


def _key(attrs: Any) -> tuple[tuple[str, Any], ...]:
    """A point's attributes as ``Merged`` keys its points (sorted (key, value) pairs)."""
    return tuple(sorted(attrs.items()))


class DeltaExport:
    """Turns the leader's merged cumulative state into delta points, and keeps the baseline in the directory."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, STATE_NAME)

    def load(self) -> tuple[Merged, int]:
        """The baseline and when it was exported; an empty one (time 0) when there is none or it cannot be read."""
        base = Merged()
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
            req = ExportMetricsServiceRequest.FromString(raw)
        except FileNotFoundError:
            return base, 0
        except Exception:
            _log.warning("ryot-telemetry: unreadable delta baseline %s; the next OTLP export starts over", self.path)
            return base, 0
        exported_at = 0
        for rm in req.resource_metrics:
            for kv in rm.resource.attributes:
                if kv.key == _EXPORTED_AT:
                    exported_at = kv.value.int_value
        base.add(req, live=False)  # monotonic sums and histograms: all a baseline holds
        return base, exported_at

    def convert(self, merged: Merged, resource: Resource, now: int) -> tuple[MetricsData, Merged]:
        """(the delta ``MetricsData`` to export, the baseline to ``commit`` once it was exported)."""
        base, since = self.load()
        cumulative = merged.metrics_data(resource, now=now)
        nxt = Merged()
        out: list[ResourceMetrics] = []
        for rm in cumulative.resource_metrics:
            scopes = []
            for sm in rm.scope_metrics:
                metrics = [self._metric(m, merged, base, since, now, nxt) for m in sm.metrics]
                scopes.append(replace(sm, metrics=metrics))
            out.append(replace(rm, scope_metrics=scopes))
        # series the baseline has and this merge lacks (a file unreadable this once) keep their baseline
        for name, fam in base.families.items():
            kept = nxt.families.setdefault(name, replace(fam, points={}, stamps={}))
            if kept.kind == fam.kind and (merged.families.get(name) is None or self._continues(merged, name, since)):
                for key, value in fam.points.items():
                    kept.points.setdefault(key, value)
        return MetricsData(out), nxt

    def commit(self, baseline: Merged, resource: Resource, now: int) -> None:
        """Keep ``baseline`` (what ``convert`` returned) as the state the next export subtracts."""
        stamped = resource.merge(Resource({_EXPORTED_AT: now}))
        _write_atomic(self.path, encode_metrics(baseline.metrics_data(stamped, now=now)).SerializeToString())

    @staticmethod
    def _continues(merged: Merged, name: str, since: int) -> bool:
        """Does the baseline of family ``name`` belong to this run? Not when every merged point of the family
        started after the baseline was exported (a new run of the server, counting from zero)."""
        fam = merged.families.get(name)
        return since > 0 and fam is not None and (fam.start == 0 or fam.start <= since)

    def _metric(self, m: Metric, merged: Merged, base: Merged, since: int, now: int, nxt: Merged) -> Metric:
        data = m.data
        if isinstance(data, Sum) and data.is_monotonic:
            prev = base.families.get(m.name) if self._continues(merged, m.name, since) else None
            fam = nxt.families[m.name] = replace(merged.families[m.name], points={}, stamps={})
            points = []
            for p in data.data_points:
                key = _key(p.attributes)
                before = prev.points.get(key, 0) if prev is not None else 0
                value = p.value
                if value >= before:
                    delta, fam.points[key] = value - before, value
                else:  # lower than already exported: nothing new, and the baseline stays
                    delta, fam.points[key] = value - value, before
                start = since if prev is not None else p.start_time_unix_nano
                points.append(NumberDataPoint(p.attributes, start, now, delta, p.exemplars))
            return replace(m, data=Sum(points, AggregationTemporality.DELTA, True))
        if isinstance(data, Histogram):
            prev = base.families.get(m.name) if self._continues(merged, m.name, since) else None
            fam = nxt.families[m.name] = replace(merged.families[m.name], points={}, stamps={})
            hpoints = []
            for h in data.data_points:
                key = _key(h.attributes)
                was = prev.points.get(key) if prev is not None else None
                cur = merged.families[m.name].points[key]
                start = since if prev is not None else h.start_time_unix_nano
                point, fam.points[key] = _histogram_delta(h, cur, was, start, now)
                if point is not None:
                    hpoints.append(point)
            return replace(m, data=Histogram(hpoints, AggregationTemporality.DELTA))
        return m


def _histogram_delta(
    h: HistogramDataPoint, cur: _Hist, was: _Hist | None, start: int, now: int
) -> tuple[HistogramDataPoint | None, _Hist]:
    """(the delta point of one histogram series, its next baseline). No point when its bucket layout changed
    (nothing to subtract from: the series starts over from here); an empty one when it reads lower than already
    exported (the baseline stays)."""
    if was is None:
        return replace(h, start_time_unix_nano=start, time_unix_nano=now), cur
    if was.bounds != cur.bounds:
        return None, cur
    counts = [c - w for c, w in zip(cur.counts, was.counts)]
    if cur.count < was.count or any(c < 0 for c in counts):
        empty = [0] * len(counts)
        return _point(h, start, now, 0, 0.0, empty, None, None), was
    # The interval's extremes are known only where they moved: a new maximum was observed in this interval.
    grew = cur.count > was.count
    high = cur.max if grew and cur.max > was.max else None
    low = cur.min if grew and cur.min < was.min else None
    return _point(h, start, now, cur.count - was.count, cur.total - was.total, counts, low, high), cur


def _point(
    h: HistogramDataPoint,
    start: int,
    now: int,
    count: int,
    total: float,
    counts: list[int],
    low: float | None,
    high: float | None,
) -> HistogramDataPoint:
    """A delta point; an unknown min or max stays unset in OTLP (the encoder leaves None out)."""
    return HistogramDataPoint(
        h.attributes,
        start,
        now,
        count,
        total,
        counts,
        list(h.explicit_bounds),
        low,  # type: ignore[arg-type]
        high,  # type: ignore[arg-type]
        [],
    )

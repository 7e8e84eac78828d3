"""Delta temporality computed by ryot from cumulative state: one mechanism for one process and for many.

The OTLP export always collects cumulative data (a single process's provider, or the merged totals of every
worker in multi-process mode). For a receiver that wants delta (``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``
``delta`` or ``lowmemory``), each export sends, per series, the cumulative value minus the *baseline*: the values the
last export that may have arrived was computed from. The caller (``export.otlp``) advances the baseline only when an
export was confirmed or its outcome is unknown:

- **Exact**: deltas summed over the exports are the cumulative totals, because every delta is taken from the same
  totals a cumulative export would send. An export that certainly did not arrive leaves the baseline where it was,
  so the next delta covers both intervals: an outage loses nothing (the SDK's own delta reader drops a failed
  interval). An export whose outcome is unknown advances it: its increments may be lost, never counted twice.
- **Never negative**: should a series read lower than its baseline (a worker file unreadable for one read), it gets
  a zero delta and keeps its baseline, so the counts come back once, not twice.
- **A new run starts over**: when every point of a family started after the baseline was taken, the baseline of
  that family belongs to an earlier run (multi-process mode keeps it in a file) and is not used.

Monotonic sums, explicit and exponential histograms become deltas; non-monotonic sums (the in-flight up-down
counter) and gauges stay as they are, as the OTLP exporters' delta preference leaves them. ``lowmemory`` is ``delta``
here: the cumulative data no longer tells which sums came from observable counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Buckets as SdkBuckets
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["Baseline", "Delta", "to_delta"]

_Key = tuple[tuple[str, Any], ...]

_EXPORTED_AT = "ryot.multiproc.delta_exported_at"
"""Resource attribute of a stored baseline: when it was taken (ns since the epoch)."""


def _key(attrs: Any) -> _Key:
    return tuple(sorted((attrs or {}).items()))


@dataclass(frozen=True)
class _Hist:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    total: float
    min: float
    max: float


@dataclass(frozen=True)
class _Exp:
    scale: int
    zero: int
    pos: tuple[int, tuple[int, ...]]  # offset, counts
    neg: tuple[int, tuple[int, ...]]
    count: int
    total: float
    min: float
    max: float


@dataclass
class Baseline:
    """Per metric name, per attribute set: the cumulative value the last export that may have arrived sent
    (a number, ``_Hist`` or ``_Exp``); ``taken``: when (ns since the epoch; 0: never)."""

    taken: int = 0
    families: dict[str, dict[_Key, Any]] = field(default_factory=dict)

    # - storage (multi-process mode keeps it in the directory, so a new leader continues from it)

    def to_bytes(self, resource: Resource) -> bytes:
        """The baseline as an OTLP request of cumulative points (exponential histograms are not stored)."""
        metrics: list[Metric] = []
        for name, points in self.families.items():
            sums = [NumberDataPoint(dict(k), 0, self.taken, v) for k, v in points.items() if not _is_hist(v)]
            hists = [
                HistogramDataPoint(
                    dict(k), 0, self.taken, v.count, v.total, list(v.counts), list(v.bounds), v.min, v.max
                )
                for k, v in points.items()
                if isinstance(v, _Hist)
            ]
            if sums:
                metrics.append(Metric(name, None, None, Sum(sums, AggregationTemporality.CUMULATIVE, True)))
            elif hists:
                metrics.append(Metric(name, None, None, Histogram(hists, AggregationTemporality.CUMULATIVE)))
        stamped = resource.merge(Resource({_EXPORTED_AT: self.taken}))
        data = MetricsData([ResourceMetrics(stamped, [ScopeMetrics(_SCOPE, metrics, "")], "")])
        return bytes(encode_metrics(data).SerializeToString())

    @classmethod
    def from_bytes(cls, raw: bytes) -> Baseline:
        """What ``to_bytes`` wrote; ValueError if it cannot be read."""
        try:
            req = ExportMetricsServiceRequest.FromString(raw)
        except Exception as e:
            raise ValueError(str(e)) from None
        out = cls()
        for rm in req.resource_metrics:
            for kv in rm.resource.attributes:
                if kv.key == _EXPORTED_AT:
                    out.taken = kv.value.int_value
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    fam = out.families.setdefault(m.name, {})
                    kind = m.WhichOneof("data")
                    if kind == "sum":
                        for p in m.sum.data_points:
                            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                            fam[_pb_key(p.attributes)] = value
                    elif kind == "histogram":
                        for h in m.histogram.data_points:
                            fam[_pb_key(h.attributes)] = _Hist(
                                tuple(h.explicit_bounds), tuple(h.bucket_counts), h.count, h.sum, h.min, h.max
                            )
        return out


def _is_hist(v: Any) -> bool:
    return isinstance(v, (_Hist, _Exp))


def _any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_any_value(x) for x in v.array_value.values)
    return getattr(v, kind)


def _pb_key(kvs: Any) -> _Key:
    return tuple(sorted((kv.key, _any_value(kv.value)) for kv in kvs))


_SCOPE = InstrumentationScope("ryot_telemetry.delta_baseline")


@dataclass
class Delta:
    """One export's delta data, the baseline to keep if it may arrive, and how many points carry increments."""

    data: MetricsData
    baseline: Baseline
    increments: int


def to_delta(cumulative: MetricsData, base: Baseline, now: int) -> Delta:
    """The delta of ``cumulative`` against ``base`` (see the module docstring), taken at ``now``."""
    nxt = Baseline(taken=now)
    counted = [0]
    out: list[ResourceMetrics] = []
    for rm in cumulative.resource_metrics:
        scopes = []
        for sm in rm.scope_metrics:
            metrics = [_metric(m, base, now, nxt, counted) for m in sm.metrics]
            scopes.append(replace(sm, metrics=metrics))
        out.append(replace(rm, scope_metrics=scopes))
    # series the baseline has and this collection lacks (a file unreadable this once) keep their baseline
    for name, points in base.families.items():
        kept = nxt.families.setdefault(name, {})
        for key, value in points.items():
            kept.setdefault(key, value)
    return Delta(MetricsData(out), nxt, counted[0])


def _previous(base: Baseline, name: str, points: Any) -> dict[_Key, Any] | None:
    """The baseline of family ``name``; None when it belongs to an earlier run (every point started after it)."""
    prev = base.families.get(name)
    if prev is None or base.taken <= 0:
        return None
    if points and all(p.start_time_unix_nano > base.taken for p in points):
        return None
    return prev


def _metric(m: Metric, base: Baseline, now: int, nxt: Baseline, counted: list[int]) -> Metric:
    data = m.data
    if isinstance(data, Sum) and data.is_monotonic:
        prev = _previous(base, m.name, data.data_points)
        fam = nxt.families[m.name] = {}
        points = []
        for p in data.data_points:
            key = _key(p.attributes)
            before = prev.get(key, 0) if prev is not None else 0
            if isinstance(before, (int, float)) and p.value >= before:
                delta, fam[key] = p.value - before, p.value
            else:  # lower than already exported: nothing new, and the baseline stays
                delta, fam[key] = p.value - p.value, before
            counted[0] += bool(delta)
            start = base.taken if prev is not None else p.start_time_unix_nano
            points.append(NumberDataPoint(p.attributes, start, now, delta, p.exemplars))
        return replace(m, data=Sum(points, AggregationTemporality.DELTA, True))
    if isinstance(data, Histogram):
        prev = _previous(base, m.name, data.data_points)
        fam = nxt.families[m.name] = {}
        hpoints = []
        for h in data.data_points:
            key = _key(h.attributes)
            cur = _Hist(tuple(h.explicit_bounds), tuple(h.bucket_counts), h.count, h.sum, h.min, h.max)
            was = prev.get(key) if prev is not None else None
            start = base.taken if prev is not None else h.start_time_unix_nano
            point, fam[key] = _histogram_delta(h, cur, was if isinstance(was, _Hist) else None, start, now)
            if point is not None:
                counted[0] += bool(point.count)
                hpoints.append(point)
        return replace(m, data=Histogram(hpoints, AggregationTemporality.DELTA))
    if isinstance(data, ExponentialHistogram):
        prev = _previous(base, m.name, data.data_points)
        fam = nxt.families[m.name] = {}
        epoints = []
        for e in data.data_points:
            key = _key(e.attributes)
            cur_e = _exp(e)
            was_e = prev.get(key) if prev is not None else None
            start = base.taken if prev is not None else e.start_time_unix_nano
            epoint, fam[key] = _exponential_delta(e, cur_e, was_e if isinstance(was_e, _Exp) else None, start, now)
            counted[0] += bool(epoint.count)
            epoints.append(epoint)
        return replace(m, data=ExponentialHistogram(epoints, AggregationTemporality.DELTA))
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
        return _hpoint(h, start, now, 0, 0.0, [0] * len(counts), None, None), was
    # The interval's extremes are known only where they moved: a new maximum was observed in this interval.
    grew = cur.count > was.count
    high = cur.max if grew and cur.max > was.max else None
    low = cur.min if grew and cur.min < was.min else None
    return _hpoint(h, start, now, cur.count - was.count, cur.total - was.total, counts, low, high), cur


def _hpoint(
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
        list(h.exemplars) if count else [],
    )


def _exp(e: ExponentialHistogramDataPoint) -> _Exp:
    return _Exp(
        e.scale,
        e.zero_count,
        (e.positive.offset, tuple(e.positive.bucket_counts)),
        (e.negative.offset, tuple(e.negative.bucket_counts)),
        e.count,
        e.sum,
        e.min,
        e.max,
    )


def _downscale(buckets: tuple[int, tuple[int, ...]], by: int) -> dict[int, int]:
    """Bucket index -> count at a scale ``by`` steps coarser (each step merges pairs of buckets)."""
    offset, counts = buckets
    out: dict[int, int] = {}
    for i, c in enumerate(counts):
        if c:
            j = (offset + i) >> by
            out[j] = out.get(j, 0) + c
    return out


def _subtract(cur: dict[int, int], was: dict[int, int]) -> tuple[int, list[int]] | None:
    """(offset, counts) of ``cur - was``; None when a bucket would go negative."""
    diff = {i: cur.get(i, 0) - was.get(i, 0) for i in set(cur) | set(was)}
    if any(v < 0 for v in diff.values()):
        return None
    used = [i for i, v in diff.items() if v]
    if not used:
        return 0, []
    low, high = min(used), max(used)
    return low, [diff.get(i, 0) for i in range(low, high + 1)]


def _exponential_delta(
    e: ExponentialHistogramDataPoint, cur: _Exp, was: _Exp | None, start: int, now: int
) -> tuple[ExponentialHistogramDataPoint, _Exp]:
    """(the delta point of one exponential histogram series, its next baseline): both sides at the coarser scale of
    the two (a cumulative exponential histogram only ever gets coarser); an empty one when it reads lower."""
    if was is None:
        return replace(e, start_time_unix_nano=start, time_unix_nano=now), cur
    scale = min(cur.scale, was.scale)
    pos = _subtract(_downscale(cur.pos, cur.scale - scale), _downscale(was.pos, was.scale - scale))
    neg = _subtract(_downscale(cur.neg, cur.scale - scale), _downscale(was.neg, was.scale - scale))
    if pos is None or neg is None or cur.count < was.count or cur.zero < was.zero:
        empty = SdkBuckets(0, [])
        return ExponentialHistogramDataPoint(
            e.attributes, start, now, 0, 0, scale, 0, empty, empty, e.flags, 0.0, 0.0, []
        ), was
    grew = cur.count > was.count
    # OTLP's exponential points carry min and max as plain values: the cumulative ones are bounds that still hold
    # every value of the interval.
    high, low = cur.max, cur.min
    point = ExponentialHistogramDataPoint(
        e.attributes,
        start,
        now,
        cur.count - was.count,
        cur.total - was.total,
        scale,
        cur.zero - was.zero,
        SdkBuckets(pos[0], pos[1]),
        SdkBuckets(neg[0], neg[1]),
        e.flags,
        low,
        high,
        list(e.exemplars) if grew else [],
    )
    return point, cur

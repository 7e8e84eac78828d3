"""The hand-off's OTLP encoding: ``encode_metrics`` output, byte for byte, at a quarter of its cost.

A worker in multi-process mode encodes its whole cumulative state twice a second. ``encode_metrics`` rebuilds every
attribute of every point (``KeyValue`` and ``AnyValue`` messages, one Python call each) although a worker's series
are few and stable, and that is half of its cost. ``HandoffEncoder`` keeps, per metric and attribute set, a data
point message that holds the encoded attributes (and a histogram's bounds) and copies it in C (``MergeFrom``), so
that only the values are set per hand-off. The result is the ``ExportMetricsServiceRequest`` ``encode_metrics``
builds, field for field (tests compare the bytes); what it does not cover (points with exemplars, other
aggregations) is encoded by ``encode_metrics`` itself.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PB2Resource
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)

from .._compat import encode_attributes, encode_instrumentation_scope

__all__ = ["HandoffEncoder"]

_Key = tuple[str, tuple[tuple[str, Any], ...]]


class HandoffEncoder:
    """``encode_metrics`` for one process's successive collections, with each series' attributes encoded once.

    The templates kept are those of the last encoding's series: the cache never outgrows the process's series.
    Not thread-safe: the hand-off encodes under its collect lock.
    """

    def __init__(self) -> None:
        self._points: dict[_Key, Any] = {}
        self._resources: list[tuple[Any, PB2Resource]] = []
        self._scopes: list[tuple[Any, Any]] = []

    def encode(self, data: MetricsData) -> ExportMetricsServiceRequest:
        out = ExportMetricsServiceRequest()
        old, self._points = self._points, {}
        by_resource: dict[Any, Any] = {}  # as encode_metrics: one entry per SDK resource, the last one wins
        for rm in data.resource_metrics:
            by_resource[rm.resource] = rm
        for resource, rm in by_resource.items():
            prm = out.resource_metrics.add()
            prm.resource.CopyFrom(self._resource(resource))
            prm.schema_url = resource.schema_url or ""
            for sm in rm.scope_metrics:
                psm = prm.scope_metrics.add()
                psm.scope.CopyFrom(self._scope(sm.scope))
                psm.schema_url = sm.scope.schema_url or ""
                for metric in sm.metrics:
                    self._metric(metric, psm.metrics.add(), old, rm, sm)
        return out

    # - cached parts

    def _resource(self, resource: Any) -> PB2Resource:
        for known, pb in self._resources:
            if known is resource:
                return pb
        pb = PB2Resource(attributes=encode_attributes(resource.attributes))
        self._resources = [*self._resources[-3:], (resource, pb)]
        return pb

    def _scope(self, scope: Any) -> Any:
        for known, pb in self._scopes:
            if known is scope:
                return pb
        pb = encode_instrumentation_scope(scope)
        self._scopes = [*self._scopes[-15:], (scope, pb)]
        return pb

    def _template(self, old: dict[_Key, Any], name: str, attributes: Any, cls: Any) -> Any:
        """The cached point of (metric, attribute set) carrying the encoded attributes; None if unhashable."""
        try:
            key = (name, tuple(attributes.items())) if attributes else (name, ())
            template = old.get(key)
        except TypeError:  # an unhashable attribute value (a list): encoded afresh every time
            return cls(attributes=encode_attributes(attributes))
        if template is None or type(template) is not cls:
            template = cls(attributes=encode_attributes(attributes))
        self._points[key] = template
        return template

    # - one metric

    def _metric(self, metric: Metric, pm: Any, old: dict[_Key, Any], rm: ResourceMetrics, sm: ScopeMetrics) -> None:
        pm.name = metric.name
        pm.description = metric.description or ""
        pm.unit = metric.unit or ""
        data = metric.data
        if type(data) not in (Sum, Gauge, Histogram) or any(p.exemplars for p in data.data_points):
            # Rare here (exemplars exist only with a sampling filter; views give no other aggregation): the
            # library's own encoding of this one metric.
            one = MetricsData([ResourceMetrics(rm.resource, [ScopeMetrics(sm.scope, [metric], sm.schema_url)], "")])
            pm.CopyFrom(encode_metrics(one).resource_metrics[0].scope_metrics[0].metrics[0])
            return
        name = metric.name
        if isinstance(data, Histogram):
            if data.data_points:
                pm.histogram.aggregation_temporality = data.aggregation_temporality
            hpoints = pm.histogram.data_points
            for hp in data.data_points:
                template = self._template(old, name, hp.attributes, pb2.HistogramDataPoint)
                bounds = hp.explicit_bounds
                if template.explicit_bounds != bounds:
                    del template.explicit_bounds[:]
                    template.explicit_bounds.extend(bounds)
                pt = hpoints.add()
                pt.MergeFrom(template)
                pt.time_unix_nano = hp.time_unix_nano
                pt.start_time_unix_nano = hp.start_time_unix_nano
                pt.count = hp.count
                pt.bucket_counts.extend(hp.bucket_counts)
                # encode_metrics passes these to the constructor, where None leaves an optional field unset
                if hp.sum is not None:
                    pt.sum = hp.sum
                if hp.max is not None:
                    pt.max = hp.max
                if hp.min is not None:
                    pt.min = hp.min
            return
        if isinstance(data, Sum):
            if data.data_points:
                pm.sum.aggregation_temporality = data.aggregation_temporality
                pm.sum.is_monotonic = data.is_monotonic
            points, source, start = pm.sum.data_points, data.data_points, True
        elif isinstance(data, Gauge):
            points, source, start = pm.gauge.data_points, data.data_points, False  # gauge points: no start time
        else:
            return
        for p in source:
            pt = points.add()
            pt.MergeFrom(self._template(old, name, p.attributes, pb2.NumberDataPoint))
            if start:
                pt.start_time_unix_nano = p.start_time_unix_nano
            pt.time_unix_nano = p.time_unix_nano
            if isinstance(p.value, int):
                pt.as_int = p.value
            else:
                pt.as_double = p.value

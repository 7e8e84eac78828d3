"""Exemplars on the Prometheus scrape: with OpenMetrics, latency and TTFT buckets carry a recent request's trace.

opentelemetry-python's Prometheus exporter drops the exemplars the SDK's reservoirs keep (the OTLP path carries
them). ``ExemplarPrometheusReader`` is that reader with them put back: each bucket sample of the latency and TTFT
histograms gets the exemplar the SDK's aligned-bucket reservoir kept for that bucket, labelled ``trace_id`` and
``span_id`` (the names Prometheus and Grafana look for). prometheus_client writes exemplars only in the OpenMetrics
format, so a plain-text scrape is byte for byte what it was.

``scrape_app`` is prometheus_client's WSGI app with the content negotiation made safe: an Accept header that its
negotiation cannot parse (``version=abc``), or an OpenMetrics rendering that fails, is answered in the plain text
format instead of a 500.

Multi-process mode keeps the plain reader: the merged server state carries no exemplars (see
docs/guides/deploying.md).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics.export import HistogramDataPoint, MetricsData

from .. import catalogue
from .._compat import RegistryPrometheusReader

__all__ = ["EXEMPLAR_METRICS", "ExemplarPrometheusReader", "scrape_app", "tracing_configured"]

_log = logging.getLogger("ryot_telemetry")

EXEMPLAR_METRICS = tuple(catalogue.get(n).name for n in ("ryot.inference.latency", "ryot.ttft.latency"))
"""The histograms whose buckets carry exemplars on the scrape, as on the OTLP path (the request's trace)."""

_SCOPE_LABEL = "otel_scope_"  # the exporter's scope labels, which the data points' attributes do not carry

# (family name, the series' labels without scope labels and empty backfills, bucket's le) -> exemplar
_Key = tuple[str, frozenset[tuple[str, str]], str]


def tracing_configured() -> bool:
    """Whether a real TracerProvider is installed, so requests can run in sampled spans worth an exemplar."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _label_value(value: Any) -> str:
    # As the exporter writes a label value: strings as they are, anything else as JSON.
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _series(labels: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    return frozenset((k, v) for k, v in labels.items() if v != "" and k != "le" and not k.startswith(_SCOPE_LABEL))


def _exemplars(
    metrics_data: MetricsData, families: Mapping[str, str]
) -> tuple[dict[_Key, tuple[int, Any]], set[tuple[str, frozenset[tuple[str, str]]]]]:
    """The latest exemplar per bucket of each wanted histogram series (time, prometheus_client ``Exemplar``), and
    every wanted series present in this collection."""
    from prometheus_client.samples import Exemplar

    found: dict[_Key, tuple[int, Any]] = {}
    present: set[tuple[str, frozenset[tuple[str, str]]]] = set()
    for rm in metrics_data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name != catalogue.METER_NAME:
                continue
            for metric in sm.metrics:
                family = families.get(metric.name)
                if family is None:
                    continue
                for point in metric.data.data_points:
                    if not isinstance(point, HistogramDataPoint):
                        continue
                    series = _series({k: _label_value(v) for k, v in (point.attributes or {}).items()})
                    present.add((family, series))
                    bounds = list(point.explicit_bounds)
                    for ex in point.exemplars:
                        if ex.trace_id is None or ex.span_id is None or not math.isfinite(ex.value):
                            continue
                        i = bisect.bisect_left(bounds, ex.value)  # bucket i holds (bounds[i-1], bounds[i]]
                        key = (family, series, f"{bounds[i]}" if i < len(bounds) else "+Inf")
                        if key in found and found[key][0] >= ex.time_unix_nano:
                            continue
                        labels = {"trace_id": f"{ex.trace_id:032x}", "span_id": f"{ex.span_id:016x}"}
                        found[key] = (ex.time_unix_nano, Exemplar(labels, ex.value, ex.time_unix_nano / 1e9))
    return found, present


class ExemplarPrometheusReader(RegistryPrometheusReader):
    """The OTel Prometheus reader, plus the SDK's exemplars on the latency and TTFT bucket samples.

    The exporter's own collector is registered on a registry of its own; the one registered on ``registry`` asks it
    for its families and adds the exemplars. The SDK hands a reservoir's exemplars to one collection only, so each
    bucket keeps its latest exemplar until a newer one replaces it or its series goes away, as prometheus_client's
    own histograms do: every scraper sees it, and Prometheus stores a repeated exemplar once.
    """

    def __init__(self, registry: Any, metrics: Iterable[str] = EXEMPLAR_METRICS) -> None:
        from prometheus_client import CollectorRegistry

        self._inner = CollectorRegistry(auto_describe=False)
        super().__init__(self._inner)
        self._families = {name: catalogue.get(name).prometheus_name for name in metrics}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._kept: dict[_Key, tuple[int, Any]] = {}
        self._outer = registry
        self._warned = False
        self._collector_outer = _Collector(self)
        registry.register(self._collector_outer)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        if metrics_data is not None:
            try:
                found, present = _exemplars(metrics_data, self._families)
                with self._lock:
                    kept = {k: v for k, v in self._kept.items() if (k[0], k[1]) in present}
                    for key, (when, exemplar) in found.items():
                        if key not in kept or kept[key][0] <= when:
                            kept[key] = (when, exemplar)
                    self._kept = kept
                self._local.exemplars = {key: exemplar for key, (_, exemplar) in kept.items()}
            except Exception as e:  # an exemplar that cannot be read costs the exemplars, never the scrape
                self._local.exemplars = {}
                self._warn(e)
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)

    def _warn(self, e: BaseException) -> None:
        if not self._warned:
            self._warned = True
            _log.warning("ryot-telemetry: exemplars left off the scrape: %r", e)

    def families(self) -> Iterator[Any]:
        """The exporter's families, with exemplars on the wanted histograms' bucket samples."""
        self._local.exemplars = {}
        wanted = set(self._families.values())
        for family in self._inner.collect():
            exemplars = self._local.exemplars
            if exemplars and family.type == "histogram" and family.name in wanted:
                try:
                    family.samples = [_with_exemplar(family.name, s, exemplars) for s in family.samples]
                except Exception as e:
                    self._warn(e)
            yield family

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        # Each registry forgets its collector once, whichever registry an older exporter's shutdown unregisters from.
        with contextlib.suppress(KeyError):
            super().shutdown(timeout_millis, **kwargs)
        with contextlib.suppress(KeyError):
            self._outer.unregister(self._collector_outer)


def _with_exemplar(family: str, sample: Any, exemplars: Mapping[_Key, Any]) -> Any:
    if not sample.name.endswith("_bucket"):
        return sample
    exemplar = exemplars.get((family, _series(sample.labels), sample.labels.get("le", "")))
    return sample if exemplar is None else sample._replace(exemplar=exemplar)


class _Collector:
    """What the served registry holds: the reader's families with exemplars."""

    def __init__(self, reader: ExemplarPrometheusReader) -> None:
        self._reader = reader

    def collect(self) -> Iterable[Any]:
        return self._reader.families()

    def describe(self) -> list[Any]:
        # No names to check for duplicates, and no collection at registration (the exporter's collector has none).
        return []


def scrape_app(registry: Any) -> Callable[..., Any]:
    """prometheus_client's WSGI app for ``registry``; an Accept header it cannot negotiate, or an OpenMetrics
    rendering that fails, gets the plain text format rather than an error."""
    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import choose_encoder

    app = make_wsgi_app(registry)
    warned: list[bool] = []

    def plain(environ: dict[str, Any]) -> dict[str, Any]:
        return {**environ, "HTTP_ACCEPT": ""}

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        accept = environ.get("HTTP_ACCEPT")
        if not accept:
            return app(environ, start_response)
        try:
            choose_encoder(accept)
        except Exception:  # e.g. version=abc: prometheus_client compares "abc" with (1, 0, 0)
            return app(plain(environ), start_response)
        try:
            # prometheus_client renders the whole answer before calling start_response: a failure here has sent
            # nothing yet, so the plain format can still answer.
            return app(environ, start_response)
        except Exception as e:
            if not warned:
                warned.append(True)
                _log.warning(
                    "ryot-telemetry: rendering the scrape for Accept %r failed (%r); answered in text", accept[:100], e
                )
            return app(plain(environ), start_response)

    return guarded

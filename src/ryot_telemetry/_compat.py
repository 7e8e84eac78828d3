"""Every import of a third-party private name, in one place, with what it is for and which versions have it.

When an upgrade moves one of these, this is the only module to change; the version ranges in ``pyproject.toml``
are the ones checked against each name below.
"""

from __future__ import annotations

import copy
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import version
from time import time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry.context import get_current
from opentelemetry.exporter.prometheus import PrometheusMetricReader

# opentelemetry-exporter-prometheus (private module ``_mapping``, present from 0.44b0 on; we require >=0.58b0):
# the exporter's own name sanitising and unit-to-suffix mapping, so the catalogue predicts the exposed family names
# (``ryot_inference_latency_seconds``, ``..._total``) exactly as a scrape shows them.
from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_full_name
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics._internal.measurement import Measurement as _Measurement
from opentelemetry.sdk.metrics.view import View

# opentelemetry-semantic-conventions (private package ``_incubating``, where every GenAI name of the package lives;
# present with these modules in the range we require, >=0.58b0): the GenAI metric constants and their
# ``create_gen_ai_*`` factories, and the GenAI attribute names and values, so ``recording/semconv.py`` takes every
# name from the package instead of typing it again.
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as genai_metrics
from prometheus_client import REGISTRY

# opentelemetry-sdk (private module ``_configuration``, present since 1.2; we require >=1.37): the SDK's own
# configurator. ``RyotConfigurator`` subclasses it so traces and logs are set up exactly as the SDK would, while
# the MeterProvider is ours (with Views). ``_configure(**kwargs)`` is the hook ``opentelemetry-instrument`` calls.
# Imported on first use (the distro only): it pulls in the trace and log SDKs, ~30 modules a plain
# ``import ryot_telemetry`` does not need.
if TYPE_CHECKING:
    from opentelemetry.sdk._configuration import _OTelSDKConfigurator as OTelSDKConfigurator

__all__ = [
    "HistogramBatch",
    "OTelSDKConfigurator",
    "RegistryPrometheusReader",
    "encode_attributes",
    "encode_instrumentation_scope",
    "genai_attributes",
    "genai_metrics",
    "histogram_batch",
    "map_unit",
    "merge_families",
    "meter_count",
    "meter_readers",
    "observe_grpc_stub",
    "prometheus_reader",
    "reader_shutting_down",
    "sanitize_full_name",
    "set_collect_callback",
    "view_cardinality_limit",
    "wrap_reader_collect",
]


# opentelemetry-sdk metrics internals, used by ``_new_series`` (new counter series exported at 0 first). All three
# are attributes, not imports; present in every SDK release our range allows (>=1.37,<2; checked on 1.37 and 1.45):
# - ``Meter._measurement_consumer._reader_storages``: a mapping keyed by the provider's MetricReaders (the SDK
#   replaces it, never mutates it, when readers are added later; a reader added after the recorder was built is not
#   seen): which readers a meter's measurements reach, so the gate knows whose collections to wait for.
# - ``MetricReader._collect``: the callback ``MetricReader.collect()`` calls (``(reader, timeout_millis=...)``), set
#   by the MeterProvider through ``_set_collect_callback`` when it is built: wrapped to see each collection start
#   and end, so the gate knows which zeros a reader has exported.
# - ``PeriodicExportingMetricReader._shutdown``: True once ``shutdown()`` began, i.e. during its final collection:
#   held increments are released into that final export.


def meter_readers(meter: Any) -> list[Any]:
    """The readers of the SDK MeterProvider behind ``meter`` that have a collect callback; [] for any other meter
    (the API's no-op or proxy meter, another SDK) or if the SDK's internals moved."""
    consumer = getattr(meter, "_measurement_consumer", None)
    storages = getattr(consumer, "_reader_storages", None)
    if not isinstance(storages, Mapping):
        return []
    return [r for r in storages if callable(getattr(r, "_collect", None))]


def wrap_reader_collect(reader: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace ``reader``'s collect callback by ``wrap(callback)``; the wrapper is called as the callback is."""
    reader._collect = wrap(reader._collect)


def reader_shutting_down(reader: Any) -> bool:
    """Has ``reader.shutdown()`` begun (its final collection)? False for readers without the flag."""
    return bool(getattr(reader, "_shutdown", False))


def set_collect_callback(reader: Any, collect: Any) -> None:
    """opentelemetry-sdk (private method ``MetricReader._set_collect_callback``, present since 1.10; we require
    >=1.37): the hook a MeterProvider installs on its readers. Multi-process mode gives the OTel Prometheus reader
    (``multiproc.view``) and the OTLP reader (``multiproc.export``) a collect function that returns the merged server
    state, so the exporters' own translation sends it. ``collect(reader, timeout_millis=...)`` returns
    ``MetricsData`` or None."""
    reader._set_collect_callback(collect)


def __getattr__(name: str) -> Any:
    if name == "OTelSDKConfigurator":
        from opentelemetry.sdk._configuration import _OTelSDKConfigurator

        return _OTelSDKConfigurator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# opentelemetry-exporter-otlp-proto-common (private module ``_internal``, present with these names since 1.18; we
# require >=1.37 through the OTLP exporters): the encoders ``encode_metrics`` itself uses for attributes and
# instrumentation scopes, so the multi-process hand-off (``_handoff``), which caches encoded attribute sets,
# encodes them exactly as the library does. Imported on first use (it loads the trace SDK).


def encode_attributes(attributes: Any) -> list[Any]:
    """``KeyValue`` messages of an attribute mapping, as ``encode_metrics`` encodes a point's attributes."""
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_attributes

    return _encode_attributes(attributes)


def encode_instrumentation_scope(scope: Any) -> Any:
    """The ``InstrumentationScope`` message of an SDK scope, as ``encode_metrics`` encodes it."""
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_instrumentation_scope

    return _encode_instrumentation_scope(scope)


def meter_count(provider: Any) -> int | None:
    """opentelemetry-sdk (private attribute ``MeterProvider._meters``, a dict keyed by instrumentation scope, present
    in every release our range allows): how many meters a provider has handed out, so multi-process mode knows
    whether anything besides ryot's own meter records there. None if the SDK's internals moved."""
    meters = getattr(provider, "_meters", None)
    return len(meters) if isinstance(meters, Mapping) else None


# opentelemetry-sdk (public, but version-dependent): ``View(aggregation_cardinality_limit=...)`` and the SDK's
# 2,000-series limit per metric arrive together in 1.45; an older SDK has no limit, so nothing needs lifting there.
VIEW_CARDINALITY_LIMIT = "aggregation_cardinality_limit" in inspect.signature(View.__init__).parameters
"""Does the installed SDK limit series per metric (and take a View's ``aggregation_cardinality_limit``)?"""


def view_cardinality_limit(limit: int | None) -> dict[str, Any]:
    """The View keyword setting a metric's series limit to ``limit``; none where the SDK has no limit."""
    return {"aggregation_cardinality_limit": limit} if VIEW_CARDINALITY_LIMIT else {}


# opentelemetry-exporter-prometheus (public ``registry=`` from 0.63b0 on; before it, the private attribute
# ``PrometheusMetricReader._collector``, present in every release our range allows): an older reader always
# registers its collector on prometheus_client's global REGISTRY and unregisters it there at shutdown, so it is
# moved onto the registry ryot exposes (a private one per configure() by default).
PROMETHEUS_READER_TAKES_REGISTRY = "registry" in inspect.signature(PrometheusMetricReader.__init__).parameters
"""Does the installed exporter's ``PrometheusMetricReader`` take ``registry=``?"""


class RegistryPrometheusReader(PrometheusMetricReader):
    """The OTel Prometheus reader with its collector on ``registry`` and one family per metric, whatever the
    installed exporter's version: an older one (before 0.63b0) takes no ``registry=`` and registers on the global
    REGISTRY, so the collector moves; one before 0.64b0 splits a metric into several families, which are merged."""

    def __init__(self, registry: Any) -> None:
        self._ryot_registry = registry
        if PROMETHEUS_READER_TAKES_REGISTRY:
            super().__init__(registry=registry)  # type: ignore[call-arg,unused-ignore]
        else:
            super().__init__()
            if registry is not REGISTRY:
                REGISTRY.unregister(self._collector)
                # registered as the newer exporter does, before its callback is set: a registry that describes its
                # collectors by collecting them must not run a collection on a reader no provider owns yet
                callback, self._collector._callback = self._collector._callback, None
                registry.register(self._collector)
                self._collector._callback = callback
        if PROMETHEUS_SPLITS_FAMILIES:
            collector: Any = self._collector
            collect = collector.collect
            collector.collect = lambda: merge_families(collect())

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if PROMETHEUS_READER_TAKES_REGISTRY:
            super().shutdown(timeout_millis, **kwargs)
        else:  # the older exporter's shutdown unregisters from the global REGISTRY, where it no longer is
            self._ryot_registry.unregister(self._collector)


def _exporter_splits_families() -> bool:
    # opentelemetry-exporter-prometheus before 0.64b0 (SDK 1.43) writes one family per label-key set: a metric
    # whose points differ in their keys (an optional label such as error_type) gets two HELP/TYPE blocks, which
    # the text format forbids (promtool rejects it); 0.64b0 on writes one family, a missing label as "".
    match = re.match(r"0\.(\d+)", version("opentelemetry-exporter-prometheus"))
    return match is not None and int(match.group(1)) < 64


PROMETHEUS_SPLITS_FAMILIES = _exporter_splits_families()
"""Does the installed exporter write a metric as several families (one per label-key set)?"""


def merge_families(families: Iterable[Any]) -> list[Any]:
    """prometheus_client families with one family per metric name, as the newer exporter writes them: the samples
    of same-named families together, each missing label of the metric's label set given as "" (which Prometheus
    reads as the label being absent)."""
    by_name: dict[str, list[Any]] = {}
    for family in families:
        by_name.setdefault(family.name, []).append(family)
    out = []
    for same in by_name.values():
        if len(same) == 1:
            out.append(same[0])
            continue
        keys = {k for family in same for sample in family.samples for k in sample.labels if k != "le"}
        merged = copy.copy(same[0])
        merged.samples = [
            sample._replace(labels={**dict.fromkeys(keys, ""), **sample.labels})
            for family in same
            for sample in family.samples
        ]
        out.append(merged)
    return out


def prometheus_reader(registry: Any) -> PrometheusMetricReader:
    """The OTel Prometheus reader exposing on ``registry`` (a prometheus_client ``CollectorRegistry``), writing one
    family per metric whatever the exporter's version."""
    return RegistryPrometheusReader(registry)


def observe_grpc_stub(exporter: Any, wrap: Callable[[Any], Any]) -> bool:
    """opentelemetry-exporter-otlp-proto-grpc (private attributes ``OTLPExporterMixin._stub``, the stub class, and
    ``_client``, the stub on the current channel; ``_client`` is present in every release our range allows, ``_stub``
    where newer releases rebuild ``_client`` from it after an UNAVAILABLE error): wrap both so that
    ``export.outcome`` sees every ``Export`` call's status. False (nothing changed) if the internals moved."""
    stub, client = getattr(exporter, "_stub", None), getattr(exporter, "_client", None)
    if client is None or not callable(getattr(client, "Export", None)):
        return False
    exporter._client = wrap(client)
    if callable(stub):  # releases that rebuild the client build it observed too
        exporter._stub = lambda channel: wrap(stub(channel))
    return True


# opentelemetry-sdk metrics internals, used by ``recording/measure.py`` to hand a drain batch's histogram values to
# the SDK once per series instead of once per value (a public ``Histogram.record`` builds a ``Measurement``, cleans,
# copies and hashes its attributes and looks the series up again for every value: most of the drain's cost). What
# ``HistogramBatch.record`` does is, step for step, what ``Histogram.record`` -> ``MeasurementConsumer`` ->
# ``MetricReaderStorage`` -> ``_ViewInstrumentMatch.consume_measurement`` do, with the steps that do not depend on
# the value done once per series: the same attribute cleaning, View attribute filter, series key, aggregation looked
# up or created in the order the series first appear (``_get_or_create_aggregation``: the series limit and its
# overflow point), the lock a delta reader's series needs, and each value aggregated and offered to the exemplar
# filter and reservoir in the order it was recorded (where series share an aggregation: a View that drops attribute
# keys, equal attributes, the overflow point, their values are interleaved back into recording order).
# Names used (all present in 1.45, where the series key became ``_hash_attributes`` and the series limit arrived; an
# SDK without any of them gets ``None`` and the public ``record`` is used):
# - ``_Instrument._is_enabled()``, ``._measurement_consumer``; ``SynchronousMeasurementConsumer._sdk_config``
#   (its ``exemplar_filter``) and ``._reader_storages`` (a mapping replaced, never mutated, by the SDK);
# - ``MetricReaderStorage._get_or_init_view_instrument_match(instrument)``;
# - ``_ViewInstrumentMatch._view._attribute_keys``, ``._reset_on_collect``, ``._lock``, ``._attributes_aggregation``,
#   ``._get_or_create_aggregation(key, attributes)`` (called with the lock held) and the module's
#   ``_hash_attributes``; each aggregation's ``aggregate(measurement, should_sample)``;
# - ``sdk.metrics._internal.measurement.Measurement`` (a frozen dataclass of five fields: the first of a series is
#   built by its constructor, which cleans the attributes; the others get a copy of its ``__dict__`` with their own
#   value, where it has exactly those fields, else are built with ``attributes=None`` and given the cleaned ones).
# The measurements of one batch share one timestamp (the drain's); only exemplars read it, and at drain time they
# carry the drain's time anyway. ``tests/unit/test_histogram_batch.py`` checks the points against the public path.


class HistogramBatch:
    """Records a drain batch of one SDK histogram, as one ``record`` per value in recording order would."""

    __slots__ = ("_consumer", "_hash", "_instrument")

    def __init__(self, instrument: Any, consumer: Any, hash_attributes: Callable[[Any], Any]) -> None:
        self._instrument = instrument
        self._consumer = consumer
        self._hash = hash_attributes

    def record(
        self, series: Sequence[tuple[Mapping[str, Any], Sequence[Any], Any]], order: list[int], context: Any
    ) -> None:
        """Record each series' values (attributes, values in order, its own context or None for ``context``).
        ``series`` come in the order of their first value; ``order`` is the index in ``series`` of each value in
        the order they were recorded. A batch with a value the SDK would refuse (not a number from 0 to the largest
        float) is recorded value by value through the public ``record``, in that order."""
        instrument = self._instrument
        if not instrument._is_enabled():
            return
        if context is None:
            context = get_current()
        if not all(
            (type(v) is int or type(v) is float) and 0 <= v <= _MAX_FLOAT for _, values, _ in series for v in values
        ):
            cursor = [0] * len(series)
            for i in order:
                attrs, values, own = series[i]
                instrument.record(values[cursor[i]], attrs, context if own is None else own)
                cursor[i] += 1
            return
        now = time_ns()
        exemplar_filter = self._consumer._sdk_config.exemplar_filter
        # The SDK's own filters decide by the context alone (the same for a series): asked once per series. Any
        # other filter is asked per value, as record asks it.
        by_context = type(exemplar_filter) in _BY_CONTEXT
        cleaned: list[tuple[Mapping[str, Any] | None, list[tuple[Any, bool]]]] = []
        new, set_attr = object.__new__, object.__setattr__
        for attrs, values, own in series:
            ctx = context if own is None else own
            same = exemplar_filter.should_sample(0, now, None, ctx) if by_context else None
            first = _Measurement(values[0], now, instrument, ctx, attrs)  # cleans the attributes, as record does
            clean = first.attributes
            template = getattr(first, "__dict__", None)
            if type(template) is not dict or template.keys() != _MEASUREMENT_FIELDS:
                template = None  # a Measurement with slots, or other fields: built by its constructor
            measurements = []
            for v in values:
                if template is not None:  # the same fields the constructor sets, without its cleaning and checks
                    fields = template.copy()
                    fields["value"] = v
                    m = new(_Measurement)
                    set_attr(m, "__dict__", fields)
                else:
                    m = _Measurement(v, now, instrument, ctx, None)
                    set_attr(m, "attributes", clean)
                measurements.append(
                    (m, same if same is not None else exemplar_filter.should_sample(v, now, clean, ctx))
                )
            cleaned.append((clean, measurements))
        for storage in self._consumer._reader_storages.values():
            for match in storage._get_or_init_view_instrument_match(instrument):
                self._aggregate(match, cleaned, order)

    def _aggregate(self, match: Any, cleaned: list[tuple[Any, list[tuple[Any, bool]]]], order: list[int]) -> None:
        """One reader's View of the instrument: each series' aggregation looked up (or created, up to the series
        limit) once, in the order the series first appeared, as ``consume_measurement`` would create them; then
        the values, in recording order wherever two series share an aggregation (a View that drops attribute keys,
        equal attributes, the overflow point)."""
        keys = match._view._attribute_keys
        keyed = []
        for clean, _ in cleaned:
            attrs = dict(clean) if clean else {}
            if keys is not None:
                attrs = {k: v for k, v in attrs.items() if k in keys}
            keyed.append((self._hash(attrs), attrs))
        if match._reset_on_collect:  # collect() discards the series: hold the lock until every value is in
            with match._lock:
                _into([match._get_or_create_aggregation(key, attrs) for key, attrs in keyed], cleaned, order)
            return
        existing = match._attributes_aggregation
        targets = []
        for key, attrs in keyed:
            aggregation = existing.get(key)
            if aggregation is None:
                with match._lock:
                    aggregation = match._get_or_create_aggregation(key, attrs)
            targets.append(aggregation)
        _into(targets, cleaned, order)


def _into(targets: list[Any], cleaned: list[tuple[Any, list[tuple[Any, bool]]]], order: list[int]) -> None:
    """Each series' measurements into its aggregation (``targets``), in recording order where some share one."""
    if len({id(t) for t in targets}) == len(targets):
        for aggregation, (_, measurements) in zip(targets, cleaned):
            for m, sample in measurements:
                aggregation.aggregate(m, sample)
        return
    cursor = [0] * len(cleaned)
    for i in order:
        m, sample = cleaned[i][1][cursor[i]]
        cursor[i] += 1
        targets[i].aggregate(m, sample)


_MAX_FLOAT = sys.float_info.max
_MEASUREMENT_FIELDS = {"value", "time_unix_nano", "instrument", "context", "attributes"}
_BY_CONTEXT = (AlwaysOnExemplarFilter, AlwaysOffExemplarFilter, TraceBasedExemplarFilter)


def histogram_batch(instrument: Any) -> HistogramBatch | None:
    """A ``HistogramBatch`` for an SDK histogram; None for any other instrument (the API's no-op or proxy, another
    SDK, an SDK whose internals moved): its values are then recorded one by one."""
    try:
        from opentelemetry.sdk.metrics import Histogram
        from opentelemetry.sdk.metrics._internal import _view_instrument_match as vim_module
        from opentelemetry.sdk.metrics._internal.metric_reader_storage import MetricReaderStorage
    except ImportError:
        return None
    consumer = getattr(instrument, "_measurement_consumer", None)
    hash_attributes = getattr(vim_module, "_hash_attributes", None)
    ok = (
        isinstance(instrument, Histogram)
        and callable(getattr(instrument, "_is_enabled", None))
        and isinstance(getattr(consumer, "_reader_storages", None), Mapping)
        and hasattr(getattr(consumer, "_sdk_config", None), "exemplar_filter")
        and callable(getattr(MetricReaderStorage, "_get_or_init_view_instrument_match", None))
        and callable(hash_attributes)
        and callable(getattr(vim_module._ViewInstrumentMatch, "_get_or_create_aggregation", None))
    )
    return HistogramBatch(instrument, consumer, hash_attributes) if ok else None  # type: ignore[arg-type]

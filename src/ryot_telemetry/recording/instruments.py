"""Instruments and Views, both derived from the catalogue."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import Exemplar, ExemplarReservoir
from opentelemetry.sdk.metrics.view import DefaultAggregation, ExplicitBucketHistogramAggregation, View

from .._compat import view_cardinality_limit
from ..catalogue import CATALOGUE, METER_NAME, TENANT, Instrument, MetricSpec, resolve_buckets, validate_buckets
from .duplicates import drop_views
from .labels import DEFAULT_MAX_MODELS
from .semconv import semconv_views

__all__ = ["METER_NAME", "cardinality_limit", "create_instrument", "resolve_buckets", "validate_buckets", "views"]

Callback = Callable[[CallbackOptions], Iterable[Observation]]


def create_instrument(
    meter: Meter,
    spec: MetricSpec,
    *,
    callbacks: Sequence[Callback] | None = None,
    buckets: Sequence[float] | None = None,
) -> Any:
    """One OTel instrument for a catalogue entry; histograms carry advisory bucket boundaries."""
    kind = spec.instrument
    if kind is Instrument.COUNTER:
        return meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
    if kind is Instrument.UP_DOWN_COUNTER:
        return meter.create_up_down_counter(spec.name, unit=spec.unit, description=spec.description)
    if kind is Instrument.HISTOGRAM:
        return meter.create_histogram(
            spec.name,
            unit=spec.unit,
            description=spec.description,
            explicit_bucket_boundaries_advisory=list(buckets if buckets is not None else spec.buckets or ()),
        )
    if kind is Instrument.GAUGE:
        return meter.create_gauge(spec.name, unit=spec.unit, description=spec.description)
    if kind is Instrument.OBSERVABLE_GAUGE:
        return meter.create_observable_gauge(
            spec.name, callbacks=list(callbacks or ()), unit=spec.unit, description=spec.description
        )
    if kind is Instrument.OBSERVABLE_COUNTER:
        return meter.create_observable_counter(
            spec.name, callbacks=list(callbacks or ()), unit=spec.unit, description=spec.description
        )
    if kind is Instrument.OBSERVABLE_UP_DOWN_COUNTER:
        return meter.create_observable_up_down_counter(
            spec.name, callbacks=list(callbacks or ()), unit=spec.unit, description=spec.description
        )
    raise AssertionError(f"unhandled instrument kind {kind}")


def views(
    bucket_overrides: Mapping[str, Sequence[float]] | None = None,
    *,
    include_semconv: bool = True,
    attribute_filter: bool = True,
    exemplars: bool = True,
    explicit_buckets: bool = True,
    drop_duplicates: Sequence[str] = (),
    max_models: int = DEFAULT_MAX_MODELS,
    max_tenants: int | None = None,
) -> list[View]:
    """Views for a user-built ``MeterProvider``: explicit buckets and attribute-key filters for every metric.

    The attribute filter keeps exactly the catalogue's label keys, so a stray attribute cannot add a series: a
    guard for a provider the user also records into. ``configure()`` passes ``attribute_filter=False``: every
    attribute dict on its instruments is built by ryot-telemetry from the catalogue's keys, and the SDK's per-record
    filtering (a dict rebuilt per reader per measurement) costs about 6% of the drain for nothing.
    ``exemplars=False`` (a provider whose exemplar filter is always off) gives every series a reservoir that keeps
    nothing: the SDK's own would stay empty too, but still be asked for its exemplars at every collection.
    ``explicit_buckets=False`` leaves the histograms' aggregation to each reader: the instruments' advisory
    boundaries (the same buckets) for Prometheus and the rest, the OTLP reader's own preference (exponential
    histograms) for OTLP; a View's own aggregation would win over that preference.
    ``drop_duplicates``: sources (``"ogx"``) whose metrics ryot supersedes get ``DropAggregation`` Views
    (``duplicates.py``).
    ``max_models`` and ``max_tenants`` (None: no tenant label) set each metric's series limit
    (``cardinality_limit``).
    """
    reservoir = None if exemplars else no_exemplars
    buckets = resolve_buckets(bucket_overrides)
    out: list[View] = []
    for spec in CATALOGUE:
        keys = set(spec.all_labels) if attribute_filter else None
        if spec.buckets is not None:
            out.append(
                View(
                    instrument_name=spec.name,
                    meter_name=METER_NAME,
                    attribute_keys=keys,
                    aggregation=ExplicitBucketHistogramAggregation(boundaries=list(buckets[spec.name]))
                    if explicit_buckets
                    else DefaultAggregation(),
                    exemplar_reservoir_factory=reservoir,
                    **view_cardinality_limit(cardinality_limit(spec, max_models, max_tenants)),
                )
            )
        else:
            out.append(
                View(
                    instrument_name=spec.name,
                    meter_name=METER_NAME,
                    attribute_keys=keys,
                    exemplar_reservoir_factory=reservoir,
                    **view_cardinality_limit(cardinality_limit(spec, max_models, max_tenants)),
                )
            )
    if include_semconv:
        out.extend(
            semconv_views(
                attribute_filter=attribute_filter, exemplar_reservoir_factory=reservoir, explicit=explicit_buckets
            )
        )
    out.extend(drop_views(drop_duplicates))
    return out


SDK_CARDINALITY_LIMIT = 2000
"""The OpenTelemetry SDK's default series limit per metric; past it, new series fold into one
``otel.metric.overflow`` series."""


def cardinality_limit(
    spec: MetricSpec, max_models: int = DEFAULT_MAX_MODELS, max_tenants: int | None = None
) -> int | None:
    """The series limit of ``spec``'s View: every series its bounded labels allow, at least the SDK's default.

    Model names are bounded by ``max_models`` and tenants by ``max_tenants`` (each plus ``__overflow__`` and
    ``__unknown__``; None: no tenant label), the other labels by their catalogue vocabulary, so the SDK's fixed
    2,000 would fold real series into its overflow series from about 110 models on (the latency histogram has 18
    per model). None (the SDK's default) where a label has no vocabulary in the catalogue."""
    n = 1
    for key in spec.labels:
        if key == "model":
            n *= max_models + 2
        elif key in spec.label_values:
            n *= len(spec.label_values[key])
        else:
            return None
    for key in spec.optional_labels:
        if key not in spec.label_values:
            return None
        n *= len(spec.label_values[key]) + 1  # absent is one more value
    for key in spec.opt_in_labels:
        if key != TENANT:
            return None
        if max_tenants is not None:
            n *= max_tenants + 2
    return max(SDK_CARDINALITY_LIMIT, n + 1)  # the SDK counts its overflow series in the limit


class _NoExemplars(ExemplarReservoir):
    """A reservoir that keeps nothing, for a provider whose exemplar filter never offers it a measurement."""

    def offer(self, value: int | float, time_unix_nano: int, attributes: Any, context: Any) -> None:
        return None

    def collect(self, point_attributes: Any) -> list[Exemplar]:
        return []


_NO_EXEMPLARS = _NoExemplars()


def no_exemplars(aggregation_type: type) -> Callable[..., ExemplarReservoir]:
    """``View(exemplar_reservoir_factory=...)`` giving every series the shared empty reservoir."""
    return lambda **_: _NO_EXEMPLARS

"""OTLP temporality and histogram aggregation, as the two standard variables choose them.

``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` (cumulative, delta, lowmemory) and
``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`` (explicit_bucket_histogram,
base2_exponential_bucket_histogram) are read once, by ``Settings`` (a bad value is a ``ConfigurationError``, where
the OTLP exporters themselves only log a warning and fall back). The OTLP reader always collects cumulative data;
under ``delta`` and ``lowmemory`` ryot sends deltas it computes from it (``export.delta``: monotonic sums and
histograms become deltas, up-down counters and gauges stay cumulative; ``lowmemory`` is ``delta``), so that an export
that did not arrive loses nothing. The histogram aggregation is the reader's ``preferred_aggregation``. The
Prometheus reader keeps cumulative, explicit buckets.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.metrics.view import (
    Aggregation,
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
)

from ..settings import CUMULATIVE, EXPONENTIAL, Settings

__all__ = ["cumulative", "delta_export", "exponential_otlp", "preferred_aggregation"]

_C = AggregationTemporality.CUMULATIVE


def cumulative() -> dict[type, AggregationTemporality]:
    """Cumulative for every instrument class: what the OTLP reader collects in every mode. Delta temporality is
    computed by ryot from it (``export.delta``), so that a failed export loses nothing."""
    return {
        k: _C for k in (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)
    }


def preferred_aggregation(choice: str) -> dict[type, Aggregation]:
    """The histogram aggregation of the OTLP reader. Explicit buckets without boundaries take each instrument's
    advisory ones (every ryot histogram has them: the catalogue's, or the configured overrides)."""
    if choice == EXPONENTIAL:
        return {Histogram: ExponentialBucketHistogramAggregation()}
    return {Histogram: ExplicitBucketHistogramAggregation()}


def exponential_otlp(settings: Settings) -> bool:
    """Does the OTLP reader want exponential histograms? Then ryot's histogram Views must leave the aggregation to
    each reader (a View's own aggregation wins over a reader's preference)."""
    return "otlp" in settings.exporters and settings.otlp_histogram_aggregation == EXPONENTIAL


def delta_export(settings: Settings) -> bool:
    """Does the OTLP export want delta sums and histograms (``delta`` or ``lowmemory``)?"""
    return settings.otlp_temporality != CUMULATIVE

"""OTLP temporality and histogram aggregation, as the two standard variables choose them.

``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` (cumulative, delta, lowmemory) and
``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`` (explicit_bucket_histogram,
base2_exponential_bucket_histogram) are read once, by ``Settings`` (a bad value is a ``ConfigurationError``, where
the OTLP exporters themselves only log a warning and fall back), and handed to the exporter as its
``preferred_temporality`` / ``preferred_aggregation``, mapped per instrument class exactly as
opentelemetry-exporter-otlp-proto-common maps them. The Prometheus reader keeps cumulative, explicit buckets.
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

from ..settings import CUMULATIVE, EXPONENTIAL, LOWMEMORY, Settings

__all__ = ["delta_export", "exponential_otlp", "preferred_aggregation", "preferred_temporality"]

_C, _D = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA


def preferred_temporality(choice: str) -> dict[type, AggregationTemporality]:
    """Temporality per instrument class: delta for counters and histograms under ``delta`` (observable counters
    too) and ``lowmemory`` (observable counters stay cumulative); up-down counters and gauges always cumulative."""
    if choice == CUMULATIVE:
        return {k: _C for k in (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter)} | {
            ObservableGauge: _C
        }
    observable = _C if choice == LOWMEMORY else _D
    return {
        Counter: _D,
        UpDownCounter: _C,
        Histogram: _D,
        ObservableCounter: observable,
        ObservableUpDownCounter: _C,
        ObservableGauge: _C,
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

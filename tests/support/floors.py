"""Markers for what an older dependency within pyproject's ranges does not have (the floors run, scripts/test.sh)."""

from __future__ import annotations

import pytest

from ryot_telemetry._compat import VIEW_CARDINALITY_LIMIT
from ryot_telemetry.recording.semconv import UNAVAILABLE

needs_chunk_metrics = pytest.mark.skipif(
    bool(UNAVAILABLE),
    reason="the installed opentelemetry-semantic-conventions (< 0.63b0) defines no GenAI chunk metrics; "
    "test_semconv.py checks what is emitted without them",
)
"""For tests of the GenAI chunk metrics, which only opentelemetry-semantic-conventions 0.63b0 on defines."""

needs_series_limit = pytest.mark.skipif(
    not VIEW_CARDINALITY_LIMIT,
    reason="the installed opentelemetry-sdk (< 1.45) has no per-metric series limit for ryot's Views to lift",
)
"""For tests of the Views' series limits (``aggregation_cardinality_limit``), which only SDK 1.45 on has."""


def _histogram_batch_available() -> bool:
    from opentelemetry.sdk.metrics import MeterProvider

    from ryot_telemetry._compat import histogram_batch

    provider = MeterProvider()
    try:
        return histogram_batch(provider.get_meter("probe").create_histogram("probe")) is not None
    finally:
        provider.shutdown()


needs_histogram_batch = pytest.mark.skipif(
    not _histogram_batch_available(),
    reason="the installed opentelemetry-sdk lacks the internals _compat.HistogramBatch uses: histogram values are "
    "recorded one by one there (the public record()), so there is no batch to test",
)
"""For tests of ``_compat.HistogramBatch`` (values handed to the SDK per series), which needs the newer SDK's
internals; an older SDK records each value with the public ``record()``."""

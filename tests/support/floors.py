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

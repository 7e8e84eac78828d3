"""Error classification: exception -> error_type (and its severity), from the class, status code and message."""

from __future__ import annotations

import pytest

from ryot_telemetry.catalogue import ERROR_TYPES, SEVERITIES, get
from ryot_telemetry.recording.errors import SEVERITY, classify


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (type("ZoomError", (Exception,), {})("x"), "inference_error"),
        (type("BoomError", (Exception,), {})("x"), "inference_error"),
        (type("OOMError", (Exception,), {})("x"), "oom"),
        (type("CudaOOMError", (Exception,), {})("x"), "oom"),
        (type("OutOfMemoryError", (RuntimeError,), {})("x"), "oom"),
        (type("OomKilled", (Exception,), {})("x"), "oom"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "oom"),
    ],
)
def test_oom_is_matched_as_a_word_not_a_substring(exc: BaseException, expected: str) -> None:
    """ZoomError is not an OOM; OOMError, CudaOOMError, OutOfMemoryError and 'out of memory' are."""
    assert classify(exc) == expected


def test_severity_covers_exactly_the_catalogue_error_types() -> None:
    """Every error_type the catalogue lists has a severity from the catalogue's severities, and no other."""
    assert set(SEVERITY) == set(ERROR_TYPES) == set(get("ryot.inference.errors").label_values["error_type"])
    assert set(SEVERITY.values()) <= set(SEVERITIES)

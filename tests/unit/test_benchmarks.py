"""The scale benchmark's workload and baseline hold the series they claim (``benchmarks/scale.py``)."""

from __future__ import annotations

from typing import Any

from benchmarks import common, scale
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

Series = set[tuple[str, tuple[tuple[str, str], ...]]]


def _series(text: str) -> Series:
    """Every sample's name and labels, less prometheus_client's ``_created`` samples (OTel exposes none)."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if not s.name.endswith("_created")
    }


def _ryot(fill: Any, models: tuple[str, ...]) -> Series:
    tel = common.telemetry()
    try:
        fill(tel.recorder, models)
        return _series(generate_latest(tel.registry).decode())
    finally:
        tel.shutdown()


def test_fill_models_records_every_series_of_every_combination() -> None:
    """100 requests per model give the same series as one per label combination (1,350 per model)."""
    lean = _ryot(scale.fill_models, ("a", "b"))
    assert lean == _ryot(common.fill_all_combinations, ("a", "b"))
    names = {name for name, _ in lean}
    assert {"ryot_inference_requests_total", "ryot_inference_errors_total", "ryot_ttft_latency_seconds_bucket"} <= names
    assert {dict(labels).get("model") for _, labels in lean} >= {"a", "b"}


def test_template_gives_prometheus_client_the_same_series() -> None:
    """The prometheus_client baseline built from one model's template exposes exactly ryot's series for 3 models."""
    models = scale.model_names(3)
    ours = _ryot(scale.fill_models, models)
    theirs = _series(generate_latest(scale.Template.from_ryot().registry(models)).decode())
    assert theirs == ours


def test_growth_per_doubling() -> None:
    """Linear cost doubles per doubling of the size, whatever the interval; flat cost stays; quadratic quadruples."""
    assert abs(scale.growth(10, 1.0, 1000, 100.0) - 2.0) < 1e-12
    assert scale.growth(2, 5.0, 32, 5.0) == 1.0
    assert abs(scale.growth(100, 1.0, 200, 4.0) - 4.0) < 1e-12

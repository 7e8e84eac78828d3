"""The scale benchmark runs end to end at a tiny size (real worker processes) and writes its curves to --json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from benchmarks import results, scale

FIELDS = {
    "axis",
    "size",
    "curve",
    "name",
    "value",
    "unit",
    "baseline",
    "baseline_value",
    "ratio",
    "goal",
    "met",
    "noise",
}

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_scale_section_at_a_tiny_size_writes_its_curves(tmp_path: Path) -> None:
    rows: list[tuple[str, str, str, str]] = []
    curves: list[dict[str, Any]] = []
    scale.report(True, rows, curves, size=scale.TINY)
    path = tmp_path / "results.json"
    results.write(path, rows, True, curves)
    doc = json.loads(path.read_text())
    assert [r["name"] for r in doc["records"]] == [row[0] for row in rows]
    got = {(p["axis"], p["size"], p["curve"]): p for p in doc["curves"]}
    assert all(set(p) == FIELDS for p in got.values())
    for key in (
        ("models", 1, "scrape"),
        ("models", 2, "scrape"),
        ("models", 2, "RSS growth"),
        ("models", 2, "hand-off CPU"),
        ("workers", 1, "merged scrape"),
        ("workers", 2, "merged scrape"),
        ("workers", 2, "hand-off CPU per worker"),
        ("workers", 2, "file per worker"),
        ("workers", 1, "CPU per request in a worker (2,000 per hand-off)"),
        ("trial", 1, "new series: scrapes after its zero"),
    ):
        assert key in got, key
    # the baseline holds exactly ryot's series
    series = got[("models", 2, "exposition")]
    assert series["value"] == series["baseline_value"] and series["ratio"] == 1.0
    for key in (("models", 2, "scrape"), ("workers", 2, "merged scrape")):
        p = got[key]
        assert p["value"] > 0 and p["baseline_value"] > 0 and p["ratio"] > 0
        assert p["baseline"] in ("prometheus_client", "prometheus_client multiprocess")
    assert rows[0][0] == "scale: scrape, 2 models / prometheus_client"

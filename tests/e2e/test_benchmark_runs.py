"""The scale benchmark runs end to end at a tiny size (real worker processes) and writes its records."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import run, scale

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"section", "name", "value", "unit", "baseline", "ratio", "goal", "met", "noise"}

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_scale_section_at_a_tiny_size_writes_its_records(tmp_path: Path) -> None:
    rows: list[tuple[str, str, str, str]] = []
    records: list[dict[str, object]] = []
    scale.report(True, rows, records, size=scale.TINY)
    path = tmp_path / "results.jsonl"
    run.write_json(str(path), records)
    got = {r["name"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert all(set(r) == FIELDS and r["section"] == "scale" for r in got.values())
    for name in (
        "scale.scrape 2 models",
        "scale.rss 2 models",
        "scale.mp scrape 2 workers x 1 models",
        "scale.mp hand-off per worker, 2 workers",
        "scale.mp file per worker, 2 workers",
        "scale.mp worker CPU per request, 1 models, 2000 per hand-off",
        "scale.scrape growth per doubling 1->2",
        "scale.mp scrape growth per doubling 1->2",
        "scale.new series scrapes after its zero (worst)",
    ):
        assert name in got, name
    # the baseline holds exactly ryot's series
    assert got["scale.scrape 2 models series"]["value"] == got["scale.scrape 2 models series"]["baseline"]
    for name in ("scale.scrape 2 models", "scale.mp scrape 2 workers x 1 models"):
        r = got[name]
        assert isinstance(r["value"], float) and isinstance(r["baseline"], float) and r["value"] > 0
        assert math.isclose(r["ratio"], r["ratio"]) and r["ratio"] > 0  # type: ignore[arg-type]
    assert [row[0] for row in rows][:1] == ["scale: scrape, 2 models / prometheus_client"]


def test_json_option_writes_one_record_per_summary_row(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "scrape", "--json", str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (record,) = map(json.loads, path.read_text().splitlines())
    assert set(record) == FIELDS
    assert (record["name"], record["unit"], record["section"]) == (
        "scrape time / prometheus_client same series",
        "x",
        "summary",
    )
    assert record["value"] > 0 and record["ratio"] == record["value"]

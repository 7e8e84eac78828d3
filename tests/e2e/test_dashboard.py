"""The committed Grafana dashboard is exactly the one generated from the catalogue, and its queries are real."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ryot_telemetry.dashboard import build_dashboard, dashboard_json, main, write_dashboard
from test_rules import unknown_labels, unknown_metric_names

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "collector" / "grafana" / "ryot-dashboard.json"
_METRIC = re.compile(r"(?<![\w:])ryot_[a-z_]+")


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", ())]


def test_committed_dashboard_is_generated() -> None:
    """collector/grafana/ryot-dashboard.json equals build_dashboard() byte for byte (regenerate with dashboard.main)."""
    assert COMMITTED.read_text(encoding="utf-8") == dashboard_json()
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == build_dashboard()


def test_write_dashboard_and_main_write_the_same_file(tmp_path: Path) -> None:
    """write_dashboard(path) and main([path]) both write the committed text."""
    write_dashboard(tmp_path / "a.json")
    assert main([str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text() == COMMITTED.read_text()


def test_every_panel_query_names_real_metrics() -> None:
    """Each panel query names at least one metric; every ryot_* name and every label in it is exposed by the plugin."""
    queries = _queries(build_dashboard())
    assert len(queries) == 38
    for title, expr in queries:
        names = _METRIC.findall(expr)
        assert names, f"{title}: no ryot metric in {expr}"
        assert unknown_metric_names(expr) == [], f"{title}: {expr}"
        assert unknown_labels(expr) == [], f"{title}: {expr}"


def test_dashboard_covers_the_required_metrics() -> None:
    """Requests, errors, latency, TTFT, TPOT, tokens, active, queue, GPU memory and utilisation, cost all appear."""
    used = {n for _, expr in _queries(build_dashboard()) for n in _METRIC.findall(expr)}
    required = {
        "ryot_inference_requests_total",
        "ryot_inference_errors_total",
        "ryot_inference_latency_seconds_bucket",
        "ryot_ttft_latency_seconds_bucket",
        "ryot_time_per_output_token_seconds_bucket",
        "ryot_tokens_generated_total",
        "ryot_active_inference_requests",
        "ryot_queue_depth",
        "ryot_gpu_memory_percentage",
        "ryot_gpu_memory_usage_bytes",
        "ryot_gpu_utilization_percent",
        "ryot_token_cost_estimate_usd_total",
    }
    assert required - used == set()


def test_panel_layout_has_unique_ids_and_no_overlap() -> None:
    """Panel ids are 1..n and no two panels share a grid cell on the 24-column grid."""
    panels = build_dashboard()["panels"]
    assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert cells & mine == set(), p["title"]
        cells |= mine


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not found (Debian package `prometheus`)")
def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses every panel query (Grafana variables replaced by concrete values) as a recording rule."""
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$model", ".*"),
        }
        for i, (_, expr) in enumerate(_queries(build_dashboard()))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


def test_slo_row_reads_goodput_and_the_generated_target() -> None:
    """The SLO row: goodput, 30-day budget left, burn rate for every alert window, misses by objective; the only
    recorded series it reads is ryot:slo:target, which the generated SLO rules define."""
    panels = build_dashboard()["panels"]
    i = next(n for n, p in enumerate(panels) if p["type"] == "row" and p["title"] == "SLOs")
    row = [p["title"] for p in panels[i + 1 : i + 5]]
    assert row == ["Goodput by model", "Error budget remaining (30d)", "Burn rate by window", "SLO misses by objective"]
    burn = panels[i + 3]
    assert [t["legendFormat"].split()[-1] for t in burn["targets"]] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
    recorded = {n for p in panels[i + 1 : i + 5] for t in p["targets"] for n in re.findall(r"ryot:[a-z_:]+", t["expr"])}
    generated = yaml.safe_load((ROOT / "collector" / "rules" / "ryot_slo_rules.yml").read_text())
    assert recorded == {"ryot:slo:target"}
    assert recorded <= {r.get("record") for g in generated["groups"] for r in g["rules"]}

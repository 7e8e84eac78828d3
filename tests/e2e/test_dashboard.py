"""The committed Grafana dashboard is exactly the one generated from the catalogue, and its queries are real."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ryot_telemetry import catalogue
from ryot_telemetry.artifacts.budget_rules import RECORDS as BUDGET_RECORDS
from ryot_telemetry.artifacts.dashboard import build_dashboard, dashboard_json, main, write_dashboard
from support.promql import unknown_labels, unknown_metric_names

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
    # 31 (2 by tenant), 10 SLO, 7 outcomes, 9 capacity (lengths, engine queue time), 7 providers, 2 budget (recorded
    # series), 2 telemetry health (OTLP), 2 telemetry itself (queue)
    assert len(queries) == 70
    for title, expr in queries:
        if expr in BUDGET_RECORDS:
            continue  # the budget panel: budgets exist only in the generated budget rules
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
            "expr": expr.replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$model", ".*")
            .replace("$tenant", ".*")
            .replace("$job", ".*")
            .replace("$instance", ".*"),
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


_SELECTOR = re.compile(r"(?<![\w:])(ryot_[a-z_]+)(\{[^}]*\})?")


def test_every_query_selects_job_and_instance() -> None:
    """Every metric selector of every query filters on the job and instance variables, which the dashboard defines."""
    dashboard = build_dashboard()
    for title, expr in _queries(dashboard):
        for name, matchers in _SELECTOR.findall(expr):
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, f"{title}: {name}{matchers}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "model", "tenant"]
    assert variables["job"]["definition"] == "label_values(ryot_service_info, job)"
    assert variables["instance"]["definition"] == 'label_values(ryot_service_info{job=~"$job"}, instance)'
    assert variables["model"]["definition"] == (
        'label_values(ryot_inference_requests_total{job=~"$job",instance=~"$instance"}, model)'
    )
    assert variables["tenant"]["definition"] == (
        'label_values(ryot_token_cost_estimate_usd_total{job=~"$job",instance=~"$instance",model=~"$model"}, tenant)'
    )


def test_stat_panels_run_instant_queries() -> None:
    """A stat over the dashboard's range (the cost total) is one instant query, not a range query at every step."""
    stats = [p for p in build_dashboard()["panels"] if p["type"] == "stat"]
    titles = [
        "Error budget remaining (30d)",
        "Burn rate by window",
        "Estimated cost over the time range",
        "Cost by tenant over the time range",
        "Delta increments unconfirmed",
    ]
    assert [p["title"] for p in stats] == titles  # the SLO stats: current values, so instant queries as well
    assert all((t["instant"], t["range"]) == (True, False) for p in stats for t in p["targets"])
    for stat in stats[-2:]:
        (target,) = stat["targets"]
        assert "[$__range]" in target["expr"]


# What a query's value is, in UCUM terms, follows from its shape and the catalogue unit of the metric it reads.
_VALUE_UNITS = {
    "s": {"s"},
    "By": {"bytes"},
    "%": {"percent"},
    "{percent}": {"percent"},
    "W": {"watt"},
    "Cel": {"celsius"},
    "{USD}": {"currencyUSD"},
    "{token/s}": {"suffix: tokens/s"},
    "{request}": {"short"},
    "{point}": {"short"},
    "{token}": {"short"},  # tokens per request (the length histograms)
    "1": {"percentunit", "short"},  # a fraction, or (token efficiency) a quotient of two different units
}
_RATE_UNITS = {
    "{request}": {"reqps"},
    "{error}": {"reqps"},
    "{token}": {"suffix: tokens/s"},
    "{choice}": {"suffix: choices/s"},
    "{export}": {"suffix: exports/s"},
    "{USD}": set(),
}
_PER_HOUR_UNITS = {"{USD}": {"currencyUSD"}}  # rate(...) * 3600, titled "per hour"


def expected_units(expr: str) -> set[str]:
    """Grafana units that fit ``expr``: a quantile or gauge has its metric's unit, rate() that unit per second,
    a quotient of two different counters' rates is a fraction, a histogram's _sum/_count quotient its unit."""
    specs = {}
    for name in _METRIC.findall(expr):
        if name == "ryot_model_info":
            continue  # the per-provider join: a factor of 1 that only brings the provider label

        base = re.sub(r"_(bucket|sum|count)$", "", name)
        specs[name] = catalogue.BY_PROMETHEUS_NAME.get(base) or catalogue.BY_PROMETHEUS_NAME[name]
    units = {spec.unit for spec in specs.values()}
    if expr in BUDGET_RECORDS:
        return {"percentunit"}  # spend and projected spend over the budget
    if "(1 - ryot:slo:target" in expr:  # SLO: over the error budget, a share is a burn rate (x); 1 - it, the rest
        return {"percentunit"} if expr.startswith("1 - ") else {"suffix:x"}
    if "histogram_quantile" in expr or any(n.endswith("_sum") for n in specs):
        (unit,) = units  # a quantile, or an average of one histogram
        return _VALUE_UNITS[unit]
    if "rate(" in expr and " / " in expr:
        return {"percentunit"}  # errors / requests
    (unit,) = units
    if "increase(" in expr:
        return _VALUE_UNITS[unit]
    if "rate(" in expr:
        return _PER_HOUR_UNITS[unit] if expr.endswith("* 3600") else _RATE_UNITS[unit]
    return _VALUE_UNITS[unit]


def unit_problems(panel: dict) -> list[str]:
    """Targets whose unit (the panel's, or an override's for that refId) does not fit the query, and targets of
    different units drawn on the same axis (no override moving one to another axis)."""
    defaults = panel["fieldConfig"]["defaults"]
    overrides = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in panel["fieldConfig"].get("overrides", [])
        if o["matcher"]["id"] == "byFrameRefID"
    }
    problems, axes = [], {}
    for t in panel["targets"]:
        props = overrides.get(t["refId"], {})
        unit = props.get("unit", defaults["unit"])
        fits = expected_units(t["expr"])
        if unit not in fits:
            problems.append(f"{panel['title']} {t['refId']}: unit {unit!r}, expected one of {fits}")
        axis = props.get("custom.axisPlacement", defaults.get("custom", {}).get("axisPlacement", "auto"))
        axes.setdefault(axis, set()).add(unit)
    problems += [f"{panel['title']}: units {sorted(u)} share the {a} axis" for a, u in axes.items() if len(u) > 1]
    return problems


def test_unit_problems_catches_mixed_axes_and_wrong_units() -> None:
    """W and °C on one axis with unit short is flagged; the same with an override putting °C on the right is not."""
    power = {"expr": 'max(ryot_gpu_power_watts{job=~"$job",instance=~"$instance"})', "refId": "A"}
    temp = {"expr": 'max(ryot_gpu_temperature_celsius{job=~"$job",instance=~"$instance"})', "refId": "B"}
    mixed = {"title": "p", "targets": [power, temp], "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []}}
    assert unit_problems(mixed) == [
        "p A: unit 'short', expected one of {'watt'}",
        "p B: unit 'short', expected one of {'celsius'}",
    ]
    mixed["fieldConfig"]["defaults"]["unit"] = "watt"
    assert unit_problems(mixed) == [
        "p B: unit 'watt', expected one of {'celsius'}",
    ]
    override = {
        "matcher": {"id": "byFrameRefID", "options": "B"},
        "properties": [{"id": "unit", "value": "celsius"}],
    }
    mixed["fieldConfig"]["overrides"] = [override]
    assert unit_problems(mixed) == ["p: units ['celsius', 'watt'] share the auto axis"]
    override["properties"].append({"id": "custom.axisPlacement", "value": "right"})
    assert unit_problems(mixed) == []


def test_every_panel_unit_matches_its_metrics() -> None:
    """Each panel's unit fits what its queries compute from the catalogue units, and no axis mixes two units."""
    panels = [p for p in build_dashboard()["panels"] if p["type"] != "row"]
    assert [problem for p in panels for problem in unit_problems(p)] == []
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels}
    assert units["GPU power"] == "watt" and units["GPU temperature"] == "celsius"
    assert units["Prompt tokens per second"] == units["Completion tokens per second"] == "suffix: tokens/s"


def test_outcomes_row_stacks_where_ttft_goes_and_shows_finish_reasons_and_estimates() -> None:
    """The outcomes row: engine prefill and outside-the-engine means stacked, finish reasons by reason, usage vs
    estimated completion tokens, each from its catalogue family."""
    panels = {p["title"]: p for p in build_dashboard()["panels"]}
    where = panels["Where TTFT goes"]
    assert where["fieldConfig"]["defaults"]["custom"]["stacking"] == {"mode": "normal", "group": "A"}
    names = [_METRIC.findall(t["expr"]) for t in where["targets"]]
    assert names == [
        ["ryot_engine_prefill_seconds_sum", "ryot_engine_prefill_seconds_count"],
        ["ryot_ttft_outside_engine_seconds_sum", "ryot_ttft_outside_engine_seconds_count"],
    ]
    assert [t["legendFormat"] for t in where["targets"]] == ["engine prefill", "outside the engine"]
    (fin,) = panels["Finish reasons"]["targets"]
    assert fin["expr"].startswith("sum by (finish_reason) (rate(ryot_finish_reasons_total{")
    est = panels["Completion tokens: usage vs estimated"]["targets"]
    assert [_METRIC.findall(t["expr"]) for t in est] == [
        ["ryot_tokens_generated_total"],
        ["ryot_estimated_tokens_total"],
    ]
    eng = panels["Engine decode time per output token p50 / p95"]["targets"]
    assert all("ryot_engine_time_per_output_token_seconds_bucket" in t["expr"] for t in eng)


def test_providers_row_joins_every_query_with_model_info_per_replica() -> None:
    """The providers row: error ratio by provider and type, rate-limit saturation, TTFT and latency quantiles and
    request rate by provider, each joined with ryot_model_info on (job, instance, model)."""
    panels = build_dashboard()["panels"]
    i = next(n for n, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Providers")
    end = next((n for n in range(i + 1, len(panels)) if panels[n]["type"] == "row"), len(panels))
    row = panels[i + 1 : end]
    assert [p["title"] for p in row] == [
        "Failed request ratio by provider and type",
        "Rate-limit saturation by provider",
        "Time to first token by provider p50 / p95",
        "End-to-end latency by provider p50 / p95",
        "Request rate by provider",
    ]
    for p in row:
        for t in p["targets"]:
            joins = t["expr"].count("* on (job, instance, model) group_left (provider) ryot_model_info{")
            assert joins == t["expr"].count("rate(") >= 1, (p["title"], t["expr"])
    assert 'error_type="rate_limited"' in row[1]["targets"][0]["expr"]


def test_budget_panel_reads_the_generated_budget_rules() -> None:
    """The cost row ends with spend against budget: the spend and burn ratios the budget rules record, as shares,
    orange at 80% and red at 100%."""
    panels = build_dashboard()["panels"]
    i = next(n for n, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Cost")
    end = next(n for n in range(i + 1, len(panels)) if panels[n]["type"] == "row")
    budget = panels[end - 1]
    assert budget["title"] == "Spend against budget"
    assert [t["expr"] for t in budget["targets"]] == ["ryot:budget_spend:ratio", "ryot:budget_burn:ratio"]
    assert set(BUDGET_RECORDS) >= {t["expr"] for t in budget["targets"]}
    assert budget["fieldConfig"]["defaults"]["unit"] == "percentunit"
    steps = budget["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["color"], s["value"]) for s in steps] == [("green", None), ("orange", 0.8), ("red", 1.0)]

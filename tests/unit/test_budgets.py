"""Budget tables: validated at start-up, and the Prometheus rules generated from them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ryot_telemetry import configure
from ryot_telemetry.artifacts.budget_rules import EXAMPLE_TABLE, main, rules_yaml
from ryot_telemetry.budgets import Budget, BudgetTable
from ryot_telemetry.cli import main as cli_main
from ryot_telemetry.settings import ConfigurationError, Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_RULES = ROOT / "collector" / "rules" / "examples" / "ryot_budget_rules.yml"


def test_table_reads_tenants_and_models_with_default_and_own_windows() -> None:
    """Numbers take the table's window; an entry may give its own."""
    t = BudgetTable(
        {"window": "4w", "tenants": {"a": 100, "b": {"usd": 2.5}}, "models": {"m": {"usd": 9, "window": "7d"}}}
    )
    assert t.budgets == (
        Budget("tenant", "a", 100.0, "4w"),
        Budget("tenant", "b", 2.5, "4w"),
        Budget("model", "m", 9.0, "7d"),
    )
    assert [b.window_seconds for b in t.budgets] == [2419200, 2419200, 604800]
    assert BudgetTable({"models": {"m": 1}}).budgets[0].window == "30d"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([1], "budget table must be a mapping with 'tenants' and/or 'models', got list"),
        ({}, "budget table has no budget: give 'tenants' and/or 'models'"),
        ({"tenants": {}}, "budget table has no budget"),
        ({"teams": {"a": 1}}, "budget table: unknown key 'teams'; expected window, tenants, models"),
        ({"tenants": [1]}, "budget table: tenants must map a tenant to its budget, got [1]"),
        ({"tenants": {"a": 0}}, "budget for tenant 'a': usd must be a finite number > 0, got 0"),
        ({"tenants": {"a": -5}}, "budget for tenant 'a': usd must be a finite number > 0, got -5"),
        ({"tenants": {"a": float("nan")}}, "budget for tenant 'a': usd must be a finite number > 0, got nan"),
        ({"tenants": {"a": float("inf")}}, "budget for tenant 'a': usd must be a finite number > 0, got inf"),
        ({"tenants": {"a": True}}, "budget for tenant 'a': usd must be a finite number > 0, got True"),
        ({"tenants": {"a": "100"}}, "budget for tenant 'a': usd must be a finite number > 0, got '100'"),
        ({"models": {"m": {"usd": 1, "cap": 2}}}, "budget for model 'm': expected <usd> or {'usd': <usd>, 'window'"),
        ({"models": {"m": {"window": "7d"}}}, "budget for model 'm': expected <usd> or"),
        ({"window": "30 days", "models": {"m": 1}}, "budget table: window must be a Prometheus duration"),
        ({"window": "12h", "models": {"m": 1}}, "between 1d and 366d"),
        ({"window": "400d", "models": {"m": 1}}, "between 1d and 366d"),
        ({"window": "1y", "models": {"m": 1}}, "got '1y'"),
        ({"models": {"m": {"usd": 1, "window": 30}}}, "budget for model 'm': window must be a Prometheus duration"),
        ({"tenants": {"": 1}}, "budget for tenant '': a name must be a non-empty string"),
        ({"tenants": {"a\x00b": 1}}, "without control characters"),
        ({"tenants": {"a\udcff": 1}}, "without control characters"),
        ({"tenants": {"x" * 129: 1}}, "at most 128 characters"),
        ({"tenants": {7: 1}}, "budget for tenant 7: a name must be a non-empty string"),
    ],
)
def test_bad_tables_are_refused_with_one_message(table: Any, message: str) -> None:
    """Each malformed table raises one ValueError that says what is wrong and where."""
    with pytest.raises(ValueError) as info:
        BudgetTable(table)
    assert message in str(info.value)


def test_configure_checks_the_table_at_start_up_naming_the_argument_or_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad table fails configure() / Settings with a ConfigurationError naming budgets= or RYOT_TELEMETRY_BUDGETS."""
    with pytest.raises(ConfigurationError, match=r"^budgets: budget for tenant 'a': usd must be a finite number"):
        configure(exporters="none", gpu=False, budgets={"tenants": {"a": -1}})
    with pytest.raises(ConfigurationError, match=r"^budgets must be a BudgetTable, a mapping or a file path, got 5$"):
        Settings.load(budgets=5)
    bad = tmp_path / "budgets.json"
    bad.write_text('{"models": {"m": {"usd": 1, "window": "1h"}}}')
    monkeypatch.setenv("RYOT_TELEMETRY_BUDGETS", str(bad))
    with pytest.raises(ConfigurationError) as info:
        Settings.load()
    assert str(info.value).startswith(f"RYOT_TELEMETRY_BUDGETS: {bad}: budget for model 'm': window must be")
    bad.write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"^RYOT_TELEMETRY_BUDGETS: malformed budget table "):
        Settings.load()
    monkeypatch.setenv("RYOT_TELEMETRY_BUDGETS", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigurationError, match=r"^RYOT_TELEMETRY_BUDGETS: cannot read budget table "):
        Settings.load()
    good = tmp_path / "budgets.yaml"
    good.write_text("window: 7d\ntenants:\n  team-a: 50\n")
    monkeypatch.setenv("RYOT_TELEMETRY_BUDGETS", str(good))
    loaded = Settings.load().budgets
    assert loaded is not None and loaded.budgets == (Budget("tenant", "team-a", 50.0, "7d"),)
    monkeypatch.delenv("RYOT_TELEMETRY_BUDGETS")
    assert Settings.load().budgets is None


def test_committed_example_rules_are_generated_from_the_example_table() -> None:
    """collector/rules/examples/ryot_budget_rules.yml is what the generator writes for EXAMPLE_TABLE."""
    source = "ryot_telemetry.artifacts.budget_rules.EXAMPLE_TABLE"
    assert EXAMPLE_RULES.read_text() == rules_yaml(BudgetTable(EXAMPLE_TABLE), source)


def test_rules_per_budget_and_the_three_alerts() -> None:
    """Four recording rules per budget, each labelled with its scope, name, window and amount; three alerts."""
    text = rules_yaml(BudgetTable({"tenants": {"t": 10}, "models": {"m": {"usd": 7, "window": "1w"}}}))
    (group,) = yaml.safe_load(text)["groups"]
    assert group["name"] == "ryot_budgets"
    records = [(r["record"], r["expr"], r["labels"]) for r in group["rules"] if "record" in r]
    t = {"scope": "tenant", "tenant": "t", "window": "30d", "budget_usd": "10"}
    m = {"scope": "model", "model": "m", "window": "1w", "budget_usd": "7"}
    assert records == [
        ("ryot:budget:usd", "vector(10)", t),
        ("ryot:budget_spend:usd", 'sum(increase(ryot_token_cost_estimate_usd_total{tenant="t"}[30d]))', t),
        ("ryot:budget_spend:ratio", f"ryot:budget_spend:usd{{{_m(t)}}} / 10", t),
        ("ryot:budget_burn:ratio", 'sum(rate(ryot_token_cost_estimate_usd_total{tenant="t"}[6h])) * 259200', t),
        ("ryot:budget:usd", "vector(7)", m),
        ("ryot:budget_spend:usd", 'sum(increase(ryot_token_cost_estimate_usd_total{model="m"}[1w]))', m),
        ("ryot:budget_spend:ratio", f"ryot:budget_spend:usd{{{_m(m)}}} / 7", m),
        ("ryot:budget_burn:ratio", 'sum(rate(ryot_token_cost_estimate_usd_total{model="m"}[6h])) * 86400', m),
    ]
    alerts = {r["alert"]: (r["expr"], r.get("for"), r["labels"]["severity"]) for r in group["rules"] if "alert" in r}
    assert alerts == {
        "RyotBudget80PercentSpent": ("ryot:budget_spend:ratio >= 0.8 < 1", None, "warning"),
        "RyotBudgetExhausted": ("ryot:budget_spend:ratio >= 1", None, "critical"),
        "RyotBudgetProjectedOverrun": ("ryot:budget_burn:ratio > 1 and ryot:budget_spend:ratio < 1", "1h", "warning"),
    }


def _m(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={json.dumps(v)}" for k, v in labels.items())


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not found (Debian package `prometheus`)")
def test_hostile_names_give_valid_rules(tmp_path: Path) -> None:
    """Names with quotes, backslashes, braces, newlines-free unicode and YAML specials yield rules promtool accepts,
    matching the exact name."""
    names = ['a"b', "c\\d", "e}f{", "yes", "- g: h", "ünï €", "#x", "*"]
    text = rules_yaml(BudgetTable({"tenants": dict.fromkeys(names, 1)}))
    path = tmp_path / "budget_rules.yml"
    path.write_text(text)
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    labels = [r["labels"]["tenant"] for r in yaml.safe_load(text)["groups"][0]["rules"] if "record" in r]
    assert labels == [n for n in names for _ in range(4)]


def test_cli_writes_rules_and_refuses_a_bad_table_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ryot-telemetry budget-rules TABLE -o FILE` writes the rules (creating FILE's folder); a bad table exits 2
    with one line naming it; without a table it reads RYOT_TELEMETRY_BUDGETS."""
    table, out = tmp_path / "b.json", tmp_path / "rules.yml"
    table.write_text(json.dumps({"models": {"m": 5}}))
    assert cli_main(["budget-rules", str(table), "-o", str(out)]) == 0
    assert out.read_text() == rules_yaml(BudgetTable({"models": {"m": 5}}), str(table))
    deeper = tmp_path / "new" / "folder" / "rules.yml"  # a missing folder is created, as for every subcommand
    assert cli_main(["budget-rules", str(table), "-o", str(deeper)]) == 0
    assert deeper.read_text() == out.read_text()
    table.write_text(json.dumps({"models": {"m": -5}}))
    assert main([str(table)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"ryot-telemetry: budget table: {table}: budget for model 'm': usd must be a finite number > 0, got -5\n"
    )
    monkeypatch.setenv("RYOT_TELEMETRY_BUDGETS", str(table))
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("ryot-telemetry: budget table (RYOT_TELEMETRY_BUDGETS): ")


def test_prometheus_rule_takes_the_budget_rules_beside_the_shipped_ones() -> None:
    """`ryot-telemetry k8s --rules ... ryot_budget_rules.yml`: the PrometheusRule's groups end with ryot_budgets,
    rules as generated."""
    from ryot_telemetry.artifacts.k8s import DEFAULT_RULES, prometheus_rule_yaml

    files = [ROOT / "collector" / "rules" / f for f in DEFAULT_RULES] + [EXAMPLE_RULES]
    spec = yaml.safe_load(prometheus_rule_yaml(files))["spec"]
    assert spec["groups"][-1] == yaml.safe_load(EXAMPLE_RULES.read_text())["groups"][0]
    assert [g["name"] for g in spec["groups"]][-1] == "ryot_budgets"

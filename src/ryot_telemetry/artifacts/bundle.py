"""Every deployment file, as ``ryot-telemetry bundle -o DIR`` writes it: the layout of the repository's ``collector/``.

``collector/`` is this function's output, committed (``tests/e2e/test_wheel.py`` checks they are identical), so the
repository and an installed wheel hand out the same files. Edit the hand-written ones in
``src/ryot_telemetry/data/`` (or the catalogue, or a generator), then ``ryot-telemetry bundle -o collector``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..budgets import BudgetTable
from ..slo import SloTable
from . import budget_rules, k8s, shipped
from .dashboard import dashboard_json

__all__ = ["DASHBOARD", "files", "write"]

DASHBOARD = "grafana/ryot-dashboard.json"


def files(slos: SloTable | None = None, slos_source: str = "") -> dict[str, str]:
    """Relative path -> text of every file: the Prometheus and Collector configs, the rule files and their promtool
    tests, the Grafana dashboard and the Prometheus Operator resources (SLO rules of ``slos``, default the example
    table; the SLO rule tests only for the example table)."""
    out = {
        shipped.PROMETHEUS_CONFIG: shipped.text(shipped.PROMETHEUS_CONFIG),
        shipped.COLLECTOR_CONFIG: shipped.text(shipped.COLLECTOR_CONFIG),
    }
    out.update({f"rules/{name}": text for name, text in shipped.rule_files(slos, slos_source).items()})
    out.update({f"rules/tests/{name}": text for name, text in shipped.rule_tests(slos is None).items()})
    out[f"rules/{shipped.EXAMPLE_BUDGET_RULES}"] = budget_rules.rules_yaml(
        BudgetTable(budget_rules.EXAMPLE_TABLE), "ryot_telemetry.artifacts.budget_rules.EXAMPLE_TABLE"
    )
    out[DASHBOARD] = dashboard_json()
    out.update({f"k8s/{name}": text for name, text in k8s.files(slos=slos, slos_source=slos_source).items()})
    return out


def write(texts: Mapping[str, str], directory: str | Path) -> list[Path]:
    """Write ``texts`` (relative path -> text) under ``directory``, creating folders; the paths written."""
    root = Path(directory)
    written = []
    for rel, text in texts.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written

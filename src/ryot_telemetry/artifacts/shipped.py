"""The deployment files the package ships, read from package data (``ryot_telemetry/data/``), never from a checkout.

Hand-written files live in ``src/ryot_telemetry/data/`` (the Prometheus and Collector configs, the recording rules,
the alerts and the promtool tests of the rules); the SLO rules are generated from the example SLO table. Reading
them through ``importlib.resources`` makes every ``ryot-telemetry`` subcommand work from an installed wheel, in any
working directory.
"""

from __future__ import annotations

from importlib import resources

from ..slo import SloTable
from . import slo_rules

__all__ = [
    "COLLECTOR_CONFIG",
    "EXAMPLE_BUDGET_RULES",
    "PROMETHEUS_CONFIG",
    "RULE_FILES",
    "RULE_TESTS",
    "SLO_RULES",
    "rule_files",
    "rule_tests",
    "text",
]

PROMETHEUS_CONFIG = "prometheus.yml"
COLLECTOR_CONFIG = "otelcol-config.yaml"
SLO_RULES = "ryot_slo_rules.yml"
RULE_FILES = ("ryot_recording_rules.yml", "ryot_alerts.yml", SLO_RULES)
"""The rule files, in the order ``prometheus.yml`` loads them (``rules/<file>``)."""
RULE_TESTS = (
    "ryot_recording_rules_test.yml",
    "ryot_alerts_test.yml",
    "ryot_provider_rules_test.yml",
    "ryot_slo_rules_test.yml",
    "ryot_budget_rules_test.yml",
)
"""``promtool test rules`` files (``rules/tests/<file>``); the SLO and budget ones test the rules generated from the
example tables."""
EXAMPLE_BUDGET_RULES = "examples/ryot_budget_rules.yml"
"""The budget rules of the example budget table (``rules/<file>``), which the budget rule test reads."""


def text(path: str) -> str:
    """A shipped file by its ``/``-separated path under ``ryot_telemetry/data/``."""
    node = resources.files("ryot_telemetry").joinpath("data")
    for part in path.split("/"):
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")


def rule_files(slos: SloTable | None = None, source: str = "") -> dict[str, str]:
    """File name -> text of the three rule files: recording rules, alerts, and the SLO rules of ``slos`` (default:
    the example table, as committed; ``source`` names the table in the SLO rules' header)."""
    out = {name: text(f"rules/{name}") for name in RULE_FILES[:2]}
    if slos is None:
        out[SLO_RULES] = slo_rules.rules_yaml(
            SloTable(slo_rules.EXAMPLE_TABLE), "ryot_telemetry.artifacts.slo_rules.EXAMPLE_TABLE"
        )
    else:
        out[SLO_RULES] = slo_rules.rules_yaml(slos, source)
    return out


def rule_tests(example_slos: bool = True) -> dict[str, str]:
    """File name -> text of the promtool rule tests (the SLO one only for the example table's rules)."""
    names = RULE_TESTS if example_slos else tuple(n for n in RULE_TESTS if n != "ryot_slo_rules_test.yml")
    return {name: text(f"rules/tests/{name}") for name in names}

"""README's generated sections match the code, and its set-up commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

from ryot_telemetry import env
from ryot_telemetry.artifacts import docs as _docs
from ryot_telemetry.catalogue import CATALOGUE, markdown_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_metric_table_is_generated_from_catalogue() -> None:
    """The README metric table is exactly what the catalogue generates (run scripts/gen_docs.py to refresh)."""
    assert _docs.section(README, "METRICS TABLE") == markdown_table()
    for m in CATALOGUE:
        assert f"`{m.prometheus_name}`" in README


def test_configuration_table_lists_every_env_variable() -> None:
    """Every RYOT_TELEMETRY_* constant in env.py is documented in README, with its docstring."""
    assert _docs.section(README, "CONFIG TABLE") == _docs.configuration_table()
    names = [n for n in vars(env) if n.startswith("RYOT_TELEMETRY_")]
    assert sorted(n for n, _ in _docs.env_variables()) == sorted(names)


def test_readme_commands_are_what_ci_runs() -> None:
    """README names the demo and test commands, and .ci/run runs that same test command."""
    assert "bash scripts/demo.sh" in README and "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()

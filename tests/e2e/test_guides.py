"""The PromQL in the user guides parses and names only metrics and labels the plugin exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support.promql import unknown_labels, unknown_metric_names

ROOT = Path(__file__).resolve().parents[2]
GUIDES = [ROOT / "docs" / "guides" / name for name in ("tenants.md", "cost.md", "providers.md")]


def _expressions(path: Path) -> list[str]:
    """Every expression of the page's ```promql blocks: one per line, comments left out."""
    blocks = re.findall(r"```promql\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("path", GUIDES, ids=[p.name for p in GUIDES])
def test_guide_promql_names_real_metrics_and_labels(path: Path) -> None:
    """Each query names at least one ryot metric, and every metric and label in it is exposed."""
    exprs = _expressions(path)
    assert exprs, path
    for expr in exprs:
        assert re.search(r"ryot_[a-z_]+", expr), expr
        assert (unknown_metric_names(expr), unknown_labels(expr)) == ([], []), expr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not found (Debian package `prometheus`)")
def test_guide_promql_is_valid(tmp_path: Path) -> None:
    """promtool parses every query of the guides (as recording rules)."""
    exprs = [e for p in GUIDES for e in _expressions(p)]
    rules = [{"record": f"guide:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "guide_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "guides", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout

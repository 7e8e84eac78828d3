"""mkdocs hooks (mkdocs.yml ``hooks:``): the build fails, under ``--strict``, when a benchmark chart in docs/charts/
is stale, that is drawn from other JSON than the committed one (``benchmarks/charts.py``; no matplotlib needed)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("mkdocs.hooks.ryot_charts")


def on_pre_build(config: Any) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.charts import stale
    finally:
        sys.path.remove(str(ROOT))
    for chart in stale(ROOT):
        # a warning, so `mkdocs build --strict` stops here; a plain build still shows the old picture
        log.warning("%s is stale (its benchmark JSON changed): run python scripts/gen_docs.py", chart)

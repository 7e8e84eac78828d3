"""Deprecated: the command line moved to ``ryot_telemetry.cli`` and the demo's runner to ``ryot_telemetry.demo.run``.

Kept for one release so ``python -m ryot_telemetry.demo.cli`` and imports of it keep working.
"""

from __future__ import annotations

import warnings

from ..cli import build_parser, main
from .run import DEMO_SLOS, drive, histogram_quantile, run_demo, summarize

__all__ = ["DEMO_SLOS", "build_parser", "drive", "histogram_quantile", "main", "run_demo", "summarize"]

warnings.warn(
    "ryot_telemetry.demo.cli is deprecated: use ryot_telemetry.cli (the command line) and ryot_telemetry.demo.run "
    "(the demo's runner)",
    DeprecationWarning,
    stacklevel=2,
)

if __name__ == "__main__":
    raise SystemExit(main())

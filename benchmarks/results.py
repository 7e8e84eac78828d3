"""Summary rows as JSON records (``python -m benchmarks --json PATH``), the input of docs/performance.md's table.

A row is what the summary prints: (measure, result, goal, note). A record keeps the measure's name, the result as a
number with its unit, the baseline a ratio is taken against (the part of the name after its last " / "), the ratio
itself, the goal and whether it was met, so the docs table is generated from data instead of copied by hand.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str]

_NUMBER = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(.*?)\s*$")
# units as the summary prints them -> the record's unit; "x" and no unit are both ratios
_UNITS = {"": "ratio", "x": "ratio", "ns": "ns", "us": "us", "ms": "ms", "MB": "MB"}


def record(row: Row) -> dict[str, Any]:
    """One summary row as a record; a result that is not a number keeps its text in ``value`` and unit None."""
    name, result, goal, note = row
    m = _NUMBER.match(result)
    value: float | str = result
    unit: str | None = None
    if m and m.group(2) in _UNITS:
        value, unit = float(m.group(1)), _UNITS[m.group(2)]
    ratio = value if unit == "ratio" else None
    baseline = name.rsplit(" / ", 1)[1] if ratio is not None and " / " in name else None
    met = True if note.startswith("met") else False if note.startswith("MISSED") else None
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal or None,
        "met": met,
        "note": note,
    }


def machine(quick: bool) -> dict[str, Any]:
    """What the numbers depend on besides the code: interpreter, CPUs, how busy the machine was (the 1- and
    15-minute load averages when the run ends), the SDK and prometheus_client versions."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()[::2]],
        "quick": quick,
        "ryot_telemetry": version("ryot-telemetry"),
        "opentelemetry_sdk": version("opentelemetry-sdk"),
        "prometheus_client": version("prometheus-client"),
    }


def write(path: str | Path, rows: list[Row], quick: bool, curves: list[dict[str, Any]] | None = None) -> None:
    """Write {"machine": ..., "records": [...]} to ``path`` (indented, one key order, so diffs stay readable), and
    ``"curves"``: the scale section's curve points (``scale.py``), where it ran."""
    doc: dict[str, Any] = {"machine": machine(quick), "records": [record(r) for r in rows]}
    if curves:
        doc["curves"] = [
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in c.items()} for c in curves
        ]
    Path(path).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

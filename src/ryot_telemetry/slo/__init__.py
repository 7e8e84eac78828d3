"""Service level objectives: the SLO table, the per-request verdict behind ``ryot_slo_requests_total``, and the
multiwindow, multi-burn-rate Prometheus rules generated from the same table.

Table (JSON, or YAML with PyYAML installed), per model with a ``"*"`` default; objectives in seconds, any subset::

    {"*": {"ttft": 0.5, "tpot": 0.05, "latency": 10, "target": 0.99},
     "llama-3.1-70b": {"ttft": 1.0, "target": 0.995}}

A finished request meets its model's SLO when it did not fail and every objective that applies is met: streams are
judged on ``ttft``, ``tpot`` and ``latency`` where set, non-streaming requests on ``latency``. Missed requests name
the first objective missed, in the order error, ttft, tpot, latency.

Regenerate the rules for your own table::

    python -m ryot_telemetry.slo rules my_slos.yaml -o collector/rules/ryot_slo_rules.yml
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._tables import load_table_file

__all__ = [
    "BURN_ALERTS",
    "DEFAULT_TARGET",
    "EXAMPLE_TABLE",
    "OBJECTIVES",
    "WINDOWS",
    "Slo",
    "SloTable",
    "judge",
    "rules_yaml",
]

OBJECTIVES = ("ttft", "tpot", "latency")
"""Latency objectives, in the order a missed request is attributed to them (after ``error``)."""

DEFAULT_TARGET = 0.99
"""Target of an entry that gives none: the share of requests that must meet the SLO over 30 days."""

SLO_PERIOD = "30d"

# Google SRE workbook, "Alerting on SLOs", multiwindow multi-burn-rate alerts for a 30-day SLO:
# (alert, severity, action, ((burn rate, long window, short window), ...)). Either pair fires the alert.
BURN_ALERTS: tuple[tuple[str, str, str, tuple[tuple[float, str, str], ...]], ...] = (
    ("RyotSLOFastBurn", "critical", "page", ((14.4, "1h", "5m"), (6.0, "6h", "30m"))),
    ("RyotSLOSlowBurn", "warning", "ticket", ((3.0, "1d", "2h"), (1.0, "3d", "6h"))),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
"""Every window an alert reads: one error-ratio and one burn-rate recording rule each."""

EXAMPLE_TABLE: dict[str, dict[str, float]] = {
    "*": {"ttft": 1.0, "tpot": 0.05, "latency": 30.0, "target": 0.999},
}
"""The table ``collector/rules/ryot_slo_rules.yml`` is generated from (regenerate it for yours)."""

_FIX = (
    'expected {"<model or *>": {"ttft": <seconds>, "tpot": <seconds>, "latency": <seconds>, "target": <0..1>}}, '
    "with at least one of ttft, tpot, latency per model"
)


@dataclass(frozen=True, slots=True)
class Slo:
    """One model's objectives (seconds; None = not judged) and target share of requests meeting them."""

    ttft: float | None = None
    tpot: float | None = None
    latency: float | None = None
    target: float = DEFAULT_TARGET


def _slo(model: str, entry: Any) -> Slo:
    if isinstance(entry, Slo):
        return entry
    if not isinstance(entry, Mapping):
        raise ValueError(f"SLO table entry for {model!r} must be a mapping, got {entry!r}; {_FIX}")
    unknown = sorted(set(map(str, entry)) - {*OBJECTIVES, "target"})
    if unknown:
        raise ValueError(f"SLO table entry for {model!r}: unknown key {unknown[0]!r}; {_FIX}")
    if not any(k in entry for k in OBJECTIVES):
        raise ValueError(f"SLO table entry for {model!r} has no objective; {_FIX}")
    vals: dict[str, float] = {}
    for k in OBJECTIVES:
        if k in entry:
            v = entry[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"SLO table entry for {model!r}: {k} must be a number of seconds > 0, got {v!r}")
            vals[k] = float(v)
    target = entry.get("target", DEFAULT_TARGET)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise ValueError(
            f"SLO table entry for {model!r}: target must be a fraction strictly between 0 and 1 such as 0.99, "
            f"got {target!r}"
        )
    return Slo(target=float(target), **vals)


class SloTable:
    """Model name -> ``Slo``. A ``"*"`` entry, if present, applies to models not listed; others are not judged."""

    __slots__ = ("_default", "_slos")

    def __init__(self, slos: Mapping[str, Any]) -> None:
        if not isinstance(slos, Mapping) or not slos:
            raise ValueError(f"SLO table must be a non-empty mapping of model -> objectives; {_FIX}")
        table = {str(model): _slo(str(model), entry) for model, entry in slos.items()}
        self._default = table.pop("*", None)
        self._slos = table

    def get(self, model: str) -> Slo | None:
        return self._slos.get(model, self._default)

    @property
    def default(self) -> Slo | None:
        return self._default

    def models(self) -> dict[str, Slo]:
        """The models listed by name (without the ``"*"`` default)."""
        return dict(self._slos)

    def as_dict(self) -> dict[str, dict[str, float]]:
        """The table in its file format (for the demo's summary and for round trips)."""
        out = {}
        for model, s in [*self._slos.items(), *([("*", self._default)] if self._default else [])]:
            out[model] = {k: getattr(s, k) for k in (*OBJECTIVES, "target") if getattr(s, k) is not None}
        return out

    def __len__(self) -> int:
        return len(self._slos) + (self._default is not None)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SloTable:
        """Load a JSON table (YAML when the name ends in .yaml/.yml and PyYAML is installed)."""
        return load_table_file(path, "SLO table", cls)

    @classmethod
    def load(cls, arg: SloTable | Mapping[str, Any] | str | os.PathLike[str]) -> SloTable:
        if isinstance(arg, SloTable):
            return arg
        if isinstance(arg, Mapping):
            return cls(arg)
        return cls.from_file(arg)


def judge(slo: Slo, *, error: bool, stream: bool, latency: float, ttft: float | None, tpot: float | None) -> str | None:
    """None when the request met ``slo``, else the first objective it missed: error, ttft, tpot, latency.

    A stream that produced no first token misses ``ttft``; one with fewer than two tokens per choice has no TPOT.
    """
    if error:
        return "error"
    if stream:
        if slo.ttft is not None and (ttft is None or ttft > slo.ttft):
            return "ttft"
        if slo.tpot is not None and tpot is not None and tpot > slo.tpot:
            return "tpot"
    if slo.latency is not None and latency > slo.latency:
        return "latency"
    return None


# --- rules -----------------------------------------------------------------------------------------------------------

_TOTAL = "ryot_slo_requests_total"


def _num(x: float) -> str:
    return f"{x:.6g}"


def _q(s: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(s)


def _promql_str(s: str) -> str:
    return json.dumps(s)  # PromQL double-quoted strings take Go escapes, a superset of JSON's


def _target_rules(table: SloTable) -> list[tuple[str, str, dict[str, str]]]:
    """``ryot:slo:target`` per model: a constant for each listed model, the default for every other model seen."""
    out = []
    for model, s in table.models().items():
        out.append((f"vector({_num(s.target)})", "", {"model": model}))
    if table.default is not None:
        listed = sorted(table.models())
        sel = "{model!~" + _promql_str("|".join(re.escape(m) for m in listed)) + "}" if listed else ""
        out.append((f"{_num(table.default.target)} * group by (model) ({_TOTAL}{sel})", "", {}))
    return out


def rules_yaml(table: SloTable, source: str = "") -> str:
    """Prometheus recording and alerting rules for ``table`` (multiwindow, multi-burn-rate, 30-day SLO)."""
    lines = [
        "# Generated by `python -m ryot_telemetry.slo rules` from an SLO table; do not edit, regenerate.",
        *([f"# Table: {source}"] if source else []),
        f"# {json.dumps(table.as_dict(), sort_keys=True)}",
        "# ryot:slo_errors:ratio_rate<w>: share of finished requests over window <w> that missed their SLO;",
        "# ryot:slo_burn_rate:rate<w>: that share divided by the error budget (1 - target): 1 = the budget lasts",
        f"# exactly {SLO_PERIOD}. Alerts: Google SRE workbook multiwindow, multi-burn-rate (page 14.4x 1h+5m or 6x",
        "# 6h+30m; ticket 3x 1d+2h or 1x 3d+6h).",
        "# One group: its rules run in order at each evaluation, so the alerts read burn rates of the same instant.",
        "groups:",
        "  - name: ryot_slo",
        "    rules:",
    ]
    for expr, _, labels in _target_rules(table):
        lines += ["      - record: ryot:slo:target", f"        expr: {_q(expr)}"]
        if labels:
            lines.append("        labels:")
            lines += [f"          {k}: {_q(v)}" for k, v in labels.items()]
    lines += [
        "      - record: ryot:slo_goodput:ratio_rate5m",
        "        expr: "
        + _q(f'sum by (model) (rate({_TOTAL}{{result="met"}}[5m])) / sum by (model) (rate({_TOTAL}[5m]))'),
    ]
    for w in WINDOWS:
        lines += [
            f"      - record: ryot:slo_errors:ratio_rate{w}",
            "        expr: "
            + _q(f'sum by (model) (rate({_TOTAL}{{result="missed"}}[{w}])) / sum by (model) (rate({_TOTAL}[{w}]))'),
        ]
    for w in WINDOWS:
        lines += [
            f"      - record: ryot:slo_burn_rate:rate{w}",
            "        expr: " + _q(f"ryot:slo_errors:ratio_rate{w} / on (model) (1 - ryot:slo:target)"),
        ]
    for alert, severity, action, pairs in BURN_ALERTS:
        expr = " or ".join(
            f"(ryot:slo_burn_rate:rate{long} > {_num(burn)} and ryot:slo_burn_rate:rate{short} > {_num(burn)})"
            for burn, long, short in pairs
        )
        desc = ", or ".join(f"{_num(burn)}x over {long} and {short}" for burn, long, short in pairs)
        lines += [
            f"      - alert: {alert}",
            f"        expr: {_q(expr)}",
            "        labels:",
            f"          severity: {severity}",
            f"          action: {action}",
            "          component: ryot",
            "        annotations:",
            "          summary: " + _q(f"{{{{ $labels.model }}}} is burning its {SLO_PERIOD} SLO error budget"),
            "          description: "
            + _q(
                f"Requests to {{{{ $labels.model }}}} miss their SLO fast enough to {action}: the error budget "
                f"burns faster than {desc}. ryot:slo_burn_rate:rate<window> has the current rates."
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ryot_telemetry.slo", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rules", help="write Prometheus burn-rate rules for an SLO table")
    r.add_argument("table", nargs="?", help="SLO table file (JSON or YAML); default: the shipped example table")
    r.add_argument("-o", "--output", default="-", help="rule file to write (default stdout)")
    args = ap.parse_args(argv)
    try:
        table = SloTable.from_file(args.table) if args.table else SloTable(EXAMPLE_TABLE)
    except ValueError as e:
        print(f"ryot-telemetry: SLO table: {e}", file=sys.stderr)
        return 2
    text = rules_yaml(table, "" if args.table else "ryot_telemetry.slo.EXAMPLE_TABLE")
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0

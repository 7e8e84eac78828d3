"""ryot-telemetry benchmarks: every number is a ratio against a baseline measured in the same run.

    python -m benchmarks            # full run (a few minutes on 2 cores)
    python -m benchmarks --quick    # smoke mode: fewer requests, fewer rounds

Sections: per-request overhead of the router wrapper (non-streaming) against the bare call and against
hand-written prometheus_client code; per-chunk overhead of the stream wrapper; /metrics scrape time against
prometheus_client exposing the same series; RSS growth after many requests (each in its own subprocess); the
serving event loop's rate during a scrape (loop.py); streams with a suspending provider, the fixed cost per stream
and the drain at low request rates (costs.py); the request path against an earlier git revision imported in the
same process (ab.py, ``--ab-against REV``); how scrape, memory and the multi-process hand-off grow with models and
workers (scale.py). Rounds are interleaved (variants in rotated order) and the median is reported, so background
noise hits every variant alike.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from prometheus_client import disable_created_metrics

import ryot_telemetry

Row = tuple[str, str, str, str]


@dataclass
class Run:
    """What a section is given (the options) and adds to (the summary rows, the scale curves for ``--json``)."""

    quick: bool
    ab_against: str | None = None
    rows: list[Row] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)


def _guards(m: ModuleType, r: Run) -> None:
    n, rounds = (5000, 5) if r.quick else (20000, 15)
    r.rows.append(m.report(asyncio.run(m.bench_guards(n, rounds)), n, rounds))


SECTIONS: dict[str, tuple[str, Callable[[ModuleType, Run], None]]] = {
    # name: (its module, imported when the section runs; how the section is called), in the order they run
    "request": ("basics", lambda m, r: m.request(r.quick, r.rows)),
    "api": ("basics", lambda m, r: m.api(r.quick, r.rows)),
    "overflow": ("basics", lambda m, r: m.overflow(r.quick, r.rows)),
    "chunk": ("basics", lambda m, r: m.chunk(r.quick, r.rows)),
    "scrape": ("basics", lambda m, r: m.scrape(r.quick, r.rows)),
    "rss": ("basics", lambda m, r: m.rss(r.quick, r.rows)),
    "loop": ("loop", lambda m, r: m.report(r.quick, r.rows)),
    "costs": ("costs", lambda m, r: m.report(r.quick, r.rows)),
    "guards": ("guards", _guards),
    "multiproc": ("multiproc", lambda m, r: r.rows.extend(m.section(r.quick))),
    "exemplars": ("exemplars", lambda m, r: r.rows.extend(m.run(r.quick))),
    "tenants": ("tenants", lambda m, r: r.rows.extend(m.run(r.quick))),
    "duplicates": ("duplicates", lambda m, r: r.rows.extend(m.run(r.quick))),
    "scale": ("scale", lambda m, r: m.report(r.quick, r.rows, r.curves)),
    "ab": ("ab", lambda m, r: r.rows.extend(m.run(r.quick, r.ab_against))),
}
"""The registry of sections: ``--only NAME`` picks some. A new section is a module and one line here."""


def main(argv: list[str] | None = None) -> int:
    # OTel's exposition has no *_created series; without them prometheus_client writes the same series.
    disable_created_metrics()
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke mode: fewer requests and rounds")
    ap.add_argument("--only", choices=tuple(SECTIONS), action="append")
    ap.add_argument("--ab-against", metavar="REV", help="baseline git revision of section ab (default cb16a6d)")
    ap.add_argument("--json", metavar="PATH", help="also write the summary rows as JSON records to PATH")
    ap.add_argument("--rss-child", choices=("models", "adversarial"), help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        from .basics import rss_child

        print(json.dumps(asyncio.run(rss_child(args.rss_child, args.requests))))
        return 0
    only = set(args.only or SECTIONS)
    run = Run(args.quick, args.ab_against)
    print(
        f"ryot-telemetry {ryot_telemetry.__version__} benchmarks{' (--quick)' if run.quick else ''}, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    for name, (module, call) in SECTIONS.items():
        if name in only:
            call(importlib.import_module(f"{__package__ or 'benchmarks'}.{module}"), run)
    rows = run.rows
    w = max((len(r[0]) for r in rows), default=len("measure"))  # none: e.g. only ab, skipped
    print(f"\n{'measure':<{w}}  {'result':>9}  {'goal':<15}  note")
    for name, val, goal, note in rows:
        print(f"{name:<{w}}  {val:>9}  {goal:<15}  {note}")
    if args.json:
        from .results import write

        write(args.json, rows, run.quick, run.curves)
    return 0


if __name__ == "__main__":
    sys.exit(main())

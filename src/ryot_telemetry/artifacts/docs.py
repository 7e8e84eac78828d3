"""Generated docs sections: the metric table, the configuration reference, the benchmark results and scale tables.

Each lives in a docs page between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers, generated from what
defines it (the catalogue, ``settings.Arguments``, ``env.py``, the committed benchmark JSON), so the pages cannot
drift from the code:
``python scripts/gen_docs.py`` rewrites them and tests/unit/test_docs.py fails while one is stale.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRICS_EXEMPLAR_FILTER,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
)

from .. import env, settings
from ..catalogue import markdown_table

# Standard OpenTelemetry variables ryot-telemetry honours, with what it does with each.
OTEL_VARIABLES = (
    (
        OTEL_METRICS_EXPORTER,
        "Readers to build: `prometheus`, `otlp`, `console`, `none`, comma-separated "
        "(default `prometheus`, plus `otlp` when an OTLP endpoint is set).",
    ),
    (OTEL_EXPORTER_PROMETHEUS_HOST, "Scrape endpoint host (default `localhost`)."),
    (OTEL_EXPORTER_PROMETHEUS_PORT, "Scrape endpoint port (default `9464`; `0` picks a free port)."),
    (OTEL_EXPORTER_OTLP_ENDPOINT, "OTLP endpoint, e.g. `http://collector:4317` (gRPC) or `http://collector:4318`."),
    (
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
        "OTLP endpoint for metrics only, used as given (over HTTP no `/v1/metrics` is added); wins over the above.",
    ),
    (
        OTEL_EXPORTER_OTLP_PROTOCOL,
        "`grpc` (default) or `http/protobuf`; `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL` wins.",
    ),
    (
        OTEL_EXPORTER_OTLP_TIMEOUT,
        "Seconds an OTLP export may take (default 10); `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT` wins.",
    ),
    (
        OTEL_EXPORTER_OTLP_COMPRESSION,
        "`gzip`, `deflate` or `none` (default); `OTEL_EXPORTER_OTLP_METRICS_COMPRESSION` wins.",
    ),
    (
        OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
        "OTLP temporality: `cumulative` (default), `delta` or `lowmemory` (counters and histograms as deltas; "
        "in multi-process mode computed from the merged totals). Prometheus stays cumulative.",
    ),
    (
        OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION,
        "OTLP histograms: `explicit_bucket_histogram` (default, the catalogue's buckets) or "
        "`base2_exponential_bucket_histogram` (single-process only). Prometheus keeps the explicit buckets.",
    ),
    (
        OTEL_METRICS_EXEMPLAR_FILTER,
        "`trace_based`, `always_on` or `always_off`; default trace-based when an OTLP, console or extra reader is "
        "configured, or for Prometheus alone when a TracerProvider is installed before `configure()` (the scrape "
        "carries them in OpenMetrics, single-process only); off otherwise.",
    ),
    (OTEL_METRIC_EXPORT_INTERVAL, "Milliseconds between OTLP exports (default 60000)."),
    (OTEL_SERVICE_NAME, "`service.name` resource attribute and `service` label of `ryot_service_info`."),
    (
        OTEL_RESOURCE_ATTRIBUTES,
        "`key=value,...` resource attributes (values percent-decoded); its `service.name` is used when "
        "`OTEL_SERVICE_NAME` is not set.",
    ),
)

BEGIN = "<!-- BEGIN {} -->"
END = "<!-- END {} -->"


def env_variables() -> list[tuple[str, str]]:
    """(name, docstring) of every constant in ``env.py``, in file order."""
    tree = ast.parse(inspect.getsource(env))
    out: list[tuple[str, str]] = []
    body = tree.body
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            doc = " ".join(nxt.value.value.split()).replace("``", "`")
            out.append((node.targets[0].id, doc))
    return out


def _docstring(node: ast.Expr) -> str:
    assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    return " ".join(node.value.value.split()).replace("``", "`")


def arguments() -> list[tuple[str, str, str]]:
    """(name, type, docstring) of every key of ``settings.Arguments``, in declaration order."""
    tree = ast.parse(inspect.getsource(settings.Arguments))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    return [
        (node.target.id, ast.unparse(node.annotation), _docstring(nxt))
        for node, nxt in zip(body, body[1:])
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
    ]


def arguments_table() -> str:
    """``configure()``'s keyword arguments, from their one declaration (``settings.Arguments``)."""
    rows = ["| argument | type | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | `{kind}` | {doc} |" for name, kind, doc in arguments()]
    return "\n".join(rows)


def configuration_table() -> str:
    """The configuration reference: the OTel variables honoured, then every ``env.py`` constant."""
    rows = ["| variable | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {doc} |" for name, doc in OTEL_VARIABLES]
    rows += [f"| `{name}` | {doc} |" for name, doc in env_variables()]
    return "\n".join(rows)


# The committed output of `python -m benchmarks --quick --json docs/performance.json`, relative to the repository.
PERFORMANCE_RESULTS = "docs/performance.json"


def _result(value: float | str, unit: str | None) -> str:
    if not isinstance(value, (int, float)):
        return _cell(str(value))
    if unit in (None, "ratio"):
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    return f"{value:g} {unit}"


def _cell(text: str) -> str:
    """Text as one Markdown table cell: no emphasis from ``__enter__`` or ``*``, no column break from ``|``."""
    return re.sub(r"([\\_*|])", r"\\\1", text)


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    return f" (load average {load[0]:g} over 1 min, {load[1]:g} over 15 min)" if load else ""


def performance_table(results: dict[str, Any]) -> str:
    """The results table of a ``python -m benchmarks --json`` file: a line naming the machine, then one row each."""
    m = results["machine"]
    lines = [
        f"Python {m['python']} ({m['implementation']}), {m['cpus']} CPUs{_load(m)}, {m['platform']}; "
        f"opentelemetry-sdk {m['opentelemetry_sdk']}, prometheus_client {m['prometheus_client']}; "
        f"{'`--quick`' if m['quick'] else 'full'} run.",
        "",
        "| measure | result (a ratio unless a unit is given) | goal | note |",
        "|---|---|---|---|",
    ]
    for r in results["records"]:
        goal = _cell(r["goal"] or "")
        if r["met"] is not None:
            goal += " — met" if r["met"] else " — **missed**"
        note = re.sub(r"^(met|MISSED);? ?", "", r["note"])
        lines.append(f"| {_cell(r['name'])} | {_result(r['value'], r['unit'])} | {goal} | {_cell(note)} |")
    return "\n".join(lines)


def _performance(root: Path) -> str:
    return performance_table(json.loads((root / PERFORMANCE_RESULTS).read_text(encoding="utf-8")))


# The committed output of `python -m benchmarks --only scale --json docs/scale.json` (a full run).
SCALE_RESULTS = "docs/scale.json"


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{value:,.0f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _goal(point: dict[str, Any]) -> str:
    if point.get("met") is None:
        return ""
    return f" ({_cell(point['goal'])} — met)" if point["met"] else f" ({_cell(point['goal'])} — **missed**)"


def _growth(a: int, ca: float | None, b: int, cb: float | None) -> str:
    if not ca or not cb or ca <= 0 or cb <= 0:
        return "n/a"
    return f"{(cb / ca) ** (1 / math.log2(b / a)):.2f}"


def scale_tables(results: dict[str, Any]) -> str:
    """The scale page's tables from a ``--json`` file's ``curves``: per axis (models, workers, trials) one row per
    size and the curves as columns (with their peer and ratio where one exists), then the growth per doubling
    between consecutive sizes (ours, the peer's)."""
    m = results["machine"]
    out = [
        f"Python {m['python']} ({m['implementation']}), {m['cpus']} CPUs{_load(m)}, {m['platform']}; "
        f"opentelemetry-sdk {m['opentelemetry_sdk']}, prometheus_client {m['prometheus_client']}; "
        f"{'`--quick`' if m['quick'] else 'full'} run."
    ]
    points = results.get("curves", [])
    noise = sorted(p["noise"] for p in points if p.get("noise") is not None)
    if noise:
        out[0] += (
            f" Noise of the rounds (interquartile range over the median): median {statistics.median(noise):.2f}, "
            f"at most {noise[-1]:.2f}."
        )
    for axis in dict.fromkeys(p["axis"] for p in points):
        on = [p for p in points if p["axis"] == axis]
        sizes = sorted({p["size"] for p in on})
        curves = list(dict.fromkeys(p["curve"] for p in on))
        at = {(p["curve"], p["size"]): p for p in on}
        peer = {c: next((p["baseline"] for p in on if p["curve"] == c and p["baseline"]), None) for c in curves}
        unit = {c: next(p["unit"] for p in on if p["curve"] == c) for c in curves}
        head, rows = [axis], []
        for c in curves:
            head.append(f"{c} ({unit[c]})")
            if peer[c]:
                head += [f"{peer[c]} ({unit[c]})", "ratio"]
        for size in sizes:
            cells = [f"{size:,}"]
            for c in curves:
                p = at.get((c, size))
                if p is None:
                    cells += [""] * (3 if peer[c] else 1)
                elif peer[c]:
                    ratio = "n/a" if p["ratio"] is None else f"{p['ratio']:.2f}"
                    cells += [_num(p["value"]), _num(p["baseline_value"]), ratio + _goal(p)]
                else:
                    cells.append(_num(p["value"]) + _goal(p))
            rows.append(cells)
        out += ["", "| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        grown = [c for c in curves if sum((c, s) in at for s in sizes) > 1]
        if axis == "trial" or not grown:
            continue
        head = [f"growth per doubling of {axis}"]
        for c in grown:
            head += [c] + ([peer[c]] if peer[c] else [])
        out += ["", "| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
        for a, b in zip(sizes, sizes[1:]):
            cells = [f"{a:,} → {b:,}"]
            for c in grown:
                pa, pb = at.get((c, a)), at.get((c, b))
                cells.append(_growth(a, pa and pa["value"], b, pb and pb["value"]))
                if peer[c]:
                    cells.append(_growth(a, pa and pa["baseline_value"], b, pb and pb["baseline_value"]))
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _scale(root: Path) -> str:
    return scale_tables(json.loads((root / SCALE_RESULTS).read_text(encoding="utf-8")))


SECTIONS: dict[str, Callable[[Path], str]] = {
    "METRICS TABLE": lambda _root: markdown_table(),
    "CONFIG TABLE": lambda _root: configuration_table(),
    "ARGUMENTS TABLE": lambda _root: arguments_table(),
    "PERFORMANCE TABLE": _performance,
    "SCALE TABLES": _scale,
}

# Which page, relative to the repository, holds which generated sections.
PAGES: dict[str, tuple[str, ...]] = {
    "docs/reference/metrics.md": ("METRICS TABLE",),
    "docs/reference/configuration.md": ("ARGUMENTS TABLE", "CONFIG TABLE"),
    "docs/performance.md": ("PERFORMANCE TABLE",),
    "docs/guides/scale.md": ("SCALE TABLES",),
}


def section(text: str, marker: str) -> str:
    """The current content of one generated section of ``text``."""
    start = text.index(BEGIN.format(marker)) + len(BEGIN.format(marker))
    return text[start : text.index(END.format(marker))].strip()


def _replace_section(text: str, begin: str, end: str, section: str) -> str:
    # A function, not a replacement string: the section may contain backslashes re.sub would interpret.
    return re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _m: section, text, flags=re.S)


def render(text: str, markers: tuple[str, ...], root: Path) -> str:
    """``text`` with the named generated sections replaced by their current content."""
    for marker in markers:
        b, e = BEGIN.format(marker), END.format(marker)
        if b not in text or e not in text:
            raise ValueError(f"no {b} ... {e} markers to generate into")
        text = _replace_section(text, b, e, f"{b}\n{SECTIONS[marker](root)}\n{e}")
    return text


def update_pages(root: str | Path) -> list[str]:
    """Rewrite the generated sections of every page under ``root`` (the repository); returns the pages changed."""
    base = Path(root)
    changed = []
    for page, markers in PAGES.items():
        p = base / page
        old = p.read_text(encoding="utf-8")
        new = render(old, markers, base)
        if new != old:
            p.write_text(new, encoding="utf-8")
            changed.append(page)
    return changed

"""Generated docs sections: the metric table, the configuration reference and the benchmark results table.

Each lives in a docs page between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers, generated from what
defines it (the catalogue, ``env.py``, the committed benchmark JSON), so the pages cannot drift from the code:
``python scripts/gen_docs.py`` rewrites them and tests/unit/test_docs.py fails while one is stale.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import env
from ..catalogue import markdown_table

# Standard OpenTelemetry variables ryot-telemetry honours, with what it does with each.
OTEL_VARIABLES = (
    (
        "OTEL_METRICS_EXPORTER",
        "Readers to build: `prometheus`, `otlp`, `console`, `none`, comma-separated "
        "(default `prometheus`, plus `otlp` when an OTLP endpoint is set).",
    ),
    ("OTEL_EXPORTER_PROMETHEUS_HOST", "Scrape endpoint host (default `localhost`)."),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "Scrape endpoint port (default `9464`; `0` picks a free port)."),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTLP endpoint, e.g. `http://collector:4317` (gRPC) or `http://collector:4318`."),
    (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTLP endpoint for metrics only, used as given (over HTTP no `/v1/metrics` is added); wins over the above.",
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "`grpc` (default) or `http/protobuf`; `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL` wins."),
    (
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "Seconds an OTLP export may take (default 10); `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT` wins.",
    ),
    (
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "`gzip`, `deflate` or `none` (default); `OTEL_EXPORTER_OTLP_METRICS_COMPRESSION` wins.",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        "OTLP temporality: `cumulative` (default), `delta` or `lowmemory` (counters and histograms as deltas; "
        "in multi-process mode computed from the merged totals). Prometheus stays cumulative.",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
        "OTLP histograms: `explicit_bucket_histogram` (default, the catalogue's buckets) or "
        "`base2_exponential_bucket_histogram` (single-process only). Prometheus keeps the explicit buckets.",
    ),
    (
        "OTEL_METRICS_EXEMPLAR_FILTER",
        "`trace_based`, `always_on` or `always_off`; default trace-based when an OTLP, console or extra reader is "
        "configured, off for Prometheus alone (its exporter drops exemplars).",
    ),
    ("OTEL_METRIC_EXPORT_INTERVAL", "Milliseconds between OTLP exports (default 60000)."),
    ("OTEL_SERVICE_NAME", "`service.name` resource attribute and `service` label of `ryot_service_info`."),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
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


SECTIONS: dict[str, Callable[[Path], str]] = {
    "METRICS TABLE": lambda _root: markdown_table(),
    "CONFIG TABLE": lambda _root: configuration_table(),
    "PERFORMANCE TABLE": _performance,
}

# Which page, relative to the repository, holds which generated sections.
PAGES: dict[str, tuple[str, ...]] = {
    "docs/reference/metrics.md": ("METRICS TABLE",),
    "docs/reference/configuration.md": ("CONFIG TABLE",),
    "docs/performance.md": ("PERFORMANCE TABLE",),
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

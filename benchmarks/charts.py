"""The docs' charts, drawn from the committed benchmark JSON: ``docs/charts/performance.svg`` from
``docs/performance.json`` and ``docs/charts/scale.svg`` from ``docs/scale.json``.

``python scripts/gen_docs.py`` writes them with the tables (matplotlib comes with the ``docs`` extra). The SVG is
deterministic (fixed hash salt, no date, text kept as text), and its description names the SHA-256 of what it was
drawn from (the JSON and this file), so a test, and ``mkdocs build`` through ``scripts/mkdocs_hooks.py``, can tell
a stale chart without matplotlib: ``stale()``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

CHARTS = {
    "docs/charts/performance.svg": "docs/performance.json",
    "docs/charts/scale.svg": "docs/scale.json",
}
"""chart -> the benchmark JSON it is drawn from (paths relative to the repository)."""

_SOURCE = re.compile(r"ryot-chart-source sha256:([0-9a-f]{64})")
_MET, _MISSED, _NO_GOAL = "#2e7d32", "#c62828", "#78909c"
_RYOT, _BASELINE = "#3f51b5", "#ff9800"


def source_hash(root: Path, chart: str) -> str:
    """SHA-256 of the chart's JSON and of this module: what the chart depends on."""
    h = hashlib.sha256()
    h.update((root / CHARTS[chart]).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def stale(root: str | Path) -> list[str]:
    """The charts whose committed SVG is missing or was drawn from other inputs than the current ones."""
    base = Path(root)
    out = []
    for chart in CHARTS:
        path = base / chart
        found = _SOURCE.search(path.read_text(encoding="utf-8")) if path.exists() else None
        if found is None or found.group(1) != source_hash(base, chart):
            out.append(chart)
    return out


def _setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.hashsalt": "ryot-telemetry",  # ids in the SVG from this salt, not random
            "svg.fonttype": "none",  # text as <text>: no glyph paths that differ between font versions
            "font.family": "sans-serif",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


def _svg(plt: Any, fig: Any, digest: str, title: str) -> str:
    buf = io.StringIO()
    metadata = {"Date": None, "Title": title, "Description": f"ryot-chart-source sha256:{digest}"}
    fig.savefig(buf, format="svg", metadata=metadata, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _performance(plt: Any, data: dict[str, Any]) -> Any:
    """Every ratio result, one bar each on a log axis around 1 (the baseline), coloured by its goal."""
    records = [r for r in data["records"] if r["unit"] == "ratio" and isinstance(r["value"], (int, float))]
    records.reverse()  # the table's first line at the top
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(records) + 1.2))
    colours = [_MET if r["met"] is True else _MISSED if r["met"] is False else _NO_GOAL for r in records]
    ax.barh(range(len(records)), [r["value"] for r in records], color=colours, height=0.6)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(records)), [r["name"] for r in records])
    ax.set_xlabel("ratio to its baseline (log scale; 1 = as costly as the baseline)")
    for i, r in enumerate(records):
        goal = f"  goal {r['goal']}" if r["goal"] else ""
        ax.annotate(f" {r['value']:g}{goal}", (r["value"], i), va="center", fontsize=7)
    ax.grid(axis="y", visible=False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in (_MET, _MISSED, _NO_GOAL)]
    ax.legend(handles, ["goal met", "goal missed", "no goal"], loc="lower right", fontsize=7)
    ax.set_title(_machine_line(data), fontsize=8, loc="left")
    return fig


def _curve(data: dict[str, Any], axis: str, curve: str) -> list[dict[str, Any]]:
    return sorted((c for c in data["curves"] if c["axis"] == axis and c["curve"] == curve), key=lambda c: c["size"])


def _scale(plt: Any, data: dict[str, Any]) -> Any:
    """Scrape time and memory against models, merged scrape and file size against workers: ryot and
    prometheus_client side by side, log-log, so linear growth is a straight line."""
    panels = [
        ("models", "scrape", "/metrics scrape time"),
        ("models", "RSS growth", "memory (RSS growth)"),
        ("workers", "merged scrape", "merged scrape of all workers"),
        ("workers", "file per worker", "hand-off file per worker"),
    ]
    from matplotlib import ticker

    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.2))
    for ax, (axis, curve, title) in zip(axes, panels):
        points = _curve(data, axis, curve)
        sizes = [c["size"] for c in points]
        ax.plot(sizes, [c["value"] for c in points], "o-", color=_RYOT, label="ryot-telemetry")
        if all(c.get("baseline_value") is not None for c in points) and points:
            ax.plot(sizes, [c["baseline_value"] for c in points], "s--", color=_BASELINE, label=points[0]["baseline"])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
        ax.minorticks_off()
        # 1-2-5 ticks with plain numbers: a decade apart, log axes would show one or two powers of ten
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.set_xlabel(axis)
        ax.set_ylabel(points[0]["unit"] if points else "")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(_machine_line(data), fontsize=8, x=0.01, ha="left")
    fig.tight_layout()
    return fig


def _machine_line(data: dict[str, Any]) -> str:
    m = data["machine"]
    run = "--quick run" if m.get("quick") else "full run"
    return f"Python {m['python']}, {m['cpus']} CPUs, opentelemetry-sdk {m['opentelemetry_sdk']}; {run}"


def render(root: str | Path, chart: str) -> str:
    """The SVG text of one chart, from the JSON as it is now."""
    base = Path(root)
    plt = _setup()
    data = json.loads((base / CHARTS[chart]).read_text(encoding="utf-8"))
    draw = _performance if chart.endswith("performance.svg") else _scale
    title = "Benchmark ratios" if draw is _performance else "Scale curves"
    return _svg(plt, draw(plt, data), source_hash(base, chart), title)


def update_charts(root: str | Path, *, force: bool = False) -> list[str]:
    """Redraw the stale charts (all of them when ``force``); returns those written. A chart whose inputs did not
    change is left alone, so another matplotlib version does not rewrite it."""
    base = Path(root)
    written = []
    for chart in list(CHARTS) if force else stale(base):
        path = base / chart
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(base, chart), encoding="utf-8")
        written.append(chart)
    return written

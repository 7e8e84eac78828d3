"""Generated README sections: the metric table and the configuration reference, from the code that defines them."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

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
    rows = ["| variable | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {doc} |" for name, doc in OTEL_VARIABLES]
    rows += [f"| `{name}` | {doc} |" for name, doc in env_variables()]
    return "\n".join(rows)


SECTIONS = {"METRICS TABLE": markdown_table, "CONFIG TABLE": configuration_table}


def section(text: str, marker: str) -> str:
    start = text.index(BEGIN.format(marker)) + len(BEGIN.format(marker))
    return text[start : text.index(END.format(marker))].strip()


def _replace_section(text: str, begin: str, end: str, section: str) -> str:
    # A function, not a replacement string: the section may contain backslashes re.sub would interpret.
    return re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _m: section, text, flags=re.S)


def render(text: str) -> str:
    """``text`` with every generated section replaced by its current content."""
    for marker, make in SECTIONS.items():
        b, e = BEGIN.format(marker), END.format(marker)
        text = _replace_section(text, b, e, f"{b}\n{make()}\n{e}")
    return text


def update_readme(path: str | Path) -> bool:
    """Rewrite the generated sections of README; returns whether anything changed."""
    p = Path(path)
    old = p.read_text(encoding="utf-8")
    new = render(old)
    if new != old:
        p.write_text(new, encoding="utf-8")
    return new != old

"""The Grafana dashboard, generated from the catalogue so its queries cannot drift from the exposed names.

``build_dashboard()`` returns the dashboard model; ``write_dashboard(path)`` writes it the way
``collector/grafana/ryot-dashboard.json`` is committed (a test compares the two). Every query takes its metric names
from ``catalogue.get(...).prometheus_name`` and its units from the catalogue's UCUM units, and uses raw metrics only,
so the dashboard works without the recording rules.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import catalogue
from .panels import (
    _DS,
    _HEIGHT,
    _MODEL,
    _NO_GPU,
    _RATE,
    _REQUESTS,
    _TARGET,
    _WIDTH,
    _budget_panel,
    _health_panels,
    _name,
    _outcome_panels,
    _panel,
    _provider_panels,
    _quantiles,
    _rate_unit,
    _self_panels,
    _slo_panels,
    _tenant_panels,
    _unit,
)

__all__ = ["DASHBOARD_UID", "build_dashboard", "dashboard_json", "main", "write_dashboard"]

DASHBOARD_UID = "ryot-telemetry"


def _sections() -> list[tuple[str, list[dict[str, Any]]]]:
    req = _name("ryot.inference.requests")
    err = _name("ryot.inference.errors")
    tok = _name("ryot.tokens.generated")
    cost = _name("ryot.token.cost_estimate.usd")
    batch = "ryot.batch_size.distribution"
    traffic = [
        _panel(
            "Request rate by status",
            "Finished requests per second: success, error, timeout, partial (stream broken or closed after content).",
            [(f"sum by (status) (rate({req}{{{_MODEL}}}[{_RATE}]))", "{{status}}")],
            _rate_unit("ryot.inference.requests"),
        ),
        _panel(
            "Failed request ratio by model",
            "Errors over all requests of the model: errors, timeouts and streams broken by an error "
            "(alert: > 5% for 5m).",
            [
                (
                    f"sum by (model) (rate({err}{{{_MODEL}}}[{_RATE}]))"
                    f" / sum by (model) (rate({req}{{{_MODEL}}}[{_RATE}]))",
                    "{{model}}",
                )
            ],
            "percentunit",
            thresholds=[(0.05, "red")],
        ),
        _panel(
            "Errors by type",
            "Errors per second by error_type (oom, timeout, rate_limited, unauthorized, unavailable, ...).",
            [(f"sum by (error_type) (rate({err}{{{_MODEL}}}[{_RATE}]))", "{{error_type}}")],
            _rate_unit("ryot.inference.errors"),
        ),
        _panel(
            "Errors by severity",
            "critical: oom, cuda_error, unavailable, unauthorized; info: invalid_prompt, model_not_found, "
            "context_length_exceeded, content_filtered; warning: everything else.",
            [(f"sum by (severity) (rate({err}{{{_MODEL}}}[{_RATE}]))", "{{severity}}")],
            _rate_unit("ryot.inference.errors"),
        ),
    ]
    latency = [
        _panel(
            "End-to-end latency p50 / p95 / p99",
            "From the call entering the wrapper to its last byte or error; streams grow with their output length "
            "(alert: p95 of non-streaming requests > 10s for 10m).",
            _quantiles("ryot.inference.latency"),
            _unit("ryot.inference.latency"),
        ),
        _panel(
            "Time to first token p50 / p95 / p99",
            "Streams only: from the call to the first chunk with content (alert: p95 > 1s for 10m).",
            _quantiles("ryot.ttft.latency"),
            _unit("ryot.ttft.latency"),
            thresholds=[(1.0, "red")],
        ),
        _panel(
            "Time per output token p50 / p95 / p99",
            "(latency - TTFT) / (completion_tokens - 1), streams with at least two tokens "
            "(alert: p50 > 20ms, i.e. below 50 tokens/s, for 10m).",
            _quantiles("ryot.time_per_output_token"),
            _unit("ryot.time_per_output_token"),
        ),
        _panel(
            "Per-request decode speed p50 / p95",
            "Completion tokens / latency of each request.",
            _quantiles("ryot.tokens_per_second")[:2],
            _unit("ryot.tokens_per_second"),
        ),
    ]
    # Prompt tokens run at tens of thousands per second, completion tokens at hundreds: one axis would flatten the
    # completion curve, so each gets its own panel.
    tokens = [
        _panel(
            f"{token_type.capitalize()} tokens per second",
            f"{token_type.capitalize()} tokens per second from the providers' usage reports.",
            [(f'sum by (model) (rate({tok}{{{_MODEL},token_type="{token_type}"}}[{_RATE}]))', "{{model}}")],
            _rate_unit("ryot.tokens.generated"),
        )
        for token_type in ("prompt", "completion")
    ]
    tokens += [
        _panel(
            "Average batch size",
            "Prompts (or n) per request; engine steps (request_type=engine_step) are left out.",
            [
                (
                    f"sum by (model) (rate({_name(batch, '_sum')}{{{_MODEL},{_REQUESTS}}}[{_RATE}]))"
                    f" / sum by (model) (rate({_name(batch, '_count')}{{{_MODEL},{_REQUESTS}}}[{_RATE}]))",
                    "{{model}}",
                )
            ],
            "short",
        ),
        _panel(
            "Prompt cache hit ratio",
            "Cached prompt tokens / prompt tokens (engine-reported KV cache hit ratio when available).",
            [
                (
                    f"avg by (model, context_type) ({_name('ryot.kv_cache.hit_ratio')}{{{_MODEL}}})",
                    "{{model}} {{context_type}}",
                )
            ],
            "percentunit",  # catalogue unit 1: a fraction 0..1
            max_value=1,
        ),
        _panel(
            "Token efficiency",
            "Completion tokens per second (1m) per percent of GPU memory in use." + _NO_GPU,
            [(f"avg by (model) ({_name('ryot.token.efficiency_ratio')}{{{_MODEL}}})", "{{model}}")],
            "short",  # (tokens/s) per percent: a ratio of two different units, not a fraction
        ),
    ]
    capacity = [
        _panel(
            "Active requests",
            "Requests in flight.",
            [
                (
                    f"sum by (model, request_type) ({_name('ryot.active_inference_requests')}{{{_MODEL}}})",
                    "{{model}} {{request_type}}",
                )
            ],
            "short",
        ),
        _panel(
            "Queue depth",
            "Requests waiting for the engine (alert: > 100 for 5m).",
            [
                (
                    f"sum by (model, priority_level) ({_name('ryot.queue.depth')}{{{_MODEL}}})",
                    "{{model}} {{priority_level}}",
                )
            ],
            "short",
            thresholds=[(100, "red")],
        ),
        _panel(
            "Prompt length (tokens per request)",
            "Input length distribution from usage (powers-of-two buckets): p50, p95, p99 by model.",
            _quantiles("ryot.request.prompt_tokens"),
            "short",
        ),
        _panel(
            "Completion length (tokens per request)",
            "Output length distribution from usage (all choices): p50, p95, p99 by model.",
            _quantiles("ryot.request.completion_tokens"),
            "short",
        ),
        _panel(
            "Engine queue time",
            "Queue time the engine reports per request (vLLM); it rises before rejections begin.",
            _quantiles("ryot.engine.queue"),
            _unit("ryot.engine.queue"),
        ),
    ]
    gpu_legend = "{{instance}} GPU {{device_id}}"
    gpu = [
        _panel(
            "GPU memory used (%)",
            "Percent (0-100) of each GPU's memory in use (alert: > 85 for 5m)." + _NO_GPU,
            [(f"max by (instance, device_id) ({_name('ryot.gpu.memory.percentage')}{{{_TARGET}}})", gpu_legend)],
            _unit("ryot.gpu.memory.percentage"),
            thresholds=[(85, "red")],
            max_value=100,
        ),
        _panel(
            "GPU memory (bytes)",
            "Used and total memory per GPU, and what this process holds." + _NO_GPU,
            [
                (
                    f"max by (instance, device_id, memory_type) ({_name('ryot.gpu.memory.usage')}"
                    f'{{{_TARGET},memory_type=~"used|total|process"}})',
                    gpu_legend + " {{memory_type}}",
                )
            ],
            _unit("ryot.gpu.memory.usage"),
        ),
        _panel(
            "GPU utilisation (%)",
            "Compute utilisation over NVML's last sample period." + _NO_GPU,
            [(f"max by (instance, device_id) ({_name('ryot.gpu.utilization')}{{{_TARGET}}})", gpu_legend)],
            _unit("ryot.gpu.utilization"),
            max_value=100,
        ),
        _panel(
            "GPU power",
            "Power draw per GPU." + _NO_GPU,
            [(f"max by (instance, device_id) ({_name('ryot.gpu.power')}{{{_TARGET}}})", gpu_legend)],
            _unit("ryot.gpu.power"),
        ),
        _panel(
            "GPU temperature",
            "Core temperature per GPU." + _NO_GPU,
            [(f"max by (instance, device_id) ({_name('ryot.gpu.temperature')}{{{_TARGET}}})", gpu_legend)],
            _unit("ryot.gpu.temperature"),
        ),
    ]
    spend = [
        _panel(
            "Estimated cost (USD per hour)",
            "From the configured price table; empty when no price table is set.",
            [(f"sum by (model, token_type) (rate({cost}{{{_MODEL}}}[{_RATE}])) * 3600", "{{model}} {{token_type}}")],
            _unit("ryot.token.cost_estimate.usd"),
        ),
        _panel(
            "Estimated cost over the time range",
            "Total estimated spend in the selected time range.",
            [(f"sum by (model) (increase({cost}{{{_MODEL}}}[$__range]))", "{{model}}")],
            _unit("ryot.token.cost_estimate.usd"),
            kind="stat",
        ),
        *_tenant_panels(cost),
        _budget_panel(),
    ]
    return [
        ("Traffic and errors", traffic),
        ("SLOs", _slo_panels()),
        ("Latency", latency),
        ("Tokens and cache", tokens),
        ("Capacity", capacity),
        ("GPU", gpu),
        ("Cost", spend),
        ("Outcomes and engine time", _outcome_panels()),
        ("Providers", _provider_panels()),
        ("Telemetry health", [*_health_panels(), *_self_panels()]),
    ]


def build_dashboard() -> dict[str, Any]:
    """The dashboard model (Grafana schema 39): rows of panels, a Prometheus data source and a model variable."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for title, section in _sections():
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        panels[-1]["id"] = next_id
        next_id += 1
        y += 1
        for i, panel in enumerate(section):
            panel["id"] = next_id
            next_id += 1
            panel["gridPos"] = {"h": _HEIGHT, "w": _WIDTH, "x": (i % 2) * _WIDTH, "y": y + (i // 2) * _HEIGHT}
            panels.append(panel)
        y += ((len(section) + 1) // 2) * _HEIGHT
    req = _name("ryot.inference.requests")
    info = _name("ryot.service.info")  # exposed once by every ryot process, with or without traffic or GPUs
    return {
        "uid": DASHBOARD_UID,
        "title": "Ryot LLM inference",
        "description": "ryot-telemetry: requests, errors, latency, TTFT, TPOT, tokens, capacity, GPU and cost. "
        "Generated by ryot_telemetry.artifacts.dashboard from the metric catalogue; do not edit by hand.",
        "tags": ["ryot", "llm", "inference", "opentelemetry"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _query_variable("job", "Job", f"label_values({info}, job)"),
                _query_variable("instance", "Instance", f'label_values({info}{{job=~"$job"}}, instance)'),
                _query_variable("model", "Model", f"label_values({req}{{{_TARGET}}}, model)"),
                _query_variable(
                    catalogue.TENANT,
                    "Tenant",
                    f"label_values({_name('ryot.token.cost_estimate.usd')}{{{_MODEL}}}, tenant)",
                ),
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value template variable defaulting to All (``.*``), filled from ``query``."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": _DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }


def dashboard_json() -> str:
    """The dashboard as the committed file holds it: 2-space indented JSON and a final newline."""
    return json.dumps(build_dashboard(), indent=2) + "\n"


def write_dashboard(path: str | os.PathLike[str]) -> None:
    """Write the generated dashboard to ``path`` (e.g. ``collector/grafana/ryot-dashboard.json``)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(dashboard_json())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ryot_telemetry.artifacts.dashboard [PATH]``: write the dashboard to PATH (stdout without one)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m ryot_telemetry.artifacts.dashboard [PATH]", file=sys.stderr)
        return 2
    if not args or args[0] == "-":
        sys.stdout.write(dashboard_json())
    else:
        write_dashboard(args[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

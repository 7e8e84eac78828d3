"""The dashboard's building blocks: metric names and Grafana units from the catalogue, queries, panels, and the
panel groups of the later rows (health, self-metrics, tenants, SLOs, outcomes, budgets, providers).
``dashboard.py`` lays the rows out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import catalogue

_DS = {"type": "prometheus", "uid": "${datasource}"}
_TARGET = 'job=~"$job",instance=~"$instance"'  # every query: one replica or several, never mixed silently
_MODEL = _TARGET + ',model=~"$model"'
_TENANT = _MODEL + ',tenant=~"$tenant"'  # only on the tenant panels: errors, histograms and gauges have no tenant
_RATE = "$__rate_interval"
_REQUESTS = 'request_type!="engine_step"'
_NO_GPU = " Empty when no GPU was found (no NVML device, e.g. the demo on a laptop) or RYOT_TELEMETRY_GPU=false."
_WIDTH = 12  # two panels per row on Grafana's 24-column grid
_HEIGHT = 8

# Grafana unit ids for the catalogue's UCUM units (values, and rates of counters per second).
_TOKENS_PER_SECOND = "suffix: tokens/s"  # Grafana custom unit: Grafana has no tokens/s
_GRAFANA_UNIT = {
    "s": "s",
    "By": "bytes",
    "%": "percent",
    "{percent}": "percent",
    "W": "watt",
    "Cel": "celsius",
    "{USD}": "currencyUSD",
    "{token/s}": _TOKENS_PER_SECOND,
}
_GRAFANA_RATE_UNIT = {
    "{request}": "reqps",
    "{error}": "reqps",
    "{token}": _TOKENS_PER_SECOND,
    "{choice}": "suffix: choices/s",
}


def _name(otel_name: str, suffix: str = "") -> str:
    """The exposed Prometheus name of a catalogue metric, plus ``_bucket``/``_sum``/``_count`` for histograms."""
    spec = catalogue.get(otel_name)
    if suffix and spec.prometheus_type != "histogram":
        raise ValueError(f"{otel_name} is a {spec.prometheus_type}; {suffix} exists only on histograms")
    return spec.prometheus_name + suffix


def _unit(otel_name: str) -> str:
    return _GRAFANA_UNIT.get(catalogue.get(otel_name).unit, "short")


def _rate_unit(otel_name: str) -> str:
    """Grafana unit of ``rate()`` of a counter: its unit per second."""
    return _GRAFANA_RATE_UNIT.get(catalogue.get(otel_name).unit, "short")


def _target(expr: str, legend: str, ref: str, *, instant: bool = False) -> dict[str, Any]:
    if instant:  # one value over the dashboard's range (a stat), not a range query evaluated at every step
        return {"datasource": _DS, "expr": expr, "legendFormat": legend, "instant": True, "range": False, "refId": ref}
    return {"datasource": _DS, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


def _quantiles(otel_name: str, by: str = "model") -> list[tuple[str, str]]:
    bucket = _name(otel_name, "_bucket")
    return [
        (
            f"histogram_quantile({q}, sum by ({by}, le) (rate({bucket}{{{_MODEL}}}[{_RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _panel(
    title: str,
    description: str,
    queries: Sequence[tuple[str, str]],
    unit: str,
    *,
    kind: str = "timeseries",
    thresholds: Sequence[tuple[float, str]] = (),
    max_value: float | None = None,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": color, "value": value} for value, color in thresholds]
    defaults: dict[str, Any] = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if max_value is not None:
        defaults["min"] = 0
        defaults["max"] = max_value
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "fillOpacity": 10, "lineWidth": 1, "showPoints": "never"}
        if thresholds:
            defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": _DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [
            _target(expr, legend, chr(ord("A") + i), instant=kind == "stat") for i, (expr, legend) in enumerate(queries)
        ],
    }
    if kind == "timeseries":
        panel["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    return panel


def _health_panels() -> list[dict[str, Any]]:
    """When telemetry itself loses or lags, it says so (SPEC "Promises under faults"): the OTLP export's results."""
    exports = _name("ryot.telemetry.otlp.exports")
    unconfirmed = _name("ryot.telemetry.otlp.delta_increments_unconfirmed")
    return [
        _panel(
            "OTLP exports by result",
            "Exports per second: success; refused (the collector was unreachable or answered an error: nothing is "
            "lost, the next export carries the increments); unknown (timed out: with delta temporality its "
            "increments are not sent again). Empty without OTLP export.",
            [(f"sum by (result) (rate({exports}{{{_TARGET}}}[{_RATE}]))", "{{result}}")],
            "suffix: exports/s",
        ),
        _panel(
            "Delta increments unconfirmed",
            "Delta temporality only: data points whose increments went out in an export with an unknown outcome over "
            "the time range. The collector may lack them (they are never sent twice); above 0, check the collector's "
            "latency against OTEL_EXPORTER_OTLP_TIMEOUT.",
            [(f"sum(increase({unconfirmed}{{{_TARGET}}}[$__range]))", "unconfirmed")],
            "short",
            kind="stat",
            thresholds=[(1, "orange")],
        ),
    ]


def _self_panels() -> list[dict[str, Any]]:
    """Telemetry's own queue (SPEC "Promises under faults"): requests it dropped, and how far recording lags."""
    dropped = "ryot.telemetry.queue.dropped_requests"
    age = "ryot.telemetry.queue.oldest_age"
    age_buckets = f"{_name(age, '_bucket')}{{{_TARGET}}}"
    return [
        _panel(
            "Requests dropped by telemetry",
            "Finished requests dropped unrecorded because telemetry's queue was full; any is an alert "
            "(RyotTelemetryDropsData).",
            [(f"sum by (instance) (rate({_name(dropped)}{{{_TARGET}}}[{_RATE}]))", "{{instance}}")],
            _rate_unit(dropped),
        ),
        _panel(
            "Recording lag (oldest queued request, p99)",
            "Age of the oldest queued request at each drain: how far the recorded metrics lag behind the requests.",
            [
                (
                    f"histogram_quantile(0.99, sum by (instance, le) (rate({age_buckets}[{_RATE}])))",
                    "{{instance}}",
                )
            ],
            _unit(age),
        ),
    ]


def _tenant_panels(cost: str) -> list[dict[str, Any]]:
    """Cost by tenant, for chargeback: needs the opt-in tenant label (``RYOT_TELEMETRY_TENANT``); without it each
    panel shows one series with an empty tenant."""
    by = f"sum by ({catalogue.TENANT})"
    note = " Needs the opt-in tenant label (RYOT_TELEMETRY_TENANT); __overflow__ past max_tenants."
    return [
        _panel(
            "Cost by tenant (USD per hour)",
            "Estimated spend per tenant, all token types." + note,
            [(f"{by} (rate({cost}{{{_TENANT}}}[{_RATE}])) * 3600", "{{tenant}}")],
            _unit("ryot.token.cost_estimate.usd"),
        ),
        _panel(
            "Cost by tenant over the time range",
            "Total estimated spend per tenant in the selected time range: the chargeback figure." + note,
            [(f"{by} (increase({cost}{{{_TENANT}}}[$__range]))", "{{tenant}}")],
            _unit("ryot.token.cost_estimate.usd"),
            kind="stat",
        ),
    ]


def _slo_panels() -> list[dict[str, Any]]:
    """Goodput, budget left and burn rates from ``ryot_slo_requests_total`` (present when an SLO table is set).

    The target lives in the SLO table, so budget and burn rate read ``ryot:slo:target`` from the generated rules
    (``ryot-telemetry slo-rules``); goodput and misses need no rules.
    """
    from .slo_rules import BURN_ALERTS, SLO_PERIOD, WINDOWS

    slo = _name("ryot.slo.requests")
    # ryot:slo:target is recorded by model only (no job/instance): select it by model alone
    budget = 'on (model) (1 - ryot:slo:target{model=~"$model"})'

    def missed_ratio(window: str, fn: str = "rate") -> str:
        return (
            f'sum by (model) ({fn}({slo}{{result="missed",{_MODEL}}}[{window}]))'
            f" / sum by (model) ({fn}({slo}{{{_MODEL}}}[{window}]))"
        )

    burns = sorted({b for _, _, _, pairs in BURN_ALERTS for b, _, _ in pairs})
    colors = ("yellow", "orange", "red", "dark-red")
    remaining = _panel(
        f"Error budget remaining ({SLO_PERIOD})",
        f"1 - (missed share over {SLO_PERIOD}) / (1 - target): 100% = untouched, 0% = spent, negative = "
        "overspent. The target comes from the generated SLO rules (ryot:slo:target).",
        [(f"1 - ({missed_ratio(SLO_PERIOD, 'increase')}) / {budget}", "{{model}}")],
        "percentunit",
        kind="stat",
        thresholds=[(0, "orange"), (0.25, "yellow"), (0.5, "green")],
    )
    remaining["fieldConfig"]["defaults"]["thresholds"]["steps"][0]["color"] = "red"  # below 0: overspent
    return [
        _panel(
            "Goodput by model",
            "Share of finished requests that met every objective of their model's SLO (streams: TTFT, TPOT, "
            "latency; others: latency); errors and timeouts count as missed, abandoned streams not at all.",
            [
                (
                    f'sum by (model) (rate({slo}{{result="met",{_MODEL}}}[{_RATE}]))'
                    f" / sum by (model) (rate({slo}{{{_MODEL}}}[{_RATE}]))",
                    "{{model}}",
                )
            ],
            "percentunit",
            max_value=1,
        ),
        remaining,
        _panel(
            "Burn rate by window",
            "Missed share over each alert window divided by the error budget: 1 spends the budget in exactly "
            f"{SLO_PERIOD}. Pages at 14.4x (1h and 5m) or 6x (6h and 30m); tickets at 3x (1d and 2h) or 1x "
            "(3d and 6h).",
            [(f"({missed_ratio(w)}) / {budget}", f"{{{{model}}}} {w}") for w in WINDOWS],
            "suffix:x",
            kind="stat",
            thresholds=list(zip(burns, colors)),
        ),
        _panel(
            "SLO misses by objective",
            "Requests per second that missed their SLO, by the first objective missed: error, ttft, tpot, latency.",
            [(f'sum by (objective) (rate({slo}{{result="missed",{_MODEL}}}[{_RATE}]))', "{{objective}}")],
            "reqps",
        ),
    ]


def _outcome_panels() -> list[dict[str, Any]]:
    """Where TTFT goes, why answers end, and how much of the token count is estimated (SPEC "Outcomes, token detail
    and where the time goes"); the engine-time panels stay empty for engines that report no timings."""

    def mean(otel_name: str) -> str:
        return (
            f"sum(rate({_name(otel_name, '_sum')}{{{_MODEL}}}[{_RATE}]))"
            f" / sum(rate({_name(otel_name, '_count')}{{{_MODEL}}}[{_RATE}]))"
        )

    where = _panel(
        "Where TTFT goes",
        "Mean time to first token, stacked: the engine's own prefill (llama.cpp timings, vLLM per-request metrics) "
        "and what the network, the router and the engine's HTTP front end add before the first token. A tall "
        "outside band points at the gateway, a tall prefill band at the accelerator.",
        [
            (mean("ryot.engine.prefill"), "engine prefill"),
            (mean("ryot.ttft.outside_engine"), "outside the engine"),
        ],
        _unit("ryot.engine.prefill"),
    )
    where["fieldConfig"]["defaults"]["custom"]["stacking"] = {"mode": "normal", "group": "A"}
    where["fieldConfig"]["defaults"]["custom"]["fillOpacity"] = 40
    fin = _name("ryot.finish_reasons")
    tok, est = _name("ryot.tokens.generated"), _name("ryot.estimated_tokens")
    return [
        where,
        _panel(
            "Engine decode time per output token p50 / p95",
            "The engine's own decode time per token; against the router's TPOT it shows what streaming through the "
            "router adds per token.",
            _quantiles("ryot.engine.time_per_output_token")[:2],
            _unit("ryot.engine.time_per_output_token"),
        ),
        _panel(
            "Finish reasons",
            "Choices per second by why they ended: stop, length (cut off by max_tokens), tool_calls, "
            "content_filter, other, abort (the client hung up).",
            [(f"sum by (finish_reason) (rate({fin}{{{_MODEL}}}[{_RATE}]))", "{{finish_reason}}")],
            _rate_unit("ryot.finish_reasons"),
        ),
        _panel(
            "Completion tokens: usage vs estimated",
            "Tokens per second from usage reports, and estimated ones (content chunks of streams that ended without "
            "usage: hang-ups, broken streams). Their sum is what the engine generated; estimates are never priced.",
            [
                (f'sum(rate({tok}{{{_MODEL},token_type="completion"}}[{_RATE}]))', "usage"),
                (f'sum(rate({est}{{{_MODEL},token_type="completion"}}[{_RATE}]))', "estimated"),
            ],
            _rate_unit("ryot.estimated_tokens"),
        ),
    ]


def _budget_panel() -> dict[str, Any]:
    """Spend against budget, from the rules ``ryot-telemetry budget-rules`` writes for a budget table (the budgets
    exist only there); empty without them. Budgets are per tenant or model over all replicas: no job filter."""
    who = "{{scope}} {{tenant}}{{model}} ({{window}})"
    return _panel(
        "Spend against budget",
        "Estimated spend over each budget's rolling window as a share of the budget (alerts at 80% and 100%), and "
        "the share a whole window at the last 6h's burn would spend (alert: above 100% for 1h). Needs the rules "
        "of ryot-telemetry budget-rules.",
        [
            ("ryot:budget_spend:ratio", f"spent {who}"),
            ("ryot:budget_burn:ratio", f"projected {who}"),
        ],
        "percentunit",
        thresholds=[(0.8, "orange"), (1.0, "red")],
    )


def _by_provider(expr: str) -> str:
    """``expr`` (a rate of a family with a model label) given each model's provider: joined with
    ``ryot_model_info`` of the process that exposed it (each replica has its own, so the join is on job, instance
    and model; on model alone, a model served by two replicas would match two info series)."""
    info = _name("ryot.model.info")
    return f"{expr} * on (job, instance, model) group_left (provider) {info}{{{_MODEL}}}"


def _provider_panels() -> list[dict[str, Any]]:
    """Per upstream provider (SPEC "Providers and failure modes"): the request families carry no provider label,
    so every panel joins them with ``ryot_model_info``. Models without an info series (__overflow__) are left out."""
    req, err = _name("ryot.inference.requests"), _name("ryot.inference.errors")
    requests = f"sum by (provider) ({_by_provider(f'rate({req}{{{_MODEL}}}[{_RATE}])')})"

    def errors(selector: str = "") -> str:
        return _by_provider(f"rate({err}{{{_MODEL}{selector}}}[{_RATE}])")

    def quantiles(otel_name: str) -> list[tuple[str, str]]:
        rate = _by_provider(f"rate({_name(otel_name, '_bucket')}{{{_MODEL}}}[{_RATE}])")
        return [
            (f"histogram_quantile({q}, sum by (provider, le) ({rate}))", f"p{round(q * 100)} {{{{provider}}}}")
            for q in (0.5, 0.95)
        ]

    limited, legend = errors(',error_type="rate_limited"'), "{{provider}} {{error_type}}"
    return [
        _panel(
            "Failed request ratio by provider and type",
            "Share of each provider's requests that failed, by error_type: unavailable (down or unreachable: "
            "alert > 10% for 2m), unauthorized (credentials rejected: alert on any for 1m), rate_limited (alert "
            "> 5% for 10m), and the rest.",
            [(f"sum by (provider, error_type) ({errors()}) / on (provider) group_left {requests}", legend)],
            "percentunit",
            thresholds=[(0.05, "red")],
        ),
        _panel(
            "Rate-limit saturation by provider",
            "Share of each provider's requests it turned away with HTTP 429 (rate_limited): its quota is saturated "
            "(alert: > 5% for 10m).",
            [(f"sum by (provider) ({limited}) / {requests}", "{{provider}}")],
            "percentunit",
            thresholds=[(0.05, "red")],
        ),
        _panel(
            "Time to first token by provider p50 / p95",
            "Streams only, by the provider of the model that served them.",
            quantiles("ryot.ttft.latency"),
            _unit("ryot.ttft.latency"),
        ),
        _panel(
            "End-to-end latency by provider p50 / p95",
            "By the provider of the model that served the request.",
            quantiles("ryot.inference.latency"),
            _unit("ryot.inference.latency"),
        ),
        _panel(
            "Request rate by provider",
            "Finished requests per second, by the provider of the requested model (ryot_model_info).",
            [(requests, "{{provider}}")],
            _rate_unit("ryot.inference.requests"),
        ),
    ]

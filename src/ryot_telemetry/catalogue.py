"""The metric catalogue: every Ryot metric declared once, as data.

Instruments, Views, the docs' metric table, the Grafana dashboard and the conformance tests are all derived from
``CATALOGUE``; nothing else in the package spells a metric name, a unit or a bucket list.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

# The exporter's own name/unit translation, so the catalogue predicts exactly what a scrape shows.
from ._compat import map_unit, sanitize_full_name

__all__ = [
    "BY_NAME",
    "BY_PROMETHEUS_NAME",
    "CATALOGUE",
    "LIVE_SUM",
    "METER_NAME",
    "REPLACEMENT",
    "UNENCODABLE",
    "Instrument",
    "MetricSpec",
    "MultiProcess",
    "first_unencodable",
    "get",
    "markdown_table",
    "resolve_buckets",
    "validate_buckets",
]


class Instrument(str, Enum):
    """The OTel instrument each metric is created as."""

    COUNTER = "counter"
    UP_DOWN_COUNTER = "up_down_counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"  # synchronous Gauge: the value is set by the application
    OBSERVABLE_GAUGE = "observable_gauge"  # read by a callback at collection time
    OBSERVABLE_UP_DOWN_COUNTER = "observable_up_down_counter"
    OBSERVABLE_COUNTER = "observable_counter"  # a monotonic total read by a callback (NVML's energy, ECC counts)


class MultiProcess(str, Enum):
    """How multi-process mode merges one metric over the workers' files (``multiproc/directory.py``)."""

    BY_KIND = "by_kind"
    """Counters and histograms summed over live and dead workers, up-down counters over live workers, gauges from
    the most recent live writer."""
    LIVE_SUM = "live_sum"
    """Summed over live workers (a level each worker holds a part of); a dead worker's series disappear."""


LIVE_SUM = MultiProcess.LIVE_SUM


# Prometheus type of each instrument, as the OTel Prometheus exporter exposes it.
_PROM_TYPE = {
    Instrument.COUNTER: "counter",
    Instrument.UP_DOWN_COUNTER: "gauge",
    Instrument.HISTOGRAM: "histogram",
    Instrument.GAUGE: "gauge",
    Instrument.OBSERVABLE_GAUGE: "gauge",
    Instrument.OBSERVABLE_UP_DOWN_COUNTER: "gauge",
    Instrument.OBSERVABLE_COUNTER: "counter",
}


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what the SPEC table says about it, in OTel terms."""

    name: str  # dotted OTel instrument name
    instrument: Instrument
    unit: str  # UCUM; chosen so the Prometheus exporter and a Collector both produce exactly ``prometheus_name``
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None = None
    optional_labels: tuple[str, ...] = ()  # present only on some series (error_type, GPU ``model``)
    source: str = "router"  # who records it: router, engine, gpu, derived, service
    label_values: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    opt_in_labels: tuple[str, ...] = ()  # present only when configured, then on every series (``tenant``)
    multiprocess: MultiProcess = MultiProcess.BY_KIND  # how multi-process mode merges the workers' series

    @property
    def prometheus_type(self) -> str:
        return _PROM_TYPE[self.instrument]

    @property
    def prometheus_name(self) -> str:
        """The exposed family name, as the OTel Prometheus exporter derives it from name and unit."""
        base = sanitize_full_name(self.name)
        suffix = map_unit(self.unit)
        if suffix and not base.endswith("_" + suffix):
            base += "_" + suffix
        if self.prometheus_type == "counter":
            base += "_total"
        return base

    @property
    def all_labels(self) -> tuple[str, ...]:
        """Every label key a series may carry, in the order the recorder's attribute keys list their values."""
        return self.labels + self.optional_labels + self.opt_in_labels


_LAT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TTFT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_TPOT = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
_LOAD = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_STARTUP = (1.0, 5.0, 10.0, 30.0, 60.0)
_BATCH = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
_TPS = (10.0, 25.0, 50.0, 100.0, 150.0, 250.0, 400.0, 600.0)
_LENGTH = tuple(float(2**k) for k in range(4, 18))  # 16 ... 131072 tokens
_QUEUE_AGE = (0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0)
_RATIO = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

METER_NAME = "ryot_telemetry"
"""Instrumentation scope (meter) name of every ryot instrument and View."""

# Label vocabularies. Code spells a label value through these names (a typo is then a NameError, not a new
# series), and ``label_values`` below is built from them.
ENDPOINTS = ("chat_completion", "completion")
CHAT_COMPLETION, COMPLETION = ENDPOINTS
MODES = ("standard", "streaming", "batch")
STANDARD, STREAMING, BATCH = MODES
ENGINE_STEP = "engine_step"
STATUSES = ("success", "error", "timeout", "partial")
SUCCESS, ERROR, TIMEOUT, PARTIAL = STATUSES  # TIMEOUT is also an error_type: the SPEC uses one word for both
ERROR_TYPES = (
    "oom",
    "timeout",
    "cuda_error",
    "invalid_prompt",
    "model_not_found",
    "tokenization_error",
    "inference_error",
    "rate_limited",
    "unauthorized",
    "unavailable",
    "context_length_exceeded",
    "content_filtered",
)
"""The design's seven types (which keep their meaning), then the upstream provider's failure modes: rate limited
(HTTP 429), credentials refused (401/403), upstream down or unreachable (502/503, connection refused or reset, DNS
failure), a prompt over the context window, a refusal by a content filter."""
(
    OOM,
    _,
    CUDA_ERROR,
    INVALID_PROMPT,
    MODEL_NOT_FOUND,
    TOKENIZATION_ERROR,
    INFERENCE_ERROR,
    RATE_LIMITED,
    UNAUTHORIZED,
    UNAVAILABLE,
    CONTEXT_LENGTH_EXCEEDED,
    CONTENT_FILTERED,
) = ERROR_TYPES
SEVERITIES = ("critical", "warning", "info")
CRITICAL, WARNING, INFO = SEVERITIES
TOKEN_TYPES = ("prompt", "completion")
PROMPT_TOKENS, COMPLETION_TOKENS = TOKEN_TYPES
TIME_WINDOWS = ("1m", "5m", "15m")
CONTEXT_TYPES = ("conversation", "batch", "streaming")
CONVERSATION = CONTEXT_TYPES[0]
BATCH_SIZE_LABELS = ("1", "2-4", "5-8", "9-16", "17-32", "33+")
PROMPT_SIZES = ("tiny", "small", "medium", "large", "xlarge")
LOAD_TYPES = ("cold_start", "warm_start", "cache_hit")  # of the loading-time histogram
LOAD_ATTEMPT_TYPES = ("cold", "warm", "from_cache")  # the same three, as the SPEC names them on the attempts counter
LOAD_RESULTS = ("success", "failed", "partial")
LOAD_SUCCESS, LOAD_FAILED, LOAD_PARTIAL = LOAD_RESULTS
NVML_MEMORY_TYPES = ("used", "free", "total", "process")
BREAKDOWN_MEMORY_TYPES = ("model_weights", "kv_cache", "activations")
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "other", "abort")
"""Why a choice ended: the provider's ``finish_reason`` (anything unknown is ``other``), or ``abort`` for a request
the client abandoned."""
STOP, LENGTH, TOOL_CALLS, CONTENT_FILTER, OTHER_FINISH, ABORT = FINISH_REASONS
CACHED_PROMPT_TOKENS = "cached_prompt"
COST_TOKEN_TYPES = (*TOKEN_TYPES, CACHED_PROMPT_TOKENS)  # the cost counter prices the cached part on its own
TENANT = "tenant"
"""The opt-in label of the request, token, cost and SLO counters (``configure(tenant=...)``); never on histograms
or gauges."""
_GPU = ("device_id",)
GPU_CLOCK_DOMAINS = ("sm", "memory")
"""Clock domains of ``ryot.gpu.clock`` (NVML_CLOCK_SM, NVML_CLOCK_MEM)."""
GPU_THROTTLE_REASONS = (
    "gpu_idle",
    "applications_clocks_setting",
    "sw_power_cap",
    "hw_slowdown",
    "sync_boost",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
    "display_clock_setting",
    "board_limit",
    "reliability",
)
"""NVML's clock event (throttle) reasons, in bit order: bit i of the reasons mask is ``GPU_THROTTLE_REASONS[i]``."""
ECC_ERROR_TYPES = ("corrected", "uncorrected")  # NVML_MEMORY_ERROR_TYPE_CORRECTED, _UNCORRECTED
ECC_COUNTERS = ("volatile", "aggregate")  # NVML_VOLATILE_ECC (since driver load), NVML_AGGREGATE_ECC (lifetime)

CATALOGUE: tuple[MetricSpec, ...] = (
    # --- counters -------------------------------------------------------------------------------------------------
    MetricSpec(
        "ryot.inference.requests",
        Instrument.COUNTER,
        "{request}",
        "Inference requests by outcome (success, error, timeout, partial stream).",
        ("model", "endpoint", "status"),
        optional_labels=("error_type",),
        label_values={
            "endpoint": ENDPOINTS,
            "status": STATUSES,
            "error_type": ERROR_TYPES,
        },
        opt_in_labels=(TENANT,),
    ),
    MetricSpec(
        "ryot.inference.errors",
        Instrument.COUNTER,
        "{error}",
        "Inference errors by type and severity.",
        ("model", "error_type", "severity"),
        label_values={"error_type": ERROR_TYPES, "severity": SEVERITIES},
    ),
    MetricSpec(
        "ryot.tokens.generated",
        Instrument.COUNTER,
        "{token}",
        "Prompt and completion tokens from the provider's usage report.",
        ("model", "token_type", "generation_mode"),
        label_values={"token_type": TOKEN_TYPES, "generation_mode": MODES},
        opt_in_labels=(TENANT,),
    ),
    MetricSpec(
        "ryot.model.load_attempts",
        Instrument.COUNTER,
        "{attempt}",
        "Model load attempts by result and load type.",
        ("model", "result", "load_type"),
        source="engine",
        label_values={"result": LOAD_RESULTS, "load_type": LOAD_ATTEMPT_TYPES},
    ),
    MetricSpec(
        "ryot.model.cache_evictions",
        Instrument.COUNTER,
        "{eviction}",
        "Models evicted from the accelerator's memory, by reason.",
        ("model", "eviction_reason"),
        source="engine",
        label_values={"eviction_reason": ("memory_pressure", "timeout", "manual")},
    ),
    MetricSpec(
        "ryot.token.cost_estimate.usd",
        Instrument.COUNTER,
        "{USD}",
        "Estimated token cost in US dollars from the configured price table.",
        ("model", "token_type"),
        source="router",
        label_values={"token_type": COST_TOKEN_TYPES},
        opt_in_labels=(TENANT,),
    ),
    MetricSpec(
        "ryot.slo.requests",
        Instrument.COUNTER,
        "{request}",
        "Finished requests judged against their model's SLO table entry (goodput); abandoned streams not counted.",
        ("model", "result"),
        optional_labels=("objective",),  # on missed series only: the first objective missed
        label_values={"result": ("met", "missed"), "objective": ("error", "ttft", "tpot", "latency")},
        opt_in_labels=(TENANT,),
    ),
    MetricSpec(
        "ryot.finish_reasons",
        Instrument.COUNTER,
        "{choice}",
        "Choices by why they ended: the provider's finish_reason (length: cut off by max_tokens), abort when the "
        "client abandoned the request; failed requests count none.",
        ("model", "endpoint", "finish_reason"),
        label_values={"endpoint": ENDPOINTS, "finish_reason": FINISH_REASONS},
    ),
    MetricSpec(
        "ryot.cached_prompt_tokens",
        Instrument.COUNTER,
        "{token}",
        "Prompt tokens served from the prompt cache (usage.prompt_tokens_details.cached_tokens); part of the prompt "
        "tokens, not added to them.",
        ("model", "generation_mode"),
        label_values={"generation_mode": MODES},
    ),
    MetricSpec(
        "ryot.reasoning_tokens",
        Instrument.COUNTER,
        "{token}",
        "Reasoning tokens (usage.completion_tokens_details.reasoning_tokens); part of the completion tokens, not "
        "added to them.",
        ("model", "generation_mode"),
        label_values={"generation_mode": MODES},
    ),
    MetricSpec(
        "ryot.estimated_tokens",
        Instrument.COUNTER,
        "{token}",
        "Tokens of streams that delivered content and ended without usage (client hang-up, broken stream): "
        "completion = content chunks delivered, prompt = request characters / 4. Never priced.",
        ("model", "token_type"),
        label_values={"token_type": TOKEN_TYPES},
    ),
    # --- histograms -----------------------------------------------------------------------------------------------
    MetricSpec(
        "ryot.inference.latency",
        Instrument.HISTOGRAM,
        "s",
        "End-to-end inference latency, from the call entering the wrapper to its last byte or error.",
        ("model", "batch_size", "generation_mode"),
        buckets=_LAT,
        label_values={"batch_size": BATCH_SIZE_LABELS, "generation_mode": MODES},
    ),
    MetricSpec(
        "ryot.ttft.latency",
        Instrument.HISTOGRAM,
        "s",
        "Time to first content token of a stream.",
        ("model", "prompt_size"),
        buckets=_TTFT,
        label_values={"prompt_size": PROMPT_SIZES},
    ),
    MetricSpec(
        "ryot.time_per_output_token",
        Instrument.HISTOGRAM,
        "s",
        "Mean time per output token after the first, per stream: (latency - ttft) / (completion_tokens - 1).",
        ("model",),
        buckets=_TPOT,
    ),
    MetricSpec(
        "ryot.model.loading_time",
        Instrument.HISTOGRAM,
        "s",
        "Time to load a model until it is ready to serve.",
        ("model", "load_type", "device_type"),
        buckets=_LOAD,
        source="engine",
        label_values={"load_type": LOAD_TYPES},
    ),
    MetricSpec(
        "ryot.initialization.startup_time",
        Instrument.HISTOGRAM,
        "s",
        "Duration of each service start-up phase.",
        ("startup_phase",),
        buckets=_STARTUP,
        source="engine",
        label_values={"startup_phase": ("model_load", "cache_init", "warmup", "ready")},
    ),
    MetricSpec(
        "ryot.batch_size.distribution",
        Instrument.HISTOGRAM,
        "{request}",
        "Batch sizes: prompts (or n) per request, or sequences per engine step (request_type=engine_step).",
        ("model", "request_type"),
        buckets=_BATCH,
        label_values={"request_type": (*MODES, ENGINE_STEP)},
    ),
    MetricSpec(
        "ryot.tokens_per_second",
        Instrument.HISTOGRAM,
        # Not "{token}/s": a Collector names that ryot_tokens_per_second_per_second (otlptranslator compares the
        # per unit as one token with the name's tokens); as one annotation both paths expose the same name.
        "{token/s}",
        "Completion tokens per second of each request (completion_tokens / latency).",
        ("model",),
        buckets=_TPS,
    ),
    MetricSpec(
        "ryot.prompt_cache.effectiveness",
        Instrument.HISTOGRAM,
        "1",
        "Fraction of prompt tokens served from the prompt cache (cached_tokens / prompt_tokens).",
        ("model",),
        buckets=_RATIO,
    ),
    MetricSpec(
        "ryot.engine.prefill",
        Instrument.HISTOGRAM,
        "s",
        "Prompt processing time the engine reports per request (llama.cpp timings.prompt_ms, vLLM "
        "metrics.time_to_first_token_ms).",
        ("model",),
        buckets=_TTFT,
    ),
    MetricSpec(
        "ryot.engine.time_per_output_token",
        Instrument.HISTOGRAM,
        "s",
        "Decode time per output token the engine reports per request (llama.cpp timings.predicted_per_token_ms, "
        "vLLM metrics.mean_itl_ms).",
        ("model",),
        buckets=_TPOT,
    ),
    MetricSpec(
        "ryot.ttft.outside_engine",
        Instrument.HISTOGRAM,
        "s",
        "TTFT minus the engine's reported queue and prefill time, clamped at 0: what the network, the router and "
        "the engine's HTTP front end add before the first token.",
        ("model",),
        buckets=_TTFT,
    ),
    # --- gauges ---------------------------------------------------------------------------------------------------
    MetricSpec(
        "ryot.active_inference_requests",
        Instrument.OBSERVABLE_UP_DOWN_COUNTER,
        "{request}",
        "Requests in flight.",
        ("model", "request_type", "endpoint"),
        label_values={"request_type": MODES, "endpoint": ENDPOINTS},
        multiprocess=LIVE_SUM,
    ),
    MetricSpec(
        "ryot.queue.depth",
        Instrument.OBSERVABLE_GAUGE,
        "{request}",
        "Requests waiting for the engine.",
        ("model", "priority_level"),
        source="engine",
        label_values={"priority_level": ("high", "normal", "low")},
    ),
    MetricSpec(
        "ryot.sliding_tokens_per_second",
        Instrument.OBSERVABLE_GAUGE,
        "{token/s}",
        "Completion tokens per second over a sliding window.",
        ("model", "time_window"),
        source="derived",
        label_values={"time_window": TIME_WINDOWS},
        multiprocess=LIVE_SUM,  # each worker's window holds its own requests' tokens
    ),
    MetricSpec(
        "ryot.kv_cache.hit_ratio",
        Instrument.OBSERVABLE_GAUGE,
        "1",
        "KV/prompt cache hit ratio: engine-reported, else cached/prompt tokens over the last 5 minutes.",
        ("model", "context_type"),
        source="derived",
        label_values={"context_type": CONTEXT_TYPES},
    ),
    MetricSpec(
        "ryot.kv_cache.size",
        Instrument.OBSERVABLE_GAUGE,
        "By",
        "KV cache memory in use.",
        ("model", "context_length", "batch_size"),
        source="engine",
    ),
    MetricSpec(
        "ryot.token.efficiency_ratio",
        Instrument.OBSERVABLE_GAUGE,
        "1",
        "Completion tokens per second (1m window) per percent of GPU memory in use.",
        ("model",),
        source="derived",
    ),
    MetricSpec(
        "ryot.gpu.memory.usage",
        Instrument.OBSERVABLE_GAUGE,
        "By",
        "GPU memory from NVML (used, free, total, this process) and engine-reported breakdowns.",
        (*_GPU, "memory_type"),
        optional_labels=("model",),
        source="gpu",
        label_values={"memory_type": (*NVML_MEMORY_TYPES, *BREAKDOWN_MEMORY_TYPES)},
    ),
    MetricSpec(
        "ryot.gpu.memory.percentage",
        Instrument.OBSERVABLE_GAUGE,
        "{percent}",
        "GPU memory used, in percent of total.",
        _GPU,
        optional_labels=("model",),
        source="gpu",
    ),
    MetricSpec(
        "ryot.gpu.utilization",
        Instrument.OBSERVABLE_GAUGE,
        "%",
        "GPU compute utilisation over NVML's last sample period.",
        _GPU,
        optional_labels=("model",),
        source="gpu",
    ),
    MetricSpec(
        "ryot.gpu.power",
        Instrument.OBSERVABLE_GAUGE,
        "W",
        "GPU power draw.",
        _GPU,
        optional_labels=("model",),
        source="gpu",
    ),
    MetricSpec(
        "ryot.gpu.temperature",
        Instrument.OBSERVABLE_GAUGE,
        "Cel",
        "GPU core temperature.",
        _GPU,
        optional_labels=("model",),
        source="gpu",
    ),
    MetricSpec(
        "ryot.service.info",
        Instrument.OBSERVABLE_GAUGE,
        "",  # not "1": a collector's Prometheus exporter would append _ratio to a gauge with unit 1
        "Always 1; labels carry the service's version and identity.",
        ("version", "service", "component"),
        source="service",
    ),
    # --- GPU depth (opt-in: gpu_detail / RYOT_TELEMETRY_GPU_DETAIL). The installed semconv package defines no
    # hw.gpu.* names for clocks, energy, throttling or ECC (only the generic hw.energy / hw.errors, keyed by
    # hw.id / hw.type), so these are ryot names beside the other ryot.gpu.* gauges.
    MetricSpec(
        "ryot.gpu.clock",
        Instrument.OBSERVABLE_GAUGE,
        "Hz",
        "Current GPU clock frequency by domain (SM, memory), from NVML.",
        (*_GPU, "clock_domain"),
        optional_labels=("model",),
        source="gpu",
        label_values={"clock_domain": GPU_CLOCK_DOMAINS},
    ),
    MetricSpec(
        "ryot.gpu.energy",
        Instrument.OBSERVABLE_COUNTER,
        "J",
        "GPU energy consumed since telemetry started (NVML's total energy counter minus its first reading).",
        _GPU,
        optional_labels=("model",),
        source="gpu",
    ),
    MetricSpec(
        "ryot.gpu.throttle",
        Instrument.OBSERVABLE_GAUGE,
        "",  # a 0/1 state: no unit, so no _ratio suffix
        "1 while NVML reports this clock throttle reason active, else 0; reasons the device does not support are "
        "absent.",
        (*_GPU, "throttle_reason"),
        optional_labels=("model",),
        source="gpu",
        label_values={"throttle_reason": GPU_THROTTLE_REASONS},
    ),
    MetricSpec(
        "ryot.gpu.ecc.errors",
        Instrument.OBSERVABLE_COUNTER,
        "{error}",
        "GPU memory ECC errors from NVML: volatile (since the driver loaded) and aggregate (lifetime), corrected and "
        "uncorrected.",
        (*_GPU, "ecc_error_type", "ecc_counter"),
        optional_labels=("model",),
        source="gpu",
        label_values={"ecc_error_type": ECC_ERROR_TYPES, "ecc_counter": ECC_COUNTERS},
    ),
    MetricSpec(
        "ryot.model.info",
        Instrument.OBSERVABLE_GAUGE,
        "",  # not "1", as ryot.service.info
        "Always 1, one series per model holding a label slot: the upstream provider the router's routing table "
        "(or the configured provider callable) names for it. Join per provider: "
        "* on(model) group_left(provider) ryot_model_info.",
        ("model", "provider", "provider_type", "provider_model_id"),
        source="router",
    ),
    MetricSpec(
        "ryot.telemetry.otlp.exports",
        Instrument.COUNTER,
        "{export}",
        "OTLP exports by result: success, refused (certainly not delivered: its increments go with the next "
        "export) or unknown (timed out: not sent again).",
        ("result",),
        source="telemetry",
        label_values={"result": ("success", "refused", "unknown")},
    ),
    MetricSpec(
        "ryot.telemetry.otlp.delta_increments_unconfirmed",
        Instrument.COUNTER,
        "{point}",
        "Delta temporality: data points with increments sent in an export whose outcome is unknown (timed out); "
        "they are not sent again, so the collector may lack them.",
        (),
        source="telemetry",
    ),
    # Telemetry about telemetry (SPEC "Promises under faults"): always on, no labels, one series each.
    MetricSpec(
        "ryot.telemetry.queue.dropped_requests",
        Instrument.COUNTER,
        "{request}",
        "Finished requests telemetry dropped unrecorded because its queue was full (past max_pending) and recording "
        "the oldest ones inline failed; their counts are lost. Exported at 0 from the start.",
        (),
        source="service",
    ),
    MetricSpec(
        "ryot.telemetry.queue.oldest_age",
        Instrument.HISTOGRAM,
        "s",
        "Age of the oldest queued request at each drain that found the queue non-empty (background drainer and "
        "collections): how far recording lags behind the requests. A histogram rather than a gauge: a gauge would "
        "show only the last drain before a scrape (right after the scrape's own drain), hiding the lag spikes "
        "between scrapes that the high buckets keep.",
        (),
        buckets=_QUEUE_AGE,
        source="service",
    ),
    # SPEC "Capacity and scaling": input/output lengths and the engine's own queue time.
    MetricSpec(
        "ryot.request.prompt_tokens",
        Instrument.HISTOGRAM,
        "{token}",
        "Prompt tokens per request, from usage only (never estimated): the input length distribution.",
        ("model",),
        buckets=_LENGTH,
    ),
    MetricSpec(
        "ryot.request.completion_tokens",
        Instrument.HISTOGRAM,
        "{token}",
        "Completion tokens per request (all choices), from usage only: the output length distribution.",
        ("model",),
        buckets=_LENGTH,
    ),
    MetricSpec(
        "ryot.engine.queue",
        Instrument.HISTOGRAM,
        "s",
        "Queue time the engine reports per request (vLLM metrics.queue_time_ms), when the response carries one; "
        "nothing is recorded for an engine that reports none.",
        ("model",),
        buckets=_TTFT,
    ),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in CATALOGUE}
BY_PROMETHEUS_NAME: dict[str, MetricSpec] = {m.prometheus_name: m for m in CATALOGUE}


def get(name: str) -> MetricSpec:
    """Look a metric up by its OTel name or its Prometheus name."""
    spec = BY_NAME.get(name) or BY_PROMETHEUS_NAME.get(name)
    if spec is None:
        raise KeyError(f"unknown ryot metric {name!r}; known: {', '.join(sorted(BY_PROMETHEUS_NAME))}")
    return spec


def _fmt_bound(b: float) -> str:
    return f"{b:g}"


def markdown_table() -> str:
    """The docs' metric table (docs/reference/metrics.md), generated so the docs cannot drift from the code."""
    rows = [
        "| Prometheus name | OTel instrument | type | unit | labels | buckets | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in CATALOGUE:
        labels = ", ".join(m.labels) + ("".join(f", {k} (optional)" for k in m.optional_labels))
        labels += "".join(f", {k} (opt-in)" for k in m.opt_in_labels)
        buckets = " ".join(_fmt_bound(b) for b in m.buckets) if m.buckets else ""
        unit = f"`{m.unit}`" if m.unit else ""
        rows.append(
            f"| `{m.prometheus_name}` | `{m.name}` | {m.prometheus_type} | {unit} | {labels} | {buckets} |"
            f" {m.description} |"
        )
    return "\n".join(rows)


# --- label text and bucket rules (shared by settings validation and the recording side) ------------------------

UNENCODABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Control characters (Unicode category Cc) and surrogate code points (Cs; a lone surrogate cannot be encoded as
UTF-8, so one in a label value breaks every later Prometheus scrape and OTLP export)."""
REPLACEMENT = "\ufffd"


def first_unencodable(value: str) -> int | None:
    """Index of the first control character or surrogate in ``value`` (what ``clip`` would replace); None if none."""
    m = UNENCODABLE.search(value)
    return m.start() if m else None


def validate_buckets(name: str, bounds: Sequence[float]) -> tuple[float, ...]:
    """Bucket boundaries must be finite, non-empty and strictly increasing; checked once, at start-up."""
    # A string is a sequence too ("123" would become 1, 2, 3) and True is an int: neither is a boundary.
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence):
        raise ValueError(f"buckets for {name}: expected a list of numbers such as [0.1, 0.5, 1], got {bounds!r}")
    for b in bounds:
        if isinstance(b, bool) or not isinstance(b, (int, float)):
            raise ValueError(f"buckets for {name}: {b!r} is not a number; expected a list of numbers, got {bounds!r}")
    out = tuple(float(b) for b in bounds)
    if not out:
        raise ValueError(f"buckets for {name}: empty list")
    if any(not math.isfinite(b) for b in out):
        raise ValueError(f"buckets for {name}: boundaries must be finite (+Inf is implicit), got {list(out)}")
    if any(a >= b for a, b in zip(out, out[1:])):
        raise ValueError(f"buckets for {name} not in strictly increasing order: {list(out)}")
    return out


def resolve_buckets(overrides: Mapping[str, Sequence[float]] | None) -> dict[str, tuple[float, ...]]:
    """Catalogue buckets with overrides applied; override keys may be OTel or Prometheus names."""
    buckets = {m.name: m.buckets for m in CATALOGUE if m.buckets is not None}
    for key, bounds in (overrides or {}).items():
        try:
            spec = get(key)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None
        if spec.buckets is None:
            raise ValueError(f"{key} is a {spec.prometheus_type}, not a histogram: it has no buckets")
        buckets[spec.name] = validate_buckets(key, bounds)
    return buckets

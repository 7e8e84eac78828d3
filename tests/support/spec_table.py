"""The SPEC's exposition table, written out independently of the catalogue so the two can be compared.

``test_spec_table_matches_shared_spec`` checks this copy against ../shared/SPEC.md when it is present.
"""

from __future__ import annotations

# exposed name -> (prometheus type, required labels, optional labels, buckets or None)
SPEC: dict[str, tuple[str, frozenset[str], frozenset[str], tuple[float, ...] | None]] = {}


def _add(name: str, kind: str, labels: str, optional: str = "", buckets: str = "") -> None:
    SPEC[name] = (
        kind,
        frozenset(labels.split()),
        frozenset(optional.split()),
        tuple(float(b) for b in buckets.split()) if buckets else None,
    )


_add("ryot_inference_requests_total", "counter", "model endpoint status", "error_type")
_add("ryot_inference_errors_total", "counter", "model error_type severity")
_add("ryot_tokens_generated_total", "counter", "model token_type generation_mode")
_add("ryot_model_load_attempts_total", "counter", "model result load_type")
_add("ryot_model_cache_evictions_total", "counter", "model eviction_reason")
_add("ryot_token_cost_estimate_usd_total", "counter", "model token_type")
_add(
    "ryot_inference_latency_seconds",
    "histogram",
    "model batch_size generation_mode",
    "",
    "0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30",
)
_add("ryot_ttft_latency_seconds", "histogram", "model prompt_size", "", "0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5")
_add(
    "ryot_time_per_output_token_seconds",
    "histogram",
    "model",
    "",
    "0.005 0.01 0.015 0.02 0.025 0.03 0.04 0.05 0.075 0.1 0.15 0.2 0.3 0.5 1 2.5",
)
_add("ryot_model_loading_time_seconds", "histogram", "model load_type device_type", "", "0.5 1 2.5 5 10 30 60 120")
_add("ryot_initialization_startup_time_seconds", "histogram", "startup_phase", "", "1 5 10 30 60")
_add("ryot_batch_size_distribution", "histogram", "model request_type", "", "1 2 4 8 16 32 64")
_add("ryot_tokens_per_second", "histogram", "model", "", "10 25 50 100 150 250 400 600")
_add("ryot_prompt_cache_effectiveness", "histogram", "model", "", "0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0")
_add("ryot_active_inference_requests", "gauge", "model request_type endpoint")
_add("ryot_queue_depth", "gauge", "model priority_level")
_add("ryot_sliding_tokens_per_second", "gauge", "model time_window")
_add("ryot_kv_cache_hit_ratio", "gauge", "model context_type")
_add("ryot_kv_cache_size_bytes", "gauge", "model context_length batch_size")
_add("ryot_token_efficiency_ratio", "gauge", "model")
_add("ryot_gpu_memory_usage_bytes", "gauge", "device_id memory_type", "model")
_add("ryot_gpu_memory_percentage", "gauge", "device_id", "model")
_add("ryot_gpu_utilization_percent", "gauge", "device_id", "model")
_add("ryot_gpu_power_watts", "gauge", "device_id", "model")
_add("ryot_gpu_temperature_celsius", "gauge", "device_id", "model")
_add("ryot_service_info", "gauge", "version service component")

# Families the SPEC defines outside its exposition table, each from its own section, written out here the same way.
SPEC_SECTIONS: dict[str, tuple[str, frozenset[str], frozenset[str], tuple[float, ...] | None]] = {
    # "SLOs and goodput": labels model, result (met, missed) and, on missed series only, objective.
    "ryot_slo_requests_total": ("counter", frozenset({"model", "result"}), frozenset({"objective"}), None),
}
_TTFT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_TPOT = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
# "Outcomes, token detail and where the time goes": the engine-timing histograms take the TTFT / TPOT buckets.
OUTCOMES: dict[str, tuple[str, frozenset[str], frozenset[str], tuple[float, ...] | None]] = {
    "ryot_finish_reasons_total": ("counter", frozenset({"model", "endpoint", "finish_reason"}), frozenset(), None),
    "ryot_cached_prompt_tokens_total": ("counter", frozenset({"model", "generation_mode"}), frozenset(), None),
    "ryot_reasoning_tokens_total": ("counter", frozenset({"model", "generation_mode"}), frozenset(), None),
    "ryot_estimated_tokens_total": ("counter", frozenset({"model", "token_type"}), frozenset(), None),
    "ryot_engine_prefill_seconds": ("histogram", frozenset({"model"}), frozenset(), _TTFT),
    "ryot_engine_time_per_output_token_seconds": ("histogram", frozenset({"model"}), frozenset(), _TPOT),
    "ryot_ttft_outside_engine_seconds": ("histogram", frozenset({"model"}), frozenset(), _TTFT),
}
SPEC_SECTIONS.update(OUTCOMES)
# "Capacity and scaling": GPU depth (opt-in), ryot names where semconv defines no hw.gpu.* one.
GPU_DEPTH: dict[str, tuple[str, frozenset[str], frozenset[str], tuple[float, ...] | None]] = {
    "ryot_gpu_clock_hertz": ("gauge", frozenset({"device_id", "clock_domain"}), frozenset({"model"}), None),
    "ryot_gpu_energy_joules_total": ("counter", frozenset({"device_id"}), frozenset({"model"}), None),
    "ryot_gpu_throttle": ("gauge", frozenset({"device_id", "throttle_reason"}), frozenset({"model"}), None),
    "ryot_gpu_ecc_errors_total": (
        "counter",
        frozenset({"device_id", "ecc_error_type", "ecc_counter"}),
        frozenset({"model"}),
        None,
    ),
}
SPEC_SECTIONS.update(GPU_DEPTH)
# "Providers and failure modes": the model -> provider info gauge, one series per model holding a slot.
SPEC_SECTIONS["ryot_model_info"] = (
    "gauge",
    frozenset({"model", "provider", "provider_type", "provider_model_id"}),
    frozenset(),
    None,
)
SELF_METRICS: dict[str, tuple[str, frozenset[str], frozenset[str], tuple[float, ...] | None]] = {
    # "Promises under faults": OTLP exports by result, delta increments given up after an unknown outcome.
    "ryot_telemetry_otlp_exports_total": ("counter", frozenset({"result"}), frozenset(), None),
    "ryot_telemetry_otlp_delta_increments_unconfirmed_total": ("counter", frozenset(), frozenset(), None),
    # requests dropped by a full queue, the oldest queued request's age at each drain
    "ryot_telemetry_queue_dropped_requests_total": ("counter", frozenset(), frozenset(), None),
    "ryot_telemetry_queue_oldest_age_seconds": (
        "histogram",
        frozenset(),
        frozenset(),
        (0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0),
    ),
}
SPEC_SECTIONS.update(SELF_METRICS)
# "Capacity and scaling": length histograms (powers of two, 16 ... 131072) and the engine's queue time (TTFT buckets).
_LENGTH = tuple(float(2**k) for k in range(4, 18))
CAPACITY: dict[str, tuple[str, frozenset[str], frozenset[str], tuple[float, ...] | None]] = {
    "ryot_request_prompt_tokens": ("histogram", frozenset({"model"}), frozenset(), _LENGTH),
    "ryot_request_completion_tokens": ("histogram", frozenset({"model"}), frozenset(), _LENGTH),
    "ryot_engine_queue_seconds": ("histogram", frozenset({"model"}), frozenset(), _TTFT),
}
SPEC_SECTIONS.update(CAPACITY)

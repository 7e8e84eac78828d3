"""Engine-reported metrics: model loads, evictions, start-up phases, queue depth, KV cache size, engine batches."""

from __future__ import annotations

import logging

import pytest

from ryot_telemetry.recording.labels import OVERFLOW, ModelLabels
from ryot_telemetry.sources import engine as engine_mod
from ryot_telemetry.sources.engine import EngineMetrics
from ryot_telemetry.testing import Capture, capture

LOAD_T = "ryot.model.loading_time"
ATTEMPTS = "ryot.model.load_attempts"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A controllable clock for engine timings: each call returns the next scripted time."""
    times: list[float] = []
    it = iter(times)
    monkeypatch.setattr(engine_mod, "_clock", lambda: next(it))
    return times


def test_cold_load_success_records_time_and_attempt(cap: Capture, clock: list[float]) -> None:
    """A 7 s cold start: loading time 7 in bucket (5, 10], attempt result=success load_type=cold."""
    clock.extend([100.0, 107.0])
    with cap.engine.model_loading("llama", load_type="cold_start") as load:
        assert load.result == "success"
    cap.collect()
    h = cap.histogram(LOAD_T, model="llama", load_type="cold_start", device_type="gpu")
    assert (h.count, h.sum) == (1, 7.0)
    assert h.explicit_bounds == (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
    assert h.bucket_counts == (0, 0, 0, 0, 1, 0, 0, 0, 0)
    assert cap.series(ATTEMPTS) == [{"model": "llama", "result": "success", "load_type": "cold"}]
    assert cap.value(ATTEMPTS, model="llama", result="success", load_type="cold") == 1


def test_failed_load_propagates_exception_and_counts_failed(cap: Capture, clock: list[float]) -> None:
    """An exception in the block reaches the caller unchanged; attempt result=failed, no loading-time point."""
    clock.extend([0.0, 3.0])
    exc = MemoryError("CUDA out of memory")
    with (
        pytest.raises(MemoryError) as info,
        cap.engine.model_loading("llama", load_type="warm_start", device_type="cpu"),
    ):
        raise exc
    assert info.value is exc
    cap.collect()
    assert cap.value(ATTEMPTS, model="llama", result="failed", load_type="warm") == 1
    assert cap.points(LOAD_T) == []


def test_partial_load_and_cache_hit_mapping(cap: Capture, clock: list[float]) -> None:
    """``.partial()`` records result=partial; cache_hit maps to load_type=from_cache on the attempts counter."""
    clock.extend([0.0, 0.25])
    with cap.engine.model_loading("m", load_type="cache_hit") as load:
        load.partial()
    cap.engine.record_model_load("m", 2.0, load_type="cache_hit", result="success")
    cap.engine.record_model_load("m", None, load_type="cache_hit", result="failed")
    cap.collect()
    assert cap.value(ATTEMPTS, model="m", result="partial", load_type="from_cache") == 1
    assert cap.value(ATTEMPTS, model="m", result="success", load_type="from_cache") == 1
    assert cap.value(ATTEMPTS, model="m", result="failed", load_type="from_cache") == 1
    h = cap.histogram(LOAD_T, model="m", load_type="cache_hit", device_type="gpu")
    assert (h.count, h.sum, h.bucket_counts) == (2, 2.25, (1, 0, 1, 0, 0, 0, 0, 0, 0))


def test_unknown_label_values_raise_before_anything_is_recorded(cap: Capture) -> None:
    """Label values the SPEC enumerates are validated with a ValueError naming the allowed values."""
    with pytest.raises(ValueError, match="load_type must be one of cold_start, warm_start, cache_hit, got 'cold'"):
        cap.engine.model_loading("m", load_type="cold").__enter__()
    with pytest.raises(ValueError, match="eviction_reason must be one of memory_pressure, timeout, manual"):
        cap.engine.record_eviction("m", "oom")
    with pytest.raises(ValueError, match="startup_phase must be one of model_load, cache_init, warmup, ready"):
        cap.engine.record_startup_phase("boot", 1.0)
    with pytest.raises(ValueError, match="priority_level must be one of high, normal, low"):
        cap.engine.set_queue_depth("m", "urgent", 1)
    with pytest.raises(ValueError, match="result must be one of success, failed, partial"):
        cap.engine.record_model_load("m", 1.0, result="ok")
    with pytest.raises(ValueError, match="request_type must be one of standard, streaming, batch, engine_step"):
        cap.engine.record_engine_batch("m", 4, request_type="step")
    for bad in ("", "gpu\ud800", "gpu\n", "x" * 33):  # empty, unencodable, a control character, too long
        with pytest.raises(ValueError, match="device_type"):
            cap.engine.record_model_load("m", 1.0, device_type=bad)
    cap.collect()
    assert [cap.points(n) for n in (ATTEMPTS, "ryot.model.cache_evictions", "ryot.queue.depth")] == [[], [], []]


def test_negative_values_raise(cap: Capture) -> None:
    """Negative durations, depths, sizes and batch sizes are rejected with ValueError."""
    with pytest.raises(ValueError, match="startup time must be a finite number >= 0, got -1"):
        cap.engine.record_startup_phase("warmup", -1)
    with pytest.raises(ValueError, match="loading time must be a finite number >= 0"):
        cap.engine.record_model_load("m", float("nan"))
    with pytest.raises(ValueError, match="queue depth must be an integer >= 0, got -2"):
        cap.engine.set_queue_depth("m", "high", -2)
    with pytest.raises(ValueError, match="KV cache size must be a finite number >= 0"):
        cap.engine.set_kv_cache_size("m", 4096, 8, -5)
    with pytest.raises(ValueError, match="batch size must be an integer >= 1, got 0"):
        cap.engine.record_engine_batch("m", 0)


def test_evictions_count_by_reason(cap: Capture) -> None:
    """Two memory_pressure evictions and one manual: counters 2 and 1."""
    cap.engine.record_eviction("a", "memory_pressure")
    cap.engine.record_eviction("a", "memory_pressure")
    cap.engine.record_eviction("a", "manual")
    cap.collect()
    assert cap.value("ryot.model.cache_evictions", model="a", eviction_reason="memory_pressure") == 2
    assert cap.value("ryot.model.cache_evictions", model="a", eviction_reason="manual") == 1


def test_startup_phases(cap: Capture, clock: list[float]) -> None:
    """A 12 s warmup phase via the context manager and a 0.5 s ready phase via the record call; a raising phase
    records nothing."""
    clock.extend([0.0, 12.0, 50.0])
    with cap.engine.startup_phase("warmup"):
        pass
    cap.engine.record_startup_phase("ready", 0.5)
    with pytest.raises(RuntimeError), cap.engine.startup_phase("cache_init"):
        raise RuntimeError("boom")
    cap.collect()
    h = cap.histogram("ryot.initialization.startup_time", startup_phase="warmup")
    assert (h.count, h.sum, h.bucket_counts) == (1, 12.0, (0, 0, 0, 1, 0, 0))
    r = cap.histogram("ryot.initialization.startup_time", startup_phase="ready")
    assert (r.count, r.sum, r.bucket_counts) == (1, 0.5, (1, 0, 0, 0, 0, 0))
    assert cap.histogram("ryot.initialization.startup_time", startup_phase="cache_init") is None


def test_queue_depth_gauge_reports_latest_value(cap: Capture) -> None:
    """set_queue_depth overwrites: the gauge reads the latest depth per model and priority."""
    cap.engine.set_queue_depth("m", "high", 3)
    cap.engine.set_queue_depth("m", "low", 9)
    cap.engine.set_queue_depth("m", "high", 1)
    cap.collect()
    assert cap.series("ryot.queue.depth") == [
        {"model": "m", "priority_level": "high"},
        {"model": "m", "priority_level": "low"},
    ]
    assert cap.value("ryot.queue.depth", model="m", priority_level="high") == 1
    assert cap.value("ryot.queue.depth", model="m", priority_level="low") == 9


def test_kv_cache_size_buckets_batch_and_bounds_series() -> None:
    """batch_size 12 -> "9-16"; past max_kv_series the context_length label becomes __overflow__."""
    c = capture()
    try:
        eng = EngineMetrics(c.provider.get_meter("engine2"), max_kv_series=2)
        eng.set_kv_cache_size("m", 4096, 12, 1_000_000)
        eng.set_kv_cache_size("m", 8192, 1, 2_000_000)
        eng.set_kv_cache_size("m", 16384, 1, 3_000_000)
        eng.set_kv_cache_size("m", 4096, 12, 1_500_000)
        c.collect()
        kv = "ryot.kv_cache.size"
        assert c.value(kv, model="m", context_length="4096", batch_size="9-16") == 1_500_000
        assert c.value(kv, model="m", context_length="8192", batch_size="1") == 2_000_000
        assert c.value(kv, model="m", context_length=OVERFLOW, batch_size="1") == 3_000_000
        assert len(c.points(kv)) == 3
    finally:
        c.shutdown()


def test_engine_batch_reuses_the_recorders_histogram(cap: Capture) -> None:
    """Engine step sizes 3 and 24 land in the recorder's batch histogram under request_type=engine_step, apart
    from the router's per-request batch sizes."""
    assert cap.engine.batch is cap.recorder.batch
    cap.engine.record_engine_batch("m", 3)
    cap.engine.record_engine_batch("m", 24)
    req = cap.recorder.start("m", "completion", "batch", batch_size=2)
    req.success(cap.recorder)
    cap.collect()
    h = cap.histogram("ryot.batch_size.distribution", model="m", request_type="engine_step")
    assert (h.count, h.sum, h.bucket_counts) == (2, 27, (0, 0, 1, 0, 0, 1, 0, 0))
    assert h.explicit_bounds == (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    r = cap.histogram("ryot.batch_size.distribution", model="m", request_type="batch")
    assert (r.count, r.sum) == (1, 2)


def test_a_failed_load_has_no_loading_time_whichever_api_records_it(cap: Capture) -> None:
    """record_model_load(..., 7.0, result="failed") counts the attempt but, like model_loading(), records no time."""
    cap.engine.record_model_load("m", 7.0, result="failed")
    with pytest.raises(OSError), cap.engine.model_loading("m"):
        raise OSError("weights missing")
    cap.collect()
    assert cap.value(ATTEMPTS, model="m", result="failed", load_type="cold") == 2
    assert cap.points("ryot.model.loading_time") == []


def test_model_names_are_bounded_by_the_shared_guard() -> None:
    """With max_models=1 a second model name is recorded as __overflow__ and long names are clipped."""
    c = capture()
    try:
        eng = EngineMetrics(c.provider.get_meter("engine3"), ModelLabels(max_models=1, max_length=4))
        eng.record_eviction("abcdefgh", "timeout")
        eng.record_eviction("other", "timeout")
        c.collect()
        assert c.series("ryot.model.cache_evictions") == [
            {"model": OVERFLOW, "eviction_reason": "timeout"},
            {"model": "abcd", "eviction_reason": "timeout"},
        ]
    finally:
        c.shutdown()


def test_engine_shares_recorder_model_labels(cap: Capture) -> None:
    """Without explicit ``models`` the engine uses the recorder's label guard, so both agree on overflow."""
    assert cap.engine.models is cap.recorder.models


def test_configure_exposes_tel_engine() -> None:
    """configure() builds tel.engine on its meter: a recorded eviction is readable from the configured reader."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ryot_telemetry import configure

    reader = InMemoryMetricReader()
    tel = configure(exporters="none", readers=[reader], gpu=False)
    try:
        assert tel.engine.batch is tel.recorder.batch
        tel.engine.record_eviction("m", "manual")
        data = reader.get_metrics_data()
        got = [
            (dict(p.attributes), p.value)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "ryot.model.cache_evictions"
            for p in m.data.data_points
        ]
        assert got == [({"model": "m", "eviction_reason": "manual"}, 1)]
    finally:
        tel.shutdown()


def test_breakdown_without_gpu_gauges_is_a_clear_error() -> None:
    """A standalone EngineMetrics without GPU gauges refuses GPU breakdowns with a message saying what to pass."""
    c = capture()
    try:
        eng = EngineMetrics(c.provider.get_meter("engine4"))
        with pytest.raises(RuntimeError, match="gpu=install_gpu_gauges"):
            eng.set_gpu_memory_breakdown(0, "kv_cache", 1)
    finally:
        c.shutdown()


def test_clock_is_clamped_for_negative_durations(cap: Capture, clock: list[float]) -> None:
    """A clock that goes backwards records 0 s, never a negative duration."""
    clock.extend([5.0, 4.0])
    with cap.engine.model_loading("m"):
        pass
    cap.collect()
    assert cap.histogram(LOAD_T, model="m", load_type="cold_start", device_type="gpu").sum == 0.0


def test_on_collect_hook_pulls_values_once_per_collection(cap: Capture) -> None:
    """A hook runs once per collection, before the gauges are read: queue and KV values come from its pull."""
    waiting = iter([5, 2])
    calls = []

    @cap.engine.on_collect
    def pull() -> None:
        calls.append(1)
        cap.engine.set_queue_depth("m", "normal", next(waiting))
        cap.engine.set_kv_cache_size("m", 2048, 4, 1024 * len(calls))

    cap.collect()
    assert cap.value("ryot.queue.depth", model="m", priority_level="normal") == 5
    assert cap.value("ryot.kv_cache.size", model="m", context_length="2048", batch_size="2-4") == 1024
    cap.collect()
    assert cap.value("ryot.queue.depth", model="m", priority_level="normal") == 2
    assert cap.value("ryot.kv_cache.size", model="m", context_length="2048", batch_size="2-4") == 2048
    assert len(calls) == 2


def test_failing_hook_is_logged_once_and_collection_continues(cap: Capture, caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises is logged once; the other gauges still report."""
    cap.engine.set_queue_depth("m", "low", 4)

    def broken() -> None:
        raise RuntimeError("scheduler gone")

    cap.engine.on_collect(broken)
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        cap.collect()
        cap.collect()
    assert len([r for r in caplog.records if "on_collect hook" in r.getMessage()]) == 1
    assert cap.value("ryot.queue.depth", model="m", priority_level="low") == 4
    with pytest.raises(ValueError, match="on_collect needs a callable"):
        cap.engine.on_collect(42)  # type: ignore[arg-type]


def test_prometheus_exposition_names() -> None:
    """A scrape shows the SPEC's exact engine family names and label values."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from ryot_telemetry import configure

    tel = configure(exporters="prometheus", prometheus_registry="private", start_prometheus_server=False, gpu=False)
    try:
        eng = tel.engine
        eng.record_model_load("m", 3.0, load_type="cache_hit")
        eng.record_eviction("m", "timeout")
        eng.record_startup_phase("ready", 2.0)
        eng.set_queue_depth("m", "high", 7)
        eng.set_kv_cache_size("m", 4096, 1, 100)
        eng.set_gpu_memory_breakdown(0, "model_weights", 5)
        text = generate_latest(tel.registry).decode()
    finally:
        tel.shutdown()
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope_"))), s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert (
        "ryot_model_load_attempts_total",
        (("load_type", "from_cache"), ("model", "m"), ("result", "success")),
        1.0,
    ) in samples
    assert ("ryot_model_cache_evictions_total", (("eviction_reason", "timeout"), ("model", "m")), 1.0) in samples
    assert (
        "ryot_model_loading_time_seconds_sum",
        (("device_type", "gpu"), ("load_type", "cache_hit"), ("model", "m")),
        3.0,
    ) in samples
    assert ("ryot_initialization_startup_time_seconds_count", (("startup_phase", "ready"),), 1.0) in samples
    assert ("ryot_queue_depth", (("model", "m"), ("priority_level", "high")), 7.0) in samples
    assert (
        "ryot_kv_cache_size_bytes",
        (("batch_size", "1"), ("context_length", "4096"), ("model", "m")),
        100.0,
    ) in samples
    assert ("ryot_gpu_memory_usage_bytes", (("device_id", "0"), ("memory_type", "model_weights")), 5.0) in samples


def test_engine_kv_hit_ratio_context_type_is_validated(cap: Capture) -> None:
    """Only the catalogue's context types are accepted, so an engine cannot grow the series without bound."""
    with pytest.raises(ValueError, match="context_type must be one of conversation, batch, streaming"):
        cap.recorder.set_kv_cache_hit_ratio("m", "ctx-123", 0.5)
    with pytest.raises(ValueError, match="hit ratio must be a number within"):
        cap.recorder.set_kv_cache_hit_ratio("m", "batch", "0.5")
    cap.recorder.set_kv_cache_hit_ratio("m", "batch", 0.75)
    cap.collect()
    assert cap.value("ryot.kv_cache.hit_ratio", model="m", context_type="batch") == 0.75


def test_engine_reports_kv_hit_ratio_over_the_derived_one(cap: Capture) -> None:
    """EngineMetrics.set_kv_cache_hit_ratio replaces the usage-derived ratio for that model and context type."""
    assert cap.engine is not None
    req = cap.recorder.start("m", "chat_completion", "standard")
    req.prompt_tokens, req.completion_tokens, req.cached_tokens = 100, 1, 25
    req.success(cap.recorder)
    cap.collect()
    assert cap.value("ryot.kv_cache.hit_ratio", model="m", context_type="conversation") == 0.25
    cap.engine.set_kv_cache_hit_ratio("m", "conversation", 0.9)
    cap.collect()
    assert cap.value("ryot.kv_cache.hit_ratio", model="m", context_type="conversation") == 0.9
    with pytest.raises(ValueError, match="context_type must be one of conversation, batch, streaming"):
        cap.engine.set_kv_cache_hit_ratio("m", "chat", 0.5)


def test_engine_without_recorder_cannot_report_a_hit_ratio() -> None:
    """Without a recorder there is no hit-ratio gauge to report into: a clear error, not a silent drop."""
    c = capture()
    try:
        engine = EngineMetrics(c.meter)
        with pytest.raises(RuntimeError, match=r"EngineMetrics\(\.\.\., recorder=recorder\)"):
            engine.set_kv_cache_hit_ratio("m", "batch", 0.5)
    finally:
        c.shutdown()


def test_on_collect_hooks_run_after_the_drain_and_before_the_gauges() -> None:
    """Every collection drains the recorder's queue first, then runs the engine's hooks, then reads the gauges:
    a hook sees no queued request, and the queue depth it sets is in the same collection."""
    cap = capture()
    try:
        rec, engine = cap.recorder, cap.engine
        assert engine is not None
        seen: list[int] = []

        def hook() -> None:
            seen.append(len(rec._pending))
            engine.set_queue_depth("m", "normal", 7)

        engine.on_collect(hook)
        for _ in range(2):
            rec.start("m", "chat_completion", "standard").success()
        cap.collect()
        assert seen == [0]
        assert cap.value("ryot.queue.depth", model="m", priority_level="normal") == 7
        assert cap.value("ryot.inference.requests", model="m", endpoint="chat_completion", status="success") == 2
    finally:
        cap.shutdown()

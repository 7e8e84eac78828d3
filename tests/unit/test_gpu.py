"""NVML gauges against a fake NVML backend (exact series, one sweep per collection, failure modes) and real pynvml."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

from ryot_telemetry.sources import gpu as gpu_mod
from ryot_telemetry.testing import Capture, capture
from support.nvml import PID, FakeNvml, FakeNVMLError, GiB, device, not_supported, two_gpus

MEM = "ryot.gpu.memory.usage"












@pytest.fixture
def fake() -> FakeNvml:
    return two_gpus()


@pytest.fixture
def gcap(fake: FakeNvml) -> Capture:
    c = capture(gpu_backend=fake, gpu_models={0: "llama-3-8b"})
    yield c
    c.shutdown()


def test_two_devices_exact_series_with_power_not_supported(gcap: Capture) -> None:
    """Two GPUs, GPU 1 without power: exactly the expected series and values, model label only on GPU 0."""
    gcap.collect()
    d0 = {"device_id": "0", "model": "llama-3-8b"}
    d1 = {"device_id": "1"}
    assert {(tuple(sorted(p.attributes.items())), p.value) for p in gcap.points(MEM)} == {
        (tuple(sorted({**d0, "memory_type": "used"}.items())), 20 * GiB),
        (tuple(sorted({**d0, "memory_type": "free"}.items())), 60 * GiB),
        (tuple(sorted({**d0, "memory_type": "total"}.items())), 80 * GiB),
        (tuple(sorted({**d0, "memory_type": "process"}.items())), 6 * GiB),
        (tuple(sorted({**d1, "memory_type": "used"}.items())), 40 * GiB),
        (tuple(sorted({**d1, "memory_type": "free"}.items())), 40 * GiB),
        (tuple(sorted({**d1, "memory_type": "total"}.items())), 80 * GiB),
    }
    assert gcap.value("ryot.gpu.memory.percentage", **d0) == 25.0
    assert gcap.value("ryot.gpu.memory.percentage", **d1) == 50.0
    assert gcap.value("ryot.gpu.utilization", **d0) == 75.0
    assert gcap.value("ryot.gpu.utilization", **d1) == 10.0
    assert gcap.series("ryot.gpu.power") == [d0]
    assert gcap.value("ryot.gpu.power", **d0) == 312.5
    assert gcap.value("ryot.gpu.temperature", **d0) == 64.0
    assert gcap.value("ryot.gpu.temperature", **d1) == 41.0


def test_one_sweep_per_collection_and_not_supported_asked_once(gcap: Capture, fake: FakeNvml) -> None:
    """Each collect makes one NVML sweep for all five gauges; an unsupported field is not asked again."""
    assert fake.calls["nvmlInit"] == 1
    fake.reset()
    gcap.collect()
    assert gcap.gpu.sweeps == 1
    assert fake.calls == Counter(
        {
            "nvmlDeviceGetMemoryInfo": 2,
            "nvmlDeviceGetUtilizationRates": 2,
            "nvmlDeviceGetPowerUsage": 2,
            "nvmlDeviceGetTemperature": 2,
            "nvmlDeviceGetComputeRunningProcesses": 2,
            "nvmlDeviceGetGraphicsRunningProcesses": 2,
        }
    )
    fake.reset()
    gcap.collect()
    gcap.collect()
    assert gcap.gpu.sweeps == 3
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == 4
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 2  # only GPU 0 now: GPU 1 said NOT_SUPPORTED once
    assert fake.calls["nvmlInit"] == 0


def test_values_follow_the_device_between_collections(gcap: Capture, fake: FakeNvml) -> None:
    """A gauge reports the latest sweep: memory used changes between collections and the point follows it."""
    gcap.collect()
    fake.devices[1]["memory"] = (60 * GiB, 80 * GiB)
    gcap.collect()
    assert gcap.value(MEM, device_id="1", memory_type="used") == 60 * GiB
    assert gcap.value("ryot.gpu.memory.percentage", device_id="1") == 75.0


def test_gpu_lost_mid_run_drops_its_series_and_logs_once(
    gcap: Capture, fake: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    """GPU 1 answering GPU_IS_LOST: its series disappear, GPU 0 continues, one warning, never queried again."""
    gcap.collect()
    fake.devices[1]["temp"] = FakeNVMLError(gpu_mod.NVML_ERROR_GPU_IS_LOST)
    with caplog.at_level(logging.DEBUG, logger="ryot_telemetry"):
        gcap.collect()
        gcap.collect()
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in lost] == [
        ("WARNING", "ryot-telemetry: GPU 1 lost (NVML_ERROR_GPU_IS_LOST); its series are no longer reported")
    ]
    for name in ("ryot.gpu.memory.percentage", "ryot.gpu.utilization", "ryot.gpu.temperature"):
        assert gcap.series(name) == [{"device_id": "0", "model": "llama-3-8b"}]
    assert {p.attributes["device_id"] for p in gcap.points(MEM)} == {"0"}
    fake.reset()
    gcap.collect()
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == 1


def test_other_nvml_error_skips_the_field_for_that_sweep_only(
    gcap: Capture, fake: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown NVML error on a field skips it (no zero), warns once, and the field returns when NVML recovers."""
    fake.devices[0]["temp"] = FakeNVMLError(999)
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        gcap.collect()
        gcap.collect()
    assert gcap.series("ryot.gpu.temperature") == [{"device_id": "1"}]
    assert len([r for r in caplog.records if "temperature of GPU 0" in r.getMessage()]) == 1
    fake.devices[0]["temp"] = 70
    gcap.collect()
    assert gcap.value("ryot.gpu.temperature", device_id="0", model="llama-3-8b") == 70.0


def test_mig_parent_skips_utilization_and_reports_instances() -> None:
    """A MIG-enabled GPU: memory/power/temperature for the parent, no utilisation, and memory per instance "0/i"."""
    inst0 = {"memory": (3 * GiB, 10 * GiB), "compute": [(PID, 2 * GiB)], "graphics": []}
    inst1 = {"memory": (5 * GiB, 20 * GiB), "compute": [(PID, None)], "graphics": []}
    fake = FakeNvml([device(8 * GiB, 80 * GiB, util=not_supported(), mig=[inst0, inst1])])
    c = capture(gpu_backend=fake, gpu_models={"0/1": "mistral"})
    try:
        c.collect()
        assert c.series("ryot.gpu.utilization") == []
        assert fake.calls["nvmlDeviceGetUtilizationRates"] == 0
        assert c.value("ryot.gpu.power", device_id="0") == 250.0
        assert c.series("ryot.gpu.memory.percentage") == [
            {"device_id": "0"},
            {"device_id": "0/0"},
            {"device_id": "0/1", "model": "mistral"},
        ]
        assert c.value("ryot.gpu.memory.percentage", device_id="0/0") == 30.0
        assert c.value(MEM, device_id="0/0", memory_type="process") == 2 * GiB
        # usedGpuMemory unavailable (None) on instance 1: no process series rather than a fake zero
        assert c.value(MEM, device_id="0/1", model="mistral", memory_type="process") is None
        assert c.value(MEM, device_id="0/1", model="mistral", memory_type="used") == 5 * GiB
        assert c.series("ryot.gpu.temperature") == [{"device_id": "0"}]
    finally:
        c.shutdown()


def test_process_memory_counts_compute_and_graphics_once() -> None:
    """This process listed as compute (2 contexts) and graphics reports the larger list's sum, not both added."""
    fake = FakeNvml([device(9 * GiB, 16 * GiB, compute=[(PID, GiB), (PID, 2 * GiB)], graphics=[(PID, 3 * GiB)])])
    c = capture(gpu_backend=fake)
    try:
        c.collect()
        assert c.value(MEM, device_id="0", memory_type="process") == 3 * GiB
    finally:
        c.shutdown()


def test_no_process_context_means_no_process_series(gcap: Capture) -> None:
    """GPU 1 has only another process on it: no memory_type=process series for GPU 1 (not a zero)."""
    gcap.collect()
    assert gcap.value(MEM, device_id="1", memory_type="process") is None


@pytest.mark.parametrize(("enabled", "level"), [(None, "INFO"), (True, "WARNING")])
def test_no_driver_gives_no_series_and_one_log_line(
    enabled: bool | None, level: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvmlInit failing (driver not loaded): no GPU series, one log line (info when auto, warning when forced)."""
    monkeypatch.delenv("RYOT_TELEMETRY_GPU", raising=False)
    fake = FakeNvml([device(1, 2)], init_error=FakeNVMLError(9))
    c = capture()
    with caplog.at_level(logging.DEBUG, logger="ryot_telemetry"):
        gauges = gpu_mod.install_gpu_gauges(c.provider.get_meter("other"), enabled=enabled, backend=fake)
        c.collect()
    try:
        assert not gauges.available
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
            (level, "ryot-telemetry: NVML not available (NVML error 9); no GPU metrics")
        ]
        assert all(c.points(n) == [] for n in ("ryot.gpu.memory.usage", "ryot.gpu.power", "ryot.gpu.temperature"))
        assert fake.calls == Counter({"nvmlInit": 1})
        gauges.close()
        assert fake.calls["nvmlShutdown"] == 0
    finally:
        c.shutdown()


def test_disabled_never_touches_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """RYOT_TELEMETRY_GPU=false: nvmlInit is never called and no GPU series appear."""
    monkeypatch.setenv("RYOT_TELEMETRY_GPU", "false")
    fake = two_gpus()
    c = capture()
    gauges = gpu_mod.install_gpu_gauges(c.provider.get_meter("other"), backend=fake)
    c.collect()
    try:
        assert fake.calls == Counter()
        assert c.points(MEM) == []
    finally:
        gauges.close()
        c.shutdown()


def test_close_shuts_nvml_down_once(fake: FakeNvml) -> None:
    """The closer calls nvmlShutdown exactly once however often it runs, and the gauges go quiet after it."""
    c = capture(gpu_backend=fake)
    c.gpu.close()
    c.gpu.close()
    c.collect()
    assert fake.calls["nvmlShutdown"] == 1
    assert c.points(MEM) == []
    c.shutdown()
    assert fake.calls["nvmlShutdown"] == 1


def test_configure_wires_gauges_and_closes_nvml_on_shutdown(fake: FakeNvml) -> None:
    """configure(gpu_backend=..., gpu_models=...) exposes the gauges and shutdown() calls nvmlShutdown."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ryot_telemetry import configure

    reader = InMemoryMetricReader()
    tel = configure(exporters="none", readers=[reader], gpu_backend=fake, gpu_models={1: "mistral"})
    try:
        data = reader.get_metrics_data()
        points = [
            (dict(p.attributes), p.value)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "ryot.gpu.temperature"
            for p in m.data.data_points
        ]
        assert sorted(points, key=lambda x: x[1]) == [
            ({"device_id": "1", "model": "mistral"}, 41),
            ({"device_id": "0"}, 64),
        ]
    finally:
        tel.shutdown()
    assert fake.calls["nvmlShutdown"] == 1


def test_models_from_env_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """RYOT_TELEMETRY_GPU_MODELS="0=llama,1=mistral" names devices; malformed values raise one clear error."""
    assert gpu_mod.parse_gpu_models("0=llama, 1=mistral,0/2=phi") == {"0": "llama", "1": "mistral", "0/2": "phi"}
    monkeypatch.setenv("RYOT_TELEMETRY_GPU_MODELS", "0=llama,1=mistral")
    c = capture()
    gauges = gpu_mod.install_gpu_gauges(c.provider.get_meter("other"), backend=two_gpus())
    assert gauges.models == {"0": "llama", "1": "mistral"}
    gauges.close()
    c.shutdown()
    for bad in ("llama", "x=llama", "0="):
        with pytest.raises(ValueError, match="RYOT_TELEMETRY_GPU_MODELS"):
            gpu_mod.parse_gpu_models(bad)
    from ryot_telemetry import ConfigurationError, configure

    monkeypatch.setenv("RYOT_TELEMETRY_GPU", "maybe")
    with pytest.raises(ConfigurationError, match="RYOT_TELEMETRY_GPU='maybe': expected auto, true or false"):
        configure(exporters="none")


def test_engine_breakdown_shares_the_memory_gauge(gcap: Capture) -> None:
    """Engine-reported model_weights/kv_cache appear on ryot.gpu.memory.usage beside NVML's types; None removes."""
    gcap.engine.set_gpu_memory_breakdown(0, "model_weights", 16 * GiB)
    gcap.engine.set_gpu_memory_breakdown("0", "kv_cache", 3 * GiB)
    gcap.collect()
    assert gcap.value(MEM, device_id="0", model="llama-3-8b", memory_type="model_weights") == 16 * GiB
    assert gcap.value(MEM, device_id="0", model="llama-3-8b", memory_type="kv_cache") == 3 * GiB
    assert len(gcap.points(MEM)) == 9
    gcap.engine.set_gpu_memory_breakdown(0, "kv_cache", None)
    gcap.collect()
    assert gcap.value(MEM, device_id="0", model="llama-3-8b", memory_type="kv_cache") is None
    with pytest.raises(ValueError, match="memory_type must be one of model_weights, kv_cache, activations"):
        gcap.engine.set_gpu_memory_breakdown(0, "used", 1)
    with pytest.raises(ValueError, match="finite number of bytes >= 0"):
        gcap.engine.set_gpu_memory_breakdown(0, "activations", -1)
    with pytest.raises(ValueError, match="device_id must be"):
        gcap.engine.set_gpu_memory_breakdown("gpu0", "activations", 1)


def test_breakdown_without_nvml_still_exposed(cap: Capture) -> None:
    """Without NVML the memory gauge carries only what the engine reports."""
    cap.engine.set_gpu_memory_breakdown(1, "activations", 512)
    cap.collect()
    assert cap.series(MEM) == [{"device_id": "1", "memory_type": "activations"}]
    assert cap.value(MEM, device_id="1", memory_type="activations") == 512


def test_real_pynvml() -> None:
    """On a machine with an NVIDIA driver, the gauges read device 0 through real pynvml and agree with NVML."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        pytest.skip(f"no NVIDIA GPU/driver here: nvmlInit failed with {type(e).__name__}: {e}")
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    c = capture(gpu_backend=pynvml)
    try:
        c.collect()
        assert c.value(MEM, device_id="0", memory_type="total") == total
        physical = {p.attributes["device_id"] for p in c.points(MEM) if "/" not in p.attributes["device_id"]}
        assert physical == {str(i) for i in range(count)}
        pct = c.value("ryot.gpu.memory.percentage", device_id="0")
        assert pct is not None and 0.0 <= pct <= 100.0
    finally:
        c.shutdown()


def test_auto_mode_with_real_pynvml_and_no_driver(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no NVIDIA driver is installed, auto mode with real pynvml gives no GPU series and one INFO line."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present here: the no-driver path cannot be exercised")
    monkeypatch.delenv("RYOT_TELEMETRY_GPU", raising=False)
    c = capture()
    with caplog.at_level(logging.DEBUG, logger="ryot_telemetry"):
        gauges = gpu_mod.install_gpu_gauges(c.provider.get_meter("real"), models={})
        c.collect()
    try:
        assert not gauges.available
        assert [
            (r.levelname, r.getMessage().startswith("ryot-telemetry: NVML not available")) for r in caplog.records
        ] == [("INFO", True)]
        assert c.points(MEM) == [] and c.points("ryot.gpu.temperature") == []
    finally:
        gauges.close()
        c.shutdown()


def test_prometheus_exposition_names_and_values(fake: FakeNvml) -> None:
    """A scrape shows the SPEC's exact GPU family names with NVML's values converted (mW -> W)."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from ryot_telemetry import configure

    tel = configure(
        exporters="prometheus",
        prometheus_registry="private",
        start_prometheus_server=False,
        gpu_backend=fake,
        gpu_models={0: "llama-3-8b"},
    )
    try:
        text = generate_latest(tel.registry).decode()
    finally:
        tel.shutdown()
    got = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope_"))), s.value)
        for f in text_string_to_metric_families(text)
        if f.name.startswith("ryot_gpu_")
        for s in f.samples
        if s.labels.get("device_id") == "0" and s.labels.get("memory_type") in (None, "used")
    }
    d0 = (("device_id", "0"), ("model", "llama-3-8b"))
    assert got == {
        ("ryot_gpu_memory_usage_bytes", (d0[0], ("memory_type", "used"), d0[1]), 20.0 * GiB),
        ("ryot_gpu_memory_percentage", d0, 25.0),
        ("ryot_gpu_utilization_percent", d0, 75.0),
        ("ryot_gpu_power_watts", d0, 312.5),
        ("ryot_gpu_temperature_celsius", d0, 64.0),
    }


class _NoTemperatureBinding(FakeNvml):
    """An NVML binding from which nvmlDeviceGetTemperature was removed (NVML deprecates and drops calls)."""

    def __getattribute__(self, name: str) -> Any:
        if name == "nvmlDeviceGetTemperature":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_missing_or_removed_nvml_function_skips_only_that_field() -> None:
    """No temperature function in the binding, and FUNCTION_NOT_FOUND (13) for power: memory etc. still reported."""
    fake = _NoTemperatureBinding([device(20 * GiB, 80 * GiB, power_mw=FakeNVMLError(13))])
    c = capture(gpu_backend=fake)
    try:
        for _ in range(3):
            c.collect()
        assert c.value(MEM, device_id="0", memory_type="used") == 20 * GiB
        assert c.value("ryot.gpu.utilization", device_id="0") == 50.0
        assert c.series("ryot.gpu.temperature") == [] and c.series("ryot.gpu.power") == []
        assert fake.calls["nvmlDeviceGetPowerUsage"] == 1  # asked once, then known to be unsupported
    finally:
        c.shutdown()

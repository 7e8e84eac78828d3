"""NVML gauges against a fake NVML backend (exact series, one sweep per collection, failure modes) and real pynvml."""

from __future__ import annotations

import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from ryot_telemetry.sources import gpu as gpu_mod
from ryot_telemetry.testing import Capture, capture
from support.nvml import PID, FakeNvml, FakeNVMLError, GiB, device, ecc, not_supported, two_gpus

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


def _scrape(**settings: Any) -> str:
    """One scrape of ``configure(exporters="prometheus", **settings)`` on a private registry, shut down after."""
    from prometheus_client import generate_latest

    from ryot_telemetry import configure

    tel = configure(exporters="prometheus", prometheus_registry="private", start_prometheus_server=False, **settings)
    try:
        return generate_latest(tel.registry).decode()
    finally:
        tel.shutdown()


def test_prometheus_exposition_names_and_values(fake: FakeNvml) -> None:
    """A scrape shows the SPEC's exact GPU family names with NVML's values converted (mW -> W)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = _scrape(gpu_backend=fake, gpu_models={0: "llama-3-8b"})
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


# --- GPU depth (gpu_detail): clocks, energy since start, throttle reasons, ECC counts ------------------------------

DETAIL = ("ryot.gpu.clock", "ryot.gpu.energy", "ryot.gpu.throttle", "ryot.gpu.ecc.errors")
REASONS = (
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


def _points(c: Capture, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(p.attributes.items())): p.value for p in c.points(name)}


def _detail_fake() -> FakeNvml:
    """GPU 0: SW power cap and HW slowdown active, ECC counts; GPU 1: ECC and energy NOT_SUPPORTED, 3 reasons."""
    return FakeNvml(
        [
            device(
                20 * GiB,
                80 * GiB,
                sm_mhz=1980,
                mem_mhz=2619,
                energy_mj=1_000_000,
                reasons=0x4 | 0x8,
                ecc=ecc(corrected_volatile=3, uncorrected_volatile=0, corrected_aggregate=12, uncorrected_aggregate=1),
            ),
            device(
                40 * GiB,
                80 * GiB,
                sm_mhz=345,
                mem_mhz=not_supported(),
                energy_mj=not_supported(),
                reasons=0x1,
                reasons_supported=0x1 | 0x4 | 0x40,
                ecc=not_supported(),
            ),
        ]
    )


def test_detail_exact_series_and_energy_since_start() -> None:
    """gpu_detail=True: clocks in Hz, energy in J since the first reading, 0/1 per supported reason, ECC counts."""
    fake = _detail_fake()
    c = capture(gpu_backend=fake, gpu_models={0: "llama"}, gpu_detail=True)
    try:
        c.collect()
        d0, d1 = (("device_id", "0"), ("model", "llama")), (("device_id", "1"),)
        assert _points(c, "ryot.gpu.clock") == {
            (("clock_domain", "memory"), *d0): 2619e6,
            (("clock_domain", "sm"), *d0): 1980e6,
            (("clock_domain", "sm"), *d1): 345e6,
        }
        assert _points(c, "ryot.gpu.energy") == {d0: 0.0}
        assert _points(c, "ryot.gpu.throttle") == {
            **{(*d0[:1], *d0[1:], ("throttle_reason", r)): int(r in ("sw_power_cap", "hw_slowdown")) for r in REASONS},
            (*d1, ("throttle_reason", "gpu_idle")): 1,
            (*d1, ("throttle_reason", "sw_power_cap")): 0,
            (*d1, ("throttle_reason", "hw_thermal_slowdown")): 0,
        }
        assert _points(c, "ryot.gpu.ecc.errors") == {
            (*d0[:1], ("ecc_counter", "volatile"), ("ecc_error_type", "corrected"), *d0[1:]): 3,
            (*d0[:1], ("ecc_counter", "volatile"), ("ecc_error_type", "uncorrected"), *d0[1:]): 0,
            (*d0[:1], ("ecc_counter", "aggregate"), ("ecc_error_type", "corrected"), *d0[1:]): 12,
            (*d0[:1], ("ecc_counter", "aggregate"), ("ecc_error_type", "uncorrected"), *d0[1:]): 1,
        }
        fake.devices[0]["energy_mj"] = 1_250_500
        c.collect()
        assert c.value("ryot.gpu.energy", device_id="0", model="llama") == 250.5
    finally:
        c.shutdown()


def test_detail_one_sweep_and_unsupported_asked_once() -> None:
    """With detail a collection is still one sweep; NOT_SUPPORTED fields and the supported reasons are asked once."""
    fake = _detail_fake()
    c = capture(gpu_backend=fake, gpu_detail=True)
    try:
        fake.reset()
        c.collect()
        assert c.gpu is not None and c.gpu.sweeps == 1
        assert {k: v for k, v in fake.calls.items() if k not in _BASE_CALLS} == {
            "nvmlDeviceGetClockInfo": 4,
            "nvmlDeviceGetTotalEnergyConsumption": 2,
            "nvmlDeviceGetSupportedClocksEventReasons": 2,
            "nvmlDeviceGetCurrentClocksEventReasons": 2,
            "nvmlDeviceGetTotalEccErrors": 5,  # 4 on GPU 0, 1 on GPU 1 (NOT_SUPPORTED: the rest not asked)
        }
        fake.reset()
        c.collect()
        assert {k: v for k, v in fake.calls.items() if k not in _BASE_CALLS} == {
            "nvmlDeviceGetClockInfo": 3,
            "nvmlDeviceGetTotalEnergyConsumption": 1,
            "nvmlDeviceGetCurrentClocksEventReasons": 2,
            "nvmlDeviceGetTotalEccErrors": 4,
        }
        assert c.gpu.sweeps == 2
    finally:
        c.shutdown()


_BASE_CALLS = {
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses",
}


def test_detail_off_by_default_and_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without gpu_detail no detail series exist and NVML is not asked; RYOT_TELEMETRY_GPU_DETAIL=true turns it on."""
    monkeypatch.delenv("RYOT_TELEMETRY_GPU_DETAIL", raising=False)
    fake = _detail_fake()
    c = capture(gpu_backend=fake)
    try:
        c.collect()
        assert [c.points(n) for n in DETAIL] == [[], [], [], []]
        assert set(fake.calls) <= _BASE_CALLS | {"nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex"} | {
            "nvmlDeviceGetMigMode"
        }
    finally:
        c.shutdown()
    monkeypatch.setenv("RYOT_TELEMETRY_GPU_DETAIL", "true")
    c = capture(gpu_backend=_detail_fake())
    try:
        c.collect()
        assert c.value("ryot.gpu.clock", device_id="1", clock_domain="sm") == 345e6
    finally:
        c.shutdown()
    meter_cap = capture()
    try:
        gauges = gpu_mod.install_gpu_gauges(meter_cap.provider.get_meter("x"), enabled=True, backend=_detail_fake())
        meter_cap.collect()
        assert meter_cap.value("ryot.gpu.energy", device_id="0") == 0.0
        gauges.close()
    finally:
        meter_cap.shutdown()
    from ryot_telemetry import ConfigurationError, configure

    monkeypatch.setenv("RYOT_TELEMETRY_GPU_DETAIL", "sometimes")
    with pytest.raises(ConfigurationError, match=r"^RYOT_TELEMETRY_GPU_DETAIL='sometimes': expected true or false$"):
        configure(exporters="none")
    with pytest.raises(ConfigurationError, match=r"^gpu_detail must be True or False, got 'yes'$"):
        configure(exporters="none", gpu_detail="yes")


class _Hostile:
    """A value whose every use raises: comparisons, conversions, repr."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("hostile attribute")

    def __repr__(self) -> str:
        raise KeyboardInterrupt

    def __lt__(self, other: Any) -> bool:
        raise RuntimeError("hostile comparison")


_GARBAGE = [-1, float("nan"), float("inf"), 2**80, "1410", True, None, 1.5e300, _Hostile()]


@pytest.mark.parametrize(
    ("field", "metric", "attrs"),
    [
        ("sm_mhz", "ryot.gpu.clock", {"clock_domain": "sm"}),
        ("energy_mj", "ryot.gpu.energy", {}),
        ("reasons", "ryot.gpu.throttle", {"throttle_reason": "gpu_idle"}),
        ("ecc", "ryot.gpu.ecc.errors", {"ecc_error_type": "corrected", "ecc_counter": "volatile"}),
        ("temp", "ryot.gpu.temperature", {}),
        ("power_mw", "ryot.gpu.power", {}),
        ("util", "ryot.gpu.utilization", {}),
    ],
)
def test_garbage_from_nvml_is_absent_for_that_sweep_only(
    field: str, metric: str, attrs: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Negative, NaN, infinite, huge, text, bool, None or hostile values: that field absent, the rest kept, one log."""
    fake = FakeNvml([device(20 * GiB, 80 * GiB)])
    c = capture(gpu_backend=fake, gpu_detail=True)
    try:
        c.collect()
        good = c.value(metric, device_id="0", **attrs)
        assert good is not None
        with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
            for garbage in _GARBAGE:
                fake.devices[0][field] = garbage
                c.collect()
                assert c.value(metric, device_id="0", **attrs) is None, garbage
                assert c.value(MEM, device_id="0", memory_type="used") == 20 * GiB
                assert c.value("ryot.gpu.clock", device_id="0", clock_domain="memory") == 1593e6
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and warnings[0].startswith("ryot-telemetry: GPU 0 reported an unusable "), warnings
        fake.devices[0][field] = {"ecc": ecc()}.get(field, 7 if field != "energy_mj" else 5_000_000)
        c.collect()
        assert c.value(metric, device_id="0", **attrs) is not None
    finally:
        c.shutdown()


def test_garbage_memory_struct_keeps_the_other_fields() -> None:
    """A memory struct with a negative, NaN or raising field: no memory series that sweep, the other gauges stay."""
    fake = FakeNvml([device(20 * GiB, 80 * GiB)])
    c = capture(gpu_backend=fake, gpu_detail=True)
    try:
        for used in (-1, float("nan"), "20", _Hostile()):
            fake.devices[0]["memory"] = (used, 80 * GiB)
            c.collect()
            assert [p.attributes["memory_type"] for p in c.points(MEM)] == [], used
            assert c.series("ryot.gpu.memory.percentage") == []
            assert c.value("ryot.gpu.temperature", device_id="0") == 60.0
            assert c.value("ryot.gpu.clock", device_id="0", clock_domain="sm") == 1410e6
    finally:
        c.shutdown()


def test_energy_counter_going_backwards_restarts_from_zero(caplog: pytest.LogCaptureFixture) -> None:
    """NVML's energy counter dropping (driver reload) restarts the count at 0 (a counter reset), never negative."""
    fake = FakeNvml([device(1, 2, energy_mj=9_000)])
    c = capture(gpu_backend=fake, gpu_detail=True)
    try:
        c.collect()
        fake.devices[0]["energy_mj"] = 11_000
        c.collect()
        assert c.value("ryot.gpu.energy", device_id="0") == 2.0
        fake.devices[0]["energy_mj"] = 500
        with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
            c.collect()
        assert c.value("ryot.gpu.energy", device_id="0") == 0.0
        fake.devices[0]["energy_mj"] = 1_500
        c.collect()
        assert c.value("ryot.gpu.energy", device_id="0") == 1.0
        assert [r.getMessage() for r in caplog.records] == [
            "ryot-telemetry: GPU 0 energy counter went backwards; counting again from its new value"
        ]
    finally:
        c.shutdown()


def test_energy_starts_at_the_first_good_reading() -> None:
    """An energy reading that fails at start: the count starts at the first reading that succeeds, not at zero mJ."""
    fake = FakeNvml([device(1, 2, energy_mj=FakeNVMLError(999))])
    c = capture(gpu_backend=fake, gpu_detail=True)
    try:
        c.collect()
        assert c.series("ryot.gpu.energy") == []
        fake.devices[0]["energy_mj"] = 70_000
        c.collect()
        fake.devices[0]["energy_mj"] = 73_000
        c.collect()
        assert c.value("ryot.gpu.energy", device_id="0") == 3.0
    finally:
        c.shutdown()


class _OldThrottleBinding(FakeNvml):
    """An older binding: the throttle-reason calls only, no supported-reasons call, no event-reason names."""

    def __getattribute__(self, name: str) -> Any:
        if "ClocksEventReasons" in name or name == "nvmlDeviceGetSupportedClocksThrottleReasons":
            raise AttributeError(name)
        return super().__getattribute__(name)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        self.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] += 1
        return self._get(handle, "reasons")


def test_throttle_reasons_bounded_and_from_an_older_binding() -> None:
    """Unknown mask bits add no series; a binding with only the throttle calls reports every known reason."""
    fake = _OldThrottleBinding([device(1, 2, reasons=0x40 | (1 << 40) | (1 << 63))])
    c = capture(gpu_backend=fake, gpu_detail=True)
    try:
        c.collect()
        c.collect()
        got = {p.attributes["throttle_reason"]: p.value for p in c.points("ryot.gpu.throttle")}
        assert got == {r: int(r == "hw_thermal_slowdown") for r in REASONS}
        assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 2
    finally:
        c.shutdown()


def test_detail_not_read_on_mig_instances() -> None:
    """MIG instances report memory only; the clocks, energy, reasons and ECC come from the parent GPU."""
    inst = {"memory": (3 * GiB, 10 * GiB), "compute": [], "graphics": []}
    fake = FakeNvml([device(8 * GiB, 80 * GiB, util=not_supported(), mig=[inst])])
    c = capture(gpu_backend=fake, gpu_detail=True)
    try:
        c.collect()
        for name in DETAIL:
            assert {p.attributes["device_id"] for p in c.points(name)} == {"0"}, name
    finally:
        c.shutdown()


def test_detail_prometheus_names(fake: FakeNvml) -> None:
    """A scrape with detail on shows the catalogue's family names and types for the four detail metrics."""
    text = _scrape(gpu_backend=fake, gpu_detail=True)
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE ryot_gpu_"))
    assert {k: v for k, v in types.items() if k.split("_")[2] in ("clock", "energy", "throttle", "ecc")} == {
        "ryot_gpu_clock_hertz": "gauge",
        "ryot_gpu_energy_joules_total": "counter",
        "ryot_gpu_throttle": "gauge",
        "ryot_gpu_ecc_errors_total": "counter",
    }
    assert 'ryot_gpu_clock_hertz{clock_domain="sm",device_id="0"' in text


def test_real_pynvml_detail() -> None:
    """On a GPU machine, detail reads device 0 through real pynvml: each field present exactly when NVML answers it."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        pytest.skip(f"no NVIDIA GPU/driver here: nvmlInit failed with {type(e).__name__}: {e}")

    def answer(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except pynvml.NVMLError as e:
            return e

    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        max_sm = answer(pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM)
        energy = answer(pynvml.nvmlDeviceGetTotalEnergyConsumption, h)
        ecc_count = answer(pynvml.nvmlDeviceGetTotalEccErrors, h, 1, 1)
    finally:
        pynvml.nvmlShutdown()
    c = capture(gpu_backend=pynvml, gpu_detail=True)
    try:
        c.collect()
        c.collect()
        sm = c.value("ryot.gpu.clock", device_id="0", clock_domain="sm")
        assert sm is not None and (isinstance(max_sm, Exception) or 0 < sm <= max_sm * 1e6), (sm, max_sm)
        assert (c.value("ryot.gpu.clock", device_id="0", clock_domain="memory") or 0) > 0
        got_energy = c.value("ryot.gpu.energy", device_id="0")
        assert (got_energy is None) == isinstance(energy, Exception), (got_energy, energy)
        assert got_energy is None or got_energy >= 0.0
        reasons = {p.attributes["throttle_reason"]: p.value for p in c.points("ryot.gpu.throttle")}
        assert reasons and set(reasons.values()) <= {0, 1}, reasons
        got_ecc = c.value("ryot.gpu.ecc.errors", device_id="0", ecc_error_type="uncorrected", ecc_counter="aggregate")
        assert got_ecc == (None if isinstance(ecc_count, Exception) else ecc_count), (got_ecc, ecc_count)
        print("real NVML detail:", sm, got_energy, reasons, got_ecc)
    finally:
        c.shutdown()


class _RaisesBase:
    """A struct whose every attribute raises a BaseException that is not an Exception."""

    def __getattr__(self, name: str) -> Any:
        raise SystemExit(f"hostile {name}")


class _HostileInt(int):
    """An int whose comparisons raise a BaseException."""

    def __le__(self, other: Any) -> bool:
        raise GeneratorExit("hostile comparison")

    __ge__ = __lt__ = __gt__ = __le__


@pytest.mark.parametrize(
    "compute",
    [
        42,  # not a list
        None,
        [_RaisesBase()],
        [SimpleNamespace(pid=PID, usedGpuMemory=-1)],
        [SimpleNamespace(pid=PID, usedGpuMemory=float("nan"))],
        [SimpleNamespace(pid=PID, usedGpuMemory="6")],
        [SimpleNamespace(pid=_HostileInt(PID), usedGpuMemory=GiB)],
        [SimpleNamespace(pid=PID, usedGpuMemory=_HostileInt(GiB))],
    ],
)
def test_hostile_process_lists_lose_only_the_process_series(compute: Any) -> None:
    """Process lists that are not lists, or whose entries raise or lie: no process series, everything else kept."""
    fake = FakeNvml([device(20 * GiB, 80 * GiB)])
    fake.devices[0]["compute"] = [(PID, GiB)]
    c = capture(gpu_backend=fake, gpu_detail=True)
    try:
        c.collect()
        assert c.value(MEM, device_id="0", memory_type="process") == GiB
        fake.nvmlDeviceGetComputeRunningProcesses = lambda handle: compute  # type: ignore[method-assign]
        c.collect()
        assert c.value(MEM, device_id="0", memory_type="process") is None
        assert c.value(MEM, device_id="0", memory_type="used") == 20 * GiB
        assert c.value("ryot.gpu.energy", device_id="0") == 0.0
    finally:
        c.shutdown()


def test_struct_fields_raising_base_exceptions_are_absent() -> None:
    """Memory and utilisation structs whose fields raise SystemExit, and a hostile int: those fields absent only."""
    fake = FakeNvml([device(20 * GiB, 80 * GiB, temp=_HostileInt(60))])
    fake.nvmlDeviceGetMemoryInfo = lambda handle: _RaisesBase()  # type: ignore[method-assign]
    fake.nvmlDeviceGetUtilizationRates = lambda handle: _RaisesBase()  # type: ignore[method-assign]
    c = capture(gpu_backend=fake, gpu_detail=True)
    try:
        c.collect()
        assert c.points(MEM) == [] and c.series("ryot.gpu.utilization") == []
        assert c.series("ryot.gpu.temperature") == []
        assert c.value("ryot.gpu.power", device_id="0") == 250.0
        assert c.value("ryot.gpu.clock", device_id="0", clock_domain="sm") == 1410e6
    finally:
        c.shutdown()


def test_detail_in_multiprocess_mode(tmp_path: Any) -> None:
    """In multi-process mode the answering process reads the detail fields in its one sweep per scrape."""
    from prometheus_client import generate_latest

    from ryot_telemetry import configure

    fake = two_gpus()
    tel = configure(
        multiproc_dir=tmp_path,
        prometheus_registry="private",
        start_prometheus_server=False,
        gpu_backend=fake,
        gpu_detail=True,
    )
    try:
        text = generate_latest(tel.registry).decode()
        assert tel.gpu is not None and tel.gpu.sweeps == 1
        lines = [line for line in text.splitlines() if line.startswith("ryot_gpu_clock_hertz{")]
        assert len(lines) == 4 and all(line.endswith((" 1.41e+09", " 1.593e+09")) for line in lines), lines
        assert 'ryot_gpu_energy_joules_total{device_id="0"' in text
    finally:
        tel.shutdown()

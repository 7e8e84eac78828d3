"""A scriptable fake NVML backend and the device layouts the GPU tests use."""

from __future__ import annotations

import os
from collections import Counter
from types import SimpleNamespace
from typing import Any

from ryot_telemetry.sources import gpu as gpu_mod

GiB = 1024**3


PID = os.getpid()


class FakeNVMLError(Exception):
    """Carries an NVML return code as ``.value``, like ``pynvml.NVMLError``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """A scriptable NVML: devices are dicts of field -> value or an exception; every call is counted."""

    def __init__(self, devices: list[dict[str, Any]], init_error: BaseException | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.calls: Counter[str] = Counter()

    def _get(self, handle: Any, field: str) -> Any:
        v = handle[field]
        if isinstance(v, BaseException):
            raise v
        return v

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1

    def nvmlDeviceGetCount(self) -> int:
        self.calls["nvmlDeviceGetCount"] += 1
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self.calls["nvmlDeviceGetHandleByIndex"] += 1
        return self.devices[index]

    def nvmlDeviceGetMigMode(self, handle: Any) -> Any:
        self.calls["nvmlDeviceGetMigMode"] += 1
        if "mig" not in handle:
            raise FakeNVMLError(gpu_mod.NVML_ERROR_NOT_SUPPORTED)
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        self.calls["nvmlDeviceGetMaxMigDeviceCount"] += 1
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any:
        self.calls["nvmlDeviceGetMigDeviceHandleByIndex"] += 1
        if index >= len(handle["mig"]):
            raise FakeNVMLError(gpu_mod.NVML_ERROR_NOT_FOUND)
        return handle["mig"][index]

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self.calls["nvmlDeviceGetMemoryInfo"] += 1
        used, total = self._get(handle, "memory")
        return SimpleNamespace(used=used, free=total - used, total=total)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        self.calls["nvmlDeviceGetUtilizationRates"] += 1
        return SimpleNamespace(gpu=self._get(handle, "util"), memory=0)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        self.calls["nvmlDeviceGetPowerUsage"] += 1
        return self._get(handle, "power_mw")

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        self.calls["nvmlDeviceGetTemperature"] += 1
        assert sensor == gpu_mod.NVML_TEMPERATURE_GPU
        return self._get(handle, "temp")

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> Any:
        self.calls["nvmlDeviceGetComputeRunningProcesses"] += 1
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self._get(handle, "compute")]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> Any:
        self.calls["nvmlDeviceGetGraphicsRunningProcesses"] += 1
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self._get(handle, "graphics")]

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:
        self.calls["nvmlDeviceGetClockInfo"] += 1
        return self._get(handle, {gpu_mod.NVML_CLOCK_SM: "sm_mhz", gpu_mod.NVML_CLOCK_MEM: "mem_mhz"}[clock_type])

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self.calls["nvmlDeviceGetTotalEnergyConsumption"] += 1
        return self._get(handle, "energy_mj")

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        self.calls["nvmlDeviceGetCurrentClocksEventReasons"] += 1
        return self._get(handle, "reasons")

    def nvmlDeviceGetSupportedClocksEventReasons(self, handle: Any) -> int:
        self.calls["nvmlDeviceGetSupportedClocksEventReasons"] += 1
        return self._get(handle, "reasons_supported")

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter_type: int) -> int:
        self.calls["nvmlDeviceGetTotalEccErrors"] += 1
        v = self._get(handle, "ecc")
        if isinstance(v, dict):  # per (error type, counter type); the four must all be there
            v = v[(error_type, counter_type)]
            if isinstance(v, BaseException):
                raise v
        return v

    def reset(self) -> None:
        self.calls.clear()


ALL_REASONS = 0x7FF  # the eleven clock event reasons NVML knows


def ecc(
    corrected_volatile: Any = 0,
    uncorrected_volatile: Any = 0,
    corrected_aggregate: Any = 0,
    uncorrected_aggregate: Any = 0,
) -> dict:
    """nvmlDeviceGetTotalEccErrors's answers, keyed (NVML_MEMORY_ERROR_TYPE_*, NVML_*_ECC)."""
    return {
        (0, 0): corrected_volatile,
        (1, 0): uncorrected_volatile,
        (0, 1): corrected_aggregate,
        (1, 1): uncorrected_aggregate,
    }


def device(used: int, total: int, util: Any = 50, power_mw: Any = 250_000, temp: Any = 60, **kw: Any) -> dict:
    """A GPU; the detail fields (clocks 1410/1593 MHz, energy, throttle reasons, ECC) answer only with detail on."""
    d = {"memory": (used, total), "util": util, "power_mw": power_mw, "temp": temp, "compute": [], "graphics": []}
    d.update(
        sm_mhz=1410,
        mem_mhz=1593,
        energy_mj=5_000_000,
        reasons=0,
        reasons_supported=ALL_REASONS,
        ecc=ecc(),
    )
    d.update(kw)
    return d


def not_supported() -> FakeNVMLError:
    return FakeNVMLError(gpu_mod.NVML_ERROR_NOT_SUPPORTED)


def two_gpus() -> FakeNvml:
    """GPU 0: 20/80 GiB, this process 6 GiB (compute), other process 10 GiB; GPU 1: power NOT_SUPPORTED."""
    return FakeNvml(
        [
            device(20 * GiB, 80 * GiB, util=75, power_mw=312_500, temp=64, compute=[(PID, 6 * GiB), (1, 10 * GiB)]),
            device(40 * GiB, 80 * GiB, util=10, power_mw=not_supported(), temp=41, graphics=[(2, GiB)]),
        ]
    )

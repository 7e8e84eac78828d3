"""GPU gauges from NVML: memory, utilisation, power and temperature per device, read once per collection; opt-in
(``detail=True``, ``RYOT_TELEMETRY_GPU_DETAIL``) also SM and memory clocks, energy since start, throttle reasons and
ECC error counts.

gauges = install_gpu_gauges(meter, models={0: "llama-3-8b"})   # backend: pynvml (nvidia-ml-py) unless injected
...
gauges.close()                                                   # nvmlShutdown

The NVML functions used are behind ``NvmlBackend`` (the ``pynvml`` module satisfies it), so tests inject a fake,
the way ``prometheus_client.ProcessCollector(proc=...)`` injects ``/proc``. One *sweep* queries every device once;
the five gauges (and the derived token-efficiency gauge) share it: a gauge that asks again for a sweep it has already
read starts the next one, so each collection makes exactly one sweep however many gauges read it.

Failure handling never raises into the SDK and never invents zeros: no library or driver -> no GPU series and one log
line; a field NVML does not support on a device -> that field is skipped (and not asked again); a GPU lost mid-run ->
that device's series disappear, logged once; any other NVML error, or a value that cannot be a reading (wrong type,
negative, NaN, beyond the field's range) -> that field is skipped for this sweep, logged once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .. import catalogue
from ..catalogue import (
    BREAKDOWN_MEMORY_TYPES,
    ECC_COUNTERS,
    ECC_ERROR_TYPES,
    GPU_CLOCK_DOMAINS,
    GPU_THROTTLE_REASONS,
    NVML_MEMORY_TYPES,
)
from ..recording.instruments import create_instrument
from ..recording.labels import clip
from ..settings import Settings, device_id, gpu_enabled, gpu_models, parse_gpu_models

__all__ = [
    "BREAKDOWN_MEMORY_TYPES",
    "GpuGauges",
    "NvmlBackend",
    "device_id",
    "install_gpu_gauges",
    "parse_gpu_models",
]

_log = logging.getLogger("ryot_telemetry")

# NVML return codes (nvml.h; stable ABI). Errors raised by the backend carry one as ``.value``, like pynvml's.
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_TEMPERATURE_GPU = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1

_CLOCKS = dict(zip(GPU_CLOCK_DOMAINS, (NVML_CLOCK_SM, NVML_CLOCK_MEM)))
_ECC = {
    (error_type, counter): (nvml_error, nvml_counter)
    for error_type, nvml_error in zip(
        ECC_ERROR_TYPES, (NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED)
    )
    for counter, nvml_counter in zip(ECC_COUNTERS, (NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC))
}
_KNOWN_REASONS = (1 << len(GPU_THROTTLE_REASONS)) - 1
# Bounds past which a reading is garbage, not a measurement: NVML's counters are unsigned 64-bit, a clock beyond
# 100 GHz or a power draw beyond 100 kW is no GPU's.
_U64 = 2**64 - 1
_MAX_MHZ = 100_000
_MAX_MILLIWATTS = 100_000_000
_MAX_PROCESSES = 4096  # entries of one process list looked at: NVML lists at most a few hundred contexts


class NvmlBackend(Protocol):
    """The pynvml functions the gauges call; the ``pynvml`` module itself is one."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetMigMode(self, handle: Any) -> Any: ...  # [current, pending]
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int: ...
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # .used .free .total, bytes
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...  # .gpu, percent
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...  # milliwatts
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...  # Celsius
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> Any: ...  # [.pid, .usedGpuMemory]
    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> Any: ...
    # GPU depth (detail=True); a binding may lack any of these, then that field is not reported
    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int: ...  # MHz
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int: ...  # millijoules since the driver loaded
    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter_type: int) -> int: ...


class _Lost(Exception):
    """The device answered NVML_ERROR_GPU_IS_LOST."""


@dataclass
class _Device:
    """One queried device: a physical GPU, or a MIG instance of one (``device_id`` like ``0/1``)."""

    device_id: str
    handle: Any
    attrs: dict[str, str]
    mig_enabled: bool = False  # a MIG-enabled parent: utilisation is not supported there
    mig_instance: bool = False  # a MIG instance: memory and process memory only
    parent: str | None = None
    unsupported: set[str] = field(default_factory=set)
    energy_start: int | None = None  # NVML's energy counter (mJ) at its first good reading
    reasons_supported: int | None = None  # mask of the throttle reasons the device reports (None: not asked yet)


@dataclass
class _Sample:
    """One device's values from one sweep; None where NVML gave nothing."""

    device: _Device
    used: int | None = None
    free: int | None = None
    total: int | None = None
    process: int | None = None
    utilization: float | None = None
    power_watts: float | None = None
    temperature: float | None = None
    clocks_hz: dict[str, float] = field(default_factory=dict)  # clock domain -> Hz
    energy_joules: float | None = None  # since the first reading
    throttle: dict[str, int] = field(default_factory=dict)  # reason -> 1 active / 0 not, supported reasons only
    ecc: dict[tuple[str, str], int] = field(default_factory=dict)  # (error type, counter) -> errors

    @property
    def percent(self) -> float | None:
        if self.used is None or not self.total:
            return None
        return 100.0 * self.used / self.total


class GpuGauges:
    """The five ``ryot.gpu.*`` observable gauges over one NVML backend, plus engine-reported memory breakdowns.

    Created by ``install_gpu_gauges``. Without NVML (disabled, or no driver) the gauges still exist and carry only
    what an engine reports through ``set_memory_breakdown``.
    """

    def __init__(
        self, meter: Meter, backend: NvmlBackend | None, models: Mapping[str, str], pid: int, detail: bool = False
    ) -> None:
        self.models = dict(models)
        self.detail = detail
        self.pid = pid
        self._nvml = backend
        self._devices: list[_Device] = []
        self._lock = threading.Lock()
        self._samples: list[_Sample] = []
        self._readers: set[str] = set()
        self._breakdown: dict[tuple[str, str], float] = {}
        self._warned: set[tuple[str, ...]] = set()
        self._closed = False
        self.sweeps = 0
        if backend is not None:
            self._devices = self._discover(backend)

        def make(name: str, cb: Callable[[CallbackOptions], Iterable[Observation]]) -> Any:
            return create_instrument(meter, catalogue.get(name), callbacks=[cb])

        make("ryot.gpu.memory.usage", self._observe_memory)
        make("ryot.gpu.memory.percentage", self._field_callback("percentage", lambda s: s.percent))
        make("ryot.gpu.utilization", self._field_callback("utilization", lambda s: s.utilization))
        make("ryot.gpu.power", self._field_callback("power", lambda s: s.power_watts))
        make("ryot.gpu.temperature", self._field_callback("temperature", lambda s: s.temperature))
        if detail:
            make("ryot.gpu.clock", self._labelled_callback("clock", lambda s: s.clocks_hz, "clock_domain"))
            make("ryot.gpu.energy", self._field_callback("energy", lambda s: s.energy_joules))
            make("ryot.gpu.throttle", self._labelled_callback("throttle", lambda s: s.throttle, "throttle_reason"))
            make("ryot.gpu.ecc.errors", self._observe_ecc)

    @property
    def available(self) -> bool:
        """True while NVML is initialised (and not yet shut down)."""
        return self._nvml is not None and not self._closed

    @property
    def device_ids(self) -> list[str]:
        return [d.device_id for d in self._devices]

    # --- set-up -----------------------------------------------------------------------------------------------

    def _attrs(self, dev_id: str) -> dict[str, str]:
        model = self.models.get(dev_id)
        return {"device_id": dev_id, "model": model} if model else {"device_id": dev_id}

    def _discover(self, nvml: NvmlBackend) -> list[_Device]:
        devices: list[_Device] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            dev_id = str(index)
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as e:
                self._warn_once(
                    ("handle", dev_id), "ryot-telemetry: GPU %s is not readable (%s); skipping it", dev_id, e
                )
                continue
            dev = _Device(dev_id, handle, self._attrs(dev_id))
            devices.append(dev)
            try:
                dev.mig_enabled = nvml.nvmlDeviceGetMigMode(handle)[0] == NVML_DEVICE_MIG_ENABLE
            except Exception:  # NOT_SUPPORTED on GPUs without MIG
                dev.mig_enabled = False
            if dev.mig_enabled:
                devices.extend(self._discover_mig(nvml, dev))
        return devices

    def _discover_mig(self, nvml: NvmlBackend, parent: _Device) -> list[_Device]:
        out: list[_Device] = []
        try:
            count = nvml.nvmlDeviceGetMaxMigDeviceCount(parent.handle)
        except Exception:
            return out
        for i in range(count):
            try:
                handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent.handle, i)
            except Exception:  # NOT_FOUND: an empty MIG slot
                continue
            dev_id = f"{parent.device_id}/{i}"
            out.append(_Device(dev_id, handle, self._attrs(dev_id), mig_instance=True, parent=parent.device_id))
        return out

    # --- the sweep --------------------------------------------------------------------------------------------

    def _warn_once(self, key: tuple[str, ...], msg: str, *args: Any, level: int = logging.WARNING) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _log.log(level, msg, *args)

    def _query(self, dev: _Device, name: str, fn_name: str, *args: Any) -> Any:
        """Call one NVML function for one field; None if it failed. Raises ``_Lost`` when the GPU is gone.

        The function is looked up here, inside the guard: a binding or driver without it (NVML deprecates and
        removes calls) makes that one field unsupported, not the whole device sample.
        """
        if name in dev.unsupported:
            return None
        try:
            return getattr(self._nvml, fn_name)(dev.handle, *args)
        except AttributeError:
            dev.unsupported.add(name)
            _log.debug("ryot-telemetry: NVML binding has no %s; %s not reported", fn_name, name)
            return None
        except Exception as e:
            code = getattr(e, "value", None)
            if code == NVML_ERROR_GPU_IS_LOST:
                raise _Lost() from None
            if code in (NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND):
                dev.unsupported.add(name)
                _log.debug("ryot-telemetry: GPU %s does not support %s; not reported", dev.device_id, name)
            else:
                self._warn_once(
                    ("field", dev.device_id, name),
                    "ryot-telemetry: reading %s of GPU %s failed (%s); skipped until it succeeds",
                    name,
                    dev.device_id,
                    e,
                )
            return None

    def _process_bytes(self, dev: _Device) -> int | None:
        """This process's memory on the device; None if it has no context there or NVML does not say."""
        found = False
        per_list = []
        for name, fn_name in (
            ("compute_processes", "nvmlDeviceGetComputeRunningProcesses"),
            ("graphics_processes", "nvmlDeviceGetGraphicsRunningProcesses"),
        ):
            procs = self._query(dev, name, fn_name)
            total = 0
            try:
                entries = list(procs or ())[:_MAX_PROCESSES]
            except BaseException:  # not a list of processes: this list says nothing this sweep
                entries = []
            for p in entries:
                pid = _attr(p, "pid")
                if type(pid) is int and pid == self.pid:  # exactly an int: a hostile __eq__ is never called
                    used = _attr(p, "usedGpuMemory")
                    if used is None:  # NVML_VALUE_NOT_AVAILABLE (e.g. no permission under MIG)
                        continue
                    if self._valid(dev, "process memory", used, 0, _U64, True) is None:
                        return None
                    found = True
                    total += used
            per_list.append(total)
        # A process that is both compute and graphics (C+G) is listed twice with the same memory.
        return max(per_list) if found else None

    def _valid(self, dev: _Device, name: str, value: Any, low: float, high: float, integer: bool = False) -> Any:
        """``value`` if it can be a reading of ``name`` (a number within [low, high], an int where NVML gives one);
        else None, logged once: a binding or driver returning garbage loses that field for the sweep, nothing more."""
        try:
            ok = isinstance(value, int) if integer else isinstance(value, (int, float))
            if ok and not isinstance(value, bool) and math.isfinite(value) and low <= value <= high:
                return value
        except BaseException:  # a number subclass whose comparisons raise: not a reading either
            pass
        self._warn_once(
            ("garbage", dev.device_id, name),
            "ryot-telemetry: GPU %s reported an unusable %s (%s); skipped until it reports a valid one",
            dev.device_id,
            name,
            _describe(value),
        )
        return None

    def _read(self, dev: _Device) -> _Sample:
        s = _Sample(dev)
        mem = self._query(dev, "memory", "nvmlDeviceGetMemoryInfo")
        if mem is not None:
            parts = [self._valid(dev, "memory", _attr(mem, k), 0, _U64, True) for k in ("used", "free", "total")]
            if None not in parts:
                s.used, s.free, s.total = parts
        s.process = self._process_bytes(dev)
        if dev.mig_instance:
            return s  # NVML reports only memory and processes per MIG instance
        if not dev.mig_enabled:  # NVML: utilisation is NOT_SUPPORTED on a MIG-enabled GPU
            util = self._query(dev, "utilization", "nvmlDeviceGetUtilizationRates")
            if util is not None:
                gpu = self._valid(dev, "utilization", _attr(util, "gpu"), 0, 100)
                s.utilization = None if gpu is None else float(gpu)
        power = self._query(dev, "power", "nvmlDeviceGetPowerUsage")
        if power is not None and self._valid(dev, "power", power, 0, _MAX_MILLIWATTS) is not None:
            s.power_watts = power / 1000.0
        temp = self._query(dev, "temperature", "nvmlDeviceGetTemperature", NVML_TEMPERATURE_GPU)
        # NVML's temperature is an unsigned Celsius reading: a negative one is garbage, not frost.
        if temp is not None and self._valid(dev, "temperature", temp, 0, 1000) is not None:
            s.temperature = float(temp)
        if self.detail:
            self._read_detail(dev, s)
        return s

    def _read_detail(self, dev: _Device, s: _Sample) -> None:
        """Clocks, energy since start, throttle reasons and ECC counts; each absent where NVML gives nothing usable."""
        for domain, clock in _CLOCKS.items():
            mhz = self._query(dev, f"{domain} clock", "nvmlDeviceGetClockInfo", clock)
            if mhz is not None and self._valid(dev, f"{domain} clock", mhz, 0, _MAX_MHZ) is not None:
                s.clocks_hz[domain] = float(mhz) * 1e6
        energy = self._query(dev, "energy", "nvmlDeviceGetTotalEnergyConsumption")
        if energy is not None and self._valid(dev, "energy", energy, 0, _U64, True) is not None:
            if dev.energy_start is None:
                dev.energy_start = energy
            if energy >= dev.energy_start:
                s.energy_joules = (energy - dev.energy_start) / 1000.0
            else:  # the counter went backwards (driver reloaded): a restart, not negative energy
                self._warn_once(
                    ("energy reset", dev.device_id),
                    "ryot-telemetry: GPU %s energy counter went backwards; counting again from its new value",
                    dev.device_id,
                )
                dev.energy_start = energy
                s.energy_joules = 0.0
        self._read_throttle(dev, s)
        for key, (error_type, counter) in _ECC.items():
            count = self._query(dev, "ecc", "nvmlDeviceGetTotalEccErrors", error_type, counter)
            if count is not None and self._valid(dev, "ecc", count, 0, _U64, True) is not None:
                s.ecc[key] = count

    def _read_throttle(self, dev: _Device, s: _Sample) -> None:
        # NVML renamed "clocks throttle reasons" to "clocks event reasons" (same bits); a binding has one or both.
        event = hasattr(self._nvml, "nvmlDeviceGetCurrentClocksEventReasons")
        current, supported = (
            ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetSupportedClocksEventReasons")
            if event
            else ("nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetSupportedClocksThrottleReasons")
        )
        if dev.reasons_supported is None and "throttle" not in dev.unsupported:
            mask = self._query(dev, "supported throttle reasons", supported)
            # Without the supported mask (older binding), every known reason is reported.
            valid = None if mask is None else self._valid(dev, "supported throttle reasons", mask, 0, _U64, True)
            if valid is not None:
                dev.reasons_supported = valid & _KNOWN_REASONS
            elif "supported throttle reasons" in dev.unsupported:
                dev.reasons_supported = _KNOWN_REASONS
            else:
                return  # a transient failure: ask again next sweep rather than guess
        mask = self._query(dev, "throttle", current)
        if mask is None or self._valid(dev, "throttle", mask, 0, _U64, True) is None:
            return
        for bit, reason in enumerate(GPU_THROTTLE_REASONS):
            if dev.reasons_supported is not None and dev.reasons_supported >> bit & 1:
                s.throttle[reason] = mask >> bit & 1

    def sweep(self) -> list[_Sample]:
        """Query every device once, now. Devices that report NVML_ERROR_GPU_IS_LOST are dropped for good."""
        if not self.available:
            return []
        samples: list[_Sample] = []
        lost: set[str] = set()
        for dev in self._devices:
            if dev.parent in lost:
                continue
            try:
                samples.append(self._read(dev))
            except _Lost:
                lost.add(dev.device_id)
            except Exception as e:  # a backend misbehaving must not take the collection down
                self._warn_once(("sweep", dev.device_id), "ryot-telemetry: reading GPU %s failed: %r", dev.device_id, e)
        if lost:
            _log.warning(
                "ryot-telemetry: GPU %s lost (NVML_ERROR_GPU_IS_LOST); its series are no longer reported",
                ", ".join(sorted(lost)),
            )
            self._devices = [d for d in self._devices if d.device_id not in lost and d.parent not in lost]
            samples = [s for s in samples if s.device.parent not in lost]
        self.sweeps += 1
        return samples

    def samples(self, reader: str) -> list[_Sample]:
        """The current sweep for ``reader``; a reader that already read it starts the next one (one per collection)."""
        with self._lock:
            if reader in self._readers or not self._readers:
                self._samples = self.sweep()
                self._readers = set()
            self._readers.add(reader)
            return self._samples

    # --- callbacks --------------------------------------------------------------------------------------------

    def _observe_memory(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for s in self.samples("memory"):
            a = s.device.attrs
            for memory_type, nvml_bytes in zip(NVML_MEMORY_TYPES, (s.used, s.free, s.total, s.process)):
                if nvml_bytes is not None:
                    out.append(Observation(nvml_bytes, {**a, "memory_type": memory_type}))
        for (dev_id, memory_type), engine_bytes in list(self._breakdown.items()):
            out.append(Observation(engine_bytes, {**self._attrs(dev_id), "memory_type": memory_type}))
        return out

    def _field_callback(
        self, reader: str, value: Callable[[_Sample], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for s in self.samples(reader):
                v = value(s)
                if v is not None:
                    out.append(Observation(v, s.device.attrs))
            return out

        return observe

    def _labelled_callback(
        self, reader: str, values: Callable[[_Sample], Mapping[str, float]], label: str
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(v, {**s.device.attrs, label: key})
                for s in self.samples(reader)
                for key, v in values(s).items()
            ]

        return observe

    def _observe_ecc(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {**s.device.attrs, "ecc_error_type": error_type, "ecc_counter": counter})
            for s in self.samples("ecc")
            for (error_type, counter), count in s.ecc.items()
        ]

    # --- engine-reported breakdowns and derived values --------------------------------------------------------

    def set_memory_breakdown(self, device: int | str, memory_type: str, value: float | None) -> None:
        """Engine-reported GPU memory (model_weights, kv_cache, activations) in bytes; None removes the series."""
        dev_id = device_id(device)
        if memory_type not in BREAKDOWN_MEMORY_TYPES:
            raise ValueError(
                f"memory_type must be one of {', '.join(BREAKDOWN_MEMORY_TYPES)} "
                f"(used/free/total/process come from NVML), got {memory_type!r}"
            )
        if value is None:
            self._breakdown.pop((dev_id, memory_type), None)
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"GPU memory must be a finite number of bytes >= 0, got {value!r}")
        self._breakdown[(dev_id, memory_type)] = value

    def memory_percent_by_model(self, reader: str = "efficiency") -> dict[str, float]:
        """Memory used in percent of total for each named model, over all the devices it is named on.

        A model named on MIG instances counts those instances; a MIG parent named with the same model is then
        skipped, since its memory already includes theirs.
        """
        samples = self.samples(reader)
        parents_of_named = {
            (s.device.parent, self.models[s.device.device_id])
            for s in samples
            if s.device.mig_instance and s.device.device_id in self.models
        }
        used: dict[str, int] = {}
        total: dict[str, int] = {}
        for s in samples:
            model = self.models.get(s.device.device_id)
            if model is None or s.used is None or not s.total:
                continue
            if not s.device.mig_instance and (s.device.device_id, model) in parents_of_named:
                continue
            used[model] = used.get(model, 0) + s.used
            total[model] = total.get(model, 0) + s.total
        return {m: 100.0 * used[m] / total[m] for m in used}

    def close(self) -> None:
        """``nvmlShutdown`` (once); the gauges report nothing from NVML afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._samples = []
            nvml = self._nvml
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception:
                _log.debug("ryot-telemetry: nvmlShutdown failed", exc_info=True)


def _detail_setting(name: str, arg: Any) -> bool:
    """``Settings.gpu_detail``'s own loader: the argument if given, else ``RYOT_TELEMETRY_GPU_DETAIL``."""
    load = {f.name: f for f in fields(Settings)}["gpu_detail"].metadata["load"]
    return bool(load(name, arg))


def _attr(obj: Any, name: str) -> Any:
    """``obj.name``, or None when reading it fails (a binding's struct that raises is a field NVML did not give)."""
    try:
        return getattr(obj, name)
    except BaseException:  # a struct whose fields raise anything: the field is absent, the sweep goes on
        return None


def _describe(value: Any) -> str:
    """A short, safe description of a value a backend returned (its repr may raise or be huge)."""
    try:
        text = repr(value)
    except BaseException:  # a hostile object's __repr__: the sweep goes on
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:40] + "..."


def _load_pynvml() -> Any:
    import pynvml  # nvidia-ml-py; ImportError when not installed

    return pynvml


def install_gpu_gauges(
    meter: Meter,
    *,
    enabled: bool | None = None,
    models: Mapping[Any, str] | None = None,
    backend: NvmlBackend | None = None,
    pid: int | None = None,
    detail: bool | None = None,
) -> GpuGauges:
    """Create the ``ryot.gpu.*`` gauges; NVML is initialised once here and shut down by ``GpuGauges.close``.

    ``enabled``: True (warn when NVML is missing), False (no NVML), None (``RYOT_TELEMETRY_GPU``, default auto: use
    NVML when a driver is present, log at info otherwise). ``models``: model served on each device, adding a
    ``model`` label (default from ``RYOT_TELEMETRY_GPU_MODELS``). ``backend``: the NVML functions (default
    ``pynvml``). ``pid``: the process whose memory ``memory_type=process`` reports (default this one).
    ``detail``: also SM and memory clocks, energy since start, throttle reasons and ECC counts (default from
    ``RYOT_TELEMETRY_GPU_DETAIL``, else off).
    Raises ``ConfigurationError`` (a ``ValueError``) only for bad configuration; NVML failures are logged, never raised.
    """
    details = _detail_setting("detail", detail)
    return gauges_for(meter, gpu_enabled("gpu", enabled), gpu_models("gpu_models", models), backend, pid, details)


def gauges_for(
    meter: Meter,
    mode: bool | None,
    models: Mapping[str, str],
    backend: NvmlBackend | None,
    pid: int | None = None,
    detail: bool = False,
) -> GpuGauges:
    """``install_gpu_gauges`` for settings already checked (``Settings.gpu`` / ``gpu_models``): reads no variable."""
    named = {dev: clip(model) for dev, model in models.items()}
    nvml: Any = None
    if mode is not False:
        level = logging.WARNING if mode else logging.INFO
        try:
            nvml = backend if backend is not None else _load_pynvml()
            nvml.nvmlInit()
        except Exception as e:
            _log.log(level, "ryot-telemetry: NVML not available (%s); no GPU metrics", e or type(e).__name__)
            nvml = None
    try:
        gauges = GpuGauges(meter, nvml, named, os.getpid() if pid is None else pid, detail)
    except Exception as e:  # device discovery failed after nvmlInit
        _log.log(
            logging.WARNING if mode else logging.INFO,
            "ryot-telemetry: NVML device discovery failed (%s); no GPU metrics",
            e,
        )
        if nvml is not None:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
        gauges = GpuGauges(meter, None, named, os.getpid() if pid is None else pid, detail)
    return gauges

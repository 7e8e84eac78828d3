"""GPU gauges from NVML: memory, utilisation, power and temperature per device, read once per collection.

gauges = install_gpu_gauges(meter, models={0: "llama-3-8b"})   # backend: pynvml (nvidia-ml-py) unless injected
...
gauges.close()                                                   # nvmlShutdown

The NVML functions used are behind ``NvmlBackend`` (the ``pynvml`` module satisfies it), so tests inject a fake,
the way ``prometheus_client.ProcessCollector(proc=...)`` injects ``/proc``. One *sweep* queries every device once;
the five gauges (and the derived token-efficiency gauge) share it: a gauge that asks again for a sweep it has already
read starts the next one, so each collection makes exactly one sweep however many gauges read it.

Failure handling never raises into the SDK and never invents zeros: no library or driver -> no GPU series and one log
line; a field NVML does not support on a device -> that field is skipped (and not asked again); a GPU lost mid-run ->
that device's series disappear, logged once; any other NVML error -> that field is skipped for this sweep.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .. import catalogue
from ..catalogue import BREAKDOWN_MEMORY_TYPES, NVML_MEMORY_TYPES
from ..recording.instruments import create_instrument
from ..recording.labels import clip
from ..settings import device_id, gpu_enabled, gpu_models, parse_gpu_models

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

    def __init__(self, meter: Meter, backend: NvmlBackend | None, models: Mapping[str, str], pid: int) -> None:
        self.models = dict(models)
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
            for p in procs or ():
                if getattr(p, "pid", None) == self.pid:
                    used = getattr(p, "usedGpuMemory", None)
                    if used is None:  # NVML_VALUE_NOT_AVAILABLE (e.g. no permission under MIG)
                        continue
                    found = True
                    total += int(used)
            per_list.append(total)
        # A process that is both compute and graphics (C+G) is listed twice with the same memory.
        return max(per_list) if found else None

    def _read(self, dev: _Device) -> _Sample:
        s = _Sample(dev)
        mem = self._query(dev, "memory", "nvmlDeviceGetMemoryInfo")
        if mem is not None:
            s.used, s.free, s.total = int(mem.used), int(mem.free), int(mem.total)
        s.process = self._process_bytes(dev)
        if dev.mig_instance:
            return s  # NVML reports only memory and processes per MIG instance
        if not dev.mig_enabled:  # NVML: utilisation is NOT_SUPPORTED on a MIG-enabled GPU
            util = self._query(dev, "utilization", "nvmlDeviceGetUtilizationRates")
            if util is not None:
                s.utilization = float(util.gpu)
        power = self._query(dev, "power", "nvmlDeviceGetPowerUsage")
        if power is not None:
            s.power_watts = power / 1000.0
        temp = self._query(dev, "temperature", "nvmlDeviceGetTemperature", NVML_TEMPERATURE_GPU)
        if temp is not None:
            s.temperature = float(temp)
        return s

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
) -> GpuGauges:
    """Create the ``ryot.gpu.*`` gauges; NVML is initialised once here and shut down by ``GpuGauges.close``.

    ``enabled``: True (warn when NVML is missing), False (no NVML), None (``RYOT_TELEMETRY_GPU``, default auto: use
    NVML when a driver is present, log at info otherwise). ``models``: model served on each device, adding a
    ``model`` label (default from ``RYOT_TELEMETRY_GPU_MODELS``). ``backend``: the NVML functions (default
    ``pynvml``). ``pid``: the process whose memory ``memory_type=process`` reports (default this one).
    Raises ``ConfigurationError`` (a ``ValueError``) only for bad configuration; NVML failures are logged, never raised.
    """
    return gauges_for(meter, gpu_enabled("gpu", enabled), gpu_models("gpu_models", models), backend, pid)


def gauges_for(
    meter: Meter, mode: bool | None, models: Mapping[str, str], backend: NvmlBackend | None, pid: int | None = None
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
        gauges = GpuGauges(meter, nvml, named, os.getpid() if pid is None else pid)
    except Exception as e:  # device discovery failed after nvmlInit
        _log.log(
            logging.WARNING if mode else logging.INFO,
            "ryot-telemetry: NVML device discovery failed (%s); no GPU metrics",
            e,
        )
        if nvml is not None:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
        gauges = GpuGauges(meter, None, named, os.getpid() if pid is None else pid)
    return gauges

"""Engine-reported metrics: what only the inference engine knows (model loads, evictions, start-up phases, queue,
KV cache size, engine step batch sizes, GPU memory breakdowns).

engine = tel.engine                                   # or EngineMetrics(meter)
with engine.model_loading("llama-3-8b", load_type="cold_start"):
    load()                                            # success, or failed if it raises (the exception propagates)
engine.set_queue_depth("llama-3-8b", "normal", 12)
engine.record_engine_batch("llama-3-8b", 24)

Label values the SPEC enumerates are validated here, at the call, with a ``ValueError`` naming the allowed values;
model names go through the same bounded ``ModelLabels`` as the router's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .. import catalogue
from ..catalogue import ENGINE_STEP, LOAD_ATTEMPT_TYPES, LOAD_FAILED, LOAD_PARTIAL, LOAD_SUCCESS, LOAD_TYPES
from ..recording.instruments import create_instrument
from ..recording.labels import OVERFLOW, ModelLabels, batch_size_label

__all__ = ["LOAD_ATTEMPT_TYPE", "EngineMetrics", "ModelLoad"]

_log = logging.getLogger("ryot_telemetry")
_clock = time.perf_counter

LOAD_ATTEMPT_TYPE = dict(zip(LOAD_TYPES, LOAD_ATTEMPT_TYPES))
"""``load_type`` of ``ryot_model_loading_time_seconds`` -> ``load_type`` of ``ryot_model_load_attempts_total``
(the SPEC names the two label sets differently)."""

DEFAULT_MAX_KV_SERIES = 256
"""Distinct (model, context_length, batch_size) KV-cache series kept; later ones use context_length=__overflow__."""


def _allowed(metric: str, label: str) -> tuple[str, ...]:
    return catalogue.get(metric).label_values[label]


def _check(metric: str, label: str, value: object) -> str:
    allowed = _allowed(metric, label)
    if value not in allowed:
        raise ValueError(f"{label} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _non_negative(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


def _count(what: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


class ModelLoad:
    """Yielded by ``EngineMetrics.model_loading``; call ``partial()`` when the load completed only partly."""

    __slots__ = ("result",)

    def __init__(self) -> None:
        self.result = LOAD_SUCCESS

    def partial(self) -> None:
        """Record this load as ``result=partial`` (e.g. some shards or adapters failed) instead of success."""
        self.result = LOAD_PARTIAL


class EngineMetrics:
    """The engine-facing instruments. Construct once per meter (``configure()`` does: ``tel.engine``).

    ``models``: the label guard to share (default: the recorder's, else a new one). ``recorder``: reuse its
    ``ryot.batch_size.distribution`` histogram rather than creating a second one. ``gpu``: the ``GpuGauges``
    whose ``ryot.gpu.memory.usage`` gauge carries ``set_gpu_memory_breakdown`` values.
    """

    def __init__(
        self,
        meter: Meter,
        models: ModelLabels | None = None,
        *,
        recorder: Any = None,
        gpu: Any = None,
        buckets: Mapping[str, Sequence[float]] | None = None,
        max_kv_series: int = DEFAULT_MAX_KV_SERIES,
    ) -> None:
        if max_kv_series < 1:
            raise ValueError(f"max_kv_series must be >= 1, got {max_kv_series}")
        if models is None:
            models = recorder.models if recorder is not None else ModelLabels()
        self.models = models
        self.recorder = recorder
        self.gpu = gpu
        self.max_kv_series = max_kv_series
        self._queue: dict[tuple[str, str], int] = {}
        self._kv: dict[tuple[str, str, str], float] = {}
        self._kv_lock = threading.Lock()
        self._hooks: list[Callable[[], object]] = []
        self._hook_failed: set[int] = set()
        b = buckets or {}

        def make(name: str, **kw: Any) -> Any:
            return create_instrument(meter, catalogue.get(name), buckets=b.get(name), **kw)

        self.loading_time = make("ryot.model.loading_time")
        self.load_attempts = make("ryot.model.load_attempts")
        self.evictions = make("ryot.model.cache_evictions")
        self.startup_time = make("ryot.initialization.startup_time")
        self.batch = recorder.batch if recorder is not None else make("ryot.batch_size.distribution")
        # on_collect hooks run at the start of every collection, right after the recorder's drain; without a
        # recorder whose collections can be hooked, the queue-depth callback (created first) runs them.
        self._hooks_in_callback = True
        if recorder is not None:
            try:
                recorder.before_collection(self._run_hooks)
                self._hooks_in_callback = False
            except (AttributeError, RuntimeError):
                pass
        make("ryot.queue.depth", callbacks=[self._observe_queue])
        make("ryot.kv_cache.size", callbacks=[self._observe_kv])

    # --- model loads ------------------------------------------------------------------------------------------

    @contextmanager
    def model_loading(
        self, model: object, load_type: str = "cold_start", device_type: str = "gpu"
    ) -> Iterator[ModelLoad]:
        """Time a model load: ``success`` on normal exit (``partial`` if ``.partial()`` was called), ``failed`` if
        the block raises; the exception propagates unchanged. Loading time is recorded for success and partial
        loads only (a failed load never became ready)."""
        self._check_load(load_type, device_type)
        load = ModelLoad()
        start = _clock()
        try:
            yield load
        except BaseException:
            self._record_load(model, None, load_type, device_type, LOAD_FAILED)
            raise
        self._record_load(model, max(_clock() - start, 0.0), load_type, device_type, load.result)

    def record_model_load(
        self,
        model: object,
        seconds: float | None,
        load_type: str = "cold_start",
        device_type: str = "gpu",
        result: str = LOAD_SUCCESS,
    ) -> None:
        """A load the engine timed itself. ``result``: success, failed or partial. A failed load counts as an
        attempt only, like ``model_loading`` (it never became ready, so it has no loading time)."""
        self._check_load(load_type, device_type)
        _check("ryot.model.load_attempts", "result", result)
        if seconds is not None:
            _non_negative("loading time", seconds)
        self._record_load(model, None if result == LOAD_FAILED else seconds, load_type, device_type, result)

    @staticmethod
    def _check_load(load_type: str, device_type: str) -> None:
        _check("ryot.model.loading_time", "load_type", load_type)
        # isprintable() is False for control characters and lone surrogates, which no exporter could encode
        ok = isinstance(device_type, str) and 0 < len(device_type) <= 32 and device_type.isprintable()
        if not ok:
            raise ValueError(f"device_type must be a short printable string such as gpu or cpu, got {device_type!r}")

    def _record_load(self, model: object, seconds: float | None, load_type: str, device_type: str, result: str) -> None:
        label = self.models(model)
        if seconds is not None:
            self.loading_time.record(seconds, {"model": label, "load_type": load_type, "device_type": device_type})
        self.load_attempts.add(1, {"model": label, "result": result, "load_type": LOAD_ATTEMPT_TYPE[load_type]})

    def record_eviction(self, model: object, reason: str) -> None:
        """A model evicted from accelerator memory; ``reason``: memory_pressure, timeout or manual."""
        _check("ryot.model.cache_evictions", "eviction_reason", reason)
        self.evictions.add(1, {"model": self.models(model), "eviction_reason": reason})

    # --- start-up ---------------------------------------------------------------------------------------------

    @contextmanager
    def startup_phase(self, phase: str) -> Iterator[None]:
        """Time a start-up phase (model_load, cache_init, warmup, ready); recorded when the block completes, not
        when it raises (the exception propagates unchanged)."""
        _check("ryot.initialization.startup_time", "startup_phase", phase)
        start = _clock()
        yield
        self.startup_time.record(max(_clock() - start, 0.0), {"startup_phase": phase})

    def record_startup_phase(self, phase: str, seconds: float) -> None:
        """A start-up phase the engine timed itself."""
        _check("ryot.initialization.startup_time", "startup_phase", phase)
        self.startup_time.record(_non_negative("startup time", seconds), {"startup_phase": phase})

    # --- gauges -----------------------------------------------------------------------------------------------

    def set_queue_depth(self, model: object, priority: str, depth: int) -> None:
        """Requests waiting for the engine, by ``priority`` (high, normal, low); reported until set again."""
        _check("ryot.queue.depth", "priority_level", priority)
        self._queue[(self.models(model), priority)] = _count("queue depth", depth)

    def set_kv_cache_size(self, model: object, context_length: int, batch_size: int, size_bytes: float) -> None:
        """KV cache memory in use for a model at a context length and batch size. ``batch_size`` is bucketed like
        the latency label (1, 2-4, ..., 33+); past ``max_kv_series`` combinations context_length is __overflow__."""
        ctx = str(_count("context_length", context_length, 1))
        key = (self.models(model), ctx, batch_size_label(_count("batch_size", batch_size, 1)))
        value = _non_negative("KV cache size", size_bytes)
        with self._kv_lock:
            if key not in self._kv and len(self._kv) >= self.max_kv_series:
                key = (key[0], OVERFLOW, key[2])
            self._kv[key] = value

    def record_engine_batch(self, model: object, size: int, request_type: str = ENGINE_STEP) -> None:
        """Sequences in one engine step, into ``ryot_batch_size_distribution{request_type="engine_step"}``: the
        router's per-request batch sizes share the histogram under their own request_type (standard, streaming,
        batch), so averages over requests and over engine steps stay apart."""
        _check("ryot.batch_size.distribution", "request_type", request_type)
        self.batch.record(_count("batch size", size, 1), {"model": self.models(model), "request_type": request_type})

    def set_gpu_memory_breakdown(self, device_id: int | str, memory_type: str, size_bytes: float | None) -> None:
        """GPU memory the engine attributes to model_weights, kv_cache or activations on a device, exposed as
        ``ryot_gpu_memory_usage_bytes{memory_type=...}``; None removes the series."""
        if self.gpu is None:
            raise RuntimeError(
                "no GPU gauges to report into: construct EngineMetrics(..., gpu=install_gpu_gauges(...))"
            )
        self.gpu.set_memory_breakdown(device_id, memory_type, size_bytes)

    def set_kv_cache_hit_ratio(self, model: object, context_type: str, ratio: float) -> None:
        """The engine's own KV cache hit ratio (0-1) for a model and ``context_type`` (conversation, batch,
        streaming), exposed as ``ryot_kv_cache_hit_ratio``; it replaces the ratio derived from usage there."""
        if self.recorder is None:
            raise RuntimeError("no recorder to report into: construct EngineMetrics(..., recorder=recorder)")
        self.recorder.set_kv_cache_hit_ratio(model, context_type, ratio)

    def on_collect(self, hook: Callable[[], object]) -> Callable[[], object]:
        """Run ``hook()`` at every collection, before the queue-depth and KV-cache gauges are read, so an engine can
        report them by pulling its scheduler state instead of pushing on every change::

            engine.on_collect(lambda: engine.set_queue_depth("llama", "normal", scheduler.num_waiting))

        An exception from the hook is logged once and the collection goes on. Returns ``hook`` (usable as a
        decorator)."""
        if not callable(hook):
            raise ValueError(f"on_collect needs a callable, got {hook!r}")
        self._hooks.append(hook)
        return hook

    def _run_hooks(self) -> None:
        for hook in list(self._hooks):
            try:
                hook()
            except Exception:
                if id(hook) not in self._hook_failed:
                    self._hook_failed.add(id(hook))
                    _log.warning("ryot-telemetry: engine on_collect hook %r failed", hook, exc_info=True)

    def _observe_queue(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._hooks_in_callback:
            self._run_hooks()  # registered before ryot.kv_cache.size, so the SDK calls this first
        return [Observation(n, {"model": m, "priority_level": p}) for (m, p), n in list(self._queue.items())]

    def _observe_kv(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._kv_lock:
            items = list(self._kv.items())
        return [Observation(v, {"model": m, "context_length": c, "batch_size": b}) for (m, c, b), v in items]

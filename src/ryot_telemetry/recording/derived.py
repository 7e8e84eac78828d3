"""Derived metrics (catalogue ``source="derived"``): values computed from other measurements, not measured.

- ``ryot.sliding_tokens_per_second{model, time_window}``: completion tokens over the last 1m/5m/15m;
- ``ryot.kv_cache.hit_ratio{model, context_type}``: engine-reported, else cached / prompt tokens over 5 minutes;
- ``ryot.token.efficiency_ratio{model}``: completion tokens/s over 1 minute per percent of GPU memory used.

The recorder feeds ``SlidingWindows`` from finished requests at drain time (never on the request path); the
gauges read the windows when a reader collects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .. import catalogue
from ..catalogue import BATCH, CONVERSATION, STANDARD, STREAMING, TIME_WINDOWS
from .instruments import create_instrument
from .labels import DEFAULT_MAX_LABEL_LENGTH, ModelLabels, clip

__all__ = ["DerivedGauges", "GpuMemoryShares", "SlidingWindows", "TokenRates", "install_token_efficiency"]


class TokenRates(Protocol):
    """Where the efficiency gauge reads completion tokens/s: a process's sliding windows, or the merged ones of a
    multi-process server."""

    def rate(self, model: str, seconds: int = 60) -> float | None: ...


class GpuMemoryShares(Protocol):
    """Where the efficiency gauge reads GPU memory used (percent) by the model named on each device."""

    def memory_percent_by_model(self) -> Mapping[str, float]: ...


_clock = time.perf_counter
_K = TypeVar("_K")

CONTEXT_TYPE = {STANDARD: CONVERSATION, STREAMING: STREAMING, BATCH: BATCH}
"""``generation_mode`` of a request -> ``context_type`` of the KV hit ratio."""
WINDOWS = tuple(zip(TIME_WINDOWS, (60, 300, 900)))
"""(time_window label, seconds) of the sliding tokens/s gauge."""
HIT_RATIO_WINDOW = 300
"""Seconds of usage the usage-derived KV hit ratio covers."""
RING_SECONDS = 900
"""Seconds kept by the sliding windows (the longest window)."""


class _Ring:
    """Per-second sums over the last ``RING_SECONDS`` seconds, up to ``head`` (the newest second added).

    Invariant: slot ``s % RING_SECONDS`` holds exactly the sum of second ``s`` for every ``s`` in
    ``(head - RING_SECONDS, head]``; a slot is zeroed when ``head`` moves past the second it held. So a window is a
    contiguous (circular) run of slots, summed with ``sum()`` over list slices in C, never a scan of every slot
    with a time-stamp test: the scrape and every multi-process hand-off read three windows per model.
    """

    __slots__ = ("head", "values")

    def __init__(self) -> None:
        self.values = [0] * RING_SECONDS
        self.head: int | None = None

    def _advance(self, now_s: int) -> None:
        head = self.head
        values = self.values
        if head is None or now_s - head >= RING_SECONDS:
            values[:] = [0] * RING_SECONDS  # every slot held a second that is now out of the ring
        else:
            for s in range(head + 1, now_s + 1):
                values[s % RING_SECONDS] = 0
        self.head = now_s

    def add(self, now_s: int, value: int) -> None:
        if self.head is None or now_s > self.head:
            self._advance(now_s)
        elif now_s <= self.head - RING_SECONDS:
            return  # RING_SECONDS or more older than the newest second: outside every window
        self.values[now_s % RING_SECONDS] += value

    def sum(self, now_s: int, seconds: int) -> int:
        """Sum over the seconds in ``(now_s - seconds, now_s]`` (``seconds`` at most ``RING_SECONDS``)."""
        head = self.head
        if head is None:
            return 0
        hi = min(now_s, head)  # seconds after head hold nothing yet
        lo = max(now_s - seconds, head - RING_SECONDS)  # the ring keeps nothing at or before head - RING_SECONDS
        if hi <= lo:
            return 0
        a = (lo + 1) % RING_SECONDS
        b = a + (hi - lo)
        values = self.values
        if b <= RING_SECONDS:
            return sum(values[a:b])
        return sum(values[a:]) + sum(values[: b - RING_SECONDS])


def _ring(rings: dict[_K, _Ring], key: _K) -> _Ring:
    ring = rings.get(key)
    if ring is None:
        ring = rings[key] = _Ring()
    return ring


class SlidingWindows:
    """Sliding windows of completion, prompt and cached tokens, fed at drain time with per-second sums."""

    __slots__ = ("_cached", "_completion", "_lock", "_prompt", "started")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reinit_after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's drainer may have held it mid-slice at the fork); the
        windows' contents stay (``reset`` empties them)."""
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Start empty, in place (the gauges hold this object): a forked child's own windows."""
        self._lock = threading.Lock()
        self._completion: dict[str, _Ring] = {}
        self._prompt: dict[tuple[str, str], _Ring] = {}
        self._cached: dict[tuple[str, str], _Ring] = {}
        self.started = _clock()

    def add_sums(
        self, completion: Mapping[tuple[str, int], int], cache: Mapping[tuple[str, str, int], list[int]]
    ) -> None:
        """Per-second sums aggregated by a drain: completion tokens by (model, second), [prompt, cached] tokens by
        (model, context type, second). One ring update per series and second instead of one per request."""
        with self._lock:
            for (model, now_s), tokens in completion.items():
                _ring(self._completion, model).add(now_s, tokens)
            for (model, ctx, now_s), (prompt, cached) in cache.items():
                _ring(self._prompt, (model, ctx)).add(now_s, prompt)
                _ring(self._cached, (model, ctx)).add(now_s, cached)

    def _divisor(self, now: float, seconds: int) -> float:
        # A window longer than the recorder's life would understate the rate.
        return min(float(seconds), max(now - self.started, 1.0))

    def token_rates(self) -> list[tuple[str, str, float]]:
        now = _clock()
        now_s = int(now)
        with self._lock:
            return [
                (model, label, ring.sum(now_s, seconds) / self._divisor(now, seconds))
                for model, ring in self._completion.items()
                for label, seconds in WINDOWS
            ]

    def rate(self, model: str, seconds: int = 60) -> float | None:
        """Completion tokens per second for ``model`` over the last ``seconds``; None if it never produced any."""
        now = _clock()
        with self._lock:
            ring = self._completion.get(model)
            return None if ring is None else ring.sum(int(now), seconds) / self._divisor(now, seconds)

    def hit_ratios(self, seconds: int = HIT_RATIO_WINDOW) -> list[tuple[str, str, float]]:
        now_s = int(_clock())
        out = []
        with self._lock:
            for key, ring in self._prompt.items():
                prompt = ring.sum(now_s, seconds)
                if prompt > 0:
                    # within [0, 1] whatever was added (the recorder clamps cached <= prompt per request already)
                    ratio = self._cached[key].sum(now_s, seconds) / prompt
                    out.append((key[0], key[1], min(max(ratio, 0.0), 1.0)))
        return out


class DerivedGauges:
    """The sliding tokens/s and KV hit ratio gauges over one ``SlidingWindows``, plus engine-reported hit ratios.

    Created by the ``Recorder`` after its in-flight gauge, whose callback drains the queue: the SDK runs callbacks
    in creation order, so these read windows that already hold every request finished before the collection.
    """

    def __init__(self, meter: Meter, models: ModelLabels) -> None:
        self.models = models
        self.windows = SlidingWindows()
        self._engine_hit_ratio: dict[tuple[str, str], float] = {}
        self._attrs: dict[tuple[str, str, str], dict[str, str]] = {}
        for name, cb in (
            ("ryot.sliding_tokens_per_second", self._observe_token_rates),
            ("ryot.kv_cache.hit_ratio", self._observe_hit_ratio),
        ):
            create_instrument(meter, catalogue.get(name), callbacks=[cb])

    def _a(self, name: str, model: str, value: str) -> dict[str, str]:
        key = (name, model, value)
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = self._attrs[key] = dict(zip(catalogue.get(name).labels, (model, value)))
        return attrs

    def _observe_token_rates(self, options: CallbackOptions) -> Iterable[Observation]:
        name = "ryot.sliding_tokens_per_second"
        return [Observation(rate, self._a(name, m, w)) for m, w, rate in self.windows.token_rates()]

    def _observe_hit_ratio(self, options: CallbackOptions) -> Iterable[Observation]:
        name = "ryot.kv_cache.hit_ratio"
        engine = dict(self._engine_hit_ratio)
        out = [Observation(v, self._a(name, m, c)) for (m, c), v in engine.items()]
        out.extend(Observation(v, self._a(name, m, c)) for m, c, v in self.windows.hit_ratios() if (m, c) not in engine)
        return out

    def set_kv_cache_hit_ratio(self, model: object, context_type: str, ratio: float) -> None:
        """Engine-reported KV cache hit ratio; overrides the usage-derived one for that model and context."""
        allowed = catalogue.get("ryot.kv_cache.hit_ratio").label_values["context_type"]
        if context_type not in allowed:
            raise ValueError(f"context_type must be one of {', '.join(allowed)}, got {context_type!r}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise ValueError(f"hit ratio must be a number within [0, 1], got {ratio!r}")
        self._engine_hit_ratio[(self.models(model), context_type)] = float(ratio)


def install_token_efficiency(
    meter: Meter, rates: TokenRates, gauges: GpuMemoryShares, max_length: int = DEFAULT_MAX_LABEL_LENGTH
) -> Any:
    """``ryot.token.efficiency_ratio`` = completion tokens/s over 1 minute / GPU memory used (percent), per model.

    A model gets a point only when it is named on a device (``models=``/``RYOT_TELEMETRY_GPU_MODELS``), ``rates``
    has seen its tokens, and the memory percentage is known and > 0. ``max_length``: the label clip of the model
    names ``rates`` is keyed by.
    """

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for model, percent in gauges.memory_percent_by_model().items():
            if percent <= 0:
                continue
            label = clip(model, max_length)
            rate = rates.rate(label, 60)
            if rate is not None:
                out.append(Observation(rate / percent, {"model": label}))
        return out

    return create_instrument(meter, catalogue.get("ryot.token.efficiency_ratio"), callbacks=[observe])

"""Process-wide state, all of it in one place: what ``configure()`` and the configurator built, the recorder each
global MeterProvider got when ``instrument_router`` was called without one, and who paused the cyclic garbage
collector (``gc_paused``).

Everything else passes objects explicitly; read the state only through these functions.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .recording.recorder import Recorder
from .settings import Settings

__all__ = [
    "Running",
    "auto_telemetry",
    "current",
    "first_time",
    "gc_paused",
    "model_providers",
    "recorder_for",
    "replace_current",
    "set_auto_telemetry",
    "set_model_providers",
    "unset_current",
]


class Running(Protocol):
    """What the state keeps of a ``telemetry.Telemetry`` (this module sits below it, so it names only what its
    readers use)."""

    @property
    def meter_provider(self) -> Any: ...

    @property
    def recorder(self) -> Recorder: ...

    @property
    def settings(self) -> Settings | None: ...

    @property
    def closed(self) -> bool: ...


_lock = threading.Lock()
_current: Running | None = None
_auto: Running | None = None
# Keyed by the provider object itself (weakly): an id() could be reused by a later provider after this one is freed.
_recorders: weakref.WeakKeyDictionary[Any, Recorder] = weakref.WeakKeyDictionary()
# Recorder -> the sources.providers.ModelProviders that feeds its meter's ryot_model_info (assemble() makes it);
# the router wrappers tell it which routers they saw.
_providers: weakref.WeakKeyDictionary[Recorder, Any] = weakref.WeakKeyDictionary()


def current() -> Running | None:
    """The Telemetry of the last ``configure()``, until it is shut down."""
    return _current


def replace_current(tel: Running) -> Running | None:
    """Make ``tel`` the current Telemetry; returns the one it replaces (None if none)."""
    global _current
    with _lock:
        previous, _current = _current, tel
    return previous


def unset_current(tel: Running) -> None:
    """``tel`` shut down: forget it, unless a later ``configure()`` already replaced it."""
    global _current
    with _lock:
        if _current is tel:
            _current = None


def auto_telemetry() -> Running | None:
    """What ``RyotConfigurator`` (``opentelemetry-instrument``) built in this process, if it ran."""
    return _auto


def set_auto_telemetry(tel: Running) -> None:
    global _auto
    _auto = tel


def recorder_for(provider: Any, build: Callable[[], Recorder]) -> Recorder:
    """The recorder made for ``provider`` (a MeterProvider), built once with ``build``."""
    with _lock:
        rec = _recorders.get(provider)
        if rec is None:
            rec = _recorders[provider] = build()
        return rec


_once: set[str] = set()


def first_time(key: str) -> bool:
    """True the first time ``key`` is asked about in this process (for what is said once per process)."""
    with _lock:
        if key in _once:
            return False
        _once.add(key)
        return True


def set_model_providers(recorder: Recorder, providers: Any) -> None:
    """``providers`` (a ``sources.providers.ModelProviders``) feeds ``ryot_model_info`` for ``recorder``'s models."""
    with _lock:
        _providers[recorder] = providers


def model_providers(recorder: Recorder) -> Any:
    """The ``ModelProviders`` of ``recorder`` (None: it was built without ``ryot_model_info``)."""
    return _providers.get(recorder)


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_resume = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while the multi-process hand-off collects and encodes.

    A hand-off allocates a few objects per series that all live until it ends and die by reference count, in no
    cycle. With the collector on, they survive young collections and are promoted, which triggers full
    collections of the whole heap, more often the more series there are: the hand-off's cost then grows faster
    than its series (per doubling of the models 2.2x from 40 to 80 models, 3.0x to 160, 2.6x to 320), and next to
    a million objects of the application's, 100 models' hand-off takes 1.7x the CPU time it takes paused
    (``python -m benchmarks --only scale``). Paused, nothing is promoted and nothing needs collecting; the cost
    doubles with the series. Collection stays off process-wide for that time (about 0.7 ms per model); it is
    resumed only if it was on, when the last of overlapping pausers ends.
    """
    global _gc_pausers, _gc_resume
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_resume:
                gc.enable()

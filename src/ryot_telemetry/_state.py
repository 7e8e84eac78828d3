"""Process-wide state, all of it in one place: what ``configure()`` and the configurator built, and the recorder
each global MeterProvider got when ``instrument_router`` was called without one.

Everything else passes objects explicitly; read the state only through these functions.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .recording.recorder import Recorder
from .settings import Settings

__all__ = [
    "Running",
    "auto_telemetry",
    "current",
    "recorder_for",
    "replace_current",
    "set_auto_telemetry",
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

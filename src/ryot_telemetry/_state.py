"""Process-wide state, all of it in one place: what ``configure()`` and the configurator built, and the recorder
each global MeterProvider got when ``instrument_router`` was called without one.

Everything else passes objects explicitly; read the state only through these functions.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recording.recorder import Recorder
    from .telemetry import Telemetry

__all__ = ["auto_telemetry", "current", "recorder_for", "replace_current", "set_auto_telemetry", "unset_current"]

_lock = threading.Lock()
_current: Telemetry | None = None
_auto: Telemetry | None = None
# Keyed by the provider object itself (weakly): an id() could be reused by a later provider after this one is freed.
_recorders: weakref.WeakKeyDictionary[Any, Recorder] = weakref.WeakKeyDictionary()


def current() -> Telemetry | None:
    """The Telemetry of the last ``configure()``, until it is shut down."""
    return _current


def replace_current(tel: Telemetry) -> Telemetry | None:
    """Make ``tel`` the current Telemetry; returns the one it replaces (None if none)."""
    global _current
    with _lock:
        previous, _current = _current, tel
    return previous


def unset_current(tel: Telemetry) -> None:
    """``tel`` shut down: forget it, unless a later ``configure()`` already replaced it."""
    global _current
    with _lock:
        if _current is tel:
            _current = None


def auto_telemetry() -> Telemetry | None:
    """What ``RyotConfigurator`` (``opentelemetry-instrument``) built in this process, if it ran."""
    return _auto


def set_auto_telemetry(tel: Telemetry) -> None:
    global _auto
    _auto = tel


def recorder_for(provider: Any, build: Callable[[], Recorder]) -> Recorder:
    """The recorder made for ``provider`` (a MeterProvider), built once with ``build``."""
    with _lock:
        rec = _recorders.get(provider)
        if rec is None:
            rec = _recorders[provider] = build()
        return rec

"""Server-wide collections recorded in the directory, for the new-series gate across processes.

Whoever serves a scrape (or the leader's OTLP export) records when it began reading the directory in
``<dir>/collected-<kind>``; a worker's new-series gate (``recording.new_series``) holds a new counter series'
increments until every such collection that is still running began after the hand-off that carried its zero.
"""

from __future__ import annotations

import logging
import os
import time

from .directory import _write_atomic

__all__ = ["COLLECTORS", "note_collection", "read_collection", "record_collection"]

_log = logging.getLogger("ryot_telemetry")

COLLECTORS = ("prometheus", "otlp")
"""Kinds of server-wide collection whose progress is recorded in ``<dir>/collected-<kind>`` (new series gate)."""


def _collected_path(directory: str, kind: str) -> str:
    return os.path.join(directory, f"collected-{kind}")


def note_collection(directory: str, kind: str, started: float) -> None:
    """Record that a collection of ``kind`` which began reading the directory at ``started`` (``time.monotonic``,
    one clock for every process of the host) was served: ``<started ns> <previous started ns>``, atomically."""
    path = _collected_path(directory, kind)
    previous = read_collection(directory, kind)
    start_ns = int(started * 1e9)
    prev_ns = 0 if previous is None else int(previous[0] * 1e9)
    if prev_ns >= start_ns:
        return  # a collection that began later (served concurrently) is already recorded
    _write_atomic(path, f"{start_ns} {prev_ns}".encode())


def record_collection(directory: str, kind: str, started: float) -> None:
    """``note_collection``, a failure logged (the gate then waits a little longer, nothing else)."""
    try:
        note_collection(directory, kind, started)
    except OSError:
        _log.debug("ryot-telemetry: could not record a %s collection", kind, exc_info=True)


def read_collection(directory: str, kind: str) -> tuple[float, float | None] | None:
    """(start of the last recorded collection of ``kind``, seconds since the one before or None); None if none or
    if it is in the future (a file left from before a reboot: the monotonic clock restarted)."""
    try:
        with open(_collected_path(directory, kind), "rb") as f:
            start_ns, prev_ns = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    start = start_ns / 1e9
    if start > time.monotonic():
        return None
    return start, ((start_ns - prev_ns) / 1e9 if 0 < prev_ns < start_ns else None)

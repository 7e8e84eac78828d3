"""New counter series are exported at 0 before their first increment, so rate() and increase() count it.

Why: the OTel Prometheus exporter writes no ``_created`` series, and Prometheus takes the first sample of a series
as its starting point. A model whose first 3 requests arrive between two scrapes appears at 3 and ``increase()``
reports 0: the first requests, errors and tokens of every low-traffic model vanish from rates and alerts.

How: counter increments reach the SDK once per series per drain (``Recorder.drain`` sums them). When a series is
first seen there while some reader is already collecting, it is added with 0 (which creates it, at 0, in every
reader's storage at once) and its increments are held. They are released (by the next drain, or at the start of
the next collection) once every reader that is collecting has finished a collection that included the zero; readers
collect at their own intervals (a scrape every 15 s, an OTLP export every 60 s), so the slowest sets the pace. Which
collections included it is known by wrapping each reader's collect callback (the SDK's ``MetricReader._collect``,
reached through ``_compat``): zeros added before a collection starts, or by the drain inside that collection's own
callbacks, are in its export.
Counters stay exact: held increments are only delayed, never dropped, and are released at once when a reader shuts
down (its final export) or when ``release()`` is called.

Which readers count: those that have collected at least once (a reader that never collected has no earlier sample
to lose) and collected recently (a reader silent for three of its own intervals, or for ``FIRST_WAIT_S`` after its
only collection, is not waited for: a Prometheus that stopped scraping must not hold the OTLP export back). An
``InMemoryMetricReader`` is read by code, not by a time-series database, so it is never waited for (its reads stay
exact at once, as tests and the demo's summary expect), though it sees the zeros other readers cause.

Multi-process mode: a worker's readers are elsewhere (whoever answers a scrape reads the hand-off files). The
worker's hand-off reader is ``track``ed (it learns which zero epoch each hand-off carried) and the server's
scrapes and OTLP exports are ``remote`` readers, kept current by ``multiproc`` from what the serving process
records in the directory: a collection that began after a hand-off was written has that hand-off's zeros.

Cost: one set look-up per series per drain; nothing on the request path. Histograms are not covered: the Metrics
API cannot create a histogram point without an observation, so their _count/_bucket series still start at their
first value.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .._compat import reader_shutting_down, wrap_reader_collect

_log = logging.getLogger("ryot_telemetry")

FIRST_WAIT_S = 120.0
"""How long a reader that has collected only once is waited for (its interval is not known yet)."""
MIN_WAIT_S = 10.0
"""Least time a reader is waited for after its last collection, whatever its interval."""

Counts = dict[tuple[int, int], list[Any]]  # (id(instrument), id(attrs)) -> [instrument, attrs, amount]


class _Reader:
    """What the gate knows of one reader: the newest zero epoch it exported, and when it collected."""

    __slots__ = ("interval", "last", "seen")

    def __init__(self) -> None:
        self.seen = 0
        self.last: float | None = None
        self.interval: float | None = None

    def waited_for(self, now: float) -> bool:
        if self.last is None:
            return False
        limit = FIRST_WAIT_S if self.interval is None else max(3.0 * self.interval, MIN_WAIT_S)
        return now - self.last <= limit


class NewSeriesGate:
    """Holds the first increments of new counter series until every collecting reader has exported them at 0."""

    def __init__(self, readers: list[Any], clock: Callable[[], float] = time.monotonic) -> None:
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        self._clock = clock
        self._lock = threading.Lock()
        self._tls = threading.local()
        self._known: set[tuple[int, int]] = set()
        self._held: dict[tuple[int, int], list[Any]] = {}  # key -> [instrument, attrs, amount, epoch]
        self._final = False  # a reader is shutting down: hold nothing more
        self._epoch = 0  # bumped after each drain that added zeros, once the zeros are in every reader's storage
        self._readers: list[_Reader] = []
        for reader in readers:
            if isinstance(reader, InMemoryMetricReader):
                continue
            state = _Reader()
            self._readers.append(state)
            wrap_reader_collect(reader, functools.partial(self._wrap, reader, state=state))
        self.enabled = bool(self._readers)

    def remote(self) -> _Reader:
        """A reader in another process, which this one cannot wrap (multi-process mode: the scrapes and OTLP
        exports served from the hand-off files). Its owner keeps it current through ``update_remote``."""
        state = _Reader()
        with self._lock:
            self._readers.append(state)
            self.enabled = True
        return state

    def update_remote(self, state: _Reader, seen: int, last: float | None, interval: float | None) -> None:
        """What the owner of a ``remote`` reader learnt: the newest zero epoch it exported, when it last collected
        (on this gate's clock) and its interval."""
        with self._lock:
            state.seen = max(state.seen, seen)
            state.last, state.interval = last, interval

    def track(self, reader: Any, on_collected: Callable[[int], None]) -> None:
        """Wrap ``reader`` (a hand-off reader, never waited for itself) like a gate reader: held increments that
        are due are released into its collections, and ``on_collected`` gets the zero epoch each one carried."""
        wrap_reader_collect(reader, functools.partial(self._wrap, reader, state=None, on_collected=on_collected))

    def close(self) -> None:
        """Release everything and hold nothing more (the last hand-off of a process)."""
        self._final = True
        self.release()

    def forget_held(self) -> None:
        """In a forked child: the held increments are the parent's, which releases them; drop this copy."""
        self._lock = threading.Lock()
        self._held.clear()

    def _wrap(
        self,
        reader: Any,
        collect: Callable[..., Any],
        state: _Reader | None,
        on_collected: Callable[[int], None] | None = None,
    ) -> Callable[..., Any]:
        """``reader._collect`` (what ``MetricReader.collect`` calls), noting which zeros each collection exported."""

        def collect_noting_zeros(r: Any, *args: Any, **kwargs: Any) -> Any:
            cell = [self._epoch]  # zeros added before this collection started are in it
            if reader_shutting_down(reader):
                self._final = True  # the reader's final export: nothing may stay behind
                self.release()
            elif self._held:
                # Released here too, not only by a drain: held increments must not wait for the next request.
                _add_all(self.release_due())
            tls = self._tls
            outer = getattr(tls, "cell", None)
            tls.cell = cell
            try:
                return collect(r, *args, **kwargs)
            finally:
                tls.cell = outer
                if state is not None:
                    self._collected(state, cell[0])
                if on_collected is not None:
                    on_collected(cell[0])

        return collect_noting_zeros

    def _collected(self, state: _Reader, epoch: int) -> None:
        now = self._clock()
        with self._lock:
            state.seen = max(state.seen, epoch)
            if state.last is not None:
                state.interval = now - state.last
            state.last = now

    def _waiting(self, now: float) -> list[_Reader]:
        return [] if self._final else [r for r in self._readers if r.waited_for(now)]

    def _pop_due(self, waiting: list[_Reader]) -> list[list[Any]]:
        """Held entries whose zero every waited-for reader has exported (all of them if none is waited for)."""
        floor = min((r.seen for r in waiting), default=self._epoch)
        due = [k for k, h in self._held.items() if h[3] <= floor]
        self._known.update(due)
        return [self._held.pop(k) for k in due]

    def release_due(self) -> list[list[Any]]:
        """Pop the held entries that may be added now: [instrument, attrs, amount, epoch] each."""
        with self._lock:
            return self._pop_due(self._waiting(self._clock())) if self._held else []

    def route(self, counts: Counts) -> None:
        """Called by the drain before it adds ``counts``: new series get 0 and are held, released ones join."""
        with self._lock:
            known, held = self._known, self._held
            waiting = self._waiting(self._clock())
            if held:
                for instrument, attrs, amount, _ in self._pop_due(waiting):
                    key = (id(instrument), id(attrs))
                    entry = counts.get(key)
                    if entry is None:
                        counts[key] = [instrument, attrs, amount]
                    else:
                        entry[2] += amount
            added = False
            for key in [k for k in counts if k not in known]:
                entry = counts[key]
                h = held.get(key)
                if h is not None:
                    h[2] += entry[2]
                    del counts[key]
                elif not waiting:
                    known.add(key)  # no reader has an earlier sample to compare with
                else:
                    try:
                        entry[0].add(0, entry[1])
                    except Exception:
                        _log.debug("ryot-telemetry: failed to add a new series at 0", exc_info=True)
                        known.add(key)
                        continue
                    held[key] = [entry[0], entry[1], entry[2], self._epoch + 1]
                    del counts[key]
                    added = True
            if added:
                self._epoch += 1
            cell = getattr(self._tls, "cell", None)
            if cell is not None:
                # This drain runs inside a reader's collection, before its storage is read: its export has every
                # zero added so far.
                cell[0] = self._epoch

    def release(self) -> None:
        """Add every held increment now (shutdown, or before an exact read of all readers)."""
        with self._lock:
            held, self._held = self._held, {}
            self._known.update(held)
        _add_all(list(held.values()))

    def held(self) -> int:
        """How many series have increments held; for tests."""
        with self._lock:
            return len(self._held)


def _add_all(entries: list[list[Any]]) -> None:
    for instrument, attrs, amount, _ in entries:
        try:
            instrument.add(amount, attrs)
        except Exception:
            _log.debug("ryot-telemetry: failed to release a held increment", exc_info=True)

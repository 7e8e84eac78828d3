"""The drain: a tiny hot path, with the OTel measurements deferred to collection time.

This is the third of the recording rooms: ``request.py`` (the value object the wrapper fills in), ``measure.py``
(turning a finished request into measurements) and here the queue between them, its pacing, the background drainer
thread and what ``fork()`` needs.

Why deferred: an OTel SDK ``add``/``record`` copies and hashes the attribute dict and takes locks, several µs
each, and a request produces about ten of them. On the request path this recorder only takes timestamps, bumps
an in-flight counter and appends the finished request to a queue. The queue is drained into the real OTel
instruments as the first step of every collection (scrape, OTLP export, in-memory read): the recorder wraps the
collect callback of each reader of its meter's provider, so the drain runs before the SDK reads any instrument and
every reader sees exactly the measurements it would have seen had they been recorded inline. Steps that must follow
the drain and precede the instruments' callbacks (an engine's ``on_collect`` hooks) are added with
``before_collection``. The queue is bounded: past ``max_pending`` the appending thread records the oldest
``INLINE_BATCH`` requests itself, so no single request pays for the whole backlog; where that fails, what lies past
the bound is dropped and counted (``ryot_telemetry_queue_dropped_requests_total``).

Why sliced: recording is pure Python holding the GIL, 10-50 µs per request. Done in one go on the scrape thread, a
backlog of 15,000 requests froze a serving event loop for most of a second (it gets one turn per GIL switch
interval). So an optional background drainer (``start_drainer``) records the queue in slices of ``SLICE`` requests
and sleeps after each slice for ``YIELD_RATIO`` times as long as the slice took, leaving the GIL to the serving
threads; a collection records only what was queued when it began (a sequence snapshot), in the same slices, and the
remainder left by the drainer is all it has to do. Counter increments and sliding-window sums are aggregated per
series across slices and handed to the SDK/windows once per collection; so are histogram values (per instrument, in
recording order), or sooner once ``HISTOGRAM_BATCH`` of them wait.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import TraceBasedExemplarFilter

from .. import catalogue
from .._compat import meter_readers, wrap_reader_collect
from .labels import UNADMITTED
from .measure import HISTOGRAM_BATCH, MAX_TOKEN_TOTAL, NO_SPAN, Measure, MeasureOptions
from .new_series import NewSeriesGate
from .request import Request

if TYPE_CHECKING:  # annotations only (postponed): no runtime need for typing_extensions on 3.10
    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

__all__ = [
    "DEFAULT_MAX_PENDING",
    "INLINE_BATCH",
    "MAX_TOKEN_TOTAL",
    "Recorder",
    "Request",
    "RequestSpanExemplarFilter",
    "sampled_span_context",
]

_log = logging.getLogger("ryot_telemetry")
_clock = time.perf_counter
_ACTIVE_LABELS = catalogue.get("ryot.active_inference_requests").labels  # (model, request_type, endpoint)

DEFAULT_MAX_PENDING = 65536
INLINE_BATCH = 128
"""Requests an appending thread records when the queue is past ``max_pending``: bounds the stall of that request."""

_NO_SPAN = NO_SPAN  # the drain records under a context with no span (see measure.NO_SPAN)


class RequestSpanExemplarFilter(TraceBasedExemplarFilter):
    """Trace-based, with a shortcut: a measurement recorded under the drain's own no-span context is never sampled.

    Most drain-time measurements carry no request span; the identity check saves the span lookup on each of them.
    """

    def should_sample(self, value: float, time_unix_nano: int, attributes: Any, context: Any) -> bool:
        return context is not _NO_SPAN and super().should_sample(value, time_unix_nano, attributes, context)


def sampled_span_context() -> trace.SpanContext | None:
    """The active span's context if it is sampled (an exemplar may point at it), else None. Cheap: no allocation."""
    sc = trace.get_current_span().get_span_context()
    return sc if sc.trace_flags.sampled else None


SLICE = 32
"""Requests recorded per slice (about 1 ms): the longest the drainer or a collection holds the GIL in one go."""
YIELD_RATIO = 2.0
"""After a slice, sleep this many times the slice's duration: serving threads keep >= 1/(1+ratio) of the GIL."""
DRAIN_INTERVAL = 0.5
"""Seconds between background drains when the queue stays below ``WAKE_AT``."""
WAKE_AT = 256
"""Queue length at which a request wakes the background drainer early."""
YIELD_BUDGET = 0.25
"""Share of a collection's callback timeout it may spend yielding; past it the rest is recorded without pauses."""


def _count_value(c: itertools.count[int]) -> int:
    # itertools.count has no public getter; its repr is stable ("count(N)") and only read at collection time.
    return int(repr(c)[6:-1])


class _Active:
    """In-flight counter for one label set: two atomic counters, so concurrent threads can never make it drift."""

    __slots__ = ("attrs", "enter", "exit")

    def __init__(self, attrs: dict[str, str]) -> None:
        self.enter = itertools.count()
        self.exit = itertools.count()
        self.attrs = attrs

    def value(self) -> int:
        # exits first: a request that enters and leaves between the two reads is then counted in neither,
        # never in the exits alone, so the value can never be negative (enter >= exit at every instant).
        done = _count_value(self.exit)
        return _count_value(self.enter) - done


class Recorder:
    """The drain: takes finished ``Request`` objects on a queue and records them through its ``Measure`` at
    collection time, in paced slices, from the collecting thread or a background drainer; survives ``fork()``."""

    def __init__(
        self,
        meter: Meter,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        exemplars: bool = False,
        **options: Unpack[MeasureOptions],
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._max_pending = max_pending
        self._pending: deque[Request] = deque()
        # Drain state, all guarded by _drain_lock: requests ever popped (the collection snapshot's sequence); the
        # measure's per-batch aggregation is guarded by it too.
        self._drain_lock = threading.Lock()
        self._popped = 0
        self._wake = threading.Event()
        self._wake_at = max_pending  # queue length past which a request acts: see _backlog
        self._drainer: threading.Thread | None = None
        self._stopping = False
        self._drain_interval: float | None = None
        self._next_slice = 0.0  # _clock() time before which no thread starts another paced slice
        self._sleep: Callable[[float], None] = time.sleep
        self._active: dict[tuple[str, str, str], _Active] = {}
        self._active_lock = threading.Lock()
        self.measure = Measure(meter, **options, observe_active=self._observe_active)
        m = self.measure
        # What the wrapper, the engine and the assembly read (the measure's own objects, not copies).
        self.models = m.models
        self.response_models = m.response_models
        self.prices = m.prices
        self.slos, self.slo = m.slos, m.slo
        self.tenants = m.tenants
        self.tenant_of = m.tenants.of if m.tenants is not None else None
        self.semconv = m.semconv
        self.batch = m.batch
        self.derived = m.derived
        self.windows = m.windows
        self.exemplars = exemplars  # keep each request's sampled span for exemplars on latency and TTFT
        # Every collection starts with the drain, then the steps added with before_collection. The hook is the
        # innermost wrapper of each reader's collect, so the new-series gate (which wraps next) sees the drain's
        # zeros as added inside that collection, as it would for a drain in an instrument callback.
        readers = meter_readers(meter)
        self._before: list[Callable[[], object]] = []
        for reader in readers:
            wrap_reader_collect(reader, self._draining_first)
        # A meter whose readers cannot be reached (the API's proxy meter before a provider is set, another SDK):
        # the in-flight gauge's callback drains instead.
        self._drain_in_callback = not readers
        # New counter series are exported at 0 before their first increment (see new_series).
        self._new_series = NewSeriesGate(readers)

    # --- hot path ---------------------------------------------------------------------------------------------

    def start(self, model: object, endpoint: str, mode: str, batch_size: int = 1) -> Request:
        """Begin a request. ``endpoint`` is chat_completion/completion, ``mode`` standard/streaming/batch.

        The request is also a context manager (``with rec.request(...) as req:``, ``async with`` too) that ends
        it on exit; otherwise end it with ``req.success()``, ``req.fail(exc)`` or ``req.abandon()``.

        A model name that has no label slot yet does not get one here: the request is in flight under
        ``__unknown__`` and the name takes a slot once the router accepts it — ``req.admit()`` (the wrapper
        calls it when the router returns a stream), ``success``, ``fail`` with any error but ``model_not_found``,
        or ``abandon`` after a chunk was delivered. A request that ends otherwise (``model_not_found``, or
        cancelled before the router answered) is recorded under the name's slot if another request has taken
        one meanwhile, else under ``__unknown__``: made-up names cannot use up the ``max_models`` budget (SPEC).
        """
        label = self.models.peek(model)
        pending = None
        if label is None:
            pending = self.models.key(model)
            label = UNADMITTED
        key = (label, mode, endpoint)
        active = self._active.get(key)
        if active is None:
            active = self._new_active(key)
        req = Request(label, endpoint, mode, batch_size, active, self)
        if pending is not None:
            req._pending = pending
        if self.exemplars:
            req.span_context = sampled_span_context()
        return req

    request = start  # ``with rec.request(model=..., endpoint=..., mode=...) as req:`` reads better; same call

    def active_for(self, key: tuple[str, str, str]) -> _Active:
        """The in-flight counters of (model label, mode, endpoint), made on first use (``request.Sink``)."""
        active = self._active.get(key)
        return active if active is not None else self._new_active(key)

    def _new_active(self, key: tuple[str, str, str]) -> _Active:
        with self._active_lock:
            active = self._active.get(key)
            if active is None:
                active = self._active[key] = _Active(dict(zip(_ACTIVE_LABELS, key)))
        return active

    def submit(self, req: Request) -> None:
        """Queue a finished request for the drain (``request.Sink``); past the bound, record some inline."""
        pending = self._pending
        pending.append(req)
        if len(pending) > self._wake_at:
            self._backlog()

    def _backlog(self) -> None:
        """Past ``WAKE_AT`` wake the drainer; past ``max_pending`` record a bounded batch on this thread. Where that
        fails, the oldest requests past the bound are dropped and counted (``ryot.telemetry.queue.dropped_requests``)
        so the queue, and the memory it holds, stays bounded."""
        pending = self._pending
        if len(pending) > self._max_pending:
            try:
                self.drain(INLINE_BATCH)
            except Exception:  # not BaseException: a KeyboardInterrupt arriving mid-drain stays the caller's
                # Recording failed: what lies past the bound is dropped (and counted), not kept without limit.
                _log.debug("ryot-telemetry: inline drain failed", exc_info=True)
                dropped = 0
                while len(pending) > self._max_pending:
                    try:
                        pending.popleft()
                    except IndexError:  # another thread took the rest meanwhile
                        break
                    dropped += 1
                if dropped:
                    self.measure.queue_dropped.add(dropped)
        elif not self._wake.is_set():
            self._wake.set()

    def _note_queue_age(self) -> None:
        """The age of the oldest queued request, at the start of a drain that finds the queue non-empty."""
        try:
            oldest = self._pending[0]
        except IndexError:
            return
        try:
            self.measure.queue_age.record(max(_clock() - oldest.end, 0.0), context=_NO_SPAN)
        except Exception:
            _log.debug("ryot-telemetry: could not record the queue's age", exc_info=True)

    # --- collection time --------------------------------------------------------------------------------------

    def drain(self, limit: int | None = None, *, release_held: bool = False) -> int:
        """Record the finished requests queued so far (at most ``limit``); returns how many. Safe from any thread.

        Integer counter increments are summed per series and added once per series: the exported totals are
        identical, and an SDK ``add`` costs as much as a histogram ``record``. ``release_held``: also add the
        held first increments of new counter series now, so that every reader's next read is exact (a final
        summary, a test) instead of waiting for the readers to export their zeros.
        """
        with self._drain_lock:
            self._note_queue_age()
            n = self._record_batch(-1 if limit is None else limit)
            self._flush()
        if release_held:
            self._new_series.release()
        return n

    def before_collection(self, step: Callable[[], object]) -> None:
        """Run ``step()`` at the start of every collection, after the drain and before any instrument is read."""
        if self._drain_in_callback:
            raise RuntimeError("this recorder's meter has no reachable readers: run the step from a callback")
        self._before.append(step)

    def _draining_first(self, collect: Callable[..., Any]) -> Callable[..., Any]:
        """A reader's collect callback that drains the queue (the snapshot of this collection) first."""

        def collect_after_drain(reader: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                self._drain_snapshot(kwargs.get("timeout_millis", 10_000) / 1e3)
            except Exception:  # a collection always goes on
                _log.debug("ryot-telemetry: drain before a collection failed", exc_info=True)
            for step in list(self._before):
                try:
                    step()
                except Exception:
                    _log.debug("ryot-telemetry: collection step %r failed", step, exc_info=True)
            return collect(reader, *args, **kwargs)

        return collect_after_drain

    def _record_batch(self, limit: int) -> int:
        """Pop and record up to ``limit`` requests (all if negative). Caller holds ``_drain_lock``."""
        pending = self._pending
        record = self.measure.record
        n = 0
        token = otel_context.attach(_NO_SPAN)  # exemplars only from each request's own span (see _NO_SPAN)
        try:
            while n != limit:
                try:
                    req = pending.popleft()
                except IndexError:
                    break
                n += 1
                try:
                    record(req)
                except Exception:  # telemetry must never take the service down
                    _log.debug("ryot-telemetry: failed to record a request", exc_info=True)
            self.measure.flush_histograms(HISTOGRAM_BATCH)
        finally:
            otel_context.detach(token)
        self._popped += n
        return n

    def _flush(self) -> None:
        """Hand the aggregated counter increments and window sums over. Caller holds ``_drain_lock``."""
        self.measure.flush(self._new_series.route if self._new_series.enabled else None)

    def _drain_sliced(self, target: int | None, deadline: float | None = None) -> int:
        """Record in slices of ``SLICE`` until ``target`` requests have ever been popped (until the queue is empty
        when ``target`` is None), pausing between slices. The pause is paced across threads (``_next_slice``), so a
        collection and the background drainer together still leave the GIL free for ``YIELD_RATIO`` times as long
        as they hold it. Past ``deadline`` (a ``_clock`` time) slices follow each other without pauses."""
        done = 0
        while not self._stopping:
            with self._drain_lock:
                t0 = _clock()
                wait = self._next_slice - t0
                if wait <= 0 or (deadline is not None and t0 >= deadline):
                    todo = SLICE if target is None else min(SLICE, target - self._popped)
                    n = self._record_batch(todo) if todo > 0 else 0
                    t1 = _clock()
                    self._next_slice = t1 + (t1 - t0) * YIELD_RATIO
                    done += n
                    if n < todo or todo <= 0 or (target is None and not self._pending):
                        break
                    if target is not None and self._popped >= target:
                        break
                    continue
            self._sleep(wait if deadline is None else min(wait, max(deadline - t0, 0.0)))
        return done

    def _drain_snapshot(self, timeout: float = 10.0) -> int:
        """The drain of a collection: exactly the requests queued when it began, in paced slices within
        ``YIELD_BUDGET`` of the collection's ``timeout`` (seconds), then one flush.

        On a thread running an asyncio loop (a /metrics route served by the app itself) sleeping would stall that
        very loop, so the snapshot is recorded there without pauses.
        """
        start = _clock()
        with self._drain_lock:
            target = self._popped + len(self._pending)
            self._note_queue_age()
        if _on_event_loop():
            with self._drain_lock:
                n = self._record_batch(max(target - self._popped, 0))
        else:
            n = self._drain_sliced(target, start + timeout * YIELD_BUDGET)
            if self._popped < target:  # only when stopping: record the rest now
                with self._drain_lock:
                    n += self._record_batch(max(target - self._popped, 0))
        with self._drain_lock:
            self._flush()
        return n

    # --- background drainer -----------------------------------------------------------------------------------

    def start_drainer(self, interval: float = DRAIN_INTERVAL) -> None:
        """Record the queue from a daemon thread, in slices, every ``interval`` s or when it passes ``WAKE_AT``.

        Idempotent; also restarts a drainer whose thread is gone (in the child of ``os.fork()``).
        """
        if self._drainer is not None and self._drainer.is_alive():
            return
        if self._drain_interval is None:  # first start: a forked child gets fresh locks and its own drainer
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _after_fork_in_child(ref))
        self._drain_interval = interval
        self._stopping = False
        self._wake = threading.Event()
        thread = threading.Thread(
            target=_drainer_loop,
            args=(weakref.ref(self), self._wake, interval),
            name="ryot-telemetry-drain",
            daemon=True,
        )
        self._drainer = thread
        self._wake_at = min(WAKE_AT, self._max_pending)
        thread.start()

    def stop_drainer(self, timeout: float = 5.0) -> None:
        """Stop the background drainer (idempotent); what it left queued is recorded by the next collection."""
        thread = self._drainer
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        if thread is not threading.current_thread():
            thread.join(timeout)
        self._drainer = None
        self._wake_at = self._max_pending
        self._stopping = False

    @property
    def max_pending(self) -> int:
        """Queue length past which each finishing request records ``INLINE_BATCH`` queued requests itself."""
        return self._max_pending

    @max_pending.setter
    def max_pending(self, value: int) -> None:
        self._max_pending = value
        self._wake_at = min(WAKE_AT, value) if self.drainer_running else value

    @property
    def drainer_running(self) -> bool:
        return self._drainer is not None and self._drainer.is_alive()

    def _reinit_after_fork(self) -> None:
        """In a forked child: the parent's drainer thread is gone and may have held a lock mid-slice."""
        self._drain_lock = threading.Lock()
        self.windows.reinit_after_fork()
        self._wake = threading.Event()
        was_running = self._drainer is not None
        self._drainer = None
        self._stopping = False
        if was_running and self._drain_interval is not None:
            self.start_drainer(self._drain_interval)

    # --- observable callbacks ---------------------------------------------------------------------------------

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._drain_in_callback:
            self._drain_snapshot(options.timeout_millis / 1e3)
        return [Observation(a.value(), a.attrs) for a in list(self._active.values())]

    def set_kv_cache_hit_ratio(self, model: object, context_type: str, ratio: float) -> None:
        """Engine-reported KV cache hit ratio; overrides the usage-derived one for that model and context."""
        self.measure.derived.set_kv_cache_hit_ratio(model, context_type, ratio)

    def active(self) -> dict[tuple[str, str, str], int]:
        """A snapshot of the in-flight counts by (model, request_type, endpoint)."""
        return {k: a.value() for k, a in list(self._active.items())}

    # --- seams for multi-process mode -------------------------------------------------------------------------

    def activity(self) -> tuple[tuple[int, int], ...]:
        """Changes whenever a request starts or ends (whoever drained it): the (started, ended) counts of every
        in-flight series, so a hand-off can skip an idle process."""
        return tuple((_count_value(a.enter), _count_value(a.exit)) for a in list(self._active.values()))

    @property
    def new_series(self) -> NewSeriesGate:
        """The gate that exports new counter series at 0 first; multi-process mode adds the server's collections
        to it as remote readers."""
        return self._new_series

    def reset_after_fork(self) -> None:
        """In a forked child that becomes a worker of its own: none of the parent's requests are its own (not the
        queued ones, not those in flight, not their tokens in the sliding windows); they are the parent's."""
        self._pending.clear()
        self.measure.forget_batch()
        for active in list(self._active.values()):
            active.enter = itertools.count()
            active.exit = itertools.count()
        self.windows.reset()
        self._new_series.forget_held()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _after_fork_in_child(ref: weakref.ref[Recorder]) -> None:
    rec = ref()
    if rec is not None:
        rec._reinit_after_fork()


def _drainer_loop(ref: weakref.ref[Recorder], wake: threading.Event, interval: float) -> None:
    """The background drainer's thread: holds the recorder only while draining, so it never keeps it alive."""
    me = threading.current_thread()
    while True:
        wake.wait(interval)
        wake.clear()
        rec = ref()
        if rec is None or rec._stopping or rec._drainer is not me:
            return
        try:
            with rec._drain_lock:
                rec._note_queue_age()
            rec._drain_sliced(None)
        except Exception:
            _log.debug("ryot-telemetry: background drain failed", exc_info=True)
        del rec

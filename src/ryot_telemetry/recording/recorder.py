"""The per-request recorder: a tiny hot path, with the OTel measurements deferred to collection time.

Why deferred: an OTel SDK ``add``/``record`` copies and hashes the attribute dict and takes locks, several µs
each, and a request produces about ten of them. On the request path this recorder only takes timestamps, bumps
an in-flight counter and appends the finished request to a queue. The queue is drained into the real OTel
instruments as the first step of every collection (scrape, OTLP export, in-memory read): the recorder wraps the
collect callback of each reader of its meter's provider, so the drain runs before the SDK reads any instrument and
every reader sees exactly the measurements it would have seen had they been recorded inline. Steps that must follow
the drain and precede the instruments' callbacks (an engine's ``on_collect`` hooks) are added with
``before_collection``. The queue is
bounded: past ``max_pending`` the appending thread records the oldest ``INLINE_BATCH`` requests itself, so no single
request pays for the whole backlog.

Why sliced: recording is pure Python holding the GIL, 25-50 µs per request. Done in one go on the scrape thread, a
backlog of 15,000 requests froze a serving event loop for most of a second (it gets one turn per GIL switch
interval). So an optional background drainer (``start_drainer``) records the queue in slices of ``SLICE`` requests
and sleeps after each slice for ``YIELD_RATIO`` times as long as the slice took, leaving the GIL to the serving
threads; a collection records only what was queued when it began (a sequence snapshot), in the same slices, and the
remainder left by the drainer is all it has to do. Counter increments and sliding-window sums are aggregated per
series across slices and handed to the SDK/windows once per collection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
import weakref
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import TraceBasedExemplarFilter

from .. import catalogue
from .._compat import meter_readers, wrap_reader_collect
from ..catalogue import (
    ABORT,
    CACHED_PROMPT_TOKENS,
    COMPLETION_TOKENS,
    FINISH_REASONS,
    OTHER_FINISH,
    PARTIAL,
    PROMPT_TOKENS,
    SUCCESS,
)
from ..pricing import Price, PriceTable
from ..slo import SloTable, judge
from .derived import CONTEXT_TYPE, DerivedGauges
from .errors import SEVERITY, classify, status_for
from .instruments import create_instrument
from .labels import UNADMITTED, ModelLabels, batch_size_label, prompt_size_label
from .new_series import NewSeriesGate
from .provider import MAX_COUNT, StreamEnd, Timings, count, describe_count, get, outcome
from .semconv import (
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOKEN_TYPE,
    INPUT,
    OPERATION,
    OUTPUT,
    SERVER_ADDRESS,
    SERVER_PORT,
    SemconvInstruments,
)
from .tenants import DEFAULT_MAX_TENANTS, Tenants

_log = logging.getLogger("ryot_telemetry")
_clock = time.perf_counter

# Catalogue names the attribute dicts are keyed by (their label keys come from the catalogue entry).
_REQUESTS = "ryot.inference.requests"
_ERRORS = "ryot.inference.errors"
_LATENCY = "ryot.inference.latency"
_BATCH = "ryot.batch_size.distribution"
_TOKENS = "ryot.tokens.generated"
_TTFT = "ryot.ttft.latency"
_COST = "ryot.token.cost_estimate.usd"
_SLO = "ryot.slo.requests"
_MODEL = "ryot.tokens_per_second"  # any metric labelled by model alone: one shared dict per model
_FINISH = "ryot.finish_reasons"
_CACHED = "ryot.cached_prompt_tokens"
_REASONING = "ryot.reasoning_tokens"
_ESTIMATED = "ryot.estimated_tokens"
_FINISH_LABELS = frozenset(FINISH_REASONS)
_ACTIVE_LABELS = catalogue.get("ryot.active_inference_requests").labels  # (model, request_type, endpoint)

DEFAULT_MAX_PENDING = 65536
INLINE_BATCH = 128
"""Requests an appending thread records when the queue is past ``max_pending``: bounds the stall of that request."""

# Measurements are recorded at drain time, in whatever context the reader or an overflowing request runs in: drain
# under a context with no span, so a trace-based exemplar filter never attaches an unrelated trace.
_NO_SPAN = trace.set_span_in_context(trace.INVALID_SPAN)


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
MAX_TOKEN_TOTAL = 2**63 - 1
"""The largest cumulative token count OTLP can carry (an int64 sum): past it a series stops growing, so even
1,024 requests of 2**53 tokens each cannot make the counter unencodable and stop every later export."""


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


class Request:
    """One request's facts, filled in by the wrapper as they become known and recorded once, when finished.

    Also a context manager (``with`` / ``async with``) that ends the request on exit: see ``__exit__``.
    """

    __slots__ = (
        "_active",
        "_done",
        "_implausible",
        "_pending",
        "_recorder",
        "batch_size",
        "cached_tokens",
        "chunk_times",
        "chunks",
        "completion_tokens",
        "delivered",
        "end",
        "endpoint",
        "error_type",
        "finish",
        "first_token",
        "mode",
        "model",
        "prompt_chars",
        "prompt_tokens",
        "reasoning_tokens",
        "response_model",
        "span_context",
        "start",
        "status",
        "tenant",
        "timings",
    )

    def __init__(
        self, model: str, endpoint: str, mode: str, batch_size: int, active: _Active, recorder: Recorder
    ) -> None:
        self._recorder = recorder
        self.model = model
        self.endpoint = endpoint
        self.mode = mode
        self.batch_size = batch_size
        self._active = active
        self.first_token: float | None = None
        self.chunk_times: array[float] | None = None  # streams, with semconv on: each chunk's arrival (_clock)
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.prompt_chars: int | None = None
        self.response_model: str | None = None  # clipped (ModelLabels.key): a request never holds a raw name
        self.delivered = False  # a stream handed at least one chunk to the caller
        self.status = SUCCESS
        self.error_type: str | None = None
        self.end = 0.0
        self.span_context: trace.SpanContext | None = None  # set by Recorder.start when exemplars are on
        self.tenant: object = None  # the tenant as the wrapper resolved it (Tenants.of), labelled at the drain
        self._done = False
        self._pending: str | None = None  # the clipped name of a model without a slot yet (model is __unknown__)
        self._implausible: str | None = None  # usage counts dropped by the wrapper, described for the warning
        # The outcome, read from the provider's objects when the call ends (provider.py), as plain values only: a
        # queued request never holds the provider's response, chunks or text (SPEC "Promises under faults").
        self.reasoning_tokens: int | None = None
        self.finish: tuple[str, ...] | None = None  # finish reasons (catalogue labels); None when none was sent
        self.timings: Timings | None = None  # the engine's (queue, prefill, time per output token), in seconds
        self.chunks = 0  # content chunks a stream delivered: the completion estimate when usage is absent
        next(active.enter)
        self.start = _clock()

    @property
    def final(self) -> None:
        """Write-only: ``req.final = response`` (or a dict shaped like one, or a ``StreamEnd``) reads the finish
        reasons, engine timings and reasoning tokens out of it now, and keeps only those values."""
        return None

    @final.setter
    def final(self, final: Any) -> None:
        try:
            if type(final) is StreamEnd:
                self.chunks = final.chunks
                usage = get(final.final, "usage") if final.final is not None else None
            else:
                usage = get(final, "usage")
            self.finish, self.timings = outcome(final)
            if usage is not None:
                details = get(usage, "completion_tokens_details")
                n = count(get(details, "reasoning_tokens")) if details is not None else None
                self.reasoning_tokens = n if type(n) is int else None
        except BaseException:  # provider objects may raise anything: the outcome is then simply not recorded
            _log.debug("ryot-telemetry: could not read a response's outcome", exc_info=True)

    def note_implausible(self, note: str) -> None:
        """Usage counts were dropped as implausible (``note`` describes them); the recorder warns once per model."""
        if self._implausible is None:
            self._implausible = note
        elif len(self._implausible) < 200:  # a stream may repeat it in every chunk: keep the note bounded
            self._implausible = f"{self._implausible}, {note}"

    def admit(self, recorder: Recorder | None = None) -> None:
        """The router accepted the model name (it returned a stream): give the name a slot now.

        Until then a name without a slot is in flight under ``__unknown__``; from here on under its own label.
        Ending the request does the same implicitly, except after ``model_not_found`` (see ``Recorder.start``).
        """
        key = self._pending
        if key is None or self._done:
            return
        rec = recorder or self._recorder
        self._pending = None
        label = rec.models.admit(key)
        active = rec._active_for((label, self.mode, self.endpoint))
        next(active.enter)  # enter the new series before leaving the old: neither ever reads negative
        next(self._active.exit)
        self._active = active
        self.model = label

    def _settle(self, recorder: Recorder, admitted: bool) -> None:
        """The final label of a request whose name had no slot at its start: its own (or __overflow__) when the
        router accepted the name; otherwise the name's slot if another request has taken one since, else
        ``__unknown__``."""
        key = self._pending
        self._pending = None
        models = recorder.models
        if admitted:
            self.model = models.admit(key)
        else:
            self.model = models.peek(key) or UNADMITTED

    # The three ways a request can end. Each is idempotent: only the first call counts. ``recorder`` is optional
    # (the request knows its recorder); a recorder passed in records the request instead.

    def success(self, recorder: Recorder | None = None) -> None:
        """The request completed."""
        if not self._done:
            self.end = _clock()
            self._done = True
            next(self._active.exit)
            rec = recorder or self._recorder
            if self._pending is not None:
                self._settle(rec, True)
            rec._submit(self)

    @overload
    def fail(self, exc: BaseException, /) -> None: ...
    @overload
    def fail(self, recorder: Recorder, exc: BaseException, /) -> None: ...

    def fail(self, first: Recorder | BaseException, exc: BaseException | None = None, /) -> None:
        """The request failed with ``exc``: error_type and severity are classified from it (``partial`` if a stream
        already delivered content). Also ``fail(recorder, exc)``."""
        if not self._done:
            self.end = _clock()
            self._done = True
            next(self._active.exit)
            if exc is None:
                exc, recorder = cast(BaseException, first), self._recorder
            else:
                recorder = cast(Recorder, first)
            self.error_type = classify(exc)
            self.status = PARTIAL if self.delivered else status_for(self.error_type)
            if self._pending is not None:
                # any error but model_not_found came from past the router's model lookup
                self._settle(recorder, self.delivered or self.error_type != "model_not_found")
            recorder._submit(self)

    def abandon(self, recorder: Recorder | None = None) -> None:
        """The consumer closed or cancelled the request: no error, just a request that did not complete."""
        if not self._done:
            self.end = _clock()
            self._done = True
            next(self._active.exit)
            self.status = PARTIAL
            rec = recorder or self._recorder
            if self._pending is not None:
                # cancelled before the router answered: this request did not show the name to be a real model
                self._settle(rec, self.delivered)
            rec._submit(self)

    # ``with rec.request(...) as req:`` / ``async with``: ends the request exactly once, like the wrapper does.

    def __enter__(self) -> Request:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        """Success on a normal exit; abandon on cancellation, GeneratorExit, KeyboardInterrupt or SystemExit (the
        caller went away: not an error); fail on any other exception. The exception always propagates unchanged."""
        if self._done:
            return
        try:
            if exc is None:  # success(), inlined: this is the per-request path of every ``with`` user
                self.end = _clock()
                self._done = True
                next(self._active.exit)
                if self._pending is not None:
                    self._settle(self._recorder, True)
                self._recorder._submit(self)
            elif isinstance(exc, Exception):
                self.fail(exc)
            else:
                self.abandon()
        except Exception:  # telemetry must never replace the caller's outcome
            _log.debug("ryot-telemetry: failed to record the end of a request", exc_info=True)

    async def __aenter__(self) -> Request:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None and not self._done:  # as in __exit__: the success path inlined
            try:
                self.end = _clock()
                self._done = True
                next(self._active.exit)
                if self._pending is not None:
                    self._settle(self._recorder, True)
                self._recorder._submit(self)
            except Exception:
                _log.debug("ryot-telemetry: failed to record the end of a request", exc_info=True)
            return
        self.__exit__(exc_type, exc, tb)


class Recorder:
    """Owns the router-facing instruments and turns finished ``Request`` objects into measurements."""

    def __init__(
        self,
        meter: Meter,
        *,
        buckets: Mapping[str, Sequence[float]] | None = None,
        max_models: int = 100,
        max_label_length: int = 128,
        prices: PriceTable | None = None,
        semconv: bool = False,
        genai_provider: str = "llama_stack",
        max_pending: int = DEFAULT_MAX_PENDING,
        genai_server: tuple[str, int] | None = None,
        slos: SloTable | None = None,
        exemplars: bool = False,
        tenant: str | Callable[[Any], object] | None = None,
        max_tenants: int = DEFAULT_MAX_TENANTS,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.models = ModelLabels(max_models, max_label_length)
        # gen_ai.response.model has its own budget: dated snapshot names must not crowd out request models.
        self.response_models = ModelLabels(max_models, max_label_length)
        self.prices = prices
        self.genai_provider = genai_provider
        # server.address / server.port of the semconv metrics: this server, as configured (see semconv.py)
        self._genai_server: dict[str, str | int] = {}
        if genai_server is not None:
            self._genai_server = {SERVER_ADDRESS: genai_server[0], SERVER_PORT: genai_server[1]}
        self._max_pending = max_pending
        self._pending: deque[Request] = deque()
        # Drain state, all guarded by _drain_lock: requests ever popped (the collection snapshot's sequence),
        # counter increments and window sums aggregated since the last flush.
        self._drain_lock = threading.Lock()
        self._popped = 0
        self._counts: dict[tuple[int, int], list[Any]] = {}
        self._win_completion: dict[tuple[str, int], int] = {}
        self._win_cache: dict[tuple[str, str, int], list[int]] = {}
        self._wake = threading.Event()
        self._wake_at = max_pending  # queue length past which a request acts: see _backlog
        self._drainer: threading.Thread | None = None
        self._stopping = False
        self._drain_interval: float | None = None
        self._next_slice = 0.0  # _clock() time before which no thread starts another paced slice
        self._sleep: Callable[[float], None] = time.sleep
        self._active: dict[tuple[str, str, str], _Active] = {}
        self._active_lock = threading.Lock()
        self._attrs: dict[tuple[str | None, ...], dict[str, str]] = {}
        self._usage_warned: set[str] = set()  # model labels (bounded) already warned about implausible usage
        self._clamp_warned: set[str] = set()  # model labels (bounded) already warned about parts above their whole
        self._token_totals: dict[int, int] = {}  # id(attrs) -> cumulative tokens added to that series
        self._token_lock = threading.Lock()
        self._token_saturated: set[int] = set()  # series that reached MAX_TOKEN_TOTAL (warned once)
        b = buckets or {}

        def make(name: str, **kw: Any) -> Any:
            return create_instrument(meter, catalogue.get(name), buckets=b.get(name), **kw)

        self.requests = make("ryot.inference.requests")
        self.errors = make("ryot.inference.errors")
        self.tokens = make("ryot.tokens.generated")
        self.cost = make("ryot.token.cost_estimate.usd")
        self.latency = make("ryot.inference.latency")
        self.ttft = make("ryot.ttft.latency")
        self.tpot = make("ryot.time_per_output_token")
        self.batch = make("ryot.batch_size.distribution")
        self.tps = make("ryot.tokens_per_second")
        self.cache_eff = make("ryot.prompt_cache.effectiveness")
        self.finish_reasons = make(_FINISH)
        self.cached_prompt = make(_CACHED)
        self.reasoning = make(_REASONING)
        self.estimated = make(_ESTIMATED)
        self.engine_prefill = make("ryot.engine.prefill")
        self.engine_tpot = make("ryot.engine.time_per_output_token")
        self.ttft_outside = make("ryot.ttft.outside_engine")
        # Self-metrics, always on (SPEC "Promises under faults"): the dropped counter exists at 0 from the start,
        # so "telemetry drops data" is an increase, not a series appearing.
        self.queue_dropped = make("ryot.telemetry.queue.dropped_requests")
        self.queue_age = make("ryot.telemetry.queue.oldest_age")
        self.queue_dropped.add(0)
        # No SLO table: the goodput counter is never created, so it exposes no series.
        self.slos = slos
        self.slo = make("ryot.slo.requests") if slos is not None else None
        self.exemplars = exemplars  # keep each request's sampled span for exemplars on latency and TTFT
        # The opt-in tenant label: the wrapper calls it once per request; None leaves the label out everywhere.
        self.tenants = Tenants(tenant, max_tenants, max_label_length) if tenant is not None else None
        self.tenant_of = self.tenants.of if self.tenants is not None else None
        make("ryot.active_inference_requests", callbacks=[self._observe_active])
        self.derived = DerivedGauges(meter, self.models)
        self.windows = self.derived.windows
        # Every collection starts with the drain, then the steps added with before_collection. The hook is the
        # innermost wrapper of each reader's collect, so the new-series gate (which wraps next) sees the drain's
        # zeros as added inside that collection, as it would for a drain in an instrument callback.
        readers = meter_readers(meter)
        self._before: list[Callable[[], object]] = []
        for reader in readers:
            wrap_reader_collect(reader, self._draining_first)
        # A meter whose readers cannot be reached (the API's proxy meter before a provider is set, another SDK):
        # the in-flight gauge's callback, the first instrument created here, drains instead.
        self._drain_in_callback = not readers
        # New counter series are exported at 0 before their first increment (see new_series).
        self._new_series = NewSeriesGate(readers)
        self.semconv = SemconvInstruments(meter) if semconv else None
        self._record_extra: Callable[[Request, float, float | None, float | None], None] | None = (
            self._record_semconv if semconv else None
        )

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

    def _active_for(self, key: tuple[str, str, str]) -> _Active:
        active = self._active.get(key)
        return active if active is not None else self._new_active(key)

    def _new_active(self, key: tuple[str, str, str]) -> _Active:
        with self._active_lock:
            active = self._active.get(key)
            if active is None:
                active = self._active[key] = _Active(dict(zip(_ACTIVE_LABELS, key)))
        return active

    def _submit(self, req: Request) -> None:
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
            except BaseException:
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
                    self.queue_dropped.add(dropped)
        elif not self._wake.is_set():
            self._wake.set()

    def _note_queue_age(self) -> None:
        """The age of the oldest queued request, at the start of a drain that finds the queue non-empty."""
        try:
            oldest = self._pending[0]
        except IndexError:
            return
        try:
            self.queue_age.record(max(_clock() - oldest.end, 0.0), context=_NO_SPAN)
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
        counts = self._counts
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
                    self._record(req, counts)
                except Exception:  # telemetry must never take the service down
                    _log.debug("ryot-telemetry: failed to record a request", exc_info=True)
        finally:
            otel_context.detach(token)
        self._popped += n
        return n

    def _flush(self) -> None:
        """Hand the aggregated counter increments and window sums over. Caller holds ``_drain_lock``."""
        counts, self._counts = self._counts, {}
        # Token totals are capped before the new-series gate, so increments it holds and releases later (at a
        # collection, or at shutdown, without passing through here again) are already within the cap.
        tokens = self.tokens
        for key, entry in list(counts.items()):
            if entry[0] is tokens:
                try:
                    entry[2] = self._within_token_total(entry[1], entry[2])
                except Exception:
                    _log.debug("ryot-telemetry: failed to cap a token count", exc_info=True)
                if not entry[2]:
                    del counts[key]
        token = otel_context.attach(_NO_SPAN)  # no exemplar from whatever span the collecting thread is in
        try:
            if self._new_series.enabled:
                self._new_series.route(counts)  # also releases held increments, so it runs on an empty batch too
            for instrument, attrs, amount in counts.values():
                try:
                    instrument.add(amount, attrs)
                except Exception:
                    _log.debug("ryot-telemetry: failed to record a counter", exc_info=True)
        finally:
            otel_context.detach(token)
        completion, cache, self._win_completion, self._win_cache = self._win_completion, self._win_cache, {}, {}
        if completion or cache:
            self.windows.add_sums(completion, cache)

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
        self.windows._lock = threading.Lock()
        self._wake = threading.Event()
        was_running = self._drainer is not None
        self._drainer = None
        self._stopping = False
        if was_running and self._drain_interval is not None:
            self.start_drainer(self._drain_interval)

    def _within_token_total(self, attrs: dict[str, str], amount: int) -> int:
        """How much of ``amount`` the series can still take before ``MAX_TOKEN_TOTAL`` (it then stays there)."""
        key = id(attrs)  # attrs dicts are cached for the recorder's life
        with self._token_lock:
            total = self._token_totals.get(key, 0)
            if total + amount > MAX_TOKEN_TOTAL:
                if key in self._token_saturated:
                    return 0
                self._token_saturated.add(key)
                _log.warning(
                    "ryot-telemetry: %s reached 2**63 - 1 tokens, the most OTLP can carry; it stays there (%d tokens "
                    "not counted, later ones not logged)",
                    attrs,
                    total + amount - MAX_TOKEN_TOTAL,
                )
                amount = MAX_TOKEN_TOTAL - total
            self._token_totals[key] = total + amount
        return amount

    def _a(self, *key: str | None) -> dict[str, str]:
        """Attribute dicts are built once per label combination and reused (the SDK copies them anyway).

        ``key`` is a catalogue metric name and its label values, in the catalogue's label order (optional labels
        last); a None value leaves that label out.
        """
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = self._attrs[key] = self._make_attrs(key)
        return attrs

    @staticmethod
    def _make_attrs(key: tuple[str | None, ...]) -> dict[str, str]:
        name, *vals = key
        assert name is not None
        return {k: v for k, v in zip(catalogue.get(name).all_labels, vals) if v is not None}

    @staticmethod
    def _count(counts: dict[tuple[int, int], list[Any]], instrument: Any, attrs: dict[str, str], amount: float) -> None:
        # attrs dicts are cached for the recorder's life, so their ids are stable keys
        entry = counts.get((id(instrument), id(attrs)))
        if entry is None:
            counts[(id(instrument), id(attrs))] = [instrument, attrs, amount]
        else:
            entry[2] += amount

    def _drop_implausible(self, r: Request) -> None:
        """Drop the usage counts no provider can mean (SPEC); warn once per model label (a bounded set)."""
        bad = [] if r._implausible is None else [r._implausible]
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
            v = getattr(r, name)
            if v is not None and not (type(v) is int and 0 <= v <= MAX_COUNT):
                setattr(r, name, None)  # set so by a recorder-API caller
                bad.append(f"usage.{name}={describe_count(v)}")
        if bad and r.model not in self._usage_warned:
            self._usage_warned.add(r.model)
            _log.warning(
                "ryot-telemetry: model %r: implausible %s (negative, not an integer, or above 2**53) ignored for "
                "that request; further ones for this model are not logged",
                r.model,
                ", ".join(bad),
            )

    def _clamp_parts(self, r: Request) -> None:
        """Parts never exceed their whole (SPEC): cached prompt tokens are clamped to the prompt tokens, reasoning
        tokens to the completion tokens; logged once per model label (a bounded set)."""
        clamped = []
        p, c, k, q = r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens
        if k is not None and p is not None and k > p:
            r.cached_tokens = p
            clamped.append(f"cached_tokens={k} > prompt_tokens={p}")
        if q is not None and c is not None and q > c:
            r.reasoning_tokens = c
            clamped.append(f"reasoning_tokens={q} > completion_tokens={c}")
        if clamped and r.model not in self._clamp_warned:
            self._clamp_warned.add(r.model)
            _log.warning(
                "ryot-telemetry: model %r: usage reports %s; clamped to the whole; further ones for this model are "
                "not logged",
                r.model,
                " and ".join(clamped),
            )

    def _record(self, r: Request, counts: dict[tuple[int, int], list[Any]]) -> None:
        p, c, k, q = r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens
        if r._implausible is not None or not (
            (p is None or (type(p) is int and 0 <= p <= MAX_COUNT))
            and (c is None or (type(c) is int and 0 <= c <= MAX_COUNT))
            and (k is None or (type(k) is int and 0 <= k <= MAX_COUNT))
            and (q is None or (type(q) is int and 0 <= q <= MAX_COUNT))
        ):
            self._drop_implausible(r)
            p, c, k, q = r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens
        if (k is not None and p is not None and k > p) or (q is not None and c is not None and q > c):
            self._clamp_parts(r)
        model, mode = r.model, r.mode
        tenant = None if self.tenants is None else self.tenants.label(r.tenant)
        latency = max(r.end - r.start, 0.0)
        count = self._count
        count(
            counts,
            self.requests,
            self._a(_REQUESTS, model, r.endpoint, r.status, r.error_type if r.status != PARTIAL else None, tenant),
            1,
        )
        if r.error_type is not None:
            count(counts, self.errors, self._a(_ERRORS, model, r.error_type, SEVERITY[r.error_type]), 1)
        sc = r.span_context
        ctx = None if sc is None else trace.set_span_in_context(trace.NonRecordingSpan(sc))
        self.latency.record(latency, self._a(_LATENCY, model, batch_size_label(r.batch_size), mode), context=ctx)
        self.batch.record(r.batch_size, self._a(_BATCH, model, mode))
        prompt, completion = r.prompt_tokens, r.completion_tokens
        if prompt is not None:
            count(counts, self.tokens, self._a(_TOKENS, model, PROMPT_TOKENS, mode, tenant), prompt)
        if completion is not None:
            count(counts, self.tokens, self._a(_TOKENS, model, COMPLETION_TOKENS, mode, tenant), completion)
        by_model = self._a(_MODEL, model)
        ttft = tpot = None
        if r.first_token is not None:
            ttft = max(r.first_token - r.start, 0.0)
            size_from = prompt if prompt is not None else (r.prompt_chars or 0) // 4
            self.ttft.record(ttft, self._a(_TTFT, model, prompt_size_label(size_from)), context=ctx)
            tpot = _tpot(latency, ttft, completion, r.batch_size)
            if tpot is not None:
                self.tpot.record(tpot, by_model)
        if self.slos is not None:
            self._judge(r, latency, ttft, tpot, counts, tenant)
        if completion and latency > 0:
            self.tps.record(completion / latency, by_model)
        if r.cached_tokens is not None and prompt:
            self.cache_eff.record(min(r.cached_tokens / prompt, 1.0), by_model)
        if self.prices is not None and (prompt or completion):
            price = self.prices.get(model)
            if price is not None:
                if prompt:
                    self._prompt_cost(price, model, tenant, prompt, r.cached_tokens, counts)
                if completion:
                    usd = completion * price.completion / 1000.0
                    count(counts, self.cost, self._a(_COST, model, COMPLETION_TOKENS, tenant), usd)
        if completion:
            key = (model, int(r.end))
            wc = self._win_completion
            wc[key] = wc.get(key, 0) + completion
        if r.cached_tokens is not None and prompt:
            ckey = (model, CONTEXT_TYPE[mode], int(r.end))
            sums = self._win_cache.get(ckey)
            if sums is None:
                self._win_cache[ckey] = [prompt, r.cached_tokens]
            else:
                sums[0] += prompt
                sums[1] += r.cached_tokens
        if self._record_extra is not None:
            self._record_extra(r, latency, ttft, tpot)
        self._record_outcomes(r, counts, by_model, ttft)

    def _record_outcomes(
        self, r: Request, counts: dict[tuple[int, int], list[Any]], by_model: dict[str, str], ttft: float | None
    ) -> None:
        """Finish reasons, cached/reasoning/estimated tokens and the engine's timings of one request (SPEC
        "Outcomes, token detail and where the time goes"). Last in ``_record``: whatever goes wrong here loses
        these, never the request's core measurements."""
        count = self._count
        model, mode = r.model, r.mode
        finish, timings, reasoning, chunks = r.finish, r.timings, r.reasoning_tokens, r.chunks
        if finish is not None:
            for reason in finish:
                label = reason if reason in _FINISH_LABELS else OTHER_FINISH
                count(counts, self.finish_reasons, self._a(_FINISH, model, r.endpoint, label), 1)
        elif r.status == PARTIAL and r.error_type is None:  # abandoned by the client: every choice is aborted
            count(counts, self.finish_reasons, self._a(_FINISH, model, r.endpoint, ABORT), r.batch_size)
        if r.cached_tokens is not None:
            count(counts, self.cached_prompt, self._a(_CACHED, model, mode), r.cached_tokens)
        if reasoning is not None:
            count(counts, self.reasoning, self._a(_REASONING, model, mode), reasoning)
        if r.first_token is not None:  # a stream that delivered content: estimate what usage did not report
            if r.completion_tokens is None and chunks > 0:
                count(counts, self.estimated, self._a(_ESTIMATED, model, COMPLETION_TOKENS), chunks)
            if r.prompt_tokens is None:
                prompt = (r.prompt_chars or 0) // 4  # the prompt_size estimate
                if prompt > 0:
                    count(counts, self.estimated, self._a(_ESTIMATED, model, PROMPT_TOKENS), prompt)
        if timings is not None:
            queue, prefill, engine_tpot = timings
            self.engine_prefill.record(prefill, by_model)
            if engine_tpot is not None:
                self.engine_tpot.record(engine_tpot, by_model)
            if ttft is not None:
                self.ttft_outside.record(max(ttft - queue - prefill, 0.0), by_model)

    def _prompt_cost(
        self,
        price: Price,
        model: str,
        tenant: str | None,
        prompt: int,
        cached: int | None,
        counts: dict[tuple[int, int], list[Any]],
    ) -> None:
        """Prompt cost (SPEC): (prompt - cached) x prompt price as ``prompt``, cached x cached price as
        ``cached_prompt``; the cached price defaults to the prompt price. Cached tokens past the prompt count as
        the whole prompt (they are part of it)."""
        if cached:
            cached = min(cached, prompt)
            cached_price = price.prompt if price.cached_prompt is None else price.cached_prompt
            usd = cached * cached_price / 1000.0
            self._count(counts, self.cost, self._a(_COST, model, CACHED_PROMPT_TOKENS, tenant), usd)
            prompt -= cached
        if prompt:
            self._count(counts, self.cost, self._a(_COST, model, PROMPT_TOKENS, tenant), prompt * price.prompt / 1000.0)

    def _judge(
        self,
        r: Request,
        latency: float,
        ttft: float | None,
        tpot: float | None,
        counts: dict[tuple[int, int], list[Any]],
        tenant: str | None = None,
    ) -> None:
        """Goodput: count the request once as met or missed against its model's SLO (see ``slo.judge``).

        ``ttft`` and ``tpot`` are the values the histograms got, so the SLO judges exactly what they show;
        ``tenant`` is the request's tenant label (None: no tenant label).
        """
        assert self.slos is not None
        slo = self.slos.get(r.model)
        if slo is None or (r.status == PARTIAL and r.error_type is None):
            return  # no objective for this model, or a stream the client abandoned: counted in neither
        stream = r.mode == "streaming"
        missed = judge(slo, error=r.error_type is not None, stream=stream, latency=latency, ttft=ttft, tpot=tpot)
        if missed is None:
            attrs = self._a(_SLO, r.model, "met", None, tenant)
        else:
            attrs = self._a(_SLO, r.model, "missed", missed, tenant)
        self._count(counts, self.slo, attrs, 1)

    def _record_semconv(self, r: Request, latency: float, ttft: float | None, tpot: float | None) -> None:
        """The GenAI semconv measurements, from the latency, TTFT and TPOT ``_record`` computed (attribute keys
        and values are the semconv package's constants, see semconv.py)."""
        s = self.semconv
        assert s is not None
        resp_model = r.response_model
        # Client side (the router's call to its model provider): no server.address/port, which would name the
        # provider's endpoint (see semconv.py).
        client: dict[str, Any] = {
            GEN_AI_OPERATION_NAME: OPERATION[r.endpoint],
            GEN_AI_PROVIDER_NAME: self.genai_provider,
            GEN_AI_REQUEST_MODEL: r.model,
        }
        if resp_model:
            client[GEN_AI_RESPONSE_MODEL] = self.response_models(resp_model)
        base = {**client, **self._genai_server} if self._genai_server else client  # server side: this server
        server, cl = (base, client) if r.error_type is None else (
            {**base, ERROR_TYPE: r.error_type},
            {**client, ERROR_TYPE: r.error_type},
        )  # fmt: skip
        for instrument, value, attrs in (
            (s.duration, latency, server),
            (s.client_duration, latency, cl),
            (s.ttft, ttft if r.status == SUCCESS else None, base),
            (s.tpot, tpot if r.status == SUCCESS and ttft is not None else None, base),
            (s.usage, r.prompt_tokens, {**client, GEN_AI_TOKEN_TYPE: INPUT}),
            (s.usage, r.completion_tokens, {**client, GEN_AI_TOKEN_TYPE: OUTPUT}),
        ):
            if value is not None and instrument is not None:
                instrument.record(value, attrs)
        times = r.chunk_times
        if times:  # a stream: start to its first chunk, then each chunk's gap to the one before
            if s.first_chunk is not None:
                s.first_chunk.record(max(times[0] - r.start, 0.0), client)
            per_chunk = s.per_chunk
            if per_chunk is not None:
                for before, now in zip(times, times[1:]):
                    per_chunk.record(max(now - before, 0.0), client)

    # --- observable callbacks ---------------------------------------------------------------------------------

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._drain_in_callback:
            self._drain_snapshot(options.timeout_millis / 1e3)
        return [Observation(a.value(), a.attrs) for a in list(self._active.values())]

    def set_kv_cache_hit_ratio(self, model: object, context_type: str, ratio: float) -> None:
        """Engine-reported KV cache hit ratio; overrides the usage-derived one for that model and context."""
        self.derived.set_kv_cache_hit_ratio(model, context_type, ratio)

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
        for active in list(self._active.values()):
            active.enter = itertools.count()
            active.exit = itertools.count()
        self.windows.reset()
        self._new_series.forget_held()


def _tpot(latency: float, ttft: float, completion: int | None, choices: int) -> float | None:
    """(latency - TTFT) / (tokens per choice - 1), for >= 2 tokens per choice (SPEC).

    ``choices`` is the request's batch size (prompts x ``n``): usage sums the choices, which decode in parallel,
    so the speed a user sees is per choice.
    """
    if completion is None:
        return None
    per_choice = completion / choices if choices > 1 else completion
    if per_choice < 2:
        return None
    return max(latency - ttft, 0.0) / (per_choice - 1)


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

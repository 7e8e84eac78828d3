"""One request's facts: the value object the wrapper (or a recorder-API user) fills in, ended once.

A ``Request`` knows nothing of instruments or queues: it is written to a small protocol (``Sink``: the model label
budget, the in-flight counters, and where a finished request goes), which the recorder implements. It holds only
numbers and labels (SPEC "Promises under faults"): outcomes are read from the provider's objects when the call ends
(``provider.py``), never kept for the drain.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Iterator
from typing import Any, Protocol, cast, overload

from opentelemetry import trace

from ..catalogue import PARTIAL, SUCCESS
from .errors import classify, status_for
from .labels import UNADMITTED, ModelLabels
from .provider import StreamEnd, Timings, count, get, outcome

__all__ = ["InFlight", "Request", "Sink", "clock"]

_log = logging.getLogger("ryot_telemetry")
_clock = time.perf_counter
clock = _clock
"""The clock of every request timestamp (``time.perf_counter``); the wrapper's chunk times use it too."""


class InFlight(Protocol):
    """The in-flight counters of one label set: ``next(enter)`` when a request starts, ``next(exit)`` when it ends."""

    @property
    def enter(self) -> Iterator[int]: ...

    @property
    def exit(self) -> Iterator[int]: ...


class Sink(Protocol):
    """What a request needs from its recorder."""

    models: ModelLabels

    def active_for(self, key: tuple[str, str, str]) -> InFlight:
        """The in-flight counters of (model label, mode, endpoint)."""
        ...

    def submit(self, req: Request) -> None:
        """Take a finished request (to be recorded)."""
        ...


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

    def __init__(self, model: str, endpoint: str, mode: str, batch_size: int, active: InFlight, recorder: Sink) -> None:
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

    @property
    def done(self) -> bool:
        """The request has ended (``success``, ``fail`` or ``abandon``): later ends are no-ops."""
        return self._done

    @property
    def awaiting_admission(self) -> bool:
        """The model name has no label slot yet (the request is in flight under ``__unknown__``): see ``admit``."""
        return self._pending is not None and not self._done

    def note_implausible(self, note: str) -> None:
        """Usage counts were dropped as implausible (``note`` describes them); the recorder warns once per model."""
        if self._implausible is None:
            self._implausible = note
        elif len(self._implausible) < 200:  # a stream may repeat it in every chunk: keep the note bounded
            self._implausible = f"{self._implausible}, {note}"

    def admit(self, recorder: Sink | None = None) -> None:
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
        active = rec.active_for((label, self.mode, self.endpoint))
        next(active.enter)  # enter the new series before leaving the old: neither ever reads negative
        next(self._active.exit)
        self._active = active
        self.model = label

    def _settle(self, recorder: Sink, admitted: bool) -> None:
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

    def success(self, recorder: Sink | None = None) -> None:
        """The request completed."""
        if not self._done:
            self.end = _clock()
            self._done = True
            next(self._active.exit)
            rec = recorder or self._recorder
            if self._pending is not None:
                self._settle(rec, True)
            rec.submit(self)

    @overload
    def fail(self, exc: BaseException, /) -> None: ...
    @overload
    def fail(self, recorder: Sink, exc: BaseException, /) -> None: ...

    def fail(self, first: Sink | BaseException, exc: BaseException | None = None, /) -> None:
        """The request failed with ``exc``: error_type and severity are classified from it (``partial`` if a stream
        already delivered content). Also ``fail(recorder, exc)``."""
        if not self._done:
            self.end = _clock()
            self._done = True
            next(self._active.exit)
            if exc is None:
                exc, recorder = cast(BaseException, first), self._recorder
            else:
                recorder = cast(Sink, first)
            self.error_type = classify(exc)
            self.status = PARTIAL if self.delivered else status_for(self.error_type)
            if self._pending is not None:
                # any error but model_not_found came from past the router's model lookup
                self._settle(recorder, self.delivered or self.error_type != "model_not_found")
            recorder.submit(self)

    def abandon(self, recorder: Sink | None = None) -> None:
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
            rec.submit(self)

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
                self._recorder.submit(self)
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
                self._recorder.submit(self)
            except Exception:
                _log.debug("ryot-telemetry: failed to record the end of a request", exc_info=True)
            return
        self.__exit__(exc_type, exc, tb)

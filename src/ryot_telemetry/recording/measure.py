"""Measure: turning a finished ``Request`` into measurements, in one class that owns the instruments.

``Measure`` creates the router-facing instruments from the catalogue, keeps the attribute dicts (built once per
series) and the per-batch aggregation: ``record(request)`` adds one request's measurements — histogram values kept
per series until ``flush()`` (or ``flush_histograms`` once ``HISTOGRAM_BATCH`` values wait) hands each series'
values to the SDK in one go (``_compat.HistogramBatch``), counter increments and sliding-window sums summed per
series until ``flush()`` hands them over once per drain. It runs under the drain's lock (``recorder.py``), never on
the request path. A request records only what it has: an absent count records nothing, a family it has nothing for
gets no point.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Meter

from .. import catalogue
from .._compat import HistogramBatch, histogram_batch
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
from .errors import SEVERITY
from .instruments import Callback, create_instrument
from .labels import ModelLabels, batch_size_label, prompt_size_label
from .provider import MAX_COUNT, describe_count
from .request import Request
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

__all__ = ["HISTOGRAM_BATCH", "MAX_TOKEN_TOTAL", "NO_SPAN", "Measure"]

_log = logging.getLogger("ryot_telemetry")

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

MAX_TOKEN_TOTAL = 2**63 - 1
"""The largest cumulative token count OTLP can carry (an int64 sum): past it a series stops growing, so even
1,024 requests of 2**53 tokens each cannot make the counter unencodable and stop every later export."""

NO_SPAN = trace.set_span_in_context(trace.INVALID_SPAN)
"""Measurements are recorded at drain time, in whatever context the reader or an overflowing request runs in: they
are recorded under this context with no span, so a trace-based exemplar filter never attaches an unrelated trace."""
_NO_SPAN = NO_SPAN


_MAX_FLOAT = sys.float_info.max
"""Histogram values past it (inf, or an int no float can hold) go to the SDK's ``record`` one by one (it refuses
them, as it does NaN and negative values)."""

HISTOGRAM_BATCH = 4096
"""Histogram values that may wait for the next collection (``flush``): past it a drain slice hands them over. Small
enough to bound the memory (tens of KB), large enough that the background drainer's slices of 32 requests hand each
series' values over in one call, not one per slice."""

_MAX_SERIES_SETS = 4096
"""Label combinations whose attribute dicts ``Measure`` keeps together (``_Series``); past it they are rebuilt."""


class _Series:
    """The attribute dicts one kind of request records under, built once per (model, endpoint, mode, status,
    error_type, tenant): a request then builds one key, not one per family."""

    __slots__ = (
        "batch",
        "by_model",
        "cached",
        "completion",
        "errors",
        "estimated",
        "finish",
        "latency",
        "prompt",
        "reasoning",
        "requests",
        "requests_key",
    )

    def __init__(
        self,
        *,
        requests: dict[str, str],
        errors: dict[str, str] | None,
        batch: dict[str, str],
        prompt: dict[str, str],
        completion: dict[str, str],
        by_model: dict[str, str],
        cached: dict[str, str],
        reasoning: dict[str, str],
        finish: dict[str, dict[str, str]],
        estimated: tuple[dict[str, str], dict[str, str]],
    ) -> None:
        self.requests, self.errors, self.batch = requests, errors, batch
        self.prompt, self.completion, self.by_model = prompt, completion, by_model
        self.cached, self.reasoning, self.finish, self.estimated = cached, reasoning, finish, estimated
        self.latency: dict[int, dict[str, str]] = {}  # by batch size (its label is a bucket of it)
        self.requests_key: tuple[int, int] = (0, id(requests))  # completed by Measure: (id(instrument), id(attrs))


class MeasureOptions(TypedDict, total=False):
    """What a ``Measure`` is built with besides its meter, each declared once: the ``Recorder`` takes the same
    keywords and hands them on."""

    buckets: Mapping[str, Sequence[float]] | None
    max_models: int
    max_label_length: int
    prices: PriceTable | None
    semconv: bool
    genai_provider: str
    genai_server: tuple[str, int] | None
    slos: SloTable | None
    tenant: str | Callable[[Any], object] | None
    max_tenants: int


class Measure:
    """The router-facing instruments, their attribute dicts, and ``record(request)``."""

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
        genai_server: tuple[str, int] | None = None,
        slos: SloTable | None = None,
        tenant: str | Callable[[Any], object] | None = None,
        max_tenants: int = DEFAULT_MAX_TENANTS,
        observe_active: Callback | None = None,
    ) -> None:
        self.models = ModelLabels(max_models, max_label_length)
        # gen_ai.response.model has its own budget: dated snapshot names must not crowd out request models.
        self.response_models = ModelLabels(max_models, max_label_length)
        self.prices = prices
        self.genai_provider = genai_provider
        # server.address / server.port of the semconv metrics: this server, as configured (see semconv.py)
        self._genai_server: dict[str, str | int] = {}
        if genai_server is not None:
            self._genai_server = {SERVER_ADDRESS: genai_server[0], SERVER_PORT: genai_server[1]}
        # Aggregated since the last flush (under the drain's lock): counter increments, window sums.
        self._counts: dict[tuple[int, int], list[Any]] = {}
        self._win_completion: dict[tuple[str, int], int] = {}
        self._win_cache: dict[tuple[str, str, int], list[int]] = {}
        self._attrs: dict[tuple[str | None, ...], dict[str, str]] = {}
        self._series: dict[tuple[Any, ...], _Series] = {}
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
        self.prompt_length = make("ryot.request.prompt_tokens")
        self.completion_length = make("ryot.request.completion_tokens")
        self.engine_queue = make("ryot.engine.queue")
        # Histogram values wait, like counter increments, for flush() (or HISTOGRAM_BATCH of them): the
        # SDK then takes each series' values in one go (_compat.HistogramBatch). Keyed by the instrument's id: an
        # instrument that is no SDK histogram (or one put in its place) records each value at once.
        self._batches: dict[int, HistogramBatch] = {}
        for h in (
            self.latency, self.ttft, self.tpot, self.batch, self.tps, self.cache_eff, self.engine_prefill,
            self.engine_tpot, self.ttft_outside, self.prompt_length, self.completion_length, self.engine_queue,
        ):  # fmt: skip
            hb = histogram_batch(h)
            if hb is not None:
                self._batches[id(h)] = hb
        # Per (instrument, attrs[, span context]): (its values, its instrument's order list, its index there); per
        # instrument: the batch, its series (attrs, values, span context) and the order its values came in.
        self._hists: dict[tuple[int, ...], tuple[list[float], list[int], int]] = {}
        self._groups: dict[int, tuple[HistogramBatch, list[tuple[dict[str, str], list[float], Any]], list[int]]] = {}
        # No SLO table: the goodput counter is never created, so it exposes no series.
        self.slos = slos
        self.slo = make("ryot.slo.requests") if slos is not None else None
        # The opt-in tenant label: the wrapper calls it once per request; None leaves the label out everywhere.
        self.tenants = Tenants(tenant, max_tenants, max_label_length) if tenant is not None else None
        if observe_active is not None:
            make("ryot.active_inference_requests", callbacks=[observe_active])
        self.derived = DerivedGauges(meter, self.models)
        self.windows = self.derived.windows
        self.semconv = SemconvInstruments(meter) if semconv else None
        if self.semconv is not None:
            s = self.semconv
            for h in (s.duration, s.client_duration, s.ttft, s.tpot, s.usage, s.first_chunk, s.per_chunk):
                hb = histogram_batch(h) if h is not None else None
                if hb is not None:
                    self._batches[id(h)] = hb
        self._record_extra: Callable[[Request, float, float | None, float | None], None] | None = (
            self._record_semconv if semconv else None
        )

    def record(self, r: Request) -> None:
        """Add one finished request's measurements (counters and window sums wait for ``flush``)."""
        self._record(r, self._counts)

    def _hist(self, instrument: Any, attrs: dict[str, str], value: float, ctx: Any = None) -> None:
        """Record ``value`` at the next flush (``flush_histograms``); now, through the SDK's own ``record`` (its
        warning, or its error for this request), if the instrument has no batch or the value is not a plain number
        from 0 to the largest float (a bool, say): the instrument's waiting values are then handed over first, so
        each series still receives its values in recording order. ``ctx``: the request's span context (exemplars),
        None for the drain's context without a span."""
        # its group holds attrs and ctx: their ids stay their own
        key = (id(instrument), id(attrs)) if ctx is None else (id(instrument), id(attrs), id(ctx))
        entry = self._hists.get(key)
        if entry is not None and (type(value) is float or type(value) is int) and 0 <= value <= _MAX_FLOAT:
            entry[0].append(value)
            entry[1].append(entry[2])
            return
        batch = self._batches.get(id(instrument))
        if batch is None or not ((type(value) is float or type(value) is int) and 0 <= value <= _MAX_FLOAT):
            if id(instrument) in self._groups:
                self._flush_group(id(instrument))
            instrument.record(value, attrs, context=ctx)
            return
        group = self._groups.get(id(instrument))
        if group is None:
            group = self._groups[id(instrument)] = (batch, [], [])
        _, series, order = group
        values = [value]
        self._hists[key] = (values, order, len(series))
        order.append(len(series))
        series.append((attrs, values, ctx))

    def flush_histograms(self, at_least: int = 0) -> None:
        """Hand the histogram values recorded since the last call to the SDK, one call per instrument, in order, if
        at least ``at_least`` wait. Called under the drain's lock: by ``flush``, and after each slice of the drain
        with ``HISTOGRAM_BATCH``, which bounds how many values wait between collections."""
        if at_least and sum(len(order) for _, _, order in self._groups.values()) < at_least:
            return
        groups, self._groups, self._hists = self._groups, {}, {}
        for batch, series, order in groups.values():
            try:
                batch.record(series, order, _NO_SPAN)
            except Exception:
                _log.debug("ryot-telemetry: failed to record a histogram", exc_info=True)

    def _flush_group(self, key: int) -> None:
        """Hand one instrument's waiting values over now (``key``: its id)."""
        batch, series, order = self._groups.pop(key)
        for attrs, _, ctx in series:
            del self._hists[(key, id(attrs)) if ctx is None else (key, id(attrs), id(ctx))]
        try:
            batch.record(series, order, _NO_SPAN)
        except Exception:
            _log.debug("ryot-telemetry: failed to record a histogram", exc_info=True)

    def forget_batch(self) -> None:
        """Drop what was aggregated since the last flush (counter increments, window sums, histogram values): in a
        forked child they are the parent's, which the parent records itself."""
        self._counts, self._win_completion, self._win_cache = {}, {}, {}
        self._groups, self._hists = {}, {}

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
        status, error_type = r.status, r.error_type
        key = (model, r.endpoint, mode, status, error_type, tenant)
        series = self._series.get(key)
        if series is None:
            series = self._new_series(key)
        latency = max(r.end - r.start, 0.0)
        count = self._count
        entry = counts.get(series.requests_key)  # the one increment every request makes, inlined
        if entry is None:
            counts[series.requests_key] = [self.requests, series.requests, 1]
        else:
            entry[2] += 1
        if series.errors is not None:
            count(counts, self.errors, series.errors, 1)
        sc = r.span_context
        ctx = None if sc is None else trace.set_span_in_context(trace.NonRecordingSpan(sc))
        size = r.batch_size
        lat = series.latency.get(size)
        if lat is None:
            lat = self._a(_LATENCY, model, batch_size_label(size), mode)
            if type(size) is int and 0 < size <= 64:  # the common sizes; any other is looked up each time
                series.latency[size] = lat
        hist = self._hist
        hist(self.latency, lat, latency, ctx)  # ctx: the request's span, for exemplars
        hist(self.batch, series.batch, size)
        prompt, completion, cached = r.prompt_tokens, r.completion_tokens, r.cached_tokens
        if prompt:  # only what the request has: no zero increments
            count(counts, self.tokens, series.prompt, prompt)
        if completion:
            count(counts, self.tokens, series.completion, completion)
        by_model = series.by_model
        ttft = tpot = None
        if r.first_token is not None:
            ttft = max(r.first_token - r.start, 0.0)
            size_from = prompt if prompt is not None else (r.prompt_chars or 0) // 4
            ttft_attrs = self._a(_TTFT, model, prompt_size_label(size_from))
            hist(self.ttft, ttft_attrs, ttft, ctx)
            tpot = _tpot(latency, ttft, completion, size)
            if tpot is not None:
                hist(self.tpot, by_model, tpot)
        if self.slos is not None:
            self._judge(r, latency, ttft, tpot, counts, tenant)
        if prompt is not None:  # lengths from usage only: an estimate never enters the distribution
            hist(self.prompt_length, by_model, prompt)
        if completion is not None:
            hist(self.completion_length, by_model, completion)
        if completion and latency > 0:
            hist(self.tps, by_model, completion / latency)
        if cached is not None and prompt:
            hist(self.cache_eff, by_model, min(cached / prompt, 1.0))
        if self.prices is not None and (prompt or completion):
            price = self.prices.get(model)
            if price is not None:
                if prompt:
                    self._prompt_cost(price, model, tenant, prompt, cached, counts)
                if completion:
                    usd = completion * price.completion / 1000.0
                    count(counts, self.cost, self._a(_COST, model, COMPLETION_TOKENS, tenant), usd)
        end = int(r.end)
        if completion:
            wkey = (model, end)
            wc = self._win_completion
            wc[wkey] = wc.get(wkey, 0) + completion
        if cached is not None and prompt:
            ckey = (model, CONTEXT_TYPE[mode], end)
            sums = self._win_cache.get(ckey)
            if sums is None:
                self._win_cache[ckey] = [prompt, cached]
            else:
                sums[0] += prompt
                sums[1] += cached
        if self._record_extra is not None:
            self._record_extra(r, latency, ttft, tpot)
        self._record_outcomes(r, counts, series, ttft)

    def _new_series(self, key: tuple[Any, ...]) -> _Series:
        """The attribute dicts of one (model, endpoint, mode, status, error_type, tenant), built once."""
        model, endpoint, mode, status, error_type, tenant = key
        a = self._a
        series = _Series(
            requests=a(_REQUESTS, model, endpoint, status, error_type if status != PARTIAL else None, tenant),
            errors=None if error_type is None else a(_ERRORS, model, error_type, SEVERITY[error_type]),
            batch=a(_BATCH, model, mode),
            prompt=a(_TOKENS, model, PROMPT_TOKENS, mode, tenant),
            completion=a(_TOKENS, model, COMPLETION_TOKENS, mode, tenant),
            by_model=a(_MODEL, model),
            cached=a(_CACHED, model, mode),
            reasoning=a(_REASONING, model, mode),
            finish={label: a(_FINISH, model, endpoint, label) for label in FINISH_REASONS},
            estimated=(a(_ESTIMATED, model, PROMPT_TOKENS), a(_ESTIMATED, model, COMPLETION_TOKENS)),
        )
        series.requests_key = (id(self.requests), id(series.requests))  # the key ``_count`` uses
        if len(self._series) >= _MAX_SERIES_SETS:  # bounded: an adversarial mix only rebuilds them
            self._series.clear()
        self._series[key] = series
        return series

    def _record_outcomes(
        self, r: Request, counts: dict[tuple[int, int], list[Any]], series: _Series, ttft: float | None
    ) -> None:
        """Finish reasons, cached/reasoning/estimated tokens and the engine's timings of one request (SPEC
        "Outcomes, token detail and where the time goes"). Last in ``_record``: whatever goes wrong here loses
        these, never the request's core measurements."""
        count = self._count
        finish, timings, reasoning, chunks = r.finish, r.timings, r.reasoning_tokens, r.chunks
        if finish is not None:
            labels = series.finish
            for reason in finish:
                count(counts, self.finish_reasons, labels.get(reason) or labels[OTHER_FINISH], 1)
        elif r.status == PARTIAL and r.error_type is None and r.batch_size:  # abandoned: every choice aborted
            count(counts, self.finish_reasons, series.finish[ABORT], r.batch_size)
        if r.cached_tokens:
            count(counts, self.cached_prompt, series.cached, r.cached_tokens)
        if reasoning:
            count(counts, self.reasoning, series.reasoning, reasoning)
        if r.first_token is not None:  # a stream that delivered content: estimate what usage did not report
            if r.completion_tokens is None and chunks > 0:
                count(counts, self.estimated, series.estimated[1], chunks)
            if r.prompt_tokens is None:
                prompt = (r.prompt_chars or 0) // 4  # the prompt_size estimate
                if prompt > 0:
                    count(counts, self.estimated, series.estimated[0], prompt)
        if timings is not None:
            by_model, hist = series.by_model, self._hist
            queue, prefill, engine_tpot = timings
            if queue is not None:  # reported by the engine (vLLM); nothing invented for one that does not
                hist(self.engine_queue, by_model, queue)
            hist(self.engine_prefill, by_model, prefill)
            if engine_tpot is not None:
                hist(self.engine_tpot, by_model, engine_tpot)
            if ttft is not None:
                hist(self.ttft_outside, by_model, max(ttft - (queue or 0.0) - prefill, 0.0))

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
        s, hist = self.semconv, self._hist
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
                hist(instrument, attrs, value)
        times = r.chunk_times
        if times:  # a stream: start to its first chunk, then each chunk's gap to the one before
            if s.first_chunk is not None:
                hist(s.first_chunk, client, max(times[0] - r.start, 0.0))
            per_chunk = s.per_chunk
            if per_chunk is not None:
                for before, now in zip(times, times[1:]):
                    hist(per_chunk, client, max(now - before, 0.0))

    def flush(self, route: Callable[[dict[tuple[int, int], list[Any]]], None] | None = None) -> None:
        """Hand the histogram values, counter increments and window sums aggregated since the last flush to the SDK
        and the sliding windows: one ``add`` per series. ``route``: the new-series gate, which may hold back a new
        series' first increments (it runs on an empty batch too: it also releases what it held)."""
        self.flush_histograms()
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
            if route is not None:
                route(counts)
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

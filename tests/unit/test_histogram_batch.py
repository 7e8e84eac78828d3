"""Histogram values handed to the SDK once per series and drain batch give exactly the points of one ``record`` each.

Two levels, both Hypothesis properties across their limits (deterministic: ``derandomize=True``, no database):
``_compat.HistogramBatch`` against the public ``Histogram.record`` on twin providers (cumulative and delta readers,
Views that drop attribute keys or change the aggregation, the series limit and its overflow, every built-in exemplar
filter and one of the application's, values in sampled spans, values the SDK refuses), and ``Measure``'s batching
against the same recorder with batching switched off (requests of any shape drained in slices of any size, the
attribute-dict cache rebuilt past its limit).
"""

from __future__ import annotations

import logging
import math
from array import array
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.context import attach, detach
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Histogram,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, SumAggregation, View
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from ryot_telemetry._compat import VIEW_CARDINALITY_LIMIT, HistogramBatch, histogram_batch
from ryot_telemetry.recording import measure as measure_module
from ryot_telemetry.recording import recorder as recorder_module
from ryot_telemetry.recording import request as request_module
from ryot_telemetry.recording.measure import NO_SPAN
from ryot_telemetry.recording.recorder import Recorder
from support.floors import needs_histogram_batch

PROFILE = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _span(trace_id: int) -> Any:
    """A context whose span is sampled: a trace-based filter offers its values as exemplars."""
    sc = SpanContext(trace_id=trace_id, span_id=trace_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return set_span_in_context(NonRecordingSpan(sc))


ATTRS = [{"model": "a"}, {"model": "b", "mode": "x"}, {"model": "a", "mode": "y"}, {}, {"model": "c", "n": 3}]
VALUES = st.one_of(
    st.floats(min_value=0, max_value=1e6),
    st.integers(min_value=0, max_value=2**60),
    st.sampled_from([0, 0.0, 5e-324, 1.7976931348623157e308, -0.0, -1, -2.5, math.nan, math.inf, -math.inf, True]),
)


class AboveOne(TraceBasedExemplarFilter):
    """A filter of the application's own that decides by the value: asked for every value, as ``record`` asks it."""

    def should_sample(self, value: float, time_unix_nano: int, attributes: Any, context: Any) -> bool:
        return value > 1.0


SPANS = [_span(100 + i) for i in range(len(ATTRS))]
FILTERS = {
    "on": AlwaysOnExemplarFilter,
    "off": AlwaysOffExemplarFilter,
    "trace": TraceBasedExemplarFilter,
    "above-one": AboveOne,
}


def _provider(temporality: str, view: str, limit: int | None, exemplars: str) -> tuple[Any, InMemoryMetricReader]:
    delta = {Histogram: AggregationTemporality.DELTA} if temporality == "delta" else {}
    reader = InMemoryMetricReader(preferred_temporality=delta)
    kw: dict[str, Any] = {"aggregation_cardinality_limit": limit} if VIEW_CARDINALITY_LIMIT and limit else {}
    views = {
        "none": [View(instrument_name="*", **kw)] if kw else [],
        "keys": [View(instrument_name="h", attribute_keys={"model"}, **kw)],
        "buckets": [View(instrument_name="h", aggregation=ExplicitBucketHistogramAggregation((0.5, 10.0)), **kw)],
        "sum": [View(instrument_name="h", aggregation=SumAggregation(), **kw)],
    }[view]
    provider = MeterProvider(metric_readers=[reader], views=views, exemplar_filter=FILTERS[exemplars]())
    return provider, reader


def _points(reader: InMemoryMetricReader, random_reservoir: bool = False) -> list[str]:
    """Every point of the last collection, timestamps aside (exemplars by value and filtered attributes; only how
    many for a reservoir that samples at random)."""
    data = reader.get_metrics_data()
    out = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    d = {k: v for k, v in vars(p).items() if k not in ("start_time_unix_nano", "time_unix_nano")}
                    d["exemplars"] = [(e.value, dict(e.filtered_attributes or {}), e.trace_id) for e in p.exemplars]
                    if random_reservoir:
                        d["exemplars"] = len(p.exemplars)
                    d["attributes"] = sorted((p.attributes or {}).items())
                    out.append(repr(sorted(d.items(), key=lambda kv: kv[0])))
    return sorted(out)


@needs_histogram_batch
@PROFILE
@example(
    temporality="cumulative",
    view="none",
    limit=1,
    exemplars="on",
    batches=[[(0, 0.0, False), (1, 0.0, False), (2, 0.0, False), (1, 0.0, False)]],
).via("the overflow point's exemplar is the last value recorded into it, whichever series it came from")
@example(
    temporality="delta",
    view="keys",
    limit=None,
    exemplars="on",
    batches=[[(0, 1.0, False), (2, 2.0, False), (0, 3.0, False)], [(2, 1.0, False)]],
).via("two series meet once a View drops a key: the last exemplar per bucket is the last value in recording order")
@given(
    temporality=st.sampled_from(["cumulative", "delta"]),
    view=st.sampled_from(["none", "keys", "buckets", "sum"]),
    limit=st.sampled_from([None, 1, 2, 3]),
    exemplars=st.sampled_from(sorted(FILTERS)),
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, len(ATTRS) - 1), VALUES, st.booleans()), max_size=12), max_size=4
    ),
)
def test_a_batch_per_series_gives_the_points_of_one_record_per_value(
    temporality: str, view: str, limit: int | None, exemplars: str, batches: list[list[tuple[int, Any, bool]]]
) -> None:
    """Each drain batch handed over per series (values in order, some in a sampled span's context of their own)
    gives, collection after collection, the same points as one public ``record`` per value: Views, the series
    limit, delta resets and exemplars (their traces too) included."""
    one, one_reader = _provider(temporality, view, limit, exemplars)
    many, many_reader = _provider(temporality, view, limit, exemplars)
    h_one = one.get_meter("t").create_histogram("h")
    h_many = many.get_meter("t").create_histogram("h")
    batch = histogram_batch(h_many)
    assert isinstance(batch, HistogramBatch)
    logging.disable(logging.WARNING)  # the SDK's warnings for refused values, on both sides
    token = attach(NO_SPAN)
    try:
        for values in batches:
            index: dict[tuple[int, bool], int] = {}
            series: list[tuple[dict[str, Any], list[Any], Any]] = []
            order = []
            for i, v, traced in values:
                h_one.record(v, ATTRS[i], context=SPANS[i] if traced else None)
                if (i, traced) not in index:
                    index[i, traced] = len(series)
                    series.append((ATTRS[i], [], SPANS[i] if traced else None))
                series[index[i, traced]][1].append(v)
                order.append(index[i, traced])
            if series:
                batch.record(series, order, NO_SPAN)
            random_reservoir = view == "sum"  # a Sum's exemplar reservoir samples at random: its pick is by chance
            assert _points(many_reader, random_reservoir) == _points(one_reader, random_reservoir)
    finally:
        detach(token)
        logging.disable(logging.NOTSET)
        one.shutdown()
        many.shutdown()


@needs_histogram_batch
def test_an_instrument_that_is_no_sdk_histogram_has_no_batch() -> None:
    """A counter, the API's no-op histogram and a stand-in get None: their values are recorded one by one."""
    from opentelemetry.metrics import NoOpMeter

    provider = MeterProvider()
    meter = provider.get_meter("t")
    assert histogram_batch(meter.create_counter("c")) is None
    assert histogram_batch(NoOpMeter("t").create_histogram("h")) is None
    assert histogram_batch(object()) is None
    assert isinstance(histogram_batch(meter.create_histogram("h")), HistogramBatch)
    provider.shutdown()


REQUESTS = st.lists(
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["m0", "m1", "m2"]),
            "mode": st.sampled_from(["standard", "streaming", "batch"]),
            "batch_size": st.one_of(st.integers(0, 70), st.sampled_from([-1, 2**70, 10**400, True, False])),
            "prompt": st.one_of(st.none(), st.integers(0, 5000)),
            "completion": st.one_of(st.none(), st.integers(0, 5000)),
            "cached": st.one_of(st.none(), st.integers(0, 6000)),
            "first_token": st.one_of(st.none(), st.floats(0, 2)),
            "timings": st.one_of(
                st.none(),
                st.tuples(
                    st.one_of(st.none(), st.floats(0, 1)), st.floats(0, 1), st.one_of(st.none(), st.floats(0, 1))
                ),
            ),
            "latency": st.one_of(st.floats(0, 5), st.sampled_from([0.0, 0.2, 0.3])),  # repeats share a bucket
            "fail": st.booleans(),
            "chunk_times": st.lists(st.sampled_from([0.0, 0.1, 0.15, 0.5]), max_size=6),
            "span": st.booleans(),
        }
    ),
    max_size=40,
)


def _run(
    requests: list[dict[str, Any]],
    slices: list[tuple[int, bool]],
    batching: bool,
    series_sets: int,
    limit: int,
    semconv: bool,
    waiting: int = 4096,
    exemplars: str = "on",
) -> list[str]:
    """Every point (histogram exemplars included) after recording ``requests`` and draining them in ``slices``, with
    or without batching, on a provider whose exemplar filter is ``exemplars`` and that holds ``limit`` series per
    metric (0: the SDK's default), so series meet in the overflow point; with the semconv metrics if asked."""
    reader = InMemoryMetricReader()
    views = [View(instrument_name="*", aggregation_cardinality_limit=limit)] if limit and VIEW_CARDINALITY_LIMIT else []
    provider = MeterProvider(metric_readers=[reader], views=views, exemplar_filter=FILTERS[exemplars]())
    rec = Recorder(provider.get_meter("t"), semconv=semconv)
    s = rec.measure.semconv
    semconv_histograms = [] if s is None else [s.duration, s.ttft, s.per_chunk, s.usage]
    assert all(id(h) in rec.measure._batches for h in semconv_histograms)  # the batched path is the one tested
    if not batching:
        rec.measure._batches.clear()
    t = [0.0]
    saved = (
        request_module._clock,
        recorder_module._clock,
        measure_module._MAX_SERIES_SETS,
        recorder_module.HISTOGRAM_BATCH,
    )
    request_module._clock = recorder_module._clock = lambda: t[0]  # every time (the queue's age too) the example's
    measure_module._MAX_SERIES_SETS, recorder_module.HISTOGRAM_BATCH = series_sets, waiting
    try:
        for number, r in enumerate(requests):
            t[0] = 100.0
            req = rec.start(r["model"], "chat_completion", r["mode"], r["batch_size"])
            req.prompt_tokens, req.completion_tokens, req.cached_tokens = r["prompt"], r["completion"], r["cached"]
            if r["first_token"] is not None:
                req.first_token = 100.0 + r["first_token"]
            req.timings = r["timings"]
            if r["span"]:  # the request ran in a sampled span: its latency and TTFT carry it as exemplars
                req.span_context = SpanContext(number + 1, number + 1, False, TraceFlags(TraceFlags.SAMPLED))
            if r["chunk_times"]:
                req.chunk_times = array("d", [100.0 + x for x in r["chunk_times"]])
            t[0] = 100.0 + r["latency"]
            if r["fail"]:
                req.fail(TimeoutError("slow"))
            else:
                req.success()
        for n, collect in slices:
            if collect:
                rec.drain(n)  # as a collection: the slice, then every batch handed over
            else:
                with rec._drain_lock:  # as the background drainer: values wait up to HISTOGRAM_BATCH
                    rec._record_batch(n)
        rec.drain()
        data = reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        d = vars(p)
                        # a counter's exemplar reservoir samples at random; a histogram's keeps the last per bucket
                        ex = [(e.value, sorted((e.filtered_attributes or {}).items()), e.trace_id) for e in p.exemplars]
                        out.append(repr((
                            m.name, sorted((p.attributes or {}).items()), d.get("count"), d.get("sum"),
                            d.get("bucket_counts"), d.get("value"), d.get("min"), d.get("max"),
                            ex if "bucket_counts" in d else len(ex),
                        )))  # fmt: skip
        return sorted(out)
    finally:
        (
            request_module._clock,
            recorder_module._clock,
            measure_module._MAX_SERIES_SETS,
            recorder_module.HISTOGRAM_BATCH,
        ) = saved
        provider.shutdown()


def _plain(model: str, latency: float = 0.2) -> dict[str, Any]:
    return {
        "model": model, "mode": "standard", "batch_size": 1, "prompt": 10, "completion": 20, "cached": None,
        "first_token": None, "timings": None, "latency": latency, "fail": False, "chunk_times": [], "span": False,
    }  # fmt: skip


@needs_histogram_batch
@PROFILE
@example(
    requests=[_plain("m0"), _plain("m1"), _plain("m2"), _plain("m1")],
    slices=[],
    series_sets=4096,
    limit=1,
    semconv=False,
    waiting=4096,
    exemplars="on",
).via("m1 and m2 meet in the overflow point: its exemplars are m1's, the last recorded, not m2's")
@example(
    requests=[_plain("m0"), _plain("m0", 0.3) | {"batch_size": True}],
    slices=[],
    series_sets=4096,
    limit=0,
    semconv=False,
    waiting=4096,
    exemplars="on",
).via("a bool batch size, which the SDK takes as 1, comes after the waiting 1 of the same series: its exemplar")
@given(
    requests=REQUESTS,
    slices=st.lists(st.tuples(st.integers(1, 50), st.booleans()), max_size=5),
    series_sets=st.sampled_from([1, 2, 4096]),
    limit=st.sampled_from([0, 1, 2, 3, 5]),
    semconv=st.booleans(),
    waiting=st.sampled_from([1, 5, 4096]),
    exemplars=st.sampled_from(["on", "trace"]),
)
def test_measure_batching_records_exactly_what_one_record_per_value_does(
    requests: list[dict[str, Any]],
    slices: list[tuple[int, bool]],
    series_sets: int,
    limit: int,
    semconv: bool,
    waiting: int,
    exemplars: str,
) -> None:
    """Requests of any shape (sizes the SDK refuses or cannot hold, absent and present usage, engine timings, errors)
    drained in slices of any size (by collections, or by the drainer with values waiting up to any bound), with the
    semconv metrics (per-chunk times) or without, give every family exactly the points and histogram exemplars of
    the same recorder recording each histogram value at once: when series meet in the overflow point, when the
    attribute-dict cache is rebuilt after every new label set."""
    logging.disable(logging.WARNING)
    try:
        got = _run(requests, slices, True, series_sets, limit, semconv, waiting, exemplars)
        assert got == _run(requests, slices, False, series_sets, limit, semconv, waiting, exemplars)
    finally:
        logging.disable(logging.NOTSET)


@needs_histogram_batch
def test_a_forked_worker_forgets_the_parents_unflushed_batch() -> None:
    """``reset_after_fork`` drops histogram values and counter increments recorded but not yet handed to the SDK
    (the parent hands over its own): the child's next collection shows only the child's request."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    rec = Recorder(provider.get_meter("t"))
    try:
        rec.start("parent", "chat_completion", "standard").success()
        rec.measure.record(rec._pending.popleft())  # recorded, not yet flushed: as a drain interrupted by fork()
        rec.reset_after_fork()
        rec.start("child", "chat_completion", "standard").success()
        rec.drain()
        data = reader.get_metrics_data()
        models = {
            (m.name, dict(p.attributes or {}).get("model"))
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            for p in m.data.data_points
            if m.name in ("ryot.inference.requests", "ryot.inference.latency", "ryot.batch_size.distribution")
        }
        assert models == {
            ("ryot.inference.requests", "child"),
            ("ryot.inference.latency", "child"),
            ("ryot.batch_size.distribution", "child"),
        }
    finally:
        provider.shutdown()

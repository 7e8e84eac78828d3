"""The recorder: its API for serving loops that are not routers (``with rec.request(...) as req:``, manual ends),
and its drain (collections record exactly their snapshot, in paced slices; the background drainer)."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import ryot_telemetry
from ryot_telemetry.recording import recorder as _recorder
from ryot_telemetry.recording import request as _request
from ryot_telemetry.recording.provider import StreamEnd
from ryot_telemetry.recording.recorder import SLICE, WAKE_AT, YIELD_RATIO, Recorder
from ryot_telemetry.testing import Capture, capture
from support.polling import until

REQ = "ryot.inference.requests"
ERR = "ryot.inference.errors"
TOK = "ryot.tokens.generated"
LAT = "ryot.inference.latency"


class ModelNotFoundError(Exception):
    pass


@pytest.fixture(autouse=True)
def _m_is_served(cap: Capture) -> None:
    """Model "m" already has its label slot, as one the serving loop has served does: its requests are in flight and
    recorded under "m" from the start (a name without a slot is in flight under __unknown__ until admitted, and a
    model_not_found for it stays __unknown__; tests/unit/test_bad_inputs.py pins that)."""
    cap.recorder.models("m")


def test_with_block_records_success_and_tokens(cap: Capture) -> None:
    """A block that completes is one success, with the tokens set inside it and its latency."""
    rec = cap.recorder
    with rec.request(model="m", endpoint="chat_completion", mode="standard", batch_size=1) as req:
        assert rec.active() == {("m", "standard", "chat_completion"): 1}
        req.prompt_tokens, req.completion_tokens = 12, 3
    assert rec.active() == {("m", "standard", "chat_completion"): 0}
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value(TOK, model="m", token_type="prompt", generation_mode="standard") == 12
    assert cap.value(TOK, model="m", token_type="completion", generation_mode="standard") == 3
    lat = cap.histogram(LAT, model="m", batch_size="1", generation_mode="standard")
    assert lat is not None and lat.count == 1


def test_with_block_records_failure_and_reraises_the_same_exception(cap: Capture) -> None:
    """An exception is classified (model_not_found, severity info) and reaches the caller as the same object."""
    boom = ModelNotFoundError("model 'x' not found")
    with pytest.raises(ModelNotFoundError) as got, cap.recorder.request("m", "completion", "standard"):
        raise boom
    assert got.value is boom
    cap.collect()
    assert cap.series(REQ) == [
        {"model": "m", "endpoint": "completion", "status": "error", "error_type": "model_not_found"}
    ]
    assert cap.value(ERR, model="m", error_type="model_not_found", severity="info") == 1


async def test_async_with_cancellation_is_partial_not_an_error(cap: Capture) -> None:
    """A cancelled task ends its request as partial (the client went away) and the cancellation propagates."""
    started = asyncio.Event()

    async def serve() -> None:
        async with cap.recorder.request("m", "chat_completion", "streaming") as req:
            req.first_token = req.start
            req.delivered = True
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(serve())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cap.collect()
    assert cap.series(REQ) == [{"model": "m", "endpoint": "chat_completion", "status": "partial"}]
    assert cap.points(ERR) == []
    assert cap.recorder.active() == {("m", "streaming", "chat_completion"): 0}


def test_generator_closed_inside_the_block_is_abandoned(cap: Capture) -> None:
    """A generator that serves inside ``with`` and is closed early (GeneratorExit) ends its request as partial."""

    def tokens() -> Iterator[str]:
        with cap.recorder.request("m", "chat_completion", "streaming") as req:
            req.delivered = True
            yield "a"
            yield "b"

    gen = tokens()
    assert next(gen) == "a"
    gen.close()
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1


def test_request_ends_exactly_once(cap: Capture) -> None:
    """An explicit success() inside the block wins; the exception after it still propagates, uncounted."""
    with pytest.raises(KeyError), cap.recorder.request("m", "chat_completion", "standard") as req:
        req.success()
        raise KeyError("after the end")
    req.fail(RuntimeError("late"))
    req.abandon()
    cap.collect()
    assert cap.series(REQ) == [{"model": "m", "endpoint": "chat_completion", "status": "success"}]
    assert cap.recorder.active() == {("m", "standard", "chat_completion"): 0}


def test_manual_ends_without_and_with_the_recorder_argument(cap: Capture) -> None:
    """req.success()/fail(exc)/abandon() need no recorder; the older success(rec)/fail(rec, exc)/abandon(rec) work."""
    rec = cap.recorder
    rec.start("new", "chat_completion", "standard").success()
    rec.start("new", "chat_completion", "standard").fail(TimeoutError())
    rec.start("new", "chat_completion", "standard").abandon()
    rec.start("old", "chat_completion", "standard").success(rec)
    rec.start("old", "chat_completion", "standard").fail(rec, TimeoutError())
    rec.start("old", "chat_completion", "standard").abandon(rec)
    cap.collect()
    for model in ("new", "old"):
        assert cap.value(REQ, model=model, endpoint="chat_completion", status="success") == 1
        assert cap.value(REQ, model=model, endpoint="chat_completion", status="timeout", error_type="timeout") == 1
        assert cap.value(REQ, model=model, endpoint="chat_completion", status="partial") == 1


def test_failure_after_delivery_is_partial(cap: Capture) -> None:
    """A stream that delivered content and then raised counts as partial, with its error type in the errors."""
    with pytest.raises(MemoryError), cap.recorder.request("m", "chat_completion", "streaming") as req:
        req.delivered = True
        raise MemoryError()
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    assert cap.value(ERR, model="m", error_type="oom", severity="critical") == 1


def test_telemetry_failure_at_exit_never_replaces_the_outcome(cap: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """If recording fails, the block's own result or exception is what the caller sees."""

    def broken(req: object) -> None:
        raise RuntimeError("telemetry broke")

    monkeypatch.setattr(cap.recorder, "submit", broken)
    with cap.recorder.request("m", "chat_completion", "standard"):
        pass
    with pytest.raises(ValueError, match="mine"), cap.recorder.request("m", "chat_completion", "standard"):
        raise ValueError("mine")


def test_a_new_name_takes_a_slot_only_once_accepted(cap: Capture) -> None:
    """Recorder API: a name without a slot is in flight under __unknown__; ``req.admit()`` moves it to its own
    label; a model_not_found for an unslotted name is recorded under __unknown__ and takes no slot."""
    rec = cap.recorder
    with rec.request("new", "chat_completion", "streaming") as req:
        assert {k: v for k, v in rec.active().items() if v} == {("__unknown__", "streaming", "chat_completion"): 1}
        req.admit()  # the engine accepted the model: generation started
        assert {k: v for k, v in rec.active().items() if v} == {("new", "streaming", "chat_completion"): 1}
    with pytest.raises(ModelNotFoundError), rec.request("bogus", "chat_completion", "standard"):
        raise ModelNotFoundError("model 'bogus' not found")
    cap.collect()
    assert cap.value(REQ, model="new", endpoint="chat_completion", status="success") == 1
    nf = {"endpoint": "chat_completion", "status": "error", "error_type": "model_not_found"}
    assert cap.value(REQ, model="__unknown__", **nf) == 1
    assert sorted(rec.models._map) == ["m", "new"]


# --- the drain: collections record exactly their snapshot, in paced slices; the background drainer --------------


def _finish(rec: Recorder, n: int, model: str = "m") -> None:
    for _ in range(n):
        rec.start(model, "chat_completion", "standard").success(rec)


def _drain_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ryot-telemetry-drain"]


class FakeClock:
    """The recorder's clock, advancing 1 ms per reading and by exactly what a pause sleeps: pacing is deterministic
    (each slice "takes" 1 ms, so the next may start 2 ms later, after exactly one pause)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.step = 0.001
        self.pauses: list[float] = []

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(_recorder, "_clock", fake)
    monkeypatch.setattr(_request, "_clock", fake)
    return fake


def test_collection_records_exactly_what_was_queued_when_it_began(clock: FakeClock) -> None:
    """Between slices a saturated loop keeps submitting (100 per pause): the collection still ends, with exactly the
    1,000 requests queued before it; the later ones wait for the next collection."""
    cap = capture()
    try:
        rec = cap.recorder
        _finish(rec, 1000)

        def busy_loop(seconds: float) -> None:
            clock.sleep(seconds)
            clock.step = 0.0  # the loop's own requests take no time on the recorder's clock
            _finish(rec, 100)
            clock.step = 0.001

        rec._sleep = busy_loop
        cap.collect()
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1000
        assert len(clock.pauses) == -(-1000 // SLICE) - 1  # one pause between consecutive slices
        assert all(p > 0 for p in clock.pauses)
        assert len(rec._pending) == 100 * len(clock.pauses)
        rec._sleep = clock.sleep
        cap.collect()
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1000 + 100 * 31
    finally:
        cap.shutdown()


def test_collection_past_its_yield_budget_records_the_rest_without_pauses() -> None:
    """With no time left in the callback's timeout the snapshot is recorded in one stretch: the scrape is bounded."""

    cap = capture()
    try:
        rec = cap.recorder
        _finish(rec, 10 * SLICE)

        def no_pause(seconds: float) -> None:
            raise AssertionError("paused past the budget")

        rec._sleep = no_pause
        assert rec._drain_snapshot(timeout=0) == 10 * SLICE
        assert not rec._pending
    finally:
        cap.shutdown()


async def test_collection_on_an_event_loop_thread_never_sleeps(cap: Capture) -> None:
    """A /metrics route served by the app's own loop: pausing would stall that very loop, so it records at once."""
    rec = cap.recorder
    _finish(rec, 5 * SLICE)

    def no_pause(seconds: float) -> None:
        raise AssertionError("slept on the event loop")

    rec._sleep = no_pause
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 5 * SLICE


def test_drain_is_recorded_in_slices_with_a_pause_between_each(clock: FakeClock) -> None:
    """Each slice "takes" 1 ms, so the next starts after a pause of YIELD_RATIO x 1 ms."""
    cap = capture()
    try:
        rec = cap.recorder
        _finish(rec, 10 * SLICE + 5)
        rec._sleep = clock.sleep
        assert rec._drain_sliced(None) == 10 * SLICE + 5
        assert clock.pauses == pytest.approx([0.001 * YIELD_RATIO - 0.001] * 10)  # minus the clock read before it
        assert not rec._pending
        # Counters are handed over at the next collection, not per slice: the total is exact.
        cap.collect()
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 10 * SLICE + 5
    finally:
        cap.shutdown()


def test_background_drainer_records_the_queue_and_stops() -> None:
    cap = capture()
    rec = cap.recorder
    try:
        rec.start_drainer(interval=0.05)
        rec.start_drainer(interval=0.05)  # idempotent
        assert len(_drain_threads()) == 1 and rec.drainer_running
        _finish(rec, WAKE_AT + 1)  # past WAKE_AT: wakes it early
        _finish(rec, 7, model="late")  # below it: the interval picks them up
        until(lambda: not rec._pending and rec._popped >= WAKE_AT + 8, 10, interval=0.01)
        assert not rec._pending and rec._popped == WAKE_AT + 8
        cap.collect()
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == WAKE_AT + 1
        assert cap.value(REQ, model="late", endpoint="chat_completion", status="success") == 7
    finally:
        rec.stop_drainer()
        cap.shutdown()
    assert not rec.drainer_running and _drain_threads() == []
    rec.stop_drainer()  # idempotent


def test_configure_runs_a_drainer_without_attribute_filters_and_shutdown_stops_it() -> None:
    tel = ryot_telemetry.configure(
        exporters="prometheus", prometheus_registry="private", start_prometheus_server=False, gpu=False
    )
    try:
        assert tel.recorder.drainer_running and len(_drain_threads()) == 1
        # every attribute dict is built from the catalogue: the SDK need not filter them again per record
        assert all(v._attribute_keys is None for v in tel.meter_provider._sdk_config.views)
    finally:
        tel.shutdown()
    assert _drain_threads() == []
    assert all(v._attribute_keys is not None for v in ryot_telemetry.views())  # user-built providers keep them


def _requests_total(text: str) -> float:
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "ryot_inference_requests"
        for s in fam.samples
        if s.name == "ryot_inference_requests_total"
    )


def test_scrape_under_a_saturated_event_loop_finishes_in_bounded_time() -> None:
    """A loop serving instant requests back to back (it never waits) while Prometheus scrapes over HTTP; the
    background drainer is stopped, so the scrape alone records the backlog.

    The bound: the scrape records at most its snapshot, at most max_pending (10,000) + 1 requests, about 25 µs each
    here (0.25 s), up to 75 µs on a loaded CI machine (0.75 s). Its pauses between slices stop once a quarter of the
    callback's 10 s timeout is spent (YIELD_BUDGET), so the scrape takes at most about 2.5 s + 0.75 s; 5 s (half of
    Prometheus' default scrape_timeout) leaves room for the rest of the collection. The scrape holds every request
    finished before it was sent, and none finished after it returned.
    """
    tel = ryot_telemetry.configure(
        exporters="prometheus", prometheus_host="127.0.0.1", prometheus_port=0, prometheus_registry="private", gpu=False
    )
    rec = tel.recorder
    rec.max_pending = 10000
    rec.stop_drainer()
    stop = threading.Event()
    finished = [0]
    errors: list[BaseException] = []

    class Instant:
        async def openai_chat_completion(self, params: Any) -> Any:
            return {"choices": [], "usage": None}

    router = tel.instrument_router(Instant())

    async def serve() -> None:
        end = time.monotonic() + 30  # bounded even if the scrape hangs
        while not stop.is_set() and time.monotonic() < end:
            await router.openai_chat_completion({"model": "m", "messages": []})
            finished[0] += 1

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            errors.append(exc)

    loop_thread = threading.Thread(target=run)
    loop_thread.start()
    try:
        until(lambda: finished[0] >= 15000 or not loop_thread.is_alive(), 60, "15,000 requests served", interval=0.01)
        before = finished[0]
        with urllib.request.urlopen(tel.prometheus_url, timeout=60) as resp:
            text = resp.read().decode()
        after = finished[0]
        assert loop_thread.is_alive(), "the loop stopped before the scrape ended"
    finally:
        stop.set()
        loop_thread.join(60)
        tel.shutdown()
    assert errors == []
    assert before <= _requests_total(text) <= after


def test_forked_child_gets_its_own_drainer_and_a_free_lock() -> None:
    """gunicorn --preload forks after configure(): the parent's drainer may hold the drain lock mid-slice."""
    import os
    import warnings

    cap = capture()
    rec = cap.recorder
    try:
        rec.start_drainer(interval=60)
        _finish(rec, 3)
        rec._drain_lock.acquire()  # as if the drainer were mid-slice at the fork
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12: fork() of a multi-threaded process
            pid = os.fork()
        if pid == 0:  # the child: exit code 0 only if all is well, and never back into pytest
            code = 1
            try:
                code = 0 if rec.drainer_running and rec.drain() == 3 else 2
            finally:
                os._exit(code)
        rec._drain_lock.release()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert rec.drain() == 3  # the parent's queue is its own
    finally:
        rec.stop_drainer()
        cap.shutdown()


# --- outcomes, token detail and engine timings (SPEC "Outcomes, token detail and where the time goes") -------------

FIN = "ryot.finish_reasons"
EST = "ryot.estimated_tokens"


def test_finish_reasons_cached_and_reasoning_tokens_are_recorded_apart_from_the_token_totals(cap: Capture) -> None:
    """A response-shaped ``final`` with two choices (stop, length) and 7 reasoning of 20 completion tokens, 30 cached
    of 100 prompt tokens: one finish count each; cached and reasoning counters get 30 and 7 while the token totals
    stay 100 and 20."""
    with cap.recorder.request("m", "chat_completion", "standard", batch_size=2) as req:
        req.prompt_tokens, req.completion_tokens, req.cached_tokens = 100, 20, 30
        req.final = {
            "choices": [{"finish_reason": "stop"}, {"finish_reason": "length"}],
            "usage": {"completion_tokens_details": {"reasoning_tokens": 7}},
        }
    cap.collect()
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="stop") == 1
    assert cap.value(FIN, model="m", endpoint="chat_completion", finish_reason="length") == 1
    assert len(cap.series(FIN)) == 2
    assert cap.value("ryot.cached_prompt_tokens", model="m", generation_mode="standard") == 30
    assert cap.value("ryot.reasoning_tokens", model="m", generation_mode="standard") == 7
    assert cap.value(TOK, model="m", token_type="prompt", generation_mode="standard") == 100
    assert cap.value(TOK, model="m", token_type="completion", generation_mode="standard") == 20
    assert cap.series(EST) == []  # usage arrived: nothing estimated


def test_abandoned_request_counts_abort_per_choice_and_a_failed_one_counts_none(cap: Capture) -> None:
    """abandon() of a 3-choice request: abort 3; fail(): no finish reason at all; a finish reason outside the
    vocabulary counts as other."""
    cap.recorder.start("m", "completion", "streaming", batch_size=3).abandon()
    cap.recorder.start("m", "completion", "streaming").fail(RuntimeError("boom"))
    req = cap.recorder.start("m", "completion", "standard")
    req.final = {"choices": [{"finish_reason": "made-up"}]}
    req.success()
    cap.collect()
    assert cap.value(FIN, model="m", endpoint="completion", finish_reason="abort") == 3
    assert cap.value(FIN, model="m", endpoint="completion", finish_reason="other") == 1
    assert len(cap.series(FIN)) == 2


def test_stream_without_usage_is_estimated_from_its_chunks_and_prompt_text_and_never_priced() -> None:
    """A stream that delivered 5 content chunks for a 400-character prompt and no usage: estimated completion 5
    and prompt 100 (400 / 4); no usage tokens and no cost, even with a price table."""
    cap = capture(prices={"m": {"prompt": 1.0, "completion": 2.0}})
    try:
        cap.recorder.models("m")
        req = cap.recorder.start("m", "chat_completion", "streaming")
        req.first_token, req.prompt_chars = req.start + 0.01, 400
        req.final = StreamEnd(None, None, 5)
        req.abandon()
        cap.collect()
        assert cap.value(EST, model="m", token_type="completion") == 5
        assert cap.value(EST, model="m", token_type="prompt") == 100
        assert cap.series(TOK) == []
        assert cap.series("ryot.token.cost_estimate.usd") == []
    finally:
        cap.shutdown()


def test_engine_timings_split_ttft_into_prefill_and_outside_the_engine(cap: Capture) -> None:
    """TTFT 0.3 s with vLLM's queue 50 ms, prefill 100 ms, 20 ms per token: prefill 0.1 and engine TPOT 0.02
    recorded, 0.15 s outside the engine. A prefill longer than the TTFT is clamped to 0 outside."""
    for queue, prefill in ((50.0, 100.0), (0.0, 500.0)):
        with cap.recorder.request("m", "chat_completion", "streaming") as req:
            req.first_token = req.start + 0.3
            req.final = {"metrics": {"queue_time_ms": queue, "time_to_first_token_ms": prefill, "mean_itl_ms": 20.0}}
    cap.collect()
    pre = cap.histogram("ryot.engine.prefill", model="m")
    assert (pre.count, pre.sum) == (2, pytest.approx(0.6))
    assert pre.bucket_counts == (0, 0, 0, 0, 1, 0, 1, 0, 0, 0)
    tpot = cap.histogram("ryot.engine.time_per_output_token", model="m")
    assert (tpot.count, tpot.sum) == (2, pytest.approx(0.04))
    out = cap.histogram("ryot.ttft.outside_engine", model="m")
    assert (out.count, out.sum) == (2, pytest.approx(0.15))
    assert out.bucket_counts == (1, 0, 0, 0, 0, 1, 0, 0, 0, 0)  # 0.0 (clamped) and 0.15


def test_engine_timings_without_a_first_token_record_no_outside_time(cap: Capture) -> None:
    """A non-streaming response with llama.cpp timings of a one-token answer: prefill recorded, no engine TPOT
    (llama.cpp reports it from two tokens on), no outside time."""
    with cap.recorder.request("m", "chat_completion", "standard") as req:
        req.final = {"timings": {"prompt_ms": 4.0, "predicted_n": 1, "predicted_per_token_ms": 0.0}}
    cap.collect()
    assert cap.histogram("ryot.engine.prefill", model="m").bucket_counts == (1, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert cap.histogram("ryot.engine.time_per_output_token", model="m") is None
    assert cap.histogram("ryot.ttft.outside_engine", model="m") is None


def test_an_outcome_that_cannot_be_read_loses_only_the_outcome(cap: Capture) -> None:
    """A ``final`` whose choices raise when read: the request, its tokens and latency are recorded; no finish."""

    class Hostile:
        @property
        def choices(self) -> list[Any]:
            raise RuntimeError("provider bug")

    with cap.recorder.request("m", "chat_completion", "standard") as req:
        req.prompt_tokens = 3
        req.final = Hostile()
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value(TOK, model="m", token_type="prompt", generation_mode="standard") == 3
    assert cap.series(FIN) == []


DROPPED = "ryot.telemetry.queue.dropped_requests"
AGE = "ryot.telemetry.queue.oldest_age"


def test_dropped_requests_counter_exists_at_zero_and_counts_what_a_full_queue_drops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dropped counter is exported at 0 from the start; with a queue of 2 whose inline drain fails, 5 requests
    leave 2 queued (counted by the next collection) and 3 dropped, and the calls themselves are untouched."""
    cap = capture(max_pending=2)
    try:
        rec = cap.recorder
        rec.stop_drainer()
        cap.collect()
        assert cap.series(DROPPED) == [{}]
        assert cap.value(DROPPED) == 0

        def broken(limit: int | None = None) -> int:
            raise RuntimeError("drain")

        monkeypatch.setattr(rec, "drain", broken)
        for _ in range(5):
            with rec.request("m", "chat_completion", "standard"):
                pass
        assert len(rec._pending) == 2
        cap.collect()
        assert cap.value(DROPPED) == 3
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 2
    finally:
        cap.shutdown()


def test_oldest_queued_request_age_is_recorded_at_each_drain_that_finds_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request finished at t=10 and drained at t=12.5 is 2.5 s old: one observation; a drain of an empty queue
    records none."""
    t = [10.0]
    monkeypatch.setattr(_recorder, "_clock", lambda: t[0])
    monkeypatch.setattr(_request, "_clock", lambda: t[0])
    cap = capture()
    try:
        cap.recorder.stop_drainer()
        cap.recorder.models("m")
        with cap.recorder.request("m", "chat_completion", "standard"):
            pass
        t[0] = 12.5
        cap.collect()
        age = cap.histogram(AGE)
        assert age is not None
        assert (age.count, age.sum, age.attributes) == (1, 2.5, {})
        assert age.explicit_bounds == (0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0)
        assert age.bucket_counts == (0, 0, 0, 0, 0, 1, 0, 0, 0, 0)
        cap.recorder.drain()
        cap.collect()
        assert cap.histogram(AGE).count == 1  # type: ignore[union-attr]
    finally:
        cap.shutdown()

"""Thousands of concurrent mixed requests: exact counts per status, in-flight back to 0, callers untouched."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest

from ryot_telemetry.recording.recorder import INLINE_BATCH
from ryot_telemetry.testing import Capture, capture

REQ = "ryot.inference.requests"
MODELS = ("m0", "m1", "m2")
KINDS = (
    "ok",
    "error",
    "timeout",
    "stream",
    "stream_break",
    "stream_fail",
    "cancel",
    "stream_cancel",
    "stream_unread_close",
    "stream_unread_drop",
)
# what each kind records as status
STATUS = {
    "ok": "success",
    "error": "error",
    "timeout": "timeout",
    "stream": "success",
    "stream_break": "partial",
    "stream_fail": "partial",
    "cancel": "partial",
    "stream_cancel": "partial",
    "stream_unread_close": "partial",
    "stream_unread_drop": "partial",
}


class MixedRouter:
    """Behaves as each request's ``kind`` says, yielding to the loop at every step so requests interleave."""

    def __init__(self) -> None:
        self.errors: dict[int, BaseException] = {}
        self.responses: dict[int, object] = {}
        self.chunks: dict[int, list[dict[str, Any]]] = {}
        self.started: dict[int, asyncio.Event] = {}

    async def openai_chat_completion(self, params: dict[str, Any]) -> Any:
        return await self._call(params)

    async def openai_completion(self, params: dict[str, Any]) -> Any:
        return await self._call(params)

    async def _call(self, params: dict[str, Any]) -> Any:
        i, kind = params["i"], params["kind"]
        await asyncio.sleep(0)
        if kind == "cancel":
            self.started[i].set()
            await asyncio.sleep(3600)
        if kind == "error":
            raise self.errors[i]
        if kind == "timeout":
            raise self.errors[i]
        if params.get("stream"):
            return self._stream(i, kind)
        return self.responses[i]

    async def _stream(self, i: int, kind: str) -> Any:
        for n, c in enumerate(self.chunks[i]):
            await asyncio.sleep(0)
            if kind == "stream_fail" and n == 2:
                raise self.errors[i]
            if kind == "stream_cancel" and n == 2:
                self.started[i].set()
                await asyncio.sleep(3600)
            yield c


def _prepare(router: MixedRouter, i: int) -> tuple[str, str, dict[str, Any]]:
    kind = KINDS[i % len(KINDS)]
    model = MODELS[i % len(MODELS)]
    endpoint = "chat_completion" if (i // len(KINDS)) % 2 == 0 else "completion"
    stream = kind.startswith("stream")
    params: dict[str, Any] = {"i": i, "kind": kind, "model": model, "stream": stream}
    if endpoint == "completion":
        params["prompt"] = "hello"
    else:
        params["messages"] = [{"role": "user", "content": "hello"}]
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    router.responses[i] = {"id": f"r{i}", "choices": [{"text": "x"}], "usage": usage}
    router.chunks[i] = [{"choices": [{"text": f"t{n}", "delta": {"content": f"t{n}"}}]} for n in range(4)]
    router.chunks[i].append({"choices": [], "usage": usage})
    if kind == "error":
        router.errors[i] = RuntimeError(f"engine error {i}")
    elif kind == "timeout":
        router.errors[i] = TimeoutError(f"slow {i}")
    elif kind == "stream_fail":
        router.errors[i] = RuntimeError(f"crashed {i}")
    if kind in ("cancel", "stream_cancel"):
        router.started[i] = asyncio.Event()
    return kind, endpoint, params


async def _one(router: Any, inner: MixedRouter, i: int) -> tuple[str, str, str]:
    """Run request ``i`` as its kind says; assert the caller saw exactly what the provider produced."""
    kind, endpoint, params = _prepare(inner, i)
    call = router.openai_chat_completion if endpoint == "chat_completion" else router.openai_completion
    model = params["model"]
    if kind == "ok":
        assert await call(params) is inner.responses[i]
    elif kind in ("error", "timeout"):
        try:
            await call(params)
        except BaseException as exc:
            assert exc is inner.errors[i]
        else:
            raise AssertionError("no exception")
    elif kind == "stream":
        got = [c async for c in await call(params)]
        assert len(got) == 4 and all(a is b for a, b in zip(got, inner.chunks[i]))
    elif kind == "stream_break":
        stream = await call(params)
        async for c in stream:
            assert c is inner.chunks[i][0]
            break
        await stream.aclose()
    elif kind == "stream_fail":
        got = []
        try:
            async for c in await call(params):
                got.append(c)
        except RuntimeError as exc:
            assert exc is inner.errors[i]
        assert got == inner.chunks[i][:2]
    elif kind == "stream_unread_close":
        stream = await call(params)
        await stream.aclose()
    elif kind == "stream_unread_drop":
        stream = await call(params)
        del stream  # the loop's async-generator finaliser closes it on a later turn
        for _ in range(3):
            await asyncio.sleep(0)
    elif kind == "cancel":
        task = asyncio.ensure_future(call(params))
        await inner.started[i].wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("not cancelled")
    elif kind == "stream_cancel":

        async def consume() -> None:
            async for _ in await call(params):
                pass

        task = asyncio.ensure_future(consume())
        await inner.started[i].wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("not cancelled")
    return model, endpoint, STATUS[kind]


def _assert_totals(cap: Capture, made: Counter) -> None:
    cap.collect()
    got: Counter = Counter()
    for p in cap.points(REQ):
        a = p.attributes
        got[(a["model"], a["endpoint"], a["status"])] += p.value
    assert got == made
    active = cap.points("ryot.active_inference_requests")
    assert active and all(p.value == 0 for p in active)
    assert set(cap.recorder.active().values()) == {0}


async def test_10000_concurrent_mixed_requests_on_one_loop() -> None:
    """10,000 interleaved requests of 10 kinds: requests_total per status is exact and in-flight ends at 0."""
    cap = capture()
    try:
        inner = MixedRouter()
        router = cap.instrument_router(inner)
        outcomes = await asyncio.gather(*(_one(router, inner, i) for i in range(10_000)))
        made = Counter(outcomes)
        assert sum(made.values()) == 10_000
        assert Counter(s for _, _, s in outcomes) == {"success": 2000, "error": 1000, "timeout": 1000, "partial": 6000}
        _assert_totals(cap, made)
        errors = {tuple(sorted(p.attributes.items())): p.value for p in cap.points("ryot.inference.errors")}
        assert sum(errors.values()) == 3000  # error, timeout, stream_fail; cancels and closes are not errors
    finally:
        cap.shutdown()


def test_threads_with_own_loops_and_concurrent_collection_do_not_drift() -> None:
    """4 threads x 1,000 requests, each on its own loop, a 5th thread collecting throughout: exact totals."""
    cap = capture(max_pending=64)  # small queue: appending threads also drain inline, concurrently
    inner_routers: list[MixedRouter] = []
    results: list[list[tuple[str, str, str]]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def worker(offset: int) -> None:
        inner = MixedRouter()
        inner_routers.append(inner)
        router = cap.instrument_router(inner)

        async def run() -> list[tuple[str, str, str]]:
            return list(await asyncio.gather(*(_one(router, inner, offset + i) for i in range(1000))))

        try:
            results.append(asyncio.run(run()))
        except BaseException as exc:
            failures.append(exc)

    def collector() -> None:
        while not stop.is_set():
            try:
                cap.reader.get_metrics_data()
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
    col = threading.Thread(target=collector)
    try:
        col.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stop.set()
        col.join(60)
        assert failures == []
        made = Counter(o for r in results for o in r)
        assert sum(made.values()) == 4000
        _assert_totals(cap, made)
    finally:
        stop.set()
        cap.shutdown()


async def test_stream_closed_or_dropped_before_iteration_leaves_nothing_in_flight(cap: Capture) -> None:
    """A stream the caller closes, or drops, before reading a chunk ends the request: partial, in-flight 0."""
    inner = MixedRouter()
    router = cap.instrument_router(inner)
    for i, kind in enumerate(("stream_unread_close", "stream_unread_drop")):
        params = {"i": i, "kind": "stream", "model": "m", "stream": True, "messages": []}
        inner.chunks[i] = [{"choices": [{"delta": {"content": "x"}}]}]
        stream = await router.openai_chat_completion(params)
        if kind == "stream_unread_close":
            await stream.aclose()
        del stream
        for _ in range(3):
            await asyncio.sleep(0)
        cap.collect()
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == i + 1
        assert (
            cap.value("ryot.active_inference_requests", model="m", request_type="streaming", endpoint="chat_completion")
            == 0
        )


async def test_queue_overflow_records_a_bounded_batch_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past max_pending a request records 128 queued requests, not the whole backlog; nothing is lost."""
    cap = capture(max_pending=1000)
    try:
        rec = cap.recorder
        drained: list[int] = []
        real_drain = rec.drain

        def spy(limit: int | None = None) -> int:
            n = real_drain(limit)
            drained.append(n)
            return n

        monkeypatch.setattr(rec, "drain", spy)
        inner = MixedRouter()
        inner.responses[0] = {"choices": [], "usage": None}
        router = cap.instrument_router(inner)
        for _ in range(5000):
            await router.openai_chat_completion({"i": 0, "kind": "ok", "model": "m", "messages": []})
            assert len(rec._pending) <= 1000
        assert INLINE_BATCH == 128
        assert drained == [128] * 32  # first at request 1,001, then every 128 requests
        assert len(rec._pending) == 5000 - 32 * 128
        cap.collect()
        assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 5000
    finally:
        cap.shutdown()


def test_in_flight_reads_exits_before_entries_so_it_never_reads_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that enters and leaves between the gauge's two counter reads cannot make it read -1."""
    from ryot_telemetry.recording import recorder as _recorder

    cap = capture()
    try:
        rec = cap.recorder
        rec.models("m")  # "m" has its label slot: its requests are in flight under "m"
        rec.start("m", "chat_completion", "standard").success(rec)  # the series exists, at 0
        active = rec._active[("m", "standard", "chat_completion")]
        real = _recorder._count_value
        raced = False

        def racing_read(counter: Any) -> int:
            nonlocal raced
            value = real(counter)
            if not raced and counter in (active.enter, active.exit):
                raced = True  # between the first and the second read, a whole request comes and goes
                rec.start("m", "chat_completion", "standard").success(rec)
            return value

        monkeypatch.setattr(_recorder, "_count_value", racing_read)
        assert rec.active() == {("m", "standard", "chat_completion"): 1}  # seen entering, not leaving: >= 0
        assert raced
    finally:
        cap.shutdown()

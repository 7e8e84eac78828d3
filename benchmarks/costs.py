"""What a user pays beyond the per-request line: streams whose provider suspends per chunk, the fixed cost of a
stream, and the drain at low request rates.

- ``suspending``: per-chunk overhead when the provider's generator awaits once per chunk (a real provider reads each
  chunk off a socket), so every chunk is also one event-loop turn, against the same provider unwrapped.
- ``stream``: one 50-chunk chat stream, the caller not asking for usage: the wrapper copies the params to ask for
  it, swallows the extra usage chunk and records the request (drain included), against the bare provider streaming
  the same 50 chunks. The fixed part is that overhead minus 50 times the per-chunk overhead measured alongside.
- ``lowrate``: the drain per request when a collection finds only 100 requests (about 7 requests/s at a 15 s scrape
  interval) against one that finds 10,000: counter increments and window sums are batched per collection, so small
  batches pay more per request.

Each round runs the variants in rotated order; the median of per-round ratios is reported.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator, Callable
from typing import Any

from ryot_telemetry.demo.simulate import Chunk, ChunkChoice, Delta, PromptDetails, Usage

from .common import (
    MODELS,
    NoopRouter,
    clock,
    make_params,
    make_response,
    telemetry,
    timed,
)

STREAM_CHUNKS = 50


class StreamRouter:
    """A provider streaming ``chunks``, plus a usage chunk when asked (``stream_options.include_usage``); it
    suspends once per chunk when ``suspend`` is set, as one reading a socket does."""

    def __init__(self, chunks: list[Any], suspend: bool) -> None:
        self.chunks = chunks
        self.suspend = suspend
        self.usage = Chunk("c1", "model-0", [], usage=Usage(120, STREAM_CHUNKS, 170, PromptDetails(cached_tokens=30)))

    async def openai_chat_completion(self, params: Any) -> Any:
        opts = params.stream_options
        return self._stream(bool(opts and opts.get("include_usage")))

    async def _stream(self, usage: bool) -> AsyncIterator[Any]:
        suspend = self.suspend
        for c in self.chunks:
            if suspend:
                await asyncio.sleep(0)
            yield c
        if usage:
            yield self.usage


def _chunks(n: int) -> list[Any]:
    return [Chunk("c1", "model-0", [ChunkChoice(0, delta=Delta(content="tok "))]) for _ in range(n)]


async def _consume(call: Callable[[Any], Any], params: Any) -> float:
    t0 = clock()
    stream = await call(params)
    async for _ in stream:
        pass
    return clock() - t0


def _rotated(names: list[str], i: int) -> list[str]:
    k = i % len(names)
    return names[k:] + names[:k]


async def bench_suspending(n_chunks: int, rounds: int) -> dict[str, float]:
    chunks = _chunks(n_chunks)
    tel = telemetry()
    calls = {
        "bare": StreamRouter(chunks, True).openai_chat_completion,
        "wrapper": tel.instrument_router(StreamRouter(chunks, True)).openai_chat_completion,
    }
    params = make_params(stream=True)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for call in calls.values():
        await _consume(call, params)
    for i in range(rounds):
        for name in _rotated(list(calls), i):
            times[name].append(await _consume(calls[name], params) / n_chunks * 1e9)
    tel.shutdown()
    b, w = times["bare"], times["wrapper"]
    return {
        "bare_ns": statistics.median(b),
        "overhead_ns": statistics.median([wi - bi for wi, bi in zip(w, b)]),
        "ratio": statistics.median([wi / bi for wi, bi in zip(w, b)]),
    }


async def bench_stream(streams: int, rounds: int) -> dict[str, float]:
    """Per 50-chunk stream: bare, wrapper (+ its drain); per chunk, from one long stream in the same rounds."""
    tel = telemetry()
    rec = tel.recorder
    short, long_ = _chunks(STREAM_CHUNKS), _chunks(20 * STREAM_CHUNKS)
    bare, wrapped = StreamRouter(short, False), tel.instrument_router(StreamRouter(short, False))
    bare_long, wrapped_long = StreamRouter(long_, False), tel.instrument_router(StreamRouter(long_, False))
    params = make_params(stream=True)
    params.stream_options = None  # the usual client: did not ask for usage, so the wrapper asks and hides it

    async def streams_of(call: Callable[[Any], Any], drain: bool) -> float:
        t = 0.0
        for _ in range(streams):
            t += await _consume(call, params)
        if drain:
            t0 = clock()
            assert rec.drain() == streams
            t += clock() - t0
        return t / streams * 1e9

    async def long_of(call: Callable[[Any], Any], drain: bool) -> float:
        t = await _consume(call, params)
        if drain:
            rec.drain()
        return t / len(long_) * 1e9

    variants = {
        "bare": lambda: streams_of(bare.openai_chat_completion, False),
        "wrapper": lambda: streams_of(wrapped.openai_chat_completion, True),
        "bare_long": lambda: long_of(bare_long.openai_chat_completion, False),
        "wrapper_long": lambda: long_of(wrapped_long.openai_chat_completion, True),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for run in variants.values():
        await run()
    for i in range(rounds):
        for name in _rotated(list(variants), i):
            times[name].append(await variants[name]())
    tel.shutdown()
    per_stream = [w - b for w, b in zip(times["wrapper"], times["bare"])]
    per_chunk = [w - b for w, b in zip(times["wrapper_long"], times["bare_long"])]
    return {
        "bare_us": statistics.median(times["bare"]) / 1e3,
        "per_stream_us": statistics.median(per_stream) / 1e3,
        "per_chunk_ns": statistics.median(per_chunk),
        "fixed_us": statistics.median([s - STREAM_CHUNKS * c for s, c in zip(per_stream, per_chunk)]) / 1e3,
    }


async def bench_lowrate(rounds: int, small: int = 100, large: int = 10000) -> dict[str, float]:
    """Drain per request with ``small`` requests per collection (repeated to ``large``) against ``large`` at once."""
    params = [make_params(m) for m in MODELS]
    tel = telemetry()
    rec = tel.recorder
    call = tel.instrument_router(NoopRouter(make_response())).openai_chat_completion
    await timed(2000, call, params)
    rec.drain()

    async def drain_cost(batch: int) -> float:
        spent = 0.0
        for _ in range(large // batch):
            await timed(batch, call, params)
            t0 = clock()
            rec.drain()
            spent += clock() - t0
        return spent / large * 1e9

    times: dict[int, list[float]] = {small: [], large: []}
    for i in range(rounds):
        for batch in _rotated([small, large], i):
            times[batch].append(await drain_cost(batch))
    tel.shutdown()
    return {
        "small": small,
        "large": large,
        "small_ns": statistics.median(times[small]),
        "large_ns": statistics.median(times[large]),
        "ratio": statistics.median([s / b for s, b in zip(times[small], times[large])]),
    }


def report(quick: bool, rows: list[tuple[str, str, str, str]]) -> None:
    """Section 6 of ``python -m benchmarks``."""
    n, rounds = (20000, 9) if quick else (50000, 31)
    s = asyncio.run(bench_suspending(n, rounds))
    print(
        f"\n6a. per chunk, provider suspending once per chunk, one {n}-chunk stream x {rounds} rounds: bare "
        f"{s['bare_ns']:.0f} ns/chunk, wrapper +{s['overhead_ns']:.0f} ns ({s['ratio']:.2f}x)"
    )
    streams, rounds = (200, 7) if quick else (1000, 21)
    t = asyncio.run(bench_stream(streams, rounds))
    print(
        f"6b. {STREAM_CHUNKS}-chunk streams, {streams} per round x {rounds} rounds: bare {t['bare_us']:.0f} us per "
        f"stream; wrapper +{t['per_stream_us']:.1f} us per stream (drain included), of which fixed "
        f"(params copy, usage chunk, record) {t['fixed_us']:.1f} us and {t['per_chunk_ns']:.0f} ns per chunk"
    )
    rounds = 5 if quick else 15
    lo = asyncio.run(bench_lowrate(rounds))
    print(
        f"6c. drain per request with {lo['small']} requests per collection {lo['small_ns']:.0f} ns, with "
        f"{lo['large']} {lo['large_ns']:.0f} ns ({rounds} rounds)"
    )
    rows += [
        (
            "per chunk, provider suspending per chunk: wrapper / bare",
            f"{s['ratio']:.2f}x",
            "",
            f"+{s['overhead_ns']:.0f} ns",
        ),
        (f"fixed cost per {STREAM_CHUNKS}-chunk stream (drain included)", f"{t['fixed_us']:.1f} us", "", ""),
        (
            f"drain per request, {lo['small']} / {lo['large']} per collection",
            f"{lo['ratio']:.2f}x",
            "",
            f"{lo['small_ns']:.0f} vs {lo['large_ns']:.0f} ns",
        ),
    ]

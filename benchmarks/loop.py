"""Does a scrape starve the serving event loop? Its iteration rate during a scrape against without one.

The serving loop runs on the main thread and counts its iterations (``await asyncio.sleep(0)``: each one polls the
selector, releasing the GIL as a real server's loop does). A scrape (``generate_latest`` on the Prometheus reader's
registry, on another thread, as the scrape server runs it) collects while ``queued`` requests wait to be recorded.
Variants: ``one-go`` records the whole backlog on the scrape thread in one stretch (the behaviour before sliced
drains), ``sliced`` is the shipped collection (paced slices). The background drainer is stopped in both, so the
scrape alone records the backlog. Rounds alternate which window is measured first; the median of per-round ratios
is reported.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import generate_latest

clock = time.perf_counter
VARIANTS = ("one-go", "sliced")


async def _spin(until: Callable[[], bool]) -> tuple[int, float, float]:
    """Loop iterations until ``until()``: (iterations, seconds, longest gap between two iterations)."""
    n = 0
    t0 = last = clock()
    gap = 0.0
    while not until():
        await asyncio.sleep(0)
        now = clock()
        gap = max(gap, now - last)
        last = now
        n += 1
    return n, clock() - t0, gap


async def _round(tel: Any, call: Callable[[Any], Any], params: list[Any], queued: int, scrape_first: bool) -> dict:
    rec = tel.recorder
    for i in range(queued):
        await call(params[i % len(params)])
    assert len(rec._pending) == queued, len(rec._pending)
    done = threading.Event()
    took: list[float] = []

    def scrape() -> None:
        t0 = clock()
        generate_latest(tel.registry)
        took.append(clock() - t0)
        done.set()

    async def with_scrape() -> tuple[int, float, float]:
        thread = threading.Thread(target=scrape)
        thread.start()
        out = await _spin(done.is_set)
        thread.join()
        return out

    async def without(seconds: float) -> tuple[int, float, float]:
        end = clock() + seconds
        return await _spin(lambda: clock() >= end)

    if scrape_first:
        busy = await with_scrape()
        idle = await without(busy[1])
    else:
        idle = await without(0.3)
        busy = await with_scrape()
    assert not rec._pending
    return {
        "ratio": (busy[0] / busy[1]) / (idle[0] / idle[1]),
        "scrape_ms": took[0] * 1e3,
        "max_gap_ms": busy[2] * 1e3,
        "idle_gap_ms": idle[2] * 1e3,
    }


async def bench_loop(queued: int, rounds: int) -> dict[str, dict[str, float]]:
    from .common import MODELS, NoopRouter, make_params, make_response, telemetry

    params = [make_params(m) for m in MODELS]
    out: dict[str, dict[str, float]] = {}
    tel = telemetry()
    rec = tel.recorder
    call = tel.instrument_router(NoopRouter(make_response())).openai_chat_completion
    sliced = rec._drain_snapshot  # the drain every collection starts with (paced slices of its snapshot)

    def one_go(timeout: float = 10.0) -> int:
        return rec.drain()

    per: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        await _round(tel, call, params, 2000, True)  # warm-up: every series exists
        for i in range(rounds):
            for k in range(len(VARIANTS)):
                variant = VARIANTS[(i + k) % len(VARIANTS)]
                rec._drain_snapshot = one_go if variant == "one-go" else sliced  # type: ignore[method-assign]
                per[variant].append(await _round(tel, call, params, queued, scrape_first=(i + k) % 2 == 0))
    finally:
        rec._drain_snapshot = sliced  # type: ignore[method-assign]
        tel.shutdown()
    for variant, results in per.items():
        out[variant] = {key: statistics.median(r[key] for r in results) for key in results[0]}
    return out


def report(quick: bool, rows: list[tuple[str, str, str, str]]) -> None:
    """Section 5 of ``python -m benchmarks``."""
    queued, rounds = (15000, 3) if quick else (15000, 9)
    r = asyncio.run(bench_loop(queued, rounds))
    print(
        f"\n5. serving event loop during a scrape with {queued} requests queued, {rounds} rounds (median): "
        "iteration rate during the scrape / without one"
    )
    for variant in VARIANTS:
        v = r[variant]
        print(
            f"   {variant}: ratio {v['ratio']:.2f}, scrape {v['scrape_ms']:.0f} ms, longest loop stall "
            f"{v['max_gap_ms']:.1f} ms (without a scrape {v['idle_gap_ms']:.2f} ms)"
        )
    rows.append(("loop rate during scrape, recorded in one go (before)", f"{r['one-go']['ratio']:.2f}", "", ""))
    s = r["sliced"]
    rows.append(
        (
            f"loop rate during scrape of {queued} queued / without",
            f"{s['ratio']:.2f}",
            ">= 0.5",
            f"{'met' if s['ratio'] >= 0.5 else 'MISSED'}; scrape {s['scrape_ms']:.0f} ms",
        )
    )

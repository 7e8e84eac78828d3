"""The recorder's context-manager API against the manual start/try/except path it replaces (same run, paired).

python -m benchmarks --only api
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from typing import Any

import ryot_telemetry

clock = time.perf_counter
MODELS = tuple(f"model-{i}" for i in range(10))


def _manual(rec: Any, n: int) -> float:
    t0 = clock()
    for i in range(n):
        req = rec.start(MODELS[i % 10], "chat_completion", "standard", 1)
        try:
            req.prompt_tokens = 12
        except asyncio.CancelledError:
            req.abandon(rec)
            raise
        except Exception as e:
            req.fail(rec, e)
            raise
        req.success(rec)
    return clock() - t0


def _with(rec: Any, n: int) -> float:
    t0 = clock()
    for i in range(n):
        with rec.request(MODELS[i % 10], "chat_completion", "standard", 1) as req:
            req.prompt_tokens = 12
    return clock() - t0


async def _async_with(rec: Any, n: int) -> float:
    t0 = clock()
    for i in range(n):
        async with rec.request(MODELS[i % 10], "chat_completion", "standard", 1) as req:
            req.prompt_tokens = 12
    return clock() - t0


async def _async_manual(rec: Any, n: int) -> float:
    # The same manual path inside a coroutine, the baseline for ``async with``.
    return _manual(rec, n)


def bench_request_api(n: int, rounds: int) -> dict[str, float]:
    """Median ns per request of each variant (request path only; the queue is drained between variants)."""
    tel = ryot_telemetry.configure(
        exporters="prometheus", prometheus_registry="private", start_prometheus_server=False, gpu=False
    )
    rec = tel.recorder
    rec.stop_drainer()  # the timed loops measure the request path alone, not the drain running beside them
    loop = asyncio.new_event_loop()
    variants = {
        "manual": lambda: _manual(rec, n),
        "with": lambda: _with(rec, n),
        "async_manual": lambda: loop.run_until_complete(_async_manual(rec, n)),
        "async_with": lambda: loop.run_until_complete(_async_with(rec, n)),
    }
    for run in variants.values():  # warm-up: every series exists before the rounds
        run()
        rec.drain()
    times: dict[str, list[float]] = {k: [] for k in variants}
    gc.collect()
    for _ in range(rounds):
        for name, run in variants.items():
            times[name].append(run() / n * 1e9)
            rec.drain()
    loop.close()
    tel.shutdown()
    out = {f"{k}_ns": statistics.median(v) for k, v in times.items()}
    out["with_ratio"] = statistics.median(w / m for w, m in zip(times["with"], times["manual"]))
    out["async_with_ratio"] = statistics.median(w / m for w, m in zip(times["async_with"], times["async_manual"]))
    out["with_extra_ns"] = statistics.median(w - m for w, m in zip(times["with"], times["manual"]))
    out["async_with_extra_ns"] = statistics.median(w - m for w, m in zip(times["async_with"], times["async_manual"]))
    return out

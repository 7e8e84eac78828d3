"""Cost of the opt-in tenant label per request: the same request path and drain with a tenant resolver and without.

Three ``configure()`` set-ups run the same non-streaming workload as section 1 (10 models, 10 tenants in
``metadata.tenant``): no tenant label, ``tenant="metadata.tenant"`` (a dotted path) and a callable reading the same
field. The resolver runs once per request, on the request path; the label is made at the drain (a dict hit for a
known tenant), which records the same counters with one more key in their attribute sets. Rounds are interleaved
(variants in rotated order) and overheads are paired per round against the bare call, then the median is reported.

Times are the thread's CPU time (``time.thread_time``), not wall time: the cost asked about is CPU per request, and
on a shared machine wall time also counts the moments other processes hold the core, which swamps a 5% difference.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ryot_telemetry

from .common import MODELS, ChatParams, NoopRouter, make_response, median, ns

cpu = time.thread_time

TENANTS = tuple(f"tenant-{i}" for i in range(10))


class TenantParams(ChatParams):
    """Section 1's request model with OpenAI's ``metadata`` field (ogx passes it through as an extra field)."""

    metadata: dict[str, str] | None = None


def _telemetry(tenant: Any) -> ryot_telemetry.Telemetry:
    log = logging.getLogger("ryot_telemetry")
    level = log.level
    log.setLevel(logging.ERROR)  # several Telemetry objects alive at once is intended here: private registries
    try:
        tel = ryot_telemetry.configure(
            exporters="prometheus",
            prometheus_registry="private",
            start_prometheus_server=False,
            gpu=False,
            tenant=tenant,
        )
    finally:
        log.setLevel(level)
    tel.recorder.stop_drainer()  # the request path and the drain are timed separately, as in section 1
    return tel


async def timed(n: int, call: Callable[[Any], Awaitable[Any]], params: list[Any]) -> float:
    """CPU seconds of ``n`` calls over ``params`` (``common.timed``, on the thread's CPU clock)."""
    k = len(params)
    t0 = cpu()
    for i in range(n):
        await call(params[i % k])
    return cpu() - t0


def _by_callable(params: Any) -> object:
    metadata = params.metadata
    return metadata.get("tenant") if metadata else None


async def bench_tenants(n: int, rounds: int) -> dict[str, float]:
    """ns per request: request path (over the bare call) and drain, for each tenant set-up."""
    params = [
        TenantParams(
            model=MODELS[i % 10], messages=[{"role": "user", "content": "hi"}], metadata={"tenant": TENANTS[i // 10]}
        )
        for i in range(100)
    ]
    bare = NoopRouter(make_response()).openai_chat_completion
    setups = {"off": None, "path": "metadata.tenant", "callable": _by_callable}
    tels = {name: _telemetry(source) for name, source in setups.items()}
    calls = {
        name: tel.instrument_router(NoopRouter(make_response())).openai_chat_completion for name, tel in tels.items()
    }
    await timed(2000, bare, params)
    for name, tel in tels.items():  # warm-up: every series and every tenant slot exists
        await timed(2000, calls[name], params)
        tel.recorder.drain()
    assert sorted(tels["path"].recorder.tenants.labels()) == sorted(TENANTS)  # type: ignore[union-attr]
    times: dict[str, list[float]] = {}
    names = ["bare", *setups]
    gc.collect()
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            if name == "bare":
                times.setdefault("bare", []).append(ns(await timed(n, bare, params), n))
                continue
            t = await timed(n, calls[name], params)
            t0 = cpu()
            assert tels[name].recorder.drain() == n
            d = cpu() - t0
            times.setdefault(f"{name}_path", []).append(ns(t, n))
            times.setdefault(f"{name}_drain", []).append(ns(d, n))
    for tel in tels.values():
        tel.shutdown()
    out = {k: median(v) for k, v in times.items()}
    b = times["bare"]
    off_path = [p - bi for p, bi in zip(times["off_path"], b)]
    off_total = [p + d for p, d in zip(off_path, times["off_drain"])]
    for name in ("path", "callable"):
        path = [p - bi for p, bi in zip(times[f"{name}_path"], b)]
        total = [p + d for p, d in zip(path, times[f"{name}_drain"])]
        out[f"{name}_path_ratio"] = median([a / o for a, o in zip(path, off_path)])
        out[f"{name}_total_ratio"] = median([a / o for a, o in zip(total, off_total)])
        out[f"{name}_path_extra"] = median([a - o for a, o in zip(path, off_path)])
    out["off_path_overhead"] = median(off_path)
    return out


def run(quick: bool) -> list[tuple[str, str, str, str]]:
    """Print section 7 and return its summary rows."""
    n, rounds = (3000, 5) if quick else (20000, 15)
    r = asyncio.run(bench_tenants(n, rounds))
    print(
        f"\n7. tenant label, non-streaming, {n} calls x {rounds} rounds, 10 models x 10 tenants "
        "(median CPU ns/request)"
    )
    print(
        f"   bare call {r['bare']:.0f}; no tenant: path +{r['off_path_overhead']:.0f}, drain {r['off_drain']:.0f}; "
        f"tenant='metadata.tenant': path {r['path_path_extra']:+.0f} more, drain {r['path_drain']:.0f}; "
        f"callable: path {r['callable_path_extra']:+.0f} more, drain {r['callable_drain']:.0f}"
    )
    return [
        (
            "tenant='metadata.tenant' / no tenant, request path",
            f"{r['path_path_ratio']:.3f}",
            "<= 1.05",
            "met" if r["path_path_ratio"] <= 1.05 else "MISSED",
        ),
        ("tenant='metadata.tenant' / no tenant, path + drain", f"{r['path_total_ratio']:.3f}", "", ""),
        ("tenant=callable / no tenant, request path", f"{r['callable_path_ratio']:.3f}", "", ""),
    ]

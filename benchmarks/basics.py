"""The first sections: per-request overhead of the router wrapper (non-streaming) against the bare call and against
hand-written prometheus_client code, the queue past ``max_pending``, per-chunk overhead of the stream wrapper,
``/metrics`` scrape time against prometheus_client exposing the same series, RSS growth after many requests (each
in its own subprocess). Registered in ``run.py`` as sections request, api, overflow, chunk, scrape and rss."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import ryot_telemetry
from ryot_telemetry.demo.simulate import Chunk, ChunkChoice, Delta
from ryot_telemetry.recording.labels import OVERFLOW

from .common import (
    MODELS,
    ChatParams,
    NoopRouter,
    PromClientRouter,
    alternate,
    clock,
    count_series,
    fill_all_combinations,
    make_params,
    make_response,
    median,
    mirror_registry,
    ns,
    otlp_reader,
    rss_bytes,
    telemetry,
    timed,
    verdict,
)

Row = tuple[str, str, str, str]


async def bench_request(n: int, rounds: int) -> dict[str, float]:
    """Non-streaming chat calls over 10 models: bare vs wrapper (request path + drain) vs prometheus_client, with
    the Prometheus reader alone and with Prometheus + OTLP readers. Variants run in rotated order each round."""
    params = [make_params(m) for m in MODELS]
    response = make_response()
    bare = NoopRouter(response)
    tel = telemetry()
    log = logging.getLogger("ryot_telemetry")
    level = log.level
    log.setLevel(logging.ERROR)  # a second live configure() is intended here: private registries, no duplicates
    tel2 = ryot_telemetry.configure(
        exporters="prometheus",
        prometheus_registry="private",
        start_prometheus_server=False,
        gpu=False,
        readers=[otlp_reader()],
    )
    log.setLevel(level)
    tel2.recorder.stop_drainer()
    wrapped = tel.instrument_router(NoopRouter(response))
    wrapped2 = tel2.instrument_router(NoopRouter(response))
    prom = PromClientRouter(NoopRouter(response), CollectorRegistry())
    calls = {
        "bare": bare.openai_chat_completion,
        "wrapper": wrapped.openai_chat_completion,
        "wrapper2": wrapped2.openai_chat_completion,
        "prom": prom.openai_chat_completion,
    }
    drains = {"wrapper": tel.recorder, "wrapper2": tel2.recorder}
    # warm-up: create every series, so the rounds measure the steady state
    for call in calls.values():
        await timed(2000, call, params)
    for rec in drains.values():
        rec.drain()
    times: dict[str, list[float]] = {k: [] for k in (*calls, "drain", "drain2")}
    gc.collect()
    names = list(calls)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(await timed(n, calls[name], params))
            if name in drains:
                t0 = clock()
                drained = drains[name].drain()  # what the next scrape/export would do first
                times["drain" if name == "wrapper" else "drain2"].append(clock() - t0)
                assert drained == n, (drained, n)
    tel.shutdown()
    tel2.shutdown()
    # Overheads are taken per round (paired), then the median.
    b, w, w2, d, d2, p = (
        [ns(t, n) for t in times[k]] for k in ("bare", "wrapper", "wrapper2", "drain", "drain2", "prom")
    )
    return {
        "bare_ns": median(b),
        "wrapper_ns": median(w),
        "prom_ns": median(p),
        "request_path_ns": median([wi - bi for wi, bi in zip(w, b)]),
        "drain_ns": median(d),
        "total_ns": median([wi - bi + di for wi, bi, di in zip(w, b, d)]),
        "prom_overhead_ns": median([pi - bi for pi, bi in zip(p, b)]),
        "total_ratio": median([(wi - bi + di) / (pi - bi) for wi, bi, di, pi in zip(w, b, d, p)]),
        "total2_ns": median([wi - bi + di for wi, bi, di in zip(w2, b, d2)]),
        "total2_ratio": median([(wi - bi + di) / (pi - bi) for wi, bi, di, pi in zip(w2, b, d2, p)]),
    }


async def bench_overflow(max_pending: int, n_over: int) -> dict[str, float]:
    """No reader collects: the queue fills to max_pending, then each request past it records a bounded batch."""
    params = [make_params(m) for m in MODELS]
    tel = telemetry()
    rec = tel.recorder
    rec.max_pending = max_pending
    call = tel.instrument_router(NoopRouter(make_response())).openai_chat_completion
    await timed(max_pending, call, params)
    lat = []
    for i in range(n_over):
        t0 = clock()
        await call(params[i % 10])
        lat.append(clock() - t0)
    queued = len(rec._pending)
    t0 = clock()
    drained = rec.drain()
    backlog_s = clock() - t0
    tel.shutdown()
    return {
        "worst_ms": max(lat) * 1e3,
        "median_us": median(lat) * 1e6,
        "queued": queued,
        "backlog_ms": backlog_s * 1e3,
        "drained": drained,
    }


# --- 2. per-chunk overhead -------------------------------------------------------------------------------------


async def bench_chunks(n_chunks: int, rounds: int) -> dict[str, float]:
    """Consume one long stream through the wrapper and straight from the provider's async generator."""
    chunks = [Chunk("c1", "model-0", [ChunkChoice(0, delta=Delta(content="tok "))]) for _ in range(n_chunks)]
    bare = NoopRouter(make_response(), chunks)
    tel = telemetry()
    wrapped = tel.instrument_router(NoopRouter(make_response(), chunks))
    params = make_params(stream=True)

    async def consume(router: Any) -> float:
        t0 = clock()
        stream = await router.openai_chat_completion(params)
        async for _ in stream:
            pass
        return clock() - t0

    await consume(bare)
    await consume(wrapped)
    times: dict[str, list[float]] = {"bare": [], "wrapper": []}
    for _ in range(rounds):
        times["bare"].append(await consume(bare))
        times["wrapper"].append(await consume(wrapped))
    tel.shutdown()
    b, w = ([ns(t, n_chunks) for t in times[k]] for k in ("bare", "wrapper"))
    return {
        "bare_ns": median(b),
        "wrapper_ns": median(w),
        "ratio": median([wi / bi for wi, bi in zip(w, b)]),
        "overhead_ns": median([wi - bi for wi, bi in zip(w, b)]),
    }


# --- 3. scrape time ----------------------------------------------------------------------------------------------


def bench_scrape(rounds: int) -> dict[str, float]:
    tel = telemetry()
    requests = fill_all_combinations(tel.recorder)
    text = generate_latest(tel.registry).decode()
    mirror = mirror_registry(text)
    mirror_text = generate_latest(mirror).decode()
    times = alternate(rounds, otel=lambda: generate_latest(tel.registry), prom=lambda: generate_latest(mirror))
    tel.shutdown()
    return {
        "requests": requests,
        "series": count_series(text),
        "mirror_series": count_series(mirror_text),
        "otel_ms": median(times["otel"]) * 1e3,
        "prom_ms": median(times["prom"]) * 1e3,
    }


# --- 4. RSS growth (each case in a fresh interpreter) -------------------------------------------------------------


async def rss_child(case: str, n: int) -> dict[str, Any]:
    """Run ``n`` non-stream requests through the wrapper, scraping every 10,000 like Prometheus would."""
    tel = telemetry()
    response = make_response()
    router = tel.instrument_router(NoopRouter(response))
    call = router.openai_chat_completion
    for _ in range(2000):  # warm-up: imports, code paths, allocator pools
        await call(ChatParams(model="warmup", messages=[]))
    generate_latest(tel.registry)
    gc.collect()
    before = rss_bytes()
    for i in range(n):
        model = MODELS[i % 10] if case == "models" else f"adversarial-{i}-" + "x" * (i % 300)
        await call(ChatParams(model=model, messages=[]))
        if i % 10000 == 9999:
            generate_latest(tel.registry)
        if i == n // 2:
            gc.collect()
            middle = rss_bytes()
    text = generate_latest(tel.registry).decode()
    gc.collect()
    after = rss_bytes()
    models = {
        s.labels["model"]
        for fam in text_string_to_metric_families(text)
        if fam.name == "ryot_inference_requests"
        for s in fam.samples
    }
    tel.shutdown()
    return {
        "case": case,
        "requests": n,
        "rss_before_mb": before / 1e6,
        "rss_middle_mb": middle / 1e6,
        "rss_after_mb": after / 1e6,
        "growth_mb": (after - before) / 1e6,
        "second_half_growth_mb": (after - middle) / 1e6,
        "model_labels": len(models),
        "overflow_present": OVERFLOW in models,
        "series": count_series(text),
    }


def bench_rss(case: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--rss-child", case, "--requests", str(n)],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def request_api_rows(r: dict[str, float]) -> list[tuple[str, str, str, str]]:
    print(
        f"\n1c. recorder API, request path (median ns/request): manual start/try/except {r['manual_ns']:.0f}, "
        f"with rec.request() {r['with_ns']:.0f}; in a coroutine {r['async_manual_ns']:.0f}, "
        f"async with {r['async_with_ns']:.0f}"
    )
    return [
        (
            "with rec.request() / manual path",
            f"{r['with_ratio']:.2f}x",
            "",
            f"{r['with_extra_ns']:+.0f} ns: __enter__/__exit__ calls (success is inlined in __exit__)",
        ),
        (
            "async with rec.request() / manual path",
            f"{r['async_with_ratio']:.2f}x",
            "",
            f"{r['async_with_extra_ns']:+.0f} ns: two coroutines per request (Python's protocol)",
        ),
    ]


# --- the sections, as run.py calls them -----------------------------------------------------------------------


def request(q: bool, rows: list[Row]) -> None:
    n, rounds = (5000, 5) if q else (20000, 15)
    r = asyncio.run(bench_request(n, rounds))
    prom = r["prom_overhead_ns"]
    print(f"\n1. per-request, non-streaming, {n} calls x {rounds} rounds over 10 models (median ns/request)")
    print(
        f"   bare call {r['bare_ns']:.0f}; wrapper request path +{r['request_path_ns']:.0f}, "
        f"deferred drain +{r['drain_ns']:.0f}, total +{r['total_ns']:.0f}; prometheus_client +{prom:.0f}; "
        f"with Prometheus + OTLP readers total +{r['total2_ns']:.0f}"
    )
    rows += [
        ("request path / bare call", f"{r['wrapper_ns'] / r['bare_ns']:.2f}x", "", "latency seen by caller"),
        (
            "request path overhead / prometheus_client overhead",
            f"{r['request_path_ns'] / prom:.2f}",
            "<= 1.0",
            verdict(r["request_path_ns"] <= prom),
        ),
        ("drain (amortised) / prometheus_client overhead", f"{r['drain_ns'] / prom:.2f}", "", "at scrape time"),
        (
            "total (path + drain) / prometheus_client overhead",
            f"{r['total_ratio']:.2f}",
            "<= 2.2",
            verdict(r["total_ratio"] <= 2.2),
        ),
        ("total with Prometheus + OTLP readers / prometheus_client", f"{r['total2_ratio']:.2f}", "", ""),
    ]


def api(q: bool, rows: list[Row]) -> None:
    from .request_api import bench_request_api

    rows += request_api_rows(bench_request_api(*((20000, 5) if q else (50000, 15))))


def overflow(q: bool, rows: list[Row]) -> None:
    max_pending = 10000 if q else 65536
    r = asyncio.run(bench_overflow(max_pending, 2000))
    print(
        f"\n1b. queue past max_pending={max_pending} (no reader collecting), 2,000 more requests: worst request "
        f"{r['worst_ms']:.1f} ms, median {r['median_us']:.0f} us; recording the {r['drained']} queued at once "
        f"(what one request would pay without the bounded batch) {r['backlog_ms']:.0f} ms"
    )
    rows.append(
        (
            "worst request past max_pending / whole-backlog drain",
            f"{r['worst_ms'] / r['backlog_ms']:.3f}",
            "",
            f"{r['worst_ms']:.1f} ms vs {r['backlog_ms']:.0f} ms",
        )
    )


def chunk(q: bool, rows: list[Row]) -> None:
    n, rounds = (20000, 9) if q else (50000, 31)
    r = asyncio.run(bench_chunks(n, rounds))
    print(f"\n2. per-chunk, one {n}-chunk stream x {rounds} rounds (median ns/chunk)")
    print(f"   bare async generator {r['bare_ns']:.0f}; through the wrapper {r['wrapper_ns']:.0f}")
    rows += [
        ("stream wrapper / bare async generator", f"{r['ratio']:.2f}x", "", ""),
        (
            "stream wrapper overhead per chunk",
            f"{r['overhead_ns']:.0f} ns",
            "<= 150 ns",
            verdict(r["overhead_ns"] <= 150),
        ),
    ]


def scrape(q: bool, rows: list[Row]) -> None:
    rounds = 5 if q else 21
    r = bench_scrape(rounds)
    print(
        f"\n3. scrape (generate_latest) after {r['requests']} requests covering every router label "
        f"combination of 10 models: {r['series']} lines (mirror {r['mirror_series']}), {rounds} rounds"
    )
    print(
        f"   ryot-telemetry (OTel SDK + Prometheus reader) {r['otel_ms']:.1f} ms; "
        f"prometheus_client, same series {r['prom_ms']:.1f} ms"
    )
    rows.append(("scrape time / prometheus_client same series", f"{r['otel_ms'] / r['prom_ms']:.2f}x", "", ""))


def rss(q: bool, rows: list[Row]) -> None:
    n = 100_000 if q else 1_000_000
    print(f"\n4. RSS growth (MB = 10^6 bytes), {n} requests each, own subprocess per case, scrape every 10,000")
    for case, goal in (("models", 5.0), ("adversarial", 50.0)):
        r = bench_rss(case, n)
        print(
            f"   {case}: RSS {r['rss_before_mb']:.1f} -> {r['rss_middle_mb']:.1f} (half way) -> "
            f"{r['rss_after_mb']:.1f} MB, {r['model_labels']} model labels, overflow series "
            f"{'present' if r['overflow_present'] else 'absent'}, {r['series']} lines"
        )
        rows.append(
            (
                f"RSS growth, {case} ({n} requests)",
                f"{r['growth_mb']:.1f} MB",
                f"< {goal:.0f} MB",
                verdict(r["growth_mb"] < goal),
            )
        )

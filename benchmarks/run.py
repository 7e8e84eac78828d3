"""ryot-telemetry benchmarks: every number is a ratio against a baseline measured in the same run.

    python -m benchmarks            # full run (a few minutes on 2 cores)
    python -m benchmarks --quick    # smoke mode: fewer requests, fewer rounds

Sections: per-request overhead of the router wrapper (non-streaming) against the bare call and against
hand-written prometheus_client code; per-chunk overhead of the stream wrapper; /metrics scrape time against
prometheus_client exposing the same series; RSS growth after many requests (each in its own subprocess); the
serving event loop's rate during a scrape (loop.py); streams with a suspending provider, the fixed cost per stream
and the drain at low request rates (costs.py); the request path against an earlier git revision imported in the
same process (ab.py, ``--ab-against REV``); how scrape, memory and the multi-process hand-off grow with models and
workers (scale.py). Rounds are interleaved (variants in rotated order) and the median is reported, so background
noise hits every variant alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

import ryot_telemetry
from ryot_telemetry import catalogue
from ryot_telemetry.demo.simulate import Chunk, ChunkChoice, Delta, PromptDetails, Response, Usage
from ryot_telemetry.recording.labels import OVERFLOW

clock = time.perf_counter
MODELS = tuple(f"model-{i}" for i in range(10))


# --- the workload -------------------------------------------------------------------------------------------


class ChatParams(BaseModel):
    """llama-stack's router receives pydantic request models; so do all variants here."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    n: int | None = None  # llama-stack's request model has it; a missing field is a slow pydantic miss


class NoopRouter:
    """An inference provider that answers instantly, so only the instrumentation's cost is left to measure."""

    def __init__(self, response: Any, chunks: list[Any] | None = None) -> None:
        self.response = response
        self.chunks = chunks or []

    async def openai_chat_completion(self, params: Any) -> Any:
        if params.stream:
            return self._stream()
        return self.response

    async def openai_completion(self, params: Any) -> Any:
        return self.response

    async def _stream(self) -> Any:
        for c in self.chunks:
            yield c


def make_response(model: str = "model-0") -> Response:
    usage = Usage(120, 40, 160, PromptDetails(cached_tokens=30))
    return Response("r1", model, [], usage)  # choices are never read by either side


def make_params(model: str = "model-0", stream: bool = False) -> ChatParams:
    opts = {"include_usage": True} if stream else None
    return ChatParams(model=model, messages=[{"role": "user", "content": "hi"}], stream=stream, stream_options=opts)


# --- the fair baseline: hand-written prometheus_client instrumentation -----------------------------------------


class PromClientRouter:
    """What a careful engineer writes by hand with prometheus_client: module-level metrics, ``.labels()`` per
    request, the same label sets and buckets as the catalogue, usage read from the response."""

    def __init__(self, inner: Any, registry: CollectorRegistry) -> None:
        self.inner = inner

        def b(name: str) -> tuple[float, ...]:
            return catalogue.get(name).buckets  # type: ignore[return-value]

        r = registry
        self.requests = Counter(
            "ryot_inference_requests", "", ["model", "endpoint", "status", "error_type"], registry=r
        )
        self.errors = Counter("ryot_inference_errors", "", ["model", "error_type", "severity"], registry=r)
        self.tokens = Counter("ryot_tokens_generated", "", ["model", "token_type", "generation_mode"], registry=r)
        self.latency = Histogram(
            "ryot_inference_latency_seconds",
            "",
            ["model", "batch_size", "generation_mode"],
            buckets=b("ryot.inference.latency"),
            registry=r,
        )
        self.batch = Histogram(
            "ryot_batch_size_distribution",
            "",
            ["model", "request_type"],
            buckets=b("ryot.batch_size.distribution"),
            registry=r,
        )
        self.tps = Histogram("ryot_tokens_per_second", "", ["model"], buckets=b("ryot.tokens_per_second"), registry=r)
        self.cache = Histogram(
            "ryot_prompt_cache_effectiveness",
            "",
            ["model"],
            buckets=b("ryot.prompt_cache.effectiveness"),
            registry=r,
        )
        self.active = Gauge("ryot_active_inference_requests", "", ["model", "request_type", "endpoint"], registry=r)

    async def openai_chat_completion(self, params: Any) -> Any:
        model = params.model
        mode = "streaming" if params.stream else "standard"
        active = self.active.labels(model, mode, "chat_completion")
        active.inc()
        start = clock()
        try:
            resp = await self.inner.openai_chat_completion(params)
        except Exception as exc:
            active.dec()
            error_type = type(exc).__name__
            self.requests.labels(model, "chat_completion", "error", error_type).inc()
            self.errors.labels(model, error_type, "warning").inc()
            raise
        latency = max(clock() - start, 0.0)
        active.dec()
        self.requests.labels(model, "chat_completion", "success", "").inc()
        self.latency.labels(model, "1", mode).observe(latency)
        self.batch.labels(model, mode).observe(1)
        usage = getattr(resp, "usage", None)
        if usage is not None:
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
            self.tokens.labels(model, "prompt", mode).inc(prompt)
            self.tokens.labels(model, "completion", mode).inc(completion)
            if completion and latency > 0:
                self.tps.labels(model).observe(completion / latency)
            details = usage.prompt_tokens_details
            if details is not None and details.cached_tokens is not None and prompt:
                self.cache.labels(model).observe(min(details.cached_tokens / prompt, 1.0))
        return resp


# --- helpers ------------------------------------------------------------------------------------------------


def telemetry(drainer: bool = False) -> ryot_telemetry.Telemetry:
    """The production set-up: one MeterProvider with a Prometheus reader on a private registry (no HTTP).

    The background drainer is stopped unless asked for: the request path and the drain are timed separately.
    """
    tel = ryot_telemetry.configure(
        exporters="prometheus", prometheus_registry="private", start_prometheus_server=False, gpu=False
    )
    if not drainer:
        tel.recorder.stop_drainer()
    return tel


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def ns(seconds: float, n: int) -> float:
    return seconds / n * 1e9


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def timed(n: int, call: Callable[[Any], Awaitable[Any]], params: list[Any]) -> float:
    k = len(params)
    t0 = clock()
    for i in range(n):
        await call(params[i % k])
    return clock() - t0


# --- 1. per-request overhead ----------------------------------------------------------------------------------


def otlp_reader() -> Any:
    """OTLP's periodic reader with a transport that sends nothing: what a second reader costs per measurement."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader

    class NoSend(OTLPMetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
            return MetricExportResult.SUCCESS

    return PeriodicExportingMetricReader(NoSend(), export_interval_millis=3_600_000)


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


class _Exc(Exception):
    def __init__(self, message: str, status_code: int = 500) -> None:
        super().__init__(message)
        self.status_code = status_code


OUTCOMES: list[BaseException | None] = [
    None,  # success
    _Exc("CUDA out of memory"),
    _Exc("CUDA error: an illegal memory access"),
    _Exc("prompt is too long", 400),
    _Exc("Model 'x' not found", 404),
    _Exc("tokenizer failed"),
    _Exc("engine error"),
    TimeoutError("timed out"),
    asyncio.CancelledError(),  # a stream cut short: partial
]
MODE_ENDPOINTS = (
    ("chat_completion", "standard"),
    ("chat_completion", "streaming"),
    ("completion", "standard"),
    ("completion", "streaming"),
    ("completion", "batch"),
)
BATCH_SIZES = (1, 3, 6, 12, 24, 40)
PROMPT_TOKENS = (10, 100, 1000, 5000, 20000)


def fill_all_combinations(rec: Any, models: tuple[str, ...] = MODELS) -> int:
    """Record one request per (model, endpoint, mode, batch bucket, outcome, prompt size): every router series."""
    n = 0
    for model in models:
        for endpoint, mode in MODE_ENDPOINTS:
            for batch in BATCH_SIZES:
                for exc in OUTCOMES:
                    for prompt in PROMPT_TOKENS:
                        record_one(rec, model, endpoint, mode, batch, exc, prompt)
                        n += 1
    rec.drain()
    return n


def record_one(
    rec: Any, model: str, endpoint: str, mode: str, batch: int, exc: BaseException | None, prompt: int
) -> None:
    """One request through the recorder API: 0.5 s long, 20 completion tokens, a quarter of the prompt cached."""
    req = rec.start(model, endpoint, mode, batch)
    req.start -= 0.5
    req.prompt_tokens = prompt
    req.completion_tokens = 20
    req.cached_tokens = prompt // 4
    if mode == "streaming":
        req.first_token = req.start + 0.05
        req.delivered = True
    if exc is None:
        req.success(rec)
    elif isinstance(exc, asyncio.CancelledError):
        req.abandon(rec)
    else:
        req.fail(rec, exc)


def mirror_registry(exposition: str, skip: tuple[str, ...] = (), gauge_mode: str = "all") -> CollectorRegistry:
    """A prometheus_client registry exposing exactly the series (names, labels, buckets) of ``exposition``, less
    the families in ``skip``. ``gauge_mode``: the gauges' multiprocess_mode (in PROMETHEUS_MULTIPROC_DIR mode)."""
    reg = CollectorRegistry()
    for fam in text_string_to_metric_families(exposition):
        samples = fam.samples
        if not samples or fam.name in skip:
            continue
        if fam.type == "histogram":
            keys = sorted({k for s in samples for k in s.labels if k != "le"})
            bounds = sorted({float(s.labels["le"]) for s in samples if "le" in s.labels} - {float("inf")})
            h = Histogram(fam.name, fam.documentation or "h", keys, buckets=bounds, registry=reg)
            for s in samples:
                if s.name.endswith("_sum"):
                    h.labels(*(s.labels[k] for k in keys)).observe(s.value)
        elif fam.type == "counter":
            keys = sorted({k for s in samples for k in s.labels})
            c = Counter(fam.name, fam.documentation or "c", keys, registry=reg)
            for s in samples:
                if s.name.endswith("_total"):
                    c.labels(*(s.labels.get(k, "") for k in keys)).inc(s.value)
        else:
            keys = sorted({k for s in samples for k in s.labels})
            g = Gauge(fam.name, fam.documentation or "g", keys, registry=reg, multiprocess_mode=gauge_mode)
            for s in samples:
                g.labels(*(s.labels.get(k, "") for k in keys)).set(s.value)
    return reg


def count_series(exposition: str) -> int:
    return sum(1 for line in exposition.splitlines() if line and not line.startswith("#"))


def bench_scrape(rounds: int) -> dict[str, float]:
    tel = telemetry()
    requests = fill_all_combinations(tel.recorder)
    text = generate_latest(tel.registry).decode()
    mirror = mirror_registry(text)
    mirror_text = generate_latest(mirror).decode()
    times: dict[str, list[float]] = {"otel": [], "prom": []}
    for _ in range(rounds):
        t0 = clock()
        generate_latest(tel.registry)
        times["otel"].append(clock() - t0)
        t0 = clock()
        generate_latest(mirror)
        times["prom"].append(clock() - t0)
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


# --- report ------------------------------------------------------------------------------------------------------


SECTIONS = (
    "request",
    "api",
    "overflow",
    "chunk",
    "scrape",
    "rss",
    "guards",
    "multiproc",
    "exemplars",
    "tenants",
    "ab",
    "duplicates",
    "scale",
)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


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


def main(argv: list[str] | None = None) -> int:
    # OTel's exposition has no *_created series; without them prometheus_client writes the same series.
    disable_created_metrics()
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke mode: fewer requests and rounds")
    ap.add_argument("--only", choices=(*SECTIONS, "loop", "costs"), action="append")
    ap.add_argument("--ab-against", metavar="REV", help="baseline git revision of section ab (default cb16a6d)")
    ap.add_argument("--json", metavar="PATH", help="also write the summary rows as JSON records to PATH")
    ap.add_argument("--rss-child", choices=("models", "adversarial"), help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        print(json.dumps(asyncio.run(rss_child(args.rss_child, args.requests))))
        return 0
    only = set(args.only or (*SECTIONS, "loop", "costs"))
    q = args.quick
    print(
        f"ryot-telemetry {ryot_telemetry.__version__} benchmarks{' (--quick)' if q else ''}, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    rows: list[tuple[str, str, str, str]] = []
    curves: list[dict[str, Any]] = []  # the scale section's curve points (--json "curves")
    if "request" in only:
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
    if "api" in only:
        from .request_api import bench_request_api

        rows += request_api_rows(bench_request_api(*((20000, 5) if q else (50000, 15))))
    if "overflow" in only:
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
    if "chunk" in only:
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
    if "scrape" in only:
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
    if "rss" in only:
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
    if "loop" in only:
        from . import loop

        loop.report(q, rows)
    if "costs" in only:
        from . import costs

        costs.report(q, rows)
    if "guards" in only:
        from .guards import bench_guards, report

        n, rounds = (5000, 5) if q else (20000, 15)
        rows.append(report(asyncio.run(bench_guards(n, rounds)), n, rounds))
    if "multiproc" in only:
        from . import multiproc

        rows += multiproc.section(q)
    if "exemplars" in only:
        from . import exemplars

        rows += exemplars.run(q)
    if "tenants" in only:
        from . import tenants

        rows += tenants.run(q)
    if "duplicates" in only:
        from . import duplicates

        rows += duplicates.run(q)
    if "scale" in only:
        from . import scale

        scale.report(q, rows, curves)
    if "ab" in only:
        from . import ab

        rows += ab.run(q, args.ab_against)
    w = max((len(r[0]) for r in rows), default=len("measure"))  # none: e.g. only ab, skipped
    print(f"\n{'measure':<{w}}  {'result':>9}  {'goal':<15}  note")
    for name, val, goal, note in rows:
        print(f"{name:<{w}}  {val:>9}  {goal:<15}  {note}")
    if args.json:
        from .results import write

        write(args.json, rows, q, curves)
    return 0


if __name__ == "__main__":
    sys.exit(main())

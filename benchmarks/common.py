"""What the benchmark sections share: the workload (a provider that answers instantly, request models like
llama-stack's), the fair baseline (hand-written prometheus_client instrumentation), the production set-up, timing
helpers, and every router series recorded once (``fill_all_combinations``) with a prometheus_client registry holding
the same series (``mirror_registry``). Sections import this module; nothing here imports a section."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

import ryot_telemetry
from ryot_telemetry import catalogue
from ryot_telemetry.demo.simulate import PromptDetails, Response, Usage

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


def alternate(rounds: int, **calls: Callable[[], Any]) -> dict[str, list[float]]:
    """Wall time of each of ``calls``, ``rounds`` times, the calls taking turns within a round so that a change in the
    machine's load weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            t0 = clock()
            call()
            times[name].append(clock() - t0)
    return times


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


def otlp_reader() -> Any:
    """OTLP's periodic reader with a transport that sends nothing: what a second reader costs per measurement."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader

    class NoSend(OTLPMetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
            return MetricExportResult.SUCCESS

    return PeriodicExportingMetricReader(NoSend(), export_interval_millis=3_600_000)


# --- every router series -----------------------------------------------------------------------------------


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


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"

"""A simulated llama-stack-style router: OpenAI-shaped responses and streams with realistic timing.

It is the demo's embedded default model and a fixture for tests and benchmarks. Timing: a prefill delay that
grows with the prompt (TTFT), then one token per ``tpot`` seconds, each with jitter. Failures are drawn from
configurable rates and raise the kinds of exceptions real providers raise.

For the demo it also plays the engine behind the router, so every non-GPU panel of the dashboard has data:
``slots`` bounds the sequences the engine runs at once per model (the rest wait in its queue), ``engine_timings``
puts the engine's own timings on every answer and on the last chunk of every stream (llama.cpp-style ``timings``,
prefill and decode time per token, for the first model and every other one after it; vLLM-style per-request
``metrics``, which carry the queue time too, for the others, as a router fronting both engines sees), and
``SimulatedEngine`` reports queue depth, the KV cache it reserves, model loads and start-up phases
through the public ``EngineMetrics`` API. ``DEMO_PRICES`` is the demo's price table.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sources.engine import EngineMetrics

__all__ = ["DEMO_PRICES", "ProviderError", "SimulatedEngine", "SimulatedRouter", "demo_router"]

DEMO_PRICES: dict[str, dict[str, float]] = {
    "llama-3.1-8b-instruct": {"prompt": 0.0002, "completion": 0.0006, "cached_prompt": 0.0001},
    "mistral-7b-instruct": {"prompt": 0.00025, "completion": 0.00025},
    "*": {"prompt": 0.0005, "completion": 0.0015},
}
"""The demo's price table, US dollars per 1,000 tokens (replace it with ``RYOT_TELEMETRY_PRICE_TABLE``); ``*`` prices
any other ``--models`` name, so the cost panels are never empty."""

DEMO_SLOTS = 8
"""Sequences the demo's engine runs at once per model; with the demo's 16 requests in flight, the rest queue."""

CONTEXT_LENGTH = 8192
KV_BYTES_PER_TOKEN = 131072
"""Llama-3.1-8B in fp16: 2 (K and V) x 32 layers x 8 KV heads x 128 dimensions x 2 bytes."""

_WORDS = ("the", "model", "token", "stream", "latency", "cache", "answer", "is", "a", "fast", "GPU", "and", "of")


@dataclass(slots=True)
class Delta:
    content: str | None = None
    role: str | None = None


@dataclass(slots=True)
class ChunkChoice:
    index: int
    delta: Delta | None = None
    text: str | None = None
    finish_reason: str | None = None


@dataclass(slots=True)
class PromptDetails:
    cached_tokens: int = 0


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptDetails | None = None


@dataclass(slots=True)
class Chunk:
    id: str
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    object: str = "chat.completion.chunk"
    timings: dict[str, float] | None = None  # llama.cpp's field, on the last chunk of a stream
    metrics: dict[str, float] | None = None  # vLLM's per-request field, on the last chunk of a stream


@dataclass(slots=True)
class Message:
    content: str
    role: str = "assistant"


@dataclass(slots=True)
class Choice:
    index: int
    message: Message | None = None
    text: str | None = None
    finish_reason: str = "stop"


@dataclass(slots=True)
class Response:
    id: str
    model: str
    choices: list[Choice]
    usage: Usage
    object: str = "chat.completion"
    timings: dict[str, float] | None = None  # llama.cpp's field
    metrics: dict[str, float] | None = None  # vLLM's per-request field


class ProviderError(Exception):
    """An error with an HTTP-like status code, as inference providers raise them."""

    def __init__(self, message: str, status_code: int = 500) -> None:
        super().__init__(message)
        self.status_code = status_code


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


@dataclass
class SimulatedRouter:
    """Streams tokens with configurable timing and failure rates. ``speed`` scales every delay (0 = no sleep)."""

    ttft: float = 0.03  # seconds before prefill (scheduling, first forward pass)
    prefill_rate: float = 20000.0  # prompt tokens per second of prefill
    tpot: float = 0.02  # seconds per output token
    jitter: float = 0.3  # +-30%
    speed: float = 1.0
    max_tokens: int = 64
    error_rate: float = 0.02
    timeout_rate: float = 0.01
    cache_ratio: float = 0.3  # fraction of prompt tokens reported as cached
    seed: int | None = None
    models: tuple[str, ...] = ("llama-3.1-8b-instruct",)
    slots: int | None = None  # sequences the engine runs at once per model; None: no queue
    engine_timings: bool = False  # the engine's timings on answers and on the last chunk of streams
    _rng: random.Random = field(init=False, repr=False)
    _ids: int = field(default=0, init=False, repr=False)
    _slots: dict[str, asyncio.Semaphore] = field(default_factory=dict, init=False, repr=False)
    waiting: dict[str, int] = field(default_factory=dict, init=False)
    """Requests waiting for an engine slot, by model (the engine's queue depth)."""
    running: dict[str, int] = field(default_factory=dict, init=False)
    """Sequences the engine is running, by model."""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if self.slots is not None and self.slots < 1:
            raise ValueError(f"slots must be >= 1 or None, got {self.slots}")

    async def _sleep(self, seconds: float) -> float:
        """Sleep ``seconds`` scaled by ``speed`` and jittered; returns the seconds slept."""
        if self.speed > 0 and seconds > 0:
            slept = seconds * self.speed * self._rng.uniform(1 - self.jitter, 1 + self.jitter)
            await asyncio.sleep(slept)
            return slept
        return 0.0

    @contextlib.asynccontextmanager
    async def _slot(self, model: str) -> AsyncIterator[float]:
        """Hold one of the model's engine slots for the request's prefill and decode; wait in its queue first.
        Yields the seconds waited (the engine's queue time)."""
        if self.slots is None:
            yield 0.0
            return
        sem = self._slots.get(model)
        if sem is None:
            sem = self._slots[model] = asyncio.Semaphore(self.slots)
        self.waiting[model] = self.waiting.get(model, 0) + 1
        queued = time.monotonic()
        try:
            await sem.acquire()
        finally:
            self.waiting[model] -= 1
        self.running[model] = self.running.get(model, 0) + 1
        try:
            yield time.monotonic() - queued
        finally:
            self.running[model] -= 1
            sem.release()

    def _timings(
        self, model: str, prompt: int, queue_s: float, prefill_s: float, n_out: int, decode_s: float
    ) -> tuple[dict[str, float] | None, dict[str, float] | None]:
        """What the engine measured for one answer, in milliseconds, as ``(timings, metrics)``: llama.cpp's
        ``timings`` (no queue time) for the models at even places of ``models``, vLLM's per-request ``metrics``
        (queue time included) for the others."""
        if not self.engine_timings:
            return None, None
        per_token = decode_s / (n_out - 1) if n_out > 1 else 0.0
        if self.models.index(model) % 2 == 1:
            vllm = {"queue_time_ms": queue_s * 1000, "time_to_first_token_ms": prefill_s * 1000}
            return None, {**vllm, "mean_itl_ms": per_token * 1000} if n_out > 1 else vllm
        timings = {
            "prompt_n": prompt,
            "prompt_ms": prefill_s * 1000,
            "predicted_n": n_out,
            "predicted_ms": decode_s * 1000,
            "predicted_per_token_ms": per_token * 1000,
        }
        return timings, None

    def _fail(self) -> None:
        r = self._rng.random()
        if r < self.timeout_rate:
            raise TimeoutError("inference timed out after 30s")
        if r < self.timeout_rate + self.error_rate:
            raise self._rng.choice(
                (
                    ProviderError("CUDA out of memory. Tried to allocate 2.00 GiB", 500),
                    ProviderError("prompt is too long: maximum context length is 8192 tokens", 400),
                    ProviderError("internal engine error", 500),
                )
            )

    @staticmethod
    def _prompt_tokens(params: Any) -> int:
        prompt = _get(params, "prompt")
        if prompt is not None:
            texts = prompt if isinstance(prompt, list) else [prompt]
            return sum(max(1, len(t) // 4) if isinstance(t, str) else len(t) for t in texts)
        chars = sum(len(_get(m, "content") or "") for m in _get(params, "messages") or ())
        return max(1, chars // 4)

    def _usage(self, prompt: int, completion: int) -> Usage:
        cached = int(prompt * self.cache_ratio)
        return Usage(prompt, completion, prompt + completion, PromptDetails(cached))

    def _completion_len(self, params: Any) -> int:
        limit = _get(params, "max_tokens") or _get(params, "max_completion_tokens") or self.max_tokens
        return max(1, min(int(limit), self._rng.randint(max(1, self.max_tokens // 4), self.max_tokens)))

    def _prefill(self, prompt_tokens: int) -> float:
        return self.ttft + prompt_tokens / self.prefill_rate

    def _next_id(self) -> str:
        self._ids += 1
        return f"sim-{self._ids}"

    async def openai_chat_completion(self, params: Any) -> Any:
        return await self._complete(params, chat=True)

    async def openai_completion(self, params: Any) -> Any:
        return await self._complete(params, chat=False)

    async def _complete(self, params: Any, *, chat: bool) -> Any:
        model = _get(params, "model") or self.models[0]
        if model not in self.models:
            raise ProviderError(f"Model '{model}' not found", 404)
        prompt = self._prompt_tokens(params)
        n_out = self._completion_len(params)
        if _get(params, "stream"):
            opts = _get(params, "stream_options") or {}
            return self._stream(model, prompt, n_out, chat, bool(_get(opts, "include_usage")))
        async with self._slot(model) as queued:
            prefill = await self._sleep(self._prefill(prompt))
            decode = await self._sleep(self.tpot * max(n_out - 1, 0))
        self._fail()
        text = " ".join(self._rng.choice(_WORDS) for _ in range(n_out))
        choice = Choice(0, message=Message(text)) if chat else Choice(0, text=text)
        return Response(
            self._next_id(),
            model,
            [choice],
            self._usage(prompt, n_out),
            "chat.completion" if chat else "text_completion",
            *self._timings(model, prompt, queued, prefill, n_out, decode),
        )

    async def _stream(self, model: str, prompt: int, n_out: int, chat: bool, usage: bool) -> AsyncIterator[Chunk]:
        cid = self._next_id()
        obj = "chat.completion.chunk" if chat else "text_completion"
        if chat:
            yield Chunk(cid, model, [ChunkChoice(0, delta=Delta(role="assistant", content=""))], object=obj)
        async with self._slot(model) as queued:
            prefill = await self._sleep(self._prefill(prompt))
            decode = 0.0
            fail_at = n_out // 2 if self._rng.random() < self.error_rate + self.timeout_rate else -1
            for i in range(n_out):
                if i == fail_at:
                    self._fail() if self._rng.random() < 0.5 else None
                    raise ProviderError("engine crashed mid-stream", 500)
                word = self._rng.choice(_WORDS) + " "
                choice = ChunkChoice(0, delta=Delta(content=word)) if chat else ChunkChoice(0, text=word)
                yield Chunk(cid, model, [choice], object=obj)
                if i + 1 < n_out:
                    decode += await self._sleep(self.tpot)
        last = (
            ChunkChoice(0, delta=Delta(), finish_reason="stop")
            if chat
            else ChunkChoice(0, text="", finish_reason="stop")
        )
        timings, metrics = self._timings(model, prompt, queued, prefill, n_out, decode)
        # the engine puts its timings on the last chunk: the usage chunk when asked for, else the finish chunk
        if usage:
            yield Chunk(cid, model, [last], object=obj)
            yield Chunk(cid, model, [], self._usage(prompt, n_out), obj, timings, metrics)
        else:
            yield Chunk(cid, model, [last], object=obj, timings=timings, metrics=metrics)


def demo_router(
    *, speed: float, seed: int | None, error_rate: float, timeout_rate: float, models: Sequence[str]
) -> SimulatedRouter:
    """The demo's router: ``DEMO_SLOTS`` engine slots per model and engine timings on every answer."""
    return SimulatedRouter(
        speed=speed,
        seed=seed,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        models=tuple(models),
        slots=DEMO_SLOTS,
        engine_timings=True,
    )


class SimulatedEngine:
    """The engine behind a ``SimulatedRouter``, reporting through the public ``EngineMetrics`` API (``tel.engine``):
    start-up phases and a cold load per model, the KV cache each model reserves (slots x context length), and at
    every collection the queue depth of each model, read from the router's queue."""

    def __init__(self, router: SimulatedRouter, engine: EngineMetrics) -> None:
        self.router = router
        self.engine = engine

    def start(self) -> None:
        """Report the simulated start-up and model loads (times the engine says it took; the demo does not wait
        for them) and the reserved KV cache, and hook the queue gauge into every collection."""
        r, engine = self.router, self.engine
        slots = r.slots or 1
        for i, model in enumerate(r.models):
            # a cold load of an 8B model from local disk takes seconds
            engine.record_model_load(model, 4.0 + 0.5 * i, "cold_start", "cpu")
            engine.set_kv_cache_size(model, CONTEXT_LENGTH, slots, slots * CONTEXT_LENGTH * KV_BYTES_PER_TOKEN)
        phases = (("model_load", 4.0 * len(r.models)), ("cache_init", 0.3), ("warmup", 0.8), ("ready", 0.05))
        for phase, seconds in phases:
            engine.record_startup_phase(phase, seconds)
        engine.on_collect(self._report_queue)

    def _report_queue(self) -> None:
        for model in self.router.models:
            self.engine.set_queue_depth(model, "normal", self.router.waiting.get(model, 0))

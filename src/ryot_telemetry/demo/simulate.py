"""A simulated llama-stack-style router: OpenAI-shaped responses and streams with realistic timing.

It is the demo's embedded default model and a fixture for tests and benchmarks. Timing: a prefill delay that
grows with the prompt (TTFT), then one token per ``tpot`` seconds, each with jitter. Failures are drawn from
configurable rates and raise the kinds of exceptions real providers raise.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProviderError", "SimulatedRouter"]

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
    _rng: random.Random = field(init=False, repr=False)
    _ids: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    async def _sleep(self, seconds: float) -> None:
        if self.speed > 0 and seconds > 0:
            await asyncio.sleep(seconds * self.speed * self._rng.uniform(1 - self.jitter, 1 + self.jitter))

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
        await self._sleep(self._prefill(prompt) + self.tpot * n_out)
        self._fail()
        text = " ".join(self._rng.choice(_WORDS) for _ in range(n_out))
        choice = Choice(0, message=Message(text)) if chat else Choice(0, text=text)
        return Response(
            self._next_id(),
            model,
            [choice],
            self._usage(prompt, n_out),
            "chat.completion" if chat else "text_completion",
        )

    async def _stream(self, model: str, prompt: int, n_out: int, chat: bool, usage: bool) -> AsyncIterator[Chunk]:
        cid = self._next_id()
        obj = "chat.completion.chunk" if chat else "text_completion"
        if chat:
            yield Chunk(cid, model, [ChunkChoice(0, delta=Delta(role="assistant", content=""))], object=obj)
        await self._sleep(self._prefill(prompt))
        fail_at = n_out // 2 if self._rng.random() < self.error_rate + self.timeout_rate else -1
        for i in range(n_out):
            if i == fail_at:
                self._fail() if self._rng.random() < 0.5 else None
                raise ProviderError("engine crashed mid-stream", 500)
            word = self._rng.choice(_WORDS) + " "
            choice = ChunkChoice(0, delta=Delta(content=word)) if chat else ChunkChoice(0, text=word)
            yield Chunk(cid, model, [choice], object=obj)
            if i + 1 < n_out:
                await self._sleep(self.tpot)
        last = (
            ChunkChoice(0, delta=Delta(), finish_reason="stop")
            if chat
            else ChunkChoice(0, text="", finish_reason="stop")
        )
        yield Chunk(cid, model, [last], object=obj)
        if usage:
            yield Chunk(cid, model, [], usage=self._usage(prompt, n_out), object=obj)

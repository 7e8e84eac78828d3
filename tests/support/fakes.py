"""Pydantic OpenAI-shaped types and a scriptable router, so tests control every chunk and exception."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict


class PromptTokensDetails(BaseModel):
    cached_tokens: int | None = None


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class Delta(BaseModel):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta | None = None
    text: str | None = None
    finish_reason: str | None = None


class ChatChunk(BaseModel):
    model_config = ConfigDict(extra="allow")  # as the OpenAI SDK's models: llama.cpp's ``timings`` rides along

    id: str = "c1"
    model: str = "m"
    object: str = "chat.completion.chunk"
    choices: list[ChunkChoice] = []
    usage: Usage | None = None


class Message(BaseModel):
    role: str = "assistant"
    content: str = ""


class Choice(BaseModel):
    index: int = 0
    message: Message | None = None
    text: str | None = None
    finish_reason: str = "stop"


class Completion(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = "r1"
    model: str = "m"
    choices: list[Choice] = []
    usage: Usage | None = None


class ChatParams(BaseModel):
    model: str
    messages: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    n: int | None = None


class CompletionParams(BaseModel):
    model: str
    prompt: str | list[str] | list[int] | list[list[int]] = "hi"
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    n: int | None = None


def usage(prompt: int, completion: int, cached: int | None = None, reasoning: int | None = None) -> Usage:
    details = PromptTokensDetails(cached_tokens=cached) if cached is not None else None
    reasoning_details = CompletionTokensDetails(reasoning_tokens=reasoning) if reasoning is not None else None
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details,
        completion_tokens_details=reasoning_details,
    )


def content_chunk(text: str, model: str = "m") -> ChatChunk:
    return ChatChunk(model=model, choices=[ChunkChoice(delta=Delta(content=text))])


def usage_chunk(u: Usage, model: str = "m") -> ChatChunk:
    return ChatChunk(model=model, choices=[], usage=u)


class ScriptedRouter:
    """Returns/raises what the test scripted; records the params it was called with."""

    def __init__(
        self,
        *,
        response: Any = None,
        chunks: list[Any] | None = None,
        raises: BaseException | None = None,
        raise_after: int | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        usage_only_if_asked: bool = True,
    ) -> None:
        self.response = response
        self.chunks = chunks or []
        self.raises = raises
        self.raise_after = raise_after
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.usage_only_if_asked = usage_only_if_asked
        self.calls: list[Any] = []
        self.closed = 0

    async def openai_chat_completion(self, params: Any) -> Any:
        return await self._call(params)

    async def openai_completion(self, params: Any) -> Any:
        return await self._call(params)

    async def _call(self, params: Any) -> Any:
        self.calls.append(params)
        if self.delay:
            await asyncio.sleep(self.delay)
        stream = params.get("stream") if isinstance(params, dict) else params.stream
        if self.raises is not None and self.raise_after is None:
            raise self.raises
        if stream:
            opts = (params.get("stream_options") if isinstance(params, dict) else params.stream_options) or {}
            return self._gen(bool(opts.get("include_usage")))
        return self.response

    async def _gen(self, include_usage: bool) -> AsyncIterator[Any]:
        try:
            for i, c in enumerate(self.chunks):
                if self.raise_after is not None and i == self.raise_after:
                    raise self.raises  # type: ignore[misc]
                if self.usage_only_if_asked and not include_usage:  # (usage read only then: a chunk may guard it)
                    u = c.get("usage") if isinstance(c, dict) else getattr(c, "usage", None)
                    if u is not None:
                        continue
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                yield c
            if self.raise_after is not None and self.raise_after >= len(self.chunks):
                raise self.raises  # type: ignore[misc]
        finally:
            self.closed += 1


class KeyErrorStream:
    """A provider stream object whose instance ``__getattr__`` raises KeyError (the AttrDict idiom); iterated
    through its type's methods, as ``async for`` does."""

    def __init__(self, items: list[Any]) -> None:
        self._it = iter(items)

    def __getattr__(self, name: str) -> Any:
        raise KeyError(name)

    def __aiter__(self) -> KeyErrorStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            raise StopAsyncIteration from None

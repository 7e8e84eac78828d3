"""A llama-stack-style router that answers from a script: OpenAI-shaped dicts, usage on request.

Lives in its own module so ``RYOT_TELEMETRY_ROUTER_CLASSES=toy_router:ToyRouter`` can name it before the app runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

PROMPT_TOKENS = 12
COMPLETION_TOKENS = 5
STREAM_PROMPT_TOKENS = 700
STREAM_TEXT = ("Hel", "lo", " wor", "ld")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ToyRouter:
    """``openai_chat_completion`` / ``openai_completion`` with dict params; ``model="missing"`` raises."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def openai_chat_completion(self, params: dict[str, Any]) -> Any:
        return await self._answer(params, chat=True)

    async def openai_completion(self, params: dict[str, Any]) -> Any:
        return await self._answer(params, chat=False)

    async def _answer(self, params: dict[str, Any], chat: bool) -> Any:
        self.calls.append(params)
        await asyncio.sleep(0)
        if params["model"] == "missing":
            raise LookupError(f"Model '{params['model']}' not found")
        if params.get("stream"):
            include_usage = bool((params.get("stream_options") or {}).get("include_usage"))
            return self._stream(params["model"], chat, include_usage)
        choice = {"index": 0, "finish_reason": "stop"}
        choice.update({"message": {"role": "assistant", "content": "Hello"}} if chat else {"text": "Hello"})
        return {"id": "r1", "model": params["model"], "choices": [choice], "usage": _usage(PROMPT_TOKENS, 5)}

    async def _stream(self, model: str, chat: bool, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        for text in STREAM_TEXT:
            await asyncio.sleep(0)
            choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
            yield {"id": "s1", "model": model, "choices": [choice]}
        if include_usage:
            yield {"id": "s1", "model": model, "choices": [], "usage": _usage(STREAM_PROMPT_TOKENS, len(STREAM_TEXT))}

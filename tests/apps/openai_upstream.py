"""A tiny OpenAI-compatible upstream for ``ogx stack run`` in tests (the remote::vllm provider points at it).

``/v1/models`` lists one model; ``/v1/chat/completions`` answers "Hello there" with usage (prompt 12,
completion 3), streamed as SSE when asked, with the usage-only chunk when ``stream_options.include_usage`` is set.
Run: ``uvicorn tests.apps.openai_upstream:app --port N``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

MODEL = "upstream-model"
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}

app = FastAPI()


@app.get("/v1/models")
async def models() -> dict[str, Any]:
    return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 1, "owned_by": "test"}]}


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "c1", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL}
    body.update({"choices": choices, "usage": usage})
    return f"data: {json.dumps(body)}\n\n".encode()


async def _stream(include_usage: bool) -> AsyncIterator[bytes]:
    yield _chunk({"role": "assistant", "content": ""})
    for word in ("Hello", " there", "!"):
        yield _chunk({"content": word})
    yield _chunk({}, finish="stop")
    if include_usage:
        yield _chunk({}, usage=USAGE)
    yield b"data: [DONE]\n\n"


@app.post("/v1/chat/completions")
async def chat(request: Request) -> Any:
    params = await request.json()
    if params.get("stream"):
        include = bool((params.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_stream(include), media_type="text/event-stream")
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
        "usage": USAGE,
    }

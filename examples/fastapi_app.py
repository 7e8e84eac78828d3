"""A FastAPI inference app with ryot-telemetry: OpenAI-style endpoints plus /metrics on the same port.

    pip install "ryot-telemetry[examples]"
    uvicorn examples.fastapi_app:app --port 8000
    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \
         -d '{"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "hi"}], "stream": true}'
    curl -s localhost:8000/v1/completions -H 'content-type: application/json' \
         -d '{"model": "llama-3.1-8b-instruct", "prompt": "Once upon a time", "stream": true}'
    curl -s localhost:8000/metrics | grep ryot_
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import ryot_telemetry
from ryot_telemetry.demo.simulate import SimulatedRouter

# The app serves /metrics itself, so no separate scrape server is started.
registry = CollectorRegistry()
telemetry = ryot_telemetry.configure(
    service_name="fastapi-inference", prometheus_registry=registry, start_prometheus_server=False
)
router = telemetry.instrument_router(SimulatedRouter(speed=0.2, error_rate=0.0, timeout_rate=0.0))


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    telemetry.shutdown()  # flush OTLP (if configured) and release the instruments


app = FastAPI(title="ryot-telemetry FastAPI example", lifespan=lifespan)


@app.get("/metrics")
def metrics() -> Response:
    # A route, not a mounted ASGI app: a mount answers /metrics with a 307 to /metrics/, which curl does not follow.
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _jsonable(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


async def _sse(stream: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield f"data: {json.dumps(_jsonable(chunk))}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _error(e: Exception) -> Response:
    # json.dumps escapes non-ASCII (ensure_ascii): a message echoing a client's lone surrogate stays sendable
    body = json.dumps({"error": str(e)})
    return Response(body, status_code=getattr(e, "status_code", 500), media_type="application/json")


def _answer(params: dict[str, Any], result: Any) -> Any:
    """A stream (``"stream": true``) as server-sent events, anything else as JSON."""
    if params.get("stream"):
        return StreamingResponse(_sse(result), media_type="text/event-stream")
    return _jsonable(result)


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    params = await request.json()
    try:
        result = await router.openai_chat_completion(params)
    except Exception as e:  # the wrapper re-raises the provider's exception unchanged
        return _error(e)
    return _answer(params, result)


@app.post("/v1/completions")
async def completions(request: Request) -> Any:
    params = await request.json()
    try:
        result = await router.openai_completion(params)
    except Exception as e:
        return _error(e)
    return _answer(params, result)

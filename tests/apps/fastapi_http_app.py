"""Run under ``opentelemetry-instrument``: a FastAPI app over ``ToyRouter``, called in-process through ASGI.

HTTP metrics come from opentelemetry-instrumentation-fastapi (loaded by opentelemetry-instrument like ryot's own
instrumentor), into the MeterProvider ryot's configurator installed. Prints one JSON line (the /metrics URL and the
status codes the client got), then waits for a line on stdin (the test has scraped) or 30 s, and exits.
"""

from __future__ import annotations

import asyncio
import json
import select
import sys
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from toy_router import ToyRouter

app = FastAPI()
router = ToyRouter()


@app.post("/v1/chat/completions")
async def chat_completions(params: dict[str, Any]) -> Any:
    try:
        return await router.openai_chat_completion(params)
    except LookupError as e:
        return JSONResponse({"error": str(e)}, status_code=404)


async def main() -> dict[str, object]:
    transport = httpx.ASGITransport(app=app)
    statuses = []
    async with httpx.AsyncClient(transport=transport, base_url="http://app.local") as client:
        for model in ("toy", "toy", "toy", "missing"):
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)
    from ryot_telemetry.distro import telemetry

    tel = telemetry()
    return {"metrics_url": tel.prometheus_url if tel else None, "statuses": statuses}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
    select.select([sys.stdin], [], [], 30.0)

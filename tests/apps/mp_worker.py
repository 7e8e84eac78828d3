"""A worker process for tests/test_multiprocess.py: ``configure()`` from the environment, N simulated chat requests,
print ``ready``, then more requests on each line of stdin (``+K``) until stdin closes, then ``shutdown()``."""

from __future__ import annotations

import asyncio
import sys

import ryot_telemetry
from ryot_telemetry.demo.simulate import SimulatedRouter

MODEL = "llama-3.1-8b-instruct"

tel = ryot_telemetry.configure(prometheus_registry="private")
router = tel.instrument_router(SimulatedRouter(speed=0, error_rate=0, timeout_rate=0))


async def serve(n: int) -> None:
    for _ in range(n):
        await router.openai_chat_completion({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


asyncio.run(serve(int(sys.argv[1])))
print("ready", tel.prometheus_url, flush=True)
for line in sys.stdin:
    if line.startswith("+"):
        asyncio.run(serve(int(line[1:])))
        print("done", flush=True)
tel.shutdown()
print("closed", flush=True)

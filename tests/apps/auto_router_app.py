"""Run under ``opentelemetry-instrument``: sends a fixed mix of requests through ``ToyRouter``, reports, waits.

Nothing here mentions ryot-telemetry's set-up: the configurator and instrumentor entry points do it all. The app
prints one JSON line (the /metrics URL the configurator opened, what the caller saw), then waits for a line on
stdin (the test has scraped) or 30 s, whichever comes first, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import sys
from collections.abc import AsyncIterator

from toy_router import ToyRouter


async def main() -> dict[str, object]:
    router = ToyRouter()
    for _ in range(3):
        await router.openai_chat_completion({"model": "toy", "messages": [{"role": "user", "content": "hi"}]})
    streamed: list[list[str]] = []
    is_iterator = True
    for _ in range(2):
        params = {"model": "toy", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        stream = await router.openai_chat_completion(params)
        is_iterator = is_iterator and isinstance(stream, AsyncIterator)
        streamed.append([c["choices"][0]["delta"]["content"] async for c in stream])
    await router.openai_completion({"model": "toy", "prompt": "hi"})
    with contextlib.suppress(LookupError):
        await router.openai_completion({"model": "missing", "prompt": "hi"})
    from ryot_telemetry.distro import telemetry
    from ryot_telemetry.router.instrumentor import RyotInstrumentor

    tel = telemetry()
    return {
        "metrics_url": tel.prometheus_url if tel else None,
        "wrapped": RyotInstrumentor().wrapped_classes,
        "streamed": streamed,
        "stream_is_async_iterator": is_iterator,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
    select.select([sys.stdin], [], [], 30.0)

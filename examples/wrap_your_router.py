"""Wrap your own llama-stack-style router and read the metrics it produces.

python examples/wrap_your_router.py            # prints the ryot_* lines of /metrics
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import ryot_telemetry


class MyRouter:
    """Any object with async openai_chat_completion / openai_completion taking OpenAI-style params."""

    async def openai_chat_completion(self, params: dict[str, Any]) -> Any:
        if params.get("stream"):
            return self._stream(params)
        return {
            "model": params["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        }

    async def openai_completion(self, params: dict[str, Any]) -> Any:
        return {
            "model": params["model"],
            "choices": [{"index": 0, "text": "42"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }

    async def _stream(self, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        for word in ("Hel", "lo", "!"):
            await asyncio.sleep(0.01)
            yield {"model": params["model"], "choices": [{"index": 0, "delta": {"content": word}}]}
        # providers send usage last when asked (ryot-telemetry asks for you; the caller won't see this chunk)
        if (params.get("stream_options") or {}).get("include_usage"):
            yield {
                "model": params["model"],
                "choices": [],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            }


async def traffic(router: MyRouter) -> None:
    msg = [{"role": "user", "content": "Say hello"}]
    await router.openai_chat_completion({"model": "my-model", "messages": msg})
    stream = await router.openai_chat_completion({"model": "my-model", "messages": msg, "stream": True})
    async for chunk in stream:
        print("chunk:", chunk["choices"][0]["delta"]["content"])
    await router.openai_completion({"model": "my-model", "prompt": "6*7="})


def main() -> None:
    tel = ryot_telemetry.configure(prometheus_host="127.0.0.1", prometheus_port=0, prometheus_registry="private")
    try:
        router = tel.instrument_router(MyRouter())
        asyncio.run(traffic(router))
        body = urllib.request.urlopen(tel.prometheus_url, timeout=5).read().decode()
        for line in body.splitlines():
            if line.startswith(("ryot_inference_requests_total", "ryot_tokens_generated_total", "ryot_ttft")):
                print(line)
    finally:
        tel.shutdown()


if __name__ == "__main__":
    main()

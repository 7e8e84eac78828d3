"""Run with .venv312's python: ogx's Responses-layer path, ``InferenceRouter.openai_chat_completions_with_reasoning``,
through the real router and RyotInstrumentor; prints one JSON report for tests/e2e/test_llama_stack.py.

The provider yields ogx's own ``OpenAIChatCompletionChunkWithReasoning`` wrappers (reasoning first, then content,
then the usage chunk the Responses layer asks for), and a non-streamed ``OpenAIChatCompletionWithReasoning``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ogx.core.routers.inference import InferenceRouter
from ogx_api.inference.models import OpenAIChatCompletionChunkWithReasoning, OpenAIChatCompletionWithReasoning
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ogx_router_app import MODEL, MinimalRoutingTable, ScriptedProvider, chat

import ryot_telemetry
from ryot_telemetry.router.instrumentor import RyotInstrumentor
from ryot_telemetry.testing import Capture


class ReasoningProvider(ScriptedProvider):
    wrappers: list[Any]

    async def openai_chat_completions_with_reasoning(self, params: Any) -> Any:
        inner = await self.openai_chat_completion(params)
        if not params.stream:
            return OpenAIChatCompletionWithReasoning(completion=inner, reasoning_content="thinking")
        return self._wrapped(inner)

    async def _wrapped(self, inner: AsyncIterator[Any]) -> AsyncIterator[OpenAIChatCompletionChunkWithReasoning]:
        first = True
        async for chunk in inner:
            # the first content chunk is preceded by a reasoning-only one, as a reasoning model streams
            if first:
                first = False
                wrapper = OpenAIChatCompletionChunkWithReasoning(
                    chunk=chunk.model_copy(update={"choices": []}), reasoning_content="Let me think"
                )
                self.wrappers.append(wrapper)
                yield wrapper
            wrapper = OpenAIChatCompletionChunkWithReasoning(chunk=chunk)
            self.wrappers.append(wrapper)
            yield wrapper


async def main() -> dict[str, Any]:
    reader = InMemoryMetricReader()
    tel = ryot_telemetry.configure(exporters="none", readers=[reader], gpu=False)
    inst = RyotInstrumentor()
    inst.instrument(meter_provider=tel.meter_provider)
    cap = Capture(tel.meter_provider, reader, tel.recorder)
    provider = ReasoningProvider()
    provider.wrappers = []
    router = InferenceRouter(routing_table=MinimalRoutingTable(provider), store=None)

    # As the Responses layer calls it: streamed, usage asked for.
    result = await router.openai_chat_completions_with_reasoning(
        chat(stream=True, stream_options={"include_usage": True})
    )
    got = [w async for w in result]
    same = len(got) == len(provider.wrappers) and all(a is b for a, b in zip(got, provider.wrappers))
    single = await router.openai_chat_completions_with_reasoning(chat())
    inst.uninstrument()
    tel.shutdown()

    cap.collect()
    tok = "ryot.tokens.generated"
    return {
        "same_objects": same,
        "chunks": len(got),
        "single_is_wrapper": type(single).__name__,
        "requests": cap.series("ryot.inference.requests"),
        "ok": cap.value("ryot.inference.requests", model=MODEL, endpoint="chat_completion", status="success"),
        "tok_prompt_streaming": cap.value(tok, model=MODEL, token_type="prompt", generation_mode="streaming"),
        "tok_completion_streaming": cap.value(tok, model=MODEL, token_type="completion", generation_mode="streaming"),
        "tok_completion_standard": cap.value(tok, model=MODEL, token_type="completion", generation_mode="standard"),
        "ttft_count": sum(p.count for p in cap.points("ryot.ttft.latency")),
        "active_values": [p.value for p in cap.points("ryot.active_inference_requests")],
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), default=str))

"""Requests made inside OpenTelemetry spans, for the exemplar tests: which trace each request belongs to."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from ryot_telemetry import Telemetry
from support.fakes import ChatParams, Completion, ScriptedRouter, content_chunk, usage, usage_chunk


def traced_requests(tel: Telemetry, n: int, sampled: bool = True) -> list[tuple[str, str]]:
    """n non-streaming and n streaming requests, each in its own span; their (trace_id, span_id) in hex."""
    tracer = (TracerProvider() if sampled else TracerProvider(sampler=ALWAYS_OFF)).get_tracer("test")
    ids = []

    async def go() -> None:
        plain = tel.instrument_router(ScriptedRouter(response=Completion(usage=usage(10, 5))))
        streaming = tel.instrument_router(
            ScriptedRouter(chunks=[content_chunk("a"), content_chunk("b"), usage_chunk(usage(10, 2))])
        )
        for _ in range(n):
            for router, stream in ((plain, False), (streaming, True)):
                with tracer.start_as_current_span("request") as span:
                    result = await router.openai_chat_completion(ChatParams(model="m", stream=stream))
                    if stream:
                        async for _ in result:
                            pass
                    ctx = span.get_span_context()
                    ids.append((f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"))

    asyncio.run(go())
    return ids

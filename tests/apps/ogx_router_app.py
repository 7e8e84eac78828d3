"""Run with .venv312's python: the real ogx ``InferenceRouter`` over a scripted provider, instrumented as the
the docs' in-process llama-stack / ogx recipe does it; prints one JSON report for tests/e2e/test_llama_stack.py.
With ``--auto`` (run under ``opentelemetry-instrument``) it sets nothing up itself and waits to be scraped.

The provider is the only stand-in: it answers like an OpenAI-compatible backend (usage on the last stream chunk
only when ``stream_options.include_usage`` is set). The routing table is the smallest object the router's
``_get_model_provider`` needs (``get_object_by_identifier``, ``get_provider_impl``, ``impls_by_provider_id``).
"""

from __future__ import annotations

import asyncio
import json
import select
import sys
from collections.abc import AsyncIterator
from typing import Any

from ogx.core.datatypes import ModelWithOwner
from ogx.core.routers.inference import InferenceRouter
from ogx_api import (
    ModelType,
    OpenAIChatCompletion,
    OpenAIChatCompletionChunk,
    OpenAIChatCompletionRequestWithExtraBody,
    OpenAIChatCompletionResponseMessage,
    OpenAIChatCompletionUsage,
    OpenAIChoice,
    OpenAIChoiceDelta,
    OpenAIChunkChoice,
    OpenAICompletion,
    OpenAICompletionChoice,
    OpenAICompletionRequestWithExtraBody,
    OpenAIUserMessageParam,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import ryot_telemetry
from ryot_telemetry.router.instrumentor import RyotInstrumentor
from ryot_telemetry.testing import Capture

MODEL = "llama-8b"
PROVIDER_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _usage(prompt: int, completion: int, cached: int | None = None) -> OpenAIChatCompletionUsage:
    details = {"cached_tokens": cached} if cached is not None else None
    return OpenAIChatCompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details,
    )


class ScriptedProvider:
    """An inference provider: fixed answers, usage chunk on request, remembers what it was sent and yielded."""

    __provider_id__ = "scripted"

    def __init__(self) -> None:
        self.models_seen: list[str] = []
        self.usage_asked: list[bool] = []
        self.yielded: list[Any] = []

    def _note(self, params: Any) -> bool:
        self.models_seen.append(params.model)
        asked = bool((params.stream_options or {}).get("include_usage"))
        self.usage_asked.append(asked)
        return asked

    async def openai_chat_completion(self, params: Any) -> Any:
        asked = self._note(params)
        if params.stream:
            return self._chat_stream(params.model, asked)
        message = OpenAIChatCompletionResponseMessage(content="Hello there")
        return OpenAIChatCompletion(
            id="cc-1",
            created=1,
            model=params.model,
            choices=[OpenAIChoice(message=message, finish_reason="stop", index=0)],
            usage=_usage(20, 7),
        )

    async def _chat_stream(self, model: str, with_usage: bool) -> AsyncIterator[OpenAIChatCompletionChunk]:
        chunks = [
            OpenAIChatCompletionChunk(
                id="cs-1",
                created=1,
                model=model,
                choices=[OpenAIChunkChoice(delta=OpenAIChoiceDelta(content=text), index=0)],
            )
            for text in ("Hel", "lo", "!")
        ]
        if with_usage:
            chunks.append(
                OpenAIChatCompletionChunk(id="cs-1", created=1, model=model, choices=[], usage=_usage(900, 3, 450))
            )
        for chunk in chunks:
            await asyncio.sleep(0.002)
            self.yielded.append(chunk)
            yield chunk

    async def openai_completion(self, params: Any) -> Any:
        asked = self._note(params)
        if params.stream:
            return self._completion_stream(params.model, asked)
        choice = OpenAICompletionChoice(text="Hi", finish_reason="stop", index=0)
        return OpenAICompletion(id="c-1", created=1, model=params.model, choices=[choice], usage=_usage(5, 2))

    async def _completion_stream(self, model: str, with_usage: bool) -> AsyncIterator[OpenAICompletion]:
        chunks = [
            OpenAICompletion(
                id="cs-2",
                created=1,
                model=model,
                choices=[OpenAICompletionChoice(text=text, finish_reason="stop", index=0)],
            )
            for text in ("A", "B")
        ]
        if with_usage:  # as OpenAI documents it: one more chunk, empty choices, usage for the whole request
            chunks.append(OpenAICompletion(id="cs-2", created=1, model=model, choices=[], usage=_usage(30, 2)))
        for chunk in chunks:
            await asyncio.sleep(0.002)
            self.yielded.append(chunk)
            yield chunk


class MinimalRoutingTable:
    """Just what ``InferenceRouter._get_model_provider`` calls: one registered LLM on one provider."""

    policy: list[Any] = []

    def __init__(self, provider: ScriptedProvider) -> None:
        self.impls_by_provider_id = {provider.__provider_id__: provider}
        self.models = {
            MODEL: ModelWithOwner(
                identifier=MODEL,
                provider_id=provider.__provider_id__,
                provider_resource_id=PROVIDER_MODEL,
                model_type=ModelType.llm,
                metadata={},
            )
        }

    async def get_object_by_identifier(self, type: str, identifier: str) -> Any:
        return self.models.get(identifier)

    async def get_provider_impl(self, routing_key: str) -> Any:
        return self.impls_by_provider_id[self.models[routing_key].provider_id]


def chat(stream: bool = False, model: str = MODEL, **kw: Any) -> OpenAIChatCompletionRequestWithExtraBody:
    return OpenAIChatCompletionRequestWithExtraBody(
        model=model, messages=[OpenAIUserMessageParam(content="hi")], stream=stream, **kw
    )


def completion(stream: bool = False) -> OpenAICompletionRequestWithExtraBody:
    return OpenAICompletionRequestWithExtraBody(model=MODEL, prompt="hi", stream=stream)


async def _drain(router: InferenceRouter, provider: ScriptedProvider, call: Any, params: Any) -> dict[str, Any]:
    """One streamed call: what the caller got, and whether those are the very objects the router passed on."""
    start = len(provider.yielded)
    result = await call(params)
    got = [c async for c in result]
    from_provider = provider.yielded[start:]
    return {
        "async_iterator": isinstance(result, AsyncIterator),
        "dumps": [c.model_dump() for c in got],
        "same_objects": len(got) > 0 and all(any(c is p for p in from_provider) for c in got),
        "caller_stream_options": params.stream_options,
    }


async def traffic(router: InferenceRouter, provider: ScriptedProvider) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(2):
        resp = await router.openai_chat_completion(chat())
        out["chat_model"] = resp.model
    out["chat_stream"] = await _drain(router, provider, router.openai_chat_completion, chat(stream=True))
    out["chat_stream_usage_asked"] = await _drain(
        router, provider, router.openai_chat_completion, chat(stream=True, stream_options={"include_usage": True})
    )
    out["completion_model"] = (await router.openai_completion(completion())).model
    out["completion_stream"] = await _drain(router, provider, router.openai_completion, completion(stream=True))
    try:
        await router.openai_chat_completion(chat(model="no-such-model"))
    except Exception as e:
        out["error"] = type(e).__name__
    return out


def points(cap: Capture) -> dict[str, Any]:
    cap.collect()
    tok = "ryot.tokens.generated"
    req = "ryot.inference.requests"

    def h(name: str, **attrs: str) -> Any:
        p = cap.histogram(name, **attrs)
        return None if p is None else {"count": p.count, "sum": p.sum, "bounds": list(p.explicit_bounds)}

    return {
        "requests": cap.series(req),
        "req_chat_ok": cap.value(req, model=MODEL, endpoint="chat_completion", status="success"),
        "req_completion_ok": cap.value(req, model=MODEL, endpoint="completion", status="success"),
        "req_missing": cap.value(
            req, model="__unknown__", endpoint="chat_completion", status="error", error_type="model_not_found"
        ),
        "errors_missing": cap.value(
            "ryot.inference.errors", model="__unknown__", error_type="model_not_found", severity="info"
        ),
        "tok_prompt_standard": cap.value(tok, model=MODEL, token_type="prompt", generation_mode="standard"),
        "tok_completion_standard": cap.value(tok, model=MODEL, token_type="completion", generation_mode="standard"),
        "tok_prompt_streaming": cap.value(tok, model=MODEL, token_type="prompt", generation_mode="streaming"),
        "tok_completion_streaming": cap.value(tok, model=MODEL, token_type="completion", generation_mode="streaming"),
        "ttft_medium": h("ryot.ttft.latency", model=MODEL, prompt_size="medium"),
        "ttft_tiny": h("ryot.ttft.latency", model=MODEL, prompt_size="tiny"),
        "cache": h("ryot.prompt_cache.effectiveness", model=MODEL),
        "latency_streaming": h("ryot.inference.latency", model=MODEL, batch_size="1", generation_mode="streaming"),
        "active": cap.series("ryot.active_inference_requests"),
        "active_values": [p.value for p in cap.points("ryot.active_inference_requests")],
    }


async def main() -> dict[str, Any]:
    # The docs recipe, with an in-memory reader added so the test reads exact values (no port opened).
    reader = InMemoryMetricReader()
    tel = ryot_telemetry.configure(exporters="none", readers=[reader], gpu=False)
    inst = RyotInstrumentor()
    inst.instrument(meter_provider=tel.meter_provider)
    cap = Capture(tel.meter_provider, reader, tel.recorder)

    provider = ScriptedProvider()
    router = InferenceRouter(routing_table=MinimalRoutingTable(provider), store=None)
    report: dict[str, Any] = {"wrapped": inst.wrapped_classes, "python": list(sys.version_info[:2])}
    report["instrumented"] = await traffic(router, provider)
    report["metrics"] = points(cap)
    report["provider_models_seen"] = sorted(set(provider.models_seen))
    report["provider_usage_asked"] = provider.usage_asked

    inst.uninstrument()
    plain_provider = ScriptedProvider()
    plain = InferenceRouter(routing_table=MinimalRoutingTable(plain_provider), store=None)
    report["plain"] = await traffic(plain, plain_provider)
    report["metrics_after_uninstrument"] = points(cap)
    tel.shutdown()
    return report


async def auto_main() -> dict[str, Any]:
    """Under ``opentelemetry-instrument``: nothing set up here, the entry points did it; send the same traffic."""
    from ryot_telemetry.distro import telemetry

    tel = telemetry()
    provider = ScriptedProvider()
    router = InferenceRouter(routing_table=MinimalRoutingTable(provider), store=None)
    report: dict[str, Any] = {
        "wrapped": RyotInstrumentor().wrapped_classes,
        "metrics_url": tel.prometheus_url if tel else None,
        "python": list(sys.version_info[:2]),
    }
    report["instrumented"] = {k: v for k, v in (await traffic(router, provider)).items() if not isinstance(v, dict)}
    return report


if __name__ == "__main__":
    if sys.argv[1:] == ["--auto"]:
        # Report, then stay up until the test has scraped /metrics (a line on stdin) or 30 s have passed.
        print(json.dumps(asyncio.run(auto_main()), default=str), flush=True)
        select.select([sys.stdin], [], [], 30.0)
    else:
        print(json.dumps(asyncio.run(main()), default=str))

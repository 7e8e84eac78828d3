"""No prompt, completion, user or error text ever reaches an exported attribute: Prometheus scrape and OTLP."""

from __future__ import annotations

import random
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import ryot_telemetry

PREFIX = "PRIVMARK"
MODELS = ("privacy-model-a", "privacy-model-b")


class ProviderError(Exception):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class EchoRouter:
    """Echoes secrets from the request into every free-text field of its answer, chunks and errors."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    async def openai_chat_completion(self, params: dict[str, Any]) -> Any:
        return await self._call(params)

    async def openai_completion(self, params: dict[str, Any]) -> Any:
        return await self._call(params)

    async def _call(self, params: dict[str, Any]) -> Any:
        secret = params["metadata"]["secret"]
        roll = self.rng.random()
        if roll < 0.1:
            raise ProviderError(f"CUDA out of memory while reading {secret}", 500)
        if roll < 0.2:
            raise ProviderError(f"prompt is too long: {secret}", 400)
        usage = {
            "prompt_tokens": 60,
            "completion_tokens": 4,
            "total_tokens": 64,
            "prompt_tokens_details": {"cached_tokens": 12},
        }
        if params.get("stream"):
            return self._stream(secret, usage, fail=roll < 0.3)
        return {
            "id": f"resp-{secret}",
            "model": params["model"],
            "system_fingerprint": secret,
            "choices": [{"message": {"role": "assistant", "content": f"the answer is {secret}"}, "text": secret}],
            "usage": usage,
        }

    async def _stream(self, secret: str, usage: dict[str, Any], fail: bool) -> Any:
        yield {"id": secret, "choices": [{"delta": {"role": "assistant", "reasoning_content": secret}}]}
        yield {"id": secret, "choices": [{"delta": {"content": secret}, "text": secret}]}
        if fail:
            raise RuntimeError(f"stream died after {secret}")
        tool = {"function": {"name": secret, "arguments": f'{{"q": "{secret}"}}'}}
        yield {"id": secret, "choices": [{"delta": {"tool_calls": [tool]}, "finish_reason": secret}]}
        yield {"id": secret, "choices": [], "usage": usage}


def _request(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    secret = f"{PREFIX}{i:05d}{rng.getrandbits(32):08x}"
    endpoint = rng.choice(("chat", "completion"))
    params: dict[str, Any] = {
        "model": MODELS[i % 2],
        "stream": rng.random() < 0.5,
        "user": f"user-{secret}",
        "metadata": {"secret": secret, "model": f"model-{secret}"},
        "stop": [secret],
        "tools": [{"type": "function", "function": {"name": secret, "description": secret}}],
    }
    if endpoint == "chat":
        params["messages"] = [
            {"role": "system", "content": f"system {secret}", "name": secret},
            {"role": "user", "content": [{"type": "text", "text": f"question {secret}"}]},
        ]
    else:
        params["prompt"] = rng.choice((f"complete {secret}", [f"a {secret}", f"b {secret}"]))
    return endpoint, params


@pytest.fixture
def tel() -> Iterator[tuple[ryot_telemetry.Telemetry, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    t = ryot_telemetry.configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        readers=[reader],
        semconv=True,
        prices={m: {"prompt": 0.01, "completion": 0.03} for m in MODELS},
        gpu=False,
    )
    yield t, reader
    t.shutdown()


async def test_fuzzed_secrets_never_reach_prometheus_or_otlp(
    tel: tuple[ryot_telemetry.Telemetry, InMemoryMetricReader],
) -> None:
    """300 fuzzed requests with secrets in prompts, completions, errors and side fields: none is exported."""
    t, reader = tel
    rng = random.Random(20261123)
    router = t.instrument_router(EchoRouter(rng))
    for i in range(300):
        endpoint, params = _request(rng, i)
        call = router.openai_chat_completion if endpoint == "chat" else router.openai_completion
        try:
            result = await call(params)
            if params["stream"]:
                async for _ in result:
                    pass
        except (ProviderError, RuntimeError):
            pass

    assert t.prometheus_url is not None and t.prometheus_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(t.prometheus_url, timeout=10) as resp:
        exposition = resp.read().decode()
    otlp = encode_metrics(reader.get_metrics_data()).SerializeToString()

    # the scans see attribute values: the (legitimate) model names and error types are there
    for model in MODELS:
        assert f'model="{model}"' in exposition
        assert model.encode() in otlp
    assert 'error_type="oom"' in exposition and b"invalid_prompt" in otlp
    assert b"gen_ai.request.model" in otlp
    # and no secret, nor any fragment of one
    assert PREFIX not in exposition
    assert PREFIX.encode() not in otlp

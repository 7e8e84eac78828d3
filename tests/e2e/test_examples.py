"""The examples run as documented and produce the metrics they promise."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_wrap_your_router_example() -> None:
    """examples/wrap_your_router.py records its 3 requests and the streamed chunks reach the caller."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "wrap_your_router.py")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("chunk:")] == [
        "chunk: Hel",
        "chunk: lo",
        "chunk: !",
    ]
    counts = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'ryot_inference_requests_total\{.*endpoint="(\w+)".*\} (\S+)', proc.stdout)
    }
    assert counts == {"chat_completion": 2.0, "completion": 1.0}
    tokens = re.findall(
        r'ryot_tokens_generated_total\{.*generation_mode="streaming".*token_type="(\w+)"\} (\S+)', proc.stdout
    )
    assert sorted(tokens) == [("completion", "3.0"), ("prompt", "12.0")]


def test_fastapi_example_serves_metrics_on_the_app() -> None:
    """The FastAPI example answers chat requests (stream and not) and exposes them on its own /metrics."""
    from fastapi.testclient import TestClient

    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLES / "fastapi_app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with TestClient(mod.app) as client:
        body = {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "hi"}]}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
        r = client.post("/v1/chat/completions", json={**body, "stream": True})
        events = [e for e in r.text.split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert all('"usage": null' in e or '"usage"' not in e for e in events[:-1])  # usage chunk hidden
        r = client.post("/v1/chat/completions", json={**body, "model": "no-such-model"})
        assert r.status_code == 404
        scrape = client.get("/metrics", follow_redirects=False)  # what `curl localhost:8000/metrics` gets
        assert (scrape.status_code, scrape.headers["content-type"]) == (200, CONTENT_TYPE_LATEST)
        metrics = scrape.text
    found = {
        (m.group(1), m.group(2)): float(m.group(3))
        for m in re.finditer(
            r'ryot_inference_requests_total\{(?:[^}]*error_type="(\w*)")?[^}]*status="(\w+)"[^}]*\} (\S+)', metrics
        )
    }
    assert found == {("", "success"): 2.0, ("model_not_found", "error"): 1.0}


def test_fastapi_example_keeps_serving_metrics_after_a_lone_surrogate_model_name() -> None:
    """A JSON body whose model is "\\ud800" (valid JSON, a lone surrogate once decoded) counts under __unknown__
    and every later /metrics scrape keeps answering 200 (an unencodable label would make each one a 500)."""
    from fastapi.testclient import TestClient

    spec = importlib.util.spec_from_file_location("fastapi_app_example_hostile", EXAMPLES / "fastapi_app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with TestClient(mod.app) as client:
        body = b'{"model": "\\ud800\\u0000", "messages": [{"role": "user", "content": "hi"}]}'
        r = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 404
        for _ in range(2):
            r = client.get("/metrics", follow_redirects=False)
            assert r.status_code == 200
    assert re.search(r'ryot_inference_requests_total\{[^}]*model="__unknown__"[^}]*\} 1\.0', r.text)


def test_fastapi_example_streams_completions() -> None:
    """A streamed /v1/completions answers server-sent events: exactly the provider's chunks, then [DONE] (the usage
    chunk telemetry asked for stays hidden); the request counts as a successful streaming completion."""
    import asyncio
    import dataclasses
    import json

    from fastapi.testclient import TestClient

    from ryot_telemetry.demo.simulate import SimulatedRouter

    def seeded() -> SimulatedRouter:
        return SimulatedRouter(speed=0, seed=7, error_rate=0.0, timeout_rate=0.0)

    async def bare_chunks(params: dict[str, object]) -> list[object]:
        return [c async for c in await seeded().openai_completion(params)]

    spec = importlib.util.spec_from_file_location("fastapi_app_example_completions", EXAMPLES / "fastapi_app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.router = mod.telemetry.instrument_router(seeded())  # the same words as the bare router below
    body = {"model": "llama-3.1-8b-instruct", "prompt": "Once upon a time", "stream": True}
    expected = asyncio.run(bare_chunks(dict(body)))
    with TestClient(mod.app) as client:
        r = client.post("/v1/completions", json=body)
        scrape = client.get("/metrics", follow_redirects=False)  # what `curl localhost:8000/metrics` gets
        assert (scrape.status_code, scrape.headers["content-type"]) == (200, CONTENT_TYPE_LATEST)
        metrics = scrape.text
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = r.text.split("\n\n")
    assert events == [f"data: {json.dumps(dataclasses.asdict(c))}" for c in expected] + ["data: [DONE]", ""]
    texts = [json.loads(e[6:])["choices"][0]["text"] for e in events[:-2]]
    assert len(texts) == len(expected) >= 2 and texts[-1] == "" and all(t.endswith(" ") for t in texts[:-1])
    assert all(json.loads(e[6:])["usage"] is None for e in events[:-2])
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope")))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    model = ("model", "llama-3.1-8b-instruct")
    requests = [(k, v) for k, v in samples.items() if k[0] == "ryot_inference_requests_total"]
    assert requests == [
        (("ryot_inference_requests_total", (("endpoint", "completion"), model, ("status", "success"))), 1)
    ]
    tokens = ("generation_mode", "streaming"), model, ("token_type", "completion")
    assert samples[("ryot_tokens_generated_total", tokens)] == len(expected) - 1  # one word per chunk but the last

"""The real ogx (llama-stack) ``InferenceRouter``, instrumented by ``RyotInstrumentor``, in the Python 3.12 venv; and
the real servers, ``ogx stack run`` (ogx 1.5) and ``llama stack run`` (llama-stack 0.7.3), with ryot auto-loaded.

``scripts/setup.d/llama_stack.sh`` builds ``.venv312`` (ogx pinned, ryot-telemetry editable) and
``scripts/setup.d/llama_stack_07.sh`` ``.venv312-llama-stack`` (llama-stack 0.7.3, ``mcp<1.26``); the routers run
in subprocesses there, since both need Python >= 3.12 and the suite runs on 3.11. Without a venv its tests skip,
except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ryot_telemetry.catalogue import get
from support.ogx import OGX, STACKS, Stack, running_stack
from support.polling import until

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = OGX.python
APP = ROOT / "tests" / "apps" / "ogx_router_app.py"
MODEL = "llama-8b"

pytestmark = [pytest.mark.e2e]


def require(stack: Stack) -> None:
    """Skip without the stack's venv (no Python 3.12 here); fail instead under CI=true."""
    if stack.python.exists():
        return
    reason = f"{stack.venv.name} is absent: {stack.setup} found no Python 3.12 (run scripts/setup.sh test)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the real-router tier must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _venv(request: pytest.FixtureRequest) -> None:
    """Every test needs .venv312 (ogx) unless it is parametrized with another stack."""
    callspec = getattr(request.node, "callspec", None)
    require(callspec.params["stack"] if callspec is not None and "stack" in callspec.params else OGX)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    require(OGX)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "RYOT_TELEMETRY_GPU": "false"}
    out = subprocess.run([str(VENV_PY), str(APP)], capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_runs_the_real_ogx_router_on_python_312(report: dict[str, Any]) -> None:
    """The instrumentor found and wrapped ogx's InferenceRouter class, running on Python 3.12."""
    assert report["python"] == [3, 12]
    assert report["wrapped"] == ["ogx.core.routers.inference.InferenceRouter"]


def test_requests_and_errors_are_labelled_with_the_requested_model(report: dict[str, Any]) -> None:
    """4 chat + 2 completion successes under the requested id; 1 real ModelNotFoundError as model_not_found, under
    __unknown__ (a name the router did not know takes no label slot)."""
    m = report["metrics"]
    assert m["requests"] == [
        {"endpoint": "chat_completion", "error_type": "model_not_found", "model": "__unknown__", "status": "error"},
        {"endpoint": "chat_completion", "model": MODEL, "status": "success"},
        {"endpoint": "completion", "model": MODEL, "status": "success"},
    ]
    assert (m["req_chat_ok"], m["req_completion_ok"], m["req_missing"], m["errors_missing"]) == (4, 2, 1, 1)
    assert report["instrumented"]["error"] == "ModelNotFoundError"
    # The router rewrote params.model to the provider's id; our labels kept the caller's.
    assert report["provider_models_seen"] == ["meta-llama/Llama-3.1-8B-Instruct"]


def test_usage_tokens_ttft_and_cache_are_exact(report: dict[str, Any]) -> None:
    """Tokens come from usage (standard 45/16, streaming 1830/8); TTFT per prompt_size; cache ratio 0.5 twice."""
    m = report["metrics"]
    assert (m["tok_prompt_standard"], m["tok_completion_standard"]) == (45, 16)
    assert (m["tok_prompt_streaming"], m["tok_completion_streaming"]) == (1830, 8)
    ttft_bounds = list(get("ryot_ttft_latency_seconds").buckets or ())
    assert m["ttft_medium"]["count"] == 2 and m["ttft_medium"]["bounds"] == ttft_bounds
    assert m["ttft_tiny"]["count"] == 1
    assert m["cache"] == {"count": 2, "sum": 1.0, "bounds": list(get("ryot_prompt_cache_effectiveness").buckets or ())}
    assert m["latency_streaming"]["count"] == 3
    assert m["latency_streaming"]["bounds"] == list(get("ryot_inference_latency_seconds").buckets or ())
    assert m["active_values"] == [0, 0, 0, 0, 0]


def test_streams_reach_the_caller_unchanged_as_async_iterators(report: dict[str, Any]) -> None:
    """Streamed chunks are the router's own objects, equal to an uninstrumented router's; usage hidden unless asked."""
    inst, plain = report["instrumented"], report["plain"]
    for key in ("chat_stream", "chat_stream_usage_asked", "completion_stream"):
        assert inst[key]["async_iterator"] is True, key
        assert inst[key]["same_objects"] is True, key
        assert inst[key]["dumps"] == plain[key]["dumps"], key
    assert [c["choices"][0]["delta"]["content"] for c in inst["chat_stream"]["dumps"]] == ["Hel", "lo", "!"]
    assert {c["model"] for c in inst["chat_stream"]["dumps"]} == {MODEL}
    assert inst["chat_stream_usage_asked"]["dumps"][-1]["usage"]["prompt_tokens"] == 900
    assert inst["chat_stream"]["caller_stream_options"] is None  # the caller's params were not mutated
    # The provider was asked for usage on every stream, by the wrapper or by the caller.
    assert report["provider_usage_asked"] == [False, False, True, True, False, True]
    assert (inst["chat_model"], inst["completion_model"]) == (MODEL, MODEL)


def test_uninstrument_stops_recording(report: dict[str, Any]) -> None:
    """After uninstrument(), the same traffic through a new router adds nothing to any series."""
    assert report["metrics_after_uninstrument"] == report["metrics"]


def test_zero_code_under_opentelemetry_instrument_with_opentelemetry_distro_installed() -> None:
    """In .venv312, where opentelemetry-distro is installed too, the recipe picks ryot's configurator: exact series."""
    from support.instrumented import RECIPE_ENV, lbl, le_values, run_and_scrape, spec_le

    otel_instrument = VENV_PY.parent / "opentelemetry-instrument"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **RECIPE_ENV, "OTEL_SERVICE_NAME": "ogx-auto"}
    report, s, _ = run_and_scrape([str(otel_instrument), str(VENV_PY), str(APP), "--auto"], env)
    assert report["wrapped"] == ["ogx.core.routers.inference.InferenceRouter"]
    assert report["instrumented"]["error"] == "ModelNotFoundError"
    req = "ryot_inference_requests_total"
    assert s[(req, lbl(model=MODEL, endpoint="chat_completion", status="success"))] == 4
    assert s[(req, lbl(model=MODEL, endpoint="completion", status="success"))] == 2
    missing = lbl(model="__unknown__", endpoint="chat_completion", status="error", error_type="model_not_found")
    assert s[(req, missing)] == 1
    tok = "ryot_tokens_generated_total"
    assert s[(tok, lbl(model=MODEL, token_type="prompt", generation_mode="streaming"))] == 1830
    assert s[(tok, lbl(model=MODEL, token_type="completion", generation_mode="streaming"))] == 8
    lat = "ryot_inference_latency_seconds"
    assert le_values(s, lat + "_bucket", model=MODEL, batch_size="1", generation_mode="streaming") == spec_le(lat)
    ttft = "ryot_ttft_latency_seconds"
    assert le_values(s, ttft + "_bucket", model=MODEL, prompt_size="medium") == spec_le(ttft)
    assert s[(ttft + "_count", lbl(model=MODEL, prompt_size="medium"))] == 2
    info = [dict(k) for (n, k) in s if n == "ryot_service_info"]
    assert [i["service"] for i in info] == ["ogx-auto"]


def test_drop_duplicates_ogx_removes_ogx_router_histograms_from_the_exposition() -> None:
    """Under opentelemetry-instrument the real ogx router records its own histograms into ryot's provider: without
    the option every family of SUPERSEDED["ogx"] is exposed (the names are ogx's real ones); with
    RYOT_TELEMETRY_DROP_DUPLICATES=ogx none is, while ogx's other metrics and ryot's answering families stay."""
    from ryot_telemetry.catalogue import get
    from ryot_telemetry.recording.duplicates import SUPERSEDED
    from support.instrumented import RECIPE_ENV, run_and_scrape

    otel_instrument = VENV_PY.parent / "opentelemetry-instrument"
    base = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **RECIPE_ENV}
    cmd = [str(otel_instrument), str(VENV_PY), str(APP), "--auto"]

    def families(text: str) -> set[str]:
        return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}

    _, _, plain = run_and_scrape(cmd, base)
    _, _, dropped = run_and_scrape(cmd, {**base, "RYOT_TELEMETRY_DROP_DUPLICATES": "ogx"})
    superseded = {s.exposed for s in SUPERSEDED["ogx"]}
    assert superseded <= families(plain)
    assert superseded & families(dropped) == set()
    assert "ogx_inference_model_type_used_total" in families(dropped)
    answering = {get(name).prometheus_name for s in SUPERSEDED["ogx"] for name in s.answered_by}
    assert answering <= families(dropped)
    saved = len(plain.encode()) - len(dropped.encode())
    assert saved > 0, saved


def test_reasoning_path_of_the_responses_layer_is_recorded() -> None:
    """ogx's openai_chat_completions_with_reasoning: wrappers reach the caller unchanged; usage read inside them."""
    app = ROOT / "tests" / "apps" / "ogx_reasoning_app.py"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "RYOT_TELEMETRY_GPU": "false"}
    out = subprocess.run([str(VENV_PY), str(app)], capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["same_objects"] is True and r["chunks"] == 5  # reasoning-only + 3 content + usage (asked for)
    assert r["single_is_wrapper"] == "OpenAIChatCompletionWithReasoning"
    assert r["requests"] == [{"endpoint": "chat_completion", "model": MODEL, "status": "success"}]
    assert r["ok"] == 2
    assert (r["tok_prompt_streaming"], r["tok_completion_streaming"], r["tok_completion_standard"]) == (900, 3, 7)
    assert r["ttft_count"] == 1
    # three in-flight series, all back at 0: the first request was in flight under __unknown__ until ogx accepted
    # the model name (SPEC: a name takes a label slot only past the router's model lookup)
    assert r["active_values"] == [0, 0, 0]


_AUTH_SERVER = """\
  auth:
    provider_config: {type: upstream_header, principal_header: x-auth-user, tenant_header: x-tenant-id}
"""


def test_ogx_auth_principal_is_the_tenant_label_of_the_real_server(tmp_path: Path) -> None:
    """`ogx stack run` with ogx's upstream-header auth, under opentelemetry-instrument with
    RYOT_TELEMETRY_TENANT=ogx:principal: each authenticated principal is the tenant of its requests (streams too),
    with exact counts; a request ogx rejects (no principal) never reaches the router and is not counted."""
    with running_stack(OGX, tmp_path, env={"RYOT_TELEMETRY_TENANT": "ogx:principal"}, server=_AUTH_SERVER) as s:

        def chat(user: str | None, stream: bool = False) -> int:
            body = {"model": "vllm/llama-8b", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
            headers = {"x-auth-user": user, "x-tenant-id": f"team-{user}"} if user else {}
            with httpx.stream("POST", f"{s.base}/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
                r.read()
                return r.status_code

        def requests_by_tenant() -> dict[str, float]:
            out: dict[str, float] = {}
            for (name, labels), v in _samples(httpx.get(s.metrics, timeout=5).text).items():
                if name == "ryot_inference_requests_total":
                    tenant = dict(labels).get("tenant", "")
                    out[tenant] = out.get(tenant, 0) + v
            return out

        codes = [chat("alice"), chat("bob"), chat("alice", stream=True), chat("alice"), chat(None)]
        assert codes == [200, 200, 200, 200, 401]
        assert until(lambda: requests_by_tenant() == {"alice": 3, "bob": 1}, 10, "3 + 1 requests by tenant")
        # ryot_model_info: the model that served, with the provider the run configuration registered it with
        info = [
            dict(labels)
            for (name, labels), _ in _samples(httpx.get(s.metrics, timeout=5).text).items()
            if name == "ryot_model_info"
        ]
        assert info == [
            {
                "model": "vllm/llama-8b",
                "provider": "vllm",
                "provider_type": "remote::vllm",
                "provider_model_id": "upstream-model",
            }
        ]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples keyed by (name, labels without the empty ones and otel_scope_*)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = frozenset((k, v) for k, v in s.labels.items() if v != "" and not k.startswith("otel_scope_"))
            out[(s.name, labels)] = s.value
    return out


def _sse(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON chunks of a server-sent-events body, [DONE] left out."""
    lines = [line.removeprefix("data:").strip() for line in response.text.splitlines() if line.startswith("data:")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


@pytest.mark.parametrize("stack", STACKS, ids=[s.name for s in STACKS])
def test_stack_run_under_opentelemetry_instrument_records_exact_series(stack: Stack, tmp_path: Path) -> None:
    """`ogx stack run` and `llama stack run`, ryot auto-loaded by opentelemetry-instrument (its instrumentor finds
    that venv's own InferenceRouter), driven over HTTP: two chat answers and two streams (one asking for usage) are
    successes under the requested model, an unknown model one model_not_found under __unknown__; usage tokens,
    finish reasons and TTFT counts exact, in-flight back to 0; the client gets the upstream's answers, and the usage
    chunk only when it asked for it."""
    model = "vllm/llama-8b"
    # what the instrumentor loaded by opentelemetry-instrument wraps in this venv: the stack's own router class
    found = subprocess.run(
        [
            str(stack.python),
            "-c",
            "from ryot_telemetry.router.instrumentor import router_classes\n"
            "print([f'{c.__module__}.{c.__qualname__}' for c in router_classes()])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert (found.returncode, found.stdout) == (0, f"{[stack.router]}\n"), found.stderr[-2000:]
    with running_stack(stack, tmp_path, env={"OTEL_SERVICE_NAME": f"{stack.name}-auto"}) as s:

        def chat(**extra: Any) -> httpx.Response:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
            return httpx.post(f"{s.base}/v1/chat/completions", json=body, timeout=30)

        plain = [chat(), chat()]
        streams = [chat(stream=True), chat(stream=True, stream_options={"include_usage": True})]
        missing = chat(model="no-such-model")

        def scraped() -> Any:
            found = _samples(httpx.get(s.metrics, timeout=5).text)
            total = sum(v for (n, _), v in found.items() if n == "ryot_inference_requests_total")
            return found if total == 5 else None

        samples = until(scraped, 15, "the 5 requests on /metrics")

    assert [r.status_code for r in plain + streams] == [200, 200, 200, 200]
    assert missing.status_code == 404, missing.text
    assert [r.json()["choices"][0]["message"]["content"] for r in plain] == ["Hello there!", "Hello there!"]
    for r in streams:
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in _sse(r) if c["choices"])
        assert text == "Hello there!"
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    usage = [[tuple(c["usage"][k] for k in counts) for c in _sse(r) if c.get("usage")] for r in streams]
    assert usage == [[], [(12, 3, 15)]]

    def series(name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (n, labels), v in samples.items() if n == name}

    ok = {("model", model), ("endpoint", "chat_completion"), ("status", "success")}
    unknown = {("model", "__unknown__"), ("endpoint", "chat_completion"), ("status", "error")}
    assert series("ryot_inference_requests_total") == {
        frozenset(ok): 4,
        frozenset(unknown | {("error_type", "model_not_found")}): 1,
    }
    errors = series("ryot_inference_errors_total")
    assert sum(errors.values()) == 1 and {dict(k)["error_type"] for k in errors} == {"model_not_found"}
    assert series("ryot_tokens_generated_total") == {
        frozenset({("model", model), ("token_type", t), ("generation_mode", m)}): n
        for m in ("standard", "streaming")
        for t, n in (("prompt", 24), ("completion", 6))
    }
    assert series("ryot_finish_reasons_total") == {
        frozenset({("model", model), ("endpoint", "chat_completion"), ("finish_reason", "stop")}): 4
    }
    ttft = series("ryot_ttft_latency_seconds_count")
    assert {dict(k)["model"] for k in ttft} == {model} and sum(ttft.values()) == 2
    active = series("ryot_active_inference_requests")
    assert active and set(active.values()) == {0}
    assert [dict(k)["service"] for k in series("ryot_service_info")] == [f"{stack.name}-auto"]

"""Zero-code loading: a real ``opentelemetry-instrument`` process (and a bare ``instrument()`` in a fresh one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.instrumented import RECIPE_ENV, Samples, lbl, le_values, run_and_scrape, spec_le

APPS = Path(__file__).resolve().parents[1] / "apps"
OTEL_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
REQ = "ryot.inference.requests"


def test_bare_instrument_records_into_the_global_meter_provider() -> None:
    """A bare instrument() (no kwargs, as auto-loading calls it) records into the global MeterProvider."""
    script = """
import asyncio, json
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from ryot_telemetry import views
from ryot_telemetry.router.instrumentor import RyotInstrumentor
from ryot_telemetry.testing import Capture
from toy_router import ToyRouter

reader = InMemoryMetricReader()
provider = MeterProvider(metric_readers=[reader], views=views())
metrics.set_meter_provider(provider)
RyotInstrumentor().instrument()
asyncio.run(ToyRouter().openai_completion({"model": "toy", "prompt": "hi"}))
cap = Capture(provider, reader, None).collect()
print(json.dumps([cap.value("ryot.inference.requests", model="toy", endpoint="completion", status="success"),
                  cap.value("ryot.tokens.generated", model="toy", token_type="prompt", generation_mode="standard")]))
"""
    env = _clean_env(RYOT_TELEMETRY_ROUTER_CLASSES="toy_router:ToyRouter", PYTHONPATH=str(APPS))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [1, 12]


# --- a real opentelemetry-instrument process, scraped over loopback ---------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RYOT_TELEMETRY_"))}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def _run_app(**extra_env: str) -> tuple[dict[str, Any], Samples, str]:
    """Start the toy app under opentelemetry-instrument, scrape /metrics once, let it exit."""
    if not OTEL_INSTRUMENT.exists():
        pytest.skip(f"{OTEL_INSTRUMENT} not found (opentelemetry-instrumentation is not installed in this venv)")
    env = _clean_env(
        **RECIPE_ENV,
        OTEL_SERVICE_NAME="auto-app",
        RYOT_TELEMETRY_ROUTER_CLASSES="toy_router:ToyRouter",
        PYTHONPATH=str(APPS),
    )
    env.update(extra_env)
    return run_and_scrape([str(OTEL_INSTRUMENT), sys.executable, str(APPS / "auto_router_app.py")], env)


def test_opentelemetry_instrument_exposes_exact_series_and_spec_buckets() -> None:
    """Under opentelemetry-instrument, /metrics has exact ryot_* counts and the SPEC's bucket boundaries."""
    report, s, _ = _run_app()
    assert report["wrapped"] == ["toy_router.ToyRouter"]
    assert report["stream_is_async_iterator"] is True
    assert report["streamed"] == [["Hel", "lo", " wor", "ld"]] * 2  # usage chunk hidden from the caller
    req = "ryot_inference_requests_total"
    assert s[(req, lbl(model="toy", endpoint="chat_completion", status="success"))] == 5
    assert s[(req, lbl(model="toy", endpoint="completion", status="success"))] == 1
    # a name the router did not know takes no label slot (SPEC): recorded under __unknown__
    unk = "__unknown__"
    assert s[(req, lbl(model=unk, endpoint="completion", status="error", error_type="model_not_found"))] == 1
    assert s[("ryot_inference_errors_total", lbl(model=unk, error_type="model_not_found", severity="info"))] == 1
    tok = "ryot_tokens_generated_total"
    assert s[(tok, lbl(model="toy", token_type="prompt", generation_mode="standard"))] == 48
    assert s[(tok, lbl(model="toy", token_type="completion", generation_mode="standard"))] == 20
    assert s[(tok, lbl(model="toy", token_type="prompt", generation_mode="streaming"))] == 1400
    assert s[(tok, lbl(model="toy", token_type="completion", generation_mode="streaming"))] == 8
    lat = "ryot_inference_latency_seconds"
    assert le_values(s, lat + "_bucket", model="toy", batch_size="1", generation_mode="standard") == spec_le(lat)
    assert spec_le(lat)[:3] == ["0.01", "0.025", "0.05"]
    assert s[(lat + "_count", lbl(model="toy", batch_size="1", generation_mode="standard"))] == 4
    assert s[(lat + "_count", lbl(model="toy", batch_size="1", generation_mode="streaming"))] == 2
    ttft = "ryot_ttft_latency_seconds"
    assert le_values(s, ttft + "_bucket", model="toy", prompt_size="medium") == spec_le(ttft)
    assert s[(ttft + "_count", lbl(model="toy", prompt_size="medium"))] == 2
    tpot = "ryot_time_per_output_token_seconds"
    assert le_values(s, tpot + "_bucket", model="toy") == spec_le(tpot)
    assert s[(tpot + "_count", lbl(model="toy"))] == 2
    active = "ryot_active_inference_requests"
    assert s[(active, lbl(model="toy", request_type="streaming", endpoint="chat_completion"))] == 0
    info = [dict(k) for (n, k) in s if n == "ryot_service_info"]
    assert [(i["service"], i["component"]) for i in info] == [("auto-app", "inference-router")]


def test_opentelemetry_instrument_applies_bucket_overrides_from_env() -> None:
    """RYOT_TELEMETRY_BUCKETS reaches the configurator's Views: latency buckets become 0.5, 1, 2, +Inf."""
    _, s, _ = _run_app(RYOT_TELEMETRY_BUCKETS=json.dumps({"ryot_inference_latency_seconds": [0.5, 1, 2]}))
    lat = "ryot_inference_latency_seconds"
    assert le_values(s, lat + "_bucket", model="toy", batch_size="1", generation_mode="standard") == [
        "0.5",
        "1.0",
        "2.0",
        "+Inf",
    ]
    assert s[(lat + "_bucket", lbl(model="toy", batch_size="1", generation_mode="standard", le="0.5"))] == 4
    ttft = "ryot_ttft_latency_seconds"
    assert le_values(s, ttft + "_bucket", model="toy", prompt_size="medium") == spec_le(ttft)


def test_fastapi_http_metrics_share_our_meter_provider_under_opentelemetry_instrument() -> None:
    """The docs' HTTP recipe: opentelemetry-instrumentation-fastapi's http_server_request_duration_seconds (by
    route, method and status) is on our /metrics next to the ryot_* families, through the configurator's
    Views-bearing MeterProvider (ryot buckets from the Views, HTTP buckets from the instrumentation's advisory)."""
    if not OTEL_INSTRUMENT.exists():
        pytest.skip(f"{OTEL_INSTRUMENT} not found (opentelemetry-instrumentation is not installed in this venv)")
    pytest.importorskip("opentelemetry.instrumentation.fastapi")
    env = _clean_env(
        **RECIPE_ENV,
        OTEL_SERVICE_NAME="http-app",
        OTEL_SEMCONV_STABILITY_OPT_IN="http",  # the stable HTTP conventions: seconds, http.server.request.duration
        RYOT_TELEMETRY_ROUTER_CLASSES="toy_router:ToyRouter",
        PYTHONPATH=str(APPS),
    )
    report, s, text = run_and_scrape([str(OTEL_INSTRUMENT), sys.executable, str(APPS / "fastapi_http_app.py")], env)
    assert report["statuses"] == [200, 200, 200, 404]
    assert "# TYPE http_server_request_duration_seconds histogram" in text
    http = "http_server_request_duration_seconds"
    route = {
        "http_request_method": "POST",
        "http_route": "/v1/chat/completions",
        "network_protocol_version": "1.1",
        "url_scheme": "http",
    }
    assert s[(http + "_count", lbl(**route, http_response_status_code="200"))] == 3
    assert s[(http + "_count", lbl(**route, http_response_status_code="404"))] == 1
    # the stable HTTP conventions' recommended boundaries, advised by the instrumentation (our Views leave it alone)
    assert [float(le) for le in le_values(s, http + "_bucket", **route, http_response_status_code="200")] == [
        *(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
        float("inf"),
    ]
    req = "ryot_inference_requests_total"
    assert s[(req, lbl(model="toy", endpoint="chat_completion", status="success"))] == 3
    # a name the router did not know takes no label slot (SPEC): recorded under __unknown__
    unknown = lbl(model="__unknown__", endpoint="chat_completion", status="error", error_type="model_not_found")
    assert s[(req, unknown)] == 1
    lat = "ryot_inference_latency_seconds"
    assert le_values(s, lat + "_bucket", model="toy", batch_size="1", generation_mode="standard") == spec_le(lat)
    assert [dict(k)["service"] for (n, k) in s if n == "ryot_service_info"] == ["http-app"]


def test_port_in_use_is_reported_once_and_the_app_still_runs() -> None:
    """A taken Prometheus port: the configurator's ConfigurationError is logged once, the app runs untouched."""
    import socket

    if not OTEL_INSTRUMENT.exists():
        pytest.skip(f"{OTEL_INSTRUMENT} not found (opentelemetry-instrumentation is not installed in this venv)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _clean_env(**{**RECIPE_ENV, "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})
        cmd = [str(OTEL_INSTRUMENT), sys.executable, "-c", "print('app ran')"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "app ran\n")
    message = (
        f"ryot-telemetry: metrics not configured: cannot serve /metrics on 127.0.0.1:{port}: Address already in use"
    )
    assert out.stderr.count(message) == 1 and "Traceback" not in out.stderr, out.stderr


def test_configurator_hands_traces_to_the_sdk_and_keeps_its_meter_provider() -> None:
    """OTEL_TRACES_EXPORTER=console: an SDK TracerProvider is set, ryot's MeterProvider stays global, no warning."""
    if not OTEL_INSTRUMENT.exists():
        pytest.skip(f"{OTEL_INSTRUMENT} not found (opentelemetry-instrumentation is not installed in this venv)")
    probe = (
        "from opentelemetry import metrics, trace\n"
        "from ryot_telemetry.distro import telemetry\n"
        "t = telemetry()\n"
        "ours = t is not None and metrics.get_meter_provider() is t.meter_provider\n"
        "print(type(trace.get_tracer_provider()).__name__, ours)\n"
    )
    env = _clean_env(**RECIPE_ENV, OTEL_TRACES_EXPORTER="console")
    cmd = [str(OTEL_INSTRUMENT), sys.executable, "-c", probe]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "TracerProvider True\n"), out.stderr
    assert "Overriding of current MeterProvider" not in out.stderr


# --- a configuration error under opentelemetry-instrument: one line, no traceback, the service runs on -----------

APP_CALLS_THE_ROUTER = (
    "import asyncio\n"
    "from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor\n"
    "from toy_router import ToyRouter\n"
    "r = asyncio.run(ToyRouter().openai_completion({'model': 'toy', 'prompt': 'hi'}))\n"
    "print(r['usage']['prompt_tokens'], FastAPIInstrumentor().is_instrumented_by_opentelemetry)\n"
)


@pytest.mark.parametrize(
    ("variables", "error"),
    [
        ({"RYOT_TELEMETRY_MAX_MODELS": "abc"}, "RYOT_TELEMETRY_MAX_MODELS='abc': expected an integer"),
        (
            {"OTEL_METRICS_EXPORTER": "statsd"},
            "OTEL_METRICS_EXPORTER='statsd': unknown metrics exporter 'statsd'; choose from prometheus, otlp, "
            "console, none",
        ),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "team"},
            "OTEL_RESOURCE_ATTRIBUTES='team': 'team' is not key=value; expected comma-separated key=value pairs such "
            "as service.namespace=shop,deployment.environment=prod (values percent-encoded)",
        ),
        (
            {"RYOT_TELEMETRY_BUCKETS": '{"ryot_inference_requests_total": [1]}'},
            "RYOT_TELEMETRY_BUCKETS: ryot_inference_requests_total is a counter, not a histogram: it has no buckets",
        ),
    ],
    ids=["integer", "exporter", "resource-attributes", "buckets"],
)
@pytest.mark.parametrize("configurator", ["ryot_telemetry", "another"])
def test_a_configuration_error_is_one_line_and_the_service_runs_on(
    variables: dict[str, str], error: str, configurator: str
) -> None:
    """A bad setting under opentelemetry-instrument: stderr is exactly one line naming the variable, with no
    traceback (before: the line, then the loader's 70-line "Instrumenting of ryot_telemetry failed" traceback), the
    app's own router call returns as without telemetry, and the other instrumentors still load. The same when
    another configurator runs and only ryot's instrumentor meets the error."""
    if not OTEL_INSTRUMENT.exists():
        pytest.skip(f"{OTEL_INSTRUMENT} not found (opentelemetry-instrumentation is not installed in this venv)")
    env = _clean_env(**{**RECIPE_ENV, "OTEL_PYTHON_CONFIGURATOR": configurator, "PYTHONPATH": str(APPS), **variables})
    cmd = [str(OTEL_INSTRUMENT), sys.executable, "-c", APP_CALLS_THE_ROUTER]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "12 True\n"), out.stderr
    # The SDK's own lines, there without ryot too: its resource detector (run when the SDK is imported) logs the
    # pair it drops, and the configurator loader says it skipped ours.
    sdk = [
        *(["Invalid key value resource attribute pair team: not enough values to unpack (expected 2, got 1)"]
          if "OTEL_RESOURCE_ATTRIBUTES" in variables else []),
        *(["Configuration of ryot_telemetry not loaded because another is set by OTEL_PYTHON_CONFIGURATOR"]
          if configurator != "ryot_telemetry" else []),
    ]  # fmt: skip
    assert out.stderr.splitlines() == [*sdk, f"ryot-telemetry: metrics not configured: {error}"]
    assert "Traceback" not in out.stderr


def test_an_unknown_variable_is_warned_about_once_under_opentelemetry_instrument() -> None:
    """A misspelt RYOT_TELEMETRY_MAX_MODEL under opentelemetry-instrument: one warning line naming the closest
    known variable; metrics are configured as usual."""
    if not OTEL_INSTRUMENT.exists():
        pytest.skip(f"{OTEL_INSTRUMENT} not found (opentelemetry-instrumentation is not installed in this venv)")
    probe = "from ryot_telemetry.distro import telemetry\nprint(telemetry() is not None)\n"
    env = _clean_env(**RECIPE_ENV, RYOT_TELEMETRY_MAX_MODEL="10")
    out = subprocess.run(
        [str(OTEL_INSTRUMENT), sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout) == (0, "True\n"), out.stderr
    assert out.stderr == (
        "ryot-telemetry: RYOT_TELEMETRY_MAX_MODEL is not a ryot-telemetry variable and is ignored; "
        "did you mean RYOT_TELEMETRY_MAX_MODELS?\n"
    )

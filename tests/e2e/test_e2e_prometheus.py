"""A real Prometheus server scrapes the demo's /metrics on loopback and its query API returns the demo's numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ryot_telemetry import catalogue
from ryot_telemetry.artifacts.slo_rules import WINDOWS
from ryot_telemetry.demo.run import DEMO_SLOS
from ryot_telemetry.slo import SloTable
from support.ports import free_port
from support.procs import stop
from support.prom_server import EVERY_SECOND, Prometheus, needs_prometheus, prometheus_server, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(90),
    needs_prometheus,
]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "collector" / "rules"
REQUESTS = 300


@pytest.fixture(scope="module")
def late_port() -> int:
    """Port of a second scrape target, started by a test after Prometheus began scraping (and failing on) it."""
    return free_port()


@pytest.fixture(scope="module")
def providers_port() -> int:
    """Port of the scrape target of the per-provider test (a router with several upstream providers)."""
    return free_port()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, late_port: int, providers_port: int
) -> Iterator[tuple[Prometheus, dict[str, Any], int]]:
    """Prometheus (1s scrape and rule interval, ryot rules loaded) scraping the demo, which runs 300 requests."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    demo_port = free_port()
    # SLO rules generated, as a user would, for the demo's own SLO table
    table, slo_rules = tmp_path / "demo_slos.json", tmp_path / "slo_rules.yml"
    table.write_text(json.dumps(DEMO_SLOS))
    subprocess.run(
        [sys.executable, "-m", "ryot_telemetry.artifacts.slo_rules", "rules", str(table), "-o", str(slo_rules)],
        check=True,
        timeout=60,
    )
    config = {
        "global": EVERY_SECOND,
        "rule_files": [
            str(RULES / "ryot_recording_rules.yml"),
            str(RULES / "ryot_alerts.yml"),
            str(slo_rules),
        ],
        "scrape_configs": [
            {"job_name": "ryot-demo", "static_configs": [{"targets": [f"127.0.0.1:{demo_port}"]}]},
            {"job_name": "ryot-late", "static_configs": [{"targets": [f"127.0.0.1:{late_port}"]}]},
            {"job_name": "ryot-providers", "static_configs": [{"targets": [f"127.0.0.1:{providers_port}"]}]},
        ],
    }
    demo = None
    with prometheus_server(tmp_path, config) as prom:
        try:
            # The scrape manager picks targets up on a 5 s tick; start the traffic only once the target is scraped
            # (still down: up == 0), so rates see the counters grow.
            wait_for("the first scrape of the target", lambda: prom.query('up{job="ryot-demo"}'), 20)
            summary_path = tmp_path / "summary.json"
            demo = subprocess.Popen(
                [
                    *(
                        sys.executable,
                        "-m",
                        "ryot_telemetry",
                        "demo",
                        "--requests",
                        str(REQUESTS),
                        "--concurrency",
                        "16",
                    ),
                    *("--speed", "0.4", "--seed", "11", "--host", "127.0.0.1", "--port", str(demo_port)),
                    *("--private-registry", "--no-progress", "--hold", "60", "--summary-json", str(summary_path)),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            first = demo.stdout.readline()
            assert first == f"metrics: http://127.0.0.1:{demo_port}/metrics\n"

            def summary_written() -> bool:
                if not summary_path.exists() and demo.poll() is not None:
                    pytest.fail(f"the demo exited with {demo.returncode} before its summary:\n{demo.stdout.read()}")
                return summary_path.exists()

            wait_for("the demo's summary", summary_written, 40)
            text = wait_for(
                "the complete summary",
                lambda: summary_path.read_text().rstrip().endswith("}") and summary_path.read_text(),
                5,
            )
            summary = json.loads(text)
            yield prom, summary, demo_port
        finally:
            if demo is not None:
                stop(demo)


def test_prometheus_sees_exactly_the_demo_traffic(stack: tuple[Prometheus, dict[str, Any], int]) -> None:
    """sum(ryot_inference_requests_total) is the demo's request count; per-status, per-error and token sums match."""
    prom, summary, port = stack
    assert summary["total"] == REQUESTS
    wait_for(
        "Prometheus to scrape all 300 requests",
        lambda: prom.scalar("sum(ryot_inference_requests_total)") == REQUESTS,
        15,
    )
    assert prom.by('up{job="ryot-demo"}', "instance") == {f"127.0.0.1:{port}": 1.0}
    assert prom.scalar('sum(ryot_inference_requests_total{job="ryot-demo"})') == REQUESTS
    expected_status = {k: float(v) for k, v in summary["requests"].items() if v}
    assert prom.by("sum by (status) (ryot_inference_requests_total)", "status") == expected_status
    expected_errors = {k: float(v) for k, v in summary["errors"].items() if v}
    assert prom.by("sum by (error_type) (ryot_inference_errors_total)", "error_type") == expected_errors
    assert prom.scalar('sum(ryot_tokens_generated_total{token_type="completion"})') == summary["completion_tokens"]
    # In-flight gauge is back to zero once the traffic is over.
    assert prom.scalar("sum(ryot_active_inference_requests)") == 0


def test_ttft_buckets_and_quantile(stack: tuple[Prometheus, dict[str, Any], int]) -> None:
    """TTFT buckets are the catalogue's; histogram_quantile(0.95) equals the demo's p95 and lies in its bucket."""
    prom, summary, _ = stack
    wait_for("all requests scraped", lambda: prom.scalar("sum(ryot_inference_requests_total)") == REQUESTS, 15)
    cumulative = prom.by("sum by (le) (ryot_ttft_latency_seconds_bucket)", "le")
    bounds = [*catalogue.get("ryot.ttft.latency").buckets, float("inf")]
    assert sorted(float(le) for le in cumulative) == bounds
    counts = [cumulative[le] for le in sorted(cumulative, key=float)]
    total = counts[-1]
    assert total == prom.scalar("sum(ryot_ttft_latency_seconds_count)") > 0
    p95 = prom.scalar("histogram_quantile(0.95, sum by (le) (ryot_ttft_latency_seconds_bucket))")
    assert round(p95, 4) == summary["ttft_p95_seconds"]
    i = next(i for i, c in enumerate(counts) if c >= 0.95 * total)
    lower = bounds[i - 1] if i else 0.0
    assert lower < p95 <= bounds[i]
    p50 = prom.scalar("histogram_quantile(0.5, sum by (le) (ryot_inference_latency_seconds_bucket))")
    assert round(p50, 4) == summary["latency_p50_seconds"]


def test_recording_rules_evaluate_on_real_data(stack: tuple[Prometheus, dict[str, Any], int]) -> None:
    """Every rule evaluates without error; ryot:batch_size:avg:5m equals its expression at the rule's own timestamp."""
    prom, _, _ = stack
    wait_for("all requests scraped", lambda: prom.scalar("sum(ryot_inference_requests_total)") == REQUESTS, 15)
    time.sleep(2.5)  # two more scrape and rule cycles after the last increase, so the rule saw the final counters
    stored = prom.query("ryot:batch_size:avg:5m[3s]")
    models = {"llama-3.1-8b-instruct", "mistral-7b-instruct"}
    assert {r["metric"]["model"] for r in stored} == models
    finite = 0
    for r in stored:
        at, value = r["values"][-1][0], float(r["values"][-1][1])
        model = r["metric"]["model"]
        if math.isnan(value):
            # 0/0: every batch series of this model was first scraped after its last increase, so rate() had
            # nothing to go on in the window (seen once on a loaded machine). Prometheus semantics, not a rule bug.
            continue
        finite += 1
        (direct,) = prom.query(
            f'sum(rate(ryot_batch_size_distribution_sum{{model="{model}",request_type!="engine_step"}}[5m]))'
            f' / sum(rate(ryot_batch_size_distribution_count{{model="{model}",request_type!="engine_step"}}[5m]))',
            at=at,
        )
        assert float(direct["value"][1]) == value
        # the demo sends single requests and batches of 2, 4, 8 or 16 prompts
        assert 1 < value < 16
    assert finite >= 1, "no model's average batch size could be computed"
    ratio = prom.by("ryot:error_rate:rate5m", "model")
    assert set(ratio) == models and all(0 <= v <= 1 for v in ratio.values())
    p95 = prom.by("ryot:ttft_latency:p95:5m", "model")
    assert set(p95) == models and all(0 < v <= 2.5 for v in p95.values())
    groups = prom.get("/api/v1/rules")["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]}
    assert len(health) == 27 + 18  # 15 recording rules, 12 alerts, + the generated SLO rules: 16 recording, 2 alerts
    assert {name: h for name, h in health.items() if h != ("ok", "")} == {}


def test_slo_goodput_and_burn_rate_rules_match_the_demo_summary(stack: tuple[Prometheus, dict[str, Any], int]) -> None:
    """ryot_slo_requests_total sums to the demo's met/missed counts exactly; the generated goodput, error-ratio and
    burn-rate rules give the summary's goodput (within rate() extrapolation) and burn = error ratio / (1 - target)."""
    prom, summary, _ = stack
    slo = summary["slo"]
    assert slo["table"] == SloTable(DEMO_SLOS).as_dict()
    judged = slo["met"] + sum(slo["missed"].values())
    req = summary["requests"]
    # every success is met or missed on latency/ttft/tpot; errors and timeouts are missed with objective=error,
    # as are streams broken by an error (partial); streams the client abandoned (partial too) are in neither
    assert slo["met"] + sum(v for k, v in slo["missed"].items() if k != "error") == req["success"]
    assert req["error"] + req["timeout"] <= slo["missed"]["error"] <= req["error"] + req["timeout"] + req["partial"]
    wait_for("all SLO verdicts scraped", lambda: prom.scalar("sum(ryot_slo_requests_total)") == judged, 15)
    assert prom.by("sum by (result) (ryot_slo_requests_total)", "result") == {
        k: float(v) for k, v in (("met", slo["met"]), ("missed", judged - slo["met"])) if v
    }
    assert prom.by('sum by (objective) (ryot_slo_requests_total{result="missed"})', "objective") == {
        k: float(v) for k, v in slo["missed"].items()
    }
    time.sleep(2.5)  # two more rule cycles after the last increase
    models = {"llama-3.1-8b-instruct", "mistral-7b-instruct"}
    assert prom.by("ryot:slo:target", "model") == dict.fromkeys(models, 0.95)
    total = prom.by("sum by (model) (ryot_slo_requests_total)", "model")
    met = prom.by('sum by (model) (ryot_slo_requests_total{result="met"})', "model")
    goodput = prom.by("ryot:slo_goodput:ratio_rate5m", "model")
    assert set(goodput) == models
    for model in models:
        # rate() extrapolates each series a little differently; the ratio stays within 2 points of the counts
        assert abs(goodput[model] - met.get(model, 0.0) / total[model]) < 0.02, (model, goodput, met, total)
    assert abs(sum(goodput[m] * total[m] for m in models) / judged - slo["goodput"]) < 0.02
    for window in WINDOWS:  # the whole run lies inside every window: each gives about the same ratio
        errors = prom.by(f"ryot:slo_errors:ratio_rate{window}", "model")
        burn = prom.by(f"ryot:slo_burn_rate:rate{window}", "model")
        assert set(errors) == set(burn) == models, window
        for model in models:
            assert abs(errors[model] - (1 - goodput[model])) < 0.02, (window, model, errors, goodput)
            assert burn[model] == pytest.approx(errors[model] / 0.05, rel=1e-9), (window, model)


def test_first_requests_of_a_new_model_count_in_increase(
    stack: tuple[Prometheus, dict[str, Any], int], late_port: int
) -> None:
    """A model whose first 3 requests arrive after scraping began shows increase() of 3, not 0: its series is
    scraped at 0 before the 3 (the OTel exporter writes no _created series for Prometheus to start from)."""
    from ryot_telemetry import configure

    prom, _, _ = stack
    tel = configure(
        exporters="prometheus", prometheus_host="127.0.0.1", prometheus_port=late_port, prometheus_registry="private"
    )
    try:
        up = 'up{job="ryot-late"}'
        wait_for("two successful scrapes", lambda: (prom.scalar(f"sum_over_time({up}[1m])") or 0) >= 2, 15)
        rec = tel.recorder
        for _ in range(3):
            req = rec.start("late-model", "chat_completion", "standard")
            req.prompt_tokens, req.completion_tokens = 100, 20
            req.success(rec)
        total = 'sum(ryot_inference_requests_total{job="ryot-late",model="late-model"})'
        wait_for("the 3 requests scraped", lambda: prom.scalar(total) == 3, 15)
        # A few more samples: the shorter the span of the samples, the more increase() extrapolates beyond it.
        samples = 'count_over_time(ryot_inference_requests_total{job="ryot-late",model="late-model"}[1m])'
        wait_for("6 samples of the new series", lambda: (prom.scalar(samples) or 0) >= 6, 20)
        assert prom.scalar(f"min_over_time({total}[1m:1s])") == 0  # the series was scraped at 0 first
        late = 'job="ryot-late",model="late-model"'
        increase = prom.scalar(f"sum(increase(ryot_inference_requests_total{{{late}}}[1m]))")
        tokens = prom.scalar(f'sum(increase(ryot_tokens_generated_total{{{late},token_type="completion"}}[1m]))')
    finally:
        tel.shutdown()
    # increase() extrapolates from the samples' span (a few seconds) towards the window's end, by at most 1.1 scrape
    # intervals, and never below the zero the series started from: 3, or a little more; 0 without the zero sample.
    assert increase is not None and 3 <= increase < 4.5
    assert tokens is not None and 60 <= tokens < 90


def test_per_provider_rules_join_model_info_on_real_scrapes(
    stack: tuple[Prometheus, dict[str, Any], int], providers_port: int
) -> None:
    """A router whose models sit with two providers (configure(provider=...)) fails with the openai client's real
    exceptions; Prometheus' per-provider rules give each provider's exact error ratios by type, and the three
    provider alerts go pending for the right providers."""
    import asyncio
    import contextlib

    import httpx
    import openai

    from ryot_telemetry import configure
    from support.fakes import ChatParams, Completion

    request = httpx.Request("POST", "http://upstream.invalid/v1/chat/completions")
    failures: dict[str, list[BaseException | None]] = {
        "a": [
            None,
            None,
            openai.RateLimitError("429", response=httpx.Response(429, request=request), body=None),
            openai.AuthenticationError("401", response=httpx.Response(401, request=request), body=None),
        ],
        "b": [None, None, openai.APIConnectionError(request=request), openai.APIConnectionError(request=request)],
    }

    class Router:
        async def openai_chat_completion(self, params: Any) -> Any:
            exc = failures[params.model].pop()
            if exc is not None:
                raise exc
            return Completion()

    prom, _, _ = stack
    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=providers_port,
        prometheus_registry="private",
        provider={"a": {"provider": "openai", "provider_type": "remote::openai"}, "b": "vllm"},
    )
    try:
        up = 'up{job="ryot-providers"}'
        wait_for("two successful scrapes", lambda: (prom.scalar(f"sum_over_time({up}[1m])") or 0) >= 2, 15)
        router = tel.instrument_router(Router())

        async def traffic() -> None:
            for model in ("a", "b"):
                for _ in range(4):
                    with contextlib.suppress(openai.OpenAIError):
                        await router.openai_chat_completion(ChatParams(model=model))

        asyncio.run(traffic())
        total = 'sum(ryot_inference_requests_total{job="ryot-providers"})'
        wait_for("the 8 requests scraped", lambda: prom.scalar(total) == 8, 15)
        info = prom.query('ryot_model_info{job="ryot-providers"}')
        assert sorted((r["metric"]["model"], r["metric"]["provider"], r["metric"]["provider_type"]) for r in info) == [
            ("a", "openai", "remote::openai"),
            ("b", "vllm", "unknown"),
        ]
        ratio = 'ryot:provider_errors:ratio_rate5m{provider=~"openai|vllm"}'  # the demo's models show "unknown"
        wait_for("the per-provider ratios", lambda: len(prom.query(ratio)) == 3, 15)
        got = {(r["metric"]["provider"], r["metric"]["error_type"]): float(r["value"][1]) for r in prom.query(ratio)}
        # every series of the run was created in one drain and scraped at the same instants: rate() extrapolates
        # them alike, so the ratios are the counts' ratios
        assert got == pytest.approx(
            {("openai", "rate_limited"): 0.25, ("openai", "unauthorized"): 0.25, ("vllm", "unavailable"): 0.5},
            rel=1e-9,
        )
        pending = 'ALERTS{alertname=~"RyotProvider.*",alertstate="pending",provider=~"openai|vllm"}'
        wait_for("the provider alerts pending", lambda: len(prom.query(pending)) == 3, 15)
        assert sorted((r["metric"]["alertname"], r["metric"]["provider"]) for r in prom.query(pending)) == [
            ("RyotProviderRateLimited", "openai"),
            ("RyotProviderUnauthorized", "openai"),
            ("RyotProviderUnavailable", "vllm"),
        ]
    finally:
        tel.shutdown()

"""A real engine end to end: llama.cpp's llama-server running SmolLM2-135M behind the real ogx server (ryot loaded
by ``opentelemetry-instrument``), driven by the official openai client, with a Prometheus scraping both. ryot's
numbers are held against llama-server's own /metrics and against what the client saw.

The stack and the 27 requests are ``examples/real_stack/stack.py``'s. ``scripts/setup.d/llama_cpp.sh`` builds
llama-server and fetches the model; where it could not, these tests skip with its reason, except under CI=true,
where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("real_stack_example", ROOT / "examples" / "real_stack" / "stack.py")
assert _spec is not None and _spec.loader is not None
stack: Any = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = stack  # its dataclasses look their module up
_spec.loader.exec_module(stack)
total = stack.total
MODEL = stack.MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.real_engine, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def run() -> Any:
    """One stack, one run of the traffic, every ryot scrape it took; Prometheus queried at the end."""
    try:
        stack.engine_paths()
    except stack.Unavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real-engine tier must run in CI: {exc}")
        pytest.skip(str(exc))
    with stack.running(prometheus=True) as s:
        r = stack.drive(s, scrape_streams=True)
        stack.wait_for_scrape(s)
        r.prometheus = {name: s.query(q) for name, q in stack.PROMQL.items()}
    return r


def _of(r: Any, kind: str) -> list[Any]:
    return [s for s in r.sent if s.kind == kind]


def test_requests_by_status_are_exact_and_in_flight_is_back_to_zero(run: Any) -> None:
    """20 chat and 2 completion answers are successes, the 4 hang-ups partial, the unknown model one
    model_not_found under __unknown__; nothing else; in-flight 0 on every series."""
    ryot, _ = run.end
    req = "ryot_inference_requests_total"
    found = {labels: v for (name, labels), v in ryot.items() if name == req}
    assert found == {
        frozenset({("model", MODEL), ("endpoint", "chat_completion"), ("status", "success")}): 20,
        frozenset({("model", MODEL), ("endpoint", "completion"), ("status", "success")}): 2,
        frozenset({("model", MODEL), ("endpoint", "chat_completion"), ("status", "partial")}): 4,
        frozenset(
            {("model", "__unknown__"), ("endpoint", "chat_completion"), ("status", "error"),
             ("error_type", "model_not_found")}
        ): 1,
    }  # fmt: skip
    assert _of(run, "unknown_model")[0].error == "NotFoundError"
    active = [v for (name, _), v in ryot.items() if name == "ryot_active_inference_requests"]
    assert active and set(active) == {0}


def test_completion_tokens_reconcile_with_the_engine(run: Any) -> None:
    """Before the hang-ups, usage completion tokens equal llamacpp:tokens_predicted_total exactly. The hang-ups add
    no usage; their estimate is exactly the 3 content chunks each delivered, and llama-server generated at most 2
    more per stream (one in flight when the connection closed, one its decode loop had already begun)."""
    ryot0, engine0 = run.before_abandoned
    ryot, engine = run.end
    usage_completion = total(ryot0, "ryot_tokens_generated_total", token_type="completion")
    assert usage_completion == total(engine0, "llamacpp:tokens_predicted_total")
    answers = [s.usage for s in run.sent if s.kind in ("chat", "completion")]
    standard = total(ryot0, "ryot_tokens_generated_total", token_type="completion", generation_mode="standard")
    assert standard == sum(u["completion_tokens"] for u in answers)
    assert total(ryot, "ryot_tokens_generated_total", token_type="completion") == usage_completion
    hung_up = _of(run, "abandoned")
    estimated = total(ryot, "ryot_estimated_tokens_total", token_type="completion")
    assert estimated == sum(s.content_chunks for s in hung_up) == 3 * len(hung_up)
    gap = total(engine, "llamacpp:tokens_predicted_total") - (usage_completion + estimated)
    generated = [
        total(a, "llamacpp:tokens_predicted_total") - total(b, "llamacpp:tokens_predicted_total")
        for b, a in zip(run.engine_scrapes[-5:], run.engine_scrapes[-4:])
    ]  # per hung-up stream, for the message
    assert 0 <= gap <= 2 * len(hung_up), f"tokens the engine generated per hung-up stream: {generated}"
    prompt_estimate = total(ryot, "ryot_estimated_tokens_total", token_type="prompt")
    assert prompt_estimate == sum((len(stack.SYSTEM) + len(f"{stack.STORY} ({i})")) // 4 for i in range(4))


def test_length_histograms_reconcile_with_the_engine(run: Any) -> None:
    """Before the hang-ups: the completion-length histogram sums to llamacpp:tokens_predicted_total and the
    prompt-length histogram to the usage prompt tokens; each holds one observation per successful request (every one
    reported usage), and its +Inf bucket equals its count."""
    ryot0, engine0 = run.before_abandoned
    successes = total(ryot0, "ryot_inference_requests_total", status="success")
    assert successes == 22
    for family, tokens in (
        ("ryot_request_completion_tokens", total(engine0, "llamacpp:tokens_predicted_total")),
        ("ryot_request_prompt_tokens", total(ryot0, "ryot_tokens_generated_total", token_type="prompt")),
    ):
        assert total(ryot0, f"{family}_sum", model=MODEL) == tokens
        assert total(ryot0, f"{family}_count", model=MODEL) == successes
        assert total(ryot0, f"{family}_bucket", model=MODEL, le="+Inf") == successes


def test_cached_and_evaluated_prompt_tokens_reconcile_with_the_engine(run: Any) -> None:
    """Before the hang-ups: ryot's cached prompt tokens equal llamacpp:prompt_tokens_cached_total, and usage prompt
    tokens minus cached equal llamacpp:prompt_tokens_total (which counts evaluated tokens only). The shared system
    prompt makes most prompt tokens cache hits."""
    ryot0, engine0 = run.before_abandoned
    cached = total(ryot0, "ryot_cached_prompt_tokens_total")
    prompt = total(ryot0, "ryot_tokens_generated_total", token_type="prompt")
    assert cached == total(engine0, "llamacpp:prompt_tokens_cached_total")
    assert prompt - cached == total(engine0, "llamacpp:prompt_tokens_total")
    assert 0.5 < cached / prompt < 1
    seen = [s.usage for s in run.sent if s.usage and s.kind in ("chat", "completion")]
    expected = sum(u["prompt_tokens_details"]["cached_tokens"] for u in seen)
    assert total(ryot0, "ryot_cached_prompt_tokens_total", generation_mode="standard") == expected


def test_finish_reasons_equal_what_the_client_saw(run: Any) -> None:
    """Every answer's finish_reason as the client saw it (stop, length), and abort for each hang-up."""
    ryot, _ = run.end
    seen = Counter(r for s in run.sent for r in s.finish) + Counter({"abort": len(_of(run, "abandoned"))})
    counted = Counter()
    for (name, labels), v in ryot.items():
        if name == "ryot_finish_reasons_total":
            counted[dict(labels)["finish_reason"]] += int(v)
    assert counted == seen
    assert seen["length"] > 0 and seen["stop"] > 0  # max_tokens cut some answers off


def test_one_ttft_per_stream_between_the_engine_prefill_and_the_client(run: Any) -> None:
    """One TTFT per stream that delivered content (16). Each stream's TTFT (the difference of two scrapes) is at most
    what the client measured and at least the engine's prefill; outside-the-engine time is their difference."""
    ryot, _ = run.end
    streams = [s for s in run.sent if s.kind in ("stream", "stream_usage", "abandoned")]
    assert total(ryot, "ryot_ttft_latency_seconds_count") == len(streams) == 16
    assert all(s.ttft is not None for s in streams)
    scrapes = run.stream_scrapes
    assert len(scrapes) == len(streams) + 1
    for s, before, after in zip(streams, scrapes, scrapes[1:]):

        def delta(name: str, b: Any = before, a: Any = after) -> float:
            return total(a, name) - total(b, name)

        assert delta("ryot_ttft_latency_seconds_count") == 1
        ttft = delta("ryot_ttft_latency_seconds_sum")
        assert 0 < ttft <= s.ttft
        if s.kind == "abandoned":  # no usage chunk, no timings: nothing is said about the engine
            assert delta("ryot_engine_prefill_seconds_count") == 0
            continue
        assert delta("ryot_engine_prefill_seconds_count") == 1
        prefill = delta("ryot_engine_prefill_seconds_sum")
        assert prefill <= ttft
        assert delta("ryot_ttft_outside_engine_seconds_sum") == pytest.approx(ttft - prefill, abs=1e-9)
        if s.timings is not None:  # the client asked for usage, so it saw the same timings
            assert prefill == pytest.approx(s.timings["prompt_ms"] / 1000, abs=1e-12)


def test_engine_timings_reconcile_with_the_engine_counters(run: Any) -> None:
    """Before the hang-ups, all 22 answers reported timings: ryot's prefill sum is llamacpp:prompt_seconds_total
    within 2% (the engine times prompt batches, ryot sums each request's prompt_ms), and one engine TPOT per answer
    of two or more tokens."""
    ryot0, engine0 = run.before_abandoned
    assert total(ryot0, "ryot_engine_prefill_seconds_count") == 22
    engine_prefill = total(engine0, "llamacpp:prompt_seconds_total")
    assert total(ryot0, "ryot_engine_prefill_seconds_sum") == pytest.approx(engine_prefill, rel=0.02)
    multi = sum(1 for s in run.sent if s.usage and s.usage["completion_tokens"] >= 2)
    assert total(ryot0, "ryot_engine_time_per_output_token_seconds_count") >= multi


def test_prometheus_scraping_both_sides_sees_the_same_reconciliation(run: Any) -> None:
    """The docs' PromQL, run by the stack's Prometheus (the shipped rules loaded): the same totals as the scrapes."""
    ryot, engine = run.end
    p = run.prometheus
    usage = total(ryot, "ryot_tokens_generated_total", token_type="completion")
    estimated = total(ryot, "ryot_estimated_tokens_total", token_type="completion")
    assert p["completion tokens, ryot (usage + estimated)"] == usage + estimated
    assert p["completion tokens, engine"] == total(engine, "llamacpp:tokens_predicted_total")
    assert p["cached prompt tokens, ryot"] == total(ryot, "ryot_cached_prompt_tokens_total")
    assert p["cached prompt tokens, engine"] == total(engine, "llamacpp:prompt_tokens_cached_total")
    assert p["mean TTFT, seconds"] == pytest.approx(
        total(ryot, "ryot_ttft_latency_seconds_sum") / total(ryot, "ryot_ttft_latency_seconds_count")
    )
    assert 0 < p["mean time outside the engine, seconds"] < p["mean TTFT, seconds"]


def test_the_example_prints_the_reconciliation(run: Any) -> None:
    """``examples/real_stack/stack.py --no-prometheus`` brings the stack up, sends the traffic and prints the table:
    the same rows as this run's, every exact one equal on both sides (the traffic is deterministic)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "real_stack" / "stack.py"), "--no-prometheus"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    printed = {}
    for line in out.stdout.splitlines():
        m = re.match(r"(\S.*?)\s{2,}(\S+)\s+(\S+)(?:\s{2}.*)?$", line)
        if m and m.group(2) != "ryot":
            printed[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    assert list(printed) == [row[0] for row in stack.reconcile(run)]
    approximate = {"completion tokens + estimated", "engine prefill seconds"}  # bounded and 2%, as above
    for name, (ours, theirs) in printed.items():
        if name not in approximate:
            assert ours == theirs, name
    assert printed["requests, success"] == (22, 22) and printed["finish_reason=abort"] == (4, 4)


def test_model_info_names_the_llama_cpp_provider(run: Any) -> None:
    """ryot_model_info: the model that served is the one the run configuration registered with the llama.cpp
    provider (its id, type and model id), read from ogx's routing table; the unknown model has no slot, no info."""
    ryot, _ = run.end
    info = {labels: v for (name, labels), v in ryot.items() if name == "ryot_model_info"}
    assert info == {
        frozenset(
            {("model", MODEL), ("provider", "llama-cpp"), ("provider_type", "remote::llama-cpp-server"),
             ("provider_model_id", "smollm2")}
        ): 1,
    }  # fmt: skip

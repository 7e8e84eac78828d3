"""The demo (the main job) runs end to end on its embedded simulated model and reports from the histograms."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest

from ryot_telemetry.cli import main
from ryot_telemetry.demo.run import histogram_quantile


def test_histogram_quantile_interpolates_like_promql() -> None:
    """p50 of 10 observations in (0.1, 0.25] and 10 in (0.25, 0.5] is the top of the first bucket."""
    assert histogram_quantile(0.5, [0.1, 0.25, 0.5], [0, 10, 10, 0]) == pytest.approx(0.25)
    assert histogram_quantile(0.75, [0.1, 0.25, 0.5], [0, 10, 10, 0]) == pytest.approx(0.375)
    assert histogram_quantile(0.99, [1.0, 2.0], [0, 0, 5]) == 2.0  # +Inf bucket: highest finite bound
    assert histogram_quantile(0.5, [1.0], [0, 0]) is None


def test_demo_in_process_counts_every_request(tmp_path) -> None:
    """100 requests at speed 0: the summary accounts for all 100 across statuses."""
    out = tmp_path / "summary.json"
    rc = main(
        [
            "demo",
            "--requests",
            "100",
            "--speed",
            "0",
            "--port",
            "0",
            "--private-registry",
            "--no-progress",
            "--summary-json",
            str(out),
            "--error-rate",
            "0.1",
        ]
    )
    assert rc == 0
    s = json.loads(out.read_text())
    assert s["total"] == 100
    assert sum(s["requests"].values()) == 100
    assert s["requests"]["error"] + s["requests"]["timeout"] + s["requests"]["partial"] > 0
    assert s["completion_tokens"] > 0 and s["latency_p50_seconds"] is not None
    # every success is judged met or missed on a latency objective; failures are missed with objective=error
    slo = s["slo"]
    assert slo["table"] == {"*": {"ttft": 0.2, "tpot": 0.025, "latency": 1.5, "target": 0.95}}
    assert slo["met"] + sum(v for k, v in slo["missed"].items() if k != "error") == s["requests"]["success"]
    assert slo["missed"]["error"] >= s["requests"]["error"] + s["requests"]["timeout"]
    assert slo["goodput"] == round(slo["met"] / (slo["met"] + sum(slo["missed"].values())), 4)


def test_demo_takes_an_slo_table_file(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """--slos replaces the embedded table; the summary prints it and the goodput."""
    table = tmp_path / "slos.json"
    table.write_text(json.dumps({"llama-3.1-8b-instruct": {"latency": 60, "target": 0.9}}))
    args = ["demo", "--requests", "20", "--speed", "0", "--exporters", "none", "--no-progress"]
    assert main([*args, "--error-rate", "0", "--timeout-rate", "0", "--slos", str(table)]) == 0
    out = capsys.readouterr().out
    assert '  SLO table       {"llama-3.1-8b-instruct": {"latency": 60.0, "target": 0.9}}' in out
    assert "  goodput         100.0%  met=" in out and "missed: none" in out


def test_demo_module_entry_point_prints_summary() -> None:
    """`python -m ryot_telemetry demo` prints the metrics URL and the summary, and exits 0."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ryot_telemetry",
            "demo",
            "--requests",
            "30",
            "--speed",
            "0",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "metrics: http://127.0.0.1:" in proc.stdout
    assert "requests        30" in proc.stdout


def test_demo_bad_port_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An out-of-range port exits 2 with one line."""
    assert main(["demo", "--port", "70000", "--no-progress"]) == 2
    assert "prometheus_port must be 0-65535, got 70000" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not found (Debian package `prometheus`)")
def test_demo_exposition_passes_promtool_check_metrics() -> None:
    """`promtool check metrics` (the lint operators run on exporters in CI) exits 0 on the demo's /metrics."""
    demo = subprocess.Popen(
        [
            *(sys.executable, "-m", "ryot_telemetry", "demo", "--requests", "60", "--speed", "0"),
            *("--host", "127.0.0.1", "--port", "0", "--no-progress", "--hold", "30"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        url = demo.stdout.readline().removeprefix("metrics: ").strip()
        assert url.startswith("http://127.0.0.1:"), url
        assert "requests        60" in "".join(demo.stdout.readline() for _ in range(3))  # traffic done
        text = urllib.request.urlopen(url, timeout=10).read()
    finally:
        demo.terminate()
        demo.wait(timeout=10)
    assert b"ryot_inference_requests_total{" in text and b"ryot_sliding_tokens_per_second{" in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")


def test_old_cli_module_is_a_deprecated_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ryot_telemetry.demo.cli`` (the entry point's module before the move) still imports, warning once with the
    new paths, and its names are the new modules' objects."""
    import importlib

    import ryot_telemetry.cli
    import ryot_telemetry.demo.run

    monkeypatch.delitem(sys.modules, "ryot_telemetry.demo.cli", raising=False)
    with pytest.warns(DeprecationWarning) as caught:
        old = importlib.import_module("ryot_telemetry.demo.cli")
    assert [str(w.message) for w in caught] == [
        "ryot_telemetry.demo.cli is deprecated: use ryot_telemetry.cli (the command line) and ryot_telemetry.demo.run "
        "(the demo's runner)"
    ]
    assert old.main is ryot_telemetry.cli.main and old.DEMO_SLOS is ryot_telemetry.demo.run.DEMO_SLOS
    assert old.histogram_quantile is ryot_telemetry.demo.run.histogram_quantile


def _dashboard_families() -> set[str]:
    """The catalogue names of every family a dashboard query reads (histograms by their _bucket/_sum/_count)."""
    import re

    from ryot_telemetry import catalogue
    from ryot_telemetry.artifacts.dashboard import build_dashboard

    exprs = [t["expr"] for p in build_dashboard()["panels"] for t in p.get("targets", ())]
    names = {n for e in exprs for n in re.findall(r"(?<![\w:])ryot_[a-z_]+", e)}
    by_prom = catalogue.BY_PROMETHEUS_NAME
    return {(by_prom.get(re.sub(r"_(bucket|sum|count)$", "", n)) or by_prom[n]).name for n in names}


def _needs_gpu(name: str) -> bool:
    """NVML gauges (source gpu) and what is derived from them (the per-percent-of-GPU-memory token efficiency)."""
    from ryot_telemetry import catalogue

    spec = catalogue.get(name)
    return spec.source == "gpu" or "GPU memory" in spec.description


def test_demo_fills_every_dashboard_family_but_the_gpu_ones(tmp_path) -> None:
    """After a demo run /metrics has a series of every family the dashboard queries except the GPU-fed ones
    (engine prefill and decode time, queue depth and cost included); the summary prints the cost, equal to the
    exposed cost counters, and says that no GPU was found."""
    from prometheus_client.parser import text_string_to_metric_families

    from ryot_telemetry import catalogue

    summary_path = tmp_path / "summary.json"
    demo = subprocess.Popen(
        [
            *(sys.executable, "-m", "ryot_telemetry", "demo", "--requests", "120", "--speed", "0.05", "--seed", "3"),
            *("--host", "127.0.0.1", "--port", "0", "--no-progress", "--hold", "30", "--private-registry"),
            *("--summary-json", str(summary_path)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RYOT_TELEMETRY_GPU": "false"},
    )
    try:
        assert demo.stdout is not None
        url = demo.stdout.readline().removeprefix("metrics: ").strip()
        assert url.startswith("http://127.0.0.1:"), url
        printed = []
        for _ in range(20):  # the summary, then the "serving ..." line; the demo has already stopped its traffic
            printed.append(demo.stdout.readline())
            if printed[-1].startswith("serving ") or not printed[-1]:
                break
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    finally:
        demo.terminate()
        demo.wait(timeout=10)
    exposed = {f.name: f for f in text_string_to_metric_families(text) if f.samples}
    wanted = _dashboard_families()
    gpu = {n for n in wanted if _needs_gpu(n)}
    assert gpu == {
        "ryot.gpu.memory.percentage",
        "ryot.gpu.memory.usage",
        "ryot.gpu.utilization",
        "ryot.gpu.power",
        "ryot.gpu.temperature",
        "ryot.token.efficiency_ratio",
    }
    # the text parser names counters without _total, and a histogram family by its base name
    missing = sorted(n for n in wanted - gpu if catalogue.get(n).prometheus_name.removesuffix("_total") not in exposed)
    assert missing == []
    summary = json.loads(summary_path.read_text())
    cost = {}
    for s in exposed["ryot_token_cost_estimate_usd"].samples:
        cost[s.labels["model"]] = cost.get(s.labels["model"], 0.0) + s.value
    assert set(cost) == {"llama-3.1-8b-instruct", "mistral-7b-instruct"}
    assert summary["cost_usd"] == {m: round(v, 6) for m, v in sorted(cost.items())}
    assert all(v > 0 for v in cost.values())
    lines = "".join(printed)
    by_model = "  ".join(f"{m}=${v:.4f}" for m, v in summary["cost_usd"].items())
    assert f"  cost            ${sum(summary['cost_usd'].values()):.4f} estimated  {by_model}\n" in lines
    assert "  GPU             no GPU found (or RYOT_TELEMETRY_GPU=false): the dashboard's GPU panels stay empty\n" in (
        lines
    )
    assert summary["gpu_devices"] == []


def test_every_gpu_fed_dashboard_panel_says_when_it_stays_empty() -> None:
    """Each dashboard panel whose queries read a GPU-fed family (and only those) says in its description that it
    is empty when no GPU was found."""
    import re

    from ryot_telemetry import catalogue
    from ryot_telemetry.artifacts.dashboard import build_dashboard

    note = "Empty when no GPU was found (no NVML device, e.g. the demo on a laptop) or RYOT_TELEMETRY_GPU=false."
    panels = [p for p in build_dashboard()["panels"] if p["type"] != "row"]

    def reads_gpu(panel: dict) -> bool:
        names = {n for t in panel["targets"] for n in re.findall(r"(?<![\w:])ryot_[a-z_]+", t["expr"])}
        by_prom = catalogue.BY_PROMETHEUS_NAME
        specs = {by_prom.get(re.sub(r"_(bucket|sum|count)$", "", n)) or by_prom[n] for n in names}
        return any(_needs_gpu(spec.name) for spec in specs)

    noted = [p["title"] for p in panels if p["description"].endswith(" " + note)]
    assert noted == [p["title"] for p in panels if reads_gpu(p)]
    assert noted == [
        "Token efficiency",
        "GPU memory used (%)",
        "GPU memory (bytes)",
        "GPU utilisation (%)",
        "GPU power",
        "GPU temperature",
    ]


def test_simulated_engine_queues_past_its_slots_and_reports_through_engine_metrics(cap) -> None:
    """With 2 slots, 5 concurrent requests run 2 and queue 3; the queue gauge reads the router's queue at each
    collection (3 mid-run, 0 after); model loads, start-up phases and the reserved KV cache are recorded once."""
    import asyncio

    from ryot_telemetry.demo.simulate import CONTEXT_LENGTH, KV_BYTES_PER_TOKEN, SimulatedEngine, SimulatedRouter

    router = SimulatedRouter(speed=0.5, seed=1, error_rate=0, timeout_rate=0, slots=2, models=("m",))
    SimulatedEngine(router, cap.engine).start()
    depth = {"model": "m", "priority_level": "normal"}
    seen = {}

    async def run() -> None:
        calls = [router.openai_chat_completion({"model": "m", "messages": [{"content": "hi"}]}) for _ in range(5)]
        tasks = [asyncio.ensure_future(c) for c in calls]
        for _ in range(5):
            await asyncio.sleep(0)
        seen["mid"] = (dict(router.waiting), dict(router.running), cap.collect().value("ryot.queue.depth", **depth))
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert seen["mid"] == ({"m": 3}, {"m": 2}, 3)
    assert (router.waiting, router.running) == ({"m": 0}, {"m": 0})
    cap.collect()
    assert cap.value("ryot.queue.depth", **depth) == 0
    kv = {"model": "m", "context_length": str(CONTEXT_LENGTH), "batch_size": "2-4"}
    assert cap.value("ryot.kv_cache.size", **kv) == 2 * CONTEXT_LENGTH * KV_BYTES_PER_TOKEN
    assert cap.value("ryot.model.load_attempts", model="m", result="success", load_type="cold") == 1
    loads = cap.histogram("ryot.model.loading_time", model="m", load_type="cold_start", device_type="cpu")
    assert loads is not None and (loads.count, loads.sum) == (1, 4.0)
    phases = {p.attributes["startup_phase"]: p.sum for p in cap.points("ryot.initialization.startup_time")}
    assert phases == {"model_load": 4.0, "cache_init": 0.3, "warmup": 0.8, "ready": 0.05}


def test_demo_router_reports_llama_cpp_timings_the_recorder_reads(cap) -> None:
    """demo_router puts llama.cpp timings on answers and on the last chunk of streams (the usage chunk when asked
    for): every success records one engine prefill, and streams and answers of 2+ tokens an engine decode time."""
    import asyncio

    from ryot_telemetry.demo.simulate import demo_router

    router = demo_router(speed=0, seed=2, error_rate=0, timeout_rate=0, models=("m",))
    plain = asyncio.run(router.openai_chat_completion({"model": "m", "messages": [{"content": "hi"}]}))
    assert plain.timings == {
        "prompt_n": 1,
        "prompt_ms": 0.0,
        "predicted_n": plain.usage.completion_tokens,
        "predicted_ms": 0.0,
        "predicted_per_token_ms": 0.0,
    }

    async def stream(usage: bool) -> list:
        params = {"model": "m", "messages": [{"content": "hi"}], "stream": True}
        if usage:
            params["stream_options"] = {"include_usage": True}
        return [c async for c in await router.openai_chat_completion(params)]

    chunks = asyncio.run(stream(False))
    assert [c.timings is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    chunks = asyncio.run(stream(True))
    assert chunks[-1].usage is not None and chunks[-1].timings is not None
    assert [c.timings for c in chunks[:-1]] == [None] * (len(chunks) - 1)

    wrapped = cap.instrument_router(demo_router(speed=0, seed=2, error_rate=0, timeout_rate=0, models=("m",)))

    async def traffic() -> None:
        for _ in range(3):
            await wrapped.openai_chat_completion({"model": "m", "messages": [{"content": "hi"}]})
            async for _ in await wrapped.openai_chat_completion(
                {"model": "m", "messages": [{"content": "hi"}], "stream": True}
            ):
                pass

    asyncio.run(traffic())
    cap.collect()
    assert sum(p.count for p in cap.points("ryot.engine.prefill")) == 6
    assert sum(p.count for p in cap.points("ryot.ttft.outside_engine")) == 3  # streams only: they have a TTFT
    assert sum(p.count for p in cap.points("ryot.engine.time_per_output_token")) == 6

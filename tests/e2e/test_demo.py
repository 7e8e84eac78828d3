"""The demo (the main job) runs end to end on its embedded simulated model and reports from the histograms."""

from __future__ import annotations

import json
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

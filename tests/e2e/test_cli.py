"""The `ryot-telemetry` command line: options checked before anything runs, help for every option, quiet ends on a
closed pipe and on Ctrl-C, one line for a file it cannot write."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ryot_telemetry.artifacts import k8s
from ryot_telemetry.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("args", "error"), [
    (["--models", ""], "argument --models: expected comma-separated model names, none empty, got ''"),
    (["--models", "a,,b"], "argument --models: expected comma-separated model names, none empty, got 'a,,b'"),
    (["--models", " , "], "argument --models: expected comma-separated model names, none empty, got ' , '"),
    (["--error-rate", "2"], "argument --error-rate: must be between 0 and 1, got '2'"),
    (["--error-rate", "nan"], "argument --error-rate: must be between 0 and 1, got 'nan'"),
    (["--error-rate", "lots"], "argument --error-rate: expected a number, got 'lots'"),
    (["--timeout-rate", "-0.1"], "argument --timeout-rate: must be between 0 and 1, got '-0.1'"),
    (["--speed", "inf"], "argument --speed: must be at least 0, got 'inf'"),
    (["--speed", "-1"], "argument --speed: must be at least 0, got '-1'"),
    (["--hold", "-5"], "argument --hold: must be at least 0, got '-5'"),
    (["--requests", "-1"], "argument --requests: must be at least 0, got '-1'"),
    (["--requests", "1.5"], "argument --requests: expected an integer, got '1.5'"),
    (["--concurrency", "0"], "argument --concurrency: must be at least 1, got '0'"),
    (["--error-rate", "0.6", "--timeout-rate", "0.5"], "--error-rate plus --timeout-rate must be at most 1"),
])  # fmt: skip
def test_demo_refuses_out_of_range_options(args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty model list, a rate outside [0, 1] (or two summing above 1), a negative or non-finite speed or hold,
    and counts below their minimum exit 2 with argparse's line naming the option, before any traffic."""
    assert main(["demo", "--exporters", "none", "--no-progress", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1] == f"ryot-telemetry demo: error: {error}"


def test_demo_runs_one_model_given_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """`--models m` (one name, spaces around it trimmed) is the list the router serves: every request counts."""
    args = ["demo", "--models", " m ", "--requests", "8", "--speed", "0", "--exporters", "none", "--no-progress"]
    assert main(args) == 0
    assert "  requests        8  " in capsys.readouterr().out


def _parsers() -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    parsers = {"": top, **{name: p for name, p in sub.choices.items() if name != "k8s"}}
    parsers["k8s"] = k8s.build_parser()
    return parsers


def test_every_option_has_help() -> None:
    """Each option of each subcommand (k8s included) says what it does."""
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in _parsers().items()
        for action in parser._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []


@pytest.mark.parametrize("command", sorted(_parsers()))
def test_help_is_plain_text(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` of the command and of each subcommand exits 0 and shows no reStructuredText markup (double
    backticks) from the docstrings it is built from."""
    assert main([*([command] if command else []), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ryot-telemetry") and "``" not in out


def test_every_subcommand_is_in_the_command_line_reference() -> None:
    """docs/reference/cli.md has a row for each subcommand the parser knows."""
    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    documented = set(re.findall(r"^\| `ryot-telemetry ([a-z0-9-]+)", page, re.M))
    assert documented == set(_parsers()) - {""}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


@pytest.mark.parametrize("command", [["metrics-table"], ["dashboard"], ["rules"], ["k8s", "--kind", "PrometheusRule"]])
def test_closed_pipe_ends_quietly_with_141(command: list[str]) -> None:
    """Writing to a pipe whose reader is gone (`ryot-telemetry dashboard | head -0`) exits 141 with nothing on
    stderr: no BrokenPipeError traceback, no "Exception ignored" at interpreter exit."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ryot_telemetry", *command],
            stdout=write,
            stderr=subprocess.PIPE,
            env=_env(),
            timeout=60,
        )
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, b"")


def _sigint_as_at_a_terminal() -> None:
    """In the child, before exec: SIGINT's default action. A test run started in the background (``cmd &`` in a
    script: CI steps, parallel runs) hands its children SIGINT ignored, and Python, like any program, keeps an
    ignored SIGINT ignored; the demo would then never see the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_in_the_demo_ends_quietly_with_130() -> None:
    """SIGINT while the demo's traffic runs ends it with one line and exit 130, no traceback, after shutting
    telemetry down."""
    demo = subprocess.Popen(
        [
            *(sys.executable, "-m", "ryot_telemetry", "demo", "--requests", "5000", "--concurrency", "4"),
            *("--host", "127.0.0.1", "--port", "0", "--no-progress"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_sigint_as_at_a_terminal,
    )
    try:
        assert demo.stdout is not None
        assert demo.stdout.readline().startswith("metrics: http://127.0.0.1:")  # traffic is running
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        demo.kill()
        demo.wait(timeout=10)
    assert (demo.returncode, out, err) == (130, "", "\nryot-telemetry: interrupted\n")


def test_unwritable_output_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An --output that is a directory exits 1 with one line naming it; a missing parent folder is created."""
    assert main(["dashboard", "-o", str(tmp_path)]) == 1
    assert capsys.readouterr() == ("", f"ryot-telemetry: cannot write {str(tmp_path)!r}: Is a directory\n")
    assert main(["collector-config", "-o", str(tmp_path / "new" / "otelcol.yaml")]) == 0
    assert (tmp_path / "new" / "otelcol.yaml").read_text().startswith("# OpenTelemetry Collector")


def test_malformed_slo_table_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A YAML SLO table PyYAML cannot parse (its message quotes the line, with a caret under it) exits 2 with one
    line saying where, for `rules --slos` and `k8s --slos` alike."""
    table = tmp_path / "slos.yaml"
    table.write_text("m:\n  ttft: [1\n")
    why = (
        f'malformed SLO table {table}: while parsing a flow sequence; in "<unicode string>", line 2, column 9; '
        "expected ',' or ']', but got '<stream end>'; in \"<unicode string>\", line 3, column 1\n"
    )
    assert main(["rules", "--slos", str(table)]) == 2
    assert capsys.readouterr() == ("", f"ryot-telemetry: SLO table: {why}")
    assert main(["k8s", "--slos", str(table)]) == 2
    assert capsys.readouterr() == ("", f"ryot-telemetry k8s: --slos {str(table)!r}: {why}")


def test_bundle_with_an_slo_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bundle --slos TABLE` writes that table's SLO rules in rules/ and in the PrometheusRule, and leaves out the
    example table's SLO rule tests (they would fail on other targets)."""
    table = tmp_path / "slos.json"
    table.write_text('{"m": {"latency": 2, "target": 0.9}}')
    assert main(["bundle", "-o", str(tmp_path / "out"), "--slos", str(table)]) == 0
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == [
        "grafana/ryot-dashboard.json",
        "k8s/podmonitor.yaml",
        "k8s/prometheusrule.yaml",
        "k8s/servicemonitor.yaml",
        "otelcol-config.yaml",
        "prometheus.yml",
        "rules/examples/ryot_budget_rules.yml",
        "rules/ryot_alerts.yml",
        "rules/ryot_recording_rules.yml",
        "rules/ryot_slo_rules.yml",
        "rules/tests/ryot_alerts_test.yml",
        "rules/tests/ryot_budget_rules_test.yml",
        "rules/tests/ryot_provider_rules_test.yml",
        "rules/tests/ryot_recording_rules_test.yml",
    ]
    slo = (tmp_path / "out" / "rules" / "ryot_slo_rules.yml").read_text()
    assert f"# Table: {table}\n" in slo and 'expr: "vector(0.9)"' in slo
    assert slo.split("groups:\n", 1)[1] in (tmp_path / "out" / "k8s" / "prometheusrule.yaml").read_text().replace(
        "\n    ", "\n  "
    )
    assert capsys.readouterr() == ("", "")

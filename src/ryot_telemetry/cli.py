"""``ryot-telemetry``: the demo and the deployment files, written from the installed package in any directory.

Every file comes from package data or a generator (``artifacts/``), never from a checkout. User mistakes end in one
line and exit 2; a closed pipe (``metrics-table | head``) ends quietly with 141 and Ctrl-C with 130, the shell's
128 + signal number.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence

from .artifacts.output import emit
from .catalogue import markdown_table

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2
EXIT_ERROR = 1
EXIT_SIGINT = 130  # 128 + SIGINT
EXIT_SIGPIPE = 141  # 128 + SIGPIPE

_DESCRIPTION = (
    "OpenTelemetry metrics for LLM inference services. The demo runs an instrumented simulated router; the other "
    "commands write the deployment files (Prometheus rules and config, OpenTelemetry Collector config, Grafana "
    "dashboard, Kubernetes resources) to stdout, or to a file or directory with -o/--output."
)


def _number(low: float, high: float | None, kind: Callable[[str], float] = float) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (no upper bound when high is None)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value

    return parse


def _count(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text!r}")
        return value

    return parse


def _models(text: str) -> tuple[str, ...]:
    """An argparse type: a comma-separated list of at least one model name."""
    models = tuple(m.strip() for m in text.split(","))
    if not models or any(not m for m in models):
        raise argparse.ArgumentTypeError(f"expected comma-separated model names, none empty, got {text!r}")
    return models


def _output(parser: argparse.ArgumentParser, what: str, default: str = "-") -> None:
    parser.add_argument(
        "-o", "--output", default=default, metavar="FILE", help=f"file to write {what} to (default: stdout)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``ryot-telemetry`` parser (``k8s`` takes its own options: ``artifacts.k8s.build_parser``)."""
    parser = argparse.ArgumentParser(prog="ryot-telemetry", description=_DESCRIPTION)
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="what to run (ryot-telemetry COMMAND --help: its options)",
    )

    help_ = "run an instrumented simulated router with mixed traffic, serving /metrics, and print a summary"
    demo = sub.add_parser("demo", help=help_, description=help_ + ".")
    demo.set_defaults(parser=demo)  # for errors that involve two options, in the demo's own words
    demo.add_argument("--requests", type=_count(0), default=200, help="requests to send (default 200)")
    demo.add_argument("--concurrency", type=_count(1), default=16, help="requests in flight at once (default 16)")
    demo.add_argument(
        "--speed",
        type=_number(0, None),
        default=1.0,
        help="scale of every simulated delay; 0 = no sleeping (default 1)",
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed of the traffic and the model (default 7)")
    demo.add_argument(
        "--models",
        type=_models,
        default=("llama-3.1-8b-instruct", "mistral-7b-instruct"),
        help="comma-separated model names the router serves (default llama-3.1-8b-instruct,mistral-7b-instruct)",
    )
    demo.add_argument(
        "--error-rate", type=_number(0, 1), default=0.03, help="share of requests that fail, 0 to 1 (default 0.03)"
    )
    demo.add_argument(
        "--timeout-rate",
        type=_number(0, 1),
        default=0.01,
        help="share of requests that time out, 0 to 1 (default 0.01)",
    )
    demo.add_argument("--host", default=None, help="scrape endpoint host (default OTEL_EXPORTER_PROMETHEUS_HOST)")
    demo.add_argument("--port", type=int, default=None, help="scrape port (default 9464; 0 = any free port)")
    demo.add_argument(
        "--exporters",
        default=None,
        help="comma-separated: prometheus, otlp, console, none (default OTEL_METRICS_EXPORTER)",
    )
    demo.add_argument(
        "--private-registry", action="store_true", help="expose only ryot metrics on /metrics (no python_*)"
    )
    demo.add_argument(
        "--hold",
        type=_number(0, None),
        default=0.0,
        help="keep serving /metrics this many seconds after the traffic (default 0)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    demo.add_argument("--summary-json", default=None, metavar="FILE", help="also write the summary to this file")
    demo.add_argument(
        "--slos", default=None, metavar="TABLE", help="SLO table file (JSON or YAML); default: the demo's own table"
    )

    sub.add_parser("metrics-table", help="print the metric catalogue as a Markdown table")

    help_ = "write the Grafana dashboard generated from the metric catalogue"
    dash = sub.add_parser("dashboard", help=help_, description=help_ + ".")
    dash.add_argument("path", nargs="?", default=None, metavar="FILE", help="output file (same as --output)")
    _output(dash, "the dashboard JSON")

    help_ = "write the recording rules, alerts and SLO rules (one rule file, or three and their tests with -o DIR)"
    rules = sub.add_parser("rules", help=help_, description=help_ + ".")
    rules.add_argument(
        "--slos", default=None, metavar="TABLE", help="SLO table file (JSON or YAML); default: the example table"
    )
    rules.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="DIR",
        help="directory for the three rule files and their promtool tests in tests/ (default: one file to stdout)",
    )

    help_ = "write Prometheus SLO burn-rate rules for an SLO table"
    slo = sub.add_parser("slo-rules", help=help_, description=help_ + ".")
    slo.add_argument("table", nargs="?", help="SLO table file (JSON or YAML); default: the example table")
    _output(slo, "the rule file")

    help_ = "write the Prometheus config scraping the plugin (its rule_files are rules/*.yml beside it)"
    prom = sub.add_parser("prometheus-config", help=help_, description=help_ + ".")
    _output(prom, "prometheus.yml")

    help_ = "write the OpenTelemetry Collector config: OTLP in, Prometheus exporter out"
    col = sub.add_parser("collector-config", help=help_, description=help_ + ".")
    _output(col, "otelcol-config.yaml")

    sub.add_parser(
        "budget-rules",
        add_help=False,
        help="write Prometheus budget rules (80%% and 100%% spent, projected overrun) for a budget table "
        "(ryot-telemetry budget-rules --help)",
    )
    sub.add_parser(
        "k8s",
        add_help=False,
        help="write a Prometheus Operator PodMonitor/ServiceMonitor and a PrometheusRule (ryot-telemetry k8s --help)",
    )

    help_ = "write every file above into one directory, in the layout of the repository's collector/"
    bundle = sub.add_parser("bundle", help=help_, description=help_ + ".")
    bundle.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write into")
    bundle.add_argument(
        "--slos", default=None, metavar="TABLE", help="SLO table file (JSON or YAML); default: the example table"
    )
    return parser


def _run(argv: list[str]) -> int:
    if argv[:1] == ["k8s"]:  # its own options (artifacts/k8s.py)
        from .artifacts import k8s

        return k8s.main(argv[1:])
    if argv[:1] == ["budget-rules"]:  # its own options (artifacts/budget_rules.py)
        from .artifacts import budget_rules

        return budget_rules.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.error_rate + args.timeout_rate > 1:
            args.parser.error("--error-rate plus --timeout-rate must be at most 1")
        from .demo.run import run_demo

        return run_demo(args)
    if args.command == "metrics-table":
        emit(markdown_table() + "\n", "-")
        return 0
    if args.command == "dashboard":
        from .artifacts.dashboard import dashboard_json

        emit(dashboard_json(), args.path if args.path is not None else args.output)
        return 0
    if args.command in ("prometheus-config", "collector-config"):
        from .artifacts import shipped

        name = shipped.PROMETHEUS_CONFIG if args.command == "prometheus-config" else shipped.COLLECTOR_CONFIG
        emit(shipped.text(name), args.output)
        return 0

    from .slo import SloTable

    table = getattr(args, "slos", None) or getattr(args, "table", None)
    try:
        slos = SloTable.from_file(table) if table else None
    except ValueError as e:
        from .artifacts.k8s import one_line

        print(f"ryot-telemetry: SLO table: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "slo-rules":
        from .artifacts import slo_rules

        default = SloTable(slo_rules.EXAMPLE_TABLE)
        source = "" if table else "ryot_telemetry.artifacts.slo_rules.EXAMPLE_TABLE"
        emit(slo_rules.rules_yaml(slos or default, source), args.output)
        return 0
    if args.command == "rules":
        from .artifacts import bundle, shipped
        from .artifacts.k8s import combined_rules

        files = shipped.rule_files(slos, table or "")
        if args.output == "-":
            emit(combined_rules(list(files.items())), "-")
        else:
            # the rule files with their promtool tests (and the example budget rules one of them reads)
            everything = bundle.files(slos, table or "")
            bundle.write({k[6:]: v for k, v in everything.items() if k.startswith("rules/")}, args.output)
        return 0
    if args.command == "bundle":
        from .artifacts import bundle

        bundle.write(bundle.files(slos, table or ""), args.output)
        return 0
    return EXIT_USAGE


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not report the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """``ryot-telemetry``: the exit status (0, 1 for a file that cannot be written, 2 for a usage error, 130 on
    Ctrl-C, 141 when the reader of stdout went away)."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse: --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print("\nryot-telemetry: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_SIGPIPE
    except OSError as e:
        where = f" {e.filename!r}" if e.filename else ""
        print(f"ryot-telemetry: cannot write{where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())

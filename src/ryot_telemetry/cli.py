"""``ryot-telemetry``: the demo (an instrumented simulated router serving /metrics) and the deployment files."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .catalogue import markdown_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ryot-telemetry", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run an instrumented simulated router with mixed traffic, serving /metrics")
    demo.add_argument("--requests", type=int, default=200, help="requests to send (default 200)")
    demo.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default 16)")
    demo.add_argument("--speed", type=float, default=1.0, help="scale all simulated delays; 0 = no sleeping")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--models", default="llama-3.1-8b-instruct,mistral-7b-instruct", help="comma-separated")
    demo.add_argument("--error-rate", type=float, default=0.03)
    demo.add_argument("--timeout-rate", type=float, default=0.01)
    demo.add_argument("--host", default=None, help="scrape endpoint host (default OTEL_EXPORTER_PROMETHEUS_HOST)")
    demo.add_argument("--port", type=int, default=None, help="scrape port (default 9464; 0 = any free port)")
    demo.add_argument("--exporters", default=None, help="prometheus,otlp,console,none (default OTEL_METRICS_EXPORTER)")
    demo.add_argument("--private-registry", action="store_true", help="expose only ryot metrics on /metrics")
    demo.add_argument("--hold", type=float, default=0.0, help="keep serving /metrics this many seconds after")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--summary-json", default=None, help="also write the summary to this file")
    demo.add_argument("--slos", default=None, help="SLO table file (JSON or YAML); default: the demo's own table")
    sub.add_parser("metrics-table", help="print the metric catalogue as a Markdown table")
    dash = sub.add_parser("dashboard", help="write the Grafana dashboard generated from the catalogue")
    dash.add_argument("path", nargs="?", default="-", help="output file (default stdout)")
    rules = sub.add_parser("slo-rules", help="write Prometheus SLO burn-rate rules for an SLO table")
    rules.add_argument("table", nargs="?", help="SLO table file (JSON or YAML); default: the shipped example table")
    rules.add_argument("-o", "--output", default="-", help="rule file to write (default stdout)")
    sub.add_parser(
        "k8s",
        add_help=False,
        help="write a Prometheus Operator PodMonitor/ServiceMonitor and a PrometheusRule with the shipped rules "
        "(ryot-telemetry k8s --help)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["k8s"]:  # its own options (artifacts/k8s.py)
        from .artifacts import k8s

        return k8s.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        if args.requests < 0 or args.concurrency < 1:
            print("ryot-telemetry: --requests must be >= 0 and --concurrency >= 1", file=sys.stderr)
            return 2
        from .demo.run import run_demo

        return run_demo(args)
    if args.command == "metrics-table":
        print(markdown_table())
        return 0
    if args.command == "slo-rules":
        from .artifacts import slo_rules

        return slo_rules.main(["rules", *([args.table] if args.table else []), "-o", args.output])
    if args.command == "dashboard":
        from .artifacts.dashboard import build_dashboard

        text = json.dumps(build_dashboard(), indent=2) + "\n"
        if args.path == "-":
            sys.stdout.write(text)
        else:
            with open(args.path, "w", encoding="utf-8") as f:
                f.write(text)
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

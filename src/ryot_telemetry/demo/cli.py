"""``ryot-telemetry``: the demo (an instrumented simulated router serving /metrics) and small utilities."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from ..catalogue import COMPLETION_TOKENS, STATUSES, markdown_table
from ..settings import Settings
from ..telemetry import ConfigurationError, Telemetry, configure
from .simulate import SimulatedRouter

DEMO_SLOS = {"*": {"ttft": 0.2, "tpot": 0.025, "latency": 1.5, "target": 0.95}}
"""The demo's SLO table (replace it with ``--slos PATH``): at --speed 1, long prompts miss TTFT, big batches latency."""


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """Prometheus' histogram_quantile over one histogram: linear interpolation inside the bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, c in enumerate(counts):
        if cumulative + c >= rank and c > 0:
            if i == len(bounds):  # +Inf bucket: Prometheus returns the highest finite bound
                return float(bounds[-1]) if bounds else None
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - cumulative) / c
        cumulative += c
    return float(bounds[-1]) if bounds else None


def _merged(points: list[HistogramDataPoint]) -> tuple[list[float], list[int]]:
    if not points:
        return [], []
    bounds = list(points[0].explicit_bounds)
    counts = [0] * (len(bounds) + 1)
    for p in points:
        for i, c in enumerate(p.bucket_counts):
            counts[i] += c
    return bounds, counts


def summarize(reader: InMemoryMetricReader, wall_s: float) -> dict[str, Any]:
    """Requests by status, p50/p95 latency and TTFT (from the histograms, as PromQL would), tokens/s."""
    data = reader.get_metrics_data()
    by_name: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                by_name.setdefault(m.name, []).extend(m.data.data_points)
    requests = dict.fromkeys(STATUSES, 0)
    for p in by_name.get("ryot.inference.requests", ()):
        requests[p.attributes["status"]] = requests.get(p.attributes["status"], 0) + int(p.value)
    errors: dict[str, int] = {}
    for p in by_name.get("ryot.inference.errors", ()):
        errors[p.attributes["error_type"]] = errors.get(p.attributes["error_type"], 0) + int(p.value)
    completion = sum(
        int(p.value)
        for p in by_name.get("ryot.tokens.generated", ())
        if p.attributes["token_type"] == COMPLETION_TOKENS
    )
    out: dict[str, Any] = {
        "requests": requests,
        "total": sum(requests.values()),
        "errors": errors,
        "completion_tokens": completion,
        "wall_seconds": round(wall_s, 3),
        "tokens_per_second": round(completion / wall_s, 1) if wall_s > 0 else None,
    }
    for key, name in (("latency", "ryot.inference.latency"), ("ttft", "ryot.ttft.latency")):
        bounds, counts = _merged(by_name.get(name, []))
        for q in (0.5, 0.95):
            v = histogram_quantile(q, bounds, counts)
            out[f"{key}_p{int(q * 100)}_seconds"] = None if v is None else round(v, 4)
    slo: dict[str, Any] = {"met": 0, "missed": {}}
    for p in by_name.get("ryot.slo.requests", ()):
        if p.attributes["result"] == "met":
            slo["met"] += int(p.value)
        else:
            objective = p.attributes["objective"]
            slo["missed"][objective] = slo["missed"].get(objective, 0) + int(p.value)
    judged = slo["met"] + sum(slo["missed"].values())
    slo["goodput"] = round(slo["met"] / judged, 4) if judged else None
    out["slo"] = slo
    tps_bounds, tps_counts = _merged(by_name.get("ryot.tokens_per_second", []))
    out["per_request_tokens_per_second_p50"] = histogram_quantile(0.5, tps_bounds, tps_counts)
    return out


async def drive(
    router: Any, requests: int, concurrency: int, seed: int | None, models: Sequence[str], progress: bool
) -> None:
    """Mixed traffic: chat streams, chat, completions, batch completions; some consumers hang up early."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(concurrency)
    done = 0
    start = time.monotonic()
    last_draw = 0.0
    tty = sys.stderr.isatty()

    async def one(i: int) -> None:
        nonlocal done, last_draw
        kind = rng.random()
        model = rng.choice(models)
        words = " ".join("lorem" for _ in range(rng.choice((20, 200, 800, 3000))))
        try:
            async with sem:
                if kind < 0.6:
                    stream = await router.openai_chat_completion(
                        {"model": model, "messages": [{"role": "user", "content": words}], "stream": True}
                    )
                    hang_up = rng.random() < 0.05
                    n = 0
                    async for _ in stream:
                        n += 1
                        if hang_up and n == 3:
                            await stream.aclose()
                            break
                elif kind < 0.8:
                    await router.openai_chat_completion(
                        {"model": model, "messages": [{"role": "user", "content": words}]}
                    )
                elif kind < 0.9:
                    await router.openai_completion({"model": model, "prompt": words})
                else:
                    await router.openai_completion({"model": model, "prompt": [words] * rng.choice((2, 4, 8, 16))})
        except Exception:
            pass  # failures are part of the simulation; the metrics record them
        finally:
            done += 1
            now = time.monotonic()
            # Redraw at most 10x a second on a terminal; every 10% when logging to a file.
            if progress and (
                done == requests
                or (tty and now - last_draw >= 0.1)
                or (not tty and requests >= 10 and done % (requests // 10) == 0)
            ):
                last_draw = now
                _progress(done, requests, now - start, tty)

    await asyncio.gather(*(one(i) for i in range(requests)))
    if progress and tty:
        sys.stderr.write("\n")


def _progress(done: int, total: int, elapsed: float, tty: bool) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    rate = done / elapsed if elapsed > 0 else 0.0
    line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} requests  {rate:6.1f} req/s"
    sys.stderr.write(("\r" + line) if tty else (line + "\n"))
    sys.stderr.flush()


def _print_summary(s: dict[str, Any]) -> None:
    req = s["requests"]
    print("\nSummary")
    print(f"  requests        {s['total']}  " + "  ".join(f"{k}={req[k]}" for k in STATUSES))
    if s["errors"]:
        print("  errors by type  " + "  ".join(f"{k}={v}" for k, v in sorted(s["errors"].items())))

    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 1000:.0f} ms"

    print(f"  latency         p50 {ms(s['latency_p50_seconds'])}   p95 {ms(s['latency_p95_seconds'])}")
    print(f"  TTFT            p50 {ms(s['ttft_p50_seconds'])}   p95 {ms(s['ttft_p95_seconds'])}")
    print(f"  tokens/s        {s['tokens_per_second']} overall ({s['completion_tokens']} completion tokens)")
    slo = s.get("slo")
    if slo and "table" in slo:
        missed = "  ".join(f"{k}={v}" for k, v in sorted(slo["missed"].items())) or "none"
        goodput = "n/a" if slo["goodput"] is None else f"{slo['goodput']:.1%}"
        print(f"  SLO table       {json.dumps(slo['table'], sort_keys=True)}")
        print(f"  goodput         {goodput}  met={slo['met']}  missed: {missed}  (abandoned streams not judged)")


def run_demo(args: argparse.Namespace) -> int:
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    memory = InMemoryMetricReader()
    try:
        tel: Telemetry = configure(
            service_name="ryot-demo",
            exporters=args.exporters,
            prometheus_host=args.host,
            prometheus_port=args.port,
            prometheus_registry="private" if args.private_registry else None,
            readers=[memory],
            slos=args.slos or Settings.load().slos or DEMO_SLOS,
        )
    except ConfigurationError as e:
        print(f"ryot-telemetry: {e}", file=sys.stderr)
        return 2
    try:
        if tel.prometheus_url:
            print(f"metrics: {tel.prometheus_url}", flush=True)
        router = SimulatedRouter(
            speed=args.speed,
            seed=args.seed,
            error_rate=args.error_rate,
            timeout_rate=args.timeout_rate,
            models=models,
        )
        tel.instrument_router(router)
        start = time.monotonic()
        asyncio.run(drive(router, args.requests, args.concurrency, args.seed, models, not args.no_progress))
        # a scrape may have seen new series at 0 and hold increments the summary counts
        tel.recorder.drain(release_held=True)
        summary = summarize(memory, time.monotonic() - start)
        if tel.recorder.slos is not None:
            summary["slo"]["table"] = tel.recorder.slos.as_dict()
        _print_summary(summary)
        if args.summary_json:
            with open(args.summary_json, "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2)
        if args.hold > 0 and tel.prometheus_url:
            print(f"serving {tel.prometheus_url} for {args.hold:g} s more (Ctrl-C to stop)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(args.hold)
    finally:
        tel.shutdown()
    return 0


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
        "budget-rules",
        add_help=False,
        help="write Prometheus budget rules (80%% and 100%% spent, projected overrun) for a budget table "
        "(ryot-telemetry budget-rules --help)",
    )
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
        from ..artifacts import k8s

        return k8s.main(argv[1:])
    if argv[:1] == ["budget-rules"]:  # its own options (artifacts/budget_rules.py)
        from ..artifacts import budget_rules

        return budget_rules.main(["rules", *argv[1:]])
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        if args.requests < 0 or args.concurrency < 1:
            print("ryot-telemetry: --requests must be >= 0 and --concurrency >= 1", file=sys.stderr)
            return 2
        return run_demo(args)
    if args.command == "metrics-table":
        print(markdown_table())
        return 0
    if args.command == "slo-rules":
        from ..artifacts import slo_rules

        return slo_rules.main(["rules", *([args.table] if args.table else []), "-o", args.output])
    if args.command == "dashboard":
        from ..artifacts.dashboard import build_dashboard

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

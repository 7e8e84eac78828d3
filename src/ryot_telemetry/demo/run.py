"""``ryot-telemetry demo``: an instrumented simulated router with mixed traffic, serving /metrics, and its summary."""

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

from .. import catalogue
from ..catalogue import COMPLETION_TOKENS, STATUSES
from ..settings import Settings
from ..telemetry import ConfigurationError, Telemetry, configure
from .simulate import DEMO_PRICES, SimulatedEngine, demo_router

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

    def points(name: str) -> list[Any]:
        return by_name.get(catalogue.get(name).name, [])  # through the catalogue: a misspelt name raises, not 0

    requests = dict.fromkeys(STATUSES, 0)
    for p in points("ryot.inference.requests"):
        requests[p.attributes["status"]] = requests.get(p.attributes["status"], 0) + int(p.value)
    errors: dict[str, int] = {}
    for p in points("ryot.inference.errors"):
        errors[p.attributes["error_type"]] = errors.get(p.attributes["error_type"], 0) + int(p.value)
    completion = sum(
        int(p.value) for p in points("ryot.tokens.generated") if p.attributes["token_type"] == COMPLETION_TOKENS
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
        bounds, counts = _merged(points(name))
        for q in (0.5, 0.95):
            v = histogram_quantile(q, bounds, counts)
            out[f"{key}_p{int(q * 100)}_seconds"] = None if v is None else round(v, 4)
    slo: dict[str, Any] = {"met": 0, "missed": {}}
    for p in points("ryot.slo.requests"):
        if p.attributes["result"] == "met":
            slo["met"] += int(p.value)
        else:
            objective = p.attributes["objective"]
            slo["missed"][objective] = slo["missed"].get(objective, 0) + int(p.value)
    judged = slo["met"] + sum(slo["missed"].values())
    slo["goodput"] = round(slo["met"] / judged, 4) if judged else None
    out["slo"] = slo
    cost: dict[str, float] = {}
    for p in points("ryot.token.cost_estimate.usd"):
        cost[p.attributes["model"]] = cost.get(p.attributes["model"], 0.0) + p.value
    out["cost_usd"] = {m: round(v, 6) for m, v in sorted(cost.items())}
    tps_bounds, tps_counts = _merged(points("ryot.tokens_per_second"))
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
    if s.get("cost_usd"):
        by_model = "  ".join(f"{m}=${v:.4f}" for m, v in s["cost_usd"].items())
        print(f"  cost            ${sum(s['cost_usd'].values()):.4f} estimated  {by_model}")
    if s.get("gpu_devices") == []:
        print("  GPU             no GPU found (or RYOT_TELEMETRY_GPU=false): the dashboard's GPU panels stay empty")
    slo = s.get("slo")
    if slo and "table" in slo:
        missed = "  ".join(f"{k}={v}" for k, v in sorted(slo["missed"].items())) or "none"
        goodput = "n/a" if slo["goodput"] is None else f"{slo['goodput']:.1%}"
        print(f"  SLO table       {json.dumps(slo['table'], sort_keys=True)}")
        print(f"  goodput         {goodput}  met={slo['met']}  missed: {missed}  (abandoned streams not judged)")


def run_demo(args: argparse.Namespace) -> int:
    models = tuple(args.models)  # checked by the parser: at least one name, none empty
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
            prices=Settings.load().prices or DEMO_PRICES,
        )
    except ConfigurationError as e:
        print(f"ryot-telemetry: {e}", file=sys.stderr)
        return 2
    try:
        if tel.prometheus_url:
            print(f"metrics: {tel.prometheus_url}", flush=True)
        router = demo_router(
            speed=args.speed,
            seed=args.seed,
            error_rate=args.error_rate,
            timeout_rate=args.timeout_rate,
            models=models,
        )
        if tel.engine is not None:
            SimulatedEngine(router, tel.engine).start()
        tel.instrument_router(router)
        start = time.monotonic()
        asyncio.run(drive(router, args.requests, args.concurrency, args.seed, models, not args.no_progress))
        # a scrape may have seen new series at 0 and hold increments the summary counts
        tel.recorder.drain(release_held=True)
        summary = summarize(memory, time.monotonic() - start)
        if tel.recorder.slos is not None:
            summary["slo"]["table"] = tel.recorder.slos.as_dict()
        summary["gpu_devices"] = tel.gpu.device_ids if tel.gpu is not None else []
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

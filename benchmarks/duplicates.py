"""What ``RYOT_TELEMETRY_DROP_DUPLICATES=ogx`` saves: ogx's own router histograms, recorded as ogx records them.

Per request the ogx router records ``ogx.inference.duration_seconds`` and ``ogx.inference.tokens_per_second``, and on
streams ``ogx.inference.time_to_first_token_seconds`` too (ogx/core/routers/inference.py), with model, provider,
stream and status attributes. Both variants record exactly that on a ``configure()``'d provider with a Prometheus
registry (no server); "kept" is the default, "dropped" installs the DropAggregation Views. Measured: the recording
per request, the scrape (text exposition) time and its size. Rounds interleaved, median reported.

A DropAggregation View still takes each measurement through the SDK's path (attributes, View match, lock); it only
skips the aggregation, so the recording costs about the same. The saving is at every collection: no series kept,
none exported or exposed.
"""

from __future__ import annotations

import gc
import logging
import statistics
from typing import Any

from prometheus_client import generate_latest

import ryot_telemetry

from .common import clock

_MODELS = tuple(f"vllm/model-{i}" for i in range(10))


def _variant(drop: bool) -> tuple[Any, list[tuple[Any, Any, Any, dict[str, str]]]]:
    log = logging.getLogger("ryot_telemetry")
    level = log.level
    log.setLevel(logging.ERROR)  # both variants live side by side (interleaved rounds): not a mistake here
    try:
        tel = _configure(drop)
    finally:
        log.setLevel(level)
    meter = tel.meter_provider.get_meter("ogx.inference", "1.0.0")
    duration = meter.create_histogram("ogx.inference.duration_seconds", unit="s")
    ttft = meter.create_histogram("ogx.inference.time_to_first_token_seconds", unit="s")
    tps = meter.create_histogram("ogx.inference.tokens_per_second")
    attrs = [
        {"model": m, "provider": "vllm", "stream": s, "status": "success"} for m in _MODELS for s in ("true", "false")
    ]
    return tel, [(duration, ttft, tps, a) for a in attrs]


def _configure(drop: bool) -> Any:
    return ryot_telemetry.configure(
        prometheus_registry="private",
        start_prometheus_server=False,
        gpu=False,
        drop_duplicates="ogx" if drop else None,
    )


def _record(instruments: list[tuple[Any, Any, Any, dict[str, str]]], n: int) -> float:
    k = len(instruments)
    t0 = clock()
    for i in range(n):
        duration, ttft, tps, attrs = instruments[i % k]
        duration.record(0.42, attributes=attrs)
        if attrs["stream"] == "true":
            ttft.record(0.05, attributes=attrs)
        tps.record(120.0, attributes=attrs)
    return clock() - t0


def run(quick: bool) -> list[tuple[str, str, str, str]]:
    n, rounds = (5000, 5) if quick else (50000, 11)
    variants = {"kept": _variant(False), "dropped": _variant(True)}
    times: dict[str, list[float]] = {v: [] for v in variants}
    scrapes: dict[str, list[float]] = {v: [] for v in variants}
    sizes: dict[str, int] = {}
    try:
        order = list(variants)
        for r in range(rounds):
            for name in order[r % 2 :] + order[: r % 2]:
                tel, instruments = variants[name]
                gc.collect()
                times[name].append(_record(instruments, n) / n)
                t0 = clock()
                text = generate_latest(tel.registry)
                scrapes[name].append(clock() - t0)
                sizes[name] = len(text)
    finally:
        for tel, _ in variants.values():
            tel.shutdown()
    rec = {v: statistics.median(t) * 1e9 for v, t in times.items()}
    scrape = {v: statistics.median(t) * 1e3 for v, t in scrapes.items()}
    return [
        (
            "ogx duplicates: recording/request",
            f"{rec['dropped'] / rec['kept']:.2f}",
            "about 1",
            f"dropped {rec['dropped']:.0f} ns vs kept {rec['kept']:.0f} ns per request (3 ogx histograms, 20 series)",
        ),
        (
            "ogx duplicates: scrape",
            f"{scrape['dropped'] / scrape['kept']:.2f}",
            "< 1 (saving)",
            f"dropped {scrape['dropped']:.2f} ms, {sizes['dropped']} B vs kept {scrape['kept']:.2f} ms, "
            f"{sizes['kept']} B",
        ),
    ]

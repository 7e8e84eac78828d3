"""Cost of exemplars per request: the same request path and drain with trace-based exemplars on and off.

Both variants use the same set-up as an OTLP deployment (an in-memory reader stands for the OTLP one, so nothing is
sent anywhere) and the same non-streaming workload as section 1. "Off" is ``OTEL_METRICS_EXEMPLAR_FILTER=always_off``,
the path without exemplars. Measured twice: requests inside a sampled span (exemplars recorded), and requests with
no span (exemplars on, but nothing to sample: the cost of looking for a span).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

import ryot_telemetry

from .common import MODELS, NoopRouter, clock, make_params, make_response, median, ns, timed


@contextlib.contextmanager
def _exemplar_filter(value: str | None) -> Iterator[None]:
    old = os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER")
    if value is None:
        os.environ.pop("OTEL_METRICS_EXEMPLAR_FILTER", None)
    else:
        os.environ["OTEL_METRICS_EXEMPLAR_FILTER"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OTEL_METRICS_EXEMPLAR_FILTER", None)
        else:
            os.environ["OTEL_METRICS_EXEMPLAR_FILTER"] = old


def _telemetry(filter_value: str | None) -> ryot_telemetry.Telemetry:
    log = logging.getLogger("ryot_telemetry")
    level = log.level
    log.setLevel(logging.ERROR)  # two Telemetry objects alive at once is intended here: no warning
    try:
        with _exemplar_filter(filter_value):
            tel = ryot_telemetry.configure(exporters="none", readers=[InMemoryMetricReader()], gpu=False)
    finally:
        log.setLevel(level)
    tel.recorder.stop_drainer()  # the request path and the drain are timed separately, as in section 1
    return tel


async def bench_exemplars(n: int, rounds: int) -> dict[str, float]:
    """ns per request: request path and drain, exemplars on vs off, inside a sampled span and with no span."""
    params = [make_params(m) for m in MODELS]
    tracer = TracerProvider(sampler=ALWAYS_ON).get_tracer("benchmark")
    variants: dict[str, Any] = {}
    for name, filt in (("on", None), ("off", "always_off")):
        tel = _telemetry(filt)
        assert tel.recorder.exemplars is (name == "on")
        variants[name] = (tel, tel.instrument_router(NoopRouter(make_response())).openai_chat_completion)
    times: dict[str, list[float]] = {}
    for tel, call in variants.values():
        await timed(2000, call, params)  # warm-up: every series exists
        tel.recorder.drain()
    gc.collect()
    for _ in range(rounds):
        for span in (True, False):
            for name, (tel, call) in variants.items():
                key = f"{name}_{'span' if span else 'nospan'}"
                with tracer.start_as_current_span("request") if span else contextlib.nullcontext():
                    t = await timed(n, call, params)
                t0 = clock()
                assert tel.recorder.drain() == n
                d = clock() - t0
                times.setdefault(key + "_path", []).append(ns(t, n))
                times.setdefault(key + "_drain", []).append(ns(d, n))
    for tel, _ in variants.values():
        tel.shutdown()
    out = {k: median(v) for k, v in times.items()}
    for where in ("span", "nospan"):
        on = [p + d for p, d in zip(times[f"on_{where}_path"], times[f"on_{where}_drain"])]
        off = [p + d for p, d in zip(times[f"off_{where}_path"], times[f"off_{where}_drain"])]
        out[f"extra_{where}"] = median([a - b for a, b in zip(on, off)])
        out[f"total_off_{where}"] = median(off)
    return out


def run(quick: bool) -> list[tuple[str, str, str, str]]:
    """Print section 5 and return its summary rows."""
    n, rounds = (3000, 5) if quick else (20000, 15)
    r = asyncio.run(bench_exemplars(n, rounds))
    print(f"\n5. exemplars, non-streaming, {n} calls x {rounds} rounds over 10 models (median ns/request)")
    for where, label in (("span", "inside a sampled span"), ("nospan", "no active span")):
        print(
            f"   {label}: exemplars off path {r[f'off_{where}_path']:.0f} + drain {r[f'off_{where}_drain']:.0f}; "
            f"on path {r[f'on_{where}_path']:.0f} + drain {r[f'on_{where}_drain']:.0f}; "
            f"extra {r[f'extra_{where}']:+.0f}"
        )
    return [
        (
            "exemplars on / off, sampled span (path + drain)",
            f"{(r['total_off_span'] + r['extra_span']) / r['total_off_span']:.2f}x",
            "",
            f"{r['extra_span']:+.0f} ns/request",
        ),
        (
            "exemplars on / off, no span (path + drain)",
            f"{(r['total_off_nospan'] + r['extra_nospan']) / r['total_off_nospan']:.2f}x",
            "",
            f"{r['extra_nospan']:+.0f} ns/request",
        ),
    ]

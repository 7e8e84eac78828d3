"""Scale curves: how scrape time, memory and the multi-process hand-off grow with models and worker processes.

Registered in ``benchmarks/run.py`` as section ``scale``. Each model gets every router series (``fill_models``: a
request of each endpoint x mode with every batch bucket, outcome and prompt size, 100 requests per model, the same
series as ``common.fill_all_combinations``). The prometheus_client baseline is a hand-written registry with exactly the
same series (names, labels, buckets), built per model from ryot's own exposition of one model (``Template``).

1. **models** (10, 100, 1,000; ``--quick`` 10, 20, 40): ``/metrics`` scrape time (``generate_latest``) against the
   prometheus_client registry, rounds interleaved in this process; RSS growth of filling the models and scraping
   once, each side in a fresh interpreter (MB = 10^6 bytes); one multi-process hand-off of a worker holding them.
2. **workers** (2, 8, 32 real processes x 100 models; ``--quick`` 2, 4 x 10): the merged scrape in the scraping
   process against prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` and ``MultiProcessCollector``
   over as many processes writing the same series); the hand-off per worker (collect, encode, write: CPU time of
   the worker's thread, so the other processes' load on the cores is not counted); the leader's housekeeping per
   tick; each worker's file against prometheus_client's. Workers are added to the same directories (2, then 8,
   then 32). Then, at the first size: CPU per request in a worker at 2,000 requests per 0.5 s hand-off (path plus
   the hand-off amortised) against prometheus_client's multiprocess mode (path, values in its mmap files).
3. **new series**: three ticking workers; one records a request for a model never seen, the other two answer
   scrapes in turn (``SCRAPE_EVERY`` apart): the number of scrapes from the first that shows the series (at 0) to
   the first that shows the increment (goal: one), and the seconds from the request to that scrape.

Times are CPU time of the measuring thread (``time.thread_time``): on a shared machine, waiting for a core is not
the cost of a scrape. Growth per doubling between sizes a < b: ``(cost(b) / cost(a)) ** (1 / log2(b / a))``; 2.0
is linear, 1.0 flat.
Each record's ``noise`` is the interquartile range of its rounds over their median (the machine is shared).

``python -m benchmarks --json PATH`` writes the summary rows into ``records`` (``results.py``) and every curve point
into ``curves``, one object each, the keys of a record plus where the point lies and its noise::

    {"axis": "models", "size": 1000, "curve": "scrape", "name": "scale: scrape, 1000 models", "value": 5620.1,
     "unit": "ms", "baseline": "prometheus_client", "baseline_value": 4581.8, "ratio": 1.24, "goal": "<= 1.5",
     "met": true, "noise": 0.12}

``axis``: models, workers or trial; ``size``: the point on it; ``baseline``: the peer's name, ``baseline_value`` its
value in ``unit`` (null without a peer); ``ratio``: against the peer (the median of per-round ratios where both were
timed in rounds); ``goal``/``met``: null without a goal; ``noise``: null where not measured in rounds; a measure
that could not be taken is null. ``docs/guides/scale.md``'s tables are generated from ``docs/scale.json``
(``python -m benchmarks --only scale --json docs/scale.json``, then ``python scripts/gen_docs.py``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import ryot_telemetry

from .common import (
    BATCH_SIZES,
    MODE_ENDPOINTS,
    OUTCOMES,
    PROMPT_TOKENS,
    NoopRouter,
    PromClientRouter,
    clock,
    count_series,
    make_params,
    make_response,
    record_one,
    rss_bytes,
)

Row = tuple[str, str, str, str]
Record = dict[str, Any]
cpu = time.thread_time
ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "__scale_model__"
SCRAPE_EVERY = 1.0
"""Seconds between two scrapes in the new-series measurement."""


@dataclass(frozen=True)
class Size:
    """The sizes of one run: model counts, worker counts (x ``worker_models``), new-series trials."""

    models: tuple[int, ...]
    workers: tuple[int, ...]
    worker_models: int
    trials: int
    quick: bool  # fewer rounds


FULL = Size((10, 100, 1000), (2, 8, 32), 100, 5, quick=False)
QUICK = Size((10, 20, 40), (2, 4), 10, 2, quick=True)
TINY = Size((1, 2), (1, 2), 1, 1, quick=True)  # the test that the section runs


def model_names(n: int) -> tuple[str, ...]:
    return tuple(f"model-{i}" for i in range(n))


def fill_models(rec: Any, models: tuple[str, ...]) -> int:
    """Every router series of each model, 100 requests per model (``fill_all_combinations`` needs 1,350)."""
    n = 0
    for model in models:
        for endpoint, mode in MODE_ENDPOINTS:
            for i, batch in enumerate(BATCH_SIZES):
                record_one(rec, model, endpoint, mode, batch, None, PROMPT_TOKENS[i % len(PROMPT_TOKENS)])
            for i, exc in enumerate(OUTCOMES):
                batch, prompt = BATCH_SIZES[i % len(BATCH_SIZES)], PROMPT_TOKENS[i % len(PROMPT_TOKENS)]
                record_one(rec, model, endpoint, mode, batch, exc, prompt)
            for prompt in PROMPT_TOKENS:
                record_one(rec, model, endpoint, mode, 1, None, prompt)
            n += len(BATCH_SIZES) + len(OUTCOMES) + len(PROMPT_TOKENS)
    rec.drain()
    return n


def configure(n_models: int, **kwargs: Any) -> ryot_telemetry.Telemetry:
    """Telemetry with a model budget for ``n_models`` (the default is 100) and no GPU."""
    kwargs.setdefault("exporters", "prometheus")
    if kwargs["exporters"] == "prometheus":
        kwargs.setdefault("prometheus_registry", "private")
        kwargs.setdefault("start_prometheus_server", False)
    return ryot_telemetry.configure(gpu=False, max_models=max(100, n_models), **kwargs)


@contextmanager
def quiet() -> Iterator[None]:
    """Several live Telemetry objects in one process are intended here (private registries)."""
    log = logging.getLogger("ryot_telemetry")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


# --- the prometheus_client baseline: the same series, per model -------------------------------------------------


class Template:
    """ryot's series for one model (``PLACEHOLDER``), to build the same series for any models with prometheus_client.

    ``families``: (name, type, documentation, label keys, bucket bounds, [(label values, value)]). Families without
    a model label (``target_info``, ``ryot_service_info``) are built once.
    """

    def __init__(self, families: list[tuple[str, str, str, list[str], list[float], list[tuple[list[str], float]]]]):
        self.families = families

    @classmethod
    def from_ryot(cls) -> Template:
        with quiet():
            tel = configure(1)
        tel.recorder.stop_drainer()
        fill_models(tel.recorder, (PLACEHOLDER,))
        text = generate_latest(tel.registry).decode()
        tel.shutdown()
        families = []
        for fam in text_string_to_metric_families(text):
            samples = fam.samples
            if not samples:
                continue
            if fam.type == "histogram":
                keys = sorted({k for s in samples for k in s.labels if k != "le"})
                bounds = sorted({float(s.labels["le"]) for s in samples if "le" in s.labels} - {math.inf})
                picked = [s for s in samples if s.name.endswith("_sum")]
            else:
                keys = sorted({k for s in samples for k in s.labels})
                bounds = []
                picked = [s for s in samples if fam.type != "counter" or s.name.endswith("_total")]
            series = [([s.labels.get(k, "") for k in keys], s.value) for s in picked]
            families.append((fam.name, fam.type, fam.documentation or fam.type, keys, bounds, series))
        return cls(families)

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.families, f)

    @classmethod
    def load(cls, path: str) -> Template:
        with open(path) as f:
            return cls([tuple(x) for x in json.load(f)])  # type: ignore[misc]

    def registry(self, models: tuple[str, ...], registry: CollectorRegistry | None = None) -> CollectorRegistry:
        """A prometheus_client registry with these series for ``models``; gauges are ``livesum`` in multiprocess
        mode, as ryot merges its in-flight and token-rate gauges."""
        reg = registry if registry is not None else CollectorRegistry()
        self.add(models, reg, {}, once=True)
        return reg

    def add(self, models: tuple[str, ...], reg: CollectorRegistry, made: dict[str, Any], *, once: bool) -> None:
        """Add ``models``' series to ``reg`` (``made``: the metric objects already there, by family name), and the
        series without a model label when ``once``."""
        for name, kind, doc, keys, bounds, series in self.families:
            metric = made.get(name)
            if metric is None:
                if kind == "histogram":
                    metric = Histogram(name, doc, keys, buckets=bounds, registry=reg)
                elif kind == "counter":
                    metric = Counter(name, doc, keys, registry=reg)
                else:
                    metric = Gauge(name, doc, keys, registry=reg, multiprocess_mode="livesum")
                made[name] = metric
            for values, value in series:
                per_model = PLACEHOLDER in values
                if not per_model and not once:
                    continue
                for model in models if per_model else ("",):
                    # a family without labels is its own child (prometheus_client before 0.21 refuses .labels())
                    child = metric.labels(*(model if v == PLACEHOLDER else v for v in values)) if keys else metric
                    if kind == "histogram":
                        child.observe(value)
                    elif kind == "counter":
                        child.inc(value)
                    else:
                        child.set(value)


# --- statistics ---------------------------------------------------------------------------------------------------


def noise(xs: list[float]) -> float | None:
    """Interquartile range over the median of the rounds; None with fewer than 3 rounds."""
    if len(xs) < 3:
        return None
    q = statistics.quantiles(xs, n=4, method="inclusive")
    med = statistics.median(xs)
    return (q[2] - q[0]) / med if med else None


def growth(a: int, ca: float, b: int, cb: float) -> float:
    """Cost multiplier per doubling of the size between sizes a < b."""
    return float((cb / ca) ** (1 / math.log2(b / a))) if ca > 0 and cb > 0 else math.nan


def point(
    axis: str,
    size: int,
    curve: str,
    value: float,
    unit: str,
    *,
    baseline: str | None = None,
    baseline_value: float | None = None,
    goal: str | None = None,
    met: bool | None = None,
    noise: float | None = None,
) -> Record:
    """One point of a curve, for ``--json`` (the ``curves`` list; shape in the module docstring); numbers to four
    significant digits, so that a committed file's diffs stay readable."""
    ratio = value / baseline_value if baseline_value else None
    return {
        "axis": axis,
        "size": size,
        "curve": curve,
        "name": f"scale: {curve}, {size} {axis}",
        "value": sig(value),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": sig(baseline_value),
        "ratio": sig(ratio),
        "goal": goal,
        "met": met,
        "noise": sig(noise),
    }


def sig(x: float | None, digits: int = 4) -> float | None:
    """``x`` to ``digits`` significant digits (integers and NaN unchanged)."""
    if x is None or isinstance(x, int) or not math.isfinite(x) or x == 0:
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


LINEAR = 2.1
LINEAR_GOAL = "<= 2.1 (linear: 2.0)"


def worst_growth(sizes: list[int], costs: list[float]) -> float:
    """The largest growth per doubling between consecutive sizes."""
    return max(growth(a, ca, b, cb) for a, ca, b, cb in zip(sizes, costs, sizes[1:], costs[1:]))


# --- 1. models: scrape time and RSS in one process ------------------------------------------------------------------


def bench_models(n: int, template: Template, rounds: int) -> dict[str, Any]:
    """Scrape time with ``n`` models, ryot against prometheus_client with the same series, rounds interleaved."""
    models = model_names(n)
    with quiet():
        tel = configure(n)
    tel.recorder.stop_drainer()
    fill_models(tel.recorder, models)
    ours_text = generate_latest(tel.registry).decode()
    prom = template.registry(models)
    theirs_text = generate_latest(prom).decode()
    gc.collect()
    ours: list[float] = []
    theirs: list[float] = []
    for i in range(rounds):
        for side in ("ryot", "prom") if i % 2 == 0 else ("prom", "ryot"):
            t0 = cpu()
            generate_latest(tel.registry if side == "ryot" else prom)
            (ours if side == "ryot" else theirs).append(cpu() - t0)
    tel.shutdown()
    ratios = [o / t for o, t in zip(ours, theirs)]
    return {
        "models": n,
        "series": count_series(ours_text),
        "prom_series": count_series(theirs_text),
        "overflow": "otel_metric_overflow" in ours_text,
        "ryot_ms": statistics.median(ours) * 1e3,
        "prom_ms": statistics.median(theirs) * 1e3,
        "ratio": statistics.median(ratios),
        "noise": noise(ratios),
    }


def bench_handoff(n: int, rounds: int) -> dict[str, Any]:
    """One multi-process hand-off (collect, encode, write) of a worker holding ``n`` models' series, in CPU time of
    this thread; nothing new between hand-offs, so it is the part that grows with the series, not the traffic."""
    with tempfile.TemporaryDirectory() as d:
        with quiet():
            tel = configure(n, multiproc_dir=d, exporters="none")
        tel.recorder.stop_drainer()
        mp = tel.multiproc
        mp._stop.set()
        if mp._thread is not None:
            mp._thread.join()
        fill_models(tel.recorder, model_names(n))
        mp.snapshot()
        times = []
        for _ in range(rounds):
            t0 = cpu()
            mp._refresh_collectors()
            mp.snapshot()
            times.append(cpu() - t0)
        tel.shutdown()
    return {"ms": statistics.median(times) * 1e3, "noise": noise(times)}


def rss_child(side: str, n: int, template_path: str) -> dict[str, Any]:
    """RSS growth of ``n`` models' series and one scrape: the first model (and a scrape) before the baseline, so
    imports and first-use allocations are outside it."""
    models = model_names(n)
    if side == "ryot":
        tel = configure(n)
        tel.recorder.stop_drainer()
        fill_models(tel.recorder, models[:1])
        generate_latest(tel.registry)
        gc.collect()
        before = rss_bytes()
        fill_models(tel.recorder, models[1:])
        text = generate_latest(tel.registry).decode()
    else:
        template = Template.load(template_path)
        reg = CollectorRegistry()
        made: dict[str, Any] = {}
        template.add(models[:1], reg, made, once=True)
        generate_latest(reg)
        gc.collect()
        before = rss_bytes()
        template.add(models[1:], reg, made, once=False)
        text = generate_latest(reg).decode()
    series = count_series(text)
    del text
    gc.collect()
    return {"side": side, "models": n, "growth_mb": (rss_bytes() - before) / 1e6, "series": series}


def bench_rss(side: str, n: int, template_path: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--rss", side, str(n), template_path],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- 2. workers: merged scrape and hand-off ---------------------------------------------------------------------


def worker(kind: str, directory: str, n: int, template_path: str) -> None:
    """A worker process: ``n`` models' series in ``directory`` the way its mode keeps them, then commands on stdin
    (one per line, one JSON reply per line): ``handoff K``, ``requests N``, ``record MODEL``, ``scrape MODEL``.

    ``ryot``: hand-off thread stopped after the first hand-off (the benchmark runs hand-offs itself; the files stay
    as written). ``live``: a ryot worker left ticking, answering scrapes (new-series measurement). ``prom``:
    prometheus_client multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` is set in its environment)."""
    models = model_names(n)
    tel: Any = None
    if kind == "prom":
        template = Template.load(template_path)
        template.add(models, CollectorRegistry(auto_describe=False), {}, once=True)
    else:
        tel = configure(n, multiproc_dir=directory, exporters="prometheus" if kind == "live" else "none")
        mp = tel.multiproc
        if kind == "ryot":
            tel.recorder.stop_drainer()  # the hand-off's collection drains, in the thread whose CPU is timed
            mp._stop.set()
            if mp._thread is not None:
                mp._thread.join()
        if n:
            fill_models(tel.recorder, models)
        mp.snapshot()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "handoff":
            times = []
            for _ in range(int(arg)):
                t0 = cpu()
                mp._refresh_collectors()  # as each tick does
                mp.snapshot()
                times.append(cpu() - t0)
            reply: Any = {"ms": statistics.median(times) * 1e3, "noise": noise(times)}
        elif cmd == "requests":
            reply = asyncio.run(worker_requests(kind, tel, models, int(arg)))
        elif cmd == "record":
            record_one(tel.recorder, arg, "chat_completion", "standard", 1, None, 100)
            reply = {"recorded": arg}
        elif cmd == "scrape":
            reply = {"value": scraped_requests(generate_latest(tel.registry).decode(), arg)}
        else:
            break
        print(json.dumps(reply), flush=True)
    if tel is not None:
        tel.shutdown()


def scraped_requests(text: str, model: str) -> float | None:
    """The successful chat requests of ``model`` in an exposition; None when the series is absent."""
    mark = f'model="{model}"'
    for line in text.splitlines():
        if line.startswith("ryot_inference_requests_total{") and mark in line and 'status="success"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def worker_requests(kind: str, tel: Any, models: tuple[str, ...], n: int, rounds: int = 5) -> dict[str, Any]:
    """CPU per request in a worker over ``models``: ``n`` non-streaming calls, then (ryot) the hand-off carrying
    them; prometheus_client's multiprocess mode writes each value into its mmap file instead."""
    params = [make_params(m) for m in models]
    response = make_response()
    if kind == "prom":
        from prometheus_client import CollectorRegistry as Registry

        router: Any = PromClientRouter(NoopRouter(response), Registry(auto_describe=False))
    else:
        router = tel.instrument_router(NoopRouter(response))
        mp = tel.multiproc
    bare = NoopRouter(response)
    call, bare_call = router.openai_chat_completion, bare.openai_chat_completion
    for p in params:
        await call(p)
    if kind != "prom":
        mp.snapshot()
    per_request = []
    for _ in range(rounds):
        t0 = cpu()
        for i in range(n):
            await bare_call(params[i % len(params)])
        base = cpu() - t0
        t0 = cpu()
        for i in range(n):
            await call(params[i % len(params)])
        if kind != "prom":
            mp._refresh_collectors()
            mp.snapshot()
        per_request.append(max(cpu() - t0 - base, 0.0) / n * 1e9)
    return {"ns": statistics.median(per_request), "noise": noise(per_request)}


class Workers:
    """Worker processes of one kind sharing ``directory``; more can be added."""

    def __init__(self, kind: str, directory: str, n_models: int, template_path: str) -> None:
        self.kind, self.directory, self.n_models, self.template_path = kind, directory, n_models, template_path
        self.procs: list[subprocess.Popen[str]] = []

    def grow(self, total: int) -> None:
        env = dict(os.environ)
        if self.kind == "prom":
            env["PROMETHEUS_MULTIPROC_DIR"] = self.directory
        args = [sys.executable, "-m", "benchmarks.scale", "--worker", self.kind, self.directory]
        new = [
            subprocess.Popen(
                [*args, str(self.n_models), self.template_path],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(total - len(self.procs))
        ]
        self.procs += new
        for p in new:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"a {self.kind} worker exited before it was ready (rc {p.wait()})")

    def ask(self, i: int, command: str) -> Any:
        p = self.procs[i]
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(command + "\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())

    def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in self.procs:
            p.wait(timeout=60)
            if p.stdout is not None:
                p.stdout.close()
        self.procs = []


def dir_bytes(directory: str, prefix: str, skip: str = "") -> list[int]:
    """Disk blocks in use (prometheus_client's mmap files are sparse: their size is what they reserved)."""
    return [
        e.stat().st_blocks * 512
        for e in os.scandir(directory)
        if e.name.startswith(prefix) and e.name.endswith((".pb", ".db")) and e.name != skip
    ]


def bench_workers(sizes: tuple[int, ...], n_models: int, template_path: str, rounds: int) -> list[dict[str, Any]]:
    """Merged scrape, hand-off, housekeeping and file size at each worker count (workers added, not restarted)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    from ryot_telemetry.multiproc.directory import housekeep

    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as ryot_dir, tempfile.TemporaryDirectory() as prom_dir:
        ours = Workers("ryot", ryot_dir, n_models, template_path)
        theirs = Workers("prom", prom_dir, n_models, template_path)
        with quiet():
            tel = configure(n_models, multiproc_dir=ryot_dir)
        mp = tel.multiproc
        mp._stop.set()  # this process only scrapes: no ticks competing with the timed scrapes
        if mp._thread is not None:
            mp._thread.join()
        prom = CollectorRegistry()
        MultiProcessCollector(prom, path=prom_dir)
        try:
            for w in sizes:
                ours.grow(w)
                theirs.grow(w)
                ours_text = generate_latest(tel.registry).decode()
                theirs_text = generate_latest(prom).decode()
                gc.collect()
                t_ours: list[float] = []
                t_theirs: list[float] = []
                for i in range(rounds):
                    for side in ("ryot", "prom") if i % 2 == 0 else ("prom", "ryot"):
                        t0 = cpu()
                        generate_latest(tel.registry if side == "ryot" else prom)
                        (t_ours if side == "ryot" else t_theirs).append(cpu() - t0)
                ratios = [o / t for o, t in zip(t_ours, t_theirs)]
                # hand-off: the first, a middle and the last worker (the others are alike: same series)
                picks = sorted({0, w // 2, w - 1})
                handoffs = [ours.ask(i, "handoff 5") for i in picks]
                hk = []
                for _ in range(5):
                    t0 = cpu()
                    housekeep(ryot_dir, mp.me, mp.resource)
                    hk.append(cpu() - t0)
                ours_files, theirs_files = dir_bytes(ryot_dir, "w-", mp.me.file_name), dir_bytes(prom_dir, "")
                out.append(
                    {
                        "workers": w,
                        "series": count_series(ours_text),
                        "prom_series": count_series(theirs_text),
                        "ryot_ms": statistics.median(t_ours) * 1e3,
                        "prom_ms": statistics.median(t_theirs) * 1e3,
                        "ratio": statistics.median(ratios),
                        "noise": noise(ratios),
                        "handoff_ms": statistics.median(h["ms"] for h in handoffs),
                        "handoff_noise": max((h["noise"] or 0.0) for h in handoffs),
                        "housekeep_ms": statistics.median(hk) * 1e3,
                        "file_kb": statistics.median(ours_files) / 1e3,
                        "prom_file_kb": sum(theirs_files) / len(theirs.procs) / 1e3,  # one file per metric kind
                    }
                )
            req_ours = ours.ask(0, "requests 2000")
            req_theirs = theirs.ask(0, "requests 2000")
            out[0]["request_ns"], out[0]["prom_request_ns"] = req_ours["ns"], req_theirs["ns"]
            out[0]["request_noise"] = max(req_ours["noise"] or 0.0, req_theirs["noise"] or 0.0)
        finally:
            tel.shutdown()
            ours.close()
            theirs.close()
    return out


# --- 3. a new series in a multi-process scrape ------------------------------------------------------------------


def bench_new_series(trials: int, every: float = SCRAPE_EVERY) -> list[dict[str, Any]]:
    """Per trial: scrapes from the first showing the new series (at 0) to the first showing its increment, and the
    seconds from the request to that scrape; two workers answer the scrapes in turn, a third records."""
    out = []
    with tempfile.TemporaryDirectory() as d:
        live = Workers("live", d, 0, "-")
        try:
            live.grow(3)
            # Prometheus has been scraping: a reader that never collected is not waited for (``new_series``)
            for k in range(3):
                time.sleep(every)
                live.ask(k % 2, "scrape none")
            for t in range(trials):
                model = f"new-{t}"
                live.ask(2, f"record {model}")
                recorded = clock()
                first = recorded + every * (t + 1) / (trials + 1)  # the scrapes' phase varies per trial
                zero_at = shown_at = None
                for k in range(20):
                    time.sleep(max(0.0, first + k * every - clock()))
                    began = clock()
                    value = live.ask(k % 2, f"scrape {model}")["value"]
                    if value is not None and zero_at is None:
                        zero_at = k
                    if value:
                        shown_at = k
                        break
                out.append(
                    {
                        "scrapes_after_zero": None if shown_at is None or zero_at is None else shown_at - zero_at,
                        "seconds": None if shown_at is None else began - recorded,
                        "zero_seen": zero_at is not None,
                    }
                )
        finally:
            live.close()
    return out


# --- report -------------------------------------------------------------------------------------------------------


def report(quick: bool, rows: list[Row], curves: list[Record], size: Size | None = None) -> None:
    """Section ``scale`` of ``python -m benchmarks``: prints the curves, appends summary rows and curve points."""
    disable_created_metrics()  # as run.main does: OTel writes no *_created series, so the baseline writes none either
    size = size or (QUICK if quick else FULL)
    template = Template.from_ryot()
    with tempfile.TemporaryDirectory() as tmp:
        template_path = os.path.join(tmp, "template.json")
        template.dump(template_path)
        _models(size.models, template, template_path, size.quick, rows, curves)
        _workers(size.workers, size.worker_models, template_path, size.quick, rows, curves)
    _new_series(size.trials, rows, curves)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _models(
    sizes: tuple[int, ...], template: Template, template_path: str, quick: bool, rows: list[Row], curves: list[Record]
) -> None:
    print(f"\n8a. scale: scrape time, RSS and hand-off with {', '.join(map(str, sizes))} models (every router series)")
    print(
        f"   {'models':>6} {'lines':>8} {'ryot ms':>9} {'prom ms':>9} {'ratio':>6} {'noise':>6} "
        f"{'ryot MB':>8} {'prom MB':>8} {'ratio':>6} {'hand-off ms':>11}"
    )
    res = []
    for n in sizes:
        rounds = 5 if quick else (21 if n <= 10 else 9 if n <= 100 else 5)
        s = bench_models(n, template, rounds)
        s["ryot_mb"] = bench_rss("ryot", n, template_path)["growth_mb"]
        s["prom_mb"] = bench_rss("prom", n, template_path)["growth_mb"]
        handoff = bench_handoff(n, 5)
        s["handoff_ms"], s["handoff_noise"] = handoff["ms"], handoff["noise"]
        res.append(s)
        flag = " SERIES DIFFER" if s["series"] != s["prom_series"] else ""
        flag += " SDK OVERFLOW" if s["overflow"] else ""
        print(
            f"   {n:>6} {s['series']:>8} {s['ryot_ms']:>9.1f} {s['prom_ms']:>9.1f} {s['ratio']:>5.2f}x "
            f"{s['noise'] or 0:>6.2f} {s['ryot_mb']:>8.1f} {s['prom_mb']:>8.1f} "
            f"{s['ryot_mb'] / s['prom_mb']:>5.2f}x {s['handoff_ms']:>11.1f}{flag}"
        )
        goal = "<= 1.5" if n == 1000 else None
        scrape = point(
            "models",
            n,
            "scrape",
            s["ryot_ms"],
            "ms",
            baseline="prometheus_client",
            baseline_value=s["prom_ms"],
            goal=goal,
            noise=s["noise"],
        )
        scrape["ratio"] = sig(s["ratio"])  # the median of per-round ratios
        scrape["met"] = None if goal is None else s["ratio"] <= 1.5
        curves += [
            scrape,
            point(
                "models",
                n,
                "exposition",
                s["series"],
                "lines",
                baseline="prometheus_client",
                baseline_value=s["prom_series"],
            ),
            point(
                "models", n, "RSS growth", s["ryot_mb"], "MB", baseline="prometheus_client", baseline_value=s["prom_mb"]
            ),
            point("models", n, "hand-off CPU", s["handoff_ms"], "ms", noise=s["handoff_noise"]),
        ]
    ns = [s["models"] for s in res]
    top = res[-1]
    scrape_growth = worst_growth(ns, [s["ryot_ms"] for s in res])
    handoff_growth = worst_growth(ns, [s["handoff_ms"] for s in res])
    rows += [
        (
            f"scale: scrape, {top['models']} models / prometheus_client",
            f"{top['ratio']:.2f}x",
            "<= 1.5x",
            _verdict(top["ratio"] <= 1.5) if top["models"] == 1000 else "(goal at 1,000 models)",
        ),
        (
            "scale: scrape growth per doubling of models (worst)",
            f"{scrape_growth:.2f}x",
            LINEAR_GOAL,
            _verdict(scrape_growth <= LINEAR),
        ),
        (f"scale: RSS, {top['models']} models / prometheus_client", f"{top['ryot_mb'] / top['prom_mb']:.2f}x", "", ""),
        (
            "scale: hand-off growth per doubling of models (worst)",
            f"{handoff_growth:.2f}x",
            LINEAR_GOAL,
            _verdict(handoff_growth <= LINEAR),
        ),
    ]


def _workers(
    sizes: tuple[int, ...], n_models: int, template_path: str, quick: bool, rows: list[Row], curves: list[Record]
) -> None:
    rounds = 5 if quick else 9
    print(
        f"\n8b. scale: {', '.join(map(str, sizes))} worker processes x {n_models} models, merged scrape ({rounds} "
        f"rounds), hand-off per worker (CPU of its thread), leader housekeeping per tick, file per worker"
    )
    print(
        f"   {'workers':>7} {'lines':>8} {'ryot ms':>9} {'prom ms':>9} {'ratio':>6} {'noise':>6} "
        f"{'hand-off ms':>11} {'housekeep ms':>12} {'file KB':>8} {'prom KB':>8}"
    )
    res = bench_workers(sizes, n_models, template_path, rounds)
    for r in res:
        flag = " SERIES DIFFER" if r["series"] != r["prom_series"] else ""
        print(
            f"   {r['workers']:>7} {r['series']:>8} {r['ryot_ms']:>9.1f} {r['prom_ms']:>9.1f} {r['ratio']:>5.2f}x "
            f"{r['noise'] or 0:>6.2f} {r['handoff_ms']:>11.1f} {r['housekeep_ms']:>12.2f} {r['file_kb']:>8.0f} "
            f"{r['prom_file_kb']:>8.0f}{flag}"
        )
        w = r["workers"]
        goal = "<= 1.0" if w == 32 else None
        scrape = point(
            "workers",
            w,
            "merged scrape",
            r["ryot_ms"],
            "ms",
            baseline="prometheus_client multiprocess",
            baseline_value=r["prom_ms"],
            goal=goal,
            noise=r["noise"],
        )
        scrape["ratio"] = sig(r["ratio"])
        scrape["met"] = None if goal is None else r["ratio"] <= 1.0
        curves += [
            scrape,
            point("workers", w, "hand-off CPU per worker", r["handoff_ms"], "ms", noise=r["handoff_noise"]),
            point("workers", w, "leader housekeeping per tick", r["housekeep_ms"], "ms"),
            point(
                "workers",
                w,
                "file per worker",
                r["file_kb"],
                "KB",
                baseline="prometheus_client multiprocess",
                baseline_value=r["prom_file_kb"],
            ),
        ]
    first, top = res[0], res[-1]
    req_ratio = first["request_ns"] / first["prom_request_ns"]
    print(
        f"   per request in a worker, {n_models} models, 2,000 requests per hand-off: ryot (path + hand-off) "
        f"{first['request_ns']:.0f} ns CPU, prometheus_client multiprocess {first['prom_request_ns']:.0f} ns "
        f"({req_ratio:.2f}x); one hand-off of {first['handoff_ms']:.1f} ms twice a second is "
        f"{first['handoff_ms'] / 5:.1f}% of a core per worker under traffic"
    )
    curves.append(
        point(
            "workers",
            first["workers"],
            "CPU per request in a worker (2,000 per hand-off)",
            first["request_ns"],
            "ns",
            baseline="prometheus_client multiprocess",
            baseline_value=first["prom_request_ns"],
            noise=first["request_noise"],
        )
    )
    ws = [r["workers"] for r in res]
    scrape_growth = worst_growth(ws, [r["ryot_ms"] for r in res])
    rows += [
        (
            f"scale: merged scrape, {top['workers']} workers / prometheus_client multiprocess",
            f"{top['ratio']:.2f}x",
            "<= 1.0x",
            _verdict(top["ratio"] <= 1.0) if top["workers"] == 32 else "(goal at 32 workers)",
        ),
        (
            "scale: merged scrape growth per doubling of workers (worst)",
            f"{scrape_growth:.2f}x",
            LINEAR_GOAL,
            _verdict(scrape_growth <= LINEAR),
        ),
        (
            "scale: worker CPU per request / prometheus_client multiprocess",
            f"{req_ratio:.2f}x",
            "",
            f"{n_models} models, 2,000 requests per hand-off",
        ),
    ]


def _new_series(trials: int, rows: list[Row], curves: list[Record]) -> None:
    res = bench_new_series(trials)
    after = [r["scrapes_after_zero"] for r in res]
    seconds = [r["seconds"] for r in res]
    shown = [a for a in after if a is not None]
    worst = max(shown) if len(shown) == len(after) else None
    print(
        f"\n8c. scale: a new series' first increment in a multi-process scrape, {trials} trials, 3 workers, scrapes "
        f"every {SCRAPE_EVERY:.1f} s by two workers in turn: scrapes after the one showing 0: {after}; seconds from "
        f"the request to the scrape showing it: {', '.join('-' if s is None else f'{s:.2f}' for s in seconds)}"
    )
    for t, (a, sec) in enumerate(zip(after, seconds), 1):
        curves += [
            point(
                "trial",
                t,
                "new series: scrapes after its zero",
                math.nan if a is None else a,
                "scrapes",
                goal="<= 1",
                met=a is not None and a <= 1,
            ),
            point(
                "trial",
                t,
                f"new series: seconds to show, a scrape every {SCRAPE_EVERY:g} s",
                math.nan if sec is None else sec,
                "s",
            ),
        ]
    rows.append(
        (
            "scale: new series shown, scrapes after its zero (worst)",
            "never" if worst is None else f"{worst}",
            "<= 1",
            _verdict(worst is not None and worst <= 1),
        )
    )


def main(argv: list[str]) -> int:
    disable_created_metrics()
    if argv[:1] == ["--rss"]:
        print(json.dumps(rss_child(argv[1], int(argv[2]), argv[3])))
        return 0
    if argv[:1] == ["--worker"]:
        worker(argv[1], argv[2], int(argv[3]), argv[4])
        return 0
    rows: list[Row] = []
    curves: list[Record] = []
    report("--quick" in argv, rows, curves)
    for r in curves:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

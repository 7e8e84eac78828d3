"""A/B in one process: this checkout's ryot_telemetry against an earlier revision of it (default: cb16a6d, before
the outcome counters, the cost issue 23 asks to pay back), and optionally a second one (``RYOT_AB_ALSO=REV``, say
the revision a change started from) in the same run.

The baseline's ``src/ryot_telemetry`` is taken from git (``git archive``) into a temporary directory as a package
under another name, so both versions are imported side by side and share the interpreter, the OTel SDK and the
machine's noise. Each round times, in rotated order, the bare call and both wrappers (request path, then the drain of
what it queued), and one long stream through each; the reported ratios are new / baseline of the per-round overheads
over the bare call, median over rounds. Needs git and the revision (a tarball or wheel install has neither: the
section is skipped with a message).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import importlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import ryot_telemetry
from ryot_telemetry.demo.simulate import Chunk, ChunkChoice, Delta

from .common import (
    MODELS,
    NoopRouter,
    clock,
    make_params,
    make_response,
    median,
    ns,
    timed,
    verdict,
)

DEFAULT_REV = "cb16a6d"  # before the outcome counters (issue 23: the total cost back to at most this)
ALIAS = "ryot_ab_baseline"
ALSO_ALIAS = "ryot_ab_also"
PKG = "ryot_telemetry"
GOAL = 1.05  # issue 9: the guarded request path stays within 5% of the one before
TOTAL_GOAL = 1.00  # issue 23: request path + drain at most the baseline's
CHUNK_GOAL = 1.05  # issue 23: per chunk within 5% of the baseline


class Unavailable(Exception):
    """The baseline revision cannot be had here (no git, not a checkout, unknown revision)."""


def _git(root: str, *args: str) -> bytes:
    try:
        out = subprocess.run(["git", "-C", root, *args], capture_output=True, check=False, timeout=60)
    except FileNotFoundError:
        raise Unavailable("git is not installed") from None
    if out.returncode != 0:
        msg = out.stderr.decode(errors="replace").strip().splitlines()
        raise Unavailable(f"git {args[0]}: {msg[-1] if msg else f'exit {out.returncode}'}")
    return out.stdout


def _rewrite_imports(path: str, alias: str = ALIAS) -> int:
    """Point the copy's absolute ``ryot_telemetry`` imports at the alias (so it never imports the current package).
    Returns how many statements were rewritten; raises Unavailable for a form that cannot be rewritten safely."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    lines = source.splitlines(keepends=True)
    changed = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if not any(n == PKG or n.startswith(PKG + ".") for n in names):
            continue
        i = node.lineno - 1
        line = lines[i]
        if isinstance(node, ast.Import):
            if len(node.names) != 1 or node.names[0].name != PKG or node.names[0].asname:
                raise Unavailable(f"{os.path.basename(path)}:{node.lineno}: cannot rewrite {line.strip()!r}")
            lines[i] = line.replace(f"import {PKG}", f"import {alias} as {PKG}", 1)
        else:
            lines[i] = line.replace(f"from {PKG}", f"from {alias}", 1)
        changed += 1
    if changed:
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(lines))
    return changed


@contextlib.contextmanager
def baseline(rev: str, alias: str = ALIAS) -> Iterator[tuple[ModuleType, str]]:
    """Yield (the baseline package imported as ``alias``, its commit). The temporary copy is removed after; while
    it exists, ``module.__path__`` locates it (the memory section's child processes import it from there)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if shutil.which("git") is None:
        raise Unavailable("git is not installed")
    try:
        top = _git(root, "rev-parse", "--show-toplevel").decode().strip()
    except Unavailable:
        raise Unavailable(f"{root} is not a git checkout") from None
    try:
        commit = _git(top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
    except Unavailable:
        raise Unavailable(f"no commit {rev!r} in {top}") from None
    try:
        tar = _git(top, "archive", "--format=tar", commit, f"src/{PKG}")
    except Unavailable:
        raise Unavailable(f"{rev} has no src/{PKG}") from None
    tmp = tempfile.mkdtemp(prefix="ryot-ab-")
    try:
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuse links and paths out of tmp
                tf.extractall(tmp, filter="data")
            else:
                tf.extractall(tmp)
        pkg_dir = os.path.join(tmp, alias)
        os.rename(os.path.join(tmp, "src", PKG), pkg_dir)
        for dirpath, _, files in os.walk(pkg_dir):
            for name in files:
                if name.endswith(".py"):
                    _rewrite_imports(os.path.join(dirpath, name), alias)
        sys.path.insert(0, tmp)
        try:
            module = importlib.import_module(alias)
        finally:
            sys.path.remove(tmp)
        try:
            yield module, commit
        finally:
            for name in [m for m in sys.modules if m == alias or m.startswith(alias + ".")]:
                del sys.modules[name]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _configure(pkg: Any) -> Any:
    """The production set-up of common.telemetry(), for either version; the background drainer (where the version has
    one) is stopped, so that the request path and the drain are timed apart."""
    log = logging.getLogger("ryot_telemetry")  # both versions log there; two live Telemetry objects are intended
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        tel = pkg.configure(
            exporters="prometheus", prometheus_registry="private", start_prometheus_server=False, gpu=False
        )
    finally:
        log.setLevel(level)
    stop = getattr(tel.recorder, "stop_drainer", None)
    if stop is not None:
        stop()
    return tel


async def bench_ab(base_pkg: Any, n: int, rounds: int, also_pkg: Any = None) -> dict[str, float]:
    """ns per request (request path over the bare call, drain, their total), for the baseline, this checkout and
    optionally a second revision (``also``), rotated order each round; ratios are this checkout's (and ``also``'s)
    per-round overheads over the baseline's, median over rounds."""
    params = [make_params(m) for m in MODELS]
    response = make_response()
    tels = _telemetries(base_pkg, also_pkg)
    calls = {"bare": NoopRouter(response).openai_chat_completion}
    for name, tel in tels.items():
        calls[name] = tel.instrument_router(NoopRouter(response)).openai_chat_completion
    for call in calls.values():  # warm-up: every series exists, every code path has run
        await timed(2000, call, params)
    for tel in tels.values():
        tel.recorder.drain()
    names = list(calls)
    t: dict[str, list[float]] = {f"{p}{k}": [] for k in names for p in ("", "d")}
    for i in range(rounds):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            # Every block starts from the same collector state, so the cyclic GC's full collections (tens of ms,
            # triggered by the queued requests) are not charged to whichever variant happens to cross a threshold.
            gc.collect()
            t[name].append(ns(await timed(n, calls[name], params), n))
            if name in tels:
                t0 = clock()
                drained = tels[name].recorder.drain()  # what the next scrape/export would do first
                t["d" + name].append(ns(clock() - t0, n))
                assert drained == n, (name, drained, n)
    for tel in tels.values():
        tel.shutdown()
    per: dict[str, dict[str, list[float]]] = {}
    for v in tels:
        path = [w - b for w, b in zip(t[v], t["bare"])]
        per[v] = {"path": path, "drain": t["d" + v], "total": [p + d for p, d in zip(path, t["d" + v])]}
    return {"bare_ns": median(t["bare"]), **_ratios(per)}


def _telemetries(base_pkg: Any, also_pkg: Any) -> dict[str, Any]:
    pkgs = {"base": base_pkg, **({"also": also_pkg} if also_pkg is not None else {}), "new": ryot_telemetry}
    return {name: _configure(pkg) for name, pkg in pkgs.items()}


def _ratios(per: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Each variant's median per measure, and its per-round ratios to the baseline's: median, min and max."""
    out: dict[str, float] = {}
    for v, measures in per.items():
        for k, vals in measures.items():
            out[f"{k}_{v}_ns"] = median(vals)
            if v != "base":
                ratios = [a / b for a, b in zip(vals, per["base"][k])]
                out[f"{k}_ratio_{v}"] = median(ratios)
                out[f"{k}_ratio_{v}_min"] = min(ratios)
                out[f"{k}_ratio_{v}_max"] = max(ratios)
    return out


async def bench_chunks(base_pkg: Any, n_chunks: int, rounds: int, also_pkg: Any = None) -> dict[str, float]:
    """ns per chunk over the bare generator, one long stream per variant and round (rotated order), of two kinds:
    ``chunk``, the caller asks for usage (nothing to hide); ``hidden``, ryot asks for usage and keeps the usage chunk
    from the caller, so the loop reads every chunk's usage. Ratios as ``bench_ab``'s."""
    response = make_response()
    tels = _telemetries(base_pkg, also_pkg)
    chunks = [Chunk("c1", "model-0", [ChunkChoice(0, delta=Delta(content="tok "))]) for _ in range(n_chunks)]
    streams = {"bare": NoopRouter(response, chunks)}
    for name, tel in tels.items():
        streams[name] = tel.instrument_router(NoopRouter(response, chunks))
    asked = make_params(stream=True)
    unasked = make_params(stream=True)
    unasked.stream_options = None

    async def consume(router: Any, sparams: Any) -> float:
        t0 = clock()
        stream = await router.openai_chat_completion(sparams)
        async for _ in stream:
            pass
        return clock() - t0

    names = list(streams)
    t: dict[str, list[float]] = {f"{p}{k}": [] for k in names for p in ("s", "h")}
    for i in range(rounds + 1):  # round 0 warms up
        order = names[i % len(names) :] + names[: i % len(names)]
        for prefix, sparams in (("s", asked), ("h", unasked)):
            for name in order:
                gc.collect()
                took = ns(await consume(streams[name], sparams), n_chunks)
                if i:
                    t[prefix + name].append(took)
                if name in tels:
                    tels[name].recorder.drain()  # the stream's one request, untimed
    for tel in tels.values():
        tel.shutdown()
    per = {
        v: {k: [w - b for w, b in zip(t[p + v], t[p + "bare"])] for k, p in (("chunk", "s"), ("hidden", "h"))}
        for v in tels
    }
    return {"chunk_bare_ns": median(t["sbare"]), **_ratios(per)}


def chunk_child(alias: str, also_alias: str | None, n_chunks: int, rounds: int) -> None:
    """Child process body of ``chunks_in_processes``: print ``bench_chunks``' figures as JSON."""
    import json

    logging.getLogger("ryot_telemetry").setLevel(logging.ERROR)
    base_pkg = importlib.import_module(alias)
    also_pkg = importlib.import_module(also_alias) if also_alias else None
    print(json.dumps(asyncio.run(bench_chunks(base_pkg, n_chunks, rounds, also_pkg))), flush=True)


def chunks_in_processes(base_pkg: Any, also_pkg: Any, n_chunks: int, rounds: int, processes: int) -> dict[str, float]:
    """``bench_chunks`` in ``processes`` fresh interpreters, each figure the median over them. A stream's cost per
    chunk moves with where the interpreter's objects happen to lie in memory, by up to a tenth between processes and
    hardly within one: more rounds in one process would measure one layout more precisely, not the code."""
    pkgs = [base_pkg, *([also_pkg] if also_pkg is not None else [])]
    also = repr(also_pkg.__name__) if also_pkg is not None else "None"
    code = f"from benchmarks.ab import chunk_child; chunk_child({base_pkg.__name__!r}, {also}, {n_chunks}, {rounds})"
    runs = [_child(code, "chunk child", *pkgs) for _ in range(processes)]
    merged = {k: median([r[k] for r in runs]) for k in runs[0]}
    for k in [k for k in runs[0] if "_ratio_" in k and not k.endswith(("_min", "_max"))]:
        merged[f"{k}_min"] = min(r[k] for r in runs)  # here: the range over processes, not rounds
        merged[f"{k}_max"] = max(r[k] for r in runs)
    return merged


def run(quick: bool, rev: str | None = None) -> list[tuple[str, str, str, str]]:
    """Print the section and return its summary rows (none when the baseline is unavailable)."""
    rev = rev or DEFAULT_REV
    also_rev = os.environ.get("RYOT_AB_ALSO")
    n, rounds = (10000, 9) if quick else (20000, 21)
    n_chunks, chunk_rounds, processes = (20000, 15, 5) if quick else (50000, 21, 9)
    try:
        with contextlib.ExitStack() as stack:
            base_pkg, commit = stack.enter_context(baseline(rev))
            also_pkg, also_commit = stack.enter_context(baseline(also_rev, ALSO_ALIAS)) if also_rev else (None, "")
            r = asyncio.run(bench_ab(base_pkg, n, rounds, also_pkg))
            r.update(chunks_in_processes(base_pkg, also_pkg, n_chunks, chunk_rounds, processes))
            mem = memory_rows(quick, {commit[:7]: base_pkg, **({also_commit[:7]: also_pkg} if also_pkg else {})})
    except Unavailable as e:
        print(f"\n6. A/B against {rev}: skipped ({e}); it needs git and a checkout that has the revision")
        return []
    short = commit[:7]
    variants = [("new", "this checkout")] + ([("also", also_commit[:7])] if also_rev else [])
    print(
        f"\n6. A/B, against {short} (imported as {ALIAS}) in the same process, {n} non-streaming calls over "
        f"10 models x {rounds} rounds; one {n_chunks}-chunk stream per variant and kind x {chunk_rounds} rounds in "
        f"each of {processes} fresh processes (median over them); rotated order (median ns)"
    )
    print(f"   this checkout: {os.path.dirname(os.path.abspath(ryot_telemetry.__file__))}")
    print(f"   bare call {r['bare_ns']:.0f}; bare generator per chunk {r['chunk_bare_ns']:.0f}")
    print("   per chunk: the caller asks for usage (nothing to hide) / ryot asks for it and hides the usage chunk")
    print(f"   {'':16} {'request path':>12} {'drain':>8} {'total':>8} {'per chunk':>10} {'hidden':>8}")
    for v, label in [("base", short), *variants]:
        print(
            f"   {label:16} {r[f'path_{v}_ns']:12.0f} {r[f'drain_{v}_ns']:8.0f} {r[f'total_{v}_ns']:8.0f} "
            f"{r[f'chunk_{v}_ns']:10.0f} {r[f'hidden_{v}_ns']:8.0f}"
        )
    for v, label in variants:
        print(
            f"   {label} / {short}: request path {r[f'path_ratio_{v}']:.2f}, drain {r[f'drain_ratio_{v}']:.2f}, "
            f"total {r[f'total_ratio_{v}']:.2f} (per-round {r[f'total_ratio_{v}_min']:.2f}-"
            f"{r[f'total_ratio_{v}_max']:.2f}), per chunk {r[f'chunk_ratio_{v}']:.2f} (processes "
            f"{r[f'chunk_ratio_{v}_min']:.2f}-{r[f'chunk_ratio_{v}_max']:.2f}), hidden {r[f'hidden_ratio_{v}']:.2f} "
            f"({r[f'hidden_ratio_{v}_min']:.2f}-{r[f'hidden_ratio_{v}_max']:.2f})"
        )
    rows = [
        (
            f"A/B request path overhead, this checkout / {short}",
            f"{r['path_ratio_new']:.2f}",
            f"<= {GOAL:.2f}",
            verdict(r["path_ratio_new"] <= GOAL),
        ),
        (f"A/B drain per request, this checkout / {short}", f"{r['drain_ratio_new']:.2f}", "", ""),
        (
            f"A/B total per request (path + drain), this checkout / {short}",
            f"{r['total_ratio_new']:.2f}",
            f"<= {TOTAL_GOAL:.2f}",
            verdict(r["total_ratio_new"] <= TOTAL_GOAL),
        ),
        (
            f"A/B per-chunk overhead, usage asked by the caller, this checkout / {short}",
            f"{r['chunk_ratio_new']:.2f}",
            f"<= {CHUNK_GOAL:.2f}",
            verdict(r["chunk_ratio_new"] <= CHUNK_GOAL),
        ),
        (
            f"A/B per-chunk overhead, usage chunk hidden, this checkout / {short}",
            f"{r['hidden_ratio_new']:.2f}",
            f"<= {CHUNK_GOAL:.2f}",
            verdict(r["hidden_ratio_new"] <= CHUNK_GOAL),
        ),
    ]
    if also_rev:
        a = also_commit[:7]
        rows += [
            (f"A/B total per request, {a} / {short}", f"{r['total_ratio_also']:.2f}", "", ""),
            (f"A/B per-chunk overhead, usage asked, {a} / {short}", f"{r['chunk_ratio_also']:.2f}", "", ""),
            (f"A/B per-chunk overhead, usage hidden, {a} / {short}", f"{r['hidden_ratio_also']:.2f}", "", ""),
        ]
    return rows + mem


# --- memory and the slowest request behind a stalled drain or a dead OTLP endpoint --------------------------------

MEMORY_CASES = ("stalled", "dead-otlp")
"""``stalled``: the background drainer stopped and no collection (every finished request stays queued);
``dead-otlp``: the production set-up (drainer on) exporting every 200 ms to a closed port."""
RESPONSE_TEXT = 4096
"""Characters of completion text in each (fresh) response: what a queued request would pin if it kept it."""


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


async def _memory_child_run(alias: str, case: str, n: int) -> dict[str, float]:
    from ryot_telemetry.demo.simulate import Choice, Message, PromptDetails, Response, Usage

    from .common import rss_bytes

    pkg = importlib.import_module(alias)
    logging.getLogger("ryot_telemetry").setLevel(logging.CRITICAL)  # the dead endpoint's export errors
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    tel = pkg.configure(
        exporters="otlp",
        otlp_endpoint=f"http://127.0.0.1:{_closed_port()}",
        otlp_protocol="http/protobuf",
        export_interval_ms=200 if case == "dead-otlp" else 3_600_000,
        gpu=False,
    )
    if case == "stalled":
        tel.recorder.stop_drainer()
        tel.recorder.max_pending = n + 1  # the whole run stays queued, as behind a drain that never comes

    class Provider:
        async def openai_chat_completion(self, params: Any) -> Any:
            text = "x" * (RESPONSE_TEXT - 1) + str(len(params.model) % 10)  # a fresh string per response
            usage = Usage(120, 40, 160, PromptDetails(cached_tokens=30))
            return Response("r1", params.model, [Choice(0, message=Message(text))], usage)

    call = tel.instrument_router(Provider()).openai_chat_completion
    params = [make_params(m) for m in MODELS]
    for i in range(200):  # warm-up: every series exists
        await call(params[i % len(params)])
    gc.collect()
    before = rss_bytes()
    slowest = 0.0
    for i in range(n):
        t0 = clock()
        await call(params[i % len(params)])
        slowest = max(slowest, clock() - t0)
    gc.collect()
    return {"growth_mb": (rss_bytes() - before) / 1e6, "slowest_ms": slowest * 1e3}


def memory_child(alias: str, case: str, n: int) -> None:
    """Child process body: print the case's figures as JSON and leave at once (a dead endpoint's shutdown would
    wait for the exporter's retries)."""
    import json

    print(json.dumps(asyncio.run(_memory_child_run(alias, case, n))), flush=True)
    os._exit(0)


def _child(code: str, what: str, *baselines: ModuleType) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter in the repository root, the ``baselines`` (imported under their aliases)
    importable there too; the JSON object its last line prints."""
    import json

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    paths = [os.path.dirname(next(iter(pkg.__path__))) for pkg in baselines]  # the temporary copies' folders
    env["PYTHONPATH"] = os.pathsep.join([*paths, root, *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{what}: {out.stderr.strip().splitlines()[-1:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def memory_rows(quick: bool, baselines: dict[str, ModuleType]) -> list[tuple[str, str, str, str]]:
    """RSS growth and the slowest request over ``n`` requests per case, each variant in its own process."""
    n = 20_000 if quick else 50_000
    variants: dict[str, tuple[str, tuple[ModuleType, ...]]] = {
        label: (pkg.__name__, (pkg,)) for label, pkg in baselines.items()
    }
    variants["this checkout"] = (PKG, ())
    print(
        f"\n6b. memory and the slowest request, {n} non-streaming requests with {RESPONSE_TEXT}-character responses, "
        "own process per variant; stalled: drainer stopped, no collection; dead-otlp: exports to a closed port"
    )
    rows = []
    first = next(iter(baselines))
    for case in MEMORY_CASES:
        got = {
            label: _child(
                f"from benchmarks.ab import memory_child; memory_child({alias!r}, {case!r}, {n})",
                f"memory child {alias} {case}",
                *pkgs,
            )
            for label, (alias, pkgs) in variants.items()
        }
        for label, r in got.items():
            print(f"   {case:9} {label:14} RSS +{r['growth_mb']:7.1f} MB, slowest request {r['slowest_ms']:6.2f} ms")
        new, base = got["this checkout"], got[first]
        rows += [
            (
                f"RSS growth, {case} ({n} requests), this checkout vs {first}",
                f"{new['growth_mb']:.1f} MB",
                f"<= {base['growth_mb']:.1f} MB",
                verdict(new["growth_mb"] <= max(base["growth_mb"], 1.0)),
            ),
            (
                f"slowest request, {case}, this checkout vs {first}",
                f"{new['slowest_ms']:.2f} ms",
                f"<= {base['slowest_ms']:.2f} ms",
                verdict(new["slowest_ms"] <= base["slowest_ms"]),
            ),
        ]
    return rows

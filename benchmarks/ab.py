"""A/B in one process: this checkout's ryot_telemetry against an earlier revision of it (default: before the
hostile-input guards, 70245f1).

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

from .run import (
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

DEFAULT_REV = "70245f1"  # main before the hostile-input guards (0226a7e, the last release, works too)
ALIAS = "ryot_ab_baseline"
PKG = "ryot_telemetry"
GOAL = 1.05  # issue 9: the guarded request path stays within 5% of the one before


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


def _rewrite_imports(path: str) -> int:
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
            lines[i] = line.replace(f"import {PKG}", f"import {ALIAS} as {PKG}", 1)
        else:
            lines[i] = line.replace(f"from {PKG}", f"from {ALIAS}", 1)
        changed += 1
    if changed:
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(lines))
    return changed


@contextlib.contextmanager
def baseline(rev: str) -> Iterator[tuple[ModuleType, str]]:
    """Yield (the baseline package imported as ``ALIAS``, its commit). The temporary copy is removed after."""
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
        pkg_dir = os.path.join(tmp, ALIAS)
        os.rename(os.path.join(tmp, "src", PKG), pkg_dir)
        for dirpath, _, files in os.walk(pkg_dir):
            for name in files:
                if name.endswith(".py"):
                    _rewrite_imports(os.path.join(dirpath, name))
        sys.path.insert(0, tmp)
        try:
            module = importlib.import_module(ALIAS)
        finally:
            sys.path.remove(tmp)
        try:
            yield module, commit
        finally:
            for name in [m for m in sys.modules if m == ALIAS or m.startswith(ALIAS + ".")]:
                del sys.modules[name]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _configure(pkg: Any) -> Any:
    """The production set-up of run.telemetry(), for either version; the background drainer (where the version has
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


async def bench_ab(base_pkg: Any, n: int, rounds: int, n_chunks: int) -> dict[str, float]:
    """ns per request (request path over the bare call, drain) and per chunk (over the bare generator), new vs
    baseline, rotated order each round."""
    params = [make_params(m) for m in MODELS]
    response = make_response()
    tels = {"base": _configure(base_pkg), "new": _configure(ryot_telemetry)}
    chunks = [Chunk("c1", "model-0", [ChunkChoice(0, delta=Delta(content="tok "))]) for _ in range(n_chunks)]
    calls = {"bare": NoopRouter(response).openai_chat_completion}
    streams = {"bare": NoopRouter(response, chunks)}
    for name, tel in tels.items():
        calls[name] = tel.instrument_router(NoopRouter(response)).openai_chat_completion
        streams[name] = tel.instrument_router(NoopRouter(response, chunks))
    sparams = make_params(stream=True)

    async def consume(router: Any) -> float:
        t0 = clock()
        stream = await router.openai_chat_completion(sparams)
        async for _ in stream:
            pass
        return clock() - t0

    for name, call in calls.items():  # warm-up: every series exists, every code path has run
        await timed(2000, call, params)
        await consume(streams[name])
    for tel in tels.values():
        tel.recorder.drain()
    t: dict[str, list[float]] = {k: [] for k in ("bare", "base", "new", "dbase", "dnew", "sbare", "sbase", "snew")}
    names = list(calls)
    for i in range(rounds):
        order = names[i % 3 :] + names[: i % 3]
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
        for name in order:
            gc.collect()
            t["s" + name].append(ns(await consume(streams[name]), n_chunks))
            if name in tels:
                tels[name].recorder.drain()  # the stream's one request, untimed: the next drain counts n
    for tel in tels.values():
        tel.shutdown()
    path = {v: [w - b for w, b in zip(t[v], t["bare"])] for v in ("base", "new")}
    chunk = {v: [w - b for w, b in zip(t["s" + v], t["sbare"])] for v in ("base", "new")}
    return {
        "bare_ns": median(t["bare"]),
        "path_base_ns": median(path["base"]),
        "path_new_ns": median(path["new"]),
        "path_ratio": median([a / b for a, b in zip(path["new"], path["base"])]),
        "path_ratio_min": min(a / b for a, b in zip(path["new"], path["base"])),
        "path_ratio_max": max(a / b for a, b in zip(path["new"], path["base"])),
        "drain_base_ns": median(t["dbase"]),
        "drain_new_ns": median(t["dnew"]),
        "drain_ratio": median([a / b for a, b in zip(t["dnew"], t["dbase"])]),
        "chunk_bare_ns": median(t["sbare"]),
        "chunk_base_ns": median(chunk["base"]),
        "chunk_new_ns": median(chunk["new"]),
        "chunk_ratio": median([a / b for a, b in zip(chunk["new"], chunk["base"])]),
    }


def run(quick: bool, rev: str | None = None) -> list[tuple[str, str, str, str]]:
    """Print the section and return its summary rows (none when the baseline is unavailable)."""
    rev = rev or DEFAULT_REV
    n, rounds, n_chunks = (10000, 9, 20000) if quick else (20000, 21, 50000)
    try:
        with baseline(rev) as (base_pkg, commit):
            r = asyncio.run(bench_ab(base_pkg, n, rounds, n_chunks))
    except Unavailable as e:
        print(f"\n6. A/B against {rev}: skipped ({e}); it needs git and a checkout that has the revision")
        return []
    short = commit[:7]
    print(
        f"\n6. A/B, this checkout / {short} (imported as {ALIAS}) in the same process, {n} non-streaming calls over "
        f"10 models and one {n_chunks}-chunk stream per variant x {rounds} rounds, rotated order (median ns)"
    )
    print(
        f"   bare call {r['bare_ns']:.0f}; request path overhead: {short} +{r['path_base_ns']:.0f}, "
        f"this checkout +{r['path_new_ns']:.0f} (per-round ratio {r['path_ratio_min']:.2f}-{r['path_ratio_max']:.2f})"
    )
    print(f"   this checkout: {os.path.dirname(os.path.abspath(ryot_telemetry.__file__))}")
    print(f"   drain per request: {short} {r['drain_base_ns']:.0f}, this checkout {r['drain_new_ns']:.0f}")
    print(
        f"   per chunk over a bare generator ({r['chunk_bare_ns']:.0f}): {short} +{r['chunk_base_ns']:.0f}, "
        f"this checkout +{r['chunk_new_ns']:.0f}"
    )
    return [
        (
            f"A/B request path overhead, this checkout / {short}",
            f"{r['path_ratio']:.2f}",
            f"<= {GOAL:.2f}",
            verdict(r["path_ratio"] <= GOAL),
        ),
        (f"A/B drain per request, this checkout / {short}", f"{r['drain_ratio']:.2f}", "", ""),
        (f"A/B per-chunk overhead, this checkout / {short}", f"{r['chunk_ratio']:.2f}", "", ""),
    ]

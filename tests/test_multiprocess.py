"""Multi-process mode (``RYOT_TELEMETRY_MULTIPROC_DIR``) and fork safety, with real processes on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
MODEL = "llama-3.1-8b-instruct"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str, name: str, **match: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``match``."""
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items()):
                total += s.value
    return total


def _series(text: str, name: str) -> list[dict[str, str]]:
    return [dict(s.labels) for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name]


def _env(mp_dir: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RYOT_TELEMETRY_"))}
    env.update({"RYOT_TELEMETRY_GPU": "false", "PYTHONPATH": str(ROOT), **extra})
    if mp_dir is not None:
        env["RYOT_TELEMETRY_MULTIPROC_DIR"] = str(mp_dir)
    return env


def _worker_pids(mp_dir: Path) -> set[int]:
    return {int(p.name.split("-")[1]) for p in mp_dir.glob("w-*.pb")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def _uvicorn(mp_dir: Path, workers: int) -> Iterator[str]:
    """``uvicorn examples.fastapi_app:app --workers N`` with the multi-process directory set; yields the base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--workers", str(workers), "--port", str(port)],
        cwd=ROOT,
        env=_env(mp_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: len({p for p in _worker_pids(mp_dir) if _alive(p)}) >= workers, 60, f"{workers} workers")
        _wait(lambda: _get(f"{base}/metrics/") is not None, 30, "the app to answer")
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


def _get(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=5)  # a new connection each time: any worker may answer
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def _chat(base: str, i: int) -> bool:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "stream": i % 2 == 0}
    try:
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=10)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and (not body["stream"] or r.text.rstrip().endswith("[DONE]"))


def _scrape(base: str) -> str:
    text = _get(f"{base}/metrics/")
    assert text is not None
    return text


def test_uvicorn_workers_every_scrape_shows_the_server_total(tmp_path: Path) -> None:
    """uvicorn --workers 3 on the FastAPI example: 60 requests, then 9 scrapes of /metrics, each showing exactly 60
    requests, 60 latency observations, 30 TTFTs, in-flight 0 and one ryot_service_info."""
    n = 60
    with _uvicorn(tmp_path, 3) as base:
        with ThreadPoolExecutor(6) as pool:
            assert all(pool.map(lambda i: _chat(base, i), range(n)))
        time.sleep(1.0)
        for _ in range(9):
            text = _scrape(base)
            assert _samples(text, "ryot_inference_requests_total", model=MODEL, status="success") == n
            assert _samples(text, "ryot_inference_latency_seconds_count") == n
            assert _samples(text, "ryot_inference_latency_seconds_bucket", le="+Inf") == n
            assert _samples(text, "ryot_ttft_latency_seconds_count") == n // 2
            assert _samples(text, "ryot_active_inference_requests") == 0
            assert len(_series(text, "ryot_service_info")) == 1
        assert len({p for p in _worker_pids(tmp_path) if _alive(p)}) == 3

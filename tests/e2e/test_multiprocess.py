"""Multi-process mode (``RYOT_TELEMETRY_MULTIPROC_DIR``) and fork safety, with real processes on loopback."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client.parser import text_string_to_metric_families

from support.ogx import OGX, running_stack
from support.polling import during, until
from support.ports import free_port
from support.procs import stop_group

ROOT = Path(__file__).resolve().parents[2]
MODEL = "llama-3.1-8b-instruct"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


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


@contextlib.contextmanager
def _uvicorn(mp_dir: Path, workers: int, *, gunicorn_preload: bool = False) -> Iterator[str]:
    """``uvicorn examples.fastapi_app:app --workers N`` (or gunicorn with uvicorn workers and ``--preload``: the app,
    and so configure(), is imported once in the master, then forked) with the directory set; yields the base URL."""
    port = free_port()
    if gunicorn_preload:
        cmd = [sys.executable, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", str(workers)]
        cmd += ["--preload", "-b", f"127.0.0.1:{port}", "examples.fastapi_app:app"]
        workers += 1  # the master configured too: it is a live (idle) member of the server
    else:
        cmd = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--workers", str(workers)]
        cmd += ["--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=_env(mp_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        until(
            lambda: len({p for p in _worker_pids(mp_dir) if _alive(p)}) >= workers,
            60,
            f"{workers} workers",
            interval=0.1,
        )
        until(lambda: _get(f"{base}/metrics") is not None, 30, "the app to answer", interval=0.1)
        yield base
    finally:
        stop_group(proc, 15)
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
    text = _get(f"{base}/metrics")
    assert text is not None
    return text


@pytest.mark.parametrize(
    "server",
    [
        "uvicorn",
        pytest.param(
            "gunicorn",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("gunicorn") is None, reason="gunicorn is not installed (test extras)"
            ),
        ),
    ],
)
def test_uvicorn_workers_every_scrape_shows_the_server_total(tmp_path: Path, server: str) -> None:
    """uvicorn --workers 3 (and gunicorn -w 3 --preload, workers forked after configure()) on the FastAPI example:
    60 requests, then 9 scrapes of /metrics, each showing exactly 60 requests, 60 latency observations, 30 TTFTs,
    in-flight 0 and one ryot_service_info. Scraping began before the model's first requests (the readiness probe),
    so the first scrape after them shows its request counters at 0 (new series at zero first, every worker's)."""
    n = 60
    with _uvicorn(tmp_path, 3, gunicorn_preload=server == "gunicorn") as base:
        with ThreadPoolExecutor(6) as pool:
            assert all(pool.map(lambda i: _chat(base, i), range(n)))
        time.sleep(1.0)
        text = _scrape(base)
        assert _samples(text, "ryot_inference_requests_total", model=MODEL, status="success") == 0
        assert len(_series(text, "ryot_inference_requests_total")) >= 1
        assert _samples(text, "ryot_inference_latency_seconds_count") == n  # histograms are not held
        time.sleep(1.0)
        for _ in range(9):
            text = _scrape(base)
            assert _samples(text, "ryot_inference_requests_total", model=MODEL, status="success") == n
            assert _samples(text, "ryot_inference_latency_seconds_count") == n
            assert _samples(text, "ryot_inference_latency_seconds_bucket", le="+Inf") == n
            assert _samples(text, "ryot_ttft_latency_seconds_count") == n // 2
            assert _samples(text, "ryot_active_inference_requests") == 0
            assert len(_series(text, "ryot_service_info")) == 1
        assert len({p for p in _worker_pids(tmp_path) if _alive(p)}) == (4 if server == "gunicorn" else 3)


def _run_fork_app(mp_dir: Path | None, children: int, per_child: int, **extra: str) -> dict:  # type: ignore[type-arg]
    env = _env(mp_dir, OTEL_EXPORTER_PROMETHEUS_PORT=str(free_port()), **extra)
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "apps" / "mp_fork.py"), str(children), str(per_child)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_fork_after_configure_child_records_and_shuts_down_fast() -> None:
    """Without multi-process mode, a child forked after configure() records (its readers see the parent's 2
    requests at the fork plus its own 3), does not hold the inherited scrape socket, and its shutdown stops every
    thread it started (it never waits for the parent's); the parent's endpoint keeps serving and shows only the
    parent's own 2 requests."""
    report = _run_fork_app(None, 2, 3)
    for child in report["children"]:
        assert child["status"] == 0
        assert child["seen"] == 5
        assert child["holds_port"] is False
        assert child["threads_left"] == []
    assert report["parent_seen"] == 2
    assert _samples(report["scrape"], "ryot_inference_requests_total", status="success") == 2


def test_fork_after_configure_in_multiprocess_mode_children_count_once(tmp_path: Path) -> None:
    """gunicorn --preload style: configure() in the parent (2 requests), then two forked children of 3 requests
    each, whose shutdown stops every thread they started: the server total is exactly 8 (children count from zero,
    the parent's 2 once)."""
    report = _run_fork_app(tmp_path, 2, 3)
    for child in report["children"]:
        assert (child["status"], child["holds_port"], child["threads_left"]) == (0, False, [])
    assert _samples(report["scrape"], "ryot_inference_requests_total", status="success") == 8
    assert _samples(report["scrape"], "ryot_inference_latency_seconds_count") == 8


def test_sigkilled_workers_keep_what_they_handed_over(tmp_path: Path) -> None:
    """Two children killed with SIGKILL (no shutdown) 1.2 s after their last request: their 3 requests each stay in
    the total, which is folded into the archive by the leader."""
    report = _run_fork_app(tmp_path, 2, 3, MP_FORK_SIGKILL="1")
    assert [c["status"] for c in report["children"]] == [signal.SIGKILL, signal.SIGKILL]
    assert _samples(report["scrape"], "ryot_inference_requests_total", status="success") == 8
    assert _samples(report["scrape"], "ryot_active_inference_requests") == 0


def test_directory_stays_bounded_over_100_worker_restarts(tmp_path: Path) -> None:
    """100 short-lived workers (one request each) leave the directory with the lock, one archive and the live
    parent's file, and the total is exactly 102."""
    report = _run_fork_app(tmp_path, 100, 1)
    pid_files = [f for f in report["files"] if f.startswith("w-")]
    assert len(pid_files) == 1
    others = sorted(f for f in report["files"] if not f.startswith("w-"))
    assert len(others) == 3
    assert others[0].startswith("archive-")
    assert others[1:] == ["collected-prometheus", "leader.lock"]  # the last scrape's record (new-series gate)
    assert _samples(report["scrape"], "ryot_inference_requests_total", status="success") == 102


@contextlib.contextmanager
def _worker(mp_dir: Path | None, port: int, requests: int, **extra: str) -> Iterator[subprocess.Popen[str]]:
    """tests/apps/mp_worker.py: configure() from the environment, ``requests`` requests, then waits on stdin."""
    env = _env(mp_dir, OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1", OTEL_EXPORTER_PROMETHEUS_PORT=str(port), **extra)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "apps" / "mp_worker.py"), str(requests)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), (line, proc.stderr.read() if proc.stderr else "")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_endpoint_taken_over_within_a_second_when_its_holder_dies(tmp_path: Path) -> None:
    """Two workers share a port: the first holds it, the second stays quiet. SIGKILL the holder: the second serves
    the port within 5 s (it retries every 0.5 s), and the dead holder's 4 requests stay in the total (4 + 3)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with _worker(tmp_path, port, 4) as first, _worker(tmp_path, port, 3) as second:
        time.sleep(1.0)
        text = _scrape_url(url)
        assert _samples(text, "ryot_inference_requests_total") == 7
        first.kill()
        first.wait(timeout=5)
        # Well within one scrape interval (15 s by default): the survivor retries the lock every 0.5 s.
        until(lambda: _get(url) is not None, 5, "the endpoint to come back", interval=0.1)
        assert _samples(_scrape_url(url), "ryot_inference_requests_total") == 7
        assert second.poll() is None
        assert second.stdin is not None
        second.stdin.close()
        assert second.wait(timeout=10) == 0
        assert second.stderr is not None
        assert "Traceback" not in second.stderr.read()


def _scrape_url(url: str) -> str:
    text = _get(url)
    assert text is not None
    return text


def test_without_the_variable_a_sibling_worker_warns_once_naming_it() -> None:
    """Without RYOT_TELEMETRY_MULTIPROC_DIR, a second worker of the same server (a sibling process) finds the port
    held: it logs exactly one WARNING naming the variable and keeps serving requests; nothing is raised."""
    port = free_port()
    with _worker(None, port, 1), _worker(None, port, 1) as second:
        assert second.stdin is not None
        second.stdin.close()
        assert second.wait(timeout=10) == 0
        assert second.stderr is not None
        err = second.stderr.read()
    warnings = [line for line in err.splitlines() if "RYOT_TELEMETRY_MULTIPROC_DIR" in line]
    assert len(warnings) == 1, err
    assert "Traceback" not in err


def test_uvicorn_worker_sigkilled_mid_traffic_keeps_its_counts(tmp_path: Path) -> None:
    """uvicorn --workers 3: SIGKILL one worker during traffic (uvicorn restarts it). Scrapes never go down;
    everything finished more than a second before the kill, or after it, is counted; then 20 more requests add
    exactly 20 on every scrape, and in-flight ends at 0 (the dead worker's in-flight series are gone)."""
    import threading

    with _uvicorn(tmp_path, 3) as base:
        with ThreadPoolExecutor(3) as pool:
            assert all(pool.map(lambda i: _chat(base, i), range(30)))
        time.sleep(1.0)
        # The readiness probe scraped before these first requests: their counters are exposed at 0 first.
        assert _samples(_scrape(base), "ryot_inference_requests_total") == 0
        time.sleep(1.0)
        assert _samples(_scrape(base), "ryot_inference_requests_total") == 30

        finished: list[float] = []
        attempts = [0]
        stop = threading.Event()

        def traffic() -> None:
            i = 0
            while not stop.is_set():
                attempts[0] += 1
                i += 1
                if _chat(base, i):
                    finished.append(time.monotonic())

        seen: list[float] = []
        with ThreadPoolExecutor(3) as pool:
            for _ in range(3):
                pool.submit(traffic)
            time.sleep(1.5)
            victim = min(p for p in _worker_pids(tmp_path) if _alive(p))
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            for _ in during(1.5):
                text = _get(f"{base}/metrics")
                if text is not None:
                    seen.append(_samples(text, "ryot_inference_requests_total"))
            stop.set()
        until(
            lambda: len({p for p in _worker_pids(tmp_path) if _alive(p)}) == 3,
            30,
            "uvicorn to restart the worker",
            interval=0.1,
        )
        time.sleep(1.0)
        seen.append(_samples(_scrape(base), "ryot_inference_requests_total"))  # reads the new worker's zeros
        time.sleep(1.0)
        total = _samples(_scrape(base), "ryot_inference_requests_total")
        seen.append(total)
        assert seen == sorted(seen), seen  # no counter ever went down
        lower = 30 + sum(1 for t in finished if t < killed - 1.0 or t > killed + 0.1)
        assert lower <= total <= 30 + attempts[0]

        with ThreadPoolExecutor(3) as pool:
            assert all(pool.map(lambda i: _chat(base, i), range(20)))
        time.sleep(1.0)
        for _ in range(5):
            text = _scrape(base)
            assert _samples(text, "ryot_inference_requests_total") == total + 20
            assert _samples(text, "ryot_active_inference_requests") == 0


def test_otlp_one_merged_stream_survives_the_exporting_worker_dying(tmp_path: Path) -> None:
    """OTLP in multi-process mode: the leader exports the merged totals under one server-wide service.instance.id,
    so the receiver's latest cumulative value is the number of requests sent (4 + 3). SIGKILL the leader: the other
    worker takes the export over and the same stream continues (7, then 9 after 2 more requests)."""
    from ryot_telemetry.multiproc.setup import server_instance_id
    from support.otlp_receiver import GrpcReceiver

    receiver = GrpcReceiver(free_port())
    receiver.start()
    otlp = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
    }

    def latest() -> tuple[int, dict[str, str]] | None:
        got = receiver.latest("ryot.inference.requests")
        if got is None:
            return None
        metric, resource = got
        return sum(p.as_int for p in metric.sum.data_points), resource

    try:
        port = free_port()
        with _worker(tmp_path, port, 4, **otlp) as first, _worker(tmp_path, port, 3, **otlp) as second:
            until(lambda: (latest() or (0,))[0] == 7, 10, "7 requests at the receiver", interval=0.1)
            resource = latest()[1]  # type: ignore[index]
            assert resource["service.name"] == "ryot-inference"
            assert resource["service.instance.id"] == server_instance_id(str(tmp_path))
            first.kill()
            first.wait(timeout=5)
            assert second.stdin is not None and second.stdout is not None
            second.stdin.write("+2\n")
            second.stdin.flush()
            assert second.stdout.readline().strip() == "done"
            until(lambda: (latest() or (0,))[0] == 9, 10, "9 requests at the receiver", interval=0.1)
            second.stdin.close()
            assert second.wait(timeout=10) == 0
        values = []
        with receiver._lock:
            requests = list(receiver.requests)
        for req in requests:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == "ryot.inference.requests":
                            values.append(sum(p.as_int for p in m.sum.data_points))
        assert values == sorted(values)  # one cumulative stream: it never goes down
        assert values[-1] == 9
    finally:
        receiver.stop()


def test_otlp_delta_from_the_merged_totals_across_a_leader_death_and_a_worker_restart(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta in multi-process mode: the leader sends deltas of
    the merged totals. Two workers (4 + 3 requests); the leader is SIGKILLed and the other takes the export over
    (+2); a replacement worker starts (+5). Every delta is >= 0 and the deltas sum to exactly the 14 requests sent
    (no double counting at the change of leader or the restart), latency counts included."""
    from support.otlp_receiver import GrpcReceiver

    receiver = GrpcReceiver(free_port())
    receiver.start()
    otlp = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
    }

    def points(name: str) -> list[tuple[int, Any]]:
        return [(getattr(m, m.WhichOneof("data")).aggregation_temporality, p) for m, p in receiver.points(name)]

    def requests() -> int:
        return sum(p.as_int for _, p in points("ryot.inference.requests"))

    def more(proc: subprocess.Popen[str], n: int) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"+{n}\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"

    try:
        port = free_port()
        with _worker(tmp_path, port, 4, **otlp) as first, _worker(tmp_path, port, 3, **otlp) as second:
            until(lambda: requests() == 7, 10, "7 requests in the deltas", interval=0.1)
            holder = _leader_pid(tmp_path)
            assert holder in (first.pid, second.pid)
            leader, other = (first, second) if holder == first.pid else (second, first)
            leader.kill()
            leader.wait(timeout=5)
            more(other, 2)
            until(lambda: requests() == 9, 10, "9 requests in the deltas", interval=0.1)
            time.sleep(1.0)  # a few more exports with nothing new: zero deltas, never the total again
            assert requests() == 9
            with _worker(tmp_path, port, 5, **otlp) as replacement:
                until(lambda: requests() == 14, 10, "14 requests in the deltas", interval=0.1)
                time.sleep(1.0)
                assert requests() == 14
                for proc in (other, replacement):
                    assert proc.stdin is not None
                    proc.stdin.close()
                    assert proc.wait(timeout=10) == 0
        assert requests() == 14  # the final exports at shutdown added nothing twice
        counted = points("ryot.inference.requests")
        assert {t for t, _ in counted} == {DELTA} and all(p.as_int >= 0 for _, p in counted)
        latency = points("ryot.inference.latency")
        assert {t for t, _ in latency} == {DELTA}
        assert sum(p.count for _, p in latency) == 14
        assert all(min(p.bucket_counts, default=0) >= 0 for _, p in latency)
    finally:
        receiver.stop()


def _more(proc: subprocess.Popen[str], n: int) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"+{n}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"


def _delta_env(receiver: Any, timeout_s: float) -> dict[str, str]:
    return {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": receiver.protocol,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_EXPORTER_OTLP_TIMEOUT": str(timeout_s),
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_delta_outage_with_a_sigkilled_leader_loses_nothing(tmp_path: Path, protocol: str) -> None:
    """Multi-process delta with the OTLP endpoint down: two workers (4 + 3 requests), the leader's exports fail
    (connection refused) and leave the baseline where it was; the leader is SIGKILLed during the outage and the
    other worker takes the export over (+2). Once the endpoint is up, the deltas add up to exactly the 9 requests
    sent, and stay there (before: a failed export was sent again from the same baseline, growing each time)."""
    from support.otlp_receiver import GrpcReceiver, HttpReceiver

    receiver = (GrpcReceiver if protocol == "grpc" else HttpReceiver)(free_port())
    env = _delta_env(receiver, 0.5)
    try:
        port = free_port()
        with _worker(tmp_path, port, 4, **env) as first, _worker(tmp_path, port, 3, **env) as second:
            time.sleep(1.5)  # several exports fail
            holder = _leader_pid(tmp_path)
            assert holder in (first.pid, second.pid)
            leader, other = (first, second) if holder == first.pid else (second, first)
            leader.kill()
            leader.wait(timeout=5)
            _more(other, 2)
            time.sleep(1.0)  # the new leader's exports fail too
            receiver.start()
            until(lambda: receiver.total("ryot.inference.requests") == 9, 15, "9 requests in the deltas", interval=0.1)
            time.sleep(1.0)
            assert receiver.total("ryot.inference.requests") == 9
            assert other.stdin is not None
            other.stdin.close()
            assert other.wait(timeout=10) == 0
        assert receiver.total("ryot.inference.requests") == 9
        assert sum(p.count for _, p in receiver.points("ryot.inference.latency")) == 9
    finally:
        receiver.stop()


def test_otlp_delta_from_a_collector_that_answers_late_never_counts_twice(tmp_path: Path) -> None:
    """Multi-process delta behind a collector that stores each export but answers after the exporter's timeout:
    the outcome is unknown, so the baseline advances and nothing is sent twice: the deltas never exceed the 7
    requests sent (before: 32), and once the collector answers in time 2 more arrive: exactly 9."""
    from support.otlp_receiver import GrpcReceiver

    receiver = GrpcReceiver(free_port())
    receiver.mode, receiver.late_s = "late", 1.2
    receiver.start()
    env = _delta_env(receiver, 0.4)
    try:
        port = free_port()
        with _worker(tmp_path, port, 4, **env) as first, _worker(tmp_path, port, 3, **env) as second:
            until(lambda: receiver.total("ryot.inference.requests") == 7, 15, "7 requests in the deltas", interval=0.1)
            for _ in during(3.0):  # more late exports
                assert receiver.total("ryot.inference.requests") <= 7
            receiver.mode = "store"
            time.sleep(receiver.late_s)
            _more(first, 2)
            until(lambda: receiver.total("ryot.inference.requests") == 9, 15, "9 requests in the deltas", interval=0.1)
            time.sleep(1.0)
            assert receiver.total("ryot.inference.requests") == 9
            for proc in (first, second):
                assert proc.stdin is not None
                proc.stdin.close()
                assert proc.wait(timeout=10) == 0
        assert receiver.total("ryot.inference.requests") == 9
    finally:
        receiver.stop()


@pytest.mark.parametrize("fault", ["down", "late", "refuse"])
def test_a_dead_slow_or_refusing_otlp_endpoint_never_makes_the_scrape_stale(tmp_path: Path, fault: str) -> None:
    """Prometheus and OTLP in multi-process mode, the OTLP endpoint down (connection refused, retried until the
    exporter's timeout), answering after the timeout, or refusing (UNAVAILABLE, retried): the leader's exports run on
    their own thread, so its hand-offs go on and a scrape 1.5 s after new requests has them: 7, 10, 13 (before: the
    exporter's retries held the hand-off back and scrapes showed 4, 4, 4)."""
    from support.otlp_receiver import GrpcReceiver

    receiver = GrpcReceiver(free_port())
    if fault != "down":
        receiver.mode, receiver.late_s = fault, 6.0
        receiver.start()
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "4",
    }
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        with _worker(tmp_path, port, 4, **env) as first, _worker(tmp_path, port, 3, **env) as second:
            # the first increments of a new series follow its zero one scrape later
            until(
                lambda: _samples(_get(url) or "", "ryot_inference_requests_total") == 7, 15, "7 requests", interval=0.1
            )
            seen = []
            for proc in (first, second):
                _more(proc, 3)
                time.sleep(1.5)
                seen.append(_samples(_scrape_url(url), "ryot_inference_requests_total"))
            assert seen == [10, 13]
            # the leader's exports, counted by result (once the exporter's retries are over) and merged like any
            # counter
            failed = "unknown" if fault == "late" else "refused"

            def count(result: str) -> float:
                return _samples(_scrape_url(url), "ryot_telemetry_otlp_exports_total", result=result)

            until(lambda: count(failed) >= 1, 15, f"an export counted as {failed}", interval=0.1)
            assert count("success") == 0
            if fault != "late":
                assert count("unknown") == 0
            for proc in (first, second):
                assert proc.stdin is not None
                proc.stdin.close()
    finally:
        receiver.stop()


def _leader_pid(mp_dir: Path) -> int | None:
    """The pid holding ``leader.lock`` (from /proc/locks), or None."""
    inode = os.stat(mp_dir / "leader.lock").st_ino
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            pid, where = int(fields[4]), fields[5]
            if where.endswith(f":{inode}"):
                return pid
    return None


DELTA = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


@pytest.mark.skipif(
    not (OGX.venv / "bin" / "ogx").exists(),
    reason=".venv312 is absent: no Python 3.12 found by scripts/setup.d/llama_stack.sh (run scripts/setup.sh test)",
)
def test_ogx_stack_run_with_two_workers_under_opentelemetry_instrument(tmp_path: Path) -> None:
    """The real ogx server, ``server.workers: 2``, started by ``opentelemetry-instrument ogx stack run`` with
    RYOT_TELEMETRY_MULTIPROC_DIR set (the docs recipe), over an OpenAI-compatible upstream: 12 chat requests
    (6 streamed) and every scrape of :PORT/metrics shows exactly 12 requests, 36 completion tokens, 6 TTFTs."""
    mp_dir = tmp_path / "mp"
    mp_dir.mkdir()
    env = {"RYOT_TELEMETRY_MULTIPROC_DIR": str(mp_dir)}
    model = "vllm/llama-8b"
    with running_stack(OGX, tmp_path, env=env, server="  workers: 2\n", within=90) as ogx:
        until(lambda: _get(ogx.metrics) is not None, 10, "the metrics endpoint", interval=0.1)

        def chat(i: int) -> bool:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": i % 2 == 0}
            r = httpx.post(f"{ogx.base}/v1/chat/completions", json=body, timeout=30)
            return r.status_code == 200

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(chat, range(12)))
        time.sleep(1.0)
        # Scraping began before the model's first requests: its counters are exposed at 0 first.
        text = _scrape_url(ogx.metrics)
        assert _samples(text, "ryot_inference_requests_total", model=model, status="success") == 0
        time.sleep(1.0)
        for _ in range(6):
            text = _scrape_url(ogx.metrics)
            assert _samples(text, "ryot_inference_requests_total", model=model, status="success") == 12
            assert _samples(text, "ryot_tokens_generated_total", model=model, token_type="completion") == 36
            assert _samples(text, "ryot_ttft_latency_seconds_count", model=model) == 6
            assert _samples(text, "ryot_active_inference_requests") == 0
            assert len(_series(text, "ryot_service_info")) == 1


def test_a_worker_exiting_without_shutdown_hands_over_its_last_requests(tmp_path: Path) -> None:
    """A worker that records 3 requests and exits at once (no shutdown(), before any periodic hand-off) still
    leaves them in the directory: the exit hook hands over the final state."""
    code = (
        "import asyncio, ryot_telemetry\n"
        "from ryot_telemetry.demo.simulate import SimulatedRouter\n"
        "tel = ryot_telemetry.configure(exporters='none')\n"
        "r = tel.instrument_router(SimulatedRouter(speed=0, error_rate=0, timeout_rate=0))\n"
        f"p = {{'model': {MODEL!r}, 'messages': [{{'role': 'user', 'content': 'x'}}]}}\n"
        "async def main():\n"
        "    for _ in range(3):\n"
        "        await r.openai_chat_completion(p)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    from ryot_telemetry.multiproc.directory import Merged, _Ident, read_server

    merged: Merged = read_server(str(tmp_path), _Ident(0, 0, 0, 0))
    assert merged.families["ryot.inference.requests"].points
    assert sum(merged.families["ryot.inference.requests"].points.values()) == 3

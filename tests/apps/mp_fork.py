"""``os.fork()`` after ``configure()`` (gunicorn --preload, multiprocessing's fork), for tests/test_multiprocess.py.

Usage: ``mp_fork.py CHILDREN REQUESTS_PER_CHILD``. The parent records 2 requests, forks the children (one after
the other, each records its requests, shuts down and exits), then prints a JSON report: the children's exit codes
and shutdown times, and the parent's scrape of its own endpoint. With ``RYOT_TELEMETRY_MULTIPROC_DIR`` set the
parent's scrape is the whole server's; without it, the parent's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import urllib.request

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import ryot_telemetry
from ryot_telemetry.demo.simulate import SimulatedRouter
from ryot_telemetry.export import ports as _ports

MODEL = "llama-3.1-8b-instruct"
children, per_child = int(sys.argv[1]), int(sys.argv[2])
kill = os.environ.get("MP_FORK_SIGKILL") == "1"

memory = InMemoryMetricReader()
tel = ryot_telemetry.configure(prometheus_registry="private", prometheus_host="127.0.0.1", readers=[memory])
router = tel.instrument_router(SimulatedRouter(speed=0, error_rate=0, timeout_rate=0))


async def serve(n: int) -> None:
    for _ in range(n):
        await router.openai_chat_completion({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


def requests_seen() -> int:
    data = memory.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "ryot.inference.requests":
                    return int(sum(p.value for p in m.data.data_points))
    return 0


asyncio.run(serve(2))
report: dict = {"children": []}
for _ in range(children):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        asyncio.run(serve(per_child))
        seen = requests_seen()
        port = int(tel.prometheus_url.rsplit(":", 1)[1].split("/")[0]) if tel.prometheus_url else 0
        holds = _ports._holds(os.getpid(), _ports._listening_inodes(port)) if port else False
        if kill:  # hand over by the periodic snapshot only, then die without shutdown()
            time.sleep(1.2)
            os.write(w, json.dumps({"seen": seen}).encode())
            os.close(w)
            os.kill(os.getpid(), 9)
        tel.shutdown()
        left = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
        os.write(w, json.dumps({"seen": seen, "holds_port": holds, "threads_left": left}).encode())
        os.close(w)
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = json.loads(f.read() or "{}")
    _, status = os.waitpid(pid, 0)
    child["status"] = status
    report["children"].append(child)
time.sleep(1.2)  # one hand-off interval and a housekeeping pass
if tel.prometheus_url:
    with urllib.request.urlopen(tel.prometheus_url, timeout=10) as resp:
        report["scrape"] = resp.read().decode()
report["parent_seen"] = requests_seen()
mp_dir = os.environ.get("RYOT_TELEMETRY_MULTIPROC_DIR")
report["files"] = sorted(os.listdir(mp_dir)) if mp_dir else []
tel.shutdown()
print(json.dumps(report))

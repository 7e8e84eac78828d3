"""The shipped error-rate alert delivered: a real Prometheus evaluates collector/rules on a real ryot exposition,
a real Alertmanager routes the alert to a webhook served by this test, which sees it fire and then resolve.

The traffic is instrumented fake router calls (``tests/support/fakes.py``) recorded by ``configure()`` into a
private registry served on loopback: one model fails every request for a while, another never fails.

The alert file is the shipped one with a single line changed: RyotHighErrorRate's ``for: 5m`` becomes ``for: 2s``.
The shipped hold exists to ride out a blip in production; here it would only make the test wait five minutes, and
the hold itself is Prometheus's own logic, already covered by promtool's unit tests (tests/e2e/test_rules.py). The
expression, the recording rule behind it, the labels and the annotations are the shipped ones, byte for byte.

``scripts/setup.d/prometheus.sh`` and ``scripts/setup.d/alertmanager.sh`` install the Debian packages; without them
the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from ryot_telemetry import configure
from support.fakes import ChatParams, Choice, Completion, Message, ScriptedRouter, usage
from support.ports import free_port
from support.procs import stop
from support.prom_server import EVERY_SECOND, Prometheus, prometheus_server, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "collector" / "rules"
DOWN, UP = "chat-down", "chat-up"
SHIPPED_HOLD = "        for: 5m\n"
TEST_HOLD = "        for: 2s\n"
FAILURES = 30  # requests to DOWN that fail before it recovers


@pytest.fixture(scope="module")
def binaries() -> tuple[str, str]:
    """prometheus and prometheus-alertmanager on PATH; a skip without them, a failure under CI=true."""
    prom, am = shutil.which("prometheus"), shutil.which("prometheus-alertmanager")
    if prom is None or am is None:
        missing = " and ".join(n for n, p in (("prometheus", prom), ("prometheus-alertmanager", am)) if p is None)
        reason = f"{missing} not found (Debian packages: scripts/setup.d/prometheus.sh and alertmanager.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Alertmanager test must run in CI: {reason}")
        pytest.skip(reason)
    return prom, am


def _ready(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)


def _instant(rfc3339: str) -> datetime:
    """Alertmanager's timestamps carry nanoseconds; datetime keeps microseconds."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", rfc3339.replace("Z", "+00:00")))


class Webhook:
    """An HTTP server on loopback that queues every JSON body POSTed to it (Alertmanager's webhook receiver)."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.put({"path": self.path, "body": json.loads(self.rfile.read(length))})
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)
        self.thread.start()

    def next(self, what: str, deadline_s: float) -> dict[str, Any]:
        try:
            return self.received.get(timeout=deadline_s)
        except queue.Empty:
            pytest.fail(f"timed out after {deadline_s}s waiting for {what} at the webhook")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class Traffic:
    """Instrumented fake router calls on a thread of their own, every 0.1 s: UP always succeeds; DOWN fails
    ``FAILURES`` times (3 per tick), then sends nothing until ``recover()``, then succeeds 40 times a tick."""

    def __init__(self, tel: Any) -> None:
        ok = Completion(choices=[Choice(message=Message(content="ok"))], usage=usage(12, 3))
        self.good = tel.instrument_router(ScriptedRouter(response=ok))
        self.bad = tel.instrument_router(ScriptedRouter(raises=ConnectionError("upstream unreachable")))
        self.failed = 0
        self.recovered = threading.Event()
        self.stopped = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def recover(self) -> None:
        self.recovered.set()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        assert self.errors == []

    def _run(self) -> None:
        try:
            asyncio.run(self._loop())
        except BaseException as e:  # surfaced by stop()
            self.errors.append(e)

    async def _loop(self) -> None:
        while not self.stopped.wait(0.1):
            await self.good.openai_chat_completion(ChatParams(model=UP))
            if self.recovered.is_set():
                for _ in range(40):
                    await self.good.openai_chat_completion(ChatParams(model=DOWN))
                continue
            for _ in range(min(3, FAILURES - self.failed)):
                self.failed += 1
                with pytest.raises(ConnectionError, match="upstream unreachable"):
                    await self.bad.openai_chat_completion(ChatParams(model=DOWN))


@pytest.fixture(scope="module")
def stack(
    binaries: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Prometheus, Webhook, Traffic]]:
    """ryot exposition, Prometheus (1 s scrape and evaluation, shipped rules) and Alertmanager (1 s grouping) up."""
    _, alertmanager = binaries
    tmp = tmp_path_factory.mktemp("alertmanager")
    ryot_port, prom_port, am_port = free_port(), free_port(), free_port()

    shipped = (RULES / "ryot_alerts.yml").read_text()
    start = shipped.index("      - alert: RyotHighErrorRate\n")
    hold = shipped.index(SHIPPED_HOLD, start)
    assert shipped.index("      - alert:", start + 1) > hold  # the hold is RyotHighErrorRate's own
    alerts = shipped[:hold] + TEST_HOLD + shipped[hold + len(SHIPPED_HOLD) :]
    (tmp / "ryot_alerts.yml").write_text(alerts)

    webhook = Webhook()
    (tmp / "alertmanager.yml").write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "test-webhook",
                    "group_by": ["alertname", "model"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {"name": "test-webhook", "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}
                ],
            }
        )
    )
    prom_config = {
        "global": EVERY_SECOND,
        "rule_files": [str(RULES / "ryot_recording_rules.yml"), str(tmp / "ryot_alerts.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "ryot", "static_configs": [{"targets": [f"127.0.0.1:{ryot_port}"]}]}],
    }

    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=ryot_port,
        prometheus_registry="private",
        gpu=False,
    )
    traffic = Traffic(tel)
    log = (tmp / "alertmanager.log").open("w")
    alertmanager_proc = None
    try:
        alertmanager_proc = subprocess.Popen(
            [
                alertmanager,
                f"--config.file={tmp / 'alertmanager.yml'}",
                f"--storage.path={tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",  # no gossip port: one instance, loopback only
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        prom_base = f"http://127.0.0.1:{prom_port}"
        with prometheus_server(tmp, prom_config, (f"--web.external-url={prom_base}/",), prom_port) as prom:
            wait_for("Alertmanager to be ready", lambda: _ready(f"http://127.0.0.1:{am_port}/-/ready"), 20)
            # Targets and Alertmanagers are picked up on the discovery manager's 5 s tick: traffic waits for both.
            wait_for("the first successful scrape", lambda: prom.query('up{job="ryot"} == 1'), 30)
            wait_for(
                "Prometheus to discover the Alertmanager",
                lambda: prom.get("/api/v1/alertmanagers")["activeAlertmanagers"],
                30,
            )
            traffic.start()
            try:
                yield prom, webhook, traffic
            finally:
                traffic.stop()
    finally:
        if alertmanager_proc is not None:
            stop(alertmanager_proc)
        log.close()
        webhook.close()
        tel.shutdown()


def test_error_rate_alert_reaches_the_webhook_then_resolves(stack: tuple[Prometheus, Webhook, Traffic]) -> None:
    """RyotHighErrorRate for the failing model alone arrives firing with the shipped labels and annotations (100 %
    failed), and arrives resolved, same alert, once the model's successes bring the ratio under 5 %."""
    prom, webhook, traffic = stack
    firing = webhook.next("the firing notification", 60)
    body = firing["body"]
    assert firing["path"] == "/hook"
    assert (body["status"], body["receiver"]) == ("firing", "test-webhook")
    assert body["groupLabels"] == {"alertname": "RyotHighErrorRate", "model": DOWN}
    (alert,) = body["alerts"]
    labels = {"alertname": "RyotHighErrorRate", "severity": "warning", "component": "ryot", "model": DOWN}
    assert alert["status"] == "firing"
    assert alert["labels"] == labels
    # every request to DOWN failed so far: the ratio is exactly 1, which humanizePercentage prints as 100%
    assert alert["annotations"] == {
        "summary": f"Ryot error rate above 5% for model {DOWN}",
        "description": f"100% of requests to {DOWN} failed over the last 5 minutes.",
    }
    assert alert["generatorURL"].startswith(f"{prom.base}/graph?g0.expr=ryot%3Aerror_rate%3Arate5m+%3E+0.05")
    assert traffic.failed == FAILURES
    # the healthy model's ratio is recorded, and is 0: there is nothing to alert on
    up = prom.query(f'ryot:error_rate:rate5m{{model="{UP}"}}')
    assert [float(r["value"][1]) for r in up] == [0.0]

    traffic.recover()
    resolved = webhook.next("the resolved notification", 90)["body"]
    assert (resolved["status"], resolved["receiver"]) == ("resolved", "test-webhook")
    (gone,) = resolved["alerts"]
    assert gone["status"] == "resolved"
    assert gone["labels"] == labels
    assert gone["fingerprint"] == alert["fingerprint"]
    assert gone["startsAt"] == alert["startsAt"] and _instant(gone["endsAt"]) > _instant(gone["startsAt"])
    (ratio,) = prom.query(f'ryot:error_rate:rate5m{{model="{DOWN}"}}')
    assert float(ratio["value"][1]) <= 0.05
    # nothing else was delivered: no alert for the healthy model, no repeat of the resolved one
    time.sleep(2)
    assert webhook.received.empty()


def test_setup_script_skips_apt_when_alertmanager_is_installed(binaries: tuple[str, str], tmp_path: Path) -> None:
    """scripts/setup.d/alertmanager.sh is idempotent: with prometheus-alertmanager present it never calls apt."""
    for tool in ("apt-get", "apt-cache"):
        stub = tmp_path / tool
        stub.write_text(f"#!/bin/sh\necho {tool} called >&2\nexit 1\n")
        stub.chmod(0o755)
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.d" / "alertmanager.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{tmp_path}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")

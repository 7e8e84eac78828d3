"""A real Prometheus (Debian package) on a free loopback port, scraping given targets every second; bounded waits."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.polling import until
from support.ports import free_port
from support.procs import stop

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus binary not found (Debian package `prometheus`; scripts/setup.d/prometheus.sh)",
)


def wait_for(what: str, check: Callable[[], Any], deadline_s: float, interval: float = 0.25) -> Any:
    """``polling.until`` for a server's HTTP API: a refused connection (the server still starting) is "not yet"."""
    return until(check, deadline_s, what, interval=interval, tolerate=(OSError,))


class Prometheus:
    """The HTTP API of a running Prometheus."""

    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **params: Any) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector of ``promql``, evaluated now or at the Unix time ``at``."""
        params = {"query": promql} | ({"time": repr(at)} if at is not None else {})
        return list(self.get("/api/v1/query", **params)["result"])

    def scalar(self, promql: str) -> float | None:
        res = self.query(promql)
        assert len(res) <= 1, res
        return float(res[0]["value"][1]) if res else None

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}


# Scrape and evaluate every second, so tests wait seconds for what production sees in minutes.
EVERY_SECOND = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}


@contextlib.contextmanager
def prometheus_server(
    tmp_path: Path, config: dict[str, Any], flags: tuple[str, ...] = (), port: int | None = None
) -> Iterator[Prometheus]:
    """Prometheus run with ``config`` (written to ``tmp_path/prometheus.yml``) on loopback ``port`` (a free one if
    not given), its log in ``tmp_path/prometheus.log``; ready once this yields, stopped after."""
    port = free_port() if port is None else port
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}")
        wait_for("Prometheus to be ready", lambda: urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2), 20)
        yield prom
    finally:
        stop(proc)
        log.close()


@contextlib.contextmanager
def prometheus(
    tmp_path: Path,
    targets: list[str],
    flags: tuple[str, ...] = (),
    rule_files: tuple[Path, ...] = (),
    labels: dict[str, str] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (host:port, each series given ``labels``) every second; up and scraping
    once this yields."""
    config = {
        "global": EVERY_SECOND,
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "ryot", "static_configs": [{"targets": targets, "labels": labels or {}}]}],
    }
    with prometheus_server(tmp_path, config, flags) as prom:
        wait_for("the first scrape", lambda: prom.query('up{job="ryot"} == 1'), 20)
        yield prom

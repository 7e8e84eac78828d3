"""Running an app under opentelemetry-instrument and reading its scrape."""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ryot_telemetry.catalogue import get

RECIPE_ENV = {
    # The docs recipe: pick ryot-telemetry's distro and configurator, Prometheus only (here on a free loopback port).
    "OTEL_PYTHON_DISTRO": "ryot_telemetry",
    "OTEL_PYTHON_CONFIGURATOR": "ryot_telemetry",
    "OTEL_METRICS_EXPORTER": "prometheus",
    "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
    "OTEL_EXPORTER_PROMETHEUS_PORT": "0",
    "RYOT_TELEMETRY_GPU": "false",
}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def run_and_scrape(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, Any], Samples, str]:
    """Run an app that prints a JSON report with ``metrics_url`` then waits on stdin; scrape it once, let it exit.

    Returns (report, samples keyed by (name, labels without otel_scope_*), exposition text).
    """
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True)
        watchdog = threading.Timer(60.0, proc.kill)  # the app stops by itself; this only bounds a hang
        watchdog.start()
        try:
            assert proc.stdout is not None and proc.stdin is not None
            line = proc.stdout.readline()
            report = json.loads(line) if line else {"metrics_url": None}
            url = report["metrics_url"]
            text = ""
            if url is not None:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    text = resp.read().decode()
                proc.stdin.write("scraped\n")
                proc.stdin.flush()
            proc.wait(timeout=30)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            errors.seek(0)
            stderr = errors.read()
    assert proc.returncode == 0 and url is not None and url.startswith("http://127.0.0.1:"), (report, stderr)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            # An empty label value is the same series as no label in Prometheus; the exporter pads with them.
            labels = frozenset((k, v) for k, v in s.labels.items() if v != "" and not k.startswith("otel_scope_"))
            samples[(s.name, labels)] = s.value
    return report, samples, text


def lbl(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def le_values(samples: Samples, name: str, **labels: str) -> list[str]:
    """The ``le`` values of one histogram series, in exposition order of their numeric value."""
    les = [dict(k)["le"] for (n, k) in samples if n == name and (k - {("le", dict(k)["le"])}) == lbl(**labels)]
    return sorted(les, key=lambda v: float("inf") if v == "+Inf" else float(v))


def spec_le(name: str) -> list[str]:
    return [str(float(b)) for b in get(name).buckets or ()] + ["+Inf"]

"""A real Prometheus with exemplar storage scrapes ryot and returns the trace id of a traced request."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ryot_telemetry import configure
from support.prom_server import needs_prometheus, prometheus, wait_for
from support.traced import traced_requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90), needs_prometheus]


def test_prometheus_stores_and_returns_the_scrapes_exemplars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/api/v1/query_exemplars for the latency and TTFT buckets answers trace ids of the traced requests."""
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based")
    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        gpu=False,
    )
    try:
        assert tel.prometheus_url is not None
        target = tel.prometheus_url.removeprefix("http://").removesuffix("/metrics")
        with prometheus(tmp_path, [target], flags=("--enable-feature=exemplar-storage",)) as prom:
            start = time.time() - 60
            ids = traced_requests(tel, 5)
            traces = {trace_id for trace_id, _ in ids}

            def stored() -> list[dict[str, object]]:
                return list(
                    prom.get(
                        "/api/v1/query_exemplars",
                        query="ryot_inference_latency_seconds_bucket or ryot_ttft_latency_seconds_bucket",
                        start=start,
                        end=time.time() + 60,
                    )
                )

            def both_families() -> list[dict[str, object]]:
                series = stored()
                names = {s["seriesLabels"]["__name__"] for s in series}  # type: ignore[index]
                wanted = {"ryot_inference_latency_seconds_bucket", "ryot_ttft_latency_seconds_bucket"}
                return series if names == wanted else []

            series = wait_for("exemplars of both histograms in Prometheus", both_families, 30)
        exemplars = [e for s in series for e in s["exemplars"]]  # type: ignore[attr-defined]
        assert exemplars
        for e in exemplars:
            assert e["labels"]["trace_id"] in traces, e
            assert e["labels"]["span_id"] in {span for _, span in ids}, e
    finally:
        tel.shutdown()

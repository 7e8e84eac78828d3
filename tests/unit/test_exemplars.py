"""Exemplars on the Prometheus scrape: OpenMetrics buckets carry the request's trace; text and odd Accepts unharmed."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.samples import Exemplar

from ryot_telemetry import Telemetry, configure
from ryot_telemetry._compat import prometheus_reader
from ryot_telemetry.export import exemplars as exemplars_mod
from support.fakes import ChatParams, Completion, ScriptedRouter, usage
from support.traced import traced_requests

OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_EXEMPLAR = re.compile(
    r'^(\w+)_bucket\{([^}]*)\} (\S+) # \{span_id="([0-9a-f]{16})",trace_id="([0-9a-f]{32})"\} (\S+) (\S+)$', re.M
)


@pytest.fixture
def tel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    """ryot serving /metrics on loopback with trace-based exemplars (as with a TracerProvider installed)."""
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based")
    t = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        gpu=False,
    )
    yield t
    t.shutdown()


def scrape(tel: Telemetry, accept: str | None = None) -> tuple[int, str, str]:
    headers = {"Accept": accept} if accept is not None else {}
    assert tel.prometheus_url is not None
    with urllib.request.urlopen(urllib.request.Request(tel.prometheus_url, headers=headers), timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read().decode()


def test_openmetrics_scrape_carries_the_traced_requests_exemplars(tel: Telemetry) -> None:
    """Latency and TTFT buckets carry one of the traced requests as {trace_id, span_id}; value in that bucket."""
    ids = traced_requests(tel, 3)
    status, ctype, body = scrape(tel, OM)
    assert (status, ctype.split(";")[0]) == (200, "application/openmetrics-text")
    found = _EXEMPLAR.findall(body)
    families = {f for f, *_ in found}
    assert families == {"ryot_inference_latency_seconds", "ryot_ttft_latency_seconds"}
    for _family, labels, _count, span_id, trace_id, value, _ts in found:
        assert (trace_id, span_id) in ids
        le = float(re.search(r'le="([^"]+)"', labels).group(1))  # type: ignore[union-attr]
        assert 0 <= float(value) <= le
    # exemplars on the streaming and non-streaming series of each histogram (TTFT: streaming requests only, and no
    # generation_mode label); one per bucket, so at most as many as the series' buckets holding measurements
    assert {(f, 'generation_mode="streaming"' in labels) for f, labels, *_ in found} == {
        ("ryot_inference_latency_seconds", False),
        ("ryot_inference_latency_seconds", True),
        ("ryot_ttft_latency_seconds", False),
    }
    keys = [(f, labels) for f, labels, *_ in found]
    assert len(keys) == len(set(keys))


def test_each_bucket_keeps_its_latest_exemplar_across_scrapes(tel: Telemetry) -> None:
    """A later scrape shows the same exemplars (every scraper sees them); a newer request in a bucket replaces it."""
    traced_requests(tel, 2)
    first = _EXEMPLAR.findall(scrape(tel, OM)[2])
    assert len(first) >= 3
    assert _EXEMPLAR.findall(scrape(tel, OM)[2]) == first
    newest = traced_requests(tel, 1)
    again = _EXEMPLAR.findall(scrape(tel, OM)[2])
    assert len(again) >= len(first)
    assert {(trace_id, span_id) for *_, span_id, trace_id, _value, _ts in again} <= set(newest) | {
        (trace_id, span_id) for *_, span_id, trace_id, _value, _ts in first
    }
    assert {(trace_id, span_id) for *_, span_id, trace_id, _value, _ts in again} & set(newest)


def test_untraced_and_unsampled_requests_carry_no_exemplar(tel: Telemetry) -> None:
    """Requests with no span, or an unsampled one, leave the OpenMetrics scrape without any exemplar."""
    traced_requests(tel, 2, sampled=False)

    async def untraced() -> None:
        await tel.instrument_router(ScriptedRouter(response=Completion(usage=usage(1, 1)))).openai_chat_completion(
            ChatParams(model="m")
        )

    asyncio.run(untraced())
    _, _, body = scrape(tel, OM)
    assert "ryot_inference_latency_seconds_bucket{" in body
    assert " # {" not in body


def test_plain_text_is_byte_for_byte_the_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    """With exemplars recorded, the text exposition equals opentelemetry's own reader's on the same provider."""
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_on")
    theirs = CollectorRegistry(auto_describe=True)
    t = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        readers=[prometheus_reader(theirs)],
        gpu=False,
    )
    try:
        traced_requests(t, 2)
        generate_latest(theirs), generate_latest(t.registry)  # both readers past their new-series zero
        ours_text = scrape(t)[2]
        assert ours_text.encode() == generate_latest(theirs)
        assert "ryot_ttft_latency_seconds_bucket{" in ours_text and "#  {" not in ours_text
        assert ours_text.count(" # ") == 0
    finally:
        t.shutdown()


_ODD_ACCEPTS = [
    "",
    "*/*",
    "garbage",
    ",,,;;;===",
    "application/openmetrics-text; version=abc",
    "application/openmetrics-text; version=",
    "application/openmetrics-text; version=1.0.0.0.0",
    "application/openmetrics-text; version=-1",
    "application/openmetrics-text; version=2.0.0",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text; version=1.0.0; escaping=nonsense",
    "application/openmetrics-text;q=0.1,text/plain;q=1.0",
    "text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0;q=0.9",
    "text/plain; version=abc",
    "application/json, text/html, image/png",
    "application/openmetrics-text;" * 2000,
    "a" * 60_000,
]


@pytest.mark.parametrize("accept", _ODD_ACCEPTS, ids=[a[:40] + ("..." if len(a) > 40 else "") for a in _ODD_ACCEPTS])
def test_odd_accept_headers_never_break_the_scrape(tel: Telemetry, accept: str) -> None:
    """Garbage, huge, q-valued or multi-type Accept headers: 200 with every ryot family, text or OpenMetrics."""
    traced_requests(tel, 1)
    status, ctype, body = scrape(tel, accept)
    assert status == 200
    assert ctype.split(";")[0] in ("text/plain", "application/openmetrics-text")
    assert "ryot_inference_latency_seconds_bucket{" in body
    assert ("# EOF" in body) == ctype.startswith("application/openmetrics-text")


def test_non_ascii_accept_bytes_never_break_the_scrape(tel: Telemetry) -> None:
    """An Accept header of raw non-UTF-8 bytes, sent over a socket: a 200 text answer."""
    assert tel.prometheus_url is not None
    port = int(tel.prometheus_url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nAccept: application/\xff\xfe\x80openmetrics-text\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n", 1)[0]
    assert head.endswith(b"200 OK"), head
    assert b"ryot_service_info" in answer


def test_failed_openmetrics_rendering_falls_back_to_text(tel: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
    """A collector OpenMetrics refuses (an exemplar on a gauge) gets the scrape answered in text, warned once."""

    class BadForOpenMetrics:
        def collect(self) -> Iterator[Any]:
            g = GaugeMetricFamily("odd_gauge", "an exemplar where OpenMetrics allows none")
            g.add_metric([], 1.0)
            g.samples[0] = g.samples[0]._replace(exemplar=Exemplar({"trace_id": "ab"}, 1.0))
            yield g

    tel.registry.register(BadForOpenMetrics())
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        for _ in range(2):
            status, ctype, body = scrape(tel, OM)
            assert (status, ctype) == (200, "text/plain; version=0.0.4; charset=utf-8")
            assert "odd_gauge 1.0" in body
    assert len(caplog.records) == 1
    assert (
        caplog.records[0]
        .getMessage()
        .startswith(
            f"ryot-telemetry: rendering the scrape for Accept {OM!r} failed (ValueError('Metric odd_gauge has exemplars"
        )
    )


def test_exemplars_that_cannot_be_read_cost_only_the_exemplars(
    tel: Telemetry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading the exemplars raising: the OpenMetrics scrape is whole, without exemplars, and warns once."""
    traced_requests(tel, 1)

    def broken(*args: Any) -> Any:
        raise RuntimeError("unreadable exemplar")

    monkeypatch.setattr(exemplars_mod, "_exemplars", broken)
    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        for _ in range(2):
            status, _, body = scrape(tel, OM)
            assert status == 200 and body.endswith("# EOF\n") and " # {" not in body
            assert "ryot_inference_latency_seconds_bucket{" in body
    assert [r.getMessage() for r in caplog.records] == [
        "ryot-telemetry: exemplars left off the scrape: RuntimeError('unreadable exemplar')"
    ]


def test_prometheus_alone_samples_exemplars_only_where_tracing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prometheus alone: exemplars off without a TracerProvider, trace-based with one, off in multi-process mode."""
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    from ryot_telemetry.recording.recorder import RequestSpanExemplarFilter

    monkeypatch.delenv("OTEL_METRICS_EXEMPLAR_FILTER", raising=False)

    def built(**kw: Any) -> tuple[type, bool]:
        t = configure(exporters="prometheus", prometheus_registry="private", start_prometheus_server=False, **kw)
        try:
            return type(t.meter_provider._sdk_config.exemplar_filter), t.recorder.exemplars
        finally:
            t.shutdown()

    assert not exemplars_mod.tracing_configured()
    assert built(gpu=False) == (AlwaysOffExemplarFilter, False)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: TracerProvider())
    assert exemplars_mod.tracing_configured()
    assert built(gpu=False) == (RequestSpanExemplarFilter, True)


def test_multiprocess_mode_scrape_has_no_exemplars(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """In multi-process mode the merged scrape keeps the plain reader: no exemplars, even with tracing installed."""
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

    monkeypatch.delenv("OTEL_METRICS_EXEMPLAR_FILTER", raising=False)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: TracerProvider())
    t = configure(
        exporters="prometheus",
        prometheus_registry="private",
        start_prometheus_server=False,
        multiproc_dir=str(tmp_path),
        gpu=False,
    )
    try:
        assert type(t.meter_provider._sdk_config.exemplar_filter) is AlwaysOffExemplarFilter
        traced_requests(t, 1)
        body = ""
        for _ in range(100):  # until the worker's 0.5 s hand-off brings the requests into the merge: bounded
            body = openmetrics_latest(t.registry).decode()
            if "ryot_inference_latency_seconds_bucket{" in body:
                break
            time.sleep(0.1)
        assert "ryot_inference_latency_seconds_bucket{" in body and " # {" not in body
    finally:
        t.shutdown()

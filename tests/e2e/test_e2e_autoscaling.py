"""The autoscaling PromQL (KEDA trigger queries and prometheus-adapter metricsQuery templates), evaluated by a real
Prometheus over real ryot scrapes, gives the numbers the traffic implies: requests in flight, TTFT p95, queue time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from ryot_telemetry import Telemetry, catalogue, configure
from ryot_telemetry.artifacts import autoscaling
from ryot_telemetry.export.readers import serve_metrics
from support.fakes import ChatParams, Completion, ScriptedRouter, content_chunk, usage, usage_chunk
from support.prom_server import Prometheus, needs_prometheus, prometheus, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120), needs_prometheus]

NAMESPACE, POD, MODEL = "llm", "router-5d9c7b6f4-x2x7k", "m"
TTFT_DELAY = 0.3  # every TTFT lies in the (0.25, 0.5] bucket
QUEUE_TIMES = ([0.2, 0.4], [0.1, 0.3, 0.5])  # two batches, each of mean 0.3 s


def scaling(signal: str) -> autoscaling.Scaling:
    return autoscaling.Scaling(signal=signal, target="router", threshold=1.0, namespace=NAMESPACE, model=MODEL)


def adapter_query(s: autoscaling.Scaling) -> str:
    """The metricsQuery as prometheus-adapter fills it for an HPA asking about one pod of the Deployment."""
    rule = autoscaling.adapter_rule(s)
    series = rule["seriesQuery"].split("{", 1)[0]
    matchers = f'model="{MODEL}",namespace="{NAMESPACE}",pod=~"{POD}"'
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", "pod")
    )


class Loop:
    """An event loop on a thread: requests held open in flight while the test queries Prometheus."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class HeldRouter:
    """A router whose calls wait until released: requests in flight for as long as the test says."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def openai_chat_completion(self, params: Any) -> Any:
        await self.release.wait()
        return Completion(usage=usage(3, 2))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Telemetry, Any, Loop]]:
    """ryot and a queue-time histogram, both labelled as one pod of Deployment `router`, scraped every second."""
    tel = configure(
        exporters="prometheus", prometheus_host="127.0.0.1", prometheus_port=0, prometheus_registry="private", gpu=False
    )
    # ryot_engine_queue_seconds as the engine reports it, served beside ryot: the queue PromQL's input
    queue_registry = CollectorRegistry()
    queue = Histogram(
        autoscaling.QUEUE_FAMILY.removesuffix("_seconds"),
        "engine queue time",
        ["model"],
        unit="seconds",
        buckets=catalogue.get("ryot.ttft.latency").buckets,
        registry=queue_registry,
    )
    queue_server = serve_metrics("127.0.0.1", 0, queue_registry)
    loop = Loop()
    try:
        assert tel.prometheus_url is not None
        targets = [
            tel.prometheus_url.removeprefix("http://").removesuffix("/metrics"),
            f"127.0.0.1:{queue_server.server_address[1]}",
        ]
        with prometheus(tmp_path_factory.mktemp("prom"), targets, labels={"namespace": NAMESPACE, "pod": POD}) as p:
            yield p, tel, queue.labels(model=MODEL), loop
    finally:
        loop.close()
        queue_server.shutdown()
        queue_server.server_close()
        tel.shutdown()


def test_inflight_per_replica(stack: tuple[Prometheus, Telemetry, Any, Loop]) -> None:
    """Three requests held open: the KEDA query and the adapter's per-pod metric are 3; 0 once they finish."""
    prom, tel, _, loop = stack
    router = HeldRouter()
    wrapped = tel.instrument_router(router)
    s = scaling("inflight")
    keda, adapter = autoscaling.signal_queries(s)["keda"], adapter_query(s)

    async def start() -> list[asyncio.Future[Any]]:
        # a model's name becomes its label once the router has answered it once (before: __unknown__)
        await tel.instrument_router(ScriptedRouter(response=Completion(usage=usage(1, 1)))).openai_chat_completion(
            ChatParams(model=MODEL)
        )
        return [asyncio.ensure_future(wrapped.openai_chat_completion(ChatParams(model=MODEL))) for _ in range(3)]

    futures = loop.run(start())
    try:
        wait_for("3 in flight", lambda: prom.scalar(keda) == 3.0, 20)
        assert prom.by(adapter, "pod") == {POD: 3.0}
    finally:
        loop.loop.call_soon_threadsafe(router.release.set)

    async def finish() -> None:
        await asyncio.gather(*futures)

    loop.run(finish())
    wait_for("0 in flight", lambda: prom.scalar(keda) == 0.0, 20)
    assert autoscaling.scaled_object(s)["spec"]["triggers"][0]["metricType"] == "AverageValue"


def test_ttft_p95(stack: tuple[Prometheus, Telemetry, Any, Loop]) -> None:
    """Streams whose first token takes 0.3 s: TTFT p95 is 0.25 + 0.95 * 0.25 = 0.4875 s, the bucket's interpolation."""
    prom, tel, _, loop = stack
    router = tel.instrument_router(
        ScriptedRouter(
            chunks=[content_chunk("a"), content_chunk("b"), usage_chunk(usage(5, 2))], chunk_delay=TTFT_DELAY
        )
    )
    s = scaling("ttft")
    keda, adapter = autoscaling.signal_queries(s)["keda"], adapter_query(s)
    count = f'sum(ryot_ttft_latency_seconds_count{{pod="{POD}",model="{MODEL}"}})'
    assert prom.scalar(keda) == 0.0  # no traffic yet: "or vector(0)", not NaN

    async def batch() -> None:
        async def one() -> None:
            async for _ in await router.openai_chat_completion(ChatParams(model=MODEL, stream=True)):
                pass

        await asyncio.gather(*(one() for _ in range(3)))

    loop.run(batch())
    wait_for("the first batch scraped", lambda: prom.scalar(count) == 3.0, 20)
    loop.run(batch())
    wait_for("the second batch scraped", lambda: prom.scalar(count) == 6.0, 20)
    buckets = prom.by(f'sum by (le) (ryot_ttft_latency_seconds_bucket{{pod="{POD}"}})', "le")
    assert (buckets["0.25"], buckets["0.5"]) == (0.0, 6.0), "a TTFT fell outside (0.25, 0.5]: the machine stalled"
    assert prom.scalar(keda) == pytest.approx(0.4875, abs=1e-9)
    assert prom.by(adapter, "pod") == {POD: pytest.approx(0.4875, abs=1e-9)}


def test_mean_queue_time(stack: tuple[Prometheus, Telemetry, Any, Loop]) -> None:
    """Queue times of mean 0.3 s in both batches: the KEDA query and the adapter's per-pod metric are 0.3 s."""
    prom, _, queue, _ = stack
    s = scaling("queue")
    keda, adapter = autoscaling.signal_queries(s)["keda"], adapter_query(s)
    count = f'sum({autoscaling.QUEUE_FAMILY}_count{{pod="{POD}"}})'
    for i, batch in enumerate(QUEUE_TIMES):
        for seconds in batch:
            queue.observe(seconds)
        expected = sum(len(b) for b in QUEUE_TIMES[: i + 1])
        wait_for(f"queue batch {i + 1} scraped", lambda expected=expected: prom.scalar(count) == expected, 20)
    assert prom.scalar(keda) == pytest.approx(0.3, abs=1e-9)
    assert prom.by(adapter, "pod") == {POD: pytest.approx(0.3, abs=1e-9)}


def test_queries_select_only_the_target_deployments_pods(stack: tuple[Prometheus, Telemetry, Any, Loop]) -> None:
    """The same queries for another Deployment, namespace or model find nothing (0 for KEDA, no pod for the adapter)."""
    prom, *_ = stack
    for other in (
        autoscaling.Scaling(signal="inflight", target="route", threshold=1.0, namespace=NAMESPACE),
        autoscaling.Scaling(signal="inflight", target="router", threshold=1.0, namespace="other"),
    ):
        assert prom.scalar(autoscaling.signal_queries(other)["keda"]) == 0.0, other
    for signal in ("ttft", "queue"):
        s = autoscaling.Scaling(signal=signal, target="router", threshold=1.0, namespace=NAMESPACE, model="other")
        assert prom.scalar(autoscaling.signal_queries(s)["keda"]) == 0.0, signal

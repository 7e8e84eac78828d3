"""The whole server's state as whichever process reads it: what a scrape or the leader's OTLP export shows.

Every worker's file and the server's archive are merged (``directory.read_server``), plus what is read once per
server by the answering process (GPU sweep, service info, token efficiency: the server provider's reader). The
Prometheus exposition takes it through the OTel Prometheus reader (``merged_prometheus_reader``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource

from .. import catalogue
from .._compat import prometheus_reader, set_collect_callback
from .collections import record_collection
from .directory import Merged, _Ident, read_server

__all__ = ["MergedRates", "ServerView", "merged_prometheus_reader"]

_log = logging.getLogger("ryot_telemetry")
_RATE = catalogue.get("ryot.sliding_tokens_per_second").name  # checked at import: a typo is no rate that stays None


class MergedRates:
    """Completion tokens/s for the efficiency gauge (``derived.TokenRates``), from the merged sliding windows of
    every live worker (the last merge this process made)."""

    def __init__(self) -> None:
        self.merged: Merged | None = None

    def rate(self, model: str, seconds: int = 60) -> float | None:
        if self.merged is None:
            return None
        return self.merged.gauge_value(_RATE, model=model, time_window="1m")


class ServerView:
    """Reads the server's merged state; ``me`` says which server this process belongs to (updated at fork)."""

    def __init__(
        self, directory: str, me: _Ident, server_reader: InMemoryMetricReader, resource: Resource, rates: MergedRates
    ) -> None:
        self.directory = directory
        self.me = me
        self.server_reader = server_reader
        self.resource = resource
        self.rates = rates
        self._lock = threading.Lock()

    def merged(self) -> Merged:
        merged = read_server(self.directory, self.me)
        self.rates.merged = merged
        local = self.server_reader.get_metrics_data()  # GPU sweep, service info, token efficiency: once, here
        if local is not None:
            merged.add(encode_metrics(local), live=True)
        return merged

    def metrics_data(self) -> MetricsData:
        with self._lock:
            return self.merged().metrics_data(self.resource)

    def scrape_data(self) -> MetricsData:
        """``metrics_data`` for a Prometheus scrape, recorded in the directory once served (new series gate)."""
        started = time.monotonic()
        data = self.metrics_data()
        record_collection(self.directory, "prometheus", started)
        return data

    def after_fork_child(self, me: _Ident) -> None:
        self.me = me
        self._lock = threading.Lock()


def merged_prometheus_reader(produce: Callable[[], MetricsData], registry: Any) -> PrometheusMetricReader:
    """The OTel Prometheus reader on ``registry``, fed with the merged server state instead of a provider's.

    The reader is attached to no MeterProvider: its collect callback (the hook a provider installs) returns the
    merged data, and the OTel exporter translates it to Prometheus families itself (names, units, ``_total``, scope
    labels), so no exposition format is written here (the hook is the SDK's private provider-to-reader one: see
    ``_compat``).
    """
    reader = prometheus_reader(registry)

    def collect(_reader: Any, timeout_millis: float = 10_000) -> MetricsData | None:
        try:
            return produce()
        except Exception:
            _log.warning("ryot-telemetry: could not merge the worker processes' metrics", exc_info=True)
            return None

    set_collect_callback(reader, collect)
    return reader

"""The leader's OTLP export of the whole server's totals, on a thread of its own.

The OTLP reader is the one ``export.readers`` builds for both modes (``export.otlp.OtlpReader``); here it is fed
with the merged totals of every worker instead of a provider's, and only while this process leads (a collection
answers nothing otherwise). Its delta baseline lives in the directory (``multiproc.delta.FileStore``), so a new
leader continues from the last one. The export runs apart from the hand-off and the scrape: a dead, slow or refusing
endpoint, whose retries can take the exporter's whole timeout, holds back neither.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.resources import Resource

from .._compat import set_collect_callback
from ..export.otlp import OtlpReader
from .collections import record_collection
from .delta import FileStore

__all__ = ["feed_merged"]

_log = logging.getLogger("ryot_telemetry")


def feed_merged(
    reader: OtlpReader,
    directory: str,
    resource: Resource,
    *,
    leading: Callable[[], bool],
    produce: Callable[[], MetricsData],
) -> None:
    """Make ``reader`` export ``produce()`` (the merged totals) while ``leading()``, and record each collection's
    start as an ``otlp`` collection (the new-series gate)."""
    reader.otlp.store = FileStore(directory, resource)

    def collect(_reader: Any, timeout_millis: float = 10_000) -> MetricsData | None:
        if not leading():
            return None
        started = time.monotonic()
        try:
            data = produce()
        except Exception:
            _log.warning("ryot-telemetry: could not merge the worker processes' metrics for OTLP", exc_info=True)
            return None
        # Recorded once read, as a single process's gate counts a collection once read: the exports go out in
        # order on this one thread, so the increments follow the zero whatever becomes of this export, and a
        # dead or slow endpoint holds no new series back from the scrape.
        record_collection(directory, "otlp", started)
        return data

    set_collect_callback(reader, collect)

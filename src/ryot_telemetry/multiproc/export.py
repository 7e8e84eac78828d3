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
from ..export.outcome import Outcome
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
    """Make ``reader`` export ``produce()`` (the merged totals) while ``leading()``, and record each delivered
    export's start as an ``otlp`` collection (the new-series gate)."""
    export = reader.otlp
    export.store = FileStore(directory, resource)
    started = [0.0]

    def collect(_reader: Any, timeout_millis: float = 10_000) -> MetricsData | None:
        if not leading():
            return None
        started[0] = time.monotonic()
        try:
            return produce()
        except Exception:
            _log.warning("ryot-telemetry: could not merge the worker processes' metrics for OTLP", exc_info=True)
            return None

    def after(outcome: Outcome, _began: float) -> None:
        if outcome is Outcome.SUCCESS:
            record_collection(directory, "otlp", started[0])

    export.after = after
    set_collect_callback(reader, collect)

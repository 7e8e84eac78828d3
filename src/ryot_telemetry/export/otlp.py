"""The OTLP export, one pipeline for one process and for many.

``OtlpReader`` is a periodic reader on a thread of its own. It collects cumulative data (in one process from the
MeterProvider it is attached to; in multi-process mode, on the leader only, from the merged totals of every worker,
through a collect callback), and hands it to ``OtlpExport``, which computes deltas where the settings ask for them
(``export.delta``), sends through the observed OTLP exporter (``export.outcome``), advances the delta baseline when
the export was confirmed or its outcome is unknown, and counts each export by result (``ryot.telemetry.otlp.exports``)
and the increments given up after an unknown outcome (``ryot.telemetry.otlp.delta_increments_unconfirmed``).

Nothing else waits for it: the scrape and the multi-process hand-off run on their own threads, so a dead, slow or
refusing endpoint (whose retries can take the exporter's whole timeout) delays no scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from .. import catalogue
from .delta import Baseline, to_delta
from .outcome import ObservedExporter, Outcome
from .temporality import cumulative

__all__ = ["BaselineStore", "MemoryStore", "OtlpExport", "OtlpReader", "install_self_metrics"]

_log = logging.getLogger("ryot_telemetry")

EXPORTS = "ryot.telemetry.otlp.exports"
UNCONFIRMED = "ryot.telemetry.otlp.delta_increments_unconfirmed"


class BaselineStore(Protocol):
    """Where the delta baseline lives between exports."""

    def load(self) -> Baseline: ...

    def save(self, baseline: Baseline) -> None: ...


class MemoryStore:
    """One process: the baseline in memory."""

    def __init__(self) -> None:
        self.baseline = Baseline()

    def load(self) -> Baseline:
        return self.baseline

    def save(self, baseline: Baseline) -> None:
        self.baseline = baseline


class OtlpExport(MetricExporter):
    """A ``MetricExporter`` that takes cumulative data and sends it, or its delta, through an observed OTLP
    exporter."""

    def __init__(
        self,
        sender: ObservedExporter,
        *,
        delta: bool,
        aggregation: dict[type, Any],
        store: BaselineStore | None = None,
    ) -> None:
        super().__init__(preferred_temporality=cumulative(), preferred_aggregation=aggregation)
        self.sender = sender
        self.delta = delta
        self.store: BaselineStore = store if store is not None else MemoryStore()
        self.last: Outcome | None = None
        self.sent = 0  # exports attempted
        self._lock = threading.Lock()
        self._exports: Any = None
        self._unconfirmed: Any = None

    def instrument(self, exports: Any, unconfirmed: Any) -> None:
        """Count into these self-metric counters (``install_self_metrics``)."""
        self._exports, self._unconfirmed = exports, unconfirmed

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        with self._lock:
            payload, pending, increments = metrics_data, None, 0
            if self.delta:
                try:
                    d = to_delta(metrics_data, self.store.load(), time.time_ns())
                except Exception:
                    _log.warning("ryot-telemetry: could not compute the OTLP delta export", exc_info=True)
                    return MetricExportResult.FAILURE
                payload, pending, increments = d.data, d.baseline, d.increments
            outcome = self.sender.send(payload, timeout_millis)
            if pending is not None and outcome is not Outcome.REFUSED:
                try:
                    self.store.save(pending)
                except OSError as e:
                    _log.warning("ryot-telemetry: could not keep the OTLP delta baseline: %s", e)
            self.sent += 1
            self.last = outcome
            self._count(outcome, increments if self.delta and outcome is Outcome.UNKNOWN else 0)
        return MetricExportResult.SUCCESS if outcome is Outcome.SUCCESS else MetricExportResult.FAILURE

    def _count(self, outcome: Outcome, unconfirmed: int) -> None:
        try:
            if self._exports is not None:
                self._exports.add(1, {"result": outcome.value})
            if unconfirmed and self._unconfirmed is not None:
                self._unconfirmed.add(unconfirmed)
        except Exception:
            _log.debug("ryot-telemetry: could not count an OTLP export", exc_info=True)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self.sender.exporter.force_flush(timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.sender.exporter.shutdown(timeout_millis=timeout_millis)


class OtlpReader(PeriodicExportingMetricReader):
    """The periodic OTLP reader: its own thread, cumulative collections, ``OtlpExport`` behind it.

    ``force_flush()`` answers False when the export it caused did not succeed (the SDK's reader answers True
    whatever became of the export).
    """

    def __init__(self, export: OtlpExport, export_interval_millis: float) -> None:
        super().__init__(export, export_interval_millis=export_interval_millis)
        self.otlp = export

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        before = self.otlp.sent
        super().force_flush(timeout_millis)
        return self.otlp.sent == before or self.otlp.last is Outcome.SUCCESS


def install_self_metrics(meter: Any, reader: OtlpReader | None) -> None:
    """The OTLP export's self-metrics on ``meter``, always (every result at 0 without OTLP, or before the first
    export, so a rate or an alert over them works from the start), counted by ``reader``'s export if any."""
    from ..recording.instruments import create_instrument

    exports = create_instrument(meter, catalogue.get(EXPORTS))
    unconfirmed = create_instrument(meter, catalogue.get(UNCONFIRMED))
    for outcome in Outcome:
        exports.add(0, {"result": outcome.value})
    unconfirmed.add(0)
    if reader is not None:
        reader.otlp.instrument(exports, unconfirmed)

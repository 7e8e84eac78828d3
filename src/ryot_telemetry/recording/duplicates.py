"""Dropping the metrics ryot supersedes: ``RYOT_TELEMETRY_DROP_DUPLICATES=ogx`` (or ``configure(drop_duplicates=)``).

Under ``opentelemetry-instrument``, ogx's ``InferenceRouter`` records its own router histograms into the global
MeterProvider, which is ryot's: the same requests are then timed twice, and exposed twice. Opting in installs a
``DropAggregation`` View for each superseded instrument (matched by instrument name and meter, so nothing else is
touched): the SDK still receives ogx's measurements but aggregates, stores and exports nothing for them. Off by
default: dashboards built on ogx's names keep working until their owner switches.

``SUPERSEDED`` says which ryot family answers the question each dropped one answered (names as exposed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.metrics.view import DropAggregation, View

from .. import catalogue

__all__ = ["SUPERSEDED", "Superseded", "drop_views"]


@dataclass(frozen=True)
class Superseded:
    """One instrument of another library that a ryot family answers."""

    meter: str  # the instrumentation scope that creates it
    instrument: str  # its OTel name
    exposed: str  # its Prometheus family
    labels: tuple[str, ...]
    answered_by: tuple[str, ...]  # the ryot catalogue metrics that answer it
    note: str

    def __post_init__(self) -> None:
        for name in self.answered_by:
            catalogue.get(name)  # a misspelt answer fails at import, not in the docs that name it


SUPERSEDED: dict[str, tuple[Superseded, ...]] = {
    # ogx 1.5.0: ogx/telemetry/inference_metrics.py (meter "ogx.inference"), recorded in ogx/core/routers/inference.py
    "ogx": (
        Superseded(
            "ogx.inference",
            "ogx.inference.duration_seconds",
            "ogx_inference_duration_seconds",
            ("model", "provider", "stream", "status"),
            ("ryot.inference.latency", "ryot.inference.requests"),
            "latency by model and generation_mode (streaming or not), the outcome by status and error_type",
        ),
        Superseded(
            "ogx.inference",
            "ogx.inference.time_to_first_token_seconds",
            "ogx_inference_time_to_first_token_seconds",
            ("model", "provider", "stream", "status"),
            ("ryot.ttft.latency",),
            "time to the first content token of streams, by model and prompt_size",
        ),
        Superseded(
            "ogx.inference",
            "ogx.inference.tokens_per_second",
            "ogx_inference_tokens_per_second",
            ("model", "provider", "stream", "status"),
            ("ryot.tokens_per_second", "ryot.sliding_tokens_per_second"),
            "completion tokens / request duration per request, and the sliding 1m/5m/15m rate",
        ),
    ),
}
"""Per source (the ``RYOT_TELEMETRY_DROP_DUPLICATES`` value), the instruments dropped and what answers them."""


def drop_views(sources: Sequence[str]) -> list[View]:
    """``DropAggregation`` Views for the superseded instruments of ``sources`` (names from ``SUPERSEDED``)."""
    return [
        View(instrument_name=s.instrument, meter_name=s.meter, aggregation=DropAggregation())
        for source in sources
        for s in SUPERSEDED[source]
    ]

"""Optional dual emission of the OpenTelemetry GenAI semantic-convention metrics.

They are fed from the same per-request measurements as the ryot_* metrics (no second timing path); see
``_recorder.Recorder._record_semconv``.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from .catalogue import CHAT_COMPLETION, COMPLETION, METER_NAME

__all__ = ["SEMCONV", "SemconvInstruments", "semconv_views"]


@dataclass(frozen=True)
class SemconvSpec:
    name: str
    unit: str
    description: str
    buckets: tuple[float, ...]
    attributes: tuple[str, ...]


_COMMON = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model")

# Bucket boundaries are the ones the GenAI semantic conventions recommend for each metric.
SEMCONV: tuple[SemconvSpec, ...] = (
    SemconvSpec(
        "gen_ai.server.request.duration",
        "s",
        "Generative AI server request duration such as time-to-last byte or last output token.",
        (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
        (*_COMMON, "error.type"),
    ),
    SemconvSpec(
        "gen_ai.server.time_to_first_token",
        "s",
        "Time to generate first token for successful responses.",
        (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
        _COMMON,
    ),
    SemconvSpec(
        "gen_ai.server.time_per_output_token",
        "s",
        "Time per output token generated after the first token for successful responses.",
        (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5),
        _COMMON,
    ),
    SemconvSpec(
        "gen_ai.client.token.usage",
        "{token}",
        "Number of input and output tokens used.",
        (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
        (*_COMMON, "gen_ai.token.type"),
    ),
)

OPERATION = {CHAT_COMPLETION: "chat", COMPLETION: "text_completion"}
"""ryot ``endpoint`` -> ``gen_ai.operation.name``."""


def semconv_views() -> list[View]:
    """Views giving the semconv metrics their recommended buckets and attribute keys."""
    return [
        View(
            instrument_name=s.name,
            meter_name=METER_NAME,
            attribute_keys=set(s.attributes),
            aggregation=ExplicitBucketHistogramAggregation(boundaries=list(s.buckets)),
        )
        for s in SEMCONV
    ]


class SemconvInstruments:
    """The four semconv histograms, created with advisory buckets so they apply without Views too."""

    __slots__ = ("duration", "tpot", "ttft", "usage")

    def __init__(self, meter: Meter) -> None:
        made = [
            meter.create_histogram(
                s.name, unit=s.unit, description=s.description, explicit_bucket_boundaries_advisory=list(s.buckets)
            )
            for s in SEMCONV
        ]
        self.duration, self.ttft, self.tpot, self.usage = made

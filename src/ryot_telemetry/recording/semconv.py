"""Optional dual emission of the OpenTelemetry GenAI semantic-convention metrics.

They are fed from the same per-request measurements as the ryot_* metrics (no second timing path); see
``_recorder.Recorder._record_semconv``.

Which side: both. The router is the GenAI server its callers talk to, and a client of the model providers it
forwards each request to; the conventions require ``gen_ai.server.request.duration`` of a server and
``gen_ai.client.operation.duration`` of a client, so both sides' metrics are emitted (the SPEC lists
``gen_ai.client.token.usage``, whose conventions make ``gen_ai.client.operation.duration`` its required companion):

- server: ``gen_ai.server.request.duration`` (required), ``gen_ai.server.time_to_first_token`` and
  ``gen_ai.server.time_per_output_token`` (recommended);
- client: ``gen_ai.client.operation.duration`` (required; the same measurement as the server duration, since the
  router's call to its provider is what the wrapper times) and ``gen_ai.client.token.usage`` (the provider's usage
  report, one point per token type).

``server.address`` / ``server.port`` (recommended; the port conditionally required with the address) describe this
server on the server metrics; the router cannot see where it listens, so they come from configuration
(``genai_server="host:port"`` / ``RYOT_TELEMETRY_GENAI_SERVER``) and are left out when not configured. On the
client metrics they would name the provider's endpoint, which the wrapped router method does not expose, so they
are left out there (allowed: neither is required without the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from ..catalogue import CHAT_COMPLETION, COMPLETION, METER_NAME

__all__ = ["SCHEMA_URL", "SEMCONV", "SemconvInstruments", "semconv_views"]


@dataclass(frozen=True)
class SemconvSpec:
    name: str
    unit: str
    description: str
    buckets: tuple[float, ...]
    attributes: tuple[str, ...]


_CLIENT = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model")
_COMMON = (*_CLIENT, "server.address", "server.port")  # the server metrics: this server's address and port
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
"""Semantic-convention version the meter's telemetry follows: 1.37.0 introduced ``gen_ai.provider.name``."""

# Bucket boundaries are the ones the GenAI semantic conventions recommend for each metric.
SEMCONV: tuple[SemconvSpec, ...] = (
    SemconvSpec(
        "gen_ai.server.request.duration",
        "s",
        "Generative AI server request duration such as time-to-last byte or last output token.",
        _DURATION_BUCKETS,
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
        "gen_ai.client.operation.duration",
        "s",
        "GenAI operation duration.",
        _DURATION_BUCKETS,
        (*_CLIENT, "error.type"),
    ),
    SemconvSpec(
        "gen_ai.client.token.usage",
        "{token}",
        "Number of input and output tokens used.",
        (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
        (*_CLIENT, "gen_ai.token.type"),
    ),
)

OPERATION = {CHAT_COMPLETION: "chat", COMPLETION: "text_completion"}
"""ryot ``endpoint`` -> ``gen_ai.operation.name``."""


def semconv_views(
    attribute_filter: bool = True, exemplar_reservoir_factory: Any = None, explicit: bool = True
) -> list[View]:
    """Views giving the semconv metrics their recommended buckets (and attribute-key filters, see ``views()``);
    ``explicit=False``: the aggregation is left to each reader (the advisory buckets, or OTLP's exponential)."""
    return [
        View(
            instrument_name=s.name,
            meter_name=METER_NAME,
            attribute_keys=set(s.attributes) if attribute_filter else None,
            aggregation=ExplicitBucketHistogramAggregation(boundaries=list(s.buckets)) if explicit else None,
            exemplar_reservoir_factory=exemplar_reservoir_factory,
        )
        for s in SEMCONV
    ]


class SemconvInstruments:
    """The five semconv histograms (three server, two client), created with advisory buckets so they apply without
    Views too."""

    __slots__ = ("client_duration", "duration", "tpot", "ttft", "usage")

    def __init__(self, meter: Meter) -> None:
        made = [
            meter.create_histogram(
                s.name, unit=s.unit, description=s.description, explicit_bucket_boundaries_advisory=list(s.buckets)
            )
            for s in SEMCONV
        ]
        self.duration, self.ttft, self.tpot, self.client_duration, self.usage = made

"""Optional dual emission of the OpenTelemetry GenAI semantic-convention metrics.

They are fed from the same per-request measurements as the ryot_* metrics (no second timing path); see
``_recorder.Recorder._record_semconv``.

Which side: the router serves clients (it is the GenAI server they call), so it emits the model-server metrics of
the conventions: ``gen_ai.server.request.duration`` (required of a server) and the recommended
``gen_ai.server.time_to_first_token`` and ``gen_ai.server.time_per_output_token``. It emits no client metric: a
client instrumentation must emit ``gen_ai.client.operation.duration`` with ``gen_ai.client.token.usage``, and the
router is not the client of these requests. Token counts stay in ``ryot_tokens_generated_total``.
``server.address`` / ``server.port`` (recommended; the port conditionally required with the address) describe this
server; the router cannot see where it listens, so they come from configuration (``genai_server="host:port"`` /
``RYOT_TELEMETRY_GENAI_SERVER``) and are left out when not configured.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

__all__ = ["SCHEMA_URL", "SEMCONV", "SemconvInstruments", "parse_server", "semconv_views"]


@dataclass(frozen=True)
class SemconvSpec:
    name: str
    unit: str
    description: str
    buckets: tuple[float, ...]
    attributes: tuple[str, ...]


_COMMON = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "server.port",
)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
"""Semantic-convention version the meter's telemetry follows: 1.37.0 introduced ``gen_ai.provider.name``."""

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
)

OPERATION = {"chat_completion": "chat", "completion": "text_completion"}


def semconv_views() -> list[View]:
    """Views giving the semconv metrics their recommended buckets and attribute keys."""
    from ._instruments import METER_NAME

    return [
        View(
            instrument_name=s.name,
            meter_name=METER_NAME,
            attribute_keys=set(s.attributes),
            aggregation=ExplicitBucketHistogramAggregation(boundaries=list(s.buckets)),
        )
        for s in SEMCONV
    ]


def parse_server(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6addr]:port`` for IPv6) -> (server.address, server.port); ValueError naming the fix."""
    v = value.strip()
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = v.rpartition(":")
        if ":" in host:
            host = ""  # an IPv6 address needs its brackets
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"GenAI server must be host:port (IPv6 as [addr]:port), got {value!r}")
    return host, int(port)


class SemconvInstruments:
    """The three server histograms, created with advisory buckets so they apply without Views too."""

    __slots__ = ("duration", "tpot", "ttft")

    def __init__(self, meter: Meter) -> None:
        made = [
            meter.create_histogram(
                s.name, unit=s.unit, description=s.description, explicit_bucket_boundaries_advisory=list(s.buckets)
            )
            for s in SEMCONV
        ]
        self.duration, self.ttft, self.tpot = made

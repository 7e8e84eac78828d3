"""Optional dual emission of the OpenTelemetry GenAI semantic-convention metrics.

They are fed from the same per-request measurements as the ryot_* metrics (no second timing path); see
``recorder.Recorder._record_semconv``.

Where the names come from: the installed ``opentelemetry-semantic-conventions`` package. Every GenAI metric it
defines is a ``GEN_AI_*`` constant of ``opentelemetry.semconv._incubating.metrics.gen_ai_metrics`` with a
``create_gen_ai_*`` factory; the name, unit, instrument kind and description of each metric are what that factory
creates (``package_metrics``), never typed here, and the attribute keys and values are the package's constants. The
package carries no bucket boundaries: those are the ones the conventions' text recommends for each metric
(``ExplicitBucketBoundaries``), in ``MEASURED`` below. Each metric constant of the package is either in ``MEASURED``
(emitted) or in ``NOT_MEASURABLE`` with the reason; a test fails on one that is neither, so a package upgrade that
adds a metric is noticed, and one that renames a metric renames it here too.

Which side: both. The router is the GenAI server its callers talk to, and a client of the model providers it
forwards each request to; the conventions require ``gen_ai.server.request.duration`` of a server and
``gen_ai.client.operation.duration`` of a client, so both sides' metrics are emitted:

- server: ``gen_ai.server.request.duration`` (required), ``gen_ai.server.time_to_first_token`` and
  ``gen_ai.server.time_per_output_token`` (recommended);
- client: ``gen_ai.client.operation.duration`` (required; the same measurement as the server duration, since the
  router's call to its provider is what the wrapper times), ``gen_ai.client.token.usage`` (the provider's usage
  report, one point per token type), and on streams ``gen_ai.client.operation.time_to_first_chunk`` (start to the
  first chunk of any kind received from the provider) and ``gen_ai.client.operation.time_per_output_chunk`` (one
  point per later chunk: the time since the previous chunk arrived; between two chunks the router also waits for
  its own caller to take the previous one, as any streaming client does).

``server.address`` / ``server.port`` (recommended; the port conditionally required with the address) describe this
server on the server metrics; the router cannot see where it listens, so they come from configuration
(``genai_server="host:port"`` / ``RYOT_TELEMETRY_GENAI_SERVER``) and are left out when not configured. On the
client metrics they would name the provider's endpoint, which the wrapped router method does not expose, so they
are left out there (allowed: neither is required without the other).

Token detail: the package's ``gen_ai.token.type`` values are ``input`` and ``output`` only; cache-read and reasoning
tokens exist in it only as span attributes (``gen_ai.usage.cache_read.input_tokens``,
``gen_ai.usage.reasoning.output_tokens``), with no metric and no token type of their own, so they are not added to
``gen_ai.client.token.usage`` (a custom token type would be counted twice by every sum over token types: both are
parts of the input and output counts). ``TOKEN_DETAIL`` says where each usage attribute goes; ryot's own
``ryot_cached_prompt_tokens_total`` and ``ryot_reasoning_tokens_total`` count them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.semconv.attributes import error_attributes, server_attributes

from .._compat import genai_attributes as ga
from .._compat import genai_metrics as gm
from ..catalogue import CHAT_COMPLETION, COMPLETION, METER_NAME

__all__ = [
    "ADDED_IN",
    "MEASURED",
    "NOT_MEASURABLE",
    "SCHEMA_URL",
    "SEMCONV",
    "TOKEN_DETAIL",
    "UNAVAILABLE",
    "SemconvInstruments",
    "package_metrics",
    "semconv_views",
]


@dataclass(frozen=True)
class SemconvSpec:
    name: str
    unit: str
    description: str
    buckets: tuple[float, ...]
    attributes: tuple[str, ...]
    constant: str  # the package's constant naming it (GEN_AI_...)


_log = logging.getLogger("ryot_telemetry")

GEN_AI_OPERATION_NAME = ga.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME = ga.GEN_AI_PROVIDER_NAME
GEN_AI_REQUEST_MODEL = ga.GEN_AI_REQUEST_MODEL
GEN_AI_RESPONSE_MODEL = ga.GEN_AI_RESPONSE_MODEL
GEN_AI_TOKEN_TYPE = ga.GEN_AI_TOKEN_TYPE
ERROR_TYPE = error_attributes.ERROR_TYPE
SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
SERVER_PORT = server_attributes.SERVER_PORT

_CLIENT = (ga.GEN_AI_OPERATION_NAME, ga.GEN_AI_PROVIDER_NAME, ga.GEN_AI_REQUEST_MODEL, ga.GEN_AI_RESPONSE_MODEL)
_SERVER = (*_CLIENT, server_attributes.SERVER_ADDRESS, server_attributes.SERVER_PORT)  # this server's address
_ERROR = error_attributes.ERROR_TYPE
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
"""Semantic-convention version the meter's telemetry follows: 1.37.0 introduced ``gen_ai.provider.name``."""

MEASURED: dict[str, tuple[tuple[float, ...], tuple[str, ...]]] = {
    # package constant: (the conventions' recommended bucket boundaries, the attribute keys ryot sets)
    "GEN_AI_SERVER_REQUEST_DURATION": (_DURATION_BUCKETS, (*_SERVER, _ERROR)),
    "GEN_AI_SERVER_TIME_TO_FIRST_TOKEN": (
        (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
        _SERVER,
    ),
    "GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN": (
        (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5),
        _SERVER,
    ),
    "GEN_AI_CLIENT_OPERATION_DURATION": (_DURATION_BUCKETS, (*_CLIENT, _ERROR)),
    "GEN_AI_CLIENT_TOKEN_USAGE": (
        (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
        (*_CLIENT, ga.GEN_AI_TOKEN_TYPE),
    ),
    "GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK": (_DURATION_BUCKETS, _CLIENT),
    "GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK": (_DURATION_BUCKETS, _CLIENT),
}
"""The GenAI metrics ryot emits, by the package's constant; a constant the installed package lacks is skipped
(``UNAVAILABLE``) and named once at start-up."""

ADDED_IN: dict[str, tuple[str, str]] = {
    "GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK": ("gen_ai.client.operation.time_to_first_chunk", "0.63b0"),
    "GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK": ("gen_ai.client.operation.time_per_output_chunk", "0.63b0"),
}
"""The metrics of ``MEASURED`` that the oldest package our range allows (0.58b0) does not define: constant ->
(metric name, the package release that added it), for the start-up message naming what an older package lacks (a
test checks each name against the newest package's constant)."""

NOT_MEASURABLE: dict[str, str] = {}
"""GenAI metrics of the package a router cannot measure, by constant, with the reason (none from 0.58b0 to
0.66b2)."""

TOKEN_DETAIL: dict[str, str] = {
    "GEN_AI_USAGE_INPUT_TOKENS": "gen_ai.client.token.usage with gen_ai.token.type=input",
    "GEN_AI_USAGE_OUTPUT_TOKENS": "gen_ai.client.token.usage with gen_ai.token.type=output",
    "GEN_AI_USAGE_PROMPT_TOKENS": "deprecated name of gen_ai.usage.input_tokens (token type input)",
    "GEN_AI_USAGE_COMPLETION_TOKENS": "deprecated name of gen_ai.usage.output_tokens (token type output)",
    "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS": "a span attribute only (no metric, no token type): part of input; "
    "ryot_cached_prompt_tokens_total counts it",
    "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS": "a span attribute only (no metric, no token type): part of output; "
    "ryot_reasoning_tokens_total counts it",
    "GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS": "a span attribute only, and OpenAI-style usage (what ryot reads) "
    "does not report cache writes",
}
"""Where each ``gen_ai.usage.*`` attribute of the package goes in ryot's metrics."""

OPERATION = {
    CHAT_COMPLETION: ga.GenAiOperationNameValues.CHAT.value,
    COMPLETION: ga.GenAiOperationNameValues.TEXT_COMPLETION.value,
}
"""ryot ``endpoint`` -> ``gen_ai.operation.name``."""

INPUT = ga.GenAiTokenTypeValues.INPUT.value
OUTPUT = ga.GenAiTokenTypeValues.OUTPUT.value


class _Recording:
    """A stand-in meter that notes what a semconv factory creates: (kind, name, unit, description)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, str, str]] = []

    def _note(self, kind: str) -> Callable[..., None]:
        def create(name: str, unit: str = "", description: str = "", **_: Any) -> None:
            self.made.append((kind, name, unit, description))

        return create

    def __getattr__(self, attr: str) -> Callable[..., None]:
        if not attr.startswith("create_"):
            raise AttributeError(attr)
        return self._note(attr[len("create_") :])


def package_metrics() -> dict[str, tuple[str, str, str, str]]:
    """Every GenAI metric of the installed semconv package: constant -> (instrument kind, name, unit, description),
    as its ``create_gen_ai_*`` factory creates it."""
    out: dict[str, tuple[str, str, str, str]] = {}
    for constant, value in vars(gm).items():
        factory = getattr(gm, f"create_{constant.lower()}", None)
        if not (constant.startswith("GEN_AI_") and isinstance(value, str) and callable(factory)):
            continue
        meter = _Recording()
        factory(meter)
        ((kind, name, unit, description),) = meter.made
        out[constant] = (kind, name, unit, description)
    return out


def _unavailable() -> tuple[str, ...]:
    known = package_metrics()
    return tuple(c for c in MEASURED if c not in known)


UNAVAILABLE: tuple[str, ...] = _unavailable()
"""The constants of ``MEASURED`` the installed package does not define: those metrics are not emitted."""


def unavailable_message() -> str | None:
    """The start-up warning naming the GenAI metrics the installed package does not define; None when none."""
    if not UNAVAILABLE:
        return None
    names = ", ".join(ADDED_IN.get(c, (c, ""))[0] for c in UNAVAILABLE)
    newer = max((ADDED_IN[c][1] for c in UNAVAILABLE if c in ADDED_IN), default=None)
    needs = f"; opentelemetry-semantic-conventions>={newer} defines them" if newer else ""
    return (
        f"ryot-telemetry: the installed opentelemetry-semantic-conventions "
        f"{version('opentelemetry-semantic-conventions')} does not define the GenAI metrics {names}, so they are "
        f"not emitted (the other GenAI metrics are){needs}"
    )


def _specs() -> tuple[SemconvSpec, ...]:
    known = package_metrics()
    return tuple(
        SemconvSpec(known[c][1], known[c][2], known[c][3], buckets, attributes, c)
        for c, (buckets, attributes) in MEASURED.items()
        if c in known and known[c][0] == "histogram"
    )


SEMCONV: tuple[SemconvSpec, ...] = _specs()
"""The semconv histograms ryot emits, with the package's names, units and descriptions."""


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
    """The semconv histograms (three server, four client), created with advisory buckets so they apply without
    Views too. An attribute is None when the installed package does not define that metric; creating them logs one
    WARNING naming those metrics (``unavailable_message``)."""

    __slots__ = ("client_duration", "duration", "first_chunk", "per_chunk", "tpot", "ttft", "usage")

    def __init__(self, meter: Meter) -> None:
        message = unavailable_message()
        if message:
            _log.warning(message)
        made = {
            s.constant: meter.create_histogram(
                s.name, unit=s.unit, description=s.description, explicit_bucket_boundaries_advisory=list(s.buckets)
            )
            for s in SEMCONV
        }
        self.duration = made.get("GEN_AI_SERVER_REQUEST_DURATION")
        self.ttft = made.get("GEN_AI_SERVER_TIME_TO_FIRST_TOKEN")
        self.tpot = made.get("GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN")
        self.client_duration = made.get("GEN_AI_CLIENT_OPERATION_DURATION")
        self.usage = made.get("GEN_AI_CLIENT_TOKEN_USAGE")
        self.first_chunk = made.get("GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK")
        self.per_chunk = made.get("GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK")

"""Reading a variable and the generic loaders (``_int``, ``_bool``, ``_text``, ``_choice``): ``loader(name,
argument)`` returns the argument when one was given, else the variable's value, else the default, and raises
``ConfigurationError`` naming what to change."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..catalogue import first_unencodable

__all__ = [
    "COMPRESSIONS",
    "CUMULATIVE",
    "DELTA",
    "DUPLICATE_SOURCES",
    "EXEMPLAR_FILTERS",
    "EXPLICIT",
    "EXPONENTIAL",
    "EXPORTERS",
    "HISTOGRAM_AGGREGATIONS",
    "LOWMEMORY",
    "PROTOCOLS",
    "TEMPORALITIES",
    "ConfigurationError",
    "Loader",
]

EXPORTERS = ("prometheus", "otlp", "console", "none")
"""``OTEL_METRICS_EXPORTER`` values; the SDK's ``otlp_proto_grpc`` / ``otlp_proto_http`` mean otlp with a protocol."""
PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = ("gzip", "deflate", "none")
EXEMPLAR_FILTERS = ("always_off", "always_on", "trace_based")
CUMULATIVE, DELTA, LOWMEMORY = "cumulative", "delta", "lowmemory"
TEMPORALITIES = (CUMULATIVE, DELTA, LOWMEMORY)
"""``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` values (any case), as the OTLP exporters read them."""
EXPLICIT, EXPONENTIAL = "explicit_bucket_histogram", "base2_exponential_bucket_histogram"
HISTOGRAM_AGGREGATIONS = (EXPLICIT, EXPONENTIAL)
"""``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`` values (any case)."""
DUPLICATE_SOURCES = ("ogx",)
"""``RYOT_TELEMETRY_DROP_DUPLICATES`` values: libraries whose superseded router metrics can be dropped."""
_OTLP_VARIANTS = {"otlp_proto_grpc": "grpc", "otlp_proto_http": "http/protobuf"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_DEVICE_ID = re.compile(r"^\d{1,4}(/\d{1,4})?$")
_PREFIX = "RYOT_TELEMETRY_"


class ConfigurationError(ValueError):
    """Bad configuration, reported once at start-up with what to change."""


Loader = Callable[[str, Any], Any]


def _raw(var: str) -> str | None:
    """An environment variable; unset and blank are the same (not set)."""
    raw = os.environ.get(var)
    return None if raw is None or raw.strip() == "" else raw


def _encodable(where: str, value: str) -> str:
    """``value``, which becomes a label or resource attribute, else a ConfigurationError naming ``where``.

    Values from configuration are rejected rather than clipped like a client's model name: a control character
    (often a stray CR from a Windows-edited env file) or a surrogate (``os.environ``'s escape for bytes that are not
    valid UTF-8) would break every Prometheus scrape and OTLP export, and a silently altered service name or
    model would be harder to find than an error at start-up.
    """
    i = first_unencodable(value)
    if i is None:
        return value
    what = "bytes that are not valid UTF-8" if "\udc80" <= value[i] <= "\udcff" else f"the character {value[i]!r}"
    raise ConfigurationError(
        f"{where}={value!r}: contains {what} at position {i}; labels and resource attributes must be UTF-8 "
        "text without control characters"
    )


def _truth(raw: str) -> bool | None:
    """A boolean variable's value (1/true/yes/on, 0/false/no/off, any case); None when it is neither."""
    v = raw.strip().lower()
    return True if v in _TRUE else False if v in _FALSE else None


# --- loaders: (field name, argument or None) -> value ------------------------------------------------------------


def _int(var: str | None, default: int, minimum: int, maximum: int | None = None) -> Loader:
    def load(name: str, arg: Any) -> int:
        if arg is not None:
            if isinstance(arg, bool) or not isinstance(arg, int):
                raise ConfigurationError(f"{name} must be an integer, got {arg!r}")
            value, where = arg, name
        else:
            raw = _raw(var) if var else None
            if raw is None:
                return default
            try:
                value = int(raw.strip())
            except ValueError:
                raise ConfigurationError(f"{var}={raw!r}: expected an integer") from None
            where = str(var)
        if value < minimum or (maximum is not None and value > maximum):
            span = f"{minimum}-{maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigurationError(f"{where} must be {span}, got {value}")
        return value

    return load


def _bool(var: str | None, default: bool | None) -> Loader:
    def load(name: str, arg: Any) -> bool | None:
        if arg is not None:
            if not isinstance(arg, bool):
                raise ConfigurationError(f"{name} must be True or False, got {arg!r}")
            return arg
        raw = _raw(var) if var else None
        if raw is None:
            return default
        value = _truth(raw)
        if value is None:
            raise ConfigurationError(f"{var}={raw!r}: expected true or false")
        return value

    return load


def _text(var: str | None, default: str | None) -> Loader:
    def load(name: str, arg: Any) -> str | None:
        if arg is not None:
            if not isinstance(arg, str) or not arg.strip():
                raise ConfigurationError(f"{name} must be a non-empty string, got {arg!r}")
            return _encodable(name, arg)
        raw = _raw(var) if var else None
        return _encodable(str(var), raw.strip()) if raw is not None else default

    return load


def _choice(var: str | None, default: str, choices: Sequence[str]) -> Loader:
    def load(name: str, arg: Any) -> str:
        value = _text(var, default)(name, arg)
        assert value is not None
        v: str = value.strip().lower()
        if v not in choices:
            where = name if arg is not None else f"{var}={value!r}"
            raise ConfigurationError(f"{where}: unknown value {value!r}; choose from {', '.join(choices)}")
        return v

    return load


def _given(name: str, arg: Any) -> Any:
    """A plain argument with no variable behind it (an injected object such as the NVML backend)."""
    return arg

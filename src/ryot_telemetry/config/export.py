"""Loaders of the export side's settings: the readers, the OTLP endpoint, protocol, timeout and compression, the
exemplar filter, the Prometheus registry, the resource attributes and the semconv server address."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_METRICS_EXEMPLAR_FILTER,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
)

from .. import env
from .loaders import (
    _OTLP_VARIANTS,
    COMPRESSIONS,
    EXEMPLAR_FILTERS,
    EXPORTERS,
    PROTOCOLS,
    ConfigurationError,
    _choice,
    _encodable,
    _raw,
    _text,
)

__all__ = ["names_exporters", "parse_server"]


def parse_server(value: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6addr]:port`` for IPv6) -> (server.address, server.port); None when malformed."""
    v = value.strip()
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = v.rpartition(":")
        if ":" in host:
            host = ""  # an IPv6 address needs its brackets
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _genai_server(name: str, arg: Any) -> tuple[str, int] | None:
    """``server.address`` / ``server.port`` of the semconv server metrics: where clients reach this server. The
    port is required with the address (the conventions make it conditionally required), so both or neither."""
    if arg is not None and not isinstance(arg, str):
        raise ConfigurationError(f"{name} must be a 'host:port' string, got {arg!r}")
    raw = arg if arg is not None else _raw(env.RYOT_TELEMETRY_GENAI_SERVER)
    if raw is None:
        return None
    where = name if arg is not None else env.RYOT_TELEMETRY_GENAI_SERVER
    parsed = parse_server(_encodable(where, raw))
    if parsed is None:
        raise ConfigurationError(
            f"{where}={raw!r}: expected host:port with a port 1-65535, such as router.internal:8321 "
            "(IPv6 as [addr]:port)"
        )
    return parsed


def _exporters(name: str, arg: Any) -> tuple[str, ...]:
    if arg is not None and not isinstance(arg, (str, list, tuple)):
        raise ConfigurationError(f"exporters must be a string or a list of strings, got {arg!r}")
    raw = arg if arg is not None else _raw(OTEL_METRICS_EXPORTER)
    where = name if arg is not None else f"{OTEL_METRICS_EXPORTER}={raw!r}"
    if raw is None:
        otlp = _raw(OTEL_EXPORTER_OTLP_ENDPOINT) or _raw(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
        return ("prometheus", "otlp") if otlp else ("prometheus",)
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"exporters must be a string or a list of strings, got {arg!r}")
        n = item.strip().lower()
        n = "otlp" if n in _OTLP_VARIANTS else n
        if n and n not in names:
            names.append(n)
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown metrics exporter {unknown[0]!r}; choose from {', '.join(EXPORTERS)}"
        )
    return tuple(n for n in names if n != "none")


def names_exporters(var: str) -> bool:
    """Does ``OTEL_TRACES_EXPORTER`` / ``OTEL_LOGS_EXPORTER`` name an exporter? Those signals are left to the SDK's
    own configurator; this only tells the distro whether to call it."""
    raw = _raw(var)
    return raw is not None and raw.strip().lower() != "none"


def _otlp_protocol(name: str, args: tuple[Any, Any]) -> str:
    """The argument, else an ``otlp_proto_*`` exporter name (it names the SDK's exporter class, so it wins as it
    does in the SDK), else ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else grpc.

    ``args``: the ``otlp_protocol`` and ``exporters`` arguments (exporter names come from the latter when given).
    """
    arg, exporters = args
    if arg is None:
        if exporters is None:
            exporters = _raw(OTEL_METRICS_EXPORTER) or ""
        for item in exporters.split(",") if isinstance(exporters, str) else exporters:
            variant = _OTLP_VARIANTS.get(item.strip().lower()) if isinstance(item, str) else None
            if variant is not None:
                return variant
    var = OTEL_EXPORTER_OTLP_METRICS_PROTOCOL
    if arg is None and _raw(var) is None:
        var = OTEL_EXPORTER_OTLP_PROTOCOL
    value = _text(var, "grpc")(name, arg)
    assert value is not None
    proto: str = value.strip().lower()
    if proto not in PROTOCOLS:
        where = name if arg is not None else f"{var}={value!r}"
        raise ConfigurationError(f"{where}: unknown OTLP protocol {proto!r}; choose grpc or http/protobuf")
    return proto


def _endpoint(value: str, where: str) -> str:
    try:
        url = urlparse(value.strip())
        url.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as e:
        raise ConfigurationError(f"{where}: malformed OTLP endpoint {value!r} ({e})") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigurationError(
            f"{where}: malformed OTLP endpoint {value!r}; expected a URL such as http://collector:4317 "
            "(grpc) or http://collector:4318 (http/protobuf)"
        )
    return value.strip()


def _otlp_endpoint(name: str, arg: Any) -> str | None:
    if arg is not None:
        if not isinstance(arg, str):
            raise ConfigurationError(f"{name} must be a URL string, got {arg!r}")
        return _endpoint(arg, name)
    for var in (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT):
        raw = _raw(var)
        if raw is not None:
            return _endpoint(raw, var)
    return None


def _otlp_endpoint_source(name: str, arg: Any) -> str | None:
    """Where ``otlp_endpoint`` came from: ``"argument"``, the variable's name, or None (the exporter's default).

    The HTTP exporter uses ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` as given and adds ``/v1/metrics`` to a base
    endpoint; a gRPC endpoint from the environment leaves ``OTEL_EXPORTER_OTLP_INSECURE`` to the exporter.
    """
    if arg is not None:
        return "argument"
    for var in (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT):
        if _raw(var) is not None:
            return var
    return None


def _otlp_timeout(name: str, arg: Any) -> float | None:
    """Seconds, as the Python OTLP exporters read ``OTEL_EXPORTER_OTLP_TIMEOUT`` (default 10)."""
    var = OTEL_EXPORTER_OTLP_METRICS_TIMEOUT
    if _raw(var) is None:
        var = OTEL_EXPORTER_OTLP_TIMEOUT
    raw = _raw(var)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{var}={raw!r}: expected a number of seconds > 0, such as 10")
    return value


def _otlp_compression(name: str, arg: Any) -> str | None:
    var = (
        OTEL_EXPORTER_OTLP_METRICS_COMPRESSION
        if _raw(OTEL_EXPORTER_OTLP_METRICS_COMPRESSION)
        else OTEL_EXPORTER_OTLP_COMPRESSION
    )
    raw = _raw(var)
    if raw is None:
        return None
    v = raw.strip().lower()
    if v not in COMPRESSIONS:
        raise ConfigurationError(f"{var}={raw!r}: unknown compression; choose from {', '.join(COMPRESSIONS)}")
    return v


def _exemplar_filter(name: str, arg: Any) -> str | None:
    """The filter ``OTEL_METRICS_EXEMPLAR_FILTER`` names; None (unset) lets ``configure()`` choose: trace-based
    where a reader can carry exemplars (OTLP, console, extra readers), off for the Prometheus reader alone."""
    raw = _raw(OTEL_METRICS_EXEMPLAR_FILTER)
    if raw is None:
        return None
    v = raw.strip().lower()
    if v not in EXEMPLAR_FILTERS:
        raise ConfigurationError(
            f"{OTEL_METRICS_EXEMPLAR_FILTER}={raw!r}: unknown filter; choose from {', '.join(EXEMPLAR_FILTERS)}"
        )
    return v


def _registry(name: str, arg: Any) -> Any:
    """``"global"``, ``"private"``, or a ``prometheus_client.CollectorRegistry`` given as the argument."""
    if arg is not None and not isinstance(arg, str):
        if not callable(getattr(arg, "register", None)):
            raise ConfigurationError(f"{name} must be a CollectorRegistry, 'private' or 'global', got {arg!r}")
        return arg
    return _choice(env.RYOT_TELEMETRY_PROMETHEUS_REGISTRY, "global", ("global", "private"))(name, arg)


def _readers(name: str, arg: Any) -> tuple[Any, ...]:
    if arg is None:
        return ()
    try:
        readers = tuple(arg)
    except TypeError:
        raise ConfigurationError(f"{name} must be a list of MetricReader objects, got {arg!r}") from None
    for r in readers:
        if not callable(getattr(r, "collect", None)):
            raise ConfigurationError(f"{name} must be a list of MetricReader objects, got {r!r}")
    return readers


def _mapping(name: str, arg: Any) -> dict[str, str]:
    """Resource attributes: the argument's, and (checked here, merged by the SDK) ``OTEL_RESOURCE_ATTRIBUTES``'."""
    _resource_env_encodable()
    if arg is None:
        return {}
    if not isinstance(arg, Mapping):
        raise ConfigurationError(f"{name} must be a mapping of attribute name -> value, got {arg!r}")
    for key, value in arg.items():
        _encodable(f"{name} key", str(key))
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, str):
                _encodable(f"{name}[{key!r}]", v)
    return dict(arg)


def _resource_env_encodable() -> None:
    """``OTEL_RESOURCE_ATTRIBUTES`` as the SDK decodes it (values are percent-decoded, so ``%0A`` is a newline).

    A pair without ``=`` or with an empty key is an error: the SDK would drop it with a log line, and a service
    whose ``deployment.environment`` silently vanished is found much later than one that does not start.
    """
    raw = _raw(OTEL_RESOURCE_ATTRIBUTES)
    if raw is None:
        return
    _encodable(OTEL_RESOURCE_ATTRIBUTES, raw)
    for item in raw.split(","):
        key, sep, _ = item.partition("=")
        if item.strip() and (not sep or not key.strip()):
            raise ConfigurationError(
                f"{OTEL_RESOURCE_ATTRIBUTES}={raw!r}: {item.strip()!r} is not key=value; expected comma-separated "
                "key=value pairs such as service.namespace=shop,deployment.environment=prod (values percent-encoded)"
            )
    from opentelemetry.sdk.resources import OTELResourceDetector

    named = _raw(OTEL_SERVICE_NAME) is not None  # then service.name is OTEL_SERVICE_NAME, checked by its setting
    for key, value in OTELResourceDetector().detect().attributes.items():
        if isinstance(value, str) and not (named and key == "service.name"):
            _encodable(f"{OTEL_RESOURCE_ATTRIBUTES} ({key})", value)

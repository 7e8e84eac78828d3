"""Every setting ryot-telemetry reads, in one frozen object built once and validated once.

settings = Settings.load(prometheus_port=0)      # configure()'s keyword arguments; None means "not given"
settings.prometheus_port, settings.buckets, ...

Each field names its loader: ``loader(name, argument)`` returns the value from the argument when one was given
(code arguments win), else from its ``OTEL_*`` / ``RYOT_TELEMETRY_*`` variable, else the default, and raises
``ConfigurationError`` saying what to change. ``configure()``, ``testing.capture()``, the distro/configurator, the
instrumentor and the GPU gauges read this object; nothing else parses an environment variable.

Adding a setting: a constant with a docstring in ``env.py`` (for the docs table), one field of ``Settings`` with
its loader (``_int``, ``_bool``, ``_text``, ``_choice``, or a function of your own), and, when ``configure()``
should take it as an argument, one key of ``Arguments`` with its type and docstring: ``configure()``'s signature,
its documentation and the generated arguments table all come from that key.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import urlparse

from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
    OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRICS_EXEMPLAR_FILTER,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
)

from . import env
from .budgets import BudgetTable
from .catalogue import first_unencodable, resolve_buckets
from .pricing import PriceTable
from .slo import SloTable

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader

__all__ = [
    "EXPORTERS",
    "PROTOCOLS",
    "Arguments",
    "ConfigurationError",
    "Settings",
    "device_id",
    "gpu_enabled",
    "gpu_models",
    "known_variables",
    "names_exporters",
    "parse_gpu_models",
    "parse_server",
    "unknown_variables",
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


def _buckets(name: str, arg: Any) -> dict[str, tuple[float, ...]]:
    """Catalogue buckets, overridden by ``RYOT_TELEMETRY_BUCKETS``, overridden per metric by the argument.

    Each source is checked on its own first, so an error names the one it came from.
    """
    overrides: dict[str, Any] = {}
    raw = _raw(env.RYOT_TELEMETRY_BUCKETS)
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigurationError(f"{env.RYOT_TELEMETRY_BUCKETS} is not valid JSON: {e}") from None
        if not isinstance(parsed, dict):
            raise ConfigurationError(
                f"{env.RYOT_TELEMETRY_BUCKETS} must be a JSON object of name -> list, such as "
                '{"ryot_inference_latency_seconds": [0.1, 0.5, 1, 5]}'
            )
        _checked_buckets(env.RYOT_TELEMETRY_BUCKETS, parsed)
        overrides.update(parsed)
    if arg is not None:
        if not isinstance(arg, Mapping):
            raise ConfigurationError(f"{name} must be a mapping of metric name -> list of numbers, got {arg!r}")
        _checked_buckets(name, arg)
        overrides.update(arg)
    return _checked_buckets(name, overrides)


def _checked_buckets(where: str, overrides: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    try:
        return resolve_buckets(overrides)
    except ValueError as e:
        raise ConfigurationError(f"{where}: {e}") from None


def _prices(name: str, arg: Any) -> PriceTable | None:
    """A price table from the argument (``PriceTable``, mapping or path), else ``RYOT_TELEMETRY_PRICE_TABLE``."""
    where = name if arg is not None else env.RYOT_TELEMETRY_PRICE_TABLE
    try:
        if isinstance(arg, PriceTable):
            return arg
        if isinstance(arg, Mapping):
            return PriceTable(arg)
        if isinstance(arg, (str, os.PathLike)):
            return PriceTable.from_file(arg)
        if arg is not None:
            raise ConfigurationError(f"{name} must be a PriceTable, a mapping or a file path, got {arg!r}")
        path = _raw(env.RYOT_TELEMETRY_PRICE_TABLE)
        return PriceTable.from_file(path) if path else None
    except ConfigurationError:
        raise
    except ValueError as e:
        raise ConfigurationError(f"{where}: {e}") from None


def _slos(name: str, arg: Any) -> SloTable | None:
    """An SLO table from the argument (``SloTable``, mapping or path), else ``RYOT_TELEMETRY_SLOS``, else none."""
    where = name if arg is not None else env.RYOT_TELEMETRY_SLOS
    try:
        if arg is not None:
            if not isinstance(arg, (SloTable, Mapping, str, os.PathLike)):
                raise ConfigurationError(f"{name} must be an SloTable, a mapping or a file path, got {arg!r}")
            return SloTable.load(arg)
        path = _raw(env.RYOT_TELEMETRY_SLOS)
        return SloTable.from_file(path) if path else None
    except ConfigurationError:
        raise
    except ValueError as e:
        raise ConfigurationError(f"{where}: {e}") from None


_TENANT_PATH = re.compile(r"^[^\s.:]+(\.[^\s.:]+)*$")
TENANT_OGX = ("ogx:principal", "ogx:tenant_id")
"""Tenant sources read from ogx's authenticated user (see ``recording.tenants``)."""


def _is_async(fn: Any) -> bool:
    """A coroutine or async-generator function, or an object whose ``__call__`` is one (``partial`` included)."""
    try:
        call = getattr(type(fn), "__call__", None)  # noqa: B004 - the type's, as a call resolves it
        return any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (fn, call) if f is not None)
    except Exception:  # an object whose attributes raise: the signature check below decides
        return False


def _tenant(name: str, arg: Any) -> Any:
    """The tenant source: a callable (argument only), a dotted path into the request params, or an ogx source;
    None for no tenant label. A callable must take the call's params as its one argument."""
    if arg is not None and not isinstance(arg, str):
        if not callable(arg):
            raise ConfigurationError(
                f"{name} must be a callable, a dotted path such as 'metadata.tenant', or one of "
                f"{', '.join(TENANT_OGX)}; got {arg!r}"
            )
        if _is_async(arg):
            # Called on the request path, where nothing awaits it: every request would count as __unknown__
            # with a "never awaited" warning each.
            raise ConfigurationError(
                f"{name}: {arg!r} is async; the tenant resolver must be a plain function returning the tenant "
                "(it runs on the request path, where nothing awaits it)"
            )
        try:
            inspect.signature(arg).bind(None)
        except TypeError:
            raise ConfigurationError(f"{name}: {arg!r} must take one argument, the call's params") from None
        except ValueError:  # no signature to check (some builtins)
            pass
        return arg
    if arg is not None:
        value, where = arg, name
    else:
        raw = _raw(env.RYOT_TELEMETRY_TENANT)
        if raw is None:
            return None
        value, where = raw.strip(), env.RYOT_TELEMETRY_TENANT
    if value in TENANT_OGX:
        if importlib.util.find_spec("ogx") is None:
            raise ConfigurationError(
                f"{where}={value!r}: reads ogx's authenticated user, but ogx is not installed here; "
                "use a dotted path such as metadata.tenant, or a callable"
            )
        return value
    if not _TENANT_PATH.match(value):
        raise ConfigurationError(
            f"{where}={value!r}: expected a dotted path into the request params such as metadata.tenant or user, "
            f"or one of {', '.join(TENANT_OGX)}"
        )
    return value


def _provider(name: str, arg: Any) -> Any:
    """Where ``ryot_model_info`` takes each model's provider from, for routers without an ogx / llama-stack routing
    table (argument only): a callable given the model name, or a mapping of model name (``"*"``: any other) to a
    provider id or ``{"provider": ..., "provider_type": ..., "provider_model_id": ...}``. None: the routing table."""
    if arg is None:
        return None
    if isinstance(arg, Mapping):
        for model, answer in arg.items():
            if not isinstance(model, str) or not (
                isinstance(answer, str)
                or (isinstance(answer, Mapping) and set(answer) <= {"provider", "provider_type", "provider_model_id"})
            ):
                raise ConfigurationError(
                    f"{name}: entry {model!r}: expected model -> provider id or "
                    f"{{'provider': ..., 'provider_type': ..., 'provider_model_id': ...}}, got {answer!r}"
                )
        return dict(arg)
    if not callable(arg) or isinstance(arg, (str, bytes)):
        raise ConfigurationError(f"{name} must be a callable given the model name, or a mapping; got {arg!r}")
    if inspect.iscoroutinefunction(arg):
        raise ConfigurationError(
            f"{name}: {arg!r} is a coroutine function; it is called at collection, give a plain one"
        )
    try:
        inspect.signature(arg).bind("model")
    except TypeError:
        raise ConfigurationError(f"{name}: {arg!r} must take one argument, the model name") from None
    except ValueError:  # no signature to check (some builtins)
        pass
    return arg


def _budgets(name: str, arg: Any) -> BudgetTable | None:
    """A budget table from the argument (``BudgetTable``, mapping or path), else ``RYOT_TELEMETRY_BUDGETS``, else
    none. Nothing records against it in the process: the rules ``ryot-telemetry budget-rules`` writes compare the
    cost counter with it in Prometheus; it is checked here so a broken table fails at start-up."""
    try:
        if arg is not None:
            if not isinstance(arg, (BudgetTable, Mapping, str, os.PathLike)):
                raise ConfigurationError(f"{name} must be a BudgetTable, a mapping or a file path, got {arg!r}")
            return BudgetTable.load(arg)
        path = _raw(env.RYOT_TELEMETRY_BUDGETS)
        return BudgetTable.from_file(path) if path else None
    except ConfigurationError:
        raise
    except ValueError as e:
        where = name if arg is not None else env.RYOT_TELEMETRY_BUDGETS
        raise ConfigurationError(f"{where}: {e}") from None


def gpu_enabled(name: str, arg: Any) -> bool | None:
    """True/False forced, None for auto (``RYOT_TELEMETRY_GPU``, default auto)."""
    if arg is not None:
        if not isinstance(arg, bool):
            raise ConfigurationError(f"{name} must be True, False or None (auto), got {arg!r}")
        return arg
    raw = _raw(env.RYOT_TELEMETRY_GPU)
    if raw is None or raw.strip().lower() == "auto":
        return None
    value = _truth(raw)
    if value is None:
        raise ConfigurationError(f"{env.RYOT_TELEMETRY_GPU}={raw!r}: expected auto, true or false")
    return value


def device_id(dev: object) -> str:
    """A validated ``device_id`` label value: a GPU index (``0``) or a MIG instance (``0/1``)."""
    s = str(dev) if isinstance(dev, (int, str)) and not isinstance(dev, bool) else ""
    if not _DEVICE_ID.match(s):
        raise ValueError(f"device_id must be a GPU index such as 0 or a MIG instance such as '0/1', got {dev!r}")
    return s


def gpu_models(name: str, arg: Any) -> dict[str, str]:
    """Model served on each device: the argument (``{0: "llama"}``), else ``RYOT_TELEMETRY_GPU_MODELS``
    (``0=llama,1=mistral``, MIG instances as ``0/1=model``). A device named twice is an error."""
    out: dict[str, str] = {}
    if arg is not None:
        if not isinstance(arg, Mapping):
            raise ConfigurationError(f"{name} must be a mapping of device -> model name, got {arg!r}")
        for dev, model in arg.items():
            try:
                dev_id = device_id(dev)
            except ValueError as e:
                raise ConfigurationError(f"{name}: {e}") from None
            if not isinstance(model, str) or not model:
                raise ConfigurationError(
                    f"{name}: gpu model for device {dev!r} must be a non-empty string, got {model!r}"
                )
            _encodable(f"{name}[{dev!r}]", model)
            if dev_id in out:
                raise ConfigurationError(f"{name}: device {dev_id} is named twice ({out[dev_id]!r} and {model!r})")
            out[dev_id] = model
        return out
    raw = _raw(env.RYOT_TELEMETRY_GPU_MODELS)
    return parse_gpu_models(raw) if raw is not None else {}


def parse_gpu_models(raw: str) -> dict[str, str]:
    """``"0=llama,1=mistral"`` (the ``RYOT_TELEMETRY_GPU_MODELS`` format) -> ``{"0": "llama", "1": "mistral"}``."""
    out: dict[str, str] = {}
    _encodable(env.RYOT_TELEMETRY_GPU_MODELS, raw)
    for part in raw.split(","):
        if not part.strip():
            continue
        dev, sep, model = part.partition("=")
        dev, model = dev.strip(), model.strip()
        if not sep or not _DEVICE_ID.match(dev) or not model:
            raise ConfigurationError(
                f"{env.RYOT_TELEMETRY_GPU_MODELS}={raw!r}: expected comma-separated DEVICE=MODEL pairs such as "
                f"0=llama-3-8b,1=mistral-7b (MIG instances as 0/1=model)"
            )
        if dev in out:
            raise ConfigurationError(
                f"{env.RYOT_TELEMETRY_GPU_MODELS}={raw!r}: device {dev} is named twice; give each device one model"
            )
        out[dev] = model
    return out


def _router_classes(name: str, arg: Any) -> tuple[str, ...]:
    """``module:Class`` names from ``RYOT_TELEMETRY_ROUTER_CLASSES``; the instrumentor imports them."""
    out: list[str] = []
    for item in (s.strip() for s in (_raw(env.RYOT_TELEMETRY_ROUTER_CLASSES) or "").split(",")):
        if not item:
            continue
        module, sep, qualname = item.partition(":")
        if not sep or not module or not qualname:
            raise ConfigurationError(f"{env.RYOT_TELEMETRY_ROUTER_CLASSES}: {item!r} is not 'module:Class'")
        out.append(item)
    return tuple(out)


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


def _multiproc_dir(name: str, arg: Any) -> str | None:
    """Multi-process mode's directory: it must exist and take a file (checked by writing one)."""
    var = env.RYOT_TELEMETRY_MULTIPROC_DIR
    if arg is not None:
        if not isinstance(arg, (str, os.PathLike)) or not os.fspath(arg):
            raise ConfigurationError(f"{name} must be a directory path, got {arg!r}")
        raw, where = os.fspath(arg), name
    else:
        env_raw = _raw(var)
        if env_raw is None:
            return None
        raw, where = env_raw.strip(), var
    path = os.path.abspath(raw)
    if not os.path.isdir(path):
        raise ConfigurationError(f"{where}={raw!r}: no such directory (create it before the server starts)")
    probe = os.path.join(path, f".probe-{os.getpid()}")
    try:
        with open(probe, "wb"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise ConfigurationError(f"{where}={raw!r}: directory not writable ({e.strerror or e})") from None
    return path


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


def _drop_duplicates(name: str, arg: Any) -> tuple[str, ...]:
    """Sources whose superseded metrics are dropped (``recording/duplicates.py``): the argument (a name or a list),
    else ``RYOT_TELEMETRY_DROP_DUPLICATES`` (comma-separated), else none."""
    var = env.RYOT_TELEMETRY_DROP_DUPLICATES
    if arg is not None:
        if isinstance(arg, str):
            items, where = arg.split(","), name
        elif isinstance(arg, (list, tuple)) and all(isinstance(a, str) for a in arg):
            items, where = list(arg), name
        else:
            raise ConfigurationError(f"{name} must be a string or a list of strings, got {arg!r}")
    else:
        raw = _raw(var)
        if raw is None:
            return ()
        items, where = raw.split(","), f"{var}={raw!r}"
    out: list[str] = []
    for item in items:
        v = item.strip().lower()
        if v and v not in DUPLICATE_SOURCES:
            choices = ", ".join(DUPLICATE_SOURCES)
            raise ConfigurationError(f"{where}: unknown source {item.strip()!r}; choose from {choices}")
        if v and v not in out:
            out.append(v)
    return tuple(out)


def known_variables() -> tuple[str, ...]:
    """Every ``RYOT_TELEMETRY_*`` variable ryot-telemetry reads (the constants of ``env.py``)."""
    return tuple(sorted(v for k, v in vars(env).items() if k.startswith(_PREFIX) and isinstance(v, str)))


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """``(variable, closest known one)`` for each ``RYOT_TELEMETRY_*`` variable set that ryot-telemetry does not
    read: a misspelt ``RYOT_TELEMETRY_MAX_MODEL`` would otherwise be ignored without a word."""
    known = known_variables()
    names = sorted(n for n in (os.environ if environ is None else environ) if n.startswith(_PREFIX))
    return [(n, difflib.get_close_matches(n, known, n=1, cutoff=0.0)[0]) for n in names if n not in known]


def _argument(arguments: Mapping[str, Any], which: str | tuple[str, ...]) -> Any:
    return arguments.get(which) if isinstance(which, str) else tuple(arguments.get(w) for w in which)


def _setting(load: Loader, argument: str | tuple[str, ...] | None = None) -> Any:
    """A field loaded by ``load(name, argument value or None)``. ``argument``: the argument to read instead of the
    field's own; a tuple of names hands the loader a tuple of their values."""
    return field(metadata={"load": load, "argument": argument})


class Arguments(TypedDict, total=False):
    """``configure()``'s keyword arguments, each declared once: its type here, its meaning in its docstring.

    An argument left out, or None, means "from its variable, else the default"; an argument given wins over the
    variable. Each is a field of ``Settings``, which checks it (a bad value is a ``ConfigurationError`` naming the
    argument).
    """

    service_name: str | None
    """``service.name`` of the resource and ``service`` label of ``ryot_service_info`` (else ``OTEL_SERVICE_NAME``,
    else the one in ``OTEL_RESOURCE_ATTRIBUTES``, else ``ryot-inference``)."""
    resource_attributes: Mapping[str, str] | None
    """Resource attributes added to those of ``OTEL_RESOURCE_ATTRIBUTES``."""
    exporters: str | Sequence[str] | None
    """Readers to build: any of ``prometheus``, ``otlp``, ``console``, ``none`` (else ``OTEL_METRICS_EXPORTER``,
    else ``prometheus``, plus ``otlp`` when an OTLP endpoint is set)."""
    prometheus_host: str | None
    """Scrape endpoint host (else ``OTEL_EXPORTER_PROMETHEUS_HOST``, default ``localhost``)."""
    prometheus_port: int | None
    """Scrape endpoint port (else ``OTEL_EXPORTER_PROMETHEUS_PORT``, default 9464; 0 picks a free port)."""
    prometheus_registry: Any
    """A ``prometheus_client.CollectorRegistry``, or ``"private"`` for a fresh one exposing only ryot's series, or
    ``"global"`` (else ``RYOT_TELEMETRY_PROMETHEUS_REGISTRY``, default global)."""
    start_prometheus_server: bool | None
    """False: build the Prometheus reader without serving ``/metrics`` (your own app serves the registry);
    default True."""
    otlp_endpoint: str | None
    """OTLP endpoint URL (else ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    otlp_protocol: str | None
    """``grpc`` or ``http/protobuf`` (else ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL``, else
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, default grpc)."""
    export_interval_ms: int | None
    """Milliseconds between OTLP exports (else ``OTEL_METRIC_EXPORT_INTERVAL``, default 60000)."""
    otlp_temporality: str | None
    """OTLP temporality: ``cumulative``, ``delta`` or ``lowmemory`` (else
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``, default cumulative). Prometheus stays cumulative."""
    otlp_histogram_aggregation: str | None
    """OTLP histograms: ``explicit_bucket_histogram`` or ``base2_exponential_bucket_histogram`` (else
    ``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION``, default explicit)."""
    readers: Sequence[MetricReader] | None
    """Extra metric readers, e.g. an ``InMemoryMetricReader`` in tests."""
    set_global: bool | None
    """True: install the MeterProvider as the global one (default False)."""
    buckets: Mapping[str, Sequence[float]] | None
    """Histogram buckets by OTel or Prometheus metric name, over those of ``RYOT_TELEMETRY_BUCKETS``."""
    prices: PriceTable | Mapping[str, Any] | str | os.PathLike[str] | None
    """A price table (mapping, JSON/YAML path or ``PriceTable``) for ``ryot_token_cost_estimate_usd_total`` (else
    ``RYOT_TELEMETRY_PRICE_TABLE``)."""
    slos: SloTable | Mapping[str, Any] | str | os.PathLike[str] | None
    """An SLO table (mapping, JSON/YAML path or ``SloTable``) enabling ``ryot_slo_requests_total`` (else
    ``RYOT_TELEMETRY_SLOS``)."""
    semconv: bool | None
    """True: also emit the GenAI semantic-convention metrics (else ``RYOT_TELEMETRY_GENAI_SEMCONV``)."""
    genai_provider: str | None
    """``gen_ai.provider.name`` of the semconv metrics (else ``RYOT_TELEMETRY_GENAI_PROVIDER``)."""
    genai_server: str | None
    """``host:port`` clients reach this server at, for ``server.address`` / ``server.port`` of the semconv metrics
    (else ``RYOT_TELEMETRY_GENAI_SERVER``)."""
    max_models: int | None
    """Distinct model names kept as label values (else ``RYOT_TELEMETRY_MAX_MODELS``, default 100)."""
    max_label_length: int | None
    """Longest label value kept, in characters (else ``RYOT_TELEMETRY_MAX_LABEL_LENGTH``, default 128)."""
    tenant: str | Callable[[Any], object] | None
    """Adds a bounded ``tenant`` label to the request, token, cost and SLO counters: a plain function given the
    call's params, a dotted path into them (``metadata.tenant``), or ``ogx:principal`` / ``ogx:tenant_id`` (else
    ``RYOT_TELEMETRY_TENANT``)."""
    max_tenants: int | None
    """Distinct tenants kept as label values (else ``RYOT_TELEMETRY_MAX_TENANTS``, default 50)."""
    gpu: bool | None
    """NVML GPU gauges: True, False, or None for auto (else ``RYOT_TELEMETRY_GPU``)."""
    gpu_models: Mapping[Any, str] | None
    """Model served on each GPU, ``{0: "llama"}`` (else ``RYOT_TELEMETRY_GPU_MODELS``)."""
    gpu_backend: Any
    """An NVML stand-in with pynvml's functions (tests, or a wrapper of your own); default pynvml."""
    provider: Callable[[str], object] | Mapping[str, Any] | None
    """For routers without an ogx / llama-stack routing table, the provider of each model in ``ryot_model_info``: a
    callable given the model name (answering a provider id, a mapping with ``provider``, ``provider_type``,
    ``provider_model_id``, or None), or a mapping of model name (``"*"``: any other) to the same."""
    budgets: Mapping[str, Any] | str | os.PathLike[str] | None
    """A budget table (USD per window per tenant / model; a mapping or a JSON / YAML path), checked at start-up (else
    ``RYOT_TELEMETRY_BUDGETS``); ``ryot-telemetry budget-rules`` writes the rules comparing the cost counter with it."""
    gpu_detail: bool | None
    """Also read NVML's SM and memory clocks, energy, throttle reasons and ECC error counts (else
    ``RYOT_TELEMETRY_GPU_DETAIL``, default off)."""
    multiproc_dir: str | os.PathLike[str] | None
    """Multi-process mode's shared directory: every worker of a server shows the server's totals (else
    ``RYOT_TELEMETRY_MULTIPROC_DIR``)."""
    drop_duplicates: str | Sequence[str] | None
    """``"ogx"``: drop ogx's own router histograms that ryot's metrics supersede (else
    ``RYOT_TELEMETRY_DROP_DUPLICATES``)."""


ARGUMENTS: frozenset[str] = frozenset(Arguments.__annotations__)
"""The names ``configure()`` takes."""


@dataclass(frozen=True)
class Settings:
    """What ``configure()`` runs with; ``Settings.load(**arguments)`` builds it. Frozen: read, never patched."""

    # service identity
    service_name: str | None = _setting(_text(OTEL_SERVICE_NAME, None))
    resource_attributes: dict[str, str] = _setting(_mapping)
    component: str = _setting(_text(env.RYOT_TELEMETRY_COMPONENT, "inference-router"))
    # readers
    exporters: tuple[str, ...] = _setting(_exporters)
    prometheus_host: str = _setting(_text(OTEL_EXPORTER_PROMETHEUS_HOST, "localhost"))
    prometheus_port: int = _setting(_int(OTEL_EXPORTER_PROMETHEUS_PORT, 9464, 0, 65535))
    prometheus_registry: Any = _setting(_registry)
    start_prometheus_server: bool = _setting(_bool(None, True))
    otlp_endpoint: str | None = _setting(_otlp_endpoint)
    otlp_endpoint_source: str | None = _setting(_otlp_endpoint_source, argument="otlp_endpoint")
    otlp_protocol: str = _setting(_otlp_protocol, argument=("otlp_protocol", "exporters"))
    otlp_timeout: float | None = _setting(_otlp_timeout)
    otlp_compression: str | None = _setting(_otlp_compression)
    export_interval_ms: int = _setting(_int(OTEL_METRIC_EXPORT_INTERVAL, 60000, 1))
    exemplar_filter: str | None = _setting(_exemplar_filter)
    otlp_temporality: str = _setting(
        _choice(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, CUMULATIVE, TEMPORALITIES)
    )
    otlp_histogram_aggregation: str = _setting(
        _choice(OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION, EXPLICIT, HISTOGRAM_AGGREGATIONS)
    )
    readers: tuple[Any, ...] = _setting(_readers)
    set_global: bool = _setting(_bool(None, False))
    # recorder
    buckets: dict[str, tuple[float, ...]] = _setting(_buckets)
    prices: PriceTable | None = _setting(_prices)
    slos: SloTable | None = _setting(_slos)
    semconv: bool = _setting(_bool(env.RYOT_TELEMETRY_GENAI_SEMCONV, False))
    genai_provider: str = _setting(_text(env.RYOT_TELEMETRY_GENAI_PROVIDER, "llama_stack"))
    genai_server: tuple[str, int] | None = _setting(_genai_server)
    max_models: int = _setting(_int(env.RYOT_TELEMETRY_MAX_MODELS, 100, 1))
    max_label_length: int = _setting(_int(env.RYOT_TELEMETRY_MAX_LABEL_LENGTH, 128, 1))
    max_pending: int = _setting(_int(env.RYOT_TELEMETRY_MAX_PENDING, 65536, 1))
    tenant: Any = _setting(_tenant)  # None, a callable, a dotted path or an ogx source (see recording/tenants.py)
    max_tenants: int = _setting(_int(env.RYOT_TELEMETRY_MAX_TENANTS, 50, 1))
    # GPU
    gpu: bool | None = _setting(gpu_enabled)
    gpu_models: dict[str, str] = _setting(gpu_models)
    gpu_backend: Any = _setting(_given)
    # instrumentor
    router_classes: tuple[str, ...] = _setting(_router_classes)
    # multi-process mode (multiproc.worker)
    multiproc_dir: str | None = _setting(_multiproc_dir)
    # duplicates of other libraries' metrics (recording/duplicates.py)
    drop_duplicates: tuple[str, ...] = _setting(_drop_duplicates)
    # GPU depth: clocks, energy, throttle reasons, ECC counts (sources/gpu.py)
    gpu_detail: bool = _setting(_bool(env.RYOT_TELEMETRY_GPU_DETAIL, False))
    # the provider of each model, for ryot_model_info (sources/providers.py)
    provider: Any = _setting(_provider)
    # spend budgets, for the rules of artifacts/budget_rules.py (checked at start-up)
    budgets: BudgetTable | None = _setting(_budgets)

    @classmethod
    def load(cls, **arguments: Any) -> Settings:
        """Settings from keyword arguments (None: not given), the environment and defaults.

        Every value is checked here, before anything starts; an unknown keyword is a ConfigurationError too.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(arguments) - set(known))
        if unknown:
            raise ConfigurationError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        values = {
            name: f.metadata["load"](name, _argument(arguments, f.metadata["argument"] or name))
            for name, f in known.items()
        }
        return cls(**values)

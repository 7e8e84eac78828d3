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
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypedDict

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION,
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_SERVICE_NAME,
)

from . import env
from .budgets import BudgetTable
from .config.export import (
    _exemplar_filter,
    _exporters,
    _genai_server,
    _mapping,
    _otlp_compression,
    _otlp_endpoint,
    _otlp_endpoint_source,
    _otlp_protocol,
    _otlp_timeout,
    _readers,
    _registry,
    names_exporters,
    parse_server,
)
from .config.features import (
    _buckets,
    _budgets,
    _drop_duplicates,
    _multiproc_dir,
    _prices,
    _provider,
    _router_classes,
    _slos,
    _tenant,
    device_id,
    gpu_enabled,
    gpu_models,
    parse_gpu_models,
)
from .config.loaders import (
    _PREFIX,
    EXPORTERS,
    PROTOCOLS,
    ConfigurationError,
    Loader,
    _bool,
    _choice,
    _given,
    _int,
    _text,
)
from .config.loaders import CUMULATIVE as CUMULATIVE
from .config.loaders import DUPLICATE_SOURCES as DUPLICATE_SOURCES
from .config.loaders import EXPLICIT as EXPLICIT
from .config.loaders import EXPONENTIAL as EXPONENTIAL
from .config.loaders import HISTOGRAM_AGGREGATIONS as HISTOGRAM_AGGREGATIONS
from .config.loaders import TEMPORALITIES as TEMPORALITIES
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

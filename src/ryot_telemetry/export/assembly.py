"""The one assembly of ryot's instruments on a MeterProvider, used by ``configure()``, by every worker of
multi-process mode and by ``testing.capture()``.

The provider gets the catalogue's Views and the exemplar filter; its meter gets the recorder (router metrics and
the derived gauges it feeds), the GPU gauges, the token-efficiency gauge and ``EngineMetrics``. Each collection
starts with the recorder's drain (the recorder hooks every reader of the provider), then the engine's
``on_collect`` hooks, then the instruments' callbacks. In multi-process mode a second provider, read only when this
process answers for the whole server, gets what must be read once per server: NVML, the service info and the
efficiency gauge (fed by the merged sliding windows).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
)
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource

from .. import _state, catalogue
from ..recording.derived import TokenRates, install_token_efficiency
from ..recording.instruments import METER_NAME, create_instrument, views
from ..recording.recorder import Recorder, RequestSpanExemplarFilter
from ..recording.semconv import SCHEMA_URL
from ..settings import ConfigurationError, Settings
from ..sources.engine import EngineMetrics
from ..sources.gpu import GpuGauges, gauges_for
from ..sources.providers import ModelProviders, install_model_info
from .temporality import exponential_otlp

__all__ = [
    "Assembly",
    "ServerSide",
    "assemble",
    "build_recorder",
    "default_recorder",
    "exemplar_filter",
    "exemplars_enabled",
    "package_version",
    "ryot_meter",
]

_EXEMPLAR_FILTERS: dict[str, type[ExemplarFilter]] = {
    "always_off": AlwaysOffExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "trace_based": RequestSpanExemplarFilter,  # trace-based, without the span lookup for drain-time measurements
}


def package_version() -> str:
    try:
        return version("ryot-telemetry")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def ryot_meter(provider: Any) -> Meter:
    """Our meter on ``provider``: the package's name and version, and the schema URL of the semantic conventions
    its telemetry follows (``genai.SCHEMA_URL``)."""
    meter: Meter = provider.get_meter(METER_NAME, package_version(), schema_url=SCHEMA_URL)
    return meter


@dataclass(frozen=True)
class ServerSide:
    """Multi-process mode: the readers of what is read once per server (NVML, service info, token efficiency),
    and where the efficiency gauge reads the server's tokens/s."""

    readers: Sequence[MetricReader]
    rates: TokenRates


@dataclass(frozen=True)
class Assembly:
    """What ``assemble`` built."""

    provider: MeterProvider
    meter: Meter
    recorder: Recorder
    gpu: GpuGauges
    engine: EngineMetrics
    server_provider: MeterProvider | None = None


def build_recorder(meter: Meter, settings: Settings | None = None, **overrides: Any) -> Recorder:
    """A Recorder from ``settings`` (default: ``Settings.load(**overrides)``: the ``RYOT_TELEMETRY_*`` variables
    with keyword overrides such as ``max_models=10``)."""
    if settings is None:
        settings = Settings.load(**overrides)
    elif overrides:
        raise ConfigurationError(f"build_recorder: pass settings or overrides, not both ({', '.join(overrides)})")
    return Recorder(
        meter,
        buckets=settings.buckets,
        max_models=settings.max_models,
        max_label_length=settings.max_label_length,
        prices=settings.prices,
        semconv=settings.semconv,
        genai_provider=settings.genai_provider,
        max_pending=settings.max_pending,
        genai_server=settings.genai_server,
        slos=settings.slos,
        exemplars=exemplars_enabled(settings),
        tenant=settings.tenant,
        max_tenants=settings.max_tenants,
    )


def assemble(
    settings: Settings,
    readers: Sequence[MetricReader],
    closers: ExitStack,
    *,
    resource: Resource | None = None,
    service_info: bool = True,
    server: ServerSide | None = None,
) -> Assembly:
    """Build the provider on ``readers`` and every ryot instrument on its meter; what must be released is pushed
    onto ``closers``, so that closing it shuts the provider down (final export) before NVML is released.

    ``service_info``: add ``ryot_service_info`` (``configure()``; not ``testing.capture()``). ``server``:
    multi-process mode (see the module docstring).
    """
    res = resource if resource is not None else Resource.create({})
    sampling = exemplar_filter(settings)
    view_list = views(
        settings.buckets,
        attribute_filter=False,
        exemplars=not isinstance(sampling, AlwaysOffExemplarFilter),
        # exponential OTLP histograms: the histogram Views leave the aggregation to each reader (temporality.py)
        explicit_buckets=not exponential_otlp(settings),
        drop_duplicates=settings.drop_duplicates,
        max_models=settings.max_models,
        max_tenants=settings.max_tenants if settings.tenant is not None else None,
    )
    late = closers.enter_context(ExitStack())  # closed after the providers' shutdown (registered below)
    provider = MeterProvider(metric_readers=list(readers), resource=res, views=view_list, exemplar_filter=sampling)
    closers.callback(provider.shutdown)
    meter = ryot_meter(provider)
    recorder = build_recorder(meter, settings)
    # ryot_model_info: on the recorder's own meter (each worker knows its own model slots; the merge of multi-process
    # mode takes the union of the series, all 1)
    providers = ModelProviders(recorder.models, settings.provider)
    install_model_info(meter, providers)
    _state.set_model_providers(recorder, providers)
    service = str(res.attributes.get("service.name", ""))
    server_provider = None
    if server is None:
        gpu = gauges_for(meter, settings.gpu, settings.gpu_models, settings.gpu_backend, detail=settings.gpu_detail)
        late.callback(gpu.close)
        install_token_efficiency(meter, recorder.windows, gpu, settings.max_label_length)
        engine = EngineMetrics(meter, recorder=recorder, gpu=gpu, buckets=settings.buckets)
        if service_info:
            install_service_info(meter, service, settings.component)
    else:
        server_provider = MeterProvider(
            metric_readers=list(server.readers),
            resource=res,
            views=views(settings.buckets, attribute_filter=False, max_models=settings.max_models),
        )
        closers.callback(server_provider.shutdown)
        server_meter = ryot_meter(server_provider)
        # The worker records engine-reported GPU memory breakdowns only; NVML is read once, by the answering process.
        breakdowns = gauges_for(meter, False, settings.gpu_models, None)
        engine = EngineMetrics(meter, recorder=recorder, gpu=breakdowns, buckets=settings.buckets)
        if service_info:
            install_service_info(server_meter, service, settings.component)
        gpu = gauges_for(
            server_meter, settings.gpu, settings.gpu_models, settings.gpu_backend, detail=settings.gpu_detail
        )
        late.callback(gpu.close)
        install_token_efficiency(server_meter, server.rates, gpu, settings.max_label_length)
    return Assembly(provider, meter, recorder, gpu, engine, server_provider)


def install_service_info(meter: Meter, service: str, component: str) -> None:
    attrs = {"version": package_version(), "service": service, "component": component}

    def observe(options: CallbackOptions) -> list[Observation]:
        return [Observation(1, attrs)]

    create_instrument(meter, catalogue.get("ryot.service.info"), callbacks=[observe])


def exemplars_enabled(settings: Settings) -> bool:
    """Whether exemplars can be sampled: the filter ``OTEL_METRICS_EXEMPLAR_FILTER`` names, else trace-based where a
    reader can carry them (OTLP, console, extra readers, and the single-process scrape when a TracerProvider is
    installed: export/exemplars.py). Without tracing no request has a span worth pointing at, so keeping request
    spans would cost time for nothing."""
    if settings.exemplar_filter is not None:
        return settings.exemplar_filter != "always_off"
    if bool(settings.readers) or "otlp" in settings.exporters or "console" in settings.exporters:
        return True
    if "prometheus" not in settings.exporters or settings.multiproc_dir is not None:
        return False
    from .exemplars import tracing_configured  # the scrape carries them too, single-process, where spans exist

    return tracing_configured()


def exemplar_filter(settings: Settings | None = None) -> ExemplarFilter:
    """The provider's exemplar filter (see ``exemplars_enabled``). Trace-based: a request that ran inside a sampled
    span gives its latency and TTFT an exemplar pointing at that trace (the recorder keeps the span context)."""
    settings = settings or Settings.load()
    name = settings.exemplar_filter or ("trace_based" if exemplars_enabled(settings) else "always_off")
    return _EXEMPLAR_FILTERS[name]()


def default_recorder() -> Recorder:
    """The recorder of the last ``configure()``, else one on the global MeterProvider (made once)."""
    tel = _state.current()
    if tel is not None:
        return tel.recorder
    provider = metrics.get_meter_provider()
    return _state.recorder_for(provider, lambda: build_recorder(ryot_meter(provider)))

"""One assembly of the instruments on a meter, shared by ``configure()`` and ``testing.capture()``.

The recorder (router metrics and the derived gauges it feeds), the GPU gauges, the token-efficiency gauge and
``EngineMetrics`` are wired here and only here, in the order their collection callbacks rely on.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, ExemplarFilter

from .. import _state, catalogue
from ..engine import EngineMetrics
from ..recording.derived import install_token_efficiency
from ..recording.instruments import METER_NAME, create_instrument
from ..recording.recorder import Recorder, RequestSpanExemplarFilter
from ..recording.semconv import SCHEMA_URL
from ..settings import ConfigurationError, Settings
from ..sources.gpu import GpuGauges, gauges_for

__all__ = [
    "Assembly",
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
class Assembly:
    """What ``assemble`` wired onto one meter."""

    recorder: Recorder
    gpu: GpuGauges
    engine: EngineMetrics


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
    )


def assemble(meter: Meter, settings: Settings, closers: ExitStack) -> Assembly:
    """Create every ryot instrument on ``meter``; what must be released (NVML) is pushed onto ``closers``.

    Order matters: the recorder's in-flight gauge (whose callback drains the queue) comes before the derived
    gauges and the efficiency gauge that read what the drain recorded.
    """
    recorder = build_recorder(meter, settings)
    gpu = gauges_for(meter, settings.gpu, settings.gpu_models, settings.gpu_backend)
    closers.callback(gpu.close)
    install_token_efficiency(meter, recorder, gpu)
    engine = EngineMetrics(meter, recorder=recorder, gpu=gpu, buckets=settings.buckets)
    return Assembly(recorder, gpu, engine)


def install_service_info(meter: Meter, service: str, component: str) -> None:
    attrs = {"version": package_version(), "service": service, "component": component}

    def observe(options: CallbackOptions) -> list[Observation]:
        return [Observation(1, attrs)]

    create_instrument(meter, catalogue.get("ryot.service.info"), callbacks=[observe])


def exemplars_enabled(settings: Settings) -> bool:
    """Whether exemplars can be sampled: the filter ``OTEL_METRICS_EXEMPLAR_FILTER`` names, else trace-based where a
    reader can carry them (OTLP, console, extra readers). opentelemetry-python's Prometheus exporter drops
    exemplars, so with the Prometheus reader alone keeping request spans would cost time for nothing."""
    if settings.exemplar_filter is not None:
        return settings.exemplar_filter != "always_off"
    return bool(settings.readers) or "otlp" in settings.exporters or "console" in settings.exporters


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

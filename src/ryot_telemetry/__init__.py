"""ryot-telemetry: OpenTelemetry metrics for LLM inference services.

import ryot_telemetry
tel = ryot_telemetry.configure()          # Prometheus on localhost:9464, OTLP from OTEL_* variables
tel.instrument_router(router)             # llama-stack-style router: requests, latency, TTFT, tokens, ...
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .engine import EngineMetrics
from .export.assembly import build_recorder, package_version
from .pricing import PriceTable
from .recording.instruments import views
from .recording.recorder import Recorder, Request
from .router.instance import instrument_router, uninstrument_router
from .settings import ConfigurationError, Settings
from .slo import SloTable
from .sources.gpu import GpuGauges, install_gpu_gauges
from .telemetry import Telemetry, configure

__version__ = package_version()
del package_version  # reached through __getattr__ (deprecated), like the other names cut from the API

__all__ = [
    "ConfigurationError",
    "EngineMetrics",
    "GpuGauges",
    "PriceTable",
    "Recorder",
    "Request",
    "Settings",
    "SloTable",
    "Telemetry",
    "__version__",
    "build_recorder",
    "configure",
    "install_gpu_gauges",
    "instrument_router",
    "uninstrument_router",
    "views",
]

_MOVED: dict[str, tuple[str, str]] = {
    # name: (module it lives in, attribute there)
    "CATALOGUE": ("ryot_telemetry.catalogue", "CATALOGUE"),
    "METER_NAME": ("ryot_telemetry.catalogue", "METER_NAME"),
    "MetricSpec": ("ryot_telemetry.catalogue", "MetricSpec"),
    "OVERFLOW": ("ryot_telemetry.recording.labels", "OVERFLOW"),
    "UNADMITTED": ("ryot_telemetry.recording.labels", "UNADMITTED"),
    "batch_size_label": ("ryot_telemetry.recording.labels", "batch_size_label"),
    "prompt_size_label": ("ryot_telemetry.recording.labels", "prompt_size_label"),
    "SEVERITY": ("ryot_telemetry.recording.errors", "SEVERITY"),
    "classify": ("ryot_telemetry.recording.errors", "classify"),
    "create_instrument": ("ryot_telemetry.recording.instruments", "create_instrument"),
    "default_recorder": ("ryot_telemetry.export.assembly", "default_recorder"),
    "package_version": ("ryot_telemetry.export.assembly", "package_version"),
    "traced_call": ("ryot_telemetry.router.wrapper", "traced_call"),
    "Price": ("ryot_telemetry.pricing", "Price"),
    "Slo": ("ryot_telemetry.slo", "Slo"),
}
"""Names this package exported before its public API was cut to ``__all__``: they still resolve, with a
``DeprecationWarning`` naming their module, until the next minor release removes them."""


def __getattr__(name: str) -> Any:
    moved = _MOVED.get(name)
    if moved is None:
        raise AttributeError(f"module 'ryot_telemetry' has no attribute {name!r}")
    module, attr = moved
    warnings.warn(
        f"ryot_telemetry.{name} is deprecated and leaves the top-level API in the next minor release; "
        f"import it from {module}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), attr)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MOVED))

"""ryot-telemetry: OpenTelemetry metrics for LLM inference services.

import ryot_telemetry
tel = ryot_telemetry.configure()          # Prometheus on localhost:9464, OTLP from OTEL_* variables
tel.instrument_router(router)             # llama-stack-style router: requests, latency, TTFT, tokens, ...
"""

from __future__ import annotations

from .catalogue import CATALOGUE, MetricSpec
from .engine import EngineMetrics
from .export.assembly import build_recorder, default_recorder, package_version
from .pricing import Price, PriceTable
from .recording.errors import SEVERITY, classify
from .recording.instruments import METER_NAME, create_instrument, views
from .recording.labels import OVERFLOW, UNADMITTED, batch_size_label, prompt_size_label
from .recording.recorder import Recorder, Request
from .router.wrapper import instrument_router, traced_call, uninstrument_router
from .settings import ConfigurationError, Settings
from .slo import Slo, SloTable
from .sources.gpu import GpuGauges, install_gpu_gauges
from .telemetry import Telemetry, configure

__version__ = package_version()

__all__ = [
    "CATALOGUE",
    "METER_NAME",
    "OVERFLOW",
    "SEVERITY",
    "UNADMITTED",
    "ConfigurationError",
    "EngineMetrics",
    "GpuGauges",
    "MetricSpec",
    "Price",
    "PriceTable",
    "Recorder",
    "Request",
    "Settings",
    "Slo",
    "SloTable",
    "Telemetry",
    "__version__",
    "batch_size_label",
    "build_recorder",
    "classify",
    "configure",
    "create_instrument",
    "default_recorder",
    "install_gpu_gauges",
    "instrument_router",
    "prompt_size_label",
    "traced_call",
    "uninstrument_router",
    "views",
]

"""Test helpers: an in-memory MeterProvider wired like ``configure()``, with exact-value look-ups.

cap = capture()
router = cap.instrument_router(MyRouter())
...
assert cap.value("ryot.inference.requests", model="m", status="success") == 1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from . import _state
from .export.assembly import assemble, ryot_meter
from .recording.recorder import Recorder
from .router.instance import instrument_router
from .settings import Settings
from .sources.engine import EngineMetrics
from .sources.gpu import GpuGauges

__all__ = ["Capture", "HistogramPoint", "capture"]


@dataclass(frozen=True)
class HistogramPoint:
    count: int
    sum: float
    bucket_counts: tuple[int, ...]
    explicit_bounds: tuple[float, ...]
    attributes: dict[str, Any]


class Capture:
    """Reads every point of the last collection; ``collect()`` again after more traffic."""

    def __init__(
        self,
        provider: MeterProvider,
        reader: InMemoryMetricReader,
        recorder: Recorder,
        engine: EngineMetrics | None = None,
        gpu: GpuGauges | None = None,
        closers: ExitStack | None = None,
    ) -> None:
        self.provider = provider
        self.reader = reader
        self.recorder = recorder
        self.engine = engine
        self.gpu = gpu
        self.meter = ryot_meter(provider)
        self._closers = closers
        self._points: dict[str, list[Any]] = {}

    def instrument_router(self, router: Any) -> Any:
        wrapped = instrument_router(router, self.recorder)
        providers = _state.model_providers(self.recorder)
        if providers is not None:
            providers.seen(router)  # ryot_model_info asks its routing table, as Telemetry.instrument_router does
        return wrapped

    def collect(self) -> Capture:
        data = self.reader.get_metrics_data()
        points: dict[str, list[Any]] = {}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    points.setdefault(m.name, []).extend(m.data.data_points)
        self._points = points
        return self

    def points(self, name: str) -> list[Any]:
        return list(self._points.get(name, ()))

    def series(self, name: str) -> list[dict[str, Any]]:
        """The attribute sets of a metric, sorted for stable comparison."""
        return sorted((dict(p.attributes or {}) for p in self.points(name)), key=lambda a: sorted(a.items()))

    def _match(self, name: str, attrs: Mapping[str, Any]) -> list[Any]:
        return [p for p in self.points(name) if dict(p.attributes or {}) == dict(attrs)]

    def value(self, name: str, **attrs: Any) -> float | None:
        """Value of the counter/gauge point with exactly these attributes, None if absent."""
        found = self._match(name, attrs)
        if len(found) > 1:
            raise AssertionError(f"{len(found)} points of {name} match {attrs}")
        return found[0].value if found else None

    def histogram(self, name: str, **attrs: Any) -> HistogramPoint | None:
        found = self._match(name, attrs)
        if not found:
            return None
        p = found[0]
        assert isinstance(p, HistogramDataPoint)
        return HistogramPoint(
            p.count, p.sum, tuple(p.bucket_counts), tuple(p.explicit_bounds), dict(p.attributes or {})
        )

    def shutdown(self) -> None:
        if self._closers is not None:
            self._closers.close()  # the provider, then NVML
            return
        self.provider.shutdown()
        if self.gpu is not None:
            self.gpu.close()


def capture(
    buckets: Mapping[str, Sequence[float]] | None = None,
    *,
    gpu_backend: Any = None,
    gpu_models: Mapping[Any, str] | None = None,
    **settings: Any,
) -> Capture:
    """A fresh MeterProvider + InMemoryMetricReader, with the instruments ``configure()`` assembles (recorder,
    GPU and efficiency gauges, EngineMetrics), isolated from any global state.

    ``settings``: any other ``configure()`` setting (``max_models=``, ``semconv=``, ``prices=``, ...).
    GPU gauges read ``gpu_backend`` (a fake NVML, or ``pynvml``) when given; without one NVML is never touched.
    """
    reader = InMemoryMetricReader()
    loaded = Settings.load(
        buckets=buckets,
        gpu=gpu_backend is not None,
        gpu_models=gpu_models or {},
        gpu_backend=gpu_backend,
        readers=[reader],  # a reader that carries exemplars: trace-based unless OTEL_METRICS_EXEMPLAR_FILTER says
        **settings,
    )
    closers = ExitStack()
    parts = assemble(loaded, [reader], closers, service_info=False)
    return Capture(parts.provider, reader, parts.recorder, parts.engine, parts.gpu, closers)

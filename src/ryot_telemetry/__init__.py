"""ryot-telemetry: OpenTelemetry metrics for LLM inference services.

import ryot_telemetry
tel = ryot_telemetry.configure()          # Prometheus on localhost:9464, OTLP from OTEL_* variables
tel.instrument_router(router)             # llama-stack-style router: requests, latency, TTFT, tokens, ...
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import CodeType, ModuleType
from typing import Any

from .export.assembly import build_recorder, package_version
from .pricing import PriceTable
from .recording.instruments import views
from .recording.recorder import Recorder, Request
from .router.instance import instrument_router, uninstrument_router
from .settings import ConfigurationError, Settings
from .slo import SloTable
from .sources.engine import EngineMetrics
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


MOVED_MODULES: dict[str, str] = {
    # old module path (documented in an earlier README or docs page): where it lives now
    "ryot_telemetry.instrumentor": "ryot_telemetry.router.instrumentor",
    "ryot_telemetry.router.distro": "ryot_telemetry.distro",  # the entry points' target before the distro moved up
    "ryot_telemetry.dashboard": "ryot_telemetry.artifacts.dashboard",
    "ryot_telemetry.gpu": "ryot_telemetry.sources.gpu",
    "ryot_telemetry.engine": "ryot_telemetry.sources.engine",
    "ryot_telemetry.simulate": "ryot_telemetry.demo.simulate",
}
"""Module paths an earlier README or docs page documented: importing one (or ``python -m`` one) still works, with a
``DeprecationWarning`` naming the new path, until the next minor release removes them."""


def _moved_message(old: str, new: str) -> str:
    return f"{old} is deprecated and is removed in the next minor release; use {new}"


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``MOVED_MODULES``: the old name is the very module object of the new one (one module, one set of
    classes), not a copy; consulted only after the ordinary finders found no such module."""

    def __init__(self) -> None:
        self._specs: dict[str, ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = MOVED_MODULES[spec.name]
        # stacklevel 2: the import machinery's frames are skipped, so the warning points at the importing line
        warnings.warn(_moved_message(spec.name, new), DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system set the old name's spec on the module; the module keeps its own.
        old = module.__spec__.name if module.__spec__ is not None else ""
        if old in self._specs:
            module.__spec__ = self._specs.pop(old)

    def get_code(self, fullname: str) -> CodeType:
        """``python -m <old name>``: run the new module as ``__main__``, with the warning shown (it is raised in
        ``__main__``, which the default warning filters show)."""
        new = MOVED_MODULES[fullname]
        source = (
            "import runpy, warnings\n"
            f"warnings.warn({_moved_message(fullname, new)!r}, DeprecationWarning)\n"
            f"runpy.run_module({new!r}, run_name='__main__', alter_sys=True)\n"
        )
        return compile(source, f"<{fullname}, moved to {new}>", "exec")


if not any(type(f).__qualname__ == "_MovedModules" for f in sys.meta_path):  # once, even across a reload
    sys.meta_path.append(_MovedModules())

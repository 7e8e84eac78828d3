"""GPU gauges from NVML (placeholder until the NVML module lands: installs nothing)."""

from __future__ import annotations

from typing import Any


def install_gpu_gauges(meter: Any, *, enabled: bool | None = None, models: Any = None, backend: Any = None) -> Any:
    return None

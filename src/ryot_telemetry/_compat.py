"""Every import of a third-party private name, in one place, with what it is for and which versions have it.

When an upgrade moves one of these, this is the only module to change; the version ranges in ``pyproject.toml``
are the ones checked against each name below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# opentelemetry-exporter-prometheus (private module ``_mapping``, present from 0.44b0 on; we require >=0.51b0):
# the exporter's own name sanitising and unit-to-suffix mapping, so the catalogue predicts the exposed family names
# (``ryot_inference_latency_seconds``, ``..._total``) exactly as a scrape shows them.
from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_full_name

# opentelemetry-sdk (private module ``_configuration``, present since 1.2; we require >=1.30): the SDK's own
# configurator. ``RyotConfigurator`` subclasses it so traces and logs are set up exactly as the SDK would, while
# the MeterProvider is ours (with Views). ``_configure(**kwargs)`` is the hook ``opentelemetry-instrument`` calls.
# Imported on first use (the distro only): it pulls in the trace and log SDKs, ~30 modules a plain
# ``import ryot_telemetry`` does not need.
if TYPE_CHECKING:
    from opentelemetry.sdk._configuration import _OTelSDKConfigurator as OTelSDKConfigurator

__all__ = ["OTelSDKConfigurator", "map_unit", "sanitize_full_name"]


def __getattr__(name: str) -> Any:
    if name == "OTelSDKConfigurator":
        from opentelemetry.sdk._configuration import _OTelSDKConfigurator

        return _OTelSDKConfigurator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

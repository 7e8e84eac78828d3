"""Entry points that make ``opentelemetry-instrument`` build ryot-telemetry's MeterProvider (Views included).

``opentelemetry-instrument`` runs, in order: one ``opentelemetry_distro`` (``OTEL_PYTHON_DISTRO`` picks it, else
the first one found), one ``opentelemetry_configurator`` (``OTEL_PYTHON_CONFIGURATOR`` picks it, else the first
found), then every ``opentelemetry_instrumentor``. The SDK's own configurator installs a MeterProvider without
Views; ``RyotConfigurator`` installs the one ``ryot_telemetry.configure()`` builds instead: the catalogue's
Views (buckets, attribute filters) and readers from ``OTEL_METRICS_EXPORTER`` (prometheus on
``OTEL_EXPORTER_PROMETHEUS_HOST``/``_PORT``, default localhost:9464; otlp; console; none). Traces and logs, when
``OTEL_TRACES_EXPORTER`` / ``OTEL_LOGS_EXPORTER`` name exporters, are left to the SDK's configurator code.

``RyotDistro`` only makes the choice robust when opentelemetry-distro (a dependency of ogx) is installed too: it
selects ``RyotConfigurator`` unless ``OTEL_PYTHON_CONFIGURATOR`` says otherwise. With several distros installed,
set ``OTEL_PYTHON_DISTRO=ryot_telemetry`` (or ``OTEL_PYTHON_CONFIGURATOR=ryot_telemetry``) so the pick is not
left to entry-point order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.environment_variables import OTEL_LOGS_EXPORTER, OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_CONFIGURATOR

from . import _state
from ._compat import OTelSDKConfigurator
from .settings import ConfigurationError, Settings, names_exporters
from .telemetry import Telemetry, configure_from, warn_unknown_variables

_log = logging.getLogger("ryot_telemetry")

__all__ = ["ENTRY_POINT_NAME", "RyotConfigurator", "RyotDistro", "telemetry"]

ENTRY_POINT_NAME = "ryot_telemetry"
"""Name of the distro and configurator entry points (the value for ``OTEL_PYTHON_DISTRO`` / ``_CONFIGURATOR``)."""


def telemetry() -> Telemetry | None:
    """What ``RyotConfigurator`` built in this process, if it ran."""
    tel = _state.auto_telemetry()
    return tel if isinstance(tel, Telemetry) else None


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class _DropOverrideWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Overriding of current MeterProvider" not in record.getMessage()


class RyotConfigurator(OTelSDKConfigurator):
    """Installs ryot-telemetry's MeterProvider as the global one; traces and logs as the SDK would."""

    def _configure(self, **kwargs: Any) -> None:
        if _state.auto_telemetry() is None:
            version = kwargs.get("auto_instrumentation_version")
            warn_unknown_variables()
            try:
                # OTEL_METRICS_EXPORTER (the SDK's otlp_proto_grpc/otlp_proto_http names included) is read by
                # Settings, like every other variable.
                settings = Settings.load(
                    resource_attributes={"telemetry.auto.version": version} if version else None, set_global=True
                )
                _state.set_auto_telemetry(configure_from(settings))
            except ConfigurationError as e:
                # One clear line, and the application still starts with traces/logs as configured (raising would
                # make the SDK log it twice, with tracebacks, and skip every instrumentor).
                if _state.first_time(f"configuration error: {e}"):  # the instrumentor may meet it again
                    _log.error("ryot-telemetry: metrics not configured: %s", e)
        if names_exporters(OTEL_TRACES_EXPORTER) or names_exporters(OTEL_LOGS_EXPORTER):
            # The SDK's components for traces and logs; its metrics part would build a second, View-less
            # MeterProvider, so it gets no exporters and its (refused) attempt to replace ours is not logged.
            quiet = _DropOverrideWarning()
            api_log = logging.getLogger("opentelemetry.metrics._internal")
            api_log.addFilter(quiet)
            try:
                with _env(OTEL_METRICS_EXPORTER, "none"):
                    super()._configure(**kwargs)  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
            finally:
                api_log.removeFilter(quiet)


class RyotDistro(BaseDistro):  # type: ignore[misc]
    """Selects ``RyotConfigurator`` (unless ``OTEL_PYTHON_CONFIGURATOR`` is already set)."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_PYTHON_CONFIGURATOR, ENTRY_POINT_NAME)

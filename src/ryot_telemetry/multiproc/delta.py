"""Multi-process mode's delta baseline: kept in the directory, so a worker taking the export over continues from
where the last leader stopped instead of sending the whole total again.

The delta itself is ``export.delta`` (one mechanism for one process and many); this is only where its baseline
lives: ``otlp-delta.pb`` in the multi-process directory, written atomically after each export that may have
arrived.
"""

from __future__ import annotations

import logging
import os

from opentelemetry.sdk.resources import Resource

from ..export.delta import Baseline
from .directory import _write_atomic

__all__ = ["STATE_NAME", "FileStore"]

_log = logging.getLogger("ryot_telemetry")

STATE_NAME = "otlp-delta.pb"
"""The baseline of the last delta export that may have arrived, in the multi-process directory."""


class FileStore:
    """The delta baseline in ``<dir>/otlp-delta.pb``."""

    def __init__(self, directory: str, resource: Resource) -> None:
        self.path = os.path.join(directory, STATE_NAME)
        self.resource = resource

    def load(self) -> Baseline:
        """The baseline; an empty one when there is none or it cannot be read (the next export starts over)."""
        try:
            with open(self.path, "rb") as f:
                return Baseline.from_bytes(f.read())
        except FileNotFoundError:
            return Baseline()
        except (OSError, ValueError):
            _log.warning("ryot-telemetry: unreadable delta baseline %s; the next OTLP export starts over", self.path)
            return Baseline()

    def save(self, baseline: Baseline) -> None:
        _write_atomic(self.path, baseline.to_bytes(self.resource))

"""Bounded label values: the SPEC's bucketing rules and the model-name cardinality guard."""

from __future__ import annotations

import logging
import threading

from .catalogue import BATCH_SIZE_LABELS, PROMPT_SIZES

_log = logging.getLogger("ryot_telemetry")

OVERFLOW = "__overflow__"
UNKNOWN_MODEL = "unknown"
DEFAULT_MAX_MODELS = 100
DEFAULT_MAX_LABEL_LENGTH = 128

_B1, _B2_4, _B5_8, _B9_16, _B17_32, _B33 = BATCH_SIZE_LABELS
_BATCH_LABELS = (_B1, _B2_4, _B2_4, _B2_4, _B5_8, _B5_8, _B5_8, _B5_8)
_TINY, _SMALL, _MEDIUM, _LARGE, _XLARGE = PROMPT_SIZES


def batch_size_label(n: int) -> str:
    """Bucket a batch size into ``1``, ``2-4``, ``5-8``, ``9-16``, ``17-32``, ``33+``."""
    if n <= 8:
        return _BATCH_LABELS[n - 1] if n >= 1 else _B1
    if n <= 16:
        return _B9_16
    if n <= 32:
        return _B17_32
    return _B33


def prompt_size_label(prompt_tokens: int) -> str:
    """tiny <50, small 50-499, medium 500-1,999, large 2,000-9,999, xlarge >=10,000."""
    if prompt_tokens < 50:
        return _TINY
    if prompt_tokens < 500:
        return _SMALL
    if prompt_tokens < 2000:
        return _MEDIUM
    if prompt_tokens < 10000:
        return _LARGE
    return _XLARGE


def clip(value: object, max_length: int = DEFAULT_MAX_LABEL_LENGTH) -> str:
    """A label value as a string no longer than ``max_length`` (non-strings are str()-ed)."""
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= max_length else s[:max_length]


class ModelLabels:
    """Maps raw model names to bounded label values.

    The first ``max_models`` distinct names are kept (clipped to ``max_length``); any later new name becomes
    ``__overflow__``, so a flood of distinct names cannot grow memory or series without bound. Overflowed names
    are not remembered, which keeps the map itself bounded.
    """

    __slots__ = ("_lock", "_map", "_warned", "max_length", "max_models")

    def __init__(self, max_models: int = DEFAULT_MAX_MODELS, max_length: int = DEFAULT_MAX_LABEL_LENGTH) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_models = max_models
        self.max_length = max_length
        self._map: dict[object, str] = {}
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, raw: object) -> str:
        try:
            label = self._map.get(raw)
        except TypeError:  # unhashable (a list, a dict): still a request, of an unknown model
            return UNKNOWN_MODEL
        if label is not None:
            return label
        return self._slow(raw)

    def _slow(self, raw: object) -> str:
        if raw is None or raw == "":
            return UNKNOWN_MODEL
        try:
            hash(raw)
        except TypeError:
            return UNKNOWN_MODEL
        with self._lock:
            label = self._map.get(raw)
            if label is not None:
                return label
            if len(self._map) >= self.max_models:
                if not self._warned:
                    self._warned = True
                    _log.warning(
                        "ryot-telemetry: more than %d distinct model names; further names are recorded as %r "
                        "(raise RYOT_TELEMETRY_MAX_MODELS if this is expected)",
                        self.max_models,
                        OVERFLOW,
                    )
                return OVERFLOW
            label = clip(raw, self.max_length)
            self._map[raw] = label
            return label

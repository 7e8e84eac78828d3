"""Bounded label values: the SPEC's bucketing rules and the model-name cardinality guard."""

from __future__ import annotations

import logging
import threading

from ..catalogue import BATCH_SIZE_LABELS, PROMPT_SIZES, REPLACEMENT, UNENCODABLE

_log = logging.getLogger("ryot_telemetry")

OVERFLOW = "__overflow__"
UNKNOWN_MODEL = "unknown"
"""The label of a request that named no model (missing, empty, not a string or number)."""
UNADMITTED = "__unknown__"
"""The label of a model name the router did not accept (``model_not_found``) and that has no slot; also the
in-flight label of a request whose name has no slot yet (SPEC: bogus names cannot take slots)."""
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
    """A label value that every exporter can encode: at most ``max_length`` code points, control characters and
    surrogates replaced by U+FFFD (non-strings are str()-ed).

    Clipping comes first, so the replacement never changes the length; the result is valid UTF-8 for the
    Prometheus text format, OpenMetrics and OTLP (protobuf strings must be UTF-8).
    """
    s = value if type(value) is str else _as_str(value)
    if len(s) > max_length:
        s = s[:max_length]
    return UNENCODABLE.sub(REPLACEMENT, s)


def _as_str(value: object) -> str:
    if isinstance(value, str):
        return str.__str__(value)  # a str subclass's own __str__ could return anything
    return str(value)


def _key(raw: object, max_length: int) -> str | None:
    """The clipped string a raw model name is looked up by; None for no usable name (missing, empty, a container).

    Names are compared after clipping, so the map never holds more than ``max_length`` code points of a name a
    client sent: a 10 MB name is not kept alive by the label cache.
    """
    if type(raw) is not str:
        if isinstance(raw, str):
            raw = str.__getitem__(raw, slice(0, max_length))  # a plain str, whatever the subclass overrides
        elif isinstance(raw, (int, float)):
            try:
                raw = str(raw)  # bool included: True -> "True"
            except ValueError:  # an int past sys.int_info.str_digits_check_threshold
                return None
        else:
            return None
    if not raw:
        return None
    return raw if len(raw) <= max_length else raw[:max_length]


class ModelLabels:
    """Maps raw model names to bounded, encodable label values, with a budget of ``max_models`` names.

    A name is looked up by its clipped form (at most ``max_length`` code points), so memory holds only clipped
    names. ``__call__`` gives a name a slot if it has none (the first ``max_models`` names; later ones become
    ``__overflow__`` and are not remembered). ``peek`` never takes a slot: the router wrapper uses it so that a
    name gets a slot only once the router accepted it (see ``Recorder.start``).
    """

    __slots__ = ("_lock", "_map", "_variable", "_warned", "_what", "max_length", "max_models")

    def __init__(
        self,
        max_models: int = DEFAULT_MAX_MODELS,
        max_length: int = DEFAULT_MAX_LABEL_LENGTH,
        *,
        what: str = "model names",
        variable: str = "RYOT_TELEMETRY_MAX_MODELS",
    ) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_models = max_models
        self.max_length = max_length
        self._map: dict[str, str] = {}
        self._lock = threading.Lock()
        self._warned = False
        self._what = what  # the overflow warning names what overflowed and the variable that raises the budget
        self._variable = variable

    def __call__(self, raw: object) -> str:
        """The label of ``raw``, taking a slot for it if it has none and one is free."""
        label = self.peek(raw)
        if label is not None:
            return label
        return self.admit(_key(raw, self.max_length))

    def peek(self, raw: object) -> str | None:
        """The label of ``raw`` if it has one without taking a slot (``unknown`` for no name), else None."""
        if type(raw) is str and len(raw) <= self.max_length:
            label = self._map.get(raw)
            if label is not None:
                return label
        key = _key(raw, self.max_length)
        if key is None:
            return UNKNOWN_MODEL
        return self._map.get(key)

    def key(self, raw: object) -> str | None:
        """The clipped form ``raw`` is looked up by (None: no usable name); what ``admit`` takes."""
        return _key(raw, self.max_length)

    def admit(self, key: str | None) -> str:
        """The label for a clipped name from ``key()``: its slot, a new slot, or ``__overflow__``."""
        if key is None:
            return UNKNOWN_MODEL
        label = self._map.get(key)
        if label is not None:
            return label
        with self._lock:
            label = self._map.get(key)
            if label is not None:
                return label
            if len(self._map) >= self.max_models:
                if not self._warned:
                    self._warned = True
                    _log.warning(
                        "ryot-telemetry: more than %d distinct %s; further ones are recorded as %r "
                        "(raise %s if this is expected)",
                        self.max_models,
                        self._what,
                        OVERFLOW,
                        self._variable,
                    )
                return OVERFLOW
            label = clip(key, self.max_length)
            if label == key:
                label = key  # one string object for both
            self._map[key] = label
            return label

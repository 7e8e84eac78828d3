"""The values ``ryot-telemetry k8s`` writes into Kubernetes resources, checked as Kubernetes and Prometheus check them:
object names and namespaces (DNS-1123), label keys and values, port names and Prometheus durations.

One set of rules for every generated resource (the Prometheus Operator resources of ``k8s.py`` and the autoscaling
ones of ``autoscaling.py``), so a value one accepts the other never refuses. Each check returns the value, or raises
``InvalidValue``: one line naming the option, the value and the rule. Values may come from code as well as from the
command line, so anything that is not a string is refused the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

__all__ = [
    "InvalidValue",
    "validate_duration",
    "validate_label_key",
    "validate_label_value",
    "validate_labels",
    "validate_name",
    "validate_namespace",
    "validate_pairs",
    "validate_port_name",
]

# Kubernetes' own patterns (k8s.io/apimachinery/pkg/util/validation): names and label parts are ASCII only.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9]|-(?!-))*")
# Prometheus' model.ParseDuration: units in descending order, each at most once, integers only.
_DURATION = re.compile(r"([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?")
_SUBDOMAIN_RULE = (
    "DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
)
_QUALIFIED_RULE = "at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
_UNITS = ("y", "w", "d", "h", "m", "s", "ms")
_DAY_MS = 86_400_000
_UNIT_MS = {"y": 365 * _DAY_MS, "w": 7 * _DAY_MS, "d": _DAY_MS, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


class InvalidValue(ValueError):
    """A value Kubernetes or Prometheus would reject; the message is one line naming the option and the value."""

    def __init__(self, option: str, value: object, why: str) -> None:
        super().__init__(f"{option} {value!r}: {why}")
        self.why = why


def _fits(value: object, pattern: re.Pattern[str], most: int) -> TypeGuard[str]:
    """Whether ``value`` is a string of 1 to ``most`` characters that ``pattern`` matches whole."""
    return isinstance(value, str) and 0 < len(value) <= most and pattern.fullmatch(value) is not None


def validate_name(option: str, value: object) -> str:
    """A resource's ``metadata.name``: a DNS-1123 subdomain (lowercase letters, digits, ``-`` and ``.``, at most
    253 characters), as the API server checks custom resources' names."""
    if not _fits(value, _DNS1123_SUBDOMAIN, 253):
        raise InvalidValue(option, value, f"must be a {_SUBDOMAIN_RULE}")
    return value


def validate_namespace(option: str, value: object) -> str:
    """A namespace (or any other DNS-1123 label, such as a Deployment whose pods are selected by name): lowercase
    letters, digits and ``-``, at most 63 characters."""
    if not _fits(value, _DNS1123_LABEL, 63):
        raise InvalidValue(
            option,
            value,
            "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a "
            "letter or digit",
        )
    return value


def validate_label_key(option: str, key: object) -> str:
    """A label key: an optional DNS-1123 subdomain prefix and ``/``, then a name of at most 63 letters, digits,
    ``-``, ``_`` and ``.`` starting and ending with a letter or digit."""
    prefix, slash, name = key.rpartition("/") if isinstance(key, str) else ("", "", "")
    if slash and not _fits(prefix, _DNS1123_SUBDOMAIN, 253):
        raise InvalidValue(option, key, "the key's prefix must be a DNS-1123 subdomain (e.g. example.com/name)")
    if not isinstance(key, str) or not _fits(name, _QUALIFIED_NAME, 63):
        raise InvalidValue(option, key, f"the key's name must be {_QUALIFIED_RULE}")
    return key


def validate_label_value(option: str, value: object) -> str:
    """A label (or selector) value: empty, or at most 63 letters, digits, ``-``, ``_`` and ``.`` starting and
    ending with a letter or digit."""
    if value == "" or _fits(value, _QUALIFIED_NAME, 63):
        return str(value)
    raise InvalidValue(option, value, f"a label value must be empty or {_QUALIFIED_RULE}")


def validate_port_name(option: str, value: object) -> str:
    """A named port (IANA service name, as containers' ``ports[].name``): at most 15 lowercase letters, digits and
    single ``-`` between them, with at least one letter."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > 15
        or not _PORT_NAME.fullmatch(value)
        or value.endswith("-")
        or not any(c.isalpha() for c in value)
    ):
        raise InvalidValue(
            option,
            value,
            "must be a port name: at most 15 lowercase letters, digits and single '-' between them, with a letter",
        )
    return value


def validate_duration(option: str, value: object) -> str:
    """A positive Prometheus duration such as ``15s``, ``1m30s`` or ``500ms`` (integers, units y w d h m s ms in
    that order); ``15`` and ``1.5s`` are refused, as Prometheus refuses them."""
    m = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if m is None or not any(c in "123456789" for c in m.group(0)):
        raise InvalidValue(
            option, value, "must be a positive Prometheus duration such as 15s, 1m30s or 500ms (integers and units)"
        )
    ms = sum(int(part[: -len(unit)]) * _UNIT_MS[unit] for part, unit in zip(m.groups(), _UNITS) if part)
    if ms * 1_000_000 > 2**63 - 1:  # Prometheus keeps durations as int64 nanoseconds
        raise InvalidValue(option, value, "is longer than Prometheus can hold (about 292 years)")
    return m.group(0)


def _label(option: str, key: object, value: object, typed: str) -> tuple[str, str]:
    try:
        return validate_label_key(option, key), validate_label_value(option, value)
    except InvalidValue as e:  # name the whole item, as it was typed
        raise InvalidValue(option, typed, e.why) from None


def validate_labels(option: str, labels: Mapping[Any, object]) -> dict[str, str]:
    """Labels given as a mapping (resources built in code): each key a label key and each value a label value; an
    error names the whole ``key=value`` item."""
    return dict(_label(option, key, value, f"{key}={value}") for key, value in labels.items())


def validate_pairs(option: str, items: Sequence[str] | None) -> dict[str, str]:
    """``key=value`` items of a repeated option, each key a label key and each value a label value."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidValue(option, item, "expected key=value")
        key, value = _label(option, key, value, item)
        out[key] = value
    return out

"""The OpenTelemetry Collector's Prometheus metric names, re-stated for tests.

The Collector's `prometheus` and `prometheusremotewrite` exporters (and Prometheus' own OTLP receiver) name metrics
with github.com/prometheus/otlptranslator, strategy ``UnderscoreEscapingWithSuffixes`` (``MetricNamer`` with
``WithMetricSuffixes`` and without UTF-8): ``normalizeName`` in metric_namer.go and ``buildUnitSuffixes`` /
``cleanUpUnit`` in unit_namer.go. Its rules, in the order it applies them:

1. the name is split into tokens on every character outside ``[a-zA-Z0-9:]`` (so runs of ``_`` collapse);
2. the unit is split at the first ``/``; a part that is blank or contains ``{`` or ``}`` is dropped; the main part
   goes through the unit map (``s`` -> ``seconds``, ``By`` -> ``bytes``, ``1`` -> ``""``, ``%`` -> ``percent``, ...),
   the per part through the per-unit map (``s`` -> ``second``, ...) and gets ``per_`` in front; both are cleaned
   (invalid characters to ``_``, ``_`` runs collapsed, a leading ``_`` dropped);
3. the main suffix is appended unless it is already one of the name's tokens; the per suffix (one trailing ``_``
   trimmed, dropped if it is just ``per_``) likewise, compared as ONE token: ``per_second`` never equals the two
   tokens ``per`` and ``second`` of a name, which is why ``tokens_per_second`` with unit ``{token}/s`` becomes
   ``tokens_per_second_per_second``;
4. monotonic counters: every ``total`` token is removed and ``total`` appended;
5. gauges with unit exactly ``1``: every ``ratio`` token is removed and ``ratio`` appended;
6. tokens are joined with ``_``; a leading digit gets a ``_`` prefix.
"""

from __future__ import annotations

import re

COUNTER = "counter"  # MetricTypeMonotonicCounter
UP_DOWN = "updown"  # MetricTypeNonMonotonicCounter
GAUGE = "gauge"  # MetricTypeGauge
HISTOGRAM = "histogram"  # MetricTypeHistogram

UNIT_MAP = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
PER_UNIT_MAP = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}

_INVALID = re.compile(r"[^a-zA-Z0-9:]")
_UNDERSCORES = re.compile(r"__+")


def _clean_unit(unit: str) -> str:
    return _UNDERSCORES.sub("_", re.sub(r"[^a-zA-Z0-9:_]", "_", unit)).removeprefix("_")


def unit_suffixes(unit: str) -> tuple[str, str]:
    """(main, per) suffixes of ``unit``, before cleaning: ``By/s`` -> (``bytes``, ``per_second``)."""
    parts = unit.split("/", 1)
    main = per = ""
    head = parts[0].strip()
    if head and "{" not in head and "}" not in head:
        main = UNIT_MAP.get(head, head)
    if len(parts) > 1 and parts[1] != "":
        tail = parts[1].strip()
        if tail and "{" not in tail and "}" not in tail:
            per = PER_UNIT_MAP.get(tail, tail)
        if per:
            per = "per_" + per
    return main, per


def collector_name(name: str, unit: str, kind: str) -> str:
    """The Prometheus name the Collector gives an OTLP metric (UnderscoreEscapingWithSuffixes, no namespace)."""
    tokens = [t for t in _INVALID.split(name) if t]
    main, per = unit_suffixes(unit)
    main, per = _clean_unit(main), _clean_unit(per)
    if main in tokens:
        main = ""
    if per == "per_":
        per = ""
    else:
        per = per.removesuffix("_")
        if per in tokens:
            per = ""
    if per:
        main = main.removesuffix("_")
    tokens += [t for t in (main, per) if t]
    if kind == COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    out = "_".join(tokens)
    return "_" + out if out[:1].isdigit() else out

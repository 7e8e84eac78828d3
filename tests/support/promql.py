"""Checks that a PromQL expression names only metrics and labels the catalogue exposes."""

from __future__ import annotations

import re

from ryot_telemetry import catalogue

_METRIC = re.compile(r"(?<![\w:])ryot_[a-z_]+")


_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def unknown_metric_names(expr: str) -> list[str]:
    """Names in ``expr`` that are not exposed: not in the catalogue, or a histogram without its series suffix."""
    bad = []
    for name in _METRIC.findall(expr):
        spec = catalogue.BY_PROMETHEUS_NAME.get(name)
        if spec is not None:
            if spec.prometheus_type == "histogram":
                bad.append(name)  # a histogram family is only queryable as _bucket, _sum or _count
            continue
        base = next((name[: -len(s)] for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        hist = catalogue.BY_PROMETHEUS_NAME.get(base) if base else None
        if hist is None or hist.prometheus_type != "histogram":
            bad.append(name)
    return bad


_SELECTOR = re.compile(r"(?<![\w:])(ryot_[a-z_]+)\{([^}]*)\}")


_MATCHER_KEY = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")


_GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")


_TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def _spec_labels(name: str) -> set[str]:
    spec = catalogue.BY_PROMETHEUS_NAME.get(name)
    if spec is None:
        for suffix in _HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and (spec := catalogue.BY_PROMETHEUS_NAME.get(name[: -len(suffix)])):
                return set(spec.all_labels) | _TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
        return set()
    return set(spec.all_labels) | _TARGET_LABELS


def unknown_labels(expr: str, recorded_labels: set[str] = frozenset()) -> list[str]:
    """Label names matched on a ryot metric that it does not carry, and grouping labels no metric in ``expr`` has."""
    bad = [
        f"{name}:{key}"
        for name, body in _SELECTOR.findall(expr)
        for key in _MATCHER_KEY.findall(body)
        if key not in _spec_labels(name)
    ]
    available = set(recorded_labels).union(*(_spec_labels(n) for n in _METRIC.findall(expr)))
    for group in _GROUPING.findall(expr):
        bad += [f"by:{k}" for k in (x.strip() for x in group.split(",")) if k and k not in available]
    return bad

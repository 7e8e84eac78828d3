"""Service level objectives: the SLO table and the per-request verdict behind ``ryot_slo_requests_total``.

Table (JSON, or YAML with PyYAML installed), per model with a ``"*"`` default; objectives in seconds, any subset::

    {"*": {"ttft": 0.5, "tpot": 0.05, "latency": 10, "target": 0.99},
     "llama-3.1-70b": {"ttft": 1.0, "target": 0.995}}

A finished request meets its model's SLO when it did not fail and every objective that applies is met: streams are
judged on ``ttft``, ``tpot`` and ``latency`` where set, non-streaming requests on ``latency``. Missed requests name
the first objective missed, in the order error, ttft, tpot, latency. The burn-rate rules generated from the same table
are in ``ryot_telemetry.artifacts.slo_rules`` (``ryot-telemetry slo-rules``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._tables import load_table_file

__all__ = [
    "DEFAULT_TARGET",
    "OBJECTIVES",
    "Slo",
    "SloTable",
    "judge",
]

OBJECTIVES = ("ttft", "tpot", "latency")
"""Latency objectives, in the order a missed request is attributed to them (after ``error``)."""

DEFAULT_TARGET = 0.99
"""Target of an entry that gives none: the share of requests that must meet the SLO over 30 days."""

_FIX = (
    'expected {"<model or *>": {"ttft": <seconds>, "tpot": <seconds>, "latency": <seconds>, "target": <0..1>}}, '
    "with at least one of ttft, tpot, latency per model"
)


@dataclass(frozen=True, slots=True)
class Slo:
    """One model's objectives (seconds; None = not judged) and target share of requests meeting them."""

    ttft: float | None = None
    tpot: float | None = None
    latency: float | None = None
    target: float = DEFAULT_TARGET


def _slo(model: str, entry: Any) -> Slo:
    if isinstance(entry, Slo):
        return entry
    if not isinstance(entry, Mapping):
        raise ValueError(f"SLO table entry for {model!r} must be a mapping, got {entry!r}; {_FIX}")
    unknown = sorted(set(map(str, entry)) - {*OBJECTIVES, "target"})
    if unknown:
        raise ValueError(f"SLO table entry for {model!r}: unknown key {unknown[0]!r}; {_FIX}")
    if not any(k in entry for k in OBJECTIVES):
        raise ValueError(f"SLO table entry for {model!r} has no objective; {_FIX}")
    vals: dict[str, float] = {}
    for k in OBJECTIVES:
        if k in entry:
            v = entry[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"SLO table entry for {model!r}: {k} must be a number of seconds > 0, got {v!r}")
            vals[k] = float(v)
    target = entry.get("target", DEFAULT_TARGET)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise ValueError(
            f"SLO table entry for {model!r}: target must be a fraction strictly between 0 and 1 such as 0.99, "
            f"got {target!r}"
        )
    return Slo(target=float(target), **vals)


class SloTable:
    """Model name -> ``Slo``. A ``"*"`` entry, if present, applies to models not listed; others are not judged."""

    __slots__ = ("_default", "_slos")

    def __init__(self, slos: Mapping[str, Any]) -> None:
        if not isinstance(slos, Mapping) or not slos:
            raise ValueError(f"SLO table must be a non-empty mapping of model -> objectives; {_FIX}")
        table = {str(model): _slo(str(model), entry) for model, entry in slos.items()}
        self._default = table.pop("*", None)
        self._slos = table

    def get(self, model: str) -> Slo | None:
        return self._slos.get(model, self._default)

    @property
    def default(self) -> Slo | None:
        return self._default

    def models(self) -> dict[str, Slo]:
        """The models listed by name (without the ``"*"`` default)."""
        return dict(self._slos)

    def as_dict(self) -> dict[str, dict[str, float]]:
        """The table in its file format (for the demo's summary and for round trips)."""
        out = {}
        for model, s in [*self._slos.items(), *([("*", self._default)] if self._default else [])]:
            out[model] = {k: getattr(s, k) for k in (*OBJECTIVES, "target") if getattr(s, k) is not None}
        return out

    def __len__(self) -> int:
        return len(self._slos) + (self._default is not None)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SloTable:
        """Load a JSON table (YAML when the name ends in .yaml/.yml and PyYAML is installed)."""
        return load_table_file(path, "SLO table", cls)

    @classmethod
    def load(cls, arg: SloTable | Mapping[str, Any] | str | os.PathLike[str]) -> SloTable:
        if isinstance(arg, SloTable):
            return arg
        if isinstance(arg, Mapping):
            return cls(arg)
        return cls.from_file(arg)


def judge(slo: Slo, *, error: bool, stream: bool, latency: float, ttft: float | None, tpot: float | None) -> str | None:
    """None when the request met ``slo``, else the first objective it missed: error, ttft, tpot, latency.

    A stream that produced no first token misses ``ttft``; one with fewer than two tokens per choice has no TPOT.
    """
    if error:
        return "error"
    if stream:
        if slo.ttft is not None and (ttft is None or ttft > slo.ttft):
            return "ttft"
        if slo.tpot is not None and tpot is not None and tpot > slo.tpot:
            return "tpot"
    if slo.latency is not None and latency > slo.latency:
        return "latency"
    return None


if __name__ == "__main__":
    # ``python -m ryot_telemetry.slo rules``, as documented before the rule generator moved: it keeps working for
    # one release. runpy by name, not an import: this module sits below the generator, which imports it.
    import runpy
    import warnings

    warnings.warn(
        "python -m ryot_telemetry.slo is deprecated and is removed in the next minor release; "
        "use python -m ryot_telemetry.artifacts.slo_rules",
        DeprecationWarning,
        stacklevel=1,  # this module, run as __main__: shown by the default warning filters
    )
    runpy.run_module("ryot_telemetry.artifacts.slo_rules", run_name="__main__", alter_sys=True)

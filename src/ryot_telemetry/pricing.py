"""Token prices per model, validated at start-up, feeding ryot_token_cost_estimate_usd_total."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._tables import load_table_file

__all__ = ["Price", "PriceTable"]


@dataclass(frozen=True)
class Price:
    """US dollars per 1,000 tokens. ``cached_prompt``: the price of prompt tokens served from the provider's prompt
    cache (``usage.prompt_tokens_details.cached_tokens``); None prices them as ``prompt``."""

    prompt: float
    completion: float
    cached_prompt: float | None = None


_FIELDS = ("prompt", "completion", "cached_prompt")


def _price(model: str, entry: Any) -> Price:
    if isinstance(entry, Price):
        entry = {"prompt": entry.prompt, "completion": entry.completion, "cached_prompt": entry.cached_prompt}
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        entry = {"prompt": entry[0], "completion": entry[1]}
    if not isinstance(entry, Mapping) or set(entry) - set(_FIELDS) or not entry:
        raise ValueError(
            f"price table entry for {model!r} must be {{'prompt': <usd per 1k>, 'completion': <usd per 1k>}} "
            f"(optionally 'cached_prompt': <usd per 1k>), got {entry!r}"
        )

    def number(k: str) -> float:
        v = entry.get(k, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"price table entry for {model!r}: {k} must be a finite number >= 0, got {v!r}")
        return float(v)

    cached = None if entry.get("cached_prompt") is None else number("cached_prompt")
    return Price(number("prompt"), number("completion"), cached)


class PriceTable:
    """Model name -> ``Price``. A ``"*"`` entry, if present, prices models not listed."""

    __slots__ = ("_default", "_prices")

    def __init__(self, prices: Mapping[str, Any]) -> None:
        if not isinstance(prices, Mapping):
            raise ValueError(f"price table must be a mapping of model -> prices, got {type(prices).__name__}")
        table = {str(model): _price(str(model), entry) for model, entry in prices.items()}
        self._default = table.pop("*", None)
        self._prices = table

    def get(self, model: str) -> Price | None:
        return self._prices.get(model, self._default)

    def __len__(self) -> int:
        return len(self._prices) + (self._default is not None)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PriceTable:
        """Load a JSON file ``{"model": {"prompt": 0.0015, "completion": 0.006, "cached_prompt": 0.00075}, ...}``
        (YAML if PyYAML is present); ``cached_prompt`` is optional."""
        return load_table_file(path, "price table", cls)

"""Loading a user's table file (price table, SLO table): JSON, or YAML when the name says so."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["load_table_file"]

T = TypeVar("T")


def load_table_file(path: str | os.PathLike[str], what: str, build: Callable[[Any], T]) -> T:
    """``build`` applied to the parsed content of ``path``; every failure is one ``ValueError`` naming ``what``
    and the file (``build``'s own ValueError is prefixed with the file).

    YAML (``.yaml``/``.yml``) needs PyYAML, an optional dependency: its absence is said as such, not as a
    malformed file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read {what} {p}: {e.strerror or e}") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml  # optional

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ImportError:
        raise ValueError(f"{what} {p} is YAML but PyYAML is not installed: pip install pyyaml") from None
    except Exception as e:
        raise ValueError(f"malformed {what} {p}: {e}") from None
    try:
        return build(data)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None

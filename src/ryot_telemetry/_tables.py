"""Reading a user's table file (price table, SLO table): JSON, or YAML when the name says so."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_table_file"]


def read_table_file(path: str | os.PathLike[str], what: str) -> Any:
    """The parsed content of ``path``; every failure is one ``ValueError`` naming ``what`` and the file.

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

            return yaml.safe_load(text)
        return json.loads(text)
    except ImportError:
        raise ValueError(f"{what} {p} is YAML but PyYAML is not installed: pip install pyyaml") from None
    except Exception as e:
        raise ValueError(f"malformed {what} {p}: {e}") from None

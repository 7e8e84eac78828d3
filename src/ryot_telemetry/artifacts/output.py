"""Where a generator's text goes: stdout or a file, the same way for every subcommand."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["emit"]


def emit(text: str, output: str) -> None:
    """``text`` to stdout (``-``) or to the file ``output``, creating its folder."""
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()  # a closed pipe is reported here, inside main, not at exit
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")

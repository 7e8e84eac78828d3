"""Stopping the servers the tests start: a plain process, or a whole process group (a server with workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any

__all__ = ["stop", "stop_group"]


def stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate ``proc`` if it still runs, kill it if it ignores that for 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def stop_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM to the process group ``proc`` leads (started with ``start_new_session=True``), so its workers stop
    too; SIGKILL to the group if ``proc`` is still running after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)

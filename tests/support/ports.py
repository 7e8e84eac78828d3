"""The one port helper of the tests: a loopback port nothing listens on."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A loopback port the OS just handed out and that is closed again: free to listen on, and refused if called
    (no one listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

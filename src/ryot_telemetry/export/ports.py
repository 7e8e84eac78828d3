"""Without multi-process mode: is the scrape port held by ryot-telemetry in another worker of the same server?

A worker that finds the port taken by its parent (the master) or a sibling worker, which answers ``/metrics``
with ``ryot_service_info``, logs one WARNING naming ``RYOT_TELEMETRY_MULTIPROC_DIR`` instead of failing; any other
holder is a configuration error. Linux ``/proc`` tells which process holds a listening socket.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["port_held_by_same_server"]


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on TCP ``port`` (Linux ``/proc/net/tcp*``)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except (OSError, ValueError):
            continue
    return inodes


def _holds(pid: int, inodes: set[str]) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(f"{fd_dir}/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


def port_held_by_same_server(port: int, host: str = "localhost") -> bool:
    """Whether ``port`` is served by ryot-telemetry in another process of this server: the listener belongs to our
    parent (the master) or a sibling worker, and it answers ``/metrics`` with ``ryot_service_info``."""
    return _held_by_relative(port) and _serves_ryot(host, port)


def _serves_ryot(host: str, port: int) -> bool:
    import urllib.request

    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://{'[' + target + ']' if ':' in target else target}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return b"ryot_service_info" in resp.read(1 << 22)
    except Exception:
        return False


def _held_by_relative(port: int) -> bool:
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    me, parent = os.getpid(), os.getppid()
    candidates = [parent]
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for entry in entries:
        if not entry.isdigit() or int(entry) in (me, parent):
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == parent:
                candidates.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return any(_holds(pid, inodes) for pid in candidates)

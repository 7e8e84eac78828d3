"""Leadership of the multi-process directory: one process holds ``<dir>/leader.lock``.

A POSIX lock, released by the kernel when its holder dies, even by SIGKILL. The leader serves the scrape port and
folds the files of dead workers into their server's archive (``directory.housekeep``); the leader's OTLP export is
``multiproc.export``, on its own thread. The other processes retry the lock every tick and take over within one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.resources import Resource

from .directory import _Ident, housekeep

__all__ = ["LOCK_NAME", "Leadership"]

_log = logging.getLogger("ryot_telemetry")

LOCK_NAME = "leader.lock"

_leaders: dict[str, Leadership] = {}
"""This process's leadership per directory: POSIX locks belong to the process, so a second instance here would
"win" the lock and then free it."""


class Leadership:
    """This process's claim on the directory's lock, and the leader's duties besides the export."""

    def __init__(self, directory: str, resource: Resource, serve: Callable[[], Any] | None) -> None:
        self.directory = directory
        self.resource = resource
        self._serve = serve
        self.server: Any = None
        self._serve_warned = False
        self._fd: int | None = None

    @property
    def leader(self) -> bool:
        return self._fd is not None

    def try_lead(self) -> None:
        if self._fd is not None:
            return
        other = _leaders.get(self.directory)
        if other is not None and other is not self and other.leader:
            return
        fd = os.open(os.path.join(self.directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            return
        self._fd = fd
        _leaders[self.directory] = self
        _log.debug("ryot-telemetry: pid %d leads the multi-process directory %s", os.getpid(), self.directory)

    def duties(self, me: _Ident) -> None:
        """Open the scrape port if not yet served, fold dead workers' files."""
        if self._serve is not None and self.server is None:
            try:
                self.server = self._serve()
            except OSError as e:
                if not self._serve_warned:
                    self._serve_warned = True
                    _log.warning("ryot-telemetry: the multi-process leader cannot open the scrape port: %s", e)
        try:
            housekeep(self.directory, me, self.resource)
        except OSError:
            _log.debug("ryot-telemetry: multi-process housekeeping failed", exc_info=True)

    def release(self) -> None:
        """Close the scrape port and give the lock up."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self._unlock()

    def after_fork_child(self) -> None:
        """A forked child holds neither the parent's lock (POSIX locks are not inherited) nor its port."""
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.socket.close()
            self.server = None
        self._unlock()

    def _unlock(self) -> None:
        """Close the lock file (which releases the lock where this process holds it) and leave this process's table of
        leaders."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if _leaders.get(self.directory) is self:
            del _leaders[self.directory]

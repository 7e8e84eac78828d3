"""Multi-process mode: one exact set of metrics across the worker processes of one server.

Switched on by ``RYOT_TELEMETRY_MULTIPROC_DIR=<dir>`` (or ``configure(multiproc_dir=...)``). How it works:

- **Hand-off.** Each process records into its own MeterProvider as in single-process mode. A background thread
  collects it every ``SNAPSHOT_INTERVAL`` seconds (cumulative, through an ``InMemoryMetricReader``) and writes the
  result, OTLP-protobuf encoded, to ``<dir>/w-<pid>-<start>-<ppid>-<pstart>.pb`` (temporary file, then
  ``os.replace``: a reader never sees half a file). ``start`` is the process's start time, so a reused pid is never
  mistaken for the old process.
- **Merge.** Whichever process answers a scrape reads every file and merges them: sums and histograms are added
  (every bucket, sum and count) over all files, live or dead; gauges come from live processes only: in-flight
  requests and sliding tokens/s are summed, other gauges (engine-reported values) are taken from the most recent
  writer. The merged data goes out through the OpenTelemetry Prometheus exporter's own translation. GPU gauges,
  ``ryot_service_info`` and the token-efficiency ratio are read once, by the answering process, at the scrape.
- **Leader** (``leader.py``). One process holds ``<dir>/leader.lock`` (a POSIX lock, released by the kernel when its
  holder dies, even by SIGKILL). The leader serves the scrape port and folds the files of dead workers into
  ``archive-<ppid>-<pstart>.pb`` (one per server), so that counters never decrease and the directory stays bounded.
  The other processes retry the lock every tick and take over within one tick.
- **OTLP** (``export.py``). The leader exports the merged totals on the OTLP reader's own thread, apart from the
  hand-off and the scrape.
- **New series at zero first** (``collections.py``). Whoever serves a scrape (or the leader's OTLP export) records
  when it began reading the directory; a worker's new-series gate holds a new counter series' increments until
  every such collection that is still running began after the hand-off that carried its zero.
- **Previous runs.** A server is identified by the parent of its workers (the uvicorn / gunicorn master). Files of
  dead processes whose server is gone too belong to an earlier run and are removed; a new run starts from zero.

Rooms: ``directory.py`` the directory side (identity, merge, archive, housekeeping); ``handoff.py`` the hand-off's
encoding; ``view.py`` the merged view a scrape or an export reads; ``leader.py`` the leadership; ``export.py`` the
leader's OTLP export; ``collections.py`` the collection records of the new-series gate; ``delta.py`` where the delta
baseline lives; ``setup.py`` builds it all for ``configure()``. This module is the process side: the hand-off thread
(which also tries for the leadership and does the leader's duties) and fork handling.

Forked children (``os.fork()`` after ``configure()``, gunicorn ``--preload``): in this mode a child becomes a worker
of its own that counts from zero (the at-fork handlers below); in any mode it closes the inherited scrape socket and
never waits for the parent's server thread (``_readers``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource

from .._compat import meter_count
from .._state import gc_paused
from ..export.otlp import OtlpReader
from ..recording.new_series import NewSeriesGate
from ..recording.recorder import Recorder
from .collections import COLLECTORS, note_collection, read_collection
from .directory import Merged, _Ident, _write_atomic
from .export import feed_merged
from .handoff import HandoffEncoder
from .leader import Leadership
from .view import MergedRates, ServerView

__all__ = ["HEARTBEAT", "SNAPSHOT_INTERVAL", "MergedRates", "MultiProcess", "note_collection", "read_collection"]

_log = logging.getLogger("ryot_telemetry")

SNAPSHOT_INTERVAL = 0.5
"""Seconds between two hand-offs of a worker's state (and between two leader-lock attempts)."""

HEARTBEAT = 5.0
"""Longest time between two hand-offs of an idle worker (no request started or ended): sliding windows and
engine-reported gauges are then at most this old. A request that starts or ends is handed off at the next tick."""

_HANDOFFS_KEPT = 256
"""Hand-offs remembered for the new-series gate: (time written, zero epoch it carried)."""


_instances: weakref.WeakSet[MultiProcess] = weakref.WeakSet()


class MultiProcess:
    """One process's part in multi-process mode: the hand-off of its state on a thread of its own, which also tries
    for the leadership (``Leadership``) and does the leader's duties; the merged view is a ``ServerView``, the
    leader's OTLP export runs on the OTLP reader's thread (``multiproc.export``)."""

    def __init__(
        self,
        directory: str,
        *,
        worker_reader: InMemoryMetricReader,
        server_reader: InMemoryMetricReader,
        resource: Resource,
        recorder: Recorder,
        rates: MergedRates,
        provider: Any = None,
        serve: Callable[[], Any] | None,
        otlp: OtlpReader | None,
    ) -> None:
        self.directory = directory
        self.worker_reader = worker_reader
        self.resource = resource
        self.recorder = recorder
        self.provider = provider
        self.me = _Ident.mine()
        self.view = ServerView(directory, self.me, server_reader, resource, rates)
        self.leadership = Leadership(directory, resource, serve)
        self.otlp = otlp
        if otlp is not None:
            feed_merged(otlp, directory, resource, leading=lambda: self.leader, produce=self.view.metrics_data)
        self._pid = os.getpid()
        self._baseline: ExportMetricsServiceRequest | None = None
        self._encoder = HandoffEncoder()  # encode_metrics' output, with each series' attributes encoded once
        self._collect_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._write_warned = False
        self._last_activity: Any = None
        self._last_write = 0.0
        # New series at zero first (``recording.new_series``), across processes: a worker's gate waits for the
        # server's scrapes and OTLP exports (recorded in the directory by whoever serves them) to have read a
        # hand-off that carried the zero, as it waits for its own readers in single-process mode.
        self.gate: NewSeriesGate | None = recorder.new_series
        self._remote: dict[str, Any] = {}
        self._handoffs: list[tuple[float, int]] = []  # (monotonic time the file was replaced, zero epoch in it)
        self._collected_epoch = 0
        self._advanced = False  # a server collection read a newer zero since the last hand-off
        if self.gate is not None:
            self._remote = {kind: self.gate.remote() for kind in COLLECTORS}
            self.gate.track(worker_reader, self._note_epoch)
        _instances.add(self)

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.me.file_name)

    @property
    def leader(self) -> bool:
        return self.leadership.leader

    @property
    def server(self) -> Any:
        """The scrape server, while this process leads and serves it."""
        return self.leadership.server

    # - hand-off

    def _note_epoch(self, epoch: int) -> None:
        self._collected_epoch = epoch

    def _refresh_collectors(self) -> None:
        """Tell the gate how far the server's collections have read: a collection that began after a hand-off was
        written has that hand-off's zeros."""
        if self.gate is None:
            return
        handoffs = self._handoffs
        for kind, state in self._remote.items():
            seen = read_collection(self.directory, kind)
            if seen is None:
                self.gate.update_remote(state, 0, None, None)
                continue
            started, interval = seen
            epoch = max((e for written, e in handoffs if written < started), default=0)
            if epoch > state.seen:
                self._advanced = True
            self.gate.update_remote(state, epoch, started, interval)

    def _activity(self) -> Any:
        """Changes whenever a request starts or ends (whoever drained it); None when it cannot be read, or when
        other meters record on this provider too (the FastAPI instrumentation, say): then every tick hands off."""
        if self.provider is not None and meter_count(self.provider) != 1:
            return None
        try:
            return self.recorder.activity()
        except Exception:
            return None

    def snapshot(self, *, idle_skip: bool = False) -> None:
        """Collect this process's cumulative state and hand it to the directory (atomically).

        ``idle_skip``: skip it when no request started or ended since the last hand-off, unless ``HEARTBEAT``
        seconds have passed (an idle worker then costs nothing between heartbeats) or a server collection has read
        the zero of a series whose increments are held (they go out now)."""
        activity = self._activity()
        if (
            idle_skip
            and activity is not None
            and not (self._advanced and self.gate is not None and self.gate.held())
            and activity == self._last_activity
            and time.monotonic() - self._last_write < HEARTBEAT
        ):
            return
        with self._collect_lock, gc_paused():
            data = self.worker_reader.get_metrics_data()
            # Nothing recorded yet still leaves a file: the directory shows every live worker.
            req = self._encoder.encode(data) if data is not None else ExportMetricsServiceRequest()
            if self._baseline is not None:
                merged = Merged()
                merged.add(req, live=True)
                merged.add(self._baseline, live=True, sign=-1)
                req = self._encoder.encode(merged.metrics_data(self.resource))
            _write_atomic(self.path, req.SerializeToString())
            self._last_activity, self._last_write = activity, time.monotonic()
            self._advanced = False
            self._handoffs.append((self._last_write, self._collected_epoch))
            del self._handoffs[:-_HANDOFFS_KEPT]

    # - merged view (``ServerView``)

    def merged(self) -> Merged:
        return self.view.merged()

    def metrics_data(self) -> MetricsData:
        return self.view.metrics_data()

    def scrape_data(self) -> MetricsData:
        return self.view.scrape_data()

    def flush(self, timeout_millis: float = 10_000) -> bool:
        """Hand this process's state off now and, when leading, export the server's totals; False when that export
        failed."""
        with contextlib.suppress(Exception):
            self.snapshot()
        if self.otlp is None or not self.leader:
            return True
        return self.otlp.force_flush(timeout_millis)

    def tick(self) -> None:
        try:
            self._refresh_collectors()
        except Exception:
            _log.debug("ryot-telemetry: could not read the server's collections", exc_info=True)
        try:
            self.snapshot(idle_skip=True)
            self._write_warned = False
        except Exception as e:
            # Once per failure spell (a directory removed under a running server would otherwise log every tick).
            level = logging.DEBUG if self._write_warned else logging.WARNING
            self._write_warned = True
            _log.log(level, "ryot-telemetry: could not write %s: %s", self.path, e)
        try:
            self.leadership.try_lead()
            if self.leader:
                self.leadership.duties(self.me)
        except Exception:
            _log.debug("ryot-telemetry: multi-process leader step failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(SNAPSHOT_INTERVAL):
            self.tick()

    def start(self) -> None:
        self.tick()
        self._thread = threading.Thread(target=self._run, name="ryot-multiproc", daemon=True)
        self._thread.start()
        # A worker that exits without shutdown() (a server stopping its workers) still hands over its last
        # requests. Registered after the MeterProvider's own exit hook, so it runs first (atexit is LIFO).
        ref = weakref.ref(self)

        def at_exit() -> None:
            mp = ref()
            if mp is not None and mp._pid == os.getpid():
                mp.close()

        atexit.register(at_exit)

    def close(self) -> None:
        """Hand over the final state, export it when leading, give up the leadership and the port."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.gate is not None:
            with contextlib.suppress(Exception):
                self.gate.close()  # the last hand-off carries every held increment: counters stay exact
        with contextlib.suppress(Exception):
            self.snapshot()
        if self.otlp is not None:
            # Its thread stops after a final export of the server's totals when leading (collections answer
            # nothing otherwise), before the lock is given up.
            with contextlib.suppress(Exception):
                self.otlp.shutdown()
        self.leadership.release()

    # - fork

    def _before_fork(self) -> None:
        self._collect_lock.acquire()
        try:
            data = self.worker_reader.get_metrics_data()
            self._fork_baseline = encode_metrics(data) if data is not None else None
        except Exception:
            self._fork_baseline = None

    def _after_fork_parent(self) -> None:
        self._collect_lock.release()

    def _after_fork_child(self) -> None:
        """The child is a worker of its own: new identity and file, counts from zero, no inherited port or lock."""
        self._collect_lock = threading.Lock()
        self._encoder = HandoffEncoder()
        self._baseline = getattr(self, "_fork_baseline", None)
        self.me = _Ident.mine()
        self.view.after_fork_child(self.me)
        self._last_write = 0.0  # a new identity: its first hand-off is due at once
        self._handoffs = []
        self._pid = os.getpid()  # exit hook: the child hands over its own state at exit
        self.leadership.after_fork_child()
        self._stop = threading.Event()
        self._thread = None
        if not self._closed:
            with contextlib.suppress(Exception):
                self.recorder.reset_after_fork()
            self._thread = threading.Thread(target=self._run, name="ryot-multiproc", daemon=True)
            self._thread.start()


def _fork_prepare() -> None:
    for mp in list(_instances):
        if not mp._closed:
            mp._before_fork()


def _fork_parent() -> None:
    for mp in list(_instances):
        if not mp._closed:
            mp._after_fork_parent()


def _fork_child() -> None:
    for mp in list(_instances):
        if not mp._closed:
            mp._after_fork_child()
        else:
            mp.leadership.after_fork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_fork_prepare, after_in_parent=_fork_parent, after_in_child=_fork_child)

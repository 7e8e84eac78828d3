"""What became of one OTLP export: it arrived, it certainly did not, or nobody can tell.

The OTLP exporters answer ``SUCCESS`` or ``FAILURE``. Delta temporality needs more (SPEC "Promises under faults"):
an export that certainly did not reach the collector keeps its increments for the next one, while one whose outcome
is unknown must not be sent again. ``ObservedExporter`` watches every attempt an exporter makes inside one
``export()`` call, through the exporter's own transport:

- OTLP/HTTP: the exporter takes a ``requests.Session`` (public argument ``session=``); ``observing_session`` sees
  each request. A connection never made (refused, unreachable, name not resolved, connect timeout) or an error
  answer (any HTTP status the exporter did not count as success) did not store anything; a read timeout or a
  connection dropped after the request went out may have.
- gRPC: the exporter's stub is wrapped (a private attribute: see ``_compat.observe_grpc_stub``). ``UNAVAILABLE``
  (no connection) and error statuses answered by the server did not store anything; ``DEADLINE_EXCEEDED``,
  ``CANCELLED`` and ``UNKNOWN`` may have.

Once an attempt's outcome is unknown, or an attempt was stored (one batch of an export the exporter splits),
later attempts of the same ``export()`` (the exporter's own retries) are refused before anything is sent, and a
failed export counts as unknown: the payload may already be stored, and a second copy would be counted twice.
Where the observation cannot be installed, every failure is unknown (the conservative reading).
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

__all__ = ["Attempts", "NotResent", "ObservedExporter", "Outcome", "grpc_stub_wrapper", "observing_session"]

_log = logging.getLogger("ryot_telemetry")


class Outcome(str, Enum):
    """The result of one export, as the ``result`` label of ``ryot.telemetry.otlp.exports`` spells it."""

    SUCCESS = "success"
    REFUSED = "refused"  # certainly not stored: connection refused or unreachable, or an error answer
    UNKNOWN = "unknown"  # may be stored: timed out, or the connection broke after the request was sent


class NotResent(Exception):
    """Raised instead of sending again a payload an earlier attempt may already have delivered."""


class Attempts:
    """The attempts of the export in progress (exports are serialised by their caller)."""

    def __init__(self) -> None:
        self.observed = False  # the transport reports to us (else a failure counts as unknown)
        self.uncertain = False  # an attempt of this export may have been stored: it is not sent again
        self.delivered = False  # an attempt was stored (one batch of an export the exporter splits)

    def begin(self) -> None:
        self.uncertain = self.delivered = False

    @property
    def unknown(self) -> bool:
        """Whether a failed export may have been stored, whole or in part."""
        return self.uncertain or self.delivered

    def may_have_arrived(self) -> None:
        self.uncertain = True

    def stored(self) -> None:
        self.delivered = True

    def check_resend(self) -> None:
        if self.uncertain:
            raise NotResent("an earlier attempt of this export may have arrived; it is not sent again")


def _never_sent(error: BaseException) -> bool:
    """Does a ``requests`` connection error say that no connection was made (so nothing was sent)?"""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    stack: list[Any] = [error]
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError)):
            return True
        stack.extend(e.args)
        stack.extend((getattr(e, "reason", None), e.__cause__, e.__context__))
    return False


def observing_session(attempts: Attempts) -> Any:
    """A ``requests.Session`` for the OTLP/HTTP exporter that reports each request's fate to ``attempts``."""
    import requests

    class _Session(requests.Session):
        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            attempts.check_resend()
            try:
                response = super().request(method, url, *args, **kwargs)
            except requests.exceptions.ConnectTimeout:
                raise  # no connection was made
            except requests.exceptions.ConnectionError as e:
                if not _never_sent(e):
                    attempts.may_have_arrived()
                raise
            except BaseException:
                attempts.may_have_arrived()  # a read timeout, or anything else once the request may be out
                raise
            if 200 <= response.status_code < 300:
                attempts.stored()
            return response

    attempts.observed = True
    return _Session()


def grpc_stub_wrapper(attempts: Attempts) -> Any:
    """A wrapper for the gRPC exporter's stub that reports each ``Export`` call's fate to ``attempts``."""
    import grpc

    # Statuses that say the request was not stored: no connection, or the server answered with an error.
    not_stored = {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAUTHENTICATED,
    }

    class _Refused(grpc.RpcError, NotResent):  # type: ignore[misc]
        """What the exporter sees instead of a resend: a status no release of the exporter retries."""

        def code(self) -> Any:
            return grpc.StatusCode.FAILED_PRECONDITION

        def details(self) -> str:
            return str(self)

        def trailing_metadata(self) -> Any:
            return ()

    class _Stub:
        def __init__(self, stub: Any) -> None:
            self._stub = stub

        def Export(self, *args: Any, **kwargs: Any) -> Any:
            try:
                attempts.check_resend()
            except NotResent as e:
                raise _Refused(str(e)) from None
            try:
                answer = self._stub.Export(*args, **kwargs)
            except grpc.RpcError as e:
                code = e.code() if callable(getattr(e, "code", None)) else None
                if code not in not_stored:
                    attempts.may_have_arrived()
                raise
            except BaseException:
                attempts.may_have_arrived()
                raise
            attempts.stored()
            return answer

        def __getattr__(self, name: str) -> Any:
            return getattr(self._stub, name)

    return _Stub


class ObservedExporter:
    """An OTLP exporter and the observation of its attempts: ``send()`` answers an ``Outcome``."""

    def __init__(self, exporter: MetricExporter, attempts: Attempts) -> None:
        self.exporter = exporter
        self.attempts = attempts

    def send(self, data: MetricsData, timeout_millis: float) -> Outcome:
        self.attempts.begin()
        try:
            result = self.exporter.export(data, timeout_millis=timeout_millis)
        except Exception:
            _log.debug("ryot-telemetry: the OTLP exporter raised", exc_info=True)
            result = MetricExportResult.FAILURE
        if result == MetricExportResult.SUCCESS:
            return Outcome.SUCCESS
        if self.attempts.unknown or not self.attempts.observed:
            return Outcome.UNKNOWN
        return Outcome.REFUSED

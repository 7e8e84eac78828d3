"""Error classification: exception -> error_type (and its severity), from the class, status code and message."""

from __future__ import annotations

import asyncio
import http
import socket
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from ryot_telemetry.catalogue import ERROR_TYPES, SEVERITIES, get
from ryot_telemetry.recording.errors import SEVERITY, classify
from ryot_telemetry.testing import capture
from support.fakes import ChatParams, ScriptedRouter


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (type("ZoomError", (Exception,), {})("x"), "inference_error"),
        (type("BoomError", (Exception,), {})("x"), "inference_error"),
        (type("OOMError", (Exception,), {})("x"), "oom"),
        (type("CudaOOMError", (Exception,), {})("x"), "oom"),
        (type("OutOfMemoryError", (RuntimeError,), {})("x"), "oom"),
        (type("OomKilled", (Exception,), {})("x"), "oom"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "oom"),
    ],
)
def test_oom_is_matched_as_a_word_not_a_substring(exc: BaseException, expected: str) -> None:
    """ZoomError is not an OOM; OOMError, CudaOOMError, OutOfMemoryError and 'out of memory' are."""
    assert classify(exc) == expected


def test_severity_covers_exactly_the_catalogue_error_types() -> None:
    """Every error_type the catalogue lists has a severity from the catalogue's severities, and no other."""
    assert set(SEVERITY) == set(ERROR_TYPES) == set(get("ryot.inference.errors").label_values["error_type"])
    assert set(SEVERITY.values()) <= set(SEVERITIES)


# --- upstream provider failures, with the real exception classes of the openai and httpx clients ----------------

_REQ = httpx.Request("POST", "http://upstream.invalid/v1/chat/completions")


def _status(cls: type[openai.APIStatusError], code: int, body: object = None, message: str = "") -> Any:
    """A status error as the openai client raises it: its ``_make_status_error`` passes the body's ``error`` object."""
    return cls(message or f"Error code: {code}", response=httpx.Response(code, request=_REQ), body=body)


PROVIDER_FAILURES: list[tuple[str, Callable[[], BaseException], str, str]] = [
    (
        "openai RateLimitError 429",
        lambda: _status(openai.RateLimitError, 429, {"message": "Rate limit reached", "code": "rate_limit_exceeded"}),
        "rate_limited",
        "warning",
    ),
    ("openai AuthenticationError 401", lambda: _status(openai.AuthenticationError, 401), "unauthorized", "critical"),
    (
        "openai PermissionDeniedError 403",
        lambda: _status(openai.PermissionDeniedError, 403),
        "unauthorized",
        "critical",
    ),
    ("openai InternalServerError 503", lambda: _status(openai.InternalServerError, 503), "unavailable", "critical"),
    ("openai InternalServerError 502", lambda: _status(openai.InternalServerError, 502), "unavailable", "critical"),
    ("openai APIConnectionError", lambda: openai.APIConnectionError(request=_REQ), "unavailable", "critical"),
    (
        "openai BadRequestError context_length_exceeded",
        lambda: _status(
            openai.BadRequestError,
            400,
            {"message": "This model's maximum context length is 4096 tokens.", "code": "context_length_exceeded"},
        ),
        "context_length_exceeded",
        "info",
    ),
    (
        "openai BadRequestError content_filter",
        lambda: _status(
            openai.BadRequestError,
            400,
            {"message": "The response was filtered by the content management policy.", "code": "content_filter"},
        ),
        "content_filtered",
        "info",
    ),
    ("openai ContentFilterFinishReasonError", openai.ContentFilterFinishReasonError, "content_filtered", "info"),
    (
        "httpx ConnectError refused",
        lambda: httpx.ConnectError("[Errno 111] Connection refused", request=_REQ),
        "unavailable",
        "critical",
    ),
    (
        "httpx ConnectError DNS",
        lambda: httpx.ConnectError("[Errno -2] Name or service not known", request=_REQ),
        "unavailable",
        "critical",
    ),
    (
        "httpx ReadError reset",
        lambda: httpx.ReadError("Connection reset by peer", request=_REQ),
        "unavailable",
        "critical",
    ),
    (
        "httpx RemoteProtocolError",
        lambda: httpx.RemoteProtocolError("Server disconnected without sending a response.", request=_REQ),
        "unavailable",
        "critical",
    ),
    (
        "httpx HTTPStatusError 429",
        lambda: httpx.HTTPStatusError("429", request=_REQ, response=httpx.Response(429, request=_REQ)),
        "rate_limited",
        "warning",
    ),
    (
        "httpx HTTPStatusError 401",
        lambda: httpx.HTTPStatusError("401", request=_REQ, response=httpx.Response(401, request=_REQ)),
        "unauthorized",
        "critical",
    ),
    (
        "httpx HTTPStatusError 503",
        lambda: httpx.HTTPStatusError("503", request=_REQ, response=httpx.Response(503, request=_REQ)),
        "unavailable",
        "critical",
    ),
    ("ConnectionRefusedError", lambda: ConnectionRefusedError(111, "Connection refused"), "unavailable", "critical"),
    ("ConnectionResetError", lambda: ConnectionResetError(104, "Connection reset by peer"), "unavailable", "critical"),
    ("socket.gaierror", lambda: socket.gaierror(-2, "Name or service not known"), "unavailable", "critical"),
    # the design's types keep their meaning
    ("openai APITimeoutError", lambda: openai.APITimeoutError(request=_REQ), "timeout", "warning"),
    ("httpx ConnectTimeout", lambda: httpx.ConnectTimeout("timed out", request=_REQ), "timeout", "warning"),
    ("openai InternalServerError 500", lambda: _status(openai.InternalServerError, 500), "inference_error", "warning"),
    ("openai BadRequestError plain", lambda: _status(openai.BadRequestError, 400), "invalid_prompt", "info"),
    ("openai NotFoundError", lambda: _status(openai.NotFoundError, 404), "model_not_found", "info"),
]


@pytest.mark.parametrize(
    ("make", "error_type", "severity"),
    [pytest.param(make, t, s, id=name) for name, make, t, s in PROVIDER_FAILURES],
)
async def test_provider_failure_lands_in_its_type_once_and_reaches_the_caller_unchanged(
    make: Callable[[], BaseException], error_type: str, severity: str
) -> None:
    """Through the wrapper: one request and one error, of this type and severity; the caller gets the same object."""
    exc = make()
    cap = capture()
    try:
        router = cap.instrument_router(ScriptedRouter(raises=exc))
        with pytest.raises(type(exc)) as info:
            await router.openai_chat_completion(ChatParams(model="m"))
        assert info.value is exc
        cap.collect()
        status = "timeout" if error_type == "timeout" else "error"
        model = "__unknown__" if error_type == "model_not_found" else "m"
        req = {"model": model, "endpoint": "chat_completion", "status": status, "error_type": error_type}
        err = {"model": model, "error_type": error_type, "severity": severity}
        assert cap.series("ryot.inference.requests") == [req]
        assert cap.series("ryot.inference.errors") == [err]
        assert cap.value("ryot.inference.requests", **req) == 1
        assert cap.value("ryot.inference.errors", **err) == 1
    finally:
        cap.shutdown()


class _Raises:
    """A data descriptor whose every read raises ``exc``; writes (the client's ``__init__``) are dropped."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        raise self.exc

    def __set__(self, obj: object, value: object) -> None:
        pass


class _RaisingStatus(openai.RateLimitError):
    """A RateLimitError whose ``status_code``, ``code``, ``body``, ``response`` and ``__str__`` raise BaseExceptions."""

    status_code = _Raises(KeyboardInterrupt("status_code"))  # type: ignore[assignment]
    code = _Raises(SystemExit("code"))  # type: ignore[assignment]
    body = _Raises(GeneratorExit("body"))  # type: ignore[assignment]
    response = _Raises(KeyboardInterrupt("response"))  # type: ignore[assignment]

    def __str__(self) -> str:
        raise KeyboardInterrupt("__str__")


class _Lying(Exception):
    """An exception whose attributes say anything, of any type."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__("upstream said no")
        for k, v in attrs.items():
            setattr(self, k, v)


class _RaisingGet(dict):  # type: ignore[type-arg]
    def get(self, *a: Any) -> Any:
        raise KeyboardInterrupt("get")


class _RaisingLower(str):
    def lower(self) -> str:
        raise SystemExit("lower")


class _StatusResponse:
    @property
    def status_code(self) -> int:
        raise SystemExit("response.status_code")


def _caused(cause: BaseException) -> BaseException:
    try:
        raise RuntimeError("the provider failed") from cause
    except RuntimeError as e:
        return e


def _self_caused() -> BaseException:
    e = RuntimeError("loop")
    e.__cause__ = e
    return e


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(
            _RaisingStatus("x", response=httpx.Response(429, request=_REQ), body=None),
            "rate_limited",
            id="every read raises: the class still says rate limit",
        ),
        pytest.param(_Lying(status_code="429"), "inference_error", id="status as a string"),
        pytest.param(_Lying(status_code=True), "inference_error", id="status True"),
        pytest.param(_Lying(status_code=10**100), "inference_error", id="status huge"),
        pytest.param(_Lying(status_code=-401), "inference_error", id="status negative"),
        pytest.param(_Lying(status_code=429.0), "inference_error", id="status float"),
        pytest.param(_Lying(status_code=http.HTTPStatus.TOO_MANY_REQUESTS), "rate_limited", id="status HTTPStatus"),
        pytest.param(_Lying(response=_StatusResponse()), "inference_error", id="response.status_code raises"),
        pytest.param(
            _Lying(status_code=400, body=_RaisingGet(code="context_length_exceeded")),
            "context_length_exceeded",
            id="body whose get raises: dict's own lookup",
        ),
        pytest.param(_Lying(status_code=400, body=["context_length_exceeded"]), "invalid_prompt", id="body a list"),
        pytest.param(
            _Lying(status_code=400, body={"error": {"code": "content_filter"}}),
            "content_filtered",
            id="nested error code",
        ),
        pytest.param(
            _Lying(status_code=400, code=_RaisingLower("context_length_exceeded")),
            "context_length_exceeded",
            id="code whose lower raises",
        ),
        pytest.param(
            _Lying(status_code=500, code="context_length_exceeded"),
            "inference_error",
            id="a 500 that says context length is not the client's",
        ),
        pytest.param(_Lying(code=object()), "inference_error", id="code an object"),
        pytest.param(_caused(_status(openai.RateLimitError, 429)), "rate_limited", id="router re-raise from cause"),
        pytest.param(
            _caused(_caused(_caused(_caused(_caused(ConnectionRefusedError()))))),
            "inference_error",
            id="cause deeper than followed",
        ),
        pytest.param(_self_caused(), "inference_error", id="cause cycle"),
    ],
)
def test_hostile_or_lying_attributes_never_break_classification(exc: BaseException, expected: str) -> None:
    """Attributes that raise BaseExceptions or hold the wrong type are ignored; what remains decides."""
    assert classify(exc) == expected


async def test_openai_error_whose_reads_raise_reaches_the_caller_unchanged() -> None:
    """A RateLimitError subclass whose every read raises: counted once as rate_limited; the caller gets it as is."""
    exc = _RaisingStatus("x", response=httpx.Response(429, request=_REQ), body=None)
    cap = capture()
    try:
        router = cap.instrument_router(ScriptedRouter(raises=exc))
        with pytest.raises(_RaisingStatus) as info:
            await router.openai_chat_completion(ChatParams(model="m"))
        assert info.value is exc
        cap.collect()
        assert cap.series("ryot.inference.errors") == [
            {"model": "m", "error_type": "rate_limited", "severity": "warning"}
        ]
        assert cap.value("ryot.inference.errors", model="m", error_type="rate_limited", severity="warning") == 1
    finally:
        cap.shutdown()


def test_slo_error_objective_counts_provider_failures() -> None:
    """A rate-limited request misses its SLO on the ``error`` objective, like every other failure."""
    cap = capture(slos={"*": {"latency": 10.0}})
    try:
        router = cap.instrument_router(ScriptedRouter(raises=_status(openai.RateLimitError, 429)))
        with pytest.raises(openai.RateLimitError):
            asyncio.run(router.openai_chat_completion(ChatParams(model="m")))
        cap.collect()
        assert cap.series("ryot.slo.requests") == [{"model": "m", "result": "missed", "objective": "error"}]
    finally:
        cap.shutdown()

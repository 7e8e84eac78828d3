"""Exception -> (status, error_type, severity), from the exception's class, status code, error code and message.

Besides the design's types, the failure modes of an upstream provider: ``rate_limited`` (HTTP 429, the openai
client's ``RateLimitError``), ``unauthorized`` (401/403: ``AuthenticationError``, ``PermissionDeniedError``),
``unavailable`` (502/503, ``APIConnectionError``, httpx's ``ConnectError`` and other network errors, connection
refused or reset, DNS failure), ``context_length_exceeded`` and ``content_filtered`` (a 400 whose error code or
message says so). Only public attributes are read (``status_code``, ``status``, ``code``, ``body``, ``response``,
``__cause__``), each read on its own guard: a property that raises (BaseException included) or returns something
of the wrong type is ignored, and the rest of the exception still classifies it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import socket
from typing import Any

from ..catalogue import (
    CONTENT_FILTERED,
    CONTEXT_LENGTH_EXCEEDED,
    CRITICAL,
    CUDA_ERROR,
    ERROR,
    INFERENCE_ERROR,
    INFO,
    INVALID_PROMPT,
    MODEL_NOT_FOUND,
    OOM,
    RATE_LIMITED,
    TIMEOUT,
    TOKENIZATION_ERROR,
    UNAUTHORIZED,
    UNAVAILABLE,
    WARNING,
)

SEVERITY = {
    OOM: CRITICAL,
    CUDA_ERROR: CRITICAL,
    INVALID_PROMPT: INFO,
    MODEL_NOT_FOUND: INFO,
    TIMEOUT: WARNING,
    TOKENIZATION_ERROR: WARNING,
    INFERENCE_ERROR: WARNING,
    RATE_LIMITED: WARNING,
    UNAUTHORIZED: CRITICAL,
    UNAVAILABLE: CRITICAL,
    CONTEXT_LENGTH_EXCEEDED: INFO,
    CONTENT_FILTERED: INFO,
}
"""error_type -> severity (the SPEC's table)."""

_TIMEOUT_TYPES: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)
# ConnectionError covers refused, reset, aborted and broken pipe; gaierror is a failed DNS lookup.
_UNREACHABLE_TYPES: tuple[type[BaseException], ...] = (ConnectionError, socket.gaierror)
_MAX_TEXT = 2000
_MAX_CAUSES = 4
"""How far down ``__cause__`` an unclassified exception is followed (a router that wraps the client's error)."""

# "OOM"/"Oom" as a CamelCase word (OOMError, CudaOOM, OomKilled) or OutOfMemory; not "oom" inside ZoomError.
_OOM_CLASS = re.compile(r"(?<![A-Z])OOM|Oom(?=[A-Z_]|$)|OutOfMemory")

# Lower-cased class-name parts. openai: RateLimitError, AuthenticationError, PermissionDeniedError,
# APIConnectionError (APITimeoutError is a subclass, classified as timeout first), InternalServerError (by status);
# httpx: ConnectError, ReadError, WriteError (NetworkError), RemoteProtocolError (the server hung up).
_RATE_LIMITED_NAMES = ("ratelimit", "toomanyrequests")
_UNAUTHORIZED_NAMES = ("authentication", "permissiondenied", "unauthorized", "forbidden", "unauthenticated")
_UNAVAILABLE_NAMES = (
    "apiconnectionerror",
    "connecterror",
    "networkerror",
    "remoteprotocolerror",
    "serviceunavailable",
    "badgateway",
    "gaierror",
)
_RATE_LIMITED_TEXT = ("rate limit", "rate_limit", "ratelimit", "too many requests")
_UNAVAILABLE_TEXT = (
    "connection refused",
    "connection reset",
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "no address associated with hostname",
    "service unavailable",
    "bad gateway",
    "server disconnected",
)
_CONTEXT_TEXT = (
    "context_length_exceeded",
    "context length",
    "context window",
    "context size",  # llama.cpp: "the request exceeds the available context size"
    "exceed_context_size",
)
_CONTENT_FILTER_TEXT = (
    "content_filter",
    "content filter",
    "content management policy",
    "content_policy_violation",
    "content policy",
    "responsibleaipolicyviolation",
)
_CLIENT_CODES = (None, 400, 413, 422)
"""Status codes under which an error code or message saying "context length" or "content filter" is believed."""


def _read(obj: object, attr: str) -> Any:
    """``getattr`` that never raises: a property may raise anything, BaseException included."""
    try:
        return getattr(obj, attr, None)
    except BaseException:
        return None


def _as_status(v: object) -> int | None:
    """An HTTP status from an int (IntEnum such as ``http.HTTPStatus`` included, bool not), else None."""
    if isinstance(v, int) and not isinstance(v, bool):
        n = int.__int__(v)  # the int's own value, whatever a subclass overrides
        if 100 <= n <= 599:
            return n
    return None


def _status_code(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "http_status", "code"):
        n = _as_status(_read(exc, attr))
        if n is not None:
            return n
    return _as_status(_read(_read(exc, "response"), "status_code"))


def _text(v: object) -> str:
    """A lower-cased, clipped copy of ``v`` if it is a string, else ''."""
    if isinstance(v, str):
        return str.lower(str.__getitem__(v, slice(0, _MAX_TEXT)))
    return ""


def _dict_get(d: object, key: str) -> object:
    if not isinstance(d, dict):
        return None
    try:
        return dict.get(d, key)  # dict's own lookup: a subclass's get() is not called
    except BaseException:  # a stored key whose __eq__ raises
        return None


def _error_codes(exc: BaseException) -> str:
    """The provider's error code and type, lower-cased: ``exc.code`` (openai copies it from the body), and
    ``code`` / ``type`` of the body or of its ``error`` object (OpenAI's and vLLM's error shape)."""
    parts = [_text(_read(exc, "code")), _text(_read(exc, "type"))]
    body = _read(exc, "body")
    for obj in (body, _dict_get(body, "error")):
        parts.append(_text(_dict_get(obj, "code")))
        parts.append(_text(_dict_get(obj, "type")))
    return " ".join(p for p in parts if p)


def _raw_class_names(exc: BaseException) -> str:
    return " ".join(c.__name__ for c in type(exc).__mro__[:-2])


def _class_names(exc: BaseException) -> str:
    return " ".join(c.__name__.lower() for c in type(exc).__mro__[:-2])


def _message(exc: BaseException) -> str:
    try:
        s = str(exc)
    except BaseException:  # a provider's __str__ may raise anything
        return ""
    return _text(s) if isinstance(s, str) else ""


def _says(text: str, needles: tuple[str, ...]) -> bool:
    return any(n in text for n in needles)


def _classify_one(exc: BaseException) -> str:
    names = _class_names(exc)
    msg = _message(exc)
    codes = _error_codes(exc)
    text = names + " " + msg
    if isinstance(exc, MemoryError) or _OOM_CLASS.search(_raw_class_names(exc)) or "out of memory" in msg:
        return OOM
    if "cuda" in text or "cublas" in text or "cudnn" in text or "nccl" in text:
        return CUDA_ERROR
    code = _status_code(exc)
    if isinstance(exc, _TIMEOUT_TYPES) or "timeout" in names or code in (408, 504) or "timed out" in msg:
        return TIMEOUT
    if code == 429 or _says(names, _RATE_LIMITED_NAMES) or _says(msg + " " + codes, _RATE_LIMITED_TEXT):
        return RATE_LIMITED
    if code in (401, 403) or _says(names, _UNAUTHORIZED_NAMES):
        return UNAUTHORIZED
    if (
        code in (502, 503)
        or isinstance(exc, _UNREACHABLE_TYPES)
        or _says(names, _UNAVAILABLE_NAMES)
        or (code is None and _says(msg, _UNAVAILABLE_TEXT))
    ):
        return UNAVAILABLE
    if "tokeniz" in text:
        return TOKENIZATION_ERROR
    if code in _CLIENT_CODES:
        said = msg + " " + codes
        if _says(said, _CONTEXT_TEXT) or "maximum context" in said:
            return CONTEXT_LENGTH_EXCEEDED
        if "contentfilter" in names or _says(said, _CONTENT_FILTER_TEXT):
            return CONTENT_FILTERED
    if (
        code == 404
        or "modelnotfound" in names
        or "model not found" in msg
        or ("model" in msg and ("not found" in msg or "does not exist" in msg or "not registered" in msg))
    ):
        return MODEL_NOT_FOUND
    if code in (400, 413, 422) or "validation" in names or "badrequest" in names or "invalid prompt" in msg:
        return INVALID_PROMPT
    return INFERENCE_ERROR


def classify(exc: BaseException) -> str:
    """The SPEC error_type of an exception. Never raises: a provider's exception may raise anything (BaseException
    included) from ``__str__`` or a property, and the caller must still get that exception unchanged.

    An exception that says nothing more specific than ``inference_error`` is classified by its ``__cause__``
    (a router that re-raises the client's ``RateLimitError`` as its own error), at most a few levels down.
    """
    current: object = exc
    for _ in range(_MAX_CAUSES + 1):
        if not isinstance(current, BaseException):
            break
        try:
            error_type = _classify_one(current)
        except BaseException:
            error_type = INFERENCE_ERROR
        if error_type != INFERENCE_ERROR:
            return error_type
        current = _read(current, "__cause__")
    return INFERENCE_ERROR


def status_for(error_type: str) -> str:
    return TIMEOUT if error_type == TIMEOUT else ERROR

"""Exception -> (status, error_type, severity), from the exception's class, status code and message."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re

from ..catalogue import (
    CRITICAL,
    CUDA_ERROR,
    ERROR,
    INFERENCE_ERROR,
    INFO,
    INVALID_PROMPT,
    MODEL_NOT_FOUND,
    OOM,
    TIMEOUT,
    TOKENIZATION_ERROR,
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
}
"""error_type -> severity (the SPEC's table)."""

_TIMEOUT_TYPES: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)


def _status_code(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "http_status", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599:
            return v
    resp = getattr(exc, "response", None)
    v = getattr(resp, "status_code", None)
    if isinstance(v, int) and 100 <= v <= 599:
        return v
    return None


# "OOM"/"Oom" as a CamelCase word (OOMError, CudaOOM, OomKilled) or OutOfMemory; not "oom" inside ZoomError.
_OOM_CLASS = re.compile(r"(?<![A-Z])OOM|Oom(?=[A-Z_]|$)|OutOfMemory")


def _raw_class_names(exc: BaseException) -> str:
    return " ".join(c.__name__ for c in type(exc).__mro__[:-2])


def _class_names(exc: BaseException) -> str:
    return " ".join(c.__name__.lower() for c in type(exc).__mro__[:-2])


def classify(exc: BaseException) -> str:
    """The SPEC error_type of an exception. Never raises."""
    try:
        names = _class_names(exc)
        try:
            msg = str(exc)[:2000].lower()
        except Exception:
            msg = ""
        text = names + " " + msg
        if isinstance(exc, MemoryError) or _OOM_CLASS.search(_raw_class_names(exc)) or "out of memory" in msg:
            return OOM
        if "cuda" in text or "cublas" in text or "cudnn" in text or "nccl" in text:
            return CUDA_ERROR
        code = _status_code(exc)
        if isinstance(exc, _TIMEOUT_TYPES) or "timeout" in names or code in (408, 504) or "timed out" in msg:
            return TIMEOUT
        if "tokeniz" in text:
            return TOKENIZATION_ERROR
        if (
            code == 404
            or "modelnotfound" in names
            or "model not found" in msg
            or ("model" in msg and ("not found" in msg or "does not exist" in msg or "not registered" in msg))
        ):
            return MODEL_NOT_FOUND
        if (
            code in (400, 413, 422)
            or "validation" in names
            or "badrequest" in names
            or "context length" in msg
            or "invalid prompt" in msg
            or "prompt is too long" in msg
        ):
            return INVALID_PROMPT
        return INFERENCE_ERROR
    except Exception:
        return INFERENCE_ERROR


def status_for(error_type: str) -> str:
    return TIMEOUT if error_type == TIMEOUT else ERROR

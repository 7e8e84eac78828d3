"""What a finished response says about itself besides usage counts: why each choice ended, its reasoning tokens and
the engine's own timings (SPEC "Outcomes, token detail and where the time goes").

The wrapper only keeps a reference to the response (for a stream: its final chunk and the one before it, in a
``StreamEnd``); the recorder reads them here at drain time, once per request, so neither the request path nor the
per-chunk loop pays for it. Everything read is provider input: a value of the wrong type, out of range or not finite
is ignored, and an unknown finish reason is ``other``, so label values stay within the catalogue's vocabulary.

Engine timings, as ``(queue, prefill, time per output token)`` in seconds:

- llama.cpp's ``timings`` (every response, and the final chunk of a stream): ``prompt_ms`` is the prefill,
  ``predicted_per_token_ms`` the decode time per token (0 until two tokens were generated, so only taken from
  ``predicted_n >= 2``). llama.cpp reports no queue time: its queueing counts as outside the engine.
- vLLM's per-request ``metrics`` (``--enable-per-request-metrics``; the final usage chunk of a stream):
  ``queue_time_ms``, ``time_to_first_token_ms`` (from scheduling to the first token: the prefill) and
  ``mean_itl_ms``. Each may be null; without a prefill nothing is taken.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from ..catalogue import CONTENT_FILTER, LENGTH, OTHER_FINISH, STOP, TOOL_CALLS

__all__ = ["Outcome", "StreamEnd", "finish_label", "lean_get", "note_finish", "outcome"]

_KNOWN = {STOP: STOP, LENGTH: LENGTH, TOOL_CALLS: TOOL_CALLS, CONTENT_FILTER: CONTENT_FILTER}
MAX_CHOICES = 1024
"""Choices read from one response or chunk; a provider sending more has the rest ignored."""
MAX_MS = 86_400_000.0
"""A reported duration above a day (in ms) is not a timing: ignored."""
MAX_COUNT = 2**53  # as the recorder's: a larger usage count is a provider bug
_NOT_PYDANTIC = object()

Timings = tuple[float, float, float | None]
Outcome = tuple[tuple[str, ...] | None, Timings | None, int | None, int]
"""(finish reasons, engine timings, reasoning tokens, content chunks delivered) of one request."""


class StreamEnd:
    """What the end of a stream leaves for the drain: the final chunk (the usage chunk, else the last one), the
    chunk delivered before it, the content chunks delivered, and the finish reasons of a several-choice stream
    (collected per chunk, as its choices end in different chunks)."""

    __slots__ = ("before", "chunks", "final", "finished")

    def __init__(self, final: Any, before: Any, chunks: int, finished: dict[int, str] | None = None) -> None:
        self.final = final
        self.before = before
        self.chunks = chunks
        self.finished = finished


def lean_get(obj: Any, name: str) -> Any:
    """``obj[name]`` or ``obj.name``, None when absent, without a failed attribute lookup on a pydantic model.

    A pydantic model answers a missing attribute from ``__getattr__``, which builds an error message: several µs.
    So on a model a declared field is read as an attribute and anything else (llama.cpp's ``timings`` on an OpenAI
    SDK object, say) from its extras.
    """
    if isinstance(obj, dict):
        return obj.get(name)
    extra = getattr(obj, "__pydantic_extra__", _NOT_PYDANTIC)
    if extra is _NOT_PYDANTIC:
        return getattr(obj, name, None)
    if name in type(obj).model_fields:
        return getattr(obj, name)
    return extra.get(name) if isinstance(extra, dict) else None


def finish_label(reason: object) -> str:
    """``stop``, ``length``, ``tool_calls`` or ``content_filter`` as sent; anything else ``other``."""
    return _KNOWN.get(reason, OTHER_FINISH) if isinstance(reason, str) else OTHER_FINISH


def _choices(obj: Any) -> Any:
    choices = lean_get(obj, "choices")
    return islice(choices, MAX_CHOICES) if isinstance(choices, (list, tuple)) else ()


def _finish(choices: Any) -> tuple[str, ...] | None:
    """The finish reasons of the choices that finished; None when none did."""
    if not isinstance(choices, (list, tuple)) or not choices:
        return None
    out = tuple(
        finish_label(r) for r in (lean_get(c, "finish_reason") for c in islice(choices, MAX_CHOICES)) if r is not None
    )
    return out or None


def note_finish(obj: Any, finished: dict[int, str]) -> None:
    """Add a chunk's finished choices to ``finished`` (choice index -> reason)."""
    for position, choice in enumerate(_choices(obj)):
        reason = lean_get(choice, "finish_reason")
        if reason is not None and len(finished) < MAX_CHOICES:
            index = lean_get(choice, "index")
            finished[index if type(index) is int else position] = finish_label(reason)


def _seconds(ms: object) -> float | None:
    """A reported duration in ms as seconds; None unless a finite number in [0, a day]."""
    if (type(ms) is float or type(ms) is int) and 0.0 <= ms <= MAX_MS:  # NaN fails the comparison
        return ms / 1000.0
    return None


def _engine(timings: Any, metrics: Any) -> Timings | None:
    """``(queue, prefill, time per output token)`` in seconds from llama.cpp's ``timings`` or vLLM's ``metrics``."""
    if timings is not None:  # llama.cpp
        prefill = _seconds(lean_get(timings, "prompt_ms"))
        if prefill is None:
            return None
        generated = lean_get(timings, "predicted_n")
        tpot = None
        if type(generated) is int and generated >= 2:
            tpot = _seconds(lean_get(timings, "predicted_per_token_ms"))
        return 0.0, prefill, tpot
    if metrics is None:
        return None
    prefill = _seconds(lean_get(metrics, "time_to_first_token_ms"))  # vLLM
    if prefill is None:
        return None
    queue = _seconds(lean_get(metrics, "queue_time_ms"))
    return (queue or 0.0), prefill, _seconds(lean_get(metrics, "mean_itl_ms"))


def _reasoning(usage: Any) -> int | None:
    """``usage.completion_tokens_details.reasoning_tokens``, if a plausible count."""
    details = lean_get(usage, "completion_tokens_details") if usage is not None else None
    n = lean_get(details, "reasoning_tokens") if details is not None else None
    return n if type(n) is int and 0 <= n <= MAX_COUNT else None


def _parts(obj: Any) -> tuple[Any, Any, Any, Any]:
    """(choices, usage, timings, metrics) of a response or chunk, each looked up once."""
    if isinstance(obj, dict):
        return obj.get("choices"), obj.get("usage"), obj.get("timings"), obj.get("metrics")
    extra = getattr(obj, "__pydantic_extra__", _NOT_PYDANTIC)
    if extra is _NOT_PYDANTIC:
        timings = getattr(obj, "timings", None)
        metrics = getattr(obj, "metrics", None) if timings is None else None
        return getattr(obj, "choices", None), getattr(obj, "usage", None), timings, metrics
    if isinstance(extra, dict) and extra:
        timings, metrics = extra.get("timings"), extra.get("metrics")
    else:
        timings = lean_get(obj, "timings")
        metrics = lean_get(obj, "metrics") if timings is None else None
    return lean_get(obj, "choices"), lean_get(obj, "usage"), timings, metrics


def outcome(final: Any) -> Outcome:
    """The outcome of a finished request from what the wrapper kept: a response, or a ``StreamEnd``."""
    if type(final) is not StreamEnd:
        choices, usage, timings, metrics = _parts(final)
        return _finish(choices), _engine(timings, metrics), _reasoning(usage), 0
    last, before = final.final, final.before
    if last is None:
        return None, None, None, final.chunks
    choices, usage, timings, metrics = _parts(last)
    reasons, engine = _finish(choices), _engine(timings, metrics)
    if before is not None and (reasons is None or engine is None):
        # a usage-only chunk follows the one that carries the finish reason
        b_choices, _, b_timings, b_metrics = _parts(before)
        reasons = reasons if reasons is not None else _finish(b_choices)
        engine = engine if engine is not None else _engine(b_timings, b_metrics)
    if final.finished:
        reasons = tuple(final.finished.values())
    return reasons, engine, _reasoning(usage), final.chunks

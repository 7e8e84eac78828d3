"""What a finished response says about itself besides usage: why each choice ended, and the engine's own timings.

Read once per non-streaming response and once per stream from its final chunks, never per chunk (SPEC "Outcomes,
token detail and where the time goes"). Everything here is provider input: a value of the wrong type, out of range
or not finite is ignored, and an unknown finish reason is ``other``, so label values stay within the catalogue's
vocabulary.

Engine timings, as ``(queue, prefill, time per output token)`` in seconds:

- llama.cpp's ``timings`` (every response, and the final chunk of a stream): ``prompt_ms`` is the prefill,
  ``predicted_per_token_ms`` the decode time per token (reported as 0 until two tokens were generated, so only
  taken from ``predicted_n >= 2``). llama.cpp reports no queue time: its queueing counts as outside the engine.
- vLLM's per-request ``metrics`` (``--enable-per-request-metrics``; the final usage chunk of a stream):
  ``queue_time_ms``, ``time_to_first_token_ms`` (from scheduling to the first token: the prefill) and
  ``mean_itl_ms``. Each may be null; without a prefill nothing is taken.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from ..catalogue import CONTENT_FILTER, LENGTH, OTHER_FINISH, STOP, TOOL_CALLS

__all__ = ["engine_timings", "finish_reasons", "lean_get"]

_KNOWN = {STOP: STOP, LENGTH: LENGTH, TOOL_CALLS: TOOL_CALLS, CONTENT_FILTER: CONTENT_FILTER}
MAX_CHOICES = 1024
"""Choices read from one response or chunk; a provider sending more has its rest ignored."""
MAX_MS = 86_400_000.0
"""A reported duration above a day (in ms) is not a timing: ignored."""
_NOT_PYDANTIC = object()


def lean_get(obj: Any, name: str) -> Any:
    """``obj[name]`` or ``obj.name``, None when absent, without a failed attribute lookup on a pydantic model.

    A pydantic model answers a missing attribute from ``__getattr__``, which builds an error message: several µs,
    more than the rest of a request's telemetry. So on a model a declared field is read as an attribute and anything
    else (llama.cpp's ``timings`` on an OpenAI SDK object, say) from its extras.
    """
    if isinstance(obj, dict):
        return obj.get(name)
    extra = getattr(obj, "__pydantic_extra__", _NOT_PYDANTIC)
    if extra is _NOT_PYDANTIC:
        return getattr(obj, name, None)
    if name in type(obj).model_fields:
        return getattr(obj, name)
    return extra.get(name) if isinstance(extra, dict) else None


def finish_reasons(obj: Any) -> tuple[str, ...] | None:
    """The normalised finish reasons of ``obj``'s choices that finished; None when none did."""
    choices = lean_get(obj, "choices")
    if not choices or not isinstance(choices, (list, tuple)):
        return None
    out = []
    for choice in islice(choices, MAX_CHOICES):
        reason = lean_get(choice, "finish_reason")
        if reason is not None:
            out.append(finish_label(reason))
    return tuple(out) if out else None


def finish_label(reason: object) -> str:
    """``stop``, ``length``, ``tool_calls`` or ``content_filter`` as sent; anything else ``other``."""
    return _KNOWN.get(reason, OTHER_FINISH) if isinstance(reason, str) else OTHER_FINISH


def note_finish(obj: Any, finished: dict[int, str]) -> None:
    """Add the finish reasons of a chunk's choices to ``finished`` (choice index -> reason): for streams with
    several choices, whose choices end in different chunks."""
    choices = lean_get(obj, "choices")
    if not choices or not isinstance(choices, (list, tuple)):
        return
    for position, choice in enumerate(islice(choices, MAX_CHOICES)):
        reason = lean_get(choice, "finish_reason")
        if reason is not None and len(finished) < MAX_CHOICES:
            index = lean_get(choice, "index")
            finished[index if type(index) is int else position] = finish_label(reason)


def _seconds(ms: object) -> float | None:
    """A reported duration in ms as seconds; None unless a finite number in [0, a day]."""
    if (type(ms) is float or type(ms) is int) and 0.0 <= ms <= MAX_MS:  # NaN fails the comparison
        return ms / 1000.0
    return None


def engine_timings(obj: Any) -> tuple[float, float, float | None] | None:
    """``(queue, prefill, time per output token)`` in seconds from a response or chunk; None when it has none."""
    timings = lean_get(obj, "timings")
    if timings is not None:  # llama.cpp
        prefill = _seconds(lean_get(timings, "prompt_ms"))
        if prefill is None:
            return None
        generated = lean_get(timings, "predicted_n")
        tpot = None
        if type(generated) is int and generated >= 2:
            tpot = _seconds(lean_get(timings, "predicted_per_token_ms"))
        return 0.0, prefill, tpot
    metrics = lean_get(obj, "metrics")
    if metrics is None:
        return None
    prefill = _seconds(lean_get(metrics, "time_to_first_token_ms"))  # vLLM
    if prefill is None:
        return None
    queue = _seconds(lean_get(metrics, "queue_time_ms"))
    return (queue or 0.0), prefill, _seconds(lean_get(metrics, "mean_itl_ms"))

"""Reading provider objects: the one room that looks inside what a router returns or is asked.

Usage counts, content, finish reasons, token detail, the engine's own timings and request shapes are all read here,
by one getter (``get``) and one count validator (``count``, bounded by ``MAX_COUNT``), for the wrapper and the
recorder alike. Everything read is provider input: a value of the wrong type, out of range or not finite is
ignored (a usage count is noted as implausible, for the recorder's once-per-model warning), an unknown finish
reason is ``other``, so label values stay within the catalogue's vocabulary. Reads may raise anything (a provider's
property, ``__index__``, ``__class__``): the callers guard them.

Outcomes (SPEC "Outcomes, token detail and where the time goes") are read when the call ends, into plain values
(``Outcome``), so a queued request never holds the provider's response, chunks or text (SPEC "Promises under
faults"). Engine timings, as ``(queue, prefill, time per output token)`` in seconds, None where not reported:

- llama.cpp's ``timings`` (every response, and the final chunk of a stream): ``prompt_ms`` is the prefill,
  ``predicted_per_token_ms`` the decode time per token (0 until two tokens were generated, so only taken from
  ``predicted_n >= 2``). llama.cpp reports no queue time: its queueing counts as outside the engine.
- vLLM's per-request ``metrics`` (``--enable-per-request-metrics``; the final usage chunk of a stream):
  ``queue_time_ms``, ``time_to_first_token_ms`` (from scheduling to the first token: the prefill) and
  ``mean_itl_ms``. Each may be null; without a prefill nothing is taken.
"""

from __future__ import annotations

import operator
from itertools import islice
from typing import Any

from ..catalogue import BATCH, CONTENT_FILTER, LENGTH, OTHER_FINISH, STANDARD, STOP, STREAMING, TOOL_CALLS
from ..catalogue import COMPLETION as COMPLETION

__all__ = [
    "MAX_CHOICES",
    "MAX_COUNT",
    "MAX_MS",
    "Outcome",
    "StreamEnd",
    "Timings",
    "Usage",
    "count",
    "describe_count",
    "finish_label",
    "get",
    "has_content",
    "note_finish",
    "outcome",
    "prompt_chars",
    "read_usage",
    "request_shape",
]

MAX_COUNT = 2**53
"""The largest usage count taken from a provider (SPEC). Larger ones are bugs (an unsigned underflow reports
2**64 - 1) and would make a cumulative int64 counter unencodable for OTLP, or a float sum lose precision."""
MAX_CHOICES = 1024
"""Choices read from one response or chunk; a provider sending more has the rest ignored."""
MAX_MS = 86_400_000.0
"""A reported duration above a day (in ms) is not a timing: ignored."""

_KNOWN = {STOP: STOP, LENGTH: LENGTH, TOOL_CALLS: TOOL_CALLS, CONTENT_FILTER: CONTENT_FILTER}
_IMPLAUSIBLE = object()

Timings = tuple[float | None, float, float | None]
Outcome = tuple[tuple[str, ...] | None, Timings | None]
"""(finish reasons, engine timings) of one finished response or stream."""
Usage = tuple[int | None, int | None, int | None, int | None, str | None]
"""(prompt, completion, cached, reasoning, implausible) read from a usage object: the four counts (None when
absent or implausible), and a short description of the implausible ones (None when all were plausible)."""


def get(obj: Any, name: str) -> Any:
    """``obj[name]`` or ``obj.name``, None when absent: the one getter of provider objects.

    A pydantic model answers a missing attribute from ``__getattr__``, which builds an error message (several µs),
    so on a model a declared field is read as an attribute, an extra (llama.cpp's ``timings`` on an OpenAI SDK
    object, say) from its extras, and anything else the class itself defines (a property) as an attribute. Whether
    a class is a pydantic model, and its fields, are learnt once per class (``_fields``).
    """
    if isinstance(obj, dict):
        return obj.get(name)
    cls = type(obj)
    fields = _FIELDS.get(cls, _UNKNOWN)
    if fields is _UNKNOWN:
        fields = _fields(cls)
    if fields is None:
        return getattr(obj, name, None)
    if name in fields:
        return getattr(obj, name)
    extra = getattr(obj, "__pydantic_extra__", None)
    if isinstance(extra, dict) and name in extra:
        return extra[name]
    return getattr(obj, name, None) if hasattr(cls, name) else None


_FIELDS: dict[type, Any] = {}
"""Class -> its pydantic fields (a frozenset), or None for a class that is no pydantic model: learnt once per
class (reading ``model_fields`` costs a µs on recent pydantic). Cleared when it holds ``_MAX_CLASSES`` classes."""
_MAX_CLASSES = 4096
_UNKNOWN = object()


def _fields(cls: type) -> frozenset[str] | None:
    """The declared fields of a pydantic (v2) model class (it declares ``__pydantic_extra__``); None otherwise."""
    fields = getattr(cls, "model_fields", None) if hasattr(cls, "__pydantic_extra__") else None
    answer = frozenset(fields) if isinstance(fields, dict) else None
    if len(_FIELDS) >= _MAX_CLASSES:  # classes made per response: keep the table bounded
        _FIELDS.clear()
    _FIELDS[cls] = answer
    return answer


def count(v: Any) -> Any:
    """A usage count as an int in [0, ``MAX_COUNT``]; None when absent; ``_IMPLAUSIBLE`` otherwise.

    An integral float (``3.0``, as some JSON encoders write counts) is taken; a bool, a fractional or non-finite
    float, a string, a negative count or one above 2**53 (an unsigned underflow reports 2**64 - 1) is not.
    """
    if type(v) is int and 0 <= v <= MAX_COUNT:
        return v  # the common case, first
    if v is None:
        return None
    n: Any = v
    if type(v) is not int:
        if isinstance(v, bool):
            n = None
        elif isinstance(v, float):
            n = int(v) if v.is_integer() else None  # is_integer() is False for inf and nan too
        else:
            try:
                n = operator.index(v)  # int subclasses, numpy integers
            except BaseException:  # a provider's __index__ may raise anything
                n = None
    if n is not None and 0 <= n <= MAX_COUNT:
        return int(n)
    return _IMPLAUSIBLE


def describe_count(v: Any) -> str:
    """A short, bounded description of an implausible usage count, for the warning (never the object itself)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v) if v.bit_length() <= 128 else f"<an integer of {v.bit_length()} bits>"
    if isinstance(v, (float, bool)):
        return repr(v)
    if isinstance(v, str):
        return repr(str.__getitem__(v, slice(0, 20))) + ("..." if len(v) > 20 else "")
    return f"<a {type(v).__name__}>"


def read_usage(usage: Any) -> Usage:
    """Prompt, completion, cached and reasoning token counts of an OpenAI-style ``usage`` object or dict."""
    notes: list[str] = []
    if not isinstance(usage, dict) and _FIELDS.get(type(usage), _UNKNOWN) is None:
        # a plain object (dataclass, SimpleNamespace): its attributes read directly, as ``get`` would read them
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        prompt_details = getattr(usage, "prompt_tokens_details", None)
        completion_details = getattr(usage, "completion_tokens_details", None)
    else:
        prompt = get(usage, "prompt_tokens")
        completion = get(usage, "completion_tokens")
        prompt_details = get(usage, "prompt_tokens_details")
        completion_details = get(usage, "completion_tokens_details")
    if not (type(prompt) is int and 0 <= prompt <= MAX_COUNT):  # the common case costs one test
        prompt = _take(prompt, "prompt_tokens", notes)
    if not (type(completion) is int and 0 <= completion <= MAX_COUNT):
        completion = _take(completion, "completion_tokens", notes)
    cached = reasoning = None
    if prompt_details is not None:
        cached = _take(get(prompt_details, "cached_tokens"), "cached_tokens", notes)
    if completion_details is not None:
        reasoning = _take(get(completion_details, "reasoning_tokens"), "reasoning_tokens", notes)
    return prompt, completion, cached, reasoning, ", ".join(notes) if notes else None


def _take(v: Any, name: str, notes: list[str]) -> int | None:
    """``count(v)``, noting an implausible one in ``notes``."""
    n = count(v)
    if n is _IMPLAUSIBLE:
        notes.append(f"usage.{name}={describe_count(v)}")
        return None
    return n  # type: ignore[no-any-return]


def has_content(chunk: Any) -> bool:
    """Does this chunk carry generated content: text, a tool call or reasoning?"""
    choices = get(chunk, "choices")
    if not choices:
        return False
    for choice in choices:
        if get(choice, "text"):
            return True
        delta = get(choice, "delta")
        if delta is not None and (
            get(delta, "content")
            or get(delta, "tool_calls")
            or get(delta, "reasoning_content")
            or get(delta, "reasoning")
            or get(delta, "function_call")
        ):
            return True
    return False


def prompt_chars(endpoint: str, params: Any) -> int:
    """Characters of request text; only used to estimate prompt_size when the provider sent no usage."""
    if endpoint == COMPLETION:
        prompt = get(params, "prompt")
        if isinstance(prompt, str):
            return len(prompt)
        if isinstance(prompt, list):
            if prompt and isinstance(prompt[0], int):
                return 4 * len(prompt)  # token ids: ~4 characters each
            return sum(len(p) if isinstance(p, str) else 4 * len(p) for p in prompt if isinstance(p, (str, list)))
        return 0
    total = 0
    for msg in get(params, "messages") or ():
        content = get(msg, "content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                text = get(part, "text")
                if isinstance(text, str):
                    total += len(text)
    return total


def request_shape(endpoint: str, params: Any) -> tuple[Any, bool, str, int]:
    """(model, stream, generation_mode, batch_size) of a request, read before the router can change it."""
    model = get(params, "model")
    stream = bool(get(params, "stream"))
    n = get(params, "n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    prompts = 1
    is_batch = False
    if endpoint == COMPLETION:
        prompt = get(params, "prompt")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            prompts = len(prompt)
            is_batch = True
    mode = STREAMING if stream else (BATCH if is_batch else STANDARD)
    return model, stream, mode, prompts * n


def finish_label(reason: object) -> str:
    """``stop``, ``length``, ``tool_calls`` or ``content_filter`` as sent; anything else ``other``."""
    return _KNOWN.get(reason, OTHER_FINISH) if isinstance(reason, str) else OTHER_FINISH


def _choices(obj: Any) -> Any:
    choices = get(obj, "choices")
    return islice(choices, MAX_CHOICES) if isinstance(choices, (list, tuple)) else ()


def _finish(choices: Any) -> tuple[str, ...] | None:
    """The finish reasons of the choices that finished; None when none did."""
    if not isinstance(choices, (list, tuple)) or not choices:
        return None
    if len(choices) == 1:  # the common case: no generator, no tuple of its own
        reason = get(choices[0], "finish_reason")
        return None if reason is None else _SINGLE[finish_label(reason)]
    out = tuple(
        finish_label(r) for r in (get(c, "finish_reason") for c in islice(choices, MAX_CHOICES)) if r is not None
    )
    if len(out) == 1:
        return _SINGLE[out[0]]  # shared: a queued request then holds no tuple of its own
    return out or None


_SINGLE = {label: (label,) for label in (STOP, LENGTH, TOOL_CALLS, CONTENT_FILTER, OTHER_FINISH)}
"""The one-choice finish reasons, one shared tuple per label (``finish_label`` gives no other)."""


def note_finish(obj: Any, finished: dict[int, str]) -> None:
    """Add a chunk's finished choices to ``finished`` (choice index -> reason)."""
    for position, choice in enumerate(_choices(obj)):
        reason = get(choice, "finish_reason")
        if reason is not None and len(finished) < MAX_CHOICES:
            index = get(choice, "index")
            finished[index if type(index) is int else position] = finish_label(reason)


def _seconds(ms: object) -> float | None:
    """A reported duration in ms as seconds; None unless a finite number in [0, a day]."""
    if (type(ms) is float or type(ms) is int) and 0.0 <= ms <= MAX_MS:  # NaN fails the comparison
        return ms / 1000.0
    return None


def _engine(timings: Any, metrics: Any) -> Timings | None:
    """``(queue, prefill, time per output token)`` in seconds from llama.cpp's ``timings`` or vLLM's ``metrics``."""
    if timings is not None:  # llama.cpp
        prefill = _seconds(get(timings, "prompt_ms"))
        if prefill is None:
            return None
        generated = get(timings, "predicted_n")
        tpot = None
        if type(generated) is int and generated >= 2:
            tpot = _seconds(get(timings, "predicted_per_token_ms"))
        return None, prefill, tpot
    if metrics is None:
        return None
    prefill = _seconds(get(metrics, "time_to_first_token_ms"))  # vLLM
    if prefill is None:
        return None
    queue = _seconds(get(metrics, "queue_time_ms"))
    return queue, prefill, _seconds(get(metrics, "mean_itl_ms"))


def _parts(obj: Any) -> tuple[Any, Any, Any]:
    """(choices, timings, metrics) of a response or chunk, each looked up once."""
    if isinstance(obj, dict):
        return obj.get("choices"), obj.get("timings"), obj.get("metrics")
    cls = type(obj)
    fields = _FIELDS.get(cls, _UNKNOWN)
    if fields is _UNKNOWN:
        fields = _fields(cls)
    if fields is None:
        timings = getattr(obj, "timings", None)
        metrics = getattr(obj, "metrics", None) if timings is None else None
        return getattr(obj, "choices", None), timings, metrics
    extra = getattr(obj, "__pydantic_extra__", None)
    if isinstance(extra, dict) and extra:
        timings, metrics = extra.get("timings"), extra.get("metrics")
    else:
        timings = get(obj, "timings")
        metrics = get(obj, "metrics") if timings is None else None
    return get(obj, "choices"), timings, metrics


class StreamEnd:
    """The end of a stream as the recorder API takes it (``req.final = StreamEnd(...)``): the final chunk (the
    usage chunk, else the last one), the chunk delivered before it, the content chunks delivered, and the finish
    reasons of a several-choice stream (collected per chunk, as its choices end in different chunks)."""

    __slots__ = ("before", "chunks", "final", "finished")

    def __init__(self, final: Any, before: Any, chunks: int, finished: dict[int, str] | None = None) -> None:
        self.final = final
        self.before = before
        self.chunks = chunks
        self.finished = finished


def stream_outcome(last: Any, before: Any, finished: dict[int, str] | None) -> Outcome:
    """The outcome of a stream from its final chunk (the usage chunk, else the last one) and the one before it;
    ``finished``: the finish reasons a several-choice stream collected per chunk."""
    reasons = engine = None
    if last is not None:
        choices, timings, metrics = _parts(last)
        reasons, engine = _finish(choices), _engine(timings, metrics)
        if before is not None and (reasons is None or engine is None):
            # a usage-only chunk follows the one that carries the finish reason
            b_choices, b_timings, b_metrics = _parts(before)
            reasons = reasons if reasons is not None else _finish(b_choices)
            engine = engine if engine is not None else _engine(b_timings, b_metrics)
    if finished:
        reasons = tuple(finished.values())
    return reasons, engine


def outcome(final: Any) -> Outcome:
    """The outcome of a finished response (or of a ``StreamEnd``)."""
    if type(final) is StreamEnd:
        return stream_outcome(final.final, final.before, final.finished)
    choices, timings, metrics = _parts(final)
    return _finish(choices), _engine(timings, metrics)

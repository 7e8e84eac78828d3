"""``instrument_router``: record the calls made on one router instance (the instrumentor wraps classes instead)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wrapt

from ..export.assembly import default_recorder
from ..recording.recorder import Recorder
from .wrapper import COROUTINE, METHODS, REASONING_METHOD, is_traced, method_shape, traced, traced_call

__all__ = ["instrument_router", "uninstrument_router"]


class _TracedMethod(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A router instance's method as ``instrument_router`` leaves it: a wrapt proxy, so the method keeps its name,
    signature and shape (``inspect.iscoroutinefunction`` / ``isasyncgenfunction`` answer as for the original)."""

    __ryot_telemetry_wrapped__ = True  # _MARK, found on the class: the proxy forwards other attributes

    def __copy__(self) -> _TracedMethod:
        return self  # as for a plain function: a copied router shares it

    def __deepcopy__(self, memo: dict[int, Any]) -> _TracedMethod:
        return self


def _make_method(rec: Recorder, endpoint: str, original: Callable[..., Any], reasoning: bool) -> _TracedMethod:
    shape = method_shape(original)
    if shape is COROUTINE:  # the common case calls traced_call directly: one call less per request

        def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return traced_call(rec, endpoint, wrapped, args, kwargs, reasoning=reasoning)

    else:

        def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return traced(rec, endpoint, wrapped, args, kwargs, shape=shape, reasoning=reasoning)

    return _TracedMethod(original, wrapper)


def instrument_router(router: Any, recorder: Recorder | None = None) -> Any:
    """Record every ``openai_chat_completion`` / ``openai_completion`` call made on this router instance
    (and ogx's ``openai_chat_completions_with_reasoning`` where the router has it).

    Wraps the instance (not its class); returns the router. Calling it twice is a no-op.
    ``uninstrument_router`` undoes it.
    """
    if recorder is None:
        recorder = default_recorder()
    found = False
    for name, endpoint in METHODS.items():
        original = getattr(router, name, None)
        if original is None or not callable(original):
            continue  # not a method: left untouched
        found = found or name != REASONING_METHOD
        if is_traced(original):
            continue
        setattr(router, name, _make_method(recorder, endpoint, original, name == REASONING_METHOD))
    if not found:
        raise TypeError(
            f"{type(router).__name__} has neither openai_chat_completion nor openai_completion; "
            "is it a llama-stack-style router?"
        )
    return router


def uninstrument_router(router: Any) -> Any:
    """Remove what ``instrument_router`` added to this instance."""
    for name in METHODS:
        method = router.__dict__.get(name) if hasattr(router, "__dict__") else None
        if method is not None and is_traced(method):
            delattr(router, name)
    return router

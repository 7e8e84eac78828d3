"""``RyotInstrumentor``: the ``opentelemetry_instrumentor`` entry point behind ``opentelemetry-instrument``.

from ryot_telemetry.router.instrumentor import RyotInstrumentor
RyotInstrumentor().instrument()                               # what opentelemetry-instrument does
RyotInstrumentor().instrument(meter_provider=provider)        # record into your own MeterProvider
RyotInstrumentor().instrument(router_classes=[MyRouter])      # any llama-stack-style router class

It wraps ``InferenceRouter.openai_chat_completion`` / ``openai_completion`` of whichever of ogx
(``ogx.core.routers.inference``) and llama-stack (``llama_stack.core.routers.inference``, older
``llama_stack.distribution.routers.inference``) is importable, plus the classes passed as ``router_classes=`` or
named in ``RYOT_TELEMETRY_ROUTER_CLASSES``. Wrapping is on the class, so every router instance records.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from .. import _state, env
from ..export.assembly import build_recorder, default_recorder, ryot_meter
from ..recording.recorder import Recorder
from ..settings import ConfigurationError, Settings
from .wrapper import COROUTINE, METHODS, REASONING_METHOD, is_traced, method_shape, traced, traced_call

__all__ = ["ROUTER_MODULES", "RyotInstrumentor", "router_classes"]

_log = logging.getLogger("ryot_telemetry")

ROUTER_MODULES = (
    "ogx.core.routers.inference",
    "llama_stack.core.routers.inference",
    "llama_stack.distribution.routers.inference",
)
"""Modules searched for an ``InferenceRouter`` class, newest name first."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _named_classes(names: Sequence[str]) -> list[type]:
    """Classes from ``module:Class`` names (``Settings.router_classes``); a bad name fails with one clear message."""
    out: list[type] = []
    for item in names:
        module, _, qualname = item.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise ConfigurationError(f"{env.RYOT_TELEMETRY_ROUTER_CLASSES}: cannot load {item!r}: {e}") from None
        if not isinstance(obj, type):
            raise ConfigurationError(f"{env.RYOT_TELEMETRY_ROUTER_CLASSES}: {item!r} is not a class")
        out.append(obj)
    return out


def router_classes(extra: Iterable[type] | None = None, settings: Settings | None = None) -> list[type]:
    """The router classes to wrap: installed ogx / llama-stack ``InferenceRouter``s, ``extra``, the env var's."""
    found: list[type] = []
    for module in ROUTER_MODULES:
        if not _installed(module):
            continue
        cls = getattr(importlib.import_module(module), "InferenceRouter", None)
        if isinstance(cls, type):
            found.append(cls)
        else:
            _log.warning("ryot-telemetry: %s has no InferenceRouter class; not instrumented", module)
    found.extend(extra or ())
    configured = settings if settings is not None else _configured_settings()
    found.extend(_named_classes(configured.router_classes))
    unique: list[type] = []
    for cls in found:
        if cls not in unique:
            unique.append(cls)
    return unique


def _configured_settings() -> Settings:
    """The settings ``configure()`` ran with, else fresh ones from the environment."""
    tel = _state.current()
    return tel.settings if tel is not None and tel.settings is not None else Settings.load()


def _method_wrapper(
    recorder: Recorder, name: str, endpoint: str, nested: bool, shape: str, providers: Any = None
) -> Any:
    """``nested``: a base or subclass of this class is wrapped too, so one call can pass through two wrappers;
    only then is the per-call guard (a context variable, a few hundred ns) paid. ``shape``: the method's
    (``method_shape``), which the wrapped method keeps. ``providers``: the recorder's ``ModelProviders``, told
    which router instance the call went through (one identity check once it knows it)."""
    reasoning = name == REASONING_METHOD

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if providers is not None:
            providers.seen(instance)
        own = getattr(instance, "__dict__", None)
        if own is not None and is_traced(own.get(name)):
            return wrapped(*args, **kwargs)  # instrument_router() on this instance records it already: count once
        key = (id(instance), name) if nested else None
        if shape is COROUTINE:
            return traced_call(recorder, endpoint, wrapped, args, kwargs, reasoning=reasoning, key=key)
        return traced(recorder, endpoint, wrapped, args, kwargs, shape=shape, reasoning=reasoning, key=key)

    return wrapper


class RyotInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Records every ``openai_chat_completion`` / ``openai_completion`` call of the router classes it wraps.

    ``instrument()`` keyword arguments: ``meter_provider`` (default: the MeterProvider of ``configure()`` when it
    was called, else the global one), ``router_classes`` (extra classes to wrap), ``recorder`` (a ready Recorder,
    wins over ``meter_provider``).
    """

    _wrapped: list[tuple[type, str, bool]] = []

    def instrumentation_dependencies(self) -> Collection[str]:
        # Nothing is required: ogx or llama-stack (either suffices), or a class named by the user.
        # Listing both packages would make the SDK skip us unless *both* were installed.
        return ()

    def instrument(self, **kwargs: Any) -> Any:
        """``BaseInstrumentor.instrument``; under ``opentelemetry-instrument`` (its loader passes
        ``skip_dep_check``) a ConfigurationError is one line, said once with the configurator's, instead of the
        loader's traceback and the other instrumentors skipped: the service runs on without ryot's metrics. Called
        from code, it raises, as ``configure()`` does."""
        loaded_by_the_sdk = bool(kwargs.get("skip_dep_check"))
        try:
            return super().instrument(**kwargs)
        except ConfigurationError as e:
            if not loaded_by_the_sdk:
                raise
            if _state.first_time(f"configuration error: {e}"):
                _log.error("ryot-telemetry: metrics not configured: %s", e)
            return None

    def _instrument(self, **kwargs: Any) -> None:
        recorder: Recorder | None = kwargs.get("recorder")
        if recorder is None:
            provider = kwargs.get("meter_provider")
            configured = _state.current()
            if provider is None:
                recorder = default_recorder()
            elif configured is not None and configured.meter_provider is provider:
                recorder = configured.recorder  # configure()'s own: a second one would duplicate its instruments
            else:
                recorder = build_recorder(ryot_meter(provider))
        self.recorder = recorder
        providers = _state.model_providers(recorder)
        wrapped: list[tuple[type, str, bool]] = []
        classes = router_classes(kwargs.get("router_classes"))
        for cls in classes:
            for name, endpoint in METHODS.items():
                method = getattr(cls, name, None)
                if not callable(method):
                    continue
                own = name in cls.__dict__
                nested = any(o is not cls and (issubclass(cls, o) or issubclass(o, cls)) for o in classes)
                shape = method_shape(method)
                wrap_function_wrapper(cls, name, _method_wrapper(recorder, name, endpoint, nested, shape, providers))
                wrapped.append((cls, name, own))
        if not wrapped:
            _log.debug("ryot-telemetry: neither ogx nor llama-stack is installed and no router class was named")
        self._wrapped = wrapped
        self.wrapped_classes = sorted({f"{c.__module__}.{c.__qualname__}" for c, _, _ in wrapped})

    def _uninstrument(self, **kwargs: Any) -> None:
        for cls, name, own in reversed(self._wrapped):
            if own:
                unwrap(cls, name)
            else:
                delattr(cls, name)  # the method was inherited: drop the wrapper, the base's method shows again
        self._wrapped = []
        self.wrapped_classes = []

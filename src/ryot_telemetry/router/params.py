"""Asking a provider for usage on streams without touching the caller's objects: params and chunks are copied,
each into its own exact type, or left as they are where no faithful copy can be made."""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import logging
import typing
from typing import Any

from ..recording.provider import get

__all__ = ["accepts_stream_options", "with_usage", "without_usage"]

_log = logging.getLogger("ryot_telemetry")


def with_usage(params: Any) -> tuple[Any, bool]:
    """Params asking the provider for usage on streams, and whether the caller asked for it itself.

    Never mutates the caller's objects, and the copy is of the caller's exact type: dicts and dict subclasses are
    copied (an attribute-style dict stays one), pydantic models go through ``model_copy``, dataclasses and
    namedtuples with a ``stream_options`` field through ``replace``; a typed ``stream_options`` stays of its type.
    Where no faithful copy can be made, the params go through unchanged.
    """
    opts = get(params, "stream_options")
    if opts is not None and get(opts, "include_usage"):
        return params, True
    new_opts = _options_with_usage(opts, params)
    if new_opts is None:
        return params, False
    if isinstance(params, dict):
        copied = _dict_with(params, "stream_options", new_opts)
        return (params, False) if copied is None else (copied, False)
    model_copy = getattr(params, "model_copy", None)
    fields = getattr(type(params), "model_fields", None)
    if callable(model_copy) and (fields is None or "stream_options" in fields or _allows_extra(params)):
        return model_copy(update={"stream_options": new_opts}), False
    if _has_field(params, "stream_options"):
        copied = _replaced(params, stream_options=new_opts)
        if copied is not None and type(copied) is type(params):
            return copied, False
    return params, False  # an object we cannot safely copy: leave it, usage may then be absent


def _has_field(obj: Any, name: str) -> bool:
    """Is ``name`` a field of a dataclass instance or a namedtuple?"""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return any(f.name == name and f.init for f in dataclasses.fields(obj))
    return isinstance(obj, tuple) and name in (getattr(type(obj), "_fields", None) or ())


def _dict_with(d: dict[Any, Any], key: str, value: Any) -> dict[Any, Any] | None:
    """A copy of ``d``, of ``d``'s exact type, with ``d[key] = value``; None where no faithful copy can be made.

    A plain dict is rebuilt directly (the common, fast case). A subclass is copied with ``copy.copy`` (which keeps
    the class and its instance state), or else by calling the class on ``d`` (``AttrDict(d)``: on Python 3.10
    ``copy.copy`` asks an attribute-style dict for ``__getstate__`` and gets a KeyError). Either copy must be a
    distinct object of the same type holding the same items and instance attributes, or it is not used.
    """
    if type(d) is dict:
        return {**d, key: value}
    for make in (copy.copy, type(d)):
        try:
            new = make(d)
            if _same_dict(new, d):
                new[key] = value  # through the class's own __setitem__, as the caller's code would set it
                return new
        except BaseException:
            _log.debug("ryot-telemetry: could not copy %s params", type(d).__name__, exc_info=True)
    return None


def _same_dict(new: Any, d: dict[Any, Any]) -> bool:
    """Is ``new`` a faithful, distinct copy of the dict subclass instance ``d``?"""
    if new is d or type(new) is not type(d) or dict.__len__(new) != dict.__len__(d):
        return False
    if not all(dict.get(new, k, _MISSING) is v for k, v in dict.items(d)):
        return False
    get = object.__getattribute__
    try:
        state = get(d, "__dict__")
    except AttributeError:  # __slots__ only
        return True
    return bool(get(new, "__dict__") == state)


_MISSING = object()


def _options_with_usage(opts: Any, params: Any) -> Any:
    """``opts`` plus include_usage=True, of the same kind; None when that cannot be built faithfully."""
    try:
        if opts is None:
            cls = _typed_options_class(params)
            return cls(include_usage=True) if cls is not None else {"include_usage": True}
        return _replaced(opts, include_usage=True)
    except BaseException:
        _log.debug("ryot-telemetry: could not add include_usage to stream_options", exc_info=True)
    return None


def _typed_options_class(params: Any) -> Any:
    """The model class a pydantic ``stream_options`` field is typed with (``X | None``), or None for dict/Any."""
    field = (getattr(type(params), "model_fields", None) or {}).get("stream_options")
    if field is None:
        return None
    annotation = field.annotation
    for candidate in typing.get_args(annotation) or (annotation,):
        if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
            return candidate
    return None


def accepts_stream_options(fn: Any) -> bool:
    """Does a keyword-style router method take ``stream_options`` (or ``**kwargs``)? Cached per function."""
    return _signature_accepts_stream_options(getattr(fn, "__func__", fn))


@functools.lru_cache(maxsize=1024)
def _signature_accepts_stream_options(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "stream_options" or p.kind is p.VAR_KEYWORD for p in params)


def _allows_extra(params: Any) -> bool:
    config = getattr(type(params), "model_config", None) or {}
    return config.get("extra") == "allow"


def without_usage(chunk: Any) -> Any:
    """A copy of ``chunk`` with ``usage=None``, as the provider would have sent it had we not asked for usage."""
    copy = _replaced(chunk, usage=None)
    return chunk if copy is None else copy


def _replaced(obj: Any, **changes: Any) -> Any:
    """A copy of ``obj`` (dict of any class, pydantic model, dataclass or namedtuple) with ``changes``, of
    ``obj``'s type; None if it is none of those or cannot be copied faithfully."""
    if isinstance(obj, dict):
        new: Any = obj
        for k, v in changes.items():
            new = _dict_with(new, k, v)
            if new is None:
                return None
        return new
    model_copy = getattr(obj, "model_copy", None)
    if callable(model_copy):
        return model_copy(update=changes)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, tuple) and all(k in (getattr(type(obj), "_fields", None) or ()) for k in changes):
        return obj._replace(**changes)  # type: ignore[attr-defined]
    return None

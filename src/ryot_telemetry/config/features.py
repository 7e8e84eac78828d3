"""Loaders of what the recorder, the GPU gauges, the instrumentor and multi-process mode take: buckets, the price,
SLO and budget tables, the tenant and provider sources, GPU devices and models, router classes, the multi-process
directory and the duplicates to drop."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from .. import env
from ..budgets import BudgetTable
from ..catalogue import resolve_buckets
from ..pricing import PriceTable
from ..slo import SloTable
from .loaders import _DEVICE_ID, DUPLICATE_SOURCES, ConfigurationError, _encodable, _raw, _truth

__all__ = ["TENANT_OGX", "device_id", "gpu_enabled", "gpu_models", "parse_gpu_models"]


def _buckets(name: str, arg: Any) -> dict[str, tuple[float, ...]]:
    """Catalogue buckets, overridden by ``RYOT_TELEMETRY_BUCKETS``, overridden per metric by the argument.

    Each source is checked on its own first, so an error names the one it came from.
    """
    overrides: dict[str, Any] = {}
    raw = _raw(env.RYOT_TELEMETRY_BUCKETS)
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigurationError(f"{env.RYOT_TELEMETRY_BUCKETS} is not valid JSON: {e}") from None
        if not isinstance(parsed, dict):
            raise ConfigurationError(
                f"{env.RYOT_TELEMETRY_BUCKETS} must be a JSON object of name -> list, such as "
                '{"ryot_inference_latency_seconds": [0.1, 0.5, 1, 5]}'
            )
        _checked_buckets(env.RYOT_TELEMETRY_BUCKETS, parsed)
        overrides.update(parsed)
    if arg is not None:
        if not isinstance(arg, Mapping):
            raise ConfigurationError(f"{name} must be a mapping of metric name -> list of numbers, got {arg!r}")
        _checked_buckets(name, arg)
        overrides.update(arg)
    return _checked_buckets(name, overrides)


def _checked_buckets(where: str, overrides: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    try:
        return resolve_buckets(overrides)
    except ValueError as e:
        raise ConfigurationError(f"{where}: {e}") from None


def _table_setting(cls: Any, variable: str, article: str) -> Callable[[str, Any], Any]:
    """The loader of a table setting: the argument (a ``cls`` instance, a mapping or a file path), else the file
    ``variable`` names, else none; a bad table is a ``ConfigurationError`` naming the argument or the variable."""
    kind, from_file = cls.__name__, cls.from_file

    def load(name: str, arg: Any) -> Any:
        where = name if arg is not None else variable
        try:
            if isinstance(arg, cls):
                return arg
            if isinstance(arg, Mapping):
                return cls(arg)
            if isinstance(arg, (str, os.PathLike)):
                return from_file(arg)
            if arg is not None:
                raise ConfigurationError(f"{name} must be {article} {kind}, a mapping or a file path, got {arg!r}")
            path = _raw(variable)
            return from_file(path) if path else None
        except ConfigurationError:
            raise
        except ValueError as e:
            raise ConfigurationError(f"{where}: {e}") from None

    return load


_prices = _table_setting(PriceTable, env.RYOT_TELEMETRY_PRICE_TABLE, "a")
"""A price table from the argument (``PriceTable``, mapping or path), else ``RYOT_TELEMETRY_PRICE_TABLE``."""


_slos = _table_setting(SloTable, env.RYOT_TELEMETRY_SLOS, "an")
"""An SLO table from the argument (``SloTable``, mapping or path), else ``RYOT_TELEMETRY_SLOS``, else none."""


_TENANT_PATH = re.compile(r"^[^\s.:]+(\.[^\s.:]+)*$")
TENANT_OGX = ("ogx:principal", "ogx:tenant_id")
"""Tenant sources read from ogx's authenticated user (see ``recording.tenants``)."""


def _is_async(fn: Any) -> bool:
    """A coroutine or async-generator function, or an object whose ``__call__`` is one (``partial`` included)."""
    try:
        call = getattr(type(fn), "__call__", None)  # noqa: B004 - the type's, as a call resolves it
        return any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (fn, call) if f is not None)
    except Exception:  # an object whose attributes raise: the signature check below decides
        return False


def _tenant(name: str, arg: Any) -> Any:
    """The tenant source: a callable (argument only), a dotted path into the request params, or an ogx source;
    None for no tenant label. A callable must take the call's params as its one argument."""
    if arg is not None and not isinstance(arg, str):
        if not callable(arg):
            raise ConfigurationError(
                f"{name} must be a callable, a dotted path such as 'metadata.tenant', or one of "
                f"{', '.join(TENANT_OGX)}; got {arg!r}"
            )
        if _is_async(arg):
            # Called on the request path, where nothing awaits it: every request would count as __unknown__
            # with a "never awaited" warning each.
            raise ConfigurationError(
                f"{name}: {arg!r} is async; the tenant resolver must be a plain function returning the tenant "
                "(it runs on the request path, where nothing awaits it)"
            )
        try:
            inspect.signature(arg).bind(None)
        except TypeError:
            raise ConfigurationError(f"{name}: {arg!r} must take one argument, the call's params") from None
        except ValueError:  # no signature to check (some builtins)
            pass
        return arg
    if arg is not None:
        value, where = arg, name
    else:
        raw = _raw(env.RYOT_TELEMETRY_TENANT)
        if raw is None:
            return None
        value, where = raw.strip(), env.RYOT_TELEMETRY_TENANT
    if value in TENANT_OGX:
        if importlib.util.find_spec("ogx") is None:
            raise ConfigurationError(
                f"{where}={value!r}: reads ogx's authenticated user, but ogx is not installed here; "
                "use a dotted path such as metadata.tenant, or a callable"
            )
        return value
    if not _TENANT_PATH.match(value):
        raise ConfigurationError(
            f"{where}={value!r}: expected a dotted path into the request params such as metadata.tenant or user, "
            f"or one of {', '.join(TENANT_OGX)}"
        )
    return value


def _provider(name: str, arg: Any) -> Any:
    """Where ``ryot_model_info`` takes each model's provider from, for routers without an ogx / llama-stack routing
    table (argument only): a callable given the model name, or a mapping of model name (``"*"``: any other) to a
    provider id or ``{"provider": ..., "provider_type": ..., "provider_model_id": ...}``. None: the routing table."""
    if arg is None:
        return None
    if isinstance(arg, Mapping):
        for model, answer in arg.items():
            if not isinstance(model, str) or not (
                isinstance(answer, str)
                or (isinstance(answer, Mapping) and set(answer) <= {"provider", "provider_type", "provider_model_id"})
            ):
                raise ConfigurationError(
                    f"{name}: entry {model!r}: expected model -> provider id or "
                    f"{{'provider': ..., 'provider_type': ..., 'provider_model_id': ...}}, got {answer!r}"
                )
        return dict(arg)
    if not callable(arg) or isinstance(arg, (str, bytes)):
        raise ConfigurationError(f"{name} must be a callable given the model name, or a mapping; got {arg!r}")
    if inspect.iscoroutinefunction(arg):
        raise ConfigurationError(
            f"{name}: {arg!r} is a coroutine function; it is called at collection, give a plain one"
        )
    try:
        inspect.signature(arg).bind("model")
    except TypeError:
        raise ConfigurationError(f"{name}: {arg!r} must take one argument, the model name") from None
    except ValueError:  # no signature to check (some builtins)
        pass
    return arg


_budgets = _table_setting(BudgetTable, env.RYOT_TELEMETRY_BUDGETS, "a")
"""A budget table from the argument (``BudgetTable``, mapping or path), else ``RYOT_TELEMETRY_BUDGETS``, else none.
Nothing records against it in the process: the rules ``ryot-telemetry budget-rules`` writes compare the cost
counter with it in Prometheus; it is checked here so a broken table fails at start-up."""


def gpu_enabled(name: str, arg: Any) -> bool | None:
    """True/False forced, None for auto (``RYOT_TELEMETRY_GPU``, default auto)."""
    if arg is not None:
        if not isinstance(arg, bool):
            raise ConfigurationError(f"{name} must be True, False or None (auto), got {arg!r}")
        return arg
    raw = _raw(env.RYOT_TELEMETRY_GPU)
    if raw is None or raw.strip().lower() == "auto":
        return None
    value = _truth(raw)
    if value is None:
        raise ConfigurationError(f"{env.RYOT_TELEMETRY_GPU}={raw!r}: expected auto, true or false")
    return value


def device_id(dev: object) -> str:
    """A validated ``device_id`` label value: a GPU index (``0``) or a MIG instance (``0/1``)."""
    s = str(dev) if isinstance(dev, (int, str)) and not isinstance(dev, bool) else ""
    if not _DEVICE_ID.match(s):
        raise ValueError(f"device_id must be a GPU index such as 0 or a MIG instance such as '0/1', got {dev!r}")
    return s


def gpu_models(name: str, arg: Any) -> dict[str, str]:
    """Model served on each device: the argument (``{0: "llama"}``), else ``RYOT_TELEMETRY_GPU_MODELS``
    (``0=llama,1=mistral``, MIG instances as ``0/1=model``). A device named twice is an error."""
    out: dict[str, str] = {}
    if arg is not None:
        if not isinstance(arg, Mapping):
            raise ConfigurationError(f"{name} must be a mapping of device -> model name, got {arg!r}")
        for dev, model in arg.items():
            try:
                dev_id = device_id(dev)
            except ValueError as e:
                raise ConfigurationError(f"{name}: {e}") from None
            if not isinstance(model, str) or not model:
                raise ConfigurationError(
                    f"{name}: gpu model for device {dev!r} must be a non-empty string, got {model!r}"
                )
            _encodable(f"{name}[{dev!r}]", model)
            if dev_id in out:
                raise ConfigurationError(f"{name}: device {dev_id} is named twice ({out[dev_id]!r} and {model!r})")
            out[dev_id] = model
        return out
    raw = _raw(env.RYOT_TELEMETRY_GPU_MODELS)
    return parse_gpu_models(raw) if raw is not None else {}


def parse_gpu_models(raw: str) -> dict[str, str]:
    """``"0=llama,1=mistral"`` (the ``RYOT_TELEMETRY_GPU_MODELS`` format) -> ``{"0": "llama", "1": "mistral"}``."""
    out: dict[str, str] = {}
    _encodable(env.RYOT_TELEMETRY_GPU_MODELS, raw)
    for part in raw.split(","):
        if not part.strip():
            continue
        dev, sep, model = part.partition("=")
        dev, model = dev.strip(), model.strip()
        if not sep or not _DEVICE_ID.match(dev) or not model:
            raise ConfigurationError(
                f"{env.RYOT_TELEMETRY_GPU_MODELS}={raw!r}: expected comma-separated DEVICE=MODEL pairs such as "
                f"0=llama-3-8b,1=mistral-7b (MIG instances as 0/1=model)"
            )
        if dev in out:
            raise ConfigurationError(
                f"{env.RYOT_TELEMETRY_GPU_MODELS}={raw!r}: device {dev} is named twice; give each device one model"
            )
        out[dev] = model
    return out


def _router_classes(name: str, arg: Any) -> tuple[str, ...]:
    """``module:Class`` names from ``RYOT_TELEMETRY_ROUTER_CLASSES``; the instrumentor imports them."""
    out: list[str] = []
    for item in (s.strip() for s in (_raw(env.RYOT_TELEMETRY_ROUTER_CLASSES) or "").split(",")):
        if not item:
            continue
        module, sep, qualname = item.partition(":")
        if not sep or not module or not qualname:
            raise ConfigurationError(f"{env.RYOT_TELEMETRY_ROUTER_CLASSES}: {item!r} is not 'module:Class'")
        out.append(item)
    return tuple(out)


def _multiproc_dir(name: str, arg: Any) -> str | None:
    """Multi-process mode's directory: it must exist and take a file (checked by writing one)."""
    var = env.RYOT_TELEMETRY_MULTIPROC_DIR
    if arg is not None:
        if not isinstance(arg, (str, os.PathLike)) or not os.fspath(arg):
            raise ConfigurationError(f"{name} must be a directory path, got {arg!r}")
        raw, where = os.fspath(arg), name
    else:
        env_raw = _raw(var)
        if env_raw is None:
            return None
        raw, where = env_raw.strip(), var
    path = os.path.abspath(raw)
    if not os.path.isdir(path):
        raise ConfigurationError(f"{where}={raw!r}: no such directory (create it before the server starts)")
    probe = os.path.join(path, f".probe-{os.getpid()}")
    try:
        with open(probe, "wb"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise ConfigurationError(f"{where}={raw!r}: directory not writable ({e.strerror or e})") from None
    return path


def _drop_duplicates(name: str, arg: Any) -> tuple[str, ...]:
    """Sources whose superseded metrics are dropped (``recording/duplicates.py``): the argument (a name or a list),
    else ``RYOT_TELEMETRY_DROP_DUPLICATES`` (comma-separated), else none."""
    var = env.RYOT_TELEMETRY_DROP_DUPLICATES
    if arg is not None:
        if isinstance(arg, str):
            items, where = arg.split(","), name
        elif isinstance(arg, (list, tuple)) and all(isinstance(a, str) for a in arg):
            items, where = list(arg), name
        else:
            raise ConfigurationError(f"{name} must be a string or a list of strings, got {arg!r}")
    else:
        raw = _raw(var)
        if raw is None:
            return ()
        items, where = raw.split(","), f"{var}={raw!r}"
    out: list[str] = []
    for item in items:
        v = item.strip().lower()
        if v and v not in DUPLICATE_SOURCES:
            choices = ", ".join(DUPLICATE_SOURCES)
            raise ConfigurationError(f"{where}: unknown source {item.strip()!r}; choose from {choices}")
        if v and v not in out:
            out.append(v)
    return tuple(out)

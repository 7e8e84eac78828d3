"""``ryot_model_info``: the upstream provider of each model that holds a label slot, read once per model.

Per-provider views are PromQL joins on this series (``* on(model) group_left(provider) ryot_model_info``), so the
design's families get no new label. The provider is looked up at collection time, never on the request path:

- from the routing table of an ogx / llama-stack ``InferenceRouter`` the instrumentation saw (its public
  ``routing_table``: the registered model object's ``provider_id`` and ``provider_resource_id``, and the
  ``provider_type`` of that provider's spec), or
- from a user callable or mapping (``configure(provider=...)``) for other routers: given the model name, it answers
  a provider id, a mapping with ``provider`` / ``provider_type`` / ``provider_model_id``, or None.

A model is looked up once; one not found (no router seen yet, a table that raises or answers something odd) is
tried again at a few later collections, and again whenever a new router is seen, then shows ``unknown``. Series are
bounded by the model slots (``max_models``); every value is clipped like a model name, so hostile ids (huge,
non-UTF-8, control characters) cannot grow memory or break an exposition.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .. import catalogue
from ..recording.instruments import create_instrument
from ..recording.labels import ModelLabels, clip

__all__ = ["MAX_ROUTERS", "UNKNOWN_PROVIDER", "ModelProviders", "install_model_info"]

_log = logging.getLogger("ryot_telemetry")

UNKNOWN_PROVIDER = "unknown"
"""The value of a field nobody could tell: no router seen, no routing-table entry, a callable that said nothing."""
MAX_ROUTERS = 8
"""Router instances remembered for lookups (a server has one; tests make a few)."""
_MAX_TRIES = 3
"""Collections at which a model still without a provider is looked up again, before it stays ``unknown`` (until
a new router is seen)."""

Info = tuple[str, str, str]
"""(provider, provider_type, provider_model_id), clipped."""
Resolver = Callable[[str], object]


def _read(obj: object, attr: str) -> Any:
    """``getattr`` that never raises (a property may raise anything, BaseException included)."""
    try:
        return getattr(obj, attr, None)
    except BaseException:
        return None


def _dict_get(d: object, key: object) -> Any:
    if not isinstance(d, dict):
        return None
    try:
        return dict.get(d, key)  # dict's own lookup, whatever a subclass overrides
    except BaseException:
        return None


class ModelProviders:
    """Model label -> (provider, provider_type, provider_model_id), for the models of ``models`` that hold a slot.

    ``resolver``: a callable given the model name, or a mapping of model name to the same answers (``"*"`` for
    every other model). ``seen(router)`` remembers a router whose routing table answers otherwise; it is cheap
    enough for a call path (one identity check once the router is known).
    """

    def __init__(self, models: ModelLabels, resolver: Resolver | Mapping[str, Any] | None = None) -> None:
        self._models = models
        self._max_length = models.max_length
        self._resolver = resolver
        self._routers: list[Callable[[], Any]] = []  # weak references (a strong one for what refuses them)
        self._last: Callable[[], Any] | None = None
        self._lock = threading.Lock()
        self._info: dict[str, Info] = {}  # model label -> info: at most one entry per slot
        self._misses: dict[str, int] = {}  # model label -> failed lookups so far
        self._failed_logged = False

    # --- routers --------------------------------------------------------------------------------------------------

    def seen(self, router: object) -> None:
        """A call went through ``router``: remember it for lookups (the first ``MAX_ROUTERS`` routers)."""
        last = self._last
        if (last is not None and last() is router) or router is None:
            return
        with self._lock:
            for ref in self._routers:
                if ref() is router:
                    self._last = ref
                    return
            if len(self._routers) >= MAX_ROUTERS:
                self._routers = [r for r in self._routers if r() is not None]
                if len(self._routers) >= MAX_ROUTERS:
                    return
            try:
                ref = weakref.ref(router)
            except TypeError:  # not weakly referenceable: kept alive, one of at most MAX_ROUTERS
                ref = _Strong(router)
            self._routers.append(ref)
            self._last = ref
            self._misses.clear()  # a new router may know the models nobody could tell so far

    def routers(self) -> list[Any]:
        """The live routers seen, oldest first."""
        return [r for r in (ref() for ref in list(self._routers)) if r is not None]

    # --- lookups --------------------------------------------------------------------------------------------------

    def info(self, model: str) -> Info | None:
        """The info kept for a model label (None: not looked up, or not found yet)."""
        return self._info.get(model)

    def _clip(self, value: object) -> str | None:
        if isinstance(value, bytes):
            value = value[: self._max_length * 4].decode("utf-8", "replace")
        if not isinstance(value, str):
            return None
        s = str.__getitem__(value, slice(0, self._max_length))  # a plain str, whatever a subclass overrides
        return clip(s, self._max_length) if s else None

    def _normalise(self, answer: object) -> Info | None:
        """A provider id, a mapping with provider / provider_type / provider_model_id, or a routing-table object
        with provider_id / provider_resource_id (and the provider_type the table knows) -> Info; None: nothing."""
        if answer is None:
            return None
        if isinstance(answer, (str, bytes)):
            provider = self._clip(answer)
            return (provider, UNKNOWN_PROVIDER, UNKNOWN_PROVIDER) if provider else None
        if isinstance(answer, Mapping):
            fields = [_dict_get(dict(answer), k) for k in ("provider", "provider_type", "provider_model_id")]
        else:
            return None
        provider, ptype, pmodel = (self._clip(f) for f in fields)
        if provider is None:
            return None
        return (provider, ptype or UNKNOWN_PROVIDER, pmodel or UNKNOWN_PROVIDER)

    def _from_resolver(self, name: str) -> Info | None:
        resolver = self._resolver
        if resolver is None:
            return None
        if isinstance(resolver, Mapping):
            answer = resolver.get(name, resolver.get("*"))
        else:
            answer = resolver(name)
        return self._normalise(answer)

    def _from_routers(self, name: str) -> Info | None:
        for router in self.routers():
            found = routing_table_info(router, name)
            if found is not None:
                return self._normalise(found)
        return None

    def lookup(self, name: str) -> Info | None:
        """Ask the resolver (if configured), else the routers' routing tables; never raises."""
        try:
            if self._resolver is not None:
                return self._from_resolver(name)
            return self._from_routers(name)
        except BaseException:  # a resolver or routing table may raise anything; the scrape goes on
            if not self._failed_logged:
                self._failed_logged = True
                _log.warning("ryot-telemetry: looking up the provider of a model failed", exc_info=True)
            return None

    def observe(self, options: CallbackOptions | None = None) -> list[Observation]:
        """One ``ryot_model_info`` observation per model holding a slot; looks up the models not known yet."""
        with self._models._lock:  # labels.py lists no slots publicly; the copy is taken under its admit lock
            slots = list(self._models._map.items())
        out = []
        for name, label in slots:
            info = self._info.get(label)
            if info is None:
                misses = self._misses.get(label, 0)
                if misses < _MAX_TRIES:
                    info = self.lookup(name)
                    if info is not None:
                        self._info[label] = info
                        self._misses.pop(label, None)
                    else:
                        self._misses[label] = misses + 1
            provider, ptype, pmodel = info or (UNKNOWN_PROVIDER, UNKNOWN_PROVIDER, UNKNOWN_PROVIDER)
            attrs = {"model": label, "provider": provider, "provider_type": ptype, "provider_model_id": pmodel}
            out.append(Observation(1, attrs))
        return out


class _Strong:
    """A strong reference with the call shape of ``weakref.ref``."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __call__(self) -> object:
        return self.obj


def routing_table_info(router: object, name: str) -> dict[str, object] | None:
    """What an ogx / llama-stack router's routing table says of model ``name``: provider, provider_type and
    provider_model_id (values unchecked: the caller clips them); None if it says nothing.

    The registered model object (``provider_id``, ``provider_resource_id``) comes from the table's registry cache,
    read without awaiting: the table's own getters are coroutines guarded by asyncio locks of the server's loop,
    and a collection runs on another thread. A name the router took in its ``provider_id/provider_model_id`` form
    (ogx's fallback for unregistered models) is split the same way. ``provider_type`` is the type in the spec ogx
    attaches to each provider implementation (``__provider_spec__``).
    """
    table = _read(router, "routing_table")
    if table is None:
        return None
    impls = _read(table, "impls_by_provider_id")
    obj = _registered_model(table, name)
    if obj is not None:
        provider_id, provider_model_id = _read(obj, "provider_id"), _read(obj, "provider_resource_id")
    elif "/" in name:
        provider_id, _, provider_model_id = name.partition("/")
        if _dict_get(impls, provider_id) is None:
            return None
    else:
        return None
    if not isinstance(provider_id, str):
        return None
    ptype = _read(_read(_dict_get(impls, provider_id), "__provider_spec__"), "provider_type")
    return {"provider": provider_id, "provider_type": ptype, "provider_model_id": provider_model_id}


def _registered_model(table: object, name: str) -> object:
    """The registered model object for ``name`` in the table's registry cache: ``get_cached(type, id)`` where the
    registry has it (llama-stack), else its ``cache`` mapping keyed by ``(type, id)`` (ogx)."""
    registry = _read(table, "dist_registry")
    get_cached = _read(registry, "get_cached")
    if callable(get_cached):
        obj = get_cached("model", name)
        if obj is not None:
            return obj
    return _dict_get(_read(registry, "cache"), ("model", name))


def install_model_info(meter: Meter, providers: ModelProviders) -> None:
    """The ``ryot_model_info`` observable gauge on ``meter``, fed by ``providers``."""
    create_instrument(meter, catalogue.get("ryot.model.info"), callbacks=[providers.observe])

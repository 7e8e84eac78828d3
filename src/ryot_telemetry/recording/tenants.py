"""The opt-in ``tenant`` label: who a request is for, resolved once per request and bounded like model names.

A tenant source is what ``configure(tenant=...)`` / ``RYOT_TELEMETRY_TENANT`` name (``settings`` checks it):

- a callable, given the call's params (what the router method received) and returning the tenant;
- a dotted path into the params (``user``, ``metadata.tenant``), each step a dict's key or an attribute (pydantic
  models, their extra fields, dataclasses, any object), as the wrapper reads params;
- ``ogx:principal`` / ``ogx:tenant_id``: the authenticated user ogx's auth middleware put into the request context
  (``ogx.core.request_headers.get_authenticated_user()``, a contextvar the router call runs in).

Values become labels as model names do (clipped, control characters replaced, at most ``max_tenants`` distinct,
then ``__overflow__``); a tenant keeps its slot and its series for the process's life, so every counter stays
monotonic. A request whose source yields nothing usable (missing, empty, a container, an awaitable), or whose
resolver raised, is counted under ``__unknown__``, which takes no slot. Resolving never raises into the call: any
``BaseException`` (a resolver's, a path step's attribute's, a value's ``__str__``'s) is caught, since what
escaped would leave the request uncounted, and a tenant is never worth a lost count.
"""

from __future__ import annotations

import importlib
import keyword
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .labels import UNADMITTED, ModelLabels

_log = logging.getLogger("ryot_telemetry")

UNKNOWN_TENANT = UNADMITTED
"""The tenant label of a request with no usable tenant, or whose resolver raised; it takes no slot."""
DEFAULT_MAX_TENANTS = 50
OGX = "ogx:"
"""Prefix of the tenant sources read from ogx's authenticated user: ``ogx:principal``, ``ogx:tenant_id``."""

Resolver = Callable[[Any], object]


def _step(obj: Any, name: str) -> Any:
    """One step of a dotted path: an exact dict's key; else the attribute, or a dict subclass's key where the
    attribute read fails (an attribute-style dict raising KeyError); None where neither exists."""
    if type(obj) is dict:
        return obj.get(name)
    try:
        return getattr(obj, name)
    except BaseException:
        return obj.get(name) if isinstance(obj, dict) else None


def path_resolver(path: str) -> Resolver:
    """A resolver reading ``path`` (``metadata.tenant``) from the params, step by step (``_step``); None where a
    step is missing."""
    parts = tuple(path.split("."))

    def walk(params: Any) -> object:
        obj = params
        for name in parts:
            if obj is None:
                return None
            obj = _step(obj, name)
        return obj

    return walk


def ogx_resolver(field: str) -> Resolver:
    """A resolver reading ``field`` of ogx's authenticated user; None when ogx runs without auth.

    ``get_authenticated_user`` is imported at the first request, not at start-up: by then ogx is loaded anyway.
    """
    get_user: list[Callable[[], Any]] = []

    def resolve(params: Any) -> object:
        if not get_user:
            get_user.append(importlib.import_module("ogx.core.request_headers").get_authenticated_user)
        user = get_user[0]()
        return None if user is None else getattr(user, field, None)

    return resolve


def resolver_for(source: str | Resolver) -> Resolver:
    """The resolver for a checked tenant source (see ``settings``): the callable itself, ogx's user, or a path."""
    if callable(source):
        return source
    if source.startswith(OGX):
        return ogx_resolver(source[len(OGX) :])
    return path_resolver(source)


_STEP = """\
        if type(obj) is dict:
            obj = obj.get({key!r})
        else:
            try:
                obj = obj.{name}
            except BaseException:
                obj = obj.get({key!r}) if isinstance(obj, dict) else None
"""


def _compiled_path(parts: tuple[str, ...], namespace: dict[str, Any]) -> Callable[[Any], str | None]:
    """``Tenants.of`` for a path of identifiers, as straight-line code (what ``_step`` does, unrolled).

    Per request: the steps are literal attribute reads and dict lookups, as a hand-written resolver would have
    them (a literal attribute read is several times cheaper than ``getattr`` with a name), with no call per step.
    The names are checked identifiers, so the generated source is exactly the steps below, nothing else.
    """
    steps = "        if obj is None:\n            return None\n".join(_STEP.format(key=n, name=n) for n in parts)
    source = (
        "def of(params):\n"
        "    try:\n"
        "        obj = params\n"
        f"{steps}"
        "        if type(obj) is str and len(obj) <= max_length:\n"
        "            return obj\n"
        "        return key(obj)\n"
        "    except BaseException as exc:\n"
        "        failed(exc)\n"
        "        return None\n"
    )
    exec(compile(source, f"<ryot-telemetry tenant path {'.'.join(parts)}>", "exec"), namespace)
    of: Callable[[Any], str | None] = namespace["of"]
    return of


def _tenant_of(
    source: str | Resolver,
    max_length: int,
    key: Callable[[object], str | None],
    failed: Callable[[BaseException], None],
) -> Callable[[Any], str | None]:
    """``Tenants.of``: the source's value, kept only as ``key`` clips it (None: nothing usable); never raises."""
    if isinstance(source, str) and not source.startswith(OGX):
        parts = tuple(source.split("."))
        if all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
            return _compiled_path(parts, {"max_length": max_length, "key": key, "failed": failed})
    resolve = resolver_for(source)

    def of(params: Any) -> str | None:
        try:
            raw = resolve(params)
            if type(raw) is str and len(raw) <= max_length:
                return raw
            if isinstance(raw, Coroutine):
                raw.close()  # a sync callable handing back a coroutine: closed, so no "never awaited" warning
                raise TypeError("the tenant resolver returned a coroutine; it must return the tenant")
            return key(raw)
        except BaseException as exc:
            failed(exc)
            return None

    return of


class Tenants:
    """A request's tenant in two steps: ``of(params)`` on the request path, ``label(value)`` at the drain.

    ``of`` runs the resolver once per request (it must: ogx's user lives in the call's context, params may change
    after it) and keeps only the clipped value, so a request never holds a hostile 10 MB tenant. ``label`` turns
    that into the bounded label where the other labels are made, at the drain: a tenant's first request takes
    its slot there (a lock, the clip), never on the request path, and neither does a flood of new tenants.
    ``of`` is a closure over everything it reads: one call, no attribute lookups.
    """

    __slots__ = ("_known", "_labels", "_warned", "of", "source")

    def __init__(self, source: str | Resolver, max_tenants: int = DEFAULT_MAX_TENANTS, max_length: int = 128) -> None:
        self.source = source
        self._labels = ModelLabels(max_tenants, max_length, what="tenants", variable="RYOT_TELEMETRY_MAX_TENANTS")
        self._known = self._labels._map.get  # read without the lock: entries are only ever added
        self._warned = False
        self.of: Callable[[Any], str | None] = _tenant_of(source, max_length, self._labels.key, self._failed)

    @property
    def max_tenants(self) -> int:
        return self._labels.max_models

    def label(self, value: object) -> str:
        """The label of what ``of`` returned (or any value a recorder-API user set): its slot, a new slot,
        ``__overflow__`` past ``max_tenants``, or ``__unknown__`` for nothing usable. Never raises."""
        if type(value) is str:
            label = self._known(value)
            if label is not None:
                return label
        try:
            k = self._labels.key(value)
            return UNKNOWN_TENANT if k is None else self._labels.admit(k)
        except BaseException as exc:  # a recorder-API value whose __str__ raised
            self._failed(exc)
            return UNKNOWN_TENANT

    def _failed(self, exc: BaseException) -> None:
        """A resolver (or a value's ``__str__``) raised: warn once; the request counts under ``__unknown__``."""
        if not self._warned:
            self._warned = True
            _log.warning(
                "ryot-telemetry: the tenant resolver (%s) raised %s; such requests are counted under tenant=%r "
                "(logged once)",
                self.source if isinstance(self.source, str) else "a callable",
                type(exc).__name__,
                UNKNOWN_TENANT,
            )
        _log.debug("ryot-telemetry: tenant resolver failed", exc_info=exc)

    def labels(self) -> list[str]:
        """The tenants that have a slot, in the order they got it (for tests and the demo)."""
        return list(self._labels._map.values())

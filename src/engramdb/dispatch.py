"""Calls by name: ``records.put``, ``collection.search``... bound to a database.

Every public method declared ``@remote`` on the classes of ``NAMESPACES`` can be called by
its name with plain arguments: the namespace's target function finds the object (the
record set named by the first argument, the collection, the role), the arguments are bound
to the method's signature, and the call runs as its declaration says. Two callers:

- the server, for remote callers (``remote=True``): wire forms are decoded, parameters that
  are ``local_only`` and sizes over the declared caps are refused, binding errors are
  ``InvalidArgument``;
- ``engramdb.aio.open`` in-process (``remote=False``): the same lookup and binding, nothing
  refused (an embedded caller owns its machine and memory).

Entries are built on first use, so an in-process caller imports only the roles it calls.
"""

from __future__ import annotations

import collections
import importlib
import inspect
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from engramdb.errors import InvalidArgument
from engramdb.remote import FORMS, Kind, remote_methods

if TYPE_CHECKING:
    from engramdb.database import Database

__all__ = ["NAMESPACES", "Entry", "entry"]

Target = Callable[["Database", list[Any]], tuple[Any, list[Any]]]


def _named(what: str, find: Callable[[Database, str], Any]) -> Target:
    def target(db: Database, args: list[Any]) -> tuple[Any, list[Any]]:
        if not args or type(args[0]) is not str:
            raise InvalidArgument(f"{what} calls take the {what} name first")
        return find(db, args[0]), args[1:]

    return target


# Memory stores of other embedders than the database's own, per database: a client's
# memory_with(embedder) computes embeddings itself and names its store; the server keeps a
# store of that name (bounded: names come from clients).
_MEMORY_STORES: weakref.WeakKeyDictionary[Any, collections.OrderedDict[Any, Any]] = (
    weakref.WeakKeyDictionary()
)
_MEMORY_LOCK = threading.Lock()
_MAX_MEMORY_STORES = 64
_MEMORY_OPTIONS = frozenset({"dedupe_threshold", "half_life", "candidates"})


def _memory(db: Database, args: list[Any]) -> tuple[Any, list[Any]]:
    from engramdb.memory.store import MemoryStore

    if not args:
        raise InvalidArgument("memory calls take the store first (None for db.memory)")
    spec, rest = args[0], args[1:]
    if spec is None:
        return db.memory, rest
    if isinstance(spec, MemoryStore):  # in-process: the caller's own store
        return spec, rest
    if (
        not isinstance(spec, dict)
        or type(spec.get("name")) is not str
        or type(spec.get("dim")) is not int
        or not set(spec) <= {"name", "dim"} | _MEMORY_OPTIONS
    ):
        raise InvalidArgument("a memory store is named {name, dim[, options]}")
    key = tuple(sorted(spec.items()))
    with _MEMORY_LOCK:
        stores = _MEMORY_STORES.setdefault(db, collections.OrderedDict())
        store = stores.get(key)
        if store is None:
            from engramdb.embedders import ExternalEmbedder

            options = {k: v for k, v in spec.items() if k in _MEMORY_OPTIONS}
            store = db.memory_with(ExternalEmbedder(spec["dim"]), name=spec["name"], **options)
            stores[key] = store
            if len(stores) > _MAX_MEMORY_STORES:
                stores.popitem(last=False)
        else:
            stores.move_to_end(key)
    return store, rest


# namespace -> (module, class whose declarations it serves, how a call finds its object)
NAMESPACES: dict[str, tuple[str, str, Target]] = {
    # db.records refuses the sets roles reserve
    "records": ("engramdb.recordset", "RecordSet", _named("set", lambda db, n: db.records(n))),
    "db": ("engramdb.database", "Database", lambda db, args: (db, args)),
    "vectors": ("engramdb.vectors.store", "VectorStore", lambda db, args: (db.vectors, args)),
    "collection": (
        "engramdb.vectors.collection",
        "Collection",
        _named("collection", lambda db, name: db.vectors.get_collection(name)),
    ),
    "sessions": ("engramdb.sessions.store", "SessionStore", lambda db, args: (db.sessions, args)),
    "memory": ("engramdb.memory.store", "MemoryStore", _memory),
    "cache": ("engramdb.cache.core", "CacheCore", lambda db, args: (db.cache.core, args)),
    "features": ("engramdb.features.store", "FeatureStore", lambda db, args: (db.features, args)),
}


class Entry(NamedTuple):
    """One callable method: ``call(db, args, kwargs)`` returns its result, or for a
    ``write`` the plan to submit to group commit."""

    kind: Kind
    call: Callable[[Database, list[Any], dict[str, Any]], Any]


_ENTRIES: dict[tuple[str, bool], Entry | None] = {}


def entry(name: str, *, remote: bool) -> Entry | None:
    """The entry of method ``name`` (None when no such method is declared)."""
    found = _ENTRIES.get((name, remote), _ENTRIES)
    if found is not _ENTRIES:
        return found  # type: ignore[return-value]
    namespace, _, method = name.partition(".")
    made: Entry | None = None
    if namespace in NAMESPACES and method and not method.startswith("_"):
        module, cls_name, target = NAMESPACES[namespace]
        declared = remote_methods(getattr(importlib.import_module(module), cls_name))
        if method in declared:
            made = _entry(name, *declared[method], target, remote)
    _ENTRIES[(name, remote)] = made
    return made


def _entry(name: str, fn: Callable[..., Any], spec: Any, target: Target, remote: bool) -> Entry:
    signature = inspect.signature(fn)
    caps = spec.caps if remote else ()
    local_only = spec.local_only if remote else frozenset()
    forms = {p: FORMS[form].decode for p, form in spec.wire} if remote else {}
    method_name = spec.plan or fn.__name__

    def call(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
        obj, rest = target(db, args)
        try:
            bound = signature.bind(obj, *rest, **kwargs)
        except TypeError as e:  # binding only: a TypeError inside the method is a bug
            raise InvalidArgument(f"bad arguments for {name}: {e}") from None
        arguments = bound.arguments
        for parameter in local_only:
            if parameter in arguments:
                raise InvalidArgument(
                    f"{name}: {parameter}= names a server-side resource and cannot be sent "
                    "over the network"
                )
        for parameter, cap in caps:
            value = arguments.get(parameter)
            if type(value) is int and value > cap:
                raise InvalidArgument(
                    f"{name}: {parameter}={value} is over the server's maximum of {cap}; "
                    "page through the results instead"
                )
        for parameter, decode in forms.items():
            if parameter in arguments:
                arguments[parameter] = decode(arguments[parameter])
        return getattr(obj, method_name)(*bound.args[1:], **bound.kwargs)

    return Entry(spec.kind, call)

"""The feature registry: definitions stored in the database, versioned, checked on change.

Each definition is a record of ``_feature_registry`` keyed ``kind:name`` holding the
definition and its version; every version is also kept in ``_feature_registry_history``.
A ``__version`` record changes on every ``apply``, so each process re-reads definitions only
when something changed (one point read per call otherwise).

Compatible changes: new features in a view, a new ttl, description or online flag, a
different feature list in a service. Incompatible (rejected): removing or re-typing a feature,
changing a view's entities or an entity's join keys or their type; the offline log and the
online store hold data in the old shape, so such a view needs a new name.

Definitions are checked when applied and again when read back: a record that fails any check
``apply`` makes (the identifier rule of every name, types, ttl, references between
definitions) is never used — asking for it raises ``StorageError`` naming it, listing raises
too, and everything else keeps working. So a record forged or damaged in storage cannot
bring a name into SQL or a path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from engramdb.errors import EngramError, InvalidArgument, NotFound, StorageError
from engramdb.features.definitions import Entity, FeatureService, FeatureView, Field, split_ref
from engramdb.features.names import check_name, is_name
from engramdb.records.model import Record
from engramdb.records.writes import Outcome

if TYPE_CHECKING:
    from engramdb.store import Store

__all__ = ["Registry", "Snapshot"]

REGISTRY = "_feature_registry"
HISTORY = "_feature_registry_history"
_KINDS: dict[type, str] = {Entity: "entity", FeatureView: "view", FeatureService: "service"}
_TYPES: dict[str, type] = {v: k for k, v in _KINDS.items()}
_WHAT = {"entity": "entity", "view": "feature view", "service": "feature service"}

Definition = Entity | FeatureView | FeatureService


class _Corrupt(Exception):
    """A registry record that does not hold a valid definition (forged or damaged)."""


@dataclass
class Snapshot:
    """The registry at one version: every valid definition, and what was refused.

    ``broken`` maps a registry key to why its record was not loaded: it failed the checks a
    definition passes when applied, or refers to something missing or broken. Nothing in
    ``broken`` ever reaches SQL or a path; asking for it raises ``StorageError``.
    """

    version: int
    entity: dict[str, Entity] = field(default_factory=dict)
    view: dict[str, FeatureView] = field(default_factory=dict)
    service: dict[str, FeatureService] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)

    def of(self, kind: str) -> dict[str, Any]:
        found: dict[str, Any] = getattr(self, kind)
        return found

    def refuse(self, key: str, reason: str) -> None:
        self.broken[key] = reason
        kind, _, name = key.partition(":")
        if kind in _TYPES:
            self.of(kind).pop(name, None)

    def lookup(self, kind: str, name: object) -> Any:
        """The valid definition ``name`` of ``kind``: InvalidArgument for a bad name,
        StorageError for a refused record, NotFound when there is none."""
        name = check_name(name, _WHAT[kind])
        found = self.of(kind).get(name)
        if found is not None:
            return found
        reason = self.broken.get(f"{kind}:{name}")
        if reason is not None:
            raise StorageError(
                f"the feature registry record of {_WHAT[kind]} {name!r} is corrupt or forged "
                f"and is not used: {reason}"
            )
        raise NotFound(f"no {_WHAT[kind]} {name!r}; apply() it first")

    def join_keys(self, view: FeatureView) -> list[str]:
        keys: list[str] = []
        for entity in view.entities:
            keys.extend(self.lookup("entity", entity).join_keys)
        return keys


def _load(record: Record) -> tuple[str, str, Definition]:
    """A registry record as a definition, checked exactly as ``apply`` checks one."""
    if type(record.key) is not str:
        raise _Corrupt(f"a registry key is a str, not {type(record.key).__name__}")
    kind, _, name = record.key.partition(":")
    if kind not in _TYPES:
        raise _Corrupt(f"unknown kind {kind!r}")
    if not is_name(name):
        raise _Corrupt("its name breaks the identifier rule")
    bins = record.bins
    if type(bins.get("version")) is not int or not isinstance(bins.get("definition"), dict):
        raise _Corrupt("it lacks a definition or a version")
    try:
        definition: Definition = msgspec.convert(bins["definition"], _TYPES[kind])
        definition.check()
    except (msgspec.ValidationError, EngramError, TypeError, ValueError) as e:
        raise _Corrupt(f"invalid definition ({e})"[:300]) from None
    if definition.name != name:
        raise _Corrupt(f"its key names {name!r} but it defines {definition.name!r}")
    return kind, name, definition


def _cross_check(snapshot: Snapshot) -> None:
    """Refuse definitions that refer to missing or refused ones (views, then services)."""
    for name, view in list(snapshot.view.items()):
        missing = [e for e in view.entities if e not in snapshot.entity]
        if missing:
            snapshot.refuse(f"view:{name}", f"entities {missing} are missing or refused")
            continue
        keys = snapshot.join_keys(view)
        if len(set(keys)) != len(keys) or {f.name for f in view.schema} & set(keys):
            snapshot.refuse(f"view:{name}", "its join keys clash")
    for name, service in list(snapshot.service.items()):
        for ref in service.features:
            view_name, feature = split_ref(ref)
            used = snapshot.view.get(view_name)
            if used is None or feature not in {f.name for f in used.schema}:
                snapshot.refuse(f"service:{name}", f"{ref!r} is missing or refused")
                break


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._records = store.records(REGISTRY)
        self._history = store.records(HISTORY)
        self._lock = threading.Lock()
        self._snapshot = Snapshot(-1)

    # reading -----------------------------------------------------------------------------

    def current(self) -> Snapshot:
        """The registry as of now, re-read only when some ``apply`` changed it.

        Every record is validated as it is read back: see ``Snapshot.broken``.
        """
        marker = self._records.get("__version")
        version = marker.generation if marker is not None else 0
        if version != self._snapshot.version:
            with self._lock:
                if version != self._snapshot.version:
                    fresh = Snapshot(version)
                    for record in self._records.iterate():
                        if record.key == "__version":
                            continue
                        try:
                            kind, name, definition = _load(record)
                        except _Corrupt as e:
                            key = str(record.key)[:200]
                            # a record of no known kind is reported under every kind
                            known = key.partition(":")[0] in _TYPES
                            fresh.broken[key if known else f"?:{key}"] = str(e)
                            continue
                        fresh.of(kind)[name] = definition
                    _cross_check(fresh)
                    self._snapshot = fresh
        return self._snapshot

    def entity(self, name: str) -> Entity:
        found: Entity = self.current().lookup("entity", name)
        return found

    def view(self, name: str) -> FeatureView:
        found: FeatureView = self.current().lookup("view", name)
        return found

    def service(self, name: str) -> FeatureService:
        found: FeatureService = self.current().lookup("service", name)
        return found

    def join_keys(self, view: FeatureView) -> list[str]:
        return self.current().join_keys(view)

    def definitions(self, kind: str) -> list[Any]:
        """Every definition of ``kind``; StorageError when the registry holds a refused one
        (a forged or damaged record is reported, never skipped in silence)."""
        snapshot = self.current()
        refused = sorted(k for k in snapshot.broken if k.partition(":")[0] in (kind, "?"))
        if refused:
            raise StorageError(
                f"the feature registry holds corrupt or forged records {refused[:5]}: "
                f"{snapshot.broken[refused[0]]}"
            )
        return sorted(snapshot.of(kind).values(), key=lambda d: d.name)

    def version_of(self, kind: str, name: str) -> int:
        check_name(name, _WHAT.get(kind, "definition"))
        record = self._records.get(f"{kind}:{name}")
        version = None if record is None else record.bins.get("version")
        return version if type(version) is int else 0

    # writing -----------------------------------------------------------------------------

    def apply(self, definitions: Sequence[Definition]) -> list[tuple[str, str, int]]:
        """Store definitions (all or none); returns ``(kind, name, version)`` for each."""
        if isinstance(definitions, Entity | FeatureView | FeatureService):
            definitions = [definitions]
        if not isinstance(definitions, Sequence) or isinstance(definitions, str | bytes):
            raise InvalidArgument("apply takes a list of Entity, FeatureView or FeatureService")
        for definition in definitions:
            if type(definition) not in _KINDS:
                raise InvalidArgument(
                    f"apply takes Entity, FeatureView or FeatureService, not {definition!r}"[:200]
                )
        snapshot = self.current()
        pending: dict[str, dict[str, Any]] = {k: dict(snapshot.of(k)) for k in _TYPES}
        ordered = sorted(definitions, key=lambda d: list(_KINDS).index(type(d)))
        for definition in ordered:
            kind = _KINDS[type(definition)]
            definition.check()
            if f"{kind}:{definition.name}" in snapshot.broken:
                snapshot.lookup(kind, definition.name)  # raises StorageError, saying why
            if isinstance(definition, FeatureView):
                for entity in definition.entities:
                    if entity not in pending["entity"]:
                        raise InvalidArgument(
                            f"view {definition.name!r} uses unknown entity {entity!r}"
                        )
                keys = [k for e in definition.entities for k in pending["entity"][e].join_keys]
                if len(set(keys)) != len(keys):
                    raise InvalidArgument(
                        f"view {definition.name!r}: its entities share a join key"
                    )
                clash = {f.name for f in definition.schema} & set(keys)
                if clash:
                    raise InvalidArgument(
                        f"view {definition.name!r}: {sorted(clash)} are join keys"
                    )
            if isinstance(definition, FeatureService):
                for ref in definition.features:
                    view_name, feature = split_ref(ref)
                    view = pending["view"].get(view_name)
                    if view is None or feature not in {f.name for f in view.schema}:
                        raise InvalidArgument(
                            f"service {definition.name!r}: unknown feature {ref!r}"
                        )
            old = pending[kind].get(definition.name)
            if old is not None:
                _check_compatible(old, definition)
            pending[kind][definition.name] = definition
        applied: list[tuple[str, str, int]] = []

        def write(current: Any, now: int, definition: Definition, kind: str) -> Any:
            previous = current.bins
            plain = _plain(definition)
            if previous is None:
                return Outcome(1, {"definition": plain, "version": 1}, 0)
            version = previous.get("version")
            if type(version) is not int:
                # Changed under us into something apply never writes: refuse, write nothing.
                raise StorageError(
                    f"the feature registry record of {_WHAT[kind]} {definition.name!r} is "
                    "corrupt or forged; not overwriting it"
                )
            if previous.get("definition") == plain:
                return Outcome(version)
            return Outcome(version + 1, {"definition": plain, "version": version + 1}, 0)

        items = [
            (f"{_KINDS[type(d)]}:{d.name}", lambda c, n, d=d: write(c, n, d, _KINDS[type(d)]))
            for d in ordered
        ]
        bump = ("__version", lambda c, n: Outcome(None, {"at": n}, 0))
        [results] = self.store.write([self.store.step(self._records, [*items, bump])])
        for definition, version in zip(ordered, results):
            kind = _KINDS[type(definition)]
            applied.append((kind, definition.name, version))
            self._history.put(f"{kind}:{definition.name}:{version:08d}", {
                "definition": _plain(definition), "version": version,
            })  # fmt: skip
        return applied


def _plain(definition: Any) -> Any:
    """A definition as stored: plain maps and lists (tuples read back as lists)."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(definition))


def _check_compatible(old: Any, new: Any) -> None:
    if isinstance(old, Entity) and (
        tuple(old.join_keys) != tuple(new.join_keys) or old.dtype != new.dtype
    ):
        raise InvalidArgument(
            f"incompatible change to entity {old.name!r}: its join keys or their type "
            "changed; data is stored by the old keys (use a new entity name)"
        )
    if isinstance(old, FeatureView):
        if tuple(old.entities) != tuple(new.entities):
            raise InvalidArgument(
                f"incompatible change to view {old.name!r}: its entities changed "
                "(use a new view name)"
            )
        new_fields: dict[str, Field] = {f.name: f for f in new.schema}
        for field in old.schema:
            replacement = new_fields.get(field.name)
            if replacement is None:
                raise InvalidArgument(
                    f"incompatible change to view {old.name!r}: feature {field.name!r} was "
                    "removed; its history stays in the offline log (use a new view name)"
                )
            if replacement.dtype != field.dtype:
                raise InvalidArgument(
                    f"incompatible change to view {old.name!r}: feature {field.name!r} "
                    f"changed type from {field.dtype} to {replacement.dtype}"
                )

"""The feature registry: definitions stored in the database, versioned, checked on change.

Each definition is a record of ``_feature_registry`` keyed ``kind:name`` holding the
definition and its version; every version is also kept in ``_feature_registry_history``.
A ``__version`` record changes on every ``apply``, so each process re-reads definitions only
when something changed (one point read per call otherwise).

Compatible changes: new features in a view, a new ttl, description or online flag, a
different feature list in a service. Incompatible (rejected): removing or re-typing a feature,
changing a view's entities or an entity's join keys or their type; the offline log and the
online store hold data in the old shape, so such a view needs a new name.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from engramdb.errors import InvalidArgument, NotFound
from engramdb.features.definitions import Entity, FeatureService, FeatureView, Field
from engramdb.records.writes import Outcome

if TYPE_CHECKING:
    from engramdb.database import Database

__all__ = ["Registry"]

REGISTRY = "_feature_registry"
HISTORY = "_feature_registry_history"
_KINDS: dict[type, str] = {Entity: "entity", FeatureView: "view", FeatureService: "service"}
_TYPES: dict[str, type] = {v: k for k, v in _KINDS.items()}

Definition = Entity | FeatureView | FeatureService


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._records = db._internal_records(REGISTRY)
        self._history = db._internal_records(HISTORY)
        self._lock = threading.Lock()
        self._seen: int | None = None
        self._cache: dict[str, dict[str, Any]] = {"entity": {}, "view": {}, "service": {}}

    # reading -----------------------------------------------------------------------------

    def _current(self) -> dict[str, dict[str, Any]]:
        marker = self._records.get("__version")
        version = marker.generation if marker is not None else 0
        if version != self._seen:
            with self._lock:
                fresh: dict[str, dict[str, Any]] = {"entity": {}, "view": {}, "service": {}}
                for record in self._records.iterate():
                    if record.key == "__version":
                        continue
                    kind, _, name = str(record.key).partition(":")
                    fresh[kind][name] = msgspec.convert(record.bins["definition"], _TYPES[kind])
                self._cache, self._seen = fresh, version
        return self._cache

    def entity(self, name: str) -> Entity:
        found = self._current()["entity"].get(name)
        if found is None:
            raise NotFound(f"no entity {name!r}; apply() it first")
        return found  # type: ignore[no-any-return]

    def view(self, name: str) -> FeatureView:
        found = self._current()["view"].get(name)
        if found is None:
            raise NotFound(f"no feature view {name!r}; apply() it first")
        return found  # type: ignore[no-any-return]

    def service(self, name: str) -> FeatureService:
        found = self._current()["service"].get(name)
        if found is None:
            raise NotFound(f"no feature service {name!r}; apply() it first")
        return found  # type: ignore[no-any-return]

    def join_keys(self, view: FeatureView) -> list[str]:
        keys: list[str] = []
        for entity in view.entities:
            keys.extend(self.entity(entity).join_keys)
        return keys

    def definitions(self, kind: str) -> list[Any]:
        return sorted(self._current()[kind].values(), key=lambda d: d.name)

    def version_of(self, kind: str, name: str) -> int:
        record = self._records.get(f"{kind}:{name}")
        return 0 if record is None else int(record.bins["version"])

    # writing -----------------------------------------------------------------------------

    def apply(self, definitions: Sequence[Definition]) -> list[tuple[str, str, int]]:
        """Store definitions (all or none); returns ``(kind, name, version)`` for each."""
        if isinstance(definitions, Entity | FeatureView | FeatureService):
            definitions = [definitions]
        pending: dict[str, dict[str, Any]] = {k: dict(v) for k, v in self._current().items()}
        ordered = sorted(definitions, key=lambda d: list(_KINDS).index(type(d)))
        for definition in ordered:
            kind = _KINDS.get(type(definition))
            if kind is None:
                raise InvalidArgument(
                    f"apply takes Entity, FeatureView or FeatureService, not {definition!r}"
                )
            definition.check()
            if kind == "view":
                assert isinstance(definition, FeatureView)
                for entity in definition.entities:
                    if entity not in pending["entity"]:
                        raise InvalidArgument(
                            f"view {definition.name!r} uses unknown entity {entity!r}"
                        )
                keys = [k for e in definition.entities for k in pending["entity"][e].join_keys]
                clash = {f.name for f in definition.schema} & set(keys)
                if clash:
                    raise InvalidArgument(
                        f"view {definition.name!r}: {sorted(clash)} are join keys"
                    )
            if kind == "service":
                assert isinstance(definition, FeatureService)
                for ref in definition.features:
                    view_name, _, feature = ref.partition(":")
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
            if previous is not None and previous["definition"] == _plain(definition):
                return Outcome(int(previous["version"]))
            version = 1 + (int(previous["version"]) if previous is not None else 0)
            return Outcome(version, {"definition": _plain(definition), "version": version}, 0)

        items = [
            (f"{_KINDS[type(d)]}:{d.name}", lambda c, n, d=d: write(c, n, d, _KINDS[type(d)]))
            for d in ordered
        ]
        bump = ("__version", lambda c, n: Outcome(None, {"at": n}, 0))
        results = self.db._write(self._records._plan_transform([*items, bump]))
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

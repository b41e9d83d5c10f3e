"""The inference-context call's parts and result (``db.context``): model types only.

A request names what one agent step needs; each part is a frozen dataclass that checks its
own types when made (a malformed part is ``InvalidArgument`` before anything runs, on every
face). The result has one field per part asked, each a ``Part``: its value, or the error
that part alone met (a timed-out part carries ``Timeout``).

Over the network, parts travel as tagged maps (the ``context`` wire form) and the result as
a map of ``{"value": ...}`` / ``{"error": "<coded reply>"}`` per part, so a client rebuilds
the same ``EngramError`` subclass the embedded call would hold. Nothing here imports a role
or numpy: clients and ``import engramdb`` load this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from engramdb.errors import EngramError, InvalidArgument, Timeout

if TYPE_CHECKING:
    from engramdb.features.model import OnlineResponse
    from engramdb.memory.model import MemoryHit
    from engramdb.records.keys import Key
    from engramdb.records.model import Record
    from engramdb.sessions.model import Session
    from engramdb.vectors.model import Hit

__all__ = ["Context", "FeatureRead", "MemoryQuery", "Part", "SearchQuery", "SessionRead"]

T = TypeVar("T")

# A remote caller's maxima for sizes nested inside parts (top-level ``limit=``s are capped
# by ``@remote(caps=...)``; these are capped where the server decodes the parts).
REMOTE_CAPS = {"keys": 10_000, "last_events": 10_000, "k": 10_000, "entity_rows": 10_000}


def _int(value: Any, what: str, low: int) -> None:
    if type(value) is not int or value < low:
        raise InvalidArgument(f"{what} must be an int >= {low}, not {value!r}")


def _str(value: Any, what: str, optional: bool = False) -> None:
    if not (optional and value is None) and (type(value) is not str or not value):
        raise InvalidArgument(f"{what} must be a non-empty str, not {value!r}")


def _mapping(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise InvalidArgument(f"{what} must be a mapping or None")


@dataclass(frozen=True, slots=True)
class SessionRead:
    """Session ``id`` with its last ``last_events`` events (None: every event it keeps)."""

    id: str
    last_events: int | None = None

    def __post_init__(self) -> None:
        _str(self.id, "SessionRead.id")
        if self.last_events is not None:
            _int(self.last_events, "SessionRead.last_events", 0)


@dataclass(frozen=True, slots=True)
class FeatureRead:
    """Online ``features`` (``"view:feature"``s or a service name) for ``entity_rows``, as
    ``db.features.get_online_features`` takes them."""

    features: Sequence[str] | str
    entity_rows: Sequence[Mapping[str, Any]]
    full_feature_names: bool = False

    def __post_init__(self) -> None:
        names = [self.features] if type(self.features) is str else self.features
        if not isinstance(names, Sequence) or not all(type(n) is str for n in names):
            raise InvalidArgument("FeatureRead.features is a str or a list of str")
        rows = self.entity_rows
        if isinstance(rows, Mapping | str) or not isinstance(rows, Sequence):
            raise InvalidArgument("FeatureRead.entity_rows is a list of {join key: value} maps")
        if not all(isinstance(row, Mapping) for row in rows):
            raise InvalidArgument("FeatureRead.entity_rows is a list of {join key: value} maps")
        if type(self.full_feature_names) is not bool:
            raise InvalidArgument("FeatureRead.full_feature_names must be a bool")


@dataclass(frozen=True, slots=True)
class MemoryQuery:
    """A search of ``db.memory`` (the database's embedder), as ``db.memory.search``."""

    query: str
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    k: int = 10
    filter: Mapping[str, Any] | None = None
    hybrid: bool = True

    def __post_init__(self) -> None:
        _str(self.query, "MemoryQuery.query")
        for scope in ("user_id", "agent_id", "run_id"):
            _str(getattr(self, scope), f"MemoryQuery.{scope}", optional=True)
        _int(self.k, "MemoryQuery.k", 1)
        _mapping(self.filter, "MemoryQuery.filter")
        if type(self.hybrid) is not bool:
            raise InvalidArgument("MemoryQuery.hybrid must be a bool")


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search of vector collection ``collection``: by ``vector``, by ``text`` (BM25), or
    hybrid (both given, fused by reciprocal rank), as the collection's ``search``,
    ``text_search`` and ``hybrid_search``."""

    collection: str
    text: str | None = None
    vector: Any = None
    k: int = 10
    filter: Mapping[str, Any] | None = None
    include: Sequence[str] = ("metadata", "text")

    def __post_init__(self) -> None:
        _str(self.collection, "SearchQuery.collection")
        _str(self.text, "SearchQuery.text", optional=True)
        if self.text is None and self.vector is None:
            raise InvalidArgument("SearchQuery needs a text, a vector, or both (hybrid)")
        _int(self.k, "SearchQuery.k", 1)
        _mapping(self.filter, "SearchQuery.filter")
        if isinstance(self.include, str) or not isinstance(self.include, Sequence):
            raise InvalidArgument("SearchQuery.include is a list of str")


@dataclass(frozen=True, slots=True)
class Part(Generic[T]):
    """One part of a context: its ``value``, or the ``error`` it met (then ``value`` is
    None). ``timed_out`` when it could not finish by the call's deadline."""

    value: T | None = None
    error: EngramError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def timed_out(self) -> bool:
        return isinstance(self.error, Timeout)

    def result(self) -> T:
        """The value, or raise the part's error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Context:
    """What ``db.context`` returns: one ``Part`` per part asked (None for those not asked).

    ``records``: per set, the records in the order asked (None for missing or expired).
    """

    records: Part[dict[str, list[Record | None]]] | None = None
    session: Part[Session | None] | None = None
    features: Part[OnlineResponse] | None = None
    memory: Part[list[MemoryHit]] | None = None
    search: Part[list[Hit]] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The server's reply form (``engramdb.remote.RESULTS``)."""
        from engramdb.protocol.errors import error_reply_text
        from engramdb.remote import RESULTS

        out: dict[str, Any] = {}
        for name in PARTS:
            part = getattr(self, name)
            if part is None:
                continue
            if part.error is not None:
                out[name] = {"error": error_reply_text(part.error)}
            else:
                value = part.value
                if name == "features":  # not a struct: its own wire form
                    value = RESULTS["OnlineResponse"].encode(value)
                out[name] = {"value": value}
        return out

    @classmethod
    def _from_reply(cls, raw: Any, owner: Any) -> Context:
        """The client's rebuild of ``to_wire``'s map (values by their types, errors as the
        ``EngramError`` subclasses they were)."""
        from engramdb.protocol.errors import error_from_reply

        decoders = _decoders()
        parts: dict[str, Part[Any]] = {}
        for name, item in raw.items():
            if name in decoders and isinstance(item, dict):
                if "error" in item:
                    parts[name] = Part(error=error_from_reply(str(item["error"])))
                else:
                    parts[name] = Part(decoders[name](item.get("value"), owner))
        return cls(**parts)


PARTS = tuple(field.name for field in dataclasses.fields(Context))
_DECODERS: dict[str, Any] = {}


def _decoders() -> dict[str, Any]:
    if not _DECODERS:
        from engramdb.client._core import decoder_for
        from engramdb.features.model import OnlineResponse
        from engramdb.memory.model import MemoryHit
        from engramdb.records.model import Record
        from engramdb.sessions.model import Session
        from engramdb.vectors.model import Hit

        types: dict[str, Any] = {
            "records": dict[str, list[Record | None]],
            "session": Session | None,
            "features": OnlineResponse,
            "memory": list[MemoryHit],
            "search": list[Hit],
        }
        _DECODERS.update({name: decoder_for(tp) for name, tp in types.items()})
    return _DECODERS


# wire form of the request parts (``engramdb.remote.FORMS["context"]``) ---------------------

_KINDS: dict[str, type[Any]] = {
    "session": SessionRead,
    "features": FeatureRead,
    "memory": MemoryQuery,
    "search": SearchQuery,
}


def part_out(value: Any) -> Any:
    """A part as it travels: a map tagged with its kind (records: a map of sets)."""
    if isinstance(value, Mapping):
        listed = (list(k) if _is_keys(k) else k for k in value.values())
        return {"part": "records", "sets": dict(zip(value, listed))}
    kind = next((k for k, cls in _KINDS.items() if type(value) is cls), None)
    if kind is None:
        return value  # not a part: the server says what is wrong with it
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if kind == "search" and value.vector is not None:
        from engramdb.remote import FORMS

        fields["vector"] = FORMS["vectors"].encode(value.vector)
    if kind == "features":
        fields["entity_rows"] = [dict(row) for row in value.entity_rows]
    return {"part": kind, **fields}


def part_in(raw: Any) -> Any:
    """A part a remote caller sent, checked by its type and the server's ``REMOTE_CAPS``."""
    if not isinstance(raw, dict) or raw.get("part") not in (*_KINDS, "records"):
        raise InvalidArgument("a context part is a map tagged with its kind")
    fields = {k: v for k, v in raw.items() if k != "part"}
    if raw["part"] == "records":
        sets = fields.get("sets")
        if not isinstance(sets, dict):
            raise InvalidArgument("records is a map of set name -> keys")
        check_records(sets)
        if sum(len(keys) for keys in sets.values()) > REMOTE_CAPS["keys"]:
            cap = REMOTE_CAPS["keys"]
            raise InvalidArgument(f"records: over the server's maximum of {cap} keys")
        return sets
    cls = _KINDS[raw["part"]]
    names = {f.name for f in dataclasses.fields(cls)}
    if not set(fields) <= names:
        raise InvalidArgument(f"unknown fields of {cls.__name__}: {sorted(set(fields) - names)}")
    try:
        part = cls(**fields)
    except TypeError as e:
        raise InvalidArgument(f"bad {cls.__name__}: {e}") from None
    for name, size in (("k", "k"), ("last_events", "last_events")):
        value = getattr(part, name, None)
        if type(value) is int and value > REMOTE_CAPS[size]:
            raise InvalidArgument(
                f"{cls.__name__}.{name}={value} is over the server's maximum of {REMOTE_CAPS[size]}"
            )
    if isinstance(part, FeatureRead) and len(part.entity_rows) > REMOTE_CAPS["entity_rows"]:
        raise InvalidArgument(
            f"FeatureRead: over the server's maximum of {REMOTE_CAPS['entity_rows']} entity rows"
        )
    return part


def _is_keys(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def check_records(records: Any) -> Mapping[str, Sequence[Key]]:
    """``records`` as a context asks for them: set name -> a list of keys."""
    if not isinstance(records, Mapping):
        raise InvalidArgument("records is a map of set name -> keys")
    for name, keys in records.items():
        if type(name) is not str:
            raise InvalidArgument(f"records: a set name is a str, not {name!r}")
        if not _is_keys(keys):
            raise InvalidArgument(f"records[{name!r}] is a list of keys")
    return records


def check_timeout(timeout: Any) -> float | None:
    """A context's deadline in seconds (None: wait for every part)."""
    if timeout is None:
        return None
    if type(timeout) not in (int, float) or not 0 < timeout < math.inf:
        raise InvalidArgument(
            f"timeout must be a positive number of seconds or None, not {timeout!r}"
        )
    return float(timeout)

"""Remote declarations: which public methods the server serves, and how.

A public method that a network client may call carries ``@remote(...)`` next to its
implementation. The declaration says how the server runs it and what a remote caller may
send; the server's dispatch (``server/handlers/native.py``) is built from these declarations
alone, so nothing else lists the methods and the faces cannot drift:

- ``kind``: ``read`` (a point read, answered on the event loop), ``write`` (its ``plan``
  method returns the write function the server submits to group commit) or ``slow`` (run on
  a worker thread: scans, searches, writes that also index).
- ``local_only``: parameters a remote caller may not send, because they name a server-side
  resource (a file path) or cannot travel (a function). Sending one is ``InvalidArgument``.
- ``caps``: server-side maxima of size parameters (``limit``, ``k``...). Embedded callers
  own their memory; a remote caller asking for more than the cap gets ``InvalidArgument``
  naming it, never a reply that would stall the server or other clients.
- ``writes``: whether the call changes data (decides retry safety and pipelining).
- ``wire``: parameters that travel in a wire form (``FORMS``: vectors as float32 arrays,
  tables as Arrow IPC...): the client encodes the argument with the form's ``encode``, the
  server decodes it with ``decode`` before calling the embedded method, which then validates
  it as for any caller. Results go the other way, by type (``RESULTS``). Everything else
  travels as msgpack unchanged (numpy arrays as an extension; dataclasses as maps). Heavy
  libraries (numpy, pyarrow) load only when a form that needs them is used.

Every other parameter of the signature may be sent. The server binds the arguments to the
signature before calling, so an unknown or missing argument is ``InvalidArgument`` while a
``TypeError`` raised inside the method stays a bug, reported as such.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

from engramdb import context
from engramdb.errors import InvalidArgument

__all__ = ["FORMS", "RESULTS", "Form", "Kind", "RemoteSpec", "remote", "remote_methods"]

Kind = Literal["read", "write", "slow"]
F = TypeVar("F", bound=Callable[..., Any])

# A remote caller never gets more than this many items from one call unless a method says
# otherwise: enough for any page, small enough that one reply cannot stall the server.
DEFAULT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    kind: Kind
    plan: str | None = None
    local_only: frozenset[str] = frozenset()
    caps: tuple[tuple[str, int], ...] = ()
    writes: bool = False
    wire: tuple[tuple[str, str], ...] = ()


def remote(
    kind: Kind,
    *,
    plan: str | None = None,
    local_only: Iterable[str] = (),
    caps: Mapping[str, int] | None = None,
    writes: bool | None = None,
    wire: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Declare the decorated public method remotely callable (see the module docstring).

    It only marks the function: embedded calls pay nothing for it.
    """
    if kind == "write" and plan is None:
        raise TypeError("a write declaration names the method that plans it")
    spec = RemoteSpec(
        kind,
        plan,
        frozenset(local_only),
        tuple(sorted((caps or {}).items())),
        kind == "write" if writes is None else writes,
        tuple(sorted((wire or {}).items())),
    )

    def mark(fn: F) -> F:
        fn.__remote__ = spec  # type: ignore[attr-defined]
        return fn

    return mark


def remote_methods(cls: type) -> dict[str, tuple[Callable[..., Any], RemoteSpec]]:
    """The declared methods of ``cls`` (inherited ones included), by name."""
    found: dict[str, tuple[Callable[..., Any], RemoteSpec]] = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        fn = getattr(cls, name, None)
        spec = getattr(fn, "__remote__", None)
        if isinstance(spec, RemoteSpec):
            found[name] = (fn, spec)  # type: ignore[assignment]
    return found


# wire forms ---------------------------------------------------------------------------------------


class Form(NamedTuple):
    encode: Callable[[Any], Any]  # client side, before msgpack
    decode: Callable[[Any], Any]  # server side, after msgpack


def _same(value: Any) -> Any:
    return value


# vectors: float32 arrays (compact binary), one per row --------------------------------------


def _vectors_out(value: Any) -> Any:
    from engramdb.index.vector import as_float32

    array = as_float32(value)  # InvalidArgument for anything but real numbers
    if array.ndim == 1:
        return array
    if array.ndim != 2:
        raise InvalidArgument(f"vectors must be 1-D or 2-D, got shape {tuple(array.shape)}")
    return list(array)


# tables: Arrow IPC streams --------------------------------------------------------------------


def _table_out(value: Any) -> bytes:
    import pyarrow as pa

    from engramdb.features.frames import to_arrow

    table = to_arrow(value)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _table_in(data: Any) -> Any:
    import pyarrow as pa

    if type(data) is not bytes:
        # A str here would name a server-side file, which a remote caller may not read.
        raise InvalidArgument("expected an Arrow IPC stream (bytes)")
    try:
        return pa.ipc.open_stream(data).read_all()
    except pa.ArrowInvalid as e:
        raise InvalidArgument(f"not an Arrow IPC stream: {e}") from None


# feature definitions: maps tagged with their kind -----------------------------------------


def _definitions_out(value: Any) -> Any:
    from engramdb.features.definitions import Entity, FeatureService, FeatureView

    kinds = {Entity: "entity", FeatureView: "view", FeatureService: "service"}
    items = [value] if type(value) in kinds else value
    out = []
    for item in items:
        kind = kinds.get(type(item))
        if kind is None:
            return value  # not a definition: the server says what is wrong with it
        out.append({"kind": kind, **dataclasses.asdict(item)})
    return out


def _definitions_in(raw: Any) -> Any:
    import msgspec

    from engramdb.features.definitions import Entity, FeatureService, FeatureView

    kinds = {"entity": Entity, "view": FeatureView, "service": FeatureService}
    if not isinstance(raw, list):
        raise InvalidArgument("apply takes a list of definitions")
    out: list[Any] = []
    for item in raw:
        if not isinstance(item, dict) or item.get("kind") not in kinds:
            raise InvalidArgument("each definition is a map with kind entity, view or service")
        fields = {k: v for k, v in item.items() if k != "kind"}
        try:
            out.append(msgspec.convert(fields, kinds[item["kind"]]))
        except msgspec.ValidationError as e:
            raise InvalidArgument(f"bad definition: {e}") from None
    return out


# record operations: structs out, structs back in ------------------------------------------


def _ops_in(raw: Any) -> Any:
    import msgspec

    from engramdb.records.ops import Op

    try:
        return msgspec.convert(raw, list[Op])
    except msgspec.ValidationError as e:
        raise InvalidArgument(f"invalid operations: {e}") from None


FORMS: dict[str, Form] = {
    "vectors": Form(_vectors_out, _same),
    "table": Form(_table_out, _table_in),
    "definitions": Form(_definitions_out, _definitions_in),
    "ops": Form(_same, _ops_in),
    "context": Form(context.part_out, context.part_in),  # the parts of db.context
}


# results: type name -> (server: value -> msgpack-able, client: reply -> value) ------------


def _fields(*names: str) -> Callable[[Any], Any]:
    return lambda value: {name: getattr(value, name) for name in names}


def _model(name: str, **extra: Any) -> Callable[[Any], Any]:
    def build(raw: Any) -> Any:
        cls = getattr(importlib.import_module("engramdb.features.model"), name)
        return cls(**raw, **extra) if isinstance(raw, dict) else cls(_table_in(raw), **extra)

    return build


RESULTS: dict[str, Form] = {
    "Collection": Form(lambda collection: collection.info, _same),  # the client's handle
    "Context": Form(lambda result: result.to_wire(), _same),
    "IngestResult": Form(
        _fields("view", "rows", "online_written"), _model("IngestResult", offline_file=None)
    ),
    "OnlineResponse": Form(_fields("columns", "statuses"), _model("OnlineResponse")),
    "HistoricalResult": Form(
        lambda result: _table_out(result.to_arrow()), _model("HistoricalResult", path=None)
    ),
}

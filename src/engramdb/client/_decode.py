"""Results rebuilt from msgpack by their annotated types.

A remote method's reply is plain msgpack (maps, lists, scalars, numpy arrays). The client
rebuilds the public type the embedded method returns from the method's return annotation:
``decoder_for(list[Record | None])`` makes a function that turns the reply into records.
msgspec cannot do this itself (record keys are ``str | bytes | int``, a union msgspec
refuses), so this walks the type once, at import, and builds plain functions.

Types the walk cannot build from fields come in the wire form ``engramdb.wire.RESULTS``
names, or are client handles (a collection) that build themselves with ``_from_reply``.
"""

from __future__ import annotations

import builtins
import collections.abc
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from engramdb.wire import RESULTS

__all__ = ["Decoder", "decoder_for"]

Decoder = Callable[[Any, Any], Any]  # (reply, owner) -> value

_PLAIN = frozenset({int, float, str, bytes, bool, type(None), object})


def _same(raw: Any, owner: Any) -> Any:
    return raw


def decoder_for(tp: Any) -> Decoder:
    """A function rebuilding a value of type ``tp`` from its msgpack form."""
    if isinstance(tp, type) and hasattr(tp, "_from_reply"):
        return tp._from_reply  # type: ignore[no-any-return]
    if isinstance(tp, type) and tp.__name__ in RESULTS:
        decode = RESULTS[tp.__name__].decode
        return lambda raw, owner: decode(raw)
    if tp is Any or tp in _PLAIN or isinstance(tp, typing.TypeVar):
        return _same
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return _same
    if origin is typing.Union or origin is types.UnionType:
        decoders = [decoder_for(a) for a in args if a is not type(None)]
        if all(d is _same for d in decoders):
            return _same  # e.g. str | bytes | int: msgpack already gives the right one
        if len(decoders) == 1:
            inner = decoders[0]
            return lambda raw, owner: None if raw is None else inner(raw, owner)
        raise TypeError(f"cannot decode the union {tp}: its members need telling apart")
    if origin in (list, builtins.list, collections.abc.Sequence, collections.abc.Iterable):
        item = decoder_for(args[0]) if args else _same
        if item is _same:
            return lambda raw, owner: list(raw)
        return lambda raw, owner: [item(x, owner) for x in raw]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = decoder_for(args[0])
            return lambda raw, owner: tuple(item(x, owner) for x in raw)
        parts = [decoder_for(a) for a in args]
        return lambda raw, owner: tuple(d(x, owner) for d, x in zip(parts, raw))
    if origin in (dict, collections.abc.Mapping):
        value = decoder_for(args[1]) if args else _same
        if value is _same:
            return lambda raw, owner: dict(raw)
        return lambda raw, owner: {k: value(v, owner) for k, v in raw.items()}
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _fields(tp, tp.__struct_fields__)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _fields(tp, tuple(f.name for f in dataclasses.fields(tp)))
    if isinstance(tp, type) and tp is not object and tp.__module__ == "builtins":
        return _same
    raise TypeError(f"no decoder for {tp!r}: give it a wire form in engramdb.wire.RESULTS")


def _fields(cls: type, names: tuple[str, ...]) -> Decoder:
    hints = typing.get_type_hints(cls)
    decoders = {name: decoder_for(hints[name]) for name in names}
    if all(d is _same for d in decoders.values()):
        return lambda raw, owner: cls(**raw)

    def build(raw: Any, owner: Any) -> Any:
        return cls(
            **{
                name: decoders[name](value, owner) if name in decoders else value
                for name, value in raw.items()
            }
        )

    return build

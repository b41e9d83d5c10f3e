"""What the generated client classes stand on: handles, calls, and the two flow drivers.

A handle (a remote record set, collection, the database itself...) knows its ``owner`` (the
transport: a network client, or an in-process database for ``engramdb.aio.open``) and its
``address``: the arguments that name it (a set's name, a collection's name) and go first in
every call it makes.

What involves several calls is written once, in ``client/_handles.py``, as a generator of
effects: ``("call", method, args, kwargs)``, ``("sleep", "", (seconds,), {})`` or
``("items", "", (values,), {})`` (values a streamed method yields). ``Calls`` drives it with
blocking calls, ``AsyncCalls`` with awaited ones; a failed call is thrown back into it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any, TypeVar

from engramdb.errors import EngramError
from engramdb.wire import FORMS

__all__ = ["AsyncCalls", "Calls", "Flow", "Handle", "awaited", "flow", "local", "stream", "wire"]

Effect = tuple[str, str, tuple[Any, ...], dict[str, Any]]
Flow = Generator[Effect, Any, Any]
F = TypeVar("F", bound=Callable[..., Any])


def _mark(kind: str) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.__client__ = kind  # type: ignore[attr-defined]
        return fn

    return mark


# How the generator makes a public ``name`` of a handle's ``_name``: ``local`` calls it (not
# awaited on any face), ``awaited`` calls it and awaits it on asyncio faces (each face defines
# it), ``flow`` drives the flow it returns, ``stream`` iterates the values its flow streams.
local, awaited, flow, stream = _mark("local"), _mark("awaited"), _mark("flow"), _mark("stream")


def wire(form: str, value: Any) -> Any:
    """``value`` in the wire form the declaration names (see ``engramdb.wire``)."""
    return FORMS[form].encode(value)


class Handle:
    """A handle's owner and address, and what a call sends."""

    _face = 0  # 0 sync, 1 asyncio: the index of this face's classes in KINDS
    _address: tuple[Any, ...] = ()

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def _wire(self, form: str, value: Any) -> Any:
        # The owner decides: a network client encodes, an in-process one passes values as
        # they are (no Arrow round trip inside one process).
        return getattr(self._owner, "_encode", wire)(form, value)

    def _sent(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return kwargs  # a memory store with its own embedder adds the embedding

    def _kind(self, name: str) -> Any:
        """This face's class (or factory) for the embedded type ``name``."""
        from engramdb.client._generated import KINDS

        return KINDS[name][self._face]


def _next(flow: Flow, reply: Any, error: EngramError | None, out: list[Any]) -> Effect | None:
    """The flow's next effect, or None when it is done (its result appended to ``out``)."""
    try:
        return flow.throw(error) if error else flow.send(reply)
    except StopIteration as done:
        out.append(done.value)
        return None


class Calls(Handle):
    """Base of the generated sync classes."""

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        sent = self._sent(method, args, kwargs)
        return self._owner._request(method, (*self._address, *args), sent)

    def _stream(self, flow: Flow, out: list[Any]) -> Iterator[Any]:
        reply: Any = None
        error: EngramError | None = None
        while (effect := _next(flow, reply, error, out)) is not None:
            kind, method, args, kwargs = effect
            reply, error = None, None
            if kind == "items":
                yield from args[0]
            elif kind == "sleep":
                time.sleep(args[0])
            else:
                try:
                    reply = self._owner._request(method, args, kwargs)
                except EngramError as e:
                    error = e

    def _run(self, flow: Flow) -> Any:
        out: list[Any] = []
        for _ in self._stream(flow, out):
            pass
        return out[0]


class AsyncCalls(Handle):
    """Base of the generated asyncio classes."""

    _face = 1

    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        sent = self._sent(method, args, kwargs)
        return await self._owner._request(method, (*self._address, *args), sent)

    async def _stream(self, flow: Flow, out: list[Any]) -> AsyncIterator[Any]:
        reply: Any = None
        error: EngramError | None = None
        while (effect := _next(flow, reply, error, out)) is not None:
            kind, method, args, kwargs = effect
            reply, error = None, None
            if kind == "items":
                for value in args[0]:
                    yield value
            elif kind == "sleep":
                await asyncio.sleep(args[0])
            else:
                try:
                    reply = await self._owner._request(method, args, kwargs)
                except EngramError as e:
                    error = e

    async def _run(self, flow: Flow) -> Any:
        out: list[Any] = []
        async for _ in self._stream(flow, out):
            pass
        return out[0]

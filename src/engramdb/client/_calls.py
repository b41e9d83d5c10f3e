"""What the generated client methods stand on: a ``_call`` that reaches the database.

A handle (a remote record set, collection, the database itself...) knows its ``owner`` (the
transport: a network client, or an in-process database for ``engramdb.aio.open``) and its
``address``: the arguments that name it (a set's name, a collection's name) and go first in
every call it makes.
"""

from __future__ import annotations

from typing import Any

from engramdb.wire import FORMS

__all__ = ["AsyncCalls", "Calls", "wire"]


def wire(form: str, value: Any) -> Any:
    """``value`` in the wire form the declaration names (see ``engramdb.wire``)."""
    return FORMS[form].encode(value)


class Calls:
    """Base of the generated sync methods."""

    _owner: Any
    _address: tuple[Any, ...] = ()

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._owner._request(method, (*self._address, *args), kwargs)


class AsyncCalls:
    """Base of the generated asyncio methods."""

    _owner: Any
    _address: tuple[Any, ...] = ()

    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await self._owner._request(method, (*self._address, *args), kwargs)

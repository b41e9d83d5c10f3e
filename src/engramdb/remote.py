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
- ``wire``: parameters that travel in a wire form (``engramdb/wire.py``: vectors as float32
  arrays, tables as Arrow IPC, ...), encoded by the client and decoded by the server.

Every other parameter of the signature may be sent. The server binds the arguments to the
signature before calling, so an unknown or missing argument is ``InvalidArgument`` while a
``TypeError`` raised inside the method stays a bug, reported as such.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["Kind", "RemoteSpec", "remote", "remote_methods"]

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

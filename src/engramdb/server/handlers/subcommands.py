"""Container commands (CLIENT, CONFIG, PUBSUB...): a table of subcommands per command.

Each subcommand is declared once, next to its handler, with its Redis arity (counting the
command and subcommand names), flags and a one-line summary; dispatch, arity errors,
``<COMMAND> HELP`` and what COMMAND INFO/DOCS/LIST report (``client|kill``...) all come
from that declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engramdb.server.commands import Reply

if TYPE_CHECKING:
    from engramdb.server.connection import Connection

__all__ = ["CONTAINERS", "Container", "Subcommand"]

Handler = Callable[["Connection", list[bytes]], Any]


@dataclass(frozen=True, slots=True)
class Subcommand:
    parent: str
    name: str
    arity: int
    flags: frozenset[str]
    summary: str
    handler: Handler

    @property
    def full_name(self) -> str:
        return f"{self.parent}|{self.name}"


class Container:
    """The subcommands of one command; ``dispatch`` is the command's handler."""

    def __init__(self, parent: str) -> None:
        self.parent = parent
        self.subcommands: dict[bytes, Subcommand] = {}
        CONTAINERS[parent] = self

    def __call__(
        self, name: str, arity: int, *flags: str, summary: str
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.subcommands[name.upper().encode()] = Subcommand(
                self.parent, name.lower(), arity, frozenset(flags), summary, handler
            )
            return handler

        return register

    def metric(self, args: list[bytes]) -> str:
        """What a call is counted under: ``client|list`` (only declared names, so the set
        of counters stays bounded whatever clients send)."""
        sub = self.find(args[1:])
        return sub.full_name if sub is not None else self.parent

    def find(self, args: list[bytes]) -> Subcommand | None:
        return self.subcommands.get(args[0].upper()) if args else None

    def dispatch(self, conn: Connection, args: list[bytes]) -> Any:
        """Run ``args`` (after the command name) as a subcommand."""
        sub = self.find(args)
        if sub is None:
            if args and args[0].upper() == b"HELP" and len(args) == 1:
                return self.help()
            shown = args[0].decode(errors="replace") if args else ""
            raise Reply(f"ERR unknown subcommand '{shown[:128]}'. Try {self.parent.upper()} HELP.")
        total = len(args) + 1
        if (sub.arity > 0 and total != sub.arity) or (sub.arity < 0 and total < -sub.arity):
            raise Reply(f"ERR wrong number of arguments for '{sub.full_name}' command")
        return sub.handler(conn, args[1:])

    def help(self) -> list[bytes]:
        lines = [f"{self.parent.upper()} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"]
        for sub in self.subcommands.values():
            lines.append(sub.name.upper())
            lines.append(f"    {sub.summary}")
        lines.append("HELP")
        lines.append("    Print this help.")
        return [line.encode() for line in lines]


CONTAINERS: dict[str, Container] = {}

"""Command handlers. Importing this package fills the command table."""

from engramdb.server.handlers import (
    admin,
    hashes,
    keyspace,
    lists,
    native,
    scripting,
    sets,
    strings,
    transactions,
    zsets,
)

__all__ = [
    "admin",
    "hashes",
    "keyspace",
    "lists",
    "native",
    "scripting",
    "sets",
    "strings",
    "transactions",
    "zsets",
]

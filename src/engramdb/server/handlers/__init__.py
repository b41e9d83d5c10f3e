"""Command handlers. Importing this package fills the command table."""

from engramdb.server.handlers import (
    admin,
    dump,
    hashes,
    introspection,
    keyspace,
    lists,
    native,
    pubsub,
    scripting,
    sets,
    sort,
    strings,
    transactions,
    zsets,
)

__all__ = [
    "admin",
    "dump",
    "hashes",
    "introspection",
    "keyspace",
    "lists",
    "native",
    "pubsub",
    "scripting",
    "sets",
    "sort",
    "strings",
    "transactions",
    "zsets",
]

"""Command handlers. Importing this package fills the command table."""

from engramdb.server.handlers import admin, native, strings

__all__ = ["admin", "native", "strings"]

"""The one identifier rule of the feature store, and the one way a name enters SQL.

Every name that can reach DuckDB SQL or a file path — entity, join key, view, feature and
service names — passes ``check_name`` twice: when a definition is applied and again when it
is read back from the registry (a record forged or corrupted in storage must never reach SQL
or the filesystem). The rule is deliberately narrow: ASCII letters, digits and ``_``, 1-63
characters, not starting with a digit or ``__`` (engramdb's own columns start with ``__``).
Such a name can be neither a path component like ``..`` nor SQL syntax.

SQL still never trusts that: identifiers go through ``quote`` (double quotes, inner quotes
doubled), values go as query parameters.
"""

from __future__ import annotations

import re

from engramdb.errors import InvalidArgument

__all__ = ["MAX_NAME", "check_name", "is_name", "quote"]

MAX_NAME = 63
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # ASCII only: [A-Za-z], never \w


def is_name(name: object) -> bool:
    """Whether ``name`` follows the identifier rule."""
    return type(name) is str and _NAME.fullmatch(name) is not None and not name.startswith("__")


def check_name(name: object, what: str) -> str:
    """``name`` if it follows the identifier rule, else ``InvalidArgument`` naming ``what``."""
    if not is_name(name):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise InvalidArgument(
            f"{what} name must be 1-{MAX_NAME} ASCII letters, digits or '_' (not starting with "
            f"a digit or '__'); got {shown}"
        )
    assert isinstance(name, str)
    return name


def quote(identifier: str) -> str:
    """``identifier`` as a quoted SQL identifier (inner double quotes doubled).

    Used for every identifier in every statement, even those ``check_name`` already passed.
    """
    if "\x00" in identifier:
        raise InvalidArgument("a column name cannot contain NUL")
    return '"' + identifier.replace('"', '""') + '"'

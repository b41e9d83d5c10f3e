"""Redis glob patterns (KEYS, SCAN MATCH) on bytes, compiled to regular expressions.

The rules are those of Redis' ``stringmatchlen``: ``*`` any run of bytes, ``?`` one byte,
``[abc]`` / ``[^abc]`` / ``[a-z]`` byte classes (a reversed range ``[z-a]`` is the same
range, ``\\`` escapes a byte inside a class, an unclosed ``[`` runs to the end of the
pattern), ``\\x`` a literal ``x`` and a trailing ``\\`` a literal backslash. Redis compares
class ranges as C ``char`` values, which are signed: ``[a-\\xff]`` therefore holds nothing
above ``\\x7f``; so does ours. Classes are computed by walking the pattern exactly as
Redis does, then written out as explicit byte sets, so odd patterns such as ``[a-]`` or
``[]`` mean here what they mean there.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

__all__ = ["compile_pattern"]


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def _byte_class(pattern: bytes, i: int) -> tuple[bytes, int]:
    """The regex of the class starting after ``[`` at ``i``, and the index past it."""
    n = len(pattern)
    negate = i < n and pattern[i] == 0x5E  # ^
    if negate:
        i += 1
    members: set[int] = set()
    while True:
        if i < n and pattern[i] == 0x5C and n - i >= 2:  # backslash escapes one byte
            i += 1
            members.add(pattern[i])
        elif i < n and pattern[i] == 0x5D:  # ]
            break
        elif i >= n:
            break  # unclosed: the class runs to the end of the pattern
        elif n - i >= 3 and pattern[i + 1] == 0x2D:  # a-z
            start, end = _signed(pattern[i]), _signed(pattern[i + 2])
            if start > end:
                start, end = end, start
            members.update(b for b in range(256) if start <= _signed(b) <= end)
            i += 2
        else:
            members.add(pattern[i])
        i += 1
    if negate:
        members = set(range(256)) - members
    if not members:
        return b"(?!)", i + 1
    return b"[" + b"".join(re.escape(bytes([b])) for b in sorted(members)) + b"]", i + 1


def _translate(pattern: bytes) -> bytes:
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # *
            while i + 1 < n and pattern[i + 1] == 0x2A:
                i += 1
            out.append(b".*")
        elif c == 0x3F:  # ?
            out.append(b".")
        elif c == 0x5B:  # [
            regex, i = _byte_class(pattern, i + 1)
            out.append(regex)
            continue
        else:
            if c == 0x5C and i + 1 < n:  # \x is a literal x
                i += 1
            out.append(re.escape(pattern[i : i + 1]))
        i += 1
    return b"".join(out)


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: bytes) -> Callable[[bytes], bool]:
    """A predicate telling whether a key matches the glob ``pattern``."""
    if pattern == b"*":
        return lambda key: True
    regex = re.compile(b"(?s)" + _translate(pattern))

    def matches(key: bytes) -> bool:
        if not key:
            # Redis matches nothing against an empty key but the empty pattern ("*" is
            # special-cased above, "**" is not).
            return not pattern
        return regex.fullmatch(key) is not None

    return matches

"""SCAN cursors that fit in 64 bits (clients keep cursors in a signed or unsigned 64-bit
integer) for a key space ordered by key, where a position is a whole key of up to 1 KiB.

A cursor is a 63-bit number: the first 6 bytes of the last key returned (in its encoded,
ordered form; 48 bits) and a 15-bit tag. A table of ``SLOTS`` fixed-size slots maps a
cursor to that exact key, so resuming is exact. The table is a file in the data directory,
memory-mapped by every server process serving it: a cursor resolves in another worker
process, and after a restart. Memory is bounded (the file is ``SLOTS`` x 1,040 bytes,
whatever clients send) and nothing in it is trusted: a slot carries its cursor and a
checksum, and one that does not match is treated as missing.

A cursor the table no longer holds (its slot was reused by a newer cursor, or it was never
issued) still resumes correctly, from its 6-byte prefix: every key after the last one
returned is at or after that prefix, so none is missed, but keys between the prefix and
the last key may come again, which Redis' SCAN contract allows. The guarantee is Redis':
a key present for the whole scan is returned at least once; one added or removed during it
may or may not be.

Two different keys never share a live cursor: issuing probes for a tag whose slot does not
hold another key under the same cursor, under an exclusive lock on the file (readers take
none: a slot half-written by another process fails its checksum).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterator

__all__ = ["SLOTS", "CursorTable"]

SLOTS = 16_384
FILE_NAME = "scan-cursors"
_PREFIX_BYTES = 6
_TAG_BITS = 15
_TAG_MASK = (1 << _TAG_BITS) - 1
_PREFIX_MASK = (1 << 8 * _PREFIX_BYTES) - 1  # a forged 64-bit cursor has a 16th bit more
_HEAD = struct.Struct("<QHI")  # cursor, position length, crc32 of cursor and position
_SLOT = 1040
# An encoded key: its type byte and up to 1 KiB (the default key limit). A longer one (a
# raised limit) is not stored: its cursor resumes from the prefix, correct if less exact.
_MAX_POSITION = _SLOT - _HEAD.size


class CursorTable:
    """Issues 63-bit SCAN cursors for positions (encoded last keys) and resolves them.

    ``directory`` is where the shared table lives (the data directory); None keeps it in
    this process's memory (a database without a path).
    """

    def __init__(self, directory: str | None, slots: int = SLOTS) -> None:
        self._slots = slots
        size = slots * _SLOT
        self._fd = -1
        if directory is None:
            self._map = mmap.mmap(-1, size)
        else:
            path = os.path.join(directory, FILE_NAME)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if os.fstat(self._fd).st_size != size:
                os.ftruncate(self._fd, size)  # sparse: pages exist once written
            self._map = mmap.mmap(self._fd, size)
        self._lock = threading.Lock()  # SCAN pages are read on worker threads

    def close(self) -> None:
        self._map.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            if self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if self._fd >= 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read(self, cursor: int) -> bytes | None:
        offset = (cursor % self._slots) * _SLOT
        held, length, crc = _HEAD.unpack_from(self._map, offset)
        if held != cursor or length > _MAX_POSITION:
            return None
        start = offset + _HEAD.size
        position = bytes(self._map[start : start + length])
        if crc != zlib.crc32(position, cursor & 0xFFFFFFFF):
            return None  # torn by a concurrent writer, or garbage
        return position

    def issue(self, position: bytes) -> int:
        """The cursor that resumes after ``position`` (an encoded key, never empty)."""
        assert position
        prefix = int.from_bytes(position[:_PREFIX_BYTES].ljust(_PREFIX_BYTES, b"\0"), "big")
        tag = zlib.crc32(position) & _TAG_MASK
        with self._exclusive():
            for _ in range(_TAG_MASK + 1):
                cursor = (prefix << _TAG_BITS) | tag
                held = self._read(cursor)
                if cursor and (held is None or held == position):
                    break
                tag = (tag + 1) & _TAG_MASK  # that cursor means another key: next tag
            if len(position) > _MAX_POSITION:
                return cursor
            offset = (cursor % self._slots) * _SLOT
            start = offset + _HEAD.size
            self._map[start : start + len(position)] = position
            crc = zlib.crc32(position, cursor & 0xFFFFFFFF)
            _HEAD.pack_into(self._map, offset, cursor, len(position), crc)
        return cursor

    def resolve(self, cursor: int) -> bytes | None:
        """Where a scan resumes: after the returned position (an encoded key: the last one
        returned, or one at or before it when the cursor is no longer held); None starts
        from the beginning."""
        position = self._read(cursor)
        if position is not None:
            return position
        prefix = ((cursor >> _TAG_BITS) & _PREFIX_MASK).to_bytes(_PREFIX_BYTES, "big")
        prefix = prefix.rstrip(b"\0")
        # Resuming *after* the prefix minus its last byte starts at or before the prefix.
        return prefix[:-1] or None

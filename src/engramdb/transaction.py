"""``db.transaction()``: reads and writes across any sets, committed all or nothing.

Optimistic, like Redis' WATCH/MULTI/EXEC: reads go to the database at once and remember
the generation they saw (0 for a missing record); writes are staged. ``commit()`` sends
both to ``db.commit(reads, writes)``, which applies every write in one atomic, durable
write, and only if no record read has changed since (generations are never reused, so a
delete and re-create counts as a change). Otherwise nothing is written and ``Conflict``
names the record that moved; run the transaction again. Over the network the commit is one
round trip.

Reads see the database as committed, not the transaction's own staged writes. Staging
validates nothing: the commit does, with the same code as each single call, and a bad write
fails the whole commit.

The staging is written once; ``Transaction`` reads and commits synchronously,
``AsyncTransaction`` awaits them (``async with db.transaction() as tx``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engramdb.errors import InvalidArgument
from engramdb.records.keys import Key
from engramdb.records.model import Record
from engramdb.records.ops import Op

__all__ = ["AsyncTransaction", "Transaction", "TransactionCollection", "TransactionSet"]

# A staged write: [method, set name, key (or items/keys for the *_many), args, kwargs].
Staged = list[Any]


def _options(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None and v is not False}


class TransactionSet:
    """One set's calls inside a transaction (``tx.records(name)``). Writes are staged and
    return None; their results come back from ``commit()``, in the order staged."""

    def __init__(self, tx: Any, name: str) -> None:
        self._tx = tx
        self.name = name

    def _stage(self, method: str, target: Any, *args: Any, **kwargs: Any) -> None:
        self._tx._stage([method, self.name, target, list(args), _options(**kwargs)])

    def get(self, key: Key) -> Any:
        """The record (remembered with its generation); awaitable in an async transaction."""
        return self._tx._read(self.name, key)

    def get_many(self, keys: Sequence[Key]) -> Any:
        """The records, in request order (each remembered with its generation); awaitable in
        an async transaction."""
        return self._tx._read_many(self.name, keys)

    def put(
        self,
        key: Key,
        bins: Mapping[str, Any],
        *,
        ttl: float | None = None,
        expect_generation: int | None = None,
        create_only: bool = False,
        update_only: bool = False,
    ) -> None:
        """Stage ``records.put``."""
        self._stage(
            "put", key, dict(bins), ttl=ttl, expect_generation=expect_generation,
            create_only=create_only, update_only=update_only,
        )  # fmt: skip

    def update(
        self,
        key: Key,
        bins: Mapping[str, Any],
        *,
        ttl: float | None = None,
        expect_generation: int | None = None,
        create_only: bool = False,
        update_only: bool = False,
    ) -> None:
        """Stage ``records.update``."""
        self._stage(
            "update", key, dict(bins), ttl=ttl, expect_generation=expect_generation,
            create_only=create_only, update_only=update_only,
        )  # fmt: skip

    def delete(self, key: Key, *, expect_generation: int | None = None) -> None:
        """Stage ``records.delete``."""
        self._stage("delete", key, expect_generation=expect_generation)

    def touch(self, key: Key, ttl: float, *, expect_generation: int | None = None) -> None:
        """Stage ``records.touch``."""
        self._stage("touch", key, ttl, expect_generation=expect_generation)

    def operate(
        self,
        key: Key,
        ops: Sequence[Op],
        *,
        ttl: float | None = None,
        expect_generation: int | None = None,
        create_only: bool = False,
        update_only: bool = False,
    ) -> None:
        """Stage ``records.operate``."""
        self._stage(
            "operate", key, list(ops), ttl=ttl, expect_generation=expect_generation,
            create_only=create_only, update_only=update_only,
        )  # fmt: skip

    def put_many(
        self,
        items: Mapping[Key, Mapping[str, Any]] | Sequence[tuple[Key, Mapping[str, Any]]],
        *,
        ttl: float | None = None,
    ) -> None:
        """Stage ``records.put_many``."""
        pairs = list(items.items()) if isinstance(items, Mapping) else items
        self._stage("put_many", [list(p) for p in pairs], ttl=ttl)

    def delete_many(self, keys: Sequence[Key]) -> None:
        """Stage ``records.delete_many``."""
        self._stage("delete_many", list(keys))


class TransactionCollection:
    """A vector collection's writes inside a transaction (``tx.collection(name)``): an item
    and the records it belongs with commit together. Staged, validated at commit; the
    indexes see the items once committed, at the next search."""

    def __init__(self, tx: Any, name: str) -> None:
        self._tx = tx
        self.name = name

    def upsert(
        self,
        ids: Sequence[str | int],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        texts: Sequence[str | None] | None = None,
        *,
        ttl: float | None = None,
        expect_generation: Sequence[int | None] | None = None,
    ) -> None:
        """Stage ``collection.upsert`` (all of it in this one commit, however many items)."""
        from engramdb.remote import FORMS

        rows = FORMS["vectors"].encode(vectors)  # 1-D float32 rows travel as they are
        metas = None if metadata is None else [None if m is None else dict(m) for m in metadata]
        options = _options(ttl=ttl, expect_generation=expect_generation)
        self._tx._stage(["vectors.upsert", self.name, list(ids), [rows, metas, texts], options])

    def delete(self, ids: Sequence[str | int]) -> None:
        """Stage ``collection.delete``."""
        self._tx._stage(["vectors.delete", self.name, list(ids), [], {}])


class _Staging:
    def __init__(self, db: Any) -> None:
        self._db = db
        self._reads: dict[tuple[str, Any], int] = {}
        self._writes: list[Staged] = []
        self._sets: dict[str, TransactionSet] = {}
        self._done = False

    def records(self, set_name: str) -> TransactionSet:
        """The set ``set_name`` inside this transaction."""
        found = self._sets.get(set_name)
        if found is None:
            found = self._sets[set_name] = TransactionSet(self, set_name)
        return found

    def collection(self, name: str) -> TransactionCollection:
        """The vector collection ``name`` inside this transaction."""
        return TransactionCollection(self, name)

    def _stage(self, write: Staged) -> None:
        if self._done:
            raise InvalidArgument("this transaction has already been committed or discarded")
        self._writes.append(write)

    def _remember(self, set_name: str, key: Key, record: Record | None) -> Record | None:
        seen = 0 if record is None else record.generation
        # A key read twice must read the same: the commit checks the first generation seen.
        self._reads.setdefault((set_name, _hashable(key)), seen)
        return record

    def _payload(self) -> tuple[list[list[Any]], list[Staged]]:
        if self._done:
            raise InvalidArgument("this transaction has already been committed or discarded")
        self._done = True
        reads = [[name, key, generation] for (name, key), generation in self._reads.items()]
        return reads, self._writes

    def discard(self) -> None:
        """Drop the staged writes; nothing is written."""
        self._done = True


def _hashable(key: Any) -> Any:
    if isinstance(key, list | dict | set):
        raise InvalidArgument(f"a key must be str, bytes or int, not {type(key).__name__}")
    return key


class Transaction(_Staging):
    """A transaction of an embedded or remote database (``with db.transaction() as tx``).

    Leaving the block commits; an exception inside it discards. ``commit()`` returns each
    staged write's result, in order, or raises ``Conflict`` (nothing written)."""

    def _read(self, set_name: str, key: Key) -> Record | None:
        return self._remember(set_name, key, self._db.records(set_name).get(key))

    def _read_many(self, set_name: str, keys: Sequence[Key]) -> list[Record | None]:
        found = self._db.records(set_name).get_many(keys)
        return [self._remember(set_name, k, r) for k, r in zip(keys, found)]

    def commit(self) -> list[Any]:
        """Apply every staged write atomically if nothing read has changed since."""
        reads, writes = self._payload()
        if not reads and not writes:
            return []
        return list(self._db.commit(reads, writes))

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self.discard()
        elif not self._done:
            self.commit()


class AsyncTransaction(_Staging):
    """``Transaction`` for asyncio faces: ``async with db.transaction() as tx``; reads
    (``await tx.records(name).get(key)``) and ``await tx.commit()`` are awaited."""

    async def _read(self, set_name: str, key: Key) -> Record | None:
        return self._remember(set_name, key, await self._db.records(set_name).get(key))

    async def _read_many(self, set_name: str, keys: Sequence[Key]) -> list[Record | None]:
        found = await self._db.records(set_name).get_many(keys)
        return [self._remember(set_name, k, r) for k, r in zip(keys, found)]

    async def commit(self) -> list[Any]:
        """Apply every staged write atomically if nothing read has changed since."""
        reads, writes = self._payload()
        if not reads and not writes:
            return []
        return list(await self._db.commit(reads, writes))

    async def __aenter__(self) -> AsyncTransaction:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self.discard()
        elif not self._done:
            await self.commit()

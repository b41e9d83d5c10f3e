"""LangGraph on engramdb: ``EngramSaver`` (checkpointer) and ``EngramStore`` (long-term store).

``pip install 'engramdb[langgraph]'``. Both take any face of the API: ``engramdb.open()``,
``engramdb.connect()``, ``engramdb.aio.open()`` or ``engramdb.aio.connect()``, and offer the
sync and async methods LangGraph calls on every one of them (see
``engramdb.integrations._flow``).

The saver's data layout (sets ``<prefix>.checkpoints``, ``.writes``, ``.blobs``, ``.runs``
and ``.chunks``; ``\\0`` separates the parts of a key, so none of them may contain it):

- a checkpoint is ``thread\\0ns\\0checkpoint_id``; checkpoint ids are uuid6, ordered by time,
  so a reverse scan of ``thread\\0ns\\0`` lists a namespace newest first and ``before=``
  is the scan's upper bound: ``list`` reads only the checkpoints it returns (plus those a
  metadata filter rejects on the way);
- channel values are blobs under ``thread\\0ns\\0channel\\0version``, written only for the
  channels a checkpoint changed (``new_versions``) and shared by the checkpoints that did
  not change them; pending writes are ``thread\\0ns\\0checkpoint_id\\0task_id\\0idx``;
- a checkpoint, its blobs and the run index entry are one transaction (one commit, one
  round trip remotely), and so are the writes of one ``put_writes``;
- a value bigger than a record is chunked (``engramdb.integrations._chunks``);
- pruning and deleting runs reclaim the blobs no remaining checkpoint refers to.
"""

from __future__ import annotations

import builtins
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from engramdb.errors import InvalidArgument
from engramdb.integrations._chunks import Chunks, Put, chunk_limit
from engramdb.integrations._flow import Faces, Flow, Write, commit, on, scan_all

__all__ = ["EngramSaver", "EngramStore"]

_PAGE = 100  # checkpoints read per scan while listing
_REMOTE_REQUEST = 1 << 20  # bytes per transaction over the network (under --max-frame)


def _part(value: Any, what: str) -> str:
    text = str(value)
    if "\0" in text:
        raise InvalidArgument(f"a {what} cannot contain NUL characters: {text!r:.80}")
    return text


def _remote(db: Any) -> bool:
    import engramdb

    inner = getattr(db, "db", db)  # engramdb.aio.AsyncDatabase wraps a Database
    return not isinstance(inner, engramdb.Database)


class _Loaded(msgspec.Struct):
    """A checkpoint record, decoded."""

    thread: str
    ns: str
    cid: str
    parent: str | None
    checkpoint: dict[str, Any]
    metadata: dict[str, Any]


class EngramSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on engramdb (``graph.compile(checkpointer=EngramSaver(db))``).

    Args:
        db: an embedded database, a client, or an asyncio face of either.
        serde: LangGraph's serializer (default ``JsonPlusSerializer``).
        prefix: the sets used are ``<prefix>.checkpoints`` etc.
        max_request_bytes: over the network, the most bytes one transaction carries (it
            must fit the server's ``--max-frame``); a checkpoint bigger than that has its
            chunks written first and becomes visible with its head, in the last commit.
            Default: no bound embedded, 1 MiB remotely.

    Every capability of LangGraph's conformance suite is implemented: ``put``,
    ``put_writes``, ``get_tuple``, ``list``, ``delete_thread``, ``delete_for_runs``,
    ``copy_thread`` and ``prune``, each sync and async.
    """

    def __init__(
        self,
        db: Any,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = "lg",
        max_request_bytes: int | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._faces = Faces(db)
        self.db = db
        self.sets = _Sets(prefix)
        budget = max_request_bytes
        if budget is None and _remote(db):
            budget = _REMOTE_REQUEST
        self._chunks = Chunks(self.sets.chunks, chunk_limit(db), budget)

    def __enter__(self) -> EngramSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> EngramSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release what the saver opened itself (never the database it was given)."""
        self._faces.close()

    # LangGraph's API, sync --------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (its ``checkpoint_id``, or the newest)."""
        return self._faces.run(self._get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, read page by page as the iterator advances."""
        listing = _Listing(config, filter, before, limit)
        while not listing.done:
            yield from self._faces.run(self._list_page(listing))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and the values of its changed channels, atomically."""
        return self._faces.run(self._put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for the checkpoint ``config`` names."""
        self._faces.run(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and blob of ``thread_id``."""
        self._faces.run(self._delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) the given runs created."""
        self._faces.run(self._delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and blob of one thread to another."""
        self._faces.run(self._copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep the newest checkpoint of each namespace (and the ancestors
        its delta channels need); ``delete``: delete the threads."""
        self._faces.run(self._prune(thread_ids, strategy))

    # async --------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async ``get_tuple``."""
        return await self._faces.arun(self._get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async ``list``."""
        listing = _Listing(config, filter, before, limit)
        while not listing.done:
            for item in await self._faces.arun(self._list_page(listing)):
                yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async ``put``."""
        return await self._faces.arun(self._put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async ``put_writes``."""
        await self._faces.arun(self._put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Async ``delete_thread``."""
        await self._faces.arun(self._delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async ``delete_for_runs``."""
        await self._faces.arun(self._delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async ``copy_thread``."""
        await self._faces.arun(self._copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async ``prune``."""
        await self._faces.arun(self._prune(thread_ids, strategy))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions are ``<counter>.<random>``: increasing, and unique per write, so two
        branches of a thread never share (and overwrite) a blob."""
        if current is None:
            counter = 0
        elif isinstance(current, int):
            counter = current
        else:
            counter = int(str(current).split(".")[0])
        return f"{counter + 1:032}.{random.random():016}"

    # the flows (each runs on every face) ------------------------------------------------

    def _get_tuple(self, config: RunnableConfig) -> Flow[CheckpointTuple | None]:
        conf = config["configurable"]
        thread = _part(conf["thread_id"], "thread_id")
        ns = _part(conf.get("checkpoint_ns", ""), "checkpoint_ns")
        cid = get_checkpoint_id(config)
        sets = self.sets
        if cid:
            key = f"{thread}\0{ns}\0{_part(cid, 'checkpoint_id')}"
            record = yield on(sets.checkpoints, "get", key)
        else:
            page = yield on(sets.checkpoints, "scan", f"{thread}\0{ns}\0", reverse=True, limit=1)
            record = page.records[0] if page.records else None
        if record is None:
            return None
        loaded = yield from self._decode([record])
        if not loaded:
            return None
        tuples = yield from self._tuples(loaded)
        return tuples[0]

    def _list_page(self, listing: _Listing) -> Flow[builtins.list[CheckpointTuple]]:
        sets = self.sets
        page = yield on(
            sets.checkpoints,
            "scan",
            listing.prefix,
            end=listing.end,
            reverse=True,
            cursor=listing.cursor,
            limit=listing.page_size(),
        )
        listing.cursor = page.cursor
        if page.cursor is None:
            listing.done = True
        records = [r for r in page.records if listing.admits_key(r.key)]
        loaded = [c for c in (yield from self._decode(records)) if listing.admits(c)]
        loaded = listing.take(loaded)
        return (yield from self._tuples(loaded))

    def _decode(self, records: Sequence[Any]) -> Flow[builtins.list[_Loaded]]:
        """Checkpoint records decoded (chunks read in one call; a checkpoint whose chunks
        are gone, deleted under the reader, is left out)."""
        payloads = yield from self._chunks.load(("c", r.key, r.bins) for r in records)
        out: builtins.list[_Loaded] = []
        for record, payload in zip(records, payloads):
            if payload is None:
                continue
            thread, ns, cid = record.key.split("\0")
            ctype, cdata, mtype, mdata = msgspec.msgpack.decode(payload)
            out.append(
                _Loaded(
                    thread,
                    ns,
                    cid,
                    record.bins.get("p"),
                    self.serde.loads_typed((ctype, cdata)),
                    self.serde.loads_typed((mtype, mdata)),
                )
            )
        return out

    def _tuples(self, loaded: Sequence[_Loaded]) -> Flow[builtins.list[CheckpointTuple]]:
        """Checkpoint tuples with their channel values and pending writes: one range scan
        of writes per (thread, namespace), one read of the blobs, one of their chunks."""
        if not loaded:
            return []
        sets = self.sets
        writes: dict[str, builtins.list[Any]] = {}
        groups: dict[tuple[str, str], builtins.list[str]] = {}
        for c in loaded:
            groups.setdefault((c.thread, c.ns), []).append(c.cid)
        for (thread, ns), cids in groups.items():
            base = f"{thread}\0{ns}\0"
            start, end = base + min(cids), base + max(cids) + "\x01"
            cursor: str | None = None
            while True:
                page = yield on(
                    sets.writes, "scan", base, start=start, end=end, cursor=cursor, limit=1000
                )
                for record in page.records:
                    writes.setdefault(record.key.rsplit("\0", 2)[0], []).append(record)
                if page.cursor is None:
                    break
                cursor = page.cursor
        blob_keys = sorted(
            {
                f"{c.thread}\0{c.ns}\0{_part(channel, 'channel')}\0{version}"
                for c in loaded
                for channel, version in c.checkpoint["channel_versions"].items()
            }
        )
        blobs: dict[str, Any] = {}
        if blob_keys:
            found = yield on(sets.blobs, "get_many", blob_keys)
            blobs = {r.key: r for r in found if r is not None}
        all_writes = [r for c in loaded for r in writes.get(f"{c.thread}\0{c.ns}\0{c.cid}", [])]
        wanted = [("b", r.key, r.bins) for r in blobs.values()] + [
            ("w", r.key, r.bins) for r in all_writes
        ]
        values = yield from self._chunks.load(wanted)
        data = {(kind, key): value for (kind, key, _), value in zip(wanted, values)}
        out: builtins.list[CheckpointTuple] = []
        for c in loaded:
            channel_values: dict[str, Any] = {}
            for channel, version in c.checkpoint["channel_versions"].items():
                key = f"{c.thread}\0{c.ns}\0{channel}\0{version}"
                record = blobs.get(key)
                value = data.get(("b", key))
                if record is None or value is None or record.bins["t"] == "empty":
                    continue
                channel_values[channel] = self.serde.loads_typed((record.bins["t"], value))
            pending = []
            for record in writes.get(f"{c.thread}\0{c.ns}\0{c.cid}", []):
                value = data.get(("w", record.key))
                if value is None:
                    continue
                bins = record.bins
                pending.append(
                    (
                        writes_sort_key(bins["path"], bins["task"], bins["idx"]),
                        (bins["task"], bins["ch"], self.serde.loads_typed((bins["t"], value))),
                    )
                )
            pending.sort(key=lambda p: p[0])
            config: RunnableConfig = {
                "configurable": {
                    "thread_id": c.thread,
                    "checkpoint_ns": c.ns,
                    "checkpoint_id": c.cid,
                }
            }
            parent: RunnableConfig | None = None
            if c.parent:
                parent = {
                    "configurable": {
                        "thread_id": c.thread,
                        "checkpoint_ns": c.ns,
                        "checkpoint_id": c.parent,
                    }
                }
            out.append(
                CheckpointTuple(
                    config=config,
                    checkpoint={**c.checkpoint, "channel_values": channel_values},  # type: ignore[typeddict-item]
                    metadata=c.metadata,  # type: ignore[arg-type]
                    parent_config=parent,
                    pending_writes=[w for _, w in pending],
                )
            )
        return out

    def _put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Flow[RunnableConfig]:
        conf = config["configurable"]
        thread = _part(conf["thread_id"], "thread_id")
        ns = _part(conf.get("checkpoint_ns", ""), "checkpoint_ns")
        cid = _part(checkpoint["id"], "checkpoint id")
        parent = conf.get("checkpoint_id")
        stored: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = stored.pop("channel_values")
        sets, chunks = self.sets, self._chunks
        early: builtins.list[Put] = []
        for channel, version in new_versions.items():
            key = f"{thread}\0{ns}\0{_part(channel, 'channel')}\0{_part(version, 'version')}"
            kind, data = (
                self.serde.dumps_typed(values[channel]) if channel in values else ("empty", b"")
            )
            head, parts = chunks.split("b", key, data)
            early.extend(parts)
            early.append((sets.blobs, key, {"t": kind, **head}))
        meta = get_checkpoint_metadata(config, metadata)
        payload = msgspec.msgpack.encode(
            [*self.serde.dumps_typed(stored), *self.serde.dumps_typed(meta)]
        )
        key = f"{thread}\0{ns}\0{cid}"
        head, parts = chunks.split("c", key, payload)
        early.extend(parts)
        run = meta.get("run_id")
        last: builtins.list[Put] = [(sets.checkpoints, key, {"p": parent, "run": run, **head})]
        if run is not None:
            last.append((sets.runs, f"{_part(run, 'run_id')}\0{key}", {}))
        yield from chunks.write(early, last)
        return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": cid}}

    def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Flow[None]:
        conf = config["configurable"]
        thread = _part(conf["thread_id"], "thread_id")
        ns = _part(conf.get("checkpoint_ns", ""), "checkpoint_ns")
        cid = _part(conf["checkpoint_id"], "checkpoint_id")
        task = _part(task_id, "task_id")
        sets = self.sets
        planned = [
            (f"{thread}\0{ns}\0{cid}\0{task}\0{idx}", idx, channel, value)
            for idx, channel, value in (
                (WRITES_IDX_MAP.get(channel, i), channel, value)
                for i, (channel, value) in enumerate(writes)
            )
        ]
        if not planned:
            return
        # A task retried writes the same (task, idx) again: ordinary writes keep the first
        # copy, special ones (errors, interrupts...) are replaced, as LangGraph's savers do.
        keys = [key for key, *_ in planned]
        existing = yield on(sets.writes, "get_many", keys)
        early: builtins.list[Put] = []
        last: builtins.list[Put] = []
        for (key, idx, channel, value), seen in zip(planned, existing):
            if seen is not None and idx >= 0:
                continue
            kind, data = self.serde.dumps_typed(value)
            head, parts = self._chunks.split("w", key, data)
            early.extend(parts)
            bins = {"task": task, "ch": channel, "path": task_path, "idx": idx, "t": kind}
            last.append((sets.writes, key, {**bins, **head}))
        if last:
            yield from self._chunks.write(early, last)

    def _delete_thread(self, thread_id: str) -> Flow[None]:
        thread = _part(thread_id, "thread_id")
        sets = self.sets
        prefix = f"{thread}\0"
        checkpoints = yield from scan_all(sets.checkpoints, prefix)
        runs = [f"{r.bins['run']}\0{r.key}" for r in checkpoints if r.bins.get("run")]
        # Checkpoints first: once they are gone the thread is invisible, whatever happens
        # to the rest (a crash part-way leaves unreachable blobs: run it again).
        for set_name in (sets.checkpoints, sets.writes, sets.blobs):
            yield on(set_name, "delete_prefix", prefix)
        for kind in ("c", "w", "b"):
            yield on(sets.chunks, "delete_prefix", f"{kind}\0{prefix}")
        if runs:
            yield on(sets.runs, "delete_many", runs)

    def _delete_for_runs(self, run_ids: Sequence[str]) -> Flow[None]:
        sets = self.sets
        doomed: dict[tuple[str, str], set[str]] = {}
        index: builtins.list[str] = []
        for run in run_ids:
            entries = yield from scan_all(sets.runs, f"{_part(run, 'run_id')}\0")
            for entry in entries:
                index.append(entry.key)
                _, thread, ns, cid = entry.key.split("\0")
                doomed.setdefault((thread, ns), set()).add(cid)
        for (thread, ns), cids in doomed.items():
            yield from self._remove(thread, ns, cids)
        if index:
            yield on(sets.runs, "delete_many", index)

    def _prune(self, thread_ids: Sequence[str], strategy: str) -> Flow[None]:
        if strategy not in ("keep_latest", "delete"):
            raise InvalidArgument(f"prune strategy is keep_latest or delete, not {strategy!r}")
        for thread_id in thread_ids:
            if strategy == "delete":
                yield from self._delete_thread(thread_id)
                continue
            thread = _part(thread_id, "thread_id")
            records = yield from scan_all(self.sets.checkpoints, f"{thread}\0")
            by_ns: dict[str, dict[str, Any]] = {}
            for record in records:  # key order: each namespace's newest comes last
                _, ns, cid = record.key.split("\0")
                by_ns.setdefault(ns, {})[cid] = record
            for ns, chain in by_ns.items():
                keep = yield from self._needed(chain)
                doomed = set(chain) - keep
                if doomed:
                    yield from self._remove(thread, ns, doomed)

    def _needed(self, chain: dict[str, Any]) -> Flow[set[str]]:
        """The newest checkpoint of a namespace and the ancestors its delta channels need:
        for each channel named in ``counters_since_delta_snapshot``, back to the nearest
        checkpoint holding a value for it (where LangGraph's history walk stops)."""
        newest = max(chain)
        keep = {newest}
        decoded = yield from self._decode([chain[newest]])
        if not decoded:
            return keep
        missing = set(decoded[0].metadata.get("counters_since_delta_snapshot") or ())
        current: _Loaded | None = decoded[0]
        while missing and current is not None:
            present = yield from self._populated(current, missing)
            missing -= present
            if not missing or not current.parent or current.parent not in chain:
                break
            keep.add(current.parent)
            decoded = yield from self._decode([chain[current.parent]])
            current = decoded[0] if decoded else None
        return keep

    def _populated(self, c: _Loaded, channels: set[str]) -> Flow[set[str]]:
        versions = c.checkpoint["channel_versions"]
        named = [ch for ch in channels if ch in versions]
        keys = [f"{c.thread}\0{c.ns}\0{ch}\0{versions[ch]}" for ch in named]
        if not keys:
            return set()
        found = yield on(self.sets.blobs, "get_many", keys)
        return {ch for ch, r in zip(named, found) if r is not None and r.bins["t"] != "empty"}

    def _remove(self, thread: str, ns: str, cids: set[str]) -> Flow[None]:
        """Delete checkpoints ``cids`` of one namespace with their writes, then the blobs no
        remaining checkpoint of the namespace refers to."""
        sets = self.sets
        base = f"{thread}\0{ns}\0"
        records = yield from scan_all(sets.checkpoints, base)
        gone = [r for r in records if r.key.rsplit("\0", 1)[1] in cids]
        kept = [r for r in records if r.key.rsplit("\0", 1)[1] not in cids]
        writes = yield from scan_all(sets.writes, base)
        gone_writes = [w for w in writes if w.key.split("\0")[2] in cids]
        referenced: set[str] = set()
        for c in (yield from self._decode(kept)):
            for channel, version in c.checkpoint["channel_versions"].items():
                referenced.add(f"{base}{channel}\0{version}")
        blobs = yield from scan_all(sets.blobs, base)
        gone_blobs = [b for b in blobs if b.key not in referenced]
        chunk_keys = [
            key
            for kind, found in (("c", gone), ("w", gone_writes), ("b", gone_blobs))
            for r in found
            for key in self._chunks.keys_of(kind, r.key, r.bins)
        ]
        runs = [f"{r.bins['run']}\0{r.key}" for r in gone if r.bins.get("run")]
        deletes: builtins.list[Write] = [
            (sets.checkpoints, "delete_many", ([r.key for r in gone],), {}),
            (sets.runs, "delete_many", (runs,), {}),
            (sets.writes, "delete_many", ([w.key for w in gone_writes],), {}),
            (sets.blobs, "delete_many", ([b.key for b in gone_blobs],), {}),
            (sets.chunks, "delete_many", (chunk_keys,), {}),
        ]
        yield from _delete_in_pages(deletes)

    def _copy_thread(self, source: str, target: str) -> Flow[None]:
        src = _part(source, "thread_id")
        dst = _part(target, "thread_id")
        if src == dst:
            return
        sets = self.sets
        old, new = f"{src}\0", f"{dst}\0"
        early: builtins.list[Put] = []
        last: builtins.list[Put] = []
        for set_name in (sets.writes, sets.blobs):
            for record in (yield from scan_all(set_name, old)):
                early.append((set_name, new + record.key[len(old) :], record.bins))
        for kind in ("c", "w", "b"):
            for record in (yield from scan_all(sets.chunks, f"{kind}\0{old}")):
                moved = f"{kind}\0{new}" + record.key[len(kind) + 1 + len(old) :]
                early.append((sets.chunks, moved, record.bins))
        for record in (yield from scan_all(sets.checkpoints, old)):
            key = new + record.key[len(old) :]
            last.append((sets.checkpoints, key, record.bins))
            if record.bins.get("run"):
                last.append((sets.runs, f"{record.bins['run']}\0{key}", {}))
        if last:
            yield from self._chunks.write(early, last)


_DELETE_PAGE = 1000


def _delete_in_pages(deletes: list[Write]) -> Flow[None]:
    """One transaction when small; otherwise pages of keys, in the order given (the
    records that make others reachable first)."""
    total = sum(len(args[0]) for _, _, args, _ in deletes)
    if total == 0:
        return
    if total <= _DELETE_PAGE:
        yield commit([d for d in deletes if d[2][0]])
        return
    for set_name, method, (keys,), _ in deletes:
        for start in range(0, len(keys), _DELETE_PAGE):
            page = keys[start : start + _DELETE_PAGE]
            yield on(set_name, method, page)


class _Sets:
    def __init__(self, prefix: str) -> None:
        self.checkpoints = f"{prefix}.checkpoints"
        self.writes = f"{prefix}.writes"
        self.blobs = f"{prefix}.blobs"
        self.runs = f"{prefix}.runs"
        self.chunks = f"{prefix}.chunks"


class _Listing:
    """Where a ``list`` call stands: its bounds, filters, cursor and what remains."""

    def __init__(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> None:
        self.filter = dict(filter or {})
        self.remaining = limit
        self.before = get_checkpoint_id(before) if before else None
        self.cursor: str | None = None
        self.done = limit is not None and limit <= 0
        self.cid: str | None = None
        self.prefix: str | None = None
        self.end: str | None = None
        if config is not None:
            conf = config["configurable"]
            thread = _part(conf["thread_id"], "thread_id")
            ns = conf.get("checkpoint_ns")
            self.cid = get_checkpoint_id(config)
            if ns is None:
                self.prefix = f"{thread}\0"
            else:
                self.prefix = f"{thread}\0{_part(ns, 'checkpoint_ns')}\0"
                if self.before:  # the scan stops below it: nothing newer is read
                    self.end = self.prefix + _part(self.before, "checkpoint id")

    def page_size(self) -> int:
        if self.remaining is not None and not self.filter and self.cid is None:
            return max(1, min(self.remaining, _PAGE))
        return _PAGE

    def admits_key(self, key: str) -> bool:
        cid = key.rsplit("\0", 1)[1]
        if self.cid is not None and cid != self.cid:
            return False
        return not (self.before and cid >= self.before)

    def admits(self, c: _Loaded) -> bool:
        return all(c.metadata.get(k) == v for k, v in self.filter.items())

    def take(self, loaded: list[_Loaded]) -> list[_Loaded]:
        if self.remaining is None:
            return loaded
        loaded = loaded[: self.remaining]
        self.remaining -= len(loaded)
        if self.remaining <= 0:
            self.done = True
        return loaded


from engramdb.integrations._langgraph_store import EngramStore  # noqa: E402

"""Typed uses of every face, checked by ``test_typing.py`` with ``mypy --strict``."""

from typing import reveal_type

import engramdb
import engramdb.aio


async def remote(url: str) -> None:
    db = await engramdb.aio.connect(url)
    session = await db.sessions.get("chat-1")
    reveal_type(session)
    record = await db.records("users").get("u1")
    reveal_type(record)
    docs = await db.vectors.create_collection("docs", 3)
    reveal_type(docs)
    hits = await docs.search([0.1, 0.2, 0.3], k=1)
    reveal_type(hits)
    value = await db.cache.get("k")
    reveal_type(value)


async def embedded(path: str) -> None:
    db = await engramdb.aio.open(path)
    page = await db.records("users").scan(limit=10)
    reveal_type(page)


def sync(url: str) -> None:
    db = engramdb.connect(url)
    reveal_type(db.records("users").get("u1"))
    reveal_type(db.memory.search("q", user_id="u"))

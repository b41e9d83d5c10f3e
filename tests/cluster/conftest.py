"""Fixtures of the cluster suite: one real 3-node cluster (etcd, Patroni, PostgreSQL with
pgvector, strict synchronous replication) shared by the whole suite, brought up by the same
code as ``engramdb cluster up`` (about 10-35 s), faulted with real ``kill -9``.

Everything is skipped, never failed, where the cluster's parts are missing (etcd, Patroni,
the bundled PostgreSQL) or cannot run here; a cluster that has its parts but does not come
up healthy is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PREFIX = "engramdb-cluster-test-"
OWNER = "owner.pid"  # the pytest process a cluster directory belongs to


def _reap_clusters_of_killed_runs(parent: Path) -> None:
    """A cluster runs detached (as ``engramdb cluster up`` leaves it): a test run killed
    with -9 never stops its own. The next run stops those whose run is gone."""
    from engramdb.cluster import Cluster
    from engramdb.cluster._process import alive

    for base in parent.glob(PREFIX + "*"):
        try:
            owner = int((base / OWNER).read_text())
        except (OSError, ValueError):
            continue
        if alive(owner):
            continue  # another run, still going
        if (base / "cluster" / "cluster.json").exists():
            with contextlib.suppress(Exception):
                Cluster(base / "cluster", nodes=3).down(wipe=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_base() -> Iterator[Path]:
    """A directory the cluster's unprivileged user can reach (pytest's own temporary
    directories are mode 0700 and owned by whoever runs the tests)."""
    # Under root the cluster runs as another user: keep out of a TMPDIR under /root.
    parent = Path("/tmp" if os.geteuid() == 0 else tempfile.gettempdir())
    with contextlib.suppress(ImportError):
        _reap_clusters_of_killed_runs(parent)
    base = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    base.chmod(0o755)
    (base / OWNER).write_text(str(os.getpid()))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(cluster_base: Path) -> Iterator[Any]:
    """A healthy 3-node cluster; stopped and wiped at the end of the session."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the local cluster runs on Linux only")
    try:
        import psycopg  # noqa: F401

        from engramdb.cluster import Cluster, MissingDependency
    except ImportError as e:
        pytest.skip(f"the cluster tests need the postgres and cluster extras: {e}")
    handle = Cluster(cluster_base / "cluster", nodes=3)
    try:
        handle.up()
    except MissingDependency as e:
        handle.down(wipe=True)
        pytest.skip(f"a local cluster cannot run here: {e}")
    except BaseException:
        handle.down(wipe=True)
        raise
    yield handle
    # The session's cluster is thrown away: kill -9 it whole rather than stop each node
    # cleanly (seconds a node; test_cli.py tests the clean `down`), then wipe it.
    for pid in handle.processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    handle.down(wipe=True)


@pytest.fixture
def healthy(cluster: Any) -> Iterator[Any]:
    """The shared cluster, healthy with every node up before and after the test (a test
    that stopped a node and failed still hands the next one a whole cluster)."""
    cluster.wait_healthy()
    yield cluster
    for member in cluster.members():
        if member.patroni_pid is None:
            cluster.start_node(member.name)
    cluster.wait_healthy()

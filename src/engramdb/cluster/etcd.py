"""The single-member etcd that holds a local cluster's leader key.

Patroni elects a leader by a lease in etcd: the member that holds the key ``/leader`` is the
primary, and it must renew it every ``loop_wait`` or lose it after ``ttl``. Debian's etcd 3.4
speaks only the v3 API, which Patroni reaches through its ``etcd3:`` section (the gRPC
gateway under ``/v3``). One member on loopback is enough for development: it is a
single point of failure, which a production cluster replaces with three or five members
on separate machines.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["command", "healthy"]


def command(binary: Path, data_dir: Path, *, client_port: int, peer_port: int) -> list[str]:
    """The command line of a one-member etcd keeping its data in ``data_dir``."""
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(binary),
        "--name", "engramdb",
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"engramdb={peer}",
        "--initial-cluster-state", "new",
        "--initial-cluster-token", f"engramdb-{data_dir}",
        # Patroni rewrites a few keys every loop_wait: keep the history short.
        "--auto-compaction-mode", "revision",
        "--auto-compaction-retention", "1000",
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]  # fmt: skip


def healthy(client_port: int, *, timeout: float = 1.0) -> bool:
    """Whether etcd answers its health check (it has a leader and serves reads)."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{client_port}/health", timeout=timeout
        ) as reply:
            return bool(json.loads(reply.read()).get("health") in ("true", True))
    except (OSError, ValueError, urllib.error.URLError):
        return False

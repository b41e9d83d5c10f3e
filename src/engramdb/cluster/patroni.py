"""A local replicated cluster: etcd and N Patroni-managed PostgreSQL nodes with pgvector.

For development, tests, benchmarks and demos (production points the engine at its own
Patroni cluster). Replication is strictly synchronous, by quorum: a commit returns only
once one of the standbys has it (``ANY 1 (...)``), and with no standby the primary stops
accepting commits rather than acknowledge a write a failover could lose. Patroni promotes
only a standby the others confirm is not behind them, so a failover never loses an
acknowledged commit.

The directory holds everything::

    cluster.json      ports, process ids, passwords, the engine URL (mode 0600)
    etcd/  etcd.log   the single etcd member holding the leader key
    node<i>/          patroni.yml, patroni.log, pgpass, data/ (the PostgreSQL data directory)

Rules: processes are found again through ``cluster.json`` and signalled by id only after
their command line shows they are ours (``_process``). ``up`` is idempotent: on a directory
whose cluster stopped (``down``, a reboot) it starts the same nodes on the same data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from engramdb.cluster import _process, etcd
from engramdb.cluster.runtime import SERVICE_USER, Runtime, clean_env, prepare
from engramdb.errors import InvalidArgument, NotFound, Unavailable

__all__ = ["DATABASE", "ROLE", "Cluster", "Member"]

SCOPE = "engramdb"
NAMESPACE = "engramdb"  # etcd keys live under /NAMESPACE/SCOPE/
PG_LOG_DIR = "pglog"  # beside the data directory, so pg_rewind and basebackups leave it
PG_LOG_FILE = "postgresql.log"
DATABASE = "engramdb"  # the database and login role engramdb's engine uses
ROLE = "engramdb"
EXTENSIONS = ("vector", "pg_trgm", "btree_gist")  # vector is untrusted: made by the superuser
STATE_FILE = "cluster.json"
MAX_NODES = 9
# Roles of a standby a commit may wait for (Patroni names it by the synchronous mode).
SYNC_ROLES = ("sync_standby", "quorum_standby")

# Patroni's dynamic settings, written to etcd at bootstrap. Measured on a 2-core machine:
# a crashed leader node is replaced in ~20 s (ttl is the floor: its lease must expire), a
# crashed postmaster is restarted in place in 3-5 s.
DCS: dict[str, Any] = {
    "ttl": 20,  # Patroni 4 refuses less
    # The surviving replica repoints to a new leader on its next loop (or sooner: it watches
    # the leader key).
    "loop_wait": 1,
    "retry_timeout": 5,
    "maximum_lag_on_failover": 1 << 20,
    # A primary whose postgres cannot come back within this is failed over (safe: only a
    # node holding every acknowledged commit may be promoted). Patroni's default, 300 s, is
    # a long outage.
    "primary_start_timeout": 30,
    # Quorum commit: a commit is acknowledged once ANY 1 of the standbys has it, and a
    # failover promotes the standby furthest ahead (the others vote that they are not ahead
    # of it). With one named synchronous standby and an asynchronous spare (``True``), the
    # spare sometimes held WAL the promoted standby lacked (in-flight, unacknowledged
    # commits), so it had to be pg_rewind-ed before it could stream again - and strict mode
    # held every commit meanwhile: writes came back 5.8-7.6 s after the new leader instead
    # of < 1 s (1 node crash in 10). Here the survivors are never ahead of the new leader.
    "synchronous_mode": "quorum",
    "synchronous_mode_strict": True,  # no standby: block commits, never acknowledge alone
    "synchronous_node_count": 1,
    "postgresql": {
        "use_pg_rewind": True,  # a failed old primary rejoins without a full copy
        "use_slots": True,
        "parameters": {
            "wal_level": "replica",
            "hot_standby": "on",
            "wal_log_hints": "on",
            "synchronous_commit": "on",
            "max_connections": 200,
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_keep_size": "256MB",
            # A standby retries its primary connection every 1 s instead of 5 s: halves the
            # outage after a primary restart.
            "wal_retrieve_retry_interval": "1s",
        },
    },
}


@dataclass(frozen=True)
class Member:
    """One node as the cluster reports it now."""

    name: str
    # leader, quorum_standby (one of the standbys a commit may wait for), sync_standby (the
    # one it waits for, outside quorum mode), replica; "stopped" when its Patroni is not
    # running
    role: str
    state: str  # running (leader), streaming (replica), starting, stopped, ...
    pg_port: int
    rest_port: int
    timeline: int | None
    lag: int | None  # bytes of WAL behind the leader (replicas), None when unknown
    patroni_pid: int | None
    postgres_pid: int | None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"


class _Node(msgspec.Struct):
    name: str
    pg_port: int
    rest_port: int
    patroni_pid: int | None = None
    stopped: bool = False  # taken down on purpose (kill, remove): not expected to be healthy


class _State(msgspec.Struct):
    nodes: list[_Node]
    etcd_client_port: int
    etcd_peer_port: int
    passwords: dict[str, str]  # superuser, replication, engramdb
    user: str | None = None
    etcd_pid: int | None = None
    database_ready: bool = False


class Cluster:
    """A local etcd + Patroni + PostgreSQL cluster kept in ``directory``.

    ``with Cluster(path) as cluster:`` brings it up (or back up) and stops it on exit;
    ``cluster.url`` is the engine URL for ``engramdb.open``. ``Cluster.open(path)`` attaches
    to one ``engramdb cluster up`` started. The fault methods (``kill_leader_node``,
    ``kill_leader_postgres``, ``switchover``, ``remove_replica``) are for tests, benchmarks
    and the audit; each returns at once and ``wait_healthy`` waits for the cluster to heal.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        nodes: int | None = None,
        runtime_dir: Path | None = None,
        user: str = SERVICE_USER,
        timeout: float = 180.0,
    ) -> None:
        """``nodes``: PostgreSQL nodes (1-9, default 3: a leader and two standbys, a
        commit waiting for either; 1 has no standby, so no synchronous replication; an
        existing cluster keeps its own). ``runtime_dir``: where Patroni's venv is made
        when running as root (default ``/var/cache/engramdb``). ``user``: the
        unprivileged account processes run as when running as root. ``timeout``: seconds
        ``up`` and ``wait_healthy`` wait before raising ``Unavailable``."""
        if nodes is not None and not 1 <= nodes <= MAX_NODES:
            raise InvalidArgument(f"nodes must be 1 to {MAX_NODES}, not {nodes}")
        self.directory = Path(directory).absolute()
        self.nodes = 3 if nodes is None else nodes
        self.timeout = timeout
        self._runtime_dir = runtime_dir
        self._user = user
        self._runtime: Runtime | None = None
        self._children: dict[int, Any] = {}  # our own Popen objects, reaped after kills
        self._stamp: tuple[int, int] | None = None
        self._state: _State | None = self._load()
        if self._state is not None:
            if nodes is not None and nodes != len(self._state.nodes):
                raise InvalidArgument(
                    f"{self.directory} holds a {len(self._state.nodes)}-node cluster, not "
                    f"{nodes}; use another directory, or `engramdb cluster down --wipe` it first"
                )
            self.nodes = len(self._state.nodes)

    @classmethod
    def open(cls, directory: str | Path, *, runtime_dir: Path | None = None) -> Cluster:
        """The cluster ``engramdb cluster up`` made in ``directory`` (``NotFound`` if none)."""
        cluster = cls(directory, runtime_dir=runtime_dir)
        if cluster._state is None:
            raise NotFound(
                f"no cluster in {cluster.directory} (no {STATE_FILE}); "
                "start one with: engramdb cluster up"
            )
        return cluster

    def __enter__(self) -> Cluster:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- lifecycle --------------------------------------------------------------------

    def up(self, *, progress: Callable[[str], None] | None = None) -> str:
        """Start etcd and every node (reusing the data already in the directory), wait
        until there is a leader and a synchronous standby with every node streaming, make
        the ``engramdb`` database and role, and return the engine URL."""
        say = progress or (lambda message: None)
        created = not self.directory.exists()
        if (
            not created
            and self._load() is None
            and any(p.name != ".lock" for p in self.directory.iterdir())
        ):
            # `down --wipe` deletes the directory: never adopt one holding other things.
            raise InvalidArgument(
                f"{self.directory} is not empty and holds no cluster; use a new directory"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        if created:
            self.directory.chmod(0o755)
        with self._locked():
            runtime = self._prepare(say)
            runtime.check_reachable(self.directory)
            state = self._state = self._load() or self._new_state(runtime)
            self._save()
            say("starting etcd")
            self._start_etcd(runtime, state)
            for node in state.nodes:
                node.stopped = False
                self._start_node(runtime, node)
            self._save()
        self.wait_healthy(progress=say)
        if not state.database_ready:
            say("creating the engramdb database")
            self._create_database()
            state.database_ready = True
            self._save()
        return self.url

    def down(self, *, wipe: bool = False, timeout: float = 20.0) -> list[int]:
        """Stop every process of the cluster (SIGTERM, then SIGKILL after ``timeout``):
        replicas first so the leader does not fail over to them, then the leader, then
        etcd. ``wipe`` then deletes the directory. Returns the process ids stopped."""
        with self._locked():
            state = self._state = self._load()
            if state is None:
                return []  # never wipe a directory that holds no cluster
            everything = self.processes()
            roles = {m.name: m.role for m in self._members(state)}
            replicas = [n for n in state.nodes if roles.get(n.name) != "leader"]
            leaders = [n for n in state.nodes if roles.get(n.name) == "leader"]
            for group in (replicas, leaders):
                self._stop_nodes(state, group, timeout)
            if _process.matches(state.etcd_pid, str(self.directory / "etcd")):
                assert state.etcd_pid is not None
                _process.stop([state.etcd_pid], timeout=timeout, reap=self._reapable())
            state.etcd_pid = None
            # Whatever is left (a backend that outlived its postmaster) goes now.
            _process.kill_tree([p for p in everything if _process.alive(p)], reap=self._reapable())
            if wipe:
                shutil.rmtree(self.directory)
                self._state = None
            else:
                self._save()
            return everything

    # -- what is running ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The engine URL: every node, and Patroni's REST endpoints for leader routing."""
        state = self._require()
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in state.nodes)
        rest = ",".join(f"http://127.0.0.1:{n.rest_port}" for n in state.nodes)
        password = state.passwords[ROLE]
        return f"postgresql://{ROLE}:{password}@{hosts}/{DATABASE}?patroni={rest}"

    def dsn(self, name: str | None = None, *, superuser: bool = False) -> str:
        """A libpq URL to one node (default: the leader), as ``engramdb`` or the superuser."""
        state = self._require()
        node = self._node(name) if name is not None else self._node(self.leader().name)
        user = "postgres" if superuser else ROLE
        password = state.passwords["superuser" if superuser else ROLE]
        return f"postgresql://{user}:{password}@127.0.0.1:{node.pg_port}/{DATABASE}"

    def node_names(self) -> list[str]:
        """Every node's name, in node order."""
        return [n.name for n in self._require().nodes]

    def rest_port(self, name: str) -> int:
        """The port of node ``name``'s Patroni REST API."""
        return self._node(name).rest_port

    def etcd_port(self) -> int:
        """etcd's client port."""
        return self._require().etcd_client_port

    def leader_key(self) -> str:
        """The etcd key whose holder is the leader (its value is the leader's name)."""
        return f"/{NAMESPACE}/{SCOPE}/leader"

    def log_paths(self) -> list[Path]:
        """Each node's Patroni log and PostgreSQL log (which may not exist yet)."""
        return [
            self.directory / n.name / log
            for n in self._require().nodes
            for log in ("patroni.log", f"{PG_LOG_DIR}/{PG_LOG_FILE}")
        ]

    def members(self) -> list[Member]:
        """Every node with its role and state from Patroni's REST API, in node order."""
        return self._members(self._require())

    def leader(self) -> Member:
        """The node that is primary now; ``Unavailable`` while there is none."""
        for member in self.members():
            if member.role == "leader" and member.state == "running":
                return member
        raise Unavailable(f"the cluster in {self.directory} has no leader now")

    def wait_leader(self, *, other_than: str | None = None, timeout: float | None = None) -> str:
        """Wait for a running leader (one other than ``other_than``) and return its name."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            with contextlib.suppress(Unavailable):
                leader = self.leader()
                if leader.name != other_than and _get(leader.rest_url + "/primary") is not None:
                    return leader.name
            if time.monotonic() > deadline:
                raise Unavailable(f"no new leader in {self.directory} after {wait:g} s")
            time.sleep(0.2)

    def status(self) -> dict[str, Any]:
        """What ``engramdb cluster status --json`` prints."""
        state = self._require()
        problem = self._diagnose(state)[0]
        return {
            "directory": str(self.directory),
            "url": self.url,
            "etcd": {
                "client_port": state.etcd_client_port,
                "pid": state.etcd_pid if self._etcd_alive(state) else None,
                "healthy": etcd.healthy(state.etcd_client_port),
            },
            "nodes": [asdict(m) for m in self.members()],
            "healthy": problem is None,
            "problem": problem,
        }

    def processes(self) -> list[int]:
        """Every live process of the cluster: etcd, each Patroni, each postmaster and their
        descendants (postgres backends, walsenders)."""
        state = self._require()
        roots = [p for n in state.nodes for p in (self._patroni_pid(n), self._postgres_pid(n))]
        if self._etcd_alive(state):
            roots.append(state.etcd_pid)
        found = [p for p in roots if p is not None]
        return sorted({*found, *_process.descendants(found)})

    def wait_healthy(
        self, *, timeout: float | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        """Wait until there is a leader taking writes, a synchronous standby, and every node
        not taken down on purpose streams on the leader's timeline. ``Unavailable`` after
        ``timeout`` (default: the cluster's), naming what is still wrong."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        shown = ""
        while True:
            state = self._require()
            problem, fatal = self._diagnose(state)
            if problem is None:
                return
            if fatal:
                raise Unavailable(f"cluster in {self.directory} cannot become healthy: {problem}")
            if progress is not None:
                line = self._summary(state)
                if line != shown:
                    progress(line)
                    shown = line
            if time.monotonic() > deadline:
                raise Unavailable(f"cluster in {self.directory} not healthy: {problem}")
            time.sleep(0.25)

    # -- faults, for tests, benchmarks and the audit --------------------------------------

    def kill_leader_node(self) -> str:
        """kill -9 the leader's Patroni and postgres at once (a node crash); returns its
        name. The node stays down until ``start_node``."""
        leader = self.leader()
        node = self._node(leader.name)
        pids = [p for p in (self._patroni_pid(node), self._postgres_pid(node)) if p is not None]
        _process.kill_tree(pids, reap=self._reapable())
        node.stopped = True
        node.patroni_pid = None
        self._save()
        return leader.name

    def kill_leader_postgres(self) -> str:
        """kill -9 the leader's postmaster only (Patroni restarts it); returns its name."""
        leader = self.leader()
        pid = self._postgres_pid(self._node(leader.name))
        if pid is None:
            raise Unavailable(f"{leader.name} has no running postgres")
        _process.signal_all([pid], signal.SIGKILL)
        return leader.name

    def switchover(self, candidate: str | None = None) -> str:
        """Hand leadership to ``candidate`` (default: Patroni picks a synchronous standby)
        through Patroni's REST API; returns the new leader once it takes writes."""
        leader = self.leader()
        body: dict[str, str] = {"leader": leader.name}
        if candidate is not None:
            body["candidate"] = candidate
        request = urllib.request.Request(
            leader.rest_url + "/switchover",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                reply.read()
        except urllib.error.HTTPError as e:
            raise Unavailable(f"switchover refused: {e.read().decode(errors='replace')}") from e
        except OSError as e:
            raise Unavailable(f"switchover failed: {e}") from e
        return self.wait_leader(other_than=leader.name)

    def remove_replica(self, name: str | None = None) -> str:
        """Stop one replica cleanly (default: an asynchronous one if there is one, else a
        synchronous standby); returns its name. It stays down until ``start_node``."""
        running = [
            m
            for m in self.members()
            if m.role != "leader" and m.patroni_pid is not None and not self._node(m.name).stopped
        ]
        if name is None:
            if not running:
                raise Unavailable("no running replica to remove")
            running.sort(key=lambda m: m.role in SYNC_ROLES)
            name = running[0].name
        elif name not in {m.name for m in running}:
            raise InvalidArgument(f"{name} is not a running replica")
        state = self._require()
        node = self._node(name)
        self._stop_nodes(state, [node], 20.0)
        node.stopped = True
        self._save()
        return name

    def start_node(self, name: str) -> None:
        """Start a node taken down by a kill or ``remove_replica`` again (it rejoins as a
        replica, rewound if it had diverged); ``wait_healthy`` waits for it to stream."""
        node = self._node(name)
        self._start_node(self._prepare(lambda message: None), node)
        node.stopped = False
        self._save()

    # -- internals ----------------------------------------------------------------------

    def _prepare(self, say: Callable[[str], None]) -> Runtime:
        if self._runtime is None:
            self._runtime = prepare(runtime_dir=self._runtime_dir, user=self._user, progress=say)
        return self._runtime

    def _require(self) -> _State:
        # Another process (`engramdb cluster up/down`) may have changed the cluster since:
        # follow its cluster.json.
        stamp = _stamp(self.directory / STATE_FILE)
        if stamp != self._stamp:
            self._state = self._load()
        if self._state is None:
            raise NotFound(f"no cluster in {self.directory}; start one with: engramdb cluster up")
        return self._state

    def _node(self, name: str) -> _Node:
        for node in self._require().nodes:
            if node.name == name:
                return node
        raise NotFound(f"no node {name!r} in the cluster in {self.directory}")

    def _load(self) -> _State | None:
        path = self.directory / STATE_FILE
        self._stamp = _stamp(path)
        try:
            return msgspec.json.decode(path.read_bytes(), type=_State)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as e:
            raise InvalidArgument(f"unreadable cluster state {path}: {e}") from None

    def _save(self) -> None:
        path = self.directory / STATE_FILE
        partial = path.with_suffix(".partial")
        assert self._state is not None
        partial.write_bytes(msgspec.json.format(msgspec.json.encode(self._state)))
        partial.chmod(0o600)  # it holds the passwords
        partial.replace(path)
        self._stamp = _stamp(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.directory / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one up/down at a time per directory
            yield

    def _new_state(self, runtime: Runtime) -> _State:
        ports = _process.free_ports(2 + 2 * self.nodes)
        nodes = [
            _Node(f"node{i + 1}", pg_port=ports[2 + 2 * i], rest_port=ports[3 + 2 * i])
            for i in range(self.nodes)
        ]
        passwords = {k: secrets.token_urlsafe(18) for k in ("superuser", "replication", ROLE)}
        return _State(nodes, ports[0], ports[1], passwords, user=runtime.user.name)

    def _owned_dir(self, runtime: Runtime, path: Path) -> Path:
        path.mkdir(mode=0o700, exist_ok=True)
        runtime.give(path)
        return path

    def _owned_file(self, runtime: Runtime, path: Path, text: str | None = None) -> Path:
        if text is not None:
            path.write_text(text)
        else:
            path.touch()
        path.chmod(0o600)
        runtime.give(path)
        return path

    def _env(self, home: Path) -> dict[str, str]:
        return {**clean_env(), "HOME": str(home)}

    def _etcd_alive(self, state: _State) -> bool:
        child = self._children.get(state.etcd_pid or 0)
        if child is not None:
            # Ours: its exit status says. Its command line reads empty for an instant while
            # setpriv execs etcd, which twice failed a loaded test run's start at once as
            # "etcd did not start" (and left that etcd running).
            return child.poll() is None
        return _process.matches(state.etcd_pid, str(self.directory / "etcd"))

    def _start_etcd(self, runtime: Runtime, state: _State) -> None:
        if not self._etcd_alive(state):
            data = self._owned_dir(runtime, self.directory / "etcd")
            argv = etcd.command(
                runtime.etcd, data,
                client_port=state.etcd_client_port, peer_port=state.etcd_peer_port,
            )  # fmt: skip
            self._check_ports([state.etcd_client_port, state.etcd_peer_port])
            log = self._owned_file(runtime, self.directory / "etcd.log")
            child = _process.spawn(runtime.argv(argv), log=log, cwd=data, env=self._env(data))
            self._children[child.pid] = child
            state.etcd_pid = child.pid
            _process.wait_exec(child, str(data))
        # Alone, etcd is healthy ~2 s after it starts; in a loaded run its /health reads
        # (through raft, so fsyncs) can take much longer.
        deadline = time.monotonic() + 90
        while not etcd.healthy(state.etcd_client_port):
            if not self._etcd_alive(state) or time.monotonic() > deadline:
                if state.etcd_pid in self._children:  # ours: never left running unhealthy
                    _process.kill_tree([state.etcd_pid], reap=self._reapable())
                raise Unavailable(f"etcd did not start; see {self.directory / 'etcd.log'}")
            time.sleep(0.1)

    def _check_ports(self, ports: list[int]) -> None:
        taken = [p for p in ports if _process.port_in_use(p)]
        if taken:
            raise Unavailable(
                f"ports {taken} of the cluster in {self.directory} are taken by another "
                "program; stop it, or start a new cluster in another directory"
            )

    def _config_path(self, node: _Node) -> Path:
        return self.directory / node.name / "patroni.yml"

    def _patroni_pid(self, node: _Node) -> int | None:
        pid = node.patroni_pid
        return pid if _process.matches(pid, str(self._config_path(node))) else None

    def _postgres_pid(self, node: _Node) -> int | None:
        data = self.directory / node.name / "data"
        try:
            pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _process.matches(pid, str(data)) else None

    def _start_node(self, runtime: Runtime, node: _Node) -> None:
        if self._patroni_pid(node) is not None:
            return
        state = self._require()
        home = self._owned_dir(runtime, self.directory / node.name)
        if self._postgres_pid(node) is None:
            self._check_ports([node.pg_port, node.rest_port])
        config = patroni_config(
            name=node.name, home=home, pg_port=node.pg_port, rest_port=node.rest_port,
            etcd_port=state.etcd_client_port, bin_dir=runtime.bin_dir,
            passwords=state.passwords, synchronous=len(state.nodes) > 1,
        )  # fmt: skip
        text = "# Written by `engramdb cluster up` (JSON is YAML).\n" + json.dumps(config, indent=2)
        path = self._owned_file(runtime, self._config_path(node), text)
        log = self._owned_file(runtime, home / "patroni.log")
        child = _process.spawn(
            runtime.argv([*runtime.patroni, str(path)]), log=log, cwd=home, env=self._env(home)
        )
        self._children[child.pid] = child
        node.patroni_pid = child.pid
        _process.wait_exec(child, str(path))

    def _stop_nodes(self, state: _State, nodes: list[_Node], timeout: float) -> None:
        # Patroni stops its postgres on SIGTERM (fast shutdown) before it exits.
        patronis = [p for p in (self._patroni_pid(n) for n in nodes) if p is not None]
        _process.stop(patronis, timeout=timeout, reap=self._reapable())
        left = [p for p in (self._postgres_pid(n) for n in nodes) if p is not None]
        if left:
            _process.stop(left, timeout=timeout, reap=self._reapable())
        for node in nodes:
            node.patroni_pid = None

    def _reapable(self) -> list[Any]:
        return list(self._children.values())

    def _members(self, state: _State) -> list[Member]:
        view: dict[str, Any] = {}
        for node in state.nodes:
            found = _get(f"http://127.0.0.1:{node.rest_port}/cluster")
            if isinstance(found, dict) and found.get("members"):
                view = {m.get("name"): m for m in found["members"]}
                break
        members = []
        for node in state.nodes:
            seen = view.get(node.name, {})
            patroni = self._patroni_pid(node)
            lag = seen.get("lag")
            members.append(
                Member(
                    name=node.name,
                    role=str(seen.get("role", "stopped" if patroni is None else "starting")),
                    state=str(seen.get("state", "stopped" if patroni is None else "starting")),
                    pg_port=node.pg_port,
                    rest_port=node.rest_port,
                    timeline=seen.get("timeline"),
                    lag=lag if isinstance(lag, int) else None,
                    patroni_pid=patroni,
                    postgres_pid=self._postgres_pid(node),
                )
            )
        return members

    def _diagnose(self, state: _State) -> tuple[str | None, bool]:
        """(what keeps the cluster from being healthy or None, whether waiting cannot cure
        it)."""
        members = {m.name: m for m in self._members(state)}
        expected = [n for n in state.nodes if not n.stopped]
        for node in expected:
            if self._patroni_pid(node) is None:
                log = self.directory / node.name / "patroni.log"
                child = self._children.get(node.patroni_pid or 0)
                if child is not None and child.poll() is None:
                    # Ours and not exited: still on its way to exec Patroni (a loaded
                    # machine), not dead. Waiting cures that.
                    return f"{node.name}'s Patroni is starting", False
                code = "" if child is None else f", exit status {child.returncode}"
                return (
                    f"{node.name}'s Patroni is not running ({_last_line(log)}{code}); see {log}",
                    True,
                )
        leader = next((m for m in members.values() if m.role == "leader"), None)
        if leader is None or leader.state != "running":
            return "no leader yet", False
        if _get(leader.rest_url + "/primary") is None:
            return f"{leader.name} is not taking writes yet", False
        for node in expected:
            member = members[node.name]
            if member.name == leader.name:
                continue
            if member.state != "streaming" or member.timeline != leader.timeline:
                return (
                    f"{member.name} is not streaming from {leader.name} yet ({member.state})",
                    False,
                )
        if len(expected) > 1 and not any(m.role in SYNC_ROLES for m in members.values()):
            return "no synchronous standby yet", False
        return None, False

    def _summary(self, state: _State) -> str:
        return "  ".join(f"{m.name}: {m.role} {m.state}" for m in self._members(state))

    def _create_database(self) -> None:
        import psycopg
        from psycopg import sql

        state = self._require()
        leader = self.leader()
        password = state.passwords["superuser"]

        def admin(database: str) -> psycopg.Connection[Any]:
            return psycopg.connect(
                f"postgresql://postgres:{password}@127.0.0.1:{leader.pg_port}/{database}",
                autocommit=True,
                connect_timeout=10,
            )

        with admin("postgres") as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone():
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(ROLE), sql.Literal(state.passwords[ROLE])
                    )
                )
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(DATABASE), sql.Identifier(ROLE)
                    )
                )
        with admin(DATABASE) as conn:
            for extension in EXTENSIONS:
                conn.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension))
                )


def patroni_config(
    *,
    name: str,
    home: Path,
    pg_port: int,
    rest_port: int,
    etcd_port: int,
    bin_dir: Path,
    passwords: dict[str, str],
    synchronous: bool = True,
) -> dict[str, Any]:
    """One node's Patroni configuration. ``synchronous=False`` (a one-node cluster, which
    has no standby to wait for) turns synchronous replication off rather than block every
    commit."""
    dcs = (
        DCS if synchronous else {**DCS, "synchronous_mode": False, "synchronous_mode_strict": False}
    )
    return {
        "scope": SCOPE,
        "namespace": f"/{NAMESPACE}/",
        "name": name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": f"127.0.0.1:{rest_port}",
            "connect_address": f"127.0.0.1:{rest_port}",
        },
        "etcd3": {"hosts": [f"127.0.0.1:{etcd_port}"]},
        "bootstrap": {
            "dcs": dcs,
            # Only the C.UTF-8 locale is sure to exist on a minimal machine.
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{pg_port}",
            "connect_address": f"127.0.0.1:{pg_port}",
            "data_dir": str(home / "data"),
            "bin_dir": str(bin_dir),
            "pgpass": str(home / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": passwords["superuser"]},
                "replication": {"username": "replicator", "password": passwords["replication"]},
            },
            "parameters": {
                # TCP on loopback only: no socket directory to share or outgrow its path limit.
                "unix_socket_directories": "",
                # PostgreSQL's own log, in one file beside Patroni's: what a failover looks
                # like from the server (promotion, timelines, standbys connecting, rewinds).
                "logging_collector": "on",
                "log_directory": str(home / PG_LOG_DIR),
                "log_filename": PG_LOG_FILE,
                "log_rotation_age": 0,
                "log_rotation_size": 0,
                "log_line_prefix": "%m [%p] %b ",
                "log_replication_commands": "on",
            },
            "pg_hba": [
                "host replication replicator 127.0.0.1/32 scram-sha-256",
                "host all all 127.0.0.1/32 scram-sha-256",
            ],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def _stamp(path: Path) -> tuple[int, int] | None:
    """Identifies one version of the state file (each save replaces the file: new inode)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns)


def _get(url: str, *, timeout: float = 1.0) -> Any:
    """GET a Patroni REST endpoint: the decoded JSON on a 2xx answer, else None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            body = reply.read()
    except (OSError, urllib.error.URLError):
        return None
    try:
        return json.loads(body) if body else {}
    except ValueError:
        return {}


def _last_line(path: Path) -> str:
    """The last line of a log that says something (Python tracebacks end with the error)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    said = [line for line in lines if line]
    return said[-1][:200] if said else "empty log"

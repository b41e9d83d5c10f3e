"""Shared fixtures.

``db`` is the contract fixture: the same tests run against every placement of the API — the
in-memory engine, the LMDB engine, and a real ``engramdb serve`` subprocess through the
network client. Tests use a fake clock and never sleep for TTLs; against the server the
clock is the server's own fake clock (``--testing``), moved with ``ENGRAM.DEBUG CLOCK``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import engramdb
import engramdb.aio
from engramdb import Database, FakeClock
from engramdb.protocol.errors import error_from_reply

# Every face of the API: embedded (in-memory, LMDB, PostgreSQL), remote sync, and the two
# asyncio faces (embedded LMDB, remote), which the suite drives through ``Blocking`` below.
ENGINES = ["memory", "lmdb", "postgres", "server", "aio", "server-aio"]
CLOCK_START = 1_700_000_000.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the long soak and crash loops (e.g. 1000 kill -9 cycles instead of 20)",
    )


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))


HELPERS = Path(__file__).parent / "helpers"


@pytest.fixture(scope="session")
def preload_shim(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``preload_shim(name)``: ``tests/helpers/NAME.c`` built into an ``LD_PRELOAD``
    library (the failing or stalling filesystems of the fault tests); skips without gcc."""
    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            gcc = shutil.which("gcc")
            if gcc is None:
                pytest.skip(f"gcc is not installed: cannot build the {name} LD_PRELOAD shim")
            library = tmp_path_factory.mktemp("shim") / f"{name}.so"
            source = HELPERS / f"{name}.c"
            done = subprocess.run(
                [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(library), str(source), "-ldl"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            built[name] = library
        return built[name]

    return build


def run_last_in_directory(items: list[pytest.Item], module: Path) -> None:
    """Move the tests of ``module`` after the other tests of its directory (in place), for a
    module whose slow subprocesses ``start_with_directory`` starts with the directory's first
    test: the directory's other tests run meanwhile."""
    ours = [item for item in items if Path(str(item.path)) == module]
    directory = [item for item in items if module.parent in Path(str(item.path)).parents]
    if not ours:
        return
    moved = set(ours)
    last = max((i for i, item in enumerate(items) if item in directory and item not in moved),
               default=None)  # fmt: skip
    if last is not None:
        items[:] = [
            *(item for item in items[: last + 1] if item not in moved),
            *ours,
            *(item for item in items[last + 1 :] if item not in moved),
        ]


def start_with_directory(request: pytest.FixtureRequest, module: Path, fixture: str) -> None:
    """Set up ``fixture`` now (from a session-scoped autouse fixture of ``module``'s
    directory) when this run has tests of ``module``."""
    if any(Path(str(item.path)) == module for item in request.session.items):
        request.getfixturevalue(fixture)


class ServerProcess:
    """A real ``engramdb serve --testing`` subprocess on a free loopback port."""

    def __init__(self, data: Path, *extra: str) -> None:
        self.log = data.parent / f"{data.name}-server.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engramdb.cli", "serve", "--data", str(data),
                 "--port", "0", "--metrics-port", "0", "--durability", "none", "--testing",
                 *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        found = None
        for _ in range(600):  # up to ~30 s on a loaded machine
            found = re.search(r" on ([\d.]+):(\d+)", self.log.read_text())
            if found is not None or self.proc.poll() is not None:
                break
            threading.Event().wait(0.05)
        if found is None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"engramdb serve did not start:\n{self.log.read_text()}")
        self.host, self.port = found.group(1), int(found.group(2))
        self.url = f"engramdb://{self.host}:{self.port}"
        self.admin = engramdb.connect(self.url)

    def reset(self, **options: Any) -> None:
        reply = self.admin.execute("ENGRAM.DEBUG", "RESET", msgspec.msgpack.encode(options))
        if reply != b"OK":
            raise error_from_reply(str(reply))

    def stop(self) -> None:
        self.admin.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RemoteClock:
    """The ``FakeClock`` interface, driving the server's fake clock."""

    def __init__(self, server: ServerProcess) -> None:
        self._server = server

    def _clock(self, action: str, amount: float) -> float:
        return float(self._server.admin.execute("ENGRAM.DEBUG", "CLOCK", action, repr(amount)))

    def __call__(self) -> float:
        return self._clock("ADVANCE", 0.0)

    def advance(self, seconds: float) -> None:
        self._clock("ADVANCE", seconds)

    def set(self, now: float) -> None:
        self._clock("SET", now)


class _Loop:
    """One event loop on a thread of its own, for the asyncio faces under test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, awaitable: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(_awaited(awaitable), self.loop).result(60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class Blocking:
    """An asyncio face (``engramdb.aio``) driven from synchronous tests: every awaited call
    runs on ``loop`` and returns its result, async iterators are drained into lists, and
    handles the face returns come back wrapped the same way. So the one contract suite runs
    unchanged on the asyncio faces too."""

    def __init__(self, target: Any, loop: _Loop) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_loop", loop)

    def _wrap(self, value: Any) -> Any:
        if inspect.isfunction(value):  # e.g. what a decorator (memoize) returns

            def call(*args: Any, **kwargs: Any) -> Any:
                result = value(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = self._loop.run(result)
                return self._wrap(result)

            return call
        module = type(value).__module__
        if module.startswith(("engramdb.client", "engramdb.aio", "engramdb.transaction")) or (
            type(value).__name__ in ("AsyncCache", "AsyncTransaction")
        ):
            return Blocking(value, self._loop)
        return value

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.isasyncgenfunction(value):

            def drain(*args: Any, **kwargs: Any) -> Any:
                async def collect() -> list[Any]:
                    return [item async for item in value(*args, **kwargs)]

                return iter(self._loop.run(collect()))

            return drain
        if callable(value) and not isinstance(value, type):

            def call(*args: Any, **kwargs: Any) -> Any:
                result = value(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = self._loop.run(result)
                return self._wrap(result)

            return call
        return self._wrap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return f"<Blocking {self._target!r}>"

    def __enter__(self) -> Any:
        if hasattr(self._target, "__aenter__"):
            self._loop.run(self._target.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> Any:
        if hasattr(self._target, "__aexit__"):
            return self._loop.run(self._target.__aexit__(*exc))
        return None


@pytest.fixture(scope="session")
def event_loop_thread() -> Iterator[_Loop]:
    loop = _Loop()
    yield loop
    loop.stop()


@pytest.fixture(scope="session")
def engram_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("server") / "db")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One local PostgreSQL (bundled binaries, run as an unprivileged user, no fsync) for the
    whole run; skipped, never failed, where it cannot start."""
    try:
        import psycopg  # noqa: F401

        from engramdb.cluster.local import LocalPostgres
    except ImportError as e:
        pytest.skip(f"the postgres placement needs the postgres and cluster extras: {e}")
    try:
        server = LocalPostgres(fsync=False).start()
    except engramdb.EngramError as e:
        pytest.skip(f"no local PostgreSQL could start here: {e}")
    yield server
    server.close()


_schemas = iter(range(1, 1 << 30))


@pytest.fixture
def postgres_url(postgres_server: Any) -> Iterator[str]:
    """A URL to a fresh, empty engramdb database (a PostgreSQL schema of its own) on the
    shared server; the schema is dropped afterwards."""
    schema = f"t{os.getpid()}_{next(_schemas)}"
    yield f"{postgres_server.url()}?schema={schema}"
    postgres_server.psql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


OpenDb = Callable[..., Database]


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> FakeClock:
    """A fake clock; for the server placement, one that moves the server's clock."""
    if "engine_name" in request.fixturenames and request.getfixturevalue("engine_name") in (
        "server",
        "server-aio",
    ):
        server = request.getfixturevalue("engram_server")
        server.reset(clock_start=CLOCK_START)
        return RemoteClock(server)  # type: ignore[return-value]
    return FakeClock(CLOCK_START)


@pytest.fixture
def open_db(
    engine_name: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[OpenDb]:
    """Opens databases on the engine under test; closes them all afterwards."""
    opened: list[Any] = []

    def _open(**options: Any) -> Database:
        options.setdefault("clock", clock)
        options.setdefault("sweep_interval", None)
        if engine_name == "memory":
            db = engramdb.open(None, **options)
        elif engine_name == "lmdb":
            options.setdefault("durability", "none")
            db = engramdb.open(tmp_path / "db", **options)
        elif engine_name == "postgres":
            options.setdefault("durability", "none")
            db = engramdb.open(request.getfixturevalue("postgres_url"), **options)
        elif engine_name == "aio":
            loop: _Loop = request.getfixturevalue("event_loop_thread")
            options.setdefault("durability", "none")
            path = tmp_path / f"db{len(opened)}" if opened else tmp_path / "db"
            db = Blocking(loop.run(engramdb.aio.open(str(path), **options)), loop)  # type: ignore[assignment]
        else:
            server: ServerProcess = request.getfixturevalue("engram_server")
            options.pop("clock")
            options.pop("durability", None)
            if isinstance(options.get("limits"), engramdb.Limits):
                options["limits"] = dataclasses.asdict(options["limits"])
            server.reset(clock_start=CLOCK_START, **options)
            if engine_name == "server-aio":
                loop = request.getfixturevalue("event_loop_thread")
                db = Blocking(loop.run(engramdb.aio.connect(server.url)), loop)  # type: ignore[assignment]
            else:
                db = engramdb.connect(server.url)  # type: ignore[assignment]
        opened.append(db)
        return db

    yield _open
    for db in opened:
        db.close()


@pytest.fixture
def db(open_db: OpenDb) -> Database:
    return open_db()

"""redis-py's own command tests against ``engramdb serve`` and ``redis-server``, family by family.

    python bench/redis_py_suite.py                  # download (once), run both, report
    python bench/redis_py_suite.py --redis-py 8.2.0 # pin another redis-py release
    python bench/redis_py_suite.py --help

What it does:

1. Fetches redis-py's source distribution with ``pip download --no-binary :all: --no-deps
   redis==VERSION`` into a cache directory outside the repository (``--cache``, default
   ``~/.cache/engramdb-bench/redis-py``) and unpacks it there. VERSION defaults to the installed
   redis-py, so the tests match the client they import. The sdist carries ``tests/``.
2. Starts a private Debian ``redis-server`` and a private ``engramdb serve`` (fresh data
   directory, ``--durability none``), each on a free 127.0.0.1 port.
3. Runs pytest from the unpacked sdist on ``tests/test_commands.py``, ``tests/test_pubsub.py``
   and their asyncio twins under ``tests/test_asyncio/`` (when present) against each server with
   ``--redis-url``, deselecting the marks that need another deployment (``onlycluster``,
   ``redismod``, ``ssl``), writing junit XML next to the cache.
4. Puts every test id in a family (``FAMILIES`` below): every test of ``test_pubsub.py`` is
   pub/sub; a ``test_commands.py`` test belongs to the family of the Redis command its name
   starts with (``test_zadd_ch`` -> ZADD -> sorted-set), with ``NAME_OVERRIDES`` for the
   names that do not start with a command. The in-scope families are those of issue 16
   (string, list, hash, set, sorted-set, keyspace, pub/sub, server-introspection); the rest
   (streams, geo, ACL, bitmaps, HyperLogLog, scripting, transactions, cluster, modules, the
   client's own machinery, and anything not classified) are reported as out of scope.
5. Reports, per family: tests passing on redis-server, how many of those pass on engramdb, the
   ratio, and every in-scope test that passes on redis-server but not on engramdb with its
   one-line error (a test skipped on engramdb counts as not passing). Tests that fail or are
   skipped on redis-server are not counted at all.

Needs: ``pip install redis pytest pytest-asyncio pytest-timeout packaging numpy`` (what the
redis-py test modules import) and ``apt install redis-server``. Not part of the pytest suite:
it downloads code and takes several minutes.

``--quick`` runs only a handful of string-command tests (``QUICK_SELECT``), a smoke run.
Writes bench/results/redis_py_suite.json (``_common.Report``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from _common import (
    EngramServer,
    EngramUnavailable,
    RedisServer,
    RedisUnavailable,
    Report,
    exit_on_sigterm,
    find_redis_server,
    machine_info,
    new_progress,
    skip,
    temp_dir,
)

SECTION = "redis-py-suite"
PINNED_REDIS_PY = "8.2.0"
TEST_FILES = (
    "tests/test_commands.py",
    "tests/test_pubsub.py",
    "tests/test_asyncio/test_commands.py",
    "tests/test_asyncio/test_pubsub.py",
)
DESELECT = "not onlycluster and not redismod and not ssl"
PUBSUB_FILES = ("test_pubsub.py",)
QUICK_SELECT = ["-k", "test_append or test_strlen or test_getrange"]
SELECT: list[str] = []  # QUICK_SELECT under --quick


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# The families of issue 16, each with the Redis commands (Redis's own command groups, as in
# COMMAND DOCS) whose tests count toward it. ``keyspace`` is Redis's "generic" group;
# ``server-introspection`` is the "server" and "connection" groups minus ACL.
IN_SCOPE: dict[str, tuple[str, ...]] = {
    "string": _words(
        "append decr decrby get getdel getex getrange getset incr incrby incrbyfloat lcs mget "
        "mset msetnx msetex psetex set setex setnx setrange strlen substr increx"
    ),
    "list": _words(
        "blmove blmpop blpop brpop brpoplpush lindex linsert llen lmove lmpop lpop lpos lpush "
        "lpushx lrange lrem lset ltrim rpop rpoplpush rpush rpushx"
    ),
    "hash": _words(
        "hdel hexists hexpire hexpireat hexpiretime hget hgetall hgetdel hgetex hincrby "
        "hincrbyfloat hkeys hlen hmget hmset hpersist hpexpire hpexpireat hpexpiretime hpttl "
        "hrandfield hscan hset hsetex hsetnx hstrlen httl hvals"
    ),
    "set": _words(
        "sadd scard sdiff sdiffstore sinter sintercard sinterstore sismember smembers "
        "smismember smove spop srandmember srem sscan sunion sunionstore"
    ),
    "sorted-set": _words(
        "bzmpop bzpopmax bzpopmin zadd zcard zcount zdiff zdiffstore zincrby zinter "
        "zintercard zinterstore zlexcount zmpop zmscore zpopmax zpopmin zrandmember zrange "
        "zrangebylex zrangebyscore zrangestore zrank zrem zremrangebylex zremrangebyrank "
        "zremrangebyscore zrevrange zrevrangebylex zrevrangebyscore zrevrank zscan zscore "
        "zunion zunionstore"
    ),
    "keyspace": _words(
        "copy del dump exists expire expireat expiretime keys move object persist pexpire "
        "pexpireat pexpiretime pttl randomkey rename renamenx restore scan sort sort_ro touch "
        "ttl type unlink wait waitaof delete"
    ),
    "pub/sub": _words(
        "psubscribe publish pubsub punsubscribe spublish ssubscribe subscribe sunsubscribe "
        "unsubscribe"
    ),
    "server-introspection": _words(
        "auth client echo hello ping quit reset select swapdb "
        "bgrewriteaof bgsave command config dbsize debug failover flushall flushdb info "
        "lastsave latency lolwut memory monitor psync replicaof role save shutdown "
        "slaveof slowlog sync time"
    ),
}
OUT_OF_SCOPE: dict[str, tuple[str, ...]] = {
    "streams": _words(
        "xack xadd xautoclaim xclaim xdel xgroup xinfo xlen xpending xrange xread xreadgroup "
        "xrevrange xsetid xtrim"
    ),
    "geo": _words(
        "geoadd geodist geohash geopos georadius georadiusbymember georadiusmember geosearch "
        "geosearchstore"
    ),
    "ACL": ("acl",),
    "bitmaps": _words("bitcount bitfield bitfield_ro bitop bitpos getbit setbit"),
    "HyperLogLog": _words("pfadd pfcount pfmerge"),
    "scripting": _words("eval evalsha script function fcall"),
    "transactions": _words("multi exec discard watch unwatch"),
    "cluster": _words("cluster readonly readwrite asking"),
    "modules": ("module",),
    "client behaviour": (),
}

# Test names (``test_`` and any ``[param]`` stripped) that do not start with the command they
# exercise; each maps to its family, with why in the comment where it is not obvious.
NAME_OVERRIDES: dict[str, str] = {
    "22_info": "server-introspection",
    "binary_get_set": "string",
    "get_and_set": "string",
    "get_set_bit": "bitmaps",
    "getitem_and_setitem": "string",  # r[key] / r[key] = value: GET / SET
    "getitem_does_not_raise_keyerror_for_empty_string": "string",
    "getitem_raises_keyerror_for_missing_key": "string",
    "delitem": "keyspace",  # del r[key]: DEL
    "exists_contains": "keyspace",  # key in r: EXISTS
    "binary_lists": "list",
    "lists_with_byte_keys": "list",
    "lists_with_memoryview_keys": "list",
    "zaggregate_mapping_weights": "sorted-set",
    "zrandemember": "sorted-set",  # sic: redis-py's name for its ZRANDMEMBER test
    "spexpire_timedelta_is_exact": "keyspace",  # SET PX / PEXPIRE with a timedelta
    "spexpireat_datetime_ms_is_exact": "keyspace",
    "mpop_commands_omit_count_when_none": "list",  # LMPOP/BLMPOP argument building
    "floating_point_encoding": "sorted-set",  # ZADD/ZSCORE round-trip of a float
    "case_insensitive_command_names": "server-introspection",
    "command_on_invalid_key_type": "keyspace",  # WRONGTYPE on a key of another type
    "info_with_non_utf8_errorstat": "server-introspection",
    "server_deprecated_commands_do_not_emit_python_warnings": "server-introspection",
    "hello_notI_implemented": "server-introspection",
    "time": "server-introspection",
    "memory_stats_unified_responses": "server-introspection",
    "async_xread_exports_streaming_lag_metric": "streams",
    "async_xread_handles_empty_response": "streams",
    "async_xreadgroup_exports_streaming_lag_metric_with_consumer_group": "streams",
    "hotkeys_start_empty_slots_omits_slots": "cluster",  # HOTKEYS slot ranges (Redis 8)
    # The client's own machinery (reply callbacks, decoding options, interrupted reads), not
    # any command family: out of scope, listed under their own name.
    "empty_response_option": "client behaviour",
    "interrupted_command": "client behaviour",
    "large_responses": "client behaviour",
    "local_digest_encodes_with_the_client_encoding": "client behaviour",
    "never_decode_option": "client behaviour",
    "response_callbacks": "client behaviour",
    "unmapped_error_keeps_its_status_code": "client behaviour",
}


def family_of_command(command: str) -> str | None:
    for table in (IN_SCOPE, OUT_OF_SCOPE):
        for fam, commands in table.items():
            if command in commands:
                return fam
    return None


def classify(test_id: str) -> str:
    """The family of one test id (``tests/...py::Class::test_name[param]``)."""
    path, _, rest = test_id.partition("::")
    if Path(path).name in PUBSUB_FILES:
        return "pub/sub"
    name = re.sub(r"\[.*$", "", rest.rpartition("::")[2])
    name = name.removeprefix("test_")
    if name in NAME_OVERRIDES:
        return NAME_OVERRIDES[name]
    found = family_of_command(name.split("_")[0].lower())
    return found if found is not None else "unclassified"


# running pytest ----------------------------------------------------------------------------


class SetupError(RuntimeError):
    """The sdist could not be fetched, or its tests could not be collected."""


def fetch_sdist(version: str, cache: Path) -> Path:
    """redis-py's sdist for ``version`` unpacked under ``cache``; its directory."""
    target = cache / f"redis-{version}"
    if (target / "tests" / "test_commands.py").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"redis-{version}.tar.gz"
    if not archive.exists():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"redis=={version}",
                "-d",
                str(cache),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not archive.exists():
            raise SetupError(f"pip download redis=={version} failed:\n{done.stderr[-2000:]}")
    with tarfile.open(archive) as tar:
        tar.extractall(cache, filter="data")
    if not (target / "tests" / "test_commands.py").exists():
        raise SetupError(f"{archive} has no tests/test_commands.py")
    return target


@dataclass
class Outcome:
    status: str  # passed | failed | skipped
    message: str = ""


@dataclass
class SuiteRun:
    server: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0
    summary: str = ""


_RESULT_LINE = re.compile(r"^(\S+::\S+(?:\[.*?\])?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)")


def pytest_argv(sdist: Path, url: str, junit: Path, timeout: int) -> list[str]:
    files = [f for f in TEST_FILES if (sdist / f).exists()]
    return [
        sys.executable, "-m", "pytest", *files,
        f"--redis-url={url}", "-m", DESELECT, *SELECT,
        "-o", "addopts=", "-p", "no:cacheprovider", "-p", "no:randomly",
        f"--timeout={timeout}", f"--junitxml={junit}", "-v", "--color=no",
    ]  # fmt: skip


def collect_count(sdist: Path, url: str) -> int:
    files = [f for f in TEST_FILES if (sdist / f).exists()]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *files,
            f"--redis-url={url}",
            "-m",
            DESELECT,
            *SELECT,
            "-o",
            "addopts=",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
        ],
        cwd=sdist,
        capture_output=True,
        text=True,
    )
    ids = [ln for ln in done.stdout.splitlines() if "::" in ln]
    if done.returncode not in (0, 5) or not ids:
        raise SetupError(
            "collecting redis-py's tests failed (missing test dependencies? "
            "pip install pytest pytest-asyncio pytest-timeout packaging numpy):\n"
            + (done.stdout + done.stderr)[-3000:]
        )
    return len(ids)


def run_suite(
    server: str, sdist: Path, url: str, junit: Path, timeout: int, total: int, progress: Any
) -> SuiteRun:
    """pytest over ``TEST_FILES`` against ``url``, with a progress bar fed by ``-v`` lines."""
    task = progress.add_task(f"redis-py tests vs {server}", total=total)
    run = SuiteRun(server)
    began = time.perf_counter()
    failed = 0
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    # The sdist's own ``redis`` package is first on sys.path (pytest runs from its root): the
    # tests exercise the client they ship with.
    with subprocess.Popen(
        pytest_argv(sdist, url, junit, timeout),
        cwd=sdist,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            tail = [*tail[-40:], line.rstrip()]
            m = _RESULT_LINE.match(line)
            if m:
                failed += m.group(2) in ("FAILED", "ERROR")
                progress.update(
                    task,
                    advance=1,
                    description=f"redis-py tests vs {server} ({failed} failed)",
                )
                progress.refresh()
        proc.wait()
    run.seconds = time.perf_counter() - began
    run.summary = next((t.strip("= ") for t in reversed(tail) if " in " in t), "")
    if not junit.exists():
        raise SetupError(f"pytest against {server} wrote no junit XML:\n" + "\n".join(tail))
    run.outcomes = parse_junit(junit)
    progress.update(task, completed=total)
    progress.refresh()
    return run


def _test_id(classname: str, name: str) -> str:
    # classname is "tests.test_asyncio.test_commands.TestRedisCommands"; find where the module
    # ends (the first part starting with an upper-case letter is the class).
    parts = classname.split(".")
    cut = next((i for i, p in enumerate(parts) if p[:1].isupper()), len(parts))
    return "/".join(parts[:cut]) + ".py::" + "::".join([*parts[cut:], name])


def _one_line(text: str | None) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= 220 else line[:217] + "..."


def parse_junit(path: Path) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        tid = _test_id(case.get("classname", ""), case.get("name", ""))
        outcome = Outcome("passed")
        for child in case:
            if child.tag in ("failure", "error"):
                # A teardown error after a pass is still a failure of that test id.
                outcome = Outcome("failed", _one_line(child.get("message") or child.text))
                break
            if child.tag == "skipped":
                outcome = Outcome("skipped", _one_line(child.get("message") or child.text))
        if outcomes.get(tid, Outcome("passed")).status == "failed":
            continue
        outcomes[tid] = outcome
    return outcomes


# comparing ---------------------------------------------------------------------------------


@dataclass
class FamilyResult:
    family: str
    in_scope: bool
    redis_passing: int = 0
    engram_passing: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return self.engram_passing / self.redis_passing if self.redis_passing else None


def compare(redis_run: SuiteRun, engram_run: SuiteRun) -> list[FamilyResult]:
    order = [*IN_SCOPE, *OUT_OF_SCOPE, "unclassified"]
    results = {f: FamilyResult(f, f in IN_SCOPE) for f in order}
    for tid, outcome in sorted(redis_run.outcomes.items()):
        if outcome.status != "passed":
            continue
        fam = results[classify(tid)]
        fam.redis_passing += 1
        theirs = engram_run.outcomes.get(tid, Outcome("failed", "did not run against engramdb"))
        if theirs.status == "passed":
            fam.engram_passing += 1
        else:
            why = theirs.message if theirs.status == "failed" else f"skipped: {theirs.message}"
            fam.failures.append((tid, why))
    return [results[f] for f in order if results[f].redis_passing or f in IN_SCOPE]


def totals(results: Iterable[FamilyResult]) -> tuple[int, int]:
    rs = list(results)
    return sum(r.redis_passing for r in rs), sum(r.engram_passing for r in rs)


def _pct(num: int, den: int) -> str:
    return f"{100 * num / den:.1f}%" if den else "—"


# reporting ---------------------------------------------------------------------------------


def report(
    results: list[FamilyResult],
    runs: Sequence[SuiteRun],
    machine: dict[str, str],
    version: str,
    quick: bool,
    raw: dict[str, Any],
) -> Report:
    inscope = [r for r in results if r.in_scope]
    out = [r for r in results if not r.in_scope]
    rp, ep = totals(inscope)
    rep = Report(
        SECTION,
        "redis_py_suite",
        "redis-py's command tests (`bench/redis_py_suite.py`)",
        f"redis-py {version}'s own command and pub/sub tests against a private `redis-server` "
        "and `engramdb serve`; a test counts when it passes on redis-server.",
        quick,
        machine,
        raw=raw,
        about=f'Marks needing another deployment deselected (`-m "{DESELECT}"`). Runs: '
        + "; ".join(f"{r.server}: {r.summary} ({r.seconds:.0f} s)" for r in runs)
        + ".",
    )
    rep.check(
        "redis-py's command tests passing on redis-server that pass on engramdb",
        "redis-server",
        f"{ep} of {rp} ({_pct(ep, rp)})",
    )
    rows = [
        [
            r.family,
            str(r.redis_passing),
            str(r.engram_passing),
            _pct(r.engram_passing, r.redis_passing),
        ]
        for r in inscope
    ]
    rows.append(["**in scope**", f"**{rp}**", f"**{ep}**", f"**{_pct(ep, rp)}**"])
    rep.table(
        "", ["family", "pass on redis-server", "of those, pass on engramdb", "ratio"], rows, "lrrr"
    )
    failures = [[r.family, f"`{tid}`", why] for r in inscope for tid, why in r.failures]
    rep.table(
        "In-scope tests passing on redis-server but not on engramdb",
        ["family", "test", "error on engramdb"],
        failures,
        publish=False,
    )
    if out:
        orp, oep = totals(out)
        rep.note(
            "Out of scope (families engramdb does not claim)",
            ", ".join(f"{r.family} {r.engram_passing}/{r.redis_passing}" for r in out)
            + f" (together {oep}/{orp}).",
        )
    return rep


# main --------------------------------------------------------------------------------------


def installed_redis_py() -> str:
    try:
        return importlib.metadata.version("redis")
    except importlib.metadata.PackageNotFoundError:
        return PINNED_REDIS_PY


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="redis-py's own command and pub/sub tests against engramdb serve and "
        "redis-server, compared family by family."
    )
    parser.add_argument(
        "--redis-py",
        default=None,
        help=f"redis-py release whose tests to run (default: the installed one, else "
        f"{PINNED_REDIS_PY})",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "engramdb-bench"
        / "redis-py",
        help="where the sdist is downloaded and unpacked, and junit XML kept",
    )
    parser.add_argument("--timeout", type=int, default=30, help="per-test timeout, seconds")
    parser.add_argument("--data-dir", help="parent of engramdb's temporary data directory")
    parser.add_argument("--redis-server", help="redis-server executable (default: on PATH)")
    parser.add_argument("--quick", action="store_true", help="a few tests only (smoke run)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        SELECT[:] = QUICK_SELECT
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    version = args.redis_py or installed_redis_py()
    redis_exe = args.redis_server or find_redis_server()
    if redis_exe is None:
        return skip("redis-server is not installed (Debian: apt install redis-server)")
    try:
        console.print(f"redis-py {version} sdist under {args.cache} ...")
        sdist = fetch_sdist(version, args.cache)
        runs: list[SuiteRun] = []
        with contextlib.ExitStack() as stack:
            root = stack.enter_context(temp_dir("engramdb-bench-redispy-", args.data_dir))
            redis_srv = stack.enter_context(RedisServer(redis_exe))
            engram = stack.enter_context(
                EngramServer(os.path.join(root, "data"), durability="none")
            )
            total = collect_count(sdist, redis_srv.url)
            console.print(f"{total} tests collected from {', '.join(TEST_FILES)}")
            progress = stack.enter_context(new_progress())
            for name, url in (
                ("redis-server", redis_srv.url),
                ("engramdb", f"redis://127.0.0.1:{engram.port}/0"),
            ):
                junit = args.cache / f"junit-{version}-{name}.xml"
                junit.unlink(missing_ok=True)
                runs.append(run_suite(name, sdist, url, junit, args.timeout, total, progress))
            machine = machine_info(
                ("engramdb", "redis", "hiredis", "pytest"),
                data_dir=root,
                extra={"redis-server": f"{redis_srv.version} ({redis_exe})"},
            )
    except SetupError as e:  # offline, or the tests' own dependencies missing
        return skip(str(e))
    except (RedisUnavailable, EngramUnavailable) as e:
        console.print(f"[red]{e}[/red]")
        return 2

    results = compare(runs[0], runs[1])
    raw = {
        "redis_py": version,
        "deselect": DESELECT,
        "select": SELECT,
        "files": list(TEST_FILES),
        "runs": [{"server": r.server, "seconds": r.seconds, "summary": r.summary} for r in runs],
        "families": [
            {
                "family": r.family,
                "in_scope": r.in_scope,
                "redis_passing": r.redis_passing,
                "engram_passing": r.engram_passing,
                "failures": [{"test": t, "error": w} for t, w in r.failures],
            }
            for r in results
        ],
        "outcomes": {r.server: {t: o.status for t, o in sorted(r.outcomes.items())} for r in runs},
    }
    report(results, runs, machine, version, args.quick, raw).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())

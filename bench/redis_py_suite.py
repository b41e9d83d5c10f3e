"""redis-py's own command tests against ``engramdb serve`` and ``redis-server``, family by family.

    python bench/redis_py_suite.py [--quick] [--redis-py VERSION]   # --quick: 3 string tests

pytest runs redis-py's ``tests/test_commands.py``, ``tests/test_pubsub.py`` and their asyncio
twins, from its sdist (the installed release by default: the tests match the client), with
``--redis-url`` against a private ``redis-server`` and ``engramdb serve --durability none``.
A test counts when it passes on redis-server; per family (pub/sub by file, the rest by the
command its name starts with: ``test_zadd_ch`` → ZADD → sorted-set), how many of those pass on
engramdb (a skip there does not). Issue 16's families are in scope, the others reported apart.
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
from pathlib import Path
from typing import Any

from _common import (
    EngramServer,
    RedisServer,
    Report,
    exit_on_sigterm,
    find_redis_server,
    machine_info,
    new_progress,
    skip,
    temp_dir,
)

PINNED_REDIS_PY = "8.2.0"
TEST_FILES = (
    "tests/test_commands.py",
    "tests/test_pubsub.py",
    "tests/test_asyncio/test_commands.py",
    "tests/test_asyncio/test_pubsub.py",
)
DESELECT = "not onlycluster and not redismod and not ssl"
DEPENDENCIES = "pip install pytest pytest-asyncio pytest-timeout packaging numpy"
QUICK_SELECT = ["-k", "test_append or test_strlen or test_getrange"]

# Issue 16's families, each with the Redis commands (Redis's command groups, as in COMMAND
# DOCS) whose tests count toward it. ``keyspace`` is Redis's "generic" group;
# ``server-introspection`` is the "server" and "connection" groups minus ACL.
IN_SCOPE = {
    "string": "append decr decrby get getdel getex getrange getset incr incrby incrbyfloat lcs "
    "mget mset msetnx msetex psetex set setex setnx setrange strlen substr increx",
    "list": "blmove blmpop blpop brpop brpoplpush lindex linsert llen lmove lmpop lpop lpos "
    "lpush lpushx lrange lrem lset ltrim rpop rpoplpush rpush rpushx",
    "hash": "hdel hexists hexpire hexpireat hexpiretime hget hgetall hgetdel hgetex hincrby "
    "hincrbyfloat hkeys hlen hmget hmset hpersist hpexpire hpexpireat hpexpiretime hpttl "
    "hrandfield hscan hset hsetex hsetnx hstrlen httl hvals",
    "set": "sadd scard sdiff sdiffstore sinter sintercard sinterstore sismember smembers "
    "smismember smove spop srandmember srem sscan sunion sunionstore",
    "sorted-set": "bzmpop bzpopmax bzpopmin zadd zcard zcount zdiff zdiffstore zincrby zinter "
    "zintercard zinterstore zlexcount zmpop zmscore zpopmax zpopmin zrandmember zrange "
    "zrangebylex zrangebyscore zrangestore zrank zrem zremrangebylex zremrangebyrank "
    "zremrangebyscore zrevrange zrevrangebylex zrevrangebyscore zrevrank zscan zscore zunion "
    "zunionstore",
    "keyspace": "copy del dump exists expire expireat expiretime keys move object persist "
    "pexpire pexpireat pexpiretime pttl randomkey rename renamenx restore scan sort sort_ro "
    "touch ttl type unlink wait waitaof delete",
    "pub/sub": "psubscribe publish pubsub punsubscribe spublish ssubscribe subscribe "
    "sunsubscribe unsubscribe",
    "server-introspection": "auth client echo hello ping quit reset select swapdb bgrewriteaof "
    "bgsave command config dbsize debug failover flushall flushdb info lastsave latency lolwut "
    "memory monitor psync replicaof role save shutdown slaveof slowlog sync time",
}
OUT_OF_SCOPE = {
    "streams": "xack xadd xautoclaim xclaim xdel xgroup xinfo xlen xpending xrange xread "
    "xreadgroup xrevrange xsetid xtrim",
    "geo": "geoadd geodist geohash geopos georadius georadiusbymember georadiusmember geosearch "
    "geosearchstore",
    "ACL": "acl",
    "bitmaps": "bitcount bitfield bitfield_ro bitop bitpos getbit setbit",
    "HyperLogLog": "pfadd pfcount pfmerge",
    "scripting": "eval evalsha script function fcall",
    "transactions": "multi exec discard watch unwatch",
    "cluster": "cluster readonly readwrite asking",
    "modules": "module",
    "client behaviour": "",
}
FAMILY = {c: f for table in (IN_SCOPE, OUT_OF_SCOPE) for f, cs in table.items() for c in cs.split()}
# Test names (``test_`` and ``[param]`` stripped) not starting with their command: getitem is
# r[key] (GET / SET), delitem DEL, exists_contains ``key in r``, zrandemember sic, spexpire* SET
# PX / PEXPIRE, hotkeys_* Redis 8's HOTKEYS; "client behaviour" is the client's own machinery.
NAME_OVERRIDES = {name: family for family, names in {
    "string": "binary_get_set get_and_set getitem_and_setitem getitem_raises_keyerror_for_"
    "missing_key getitem_does_not_raise_keyerror_for_empty_string",
    "keyspace": "delitem exists_contains spexpire_timedelta_is_exact "
    "spexpireat_datetime_ms_is_exact command_on_invalid_key_type",
    "list": "binary_lists lists_with_byte_keys lists_with_memoryview_keys "
    "mpop_commands_omit_count_when_none",
    "sorted-set": "zaggregate_mapping_weights zrandemember floating_point_encoding",
    "bitmaps": "get_set_bit",
    "server-introspection": "22_info case_insensitive_command_names time hello_notI_implemented "
    "info_with_non_utf8_errorstat server_deprecated_commands_do_not_emit_python_warnings "
    "memory_stats_unified_responses",
    "streams": "async_xread_exports_streaming_lag_metric async_xread_handles_empty_response "
    "async_xreadgroup_exports_streaming_lag_metric_with_consumer_group",
    "cluster": "hotkeys_start_empty_slots_omits_slots",
    "client behaviour": "empty_response_option interrupted_command large_responses "
    "local_digest_encodes_with_the_client_encoding never_decode_option response_callbacks "
    "unmapped_error_keeps_its_status_code",
}.items() for name in names.split()}  # fmt: skip


def classify(test_id: str) -> str:
    """The family of one test id (``tests/...py::Class::test_name[param]``)."""
    path, _, rest = test_id.partition("::")
    if Path(path).name == "test_pubsub.py":
        return "pub/sub"
    name = re.sub(r"\[.*$", "", rest.rpartition("::")[2]).removeprefix("test_")
    return NAME_OVERRIDES.get(name) or FAMILY.get(name.split("_")[0].lower(), "unclassified")


class SetupError(RuntimeError):
    """The sdist could not be fetched, or its tests could not be collected."""


def fetch_sdist(version: str, cache: Path) -> Path:
    """redis-py's sdist for ``version`` unpacked under ``cache``; its directory."""
    target, archive = cache / f"redis-{version}", cache / f"redis-{version}.tar.gz"
    if not (target / "tests" / "test_commands.py").exists():
        cache.mkdir(parents=True, exist_ok=True)
        if not archive.exists():
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                                   "--no-deps", f"redis=={version}", "-d", str(cache)],
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode != 0 or not archive.exists():
                raise SetupError(f"pip download redis=={version} failed:\n{done.stderr[-2000:]}")
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
        if not (target / "tests" / "test_commands.py").exists():
            raise SetupError(f"{archive} has no tests/test_commands.py")
    return target


def pytest(sdist: Path, url: str, select: list[str], *extra: str) -> list[str]:
    files = [f for f in TEST_FILES if (sdist / f).exists()]
    return [sys.executable, "-m", "pytest", *files, f"--redis-url={url}", "-m", DESELECT,
            *select, "-o", "addopts=", "-p", "no:cacheprovider", *extra]  # fmt: skip


RESULT_LINE = re.compile(r"^\S+::\S+(?:\[.*?\])? (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)")


def run_suite(server: str, argv: list[str], sdist: Path, junit: Path, progress: Any) -> Any:
    """pytest against one server, a progress bar fed by its ``-v`` lines; the outcome of each
    test id (``(status, one-line message)``), the seconds it took and pytest's summary."""
    task = progress.add_task(f"redis-py tests vs {server}", total=None)
    began, failed, tail = time.perf_counter(), 0, [""]
    # pytest runs from the sdist's root, so its own ``redis`` package is the one imported: the
    # tests exercise the client they ship with.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [*argv, "-p", "no:randomly", f"--junitxml={junit}", "-v", "--color=no"]
    junit.unlink(missing_ok=True)
    with subprocess.Popen(argv, cwd=sdist, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env) as proc:  # fmt: skip
        for line in proc.stdout or ():
            tail = [*tail[-40:], line.rstrip()]
            if m := RESULT_LINE.match(line):
                failed += m.group(1) in ("FAILED", "ERROR")
                progress.update(task, advance=1, description=f"vs {server} ({failed} failed)")
                progress.refresh()
    if not junit.exists():
        raise SetupError(f"pytest against {server} wrote no junit XML:\n" + "\n".join(tail))
    summary = next((t.strip("= ") for t in reversed(tail) if " in " in t), "")
    return {"server": server, "seconds": time.perf_counter() - began, "summary": summary,
            "outcomes": parse_junit(junit), "tail": "\n".join(tail)}  # fmt: skip


def parse_junit(path: Path) -> dict[str, tuple[str, str]]:
    """``(passed|failed|skipped, first line of the message)`` per test id; a teardown error
    after a pass is still a failure of that test id."""
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        # classname is "tests.test_asyncio.test_commands.TestRedisCommands": the module ends
        # where the first part starting with an upper-case letter (the class) begins.
        parts = case.get("classname", "").split(".")
        cut = next((i for i, p in enumerate(parts) if p[:1].isupper()), len(parts))
        tid = "/".join(parts[:cut]) + ".py::" + "::".join([*parts[cut:], case.get("name", "")])
        outcome = ("passed", "")
        for child in (c for c in case if c.tag in ("failure", "error", "skipped")):
            text = child.get("message") or child.text or ""
            line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            line = line if len(line) <= 220 else line[:217] + "..."
            outcome = ("skipped" if child.tag == "skipped" else "failed", line)
            if outcome[0] == "failed":
                break
        if outcomes.get(tid, ("passed",))[0] != "failed":
            outcomes[tid] = outcome
    return outcomes


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per family: tests passing on redis-server (``theirs``), how many of them pass on
    engramdb, and each one that does not with why."""
    order = [*IN_SCOPE, *OUT_OF_SCOPE, "unclassified"]
    families = {f: {"in_scope": f in IN_SCOPE, "redis": 0, "engram": 0, "failures": []}
                for f in order}  # fmt: skip
    for tid, (status, _) in sorted(theirs["outcomes"].items()):
        if status == "passed":
            fam = families[classify(tid)]
            fam["redis"] += 1
            got, why = ours["outcomes"].get(tid, ("failed", "did not run against engramdb"))
            if got == "passed":
                fam["engram"] += 1
            else:
                fam["failures"].append((tid, why if got == "failed" else f"skipped: {why}"))
    return {f: r for f, r in families.items() if r["redis"] or r["in_scope"]}


def pct(num: int, den: int) -> str:
    return f"{100 * num / den:.1f}%" if den else "—"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-py", help=f"release whose tests run (default: the installed "
                        f"one, else {PINNED_REDIS_PY})")  # fmt: skip
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    parser.add_argument("--cache", type=Path, default=cache / "engramdb-bench" / "redis-py",
                        help="where the sdist is unpacked and junit XML kept")  # fmt: skip
    parser.add_argument("--timeout", type=int, default=30, help="per-test timeout, seconds")
    parser.add_argument("--data-dir", help="parent of engramdb's temporary data directory")
    parser.add_argument("--redis-server", help="redis-server executable (default: on PATH)")
    parser.add_argument("--quick", action="store_true", help="a few tests only (smoke run)")
    args = parser.parse_args(argv)
    select = QUICK_SELECT if args.quick else []
    exit_on_sigterm()
    version = args.redis_py
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        version = version or importlib.metadata.version("redis")
    version = version or PINNED_REDIS_PY
    redis_exe = args.redis_server or find_redis_server()
    if redis_exe is None:
        return skip("redis-server is not installed (Debian: apt install redis-server)")
    try:
        print(f"redis-py {version} sdist under {args.cache} ...")
        sdist = fetch_sdist(version, args.cache)
        with (temp_dir("engramdb-bench-redispy-", args.data_dir) as root,
              RedisServer(redis_exe) as redis_srv,
              EngramServer(f"{root}/data", durability="none") as engram):  # fmt: skip
            runs, engram_url = [], f"redis://127.0.0.1:{engram.port}/0"
            with new_progress() as progress:
                for name, url in (("redis-server", redis_srv.url), ("engramdb", engram_url)):
                    argv = pytest(sdist, url, select, f"--timeout={args.timeout}")
                    junit = args.cache / f"junit-{version}-{name}.xml"
                    runs.append(run_suite(name, argv, sdist, junit, progress))
                    if not any(o == "passed" for o, _ in runs[0]["outcomes"].values()):
                        raise SetupError(f"nothing passed on redis-server: {DEPENDENCIES}?\n"
                                         + runs[0]["tail"])  # fmt: skip
            extra = {"redis-server": f"{redis_srv.version} ({redis_exe})"}
            machine = machine_info(("engramdb", "redis", "hiredis", "pytest"), data_dir=root,
                                   extra=extra)  # fmt: skip
    except SetupError as e:  # offline, or the tests' own dependencies missing
        return skip(str(e))
    families = compare(runs[1], runs[0])
    inscope = {f: r for f, r in families.items() if r["in_scope"]}
    rp, ep = (sum(r[k] for r in inscope.values()) for k in ("redis", "engram"))
    title = "redis-py's command tests (`bench/redis_py_suite.py`)"
    report = Report(
        "redis-py-suite", "redis_py_suite", title,
        f"redis-py {version}'s own command and pub/sub tests against a private `redis-server` "
        "and `engramdb serve`; a test counts when it passes on redis-server.", args.quick, machine,
        about=f'Marks needing another deployment deselected (`-m "{DESELECT}"`). Runs: '
        + "; ".join(f"{r['server']}: {r['summary']} ({r['seconds']:.0f} s)" for r in runs) + ".",
    )  # fmt: skip
    report.check("redis-py's command tests passing on redis-server that pass on engramdb",
                 "redis-server", f"{ep} of {rp} ({pct(ep, rp)})")  # fmt: skip
    rows = [[f, str(r["redis"]), str(r["engram"]), pct(r["engram"], r["redis"])]
            for f, r in inscope.items()]  # fmt: skip
    rows.append(["**in scope**", f"**{rp}**", f"**{ep}**", f"**{pct(ep, rp)}**"])
    report.table(title, ["family", "pass on redis-server", "of those, pass on engramdb", "ratio"],
                 rows, "lrrr")  # fmt: skip
    report.table("In-scope tests passing on redis-server but not on engramdb",
                 ["family", "test", "error on engramdb"],
                 [[f, f"`{t}`", why] for f, r in inscope.items() for t, why in r["failures"]],
                 publish=False)  # fmt: skip
    if out := {f: r for f, r in families.items() if not r["in_scope"]}:
        report.note("Out of scope (families engramdb does not claim)",
                    ", ".join(f"{f} {r['engram']}/{r['redis']}" for f, r in out.items())
                    + f" (together {sum(r['engram'] for r in out.values())}/"
                    f"{sum(r['redis'] for r in out.values())}).")  # fmt: skip
    report.raw = {
        "redis_py": version, "deselect": DESELECT, "select": select, "files": list(TEST_FILES),
        "runs": [{k: r[k] for k in ("server", "seconds", "summary")} for r in runs],
        "families": families,  # passing on redis-server, of those on engramdb, failures
    }  # fmt: skip
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lua scripting: EVAL, EVALSHA, SCRIPT LOAD/EXISTS/FLUSH/KILL, on an embedded Lua 5.1.

Rules:

- A script runs inside ONE write plan (one engine transaction, one commit, one in-flight
  item). ``redis.call``/``redis.pcall`` run the same command handlers as the network does,
  against that transaction, so a script sees its own writes and nobody else's in between.
- All or nothing: the script's writes are held in an overlay (``Overlay``) and reach the
  transaction only when the script returns. A script that raises an error, runs past
  ``SCRIPT_TIME_LIMIT`` or uses more than ``SCRIPT_MEMORY`` applies nothing (Redis keeps the
  writes made before the error; here they are dropped). A script that *returns* an error
  reply (``return redis.error_reply(...)``) is not a failure: its writes apply.
- Sandboxed: the script sees only the base functions, ``string`` (without ``dump``),
  ``table``, ``math``, ``redis``, ``KEYS`` and ``ARGV``; no ``os``, ``io``, ``debug``,
  ``require``, ``load*``, ``dofile``, ``getfenv``/``setfenv`` or coroutines, and no Python
  object ever reaches it. Globals are read-only, as in Redis 7; ``math.random`` is seeded
  the same on every run, so scripts are deterministic.
- Bounded: an instruction-count hook stops a script at its deadline; ``pcall`` cannot catch
  that stop. The event loop is never blocked longer than that bound (and with
  ``durability=sync`` scripts run on the commit thread, not on the loop).
- Conversions follow Redis (RESP2 rules): integers ↔ numbers (truncated), bulk ↔ string,
  nil bulk/array ↔ false, arrays ↔ tables (up to the first nil), status ↔ ``{ok=...}``,
  error ↔ ``{err=...}``, true → 1.
- Commands that do not run in a transaction (``transactions.NOT_IN_TRANSACTION``, MULTI,
  EXEC, WATCH, EVAL, SCRIPT...) are refused from scripts with Redis' error.
- Missing from Redis' Lua: the ``cjson``, ``cmsgpack``, ``struct`` and ``bit`` libraries,
  ``redis.setresp``, ``redis.log`` output (accepted, discarded), SCRIPT DEBUG, FUNCTION.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from engramdb.protocol.resp import NULL_ARRAY, Double, ErrorReply, SetReply, SimpleString, Verbatim
from engramdb.server.commands import COMMANDS, RedisError, Reply, Write, command
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.transactions import (
    RUN_AT_ONCE,
    arity_ok,
    execute,
    queueable,
    txn_connection,
)
from engramdb.server.handlers.values import LLONG_MAX, LLONG_MIN, format_float, parse_int
from engramdb.storage.base import overlay_scan

if TYPE_CHECKING:
    from engramdb.server.connection import Connection
    from engramdb.storage.base import WriteFn, WriteTxn

__all__ = [
    "MAX_SCRIPTS",
    "NOT_IN_SCRIPT",
    "SCRIPT_MEMORY",
    "SCRIPT_TIME_LIMIT",
    "Overlay",
    "ScriptEngine",
]

SCRIPT_TIME_LIMIT = 1.0  # seconds a script may run before it is stopped (nothing applied)
SCRIPT_MEMORY = 128 << 20  # bytes the Lua heap of the running scripts may use
MAX_SCRIPTS = 10_000  # scripts kept for EVALSHA; past it the least recently used go
_HOOK_EVERY = 10_000  # Lua instructions between two deadline checks

NOT_IN_SCRIPT = RUN_AT_ONCE | {"eval", "evalsha", "eval_ro", "evalsha_ro", "script", "unwatch"}

_NOSCRIPT = "NOSCRIPT No matching script. Please use EVAL."
_OUT_OF_MEMORY = b"out of memory"
_MEMORY_TEXT = (
    f"ERR the script used more than {SCRIPT_MEMORY >> 20} MiB and was stopped; "
    "nothing it wrote was applied"
)
_HEADROOM = 1 << 20  # bytes kept free below the limit when handing a reply to Lua

# The sandbox, built once per Lua runtime with the full standard library in reach, which
# only the closures below keep. Returns ``compile(source)`` and ``run(...)``.
_BOOT = r"""
local base_pcall, base_xpcall, base_error, base_type = pcall, xpcall, error, type
local base_setfenv, base_loadstring, base_setmetatable = setfenv, loadstring, setmetatable
local base_tostring, base_pairs, base_select, base_unpack = tostring, pairs, select, unpack
local sethook, getinfo = debug.sethook, debug.getinfo
local randomseed, collect = math.randomseed, collectgarbage

local killed = nil  -- set once the running script must stop: pcall cannot catch it then

local function copy(t, without)
  local c = {}
  for k, v in base_pairs(t) do if k ~= without then c[k] = v end end
  return c
end
local strlib, tablib, mathlib = copy(string, "dump"), copy(table), copy(math)
-- ("x"):upper() goes through the string metatable: point it at the copy and hide it.
local smeta = getmetatable("")
smeta.__index = strlib
smeta.__metatable = false
string.dump = nil

local function readonly_error() base_error("Attempt to modify a readonly table", 2) end
local function readonly(t)
  return base_setmetatable({}, {__index = t, __newindex = readonly_error, __metatable = false})
end

local function stop_if_killed(...)
  if killed then base_error(killed, 0) end
  return ...
end

local base = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  rawequal = rawequal, rawget = rawget, rawset = rawset, select = select,
  tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
  setmetatable = setmetatable, getmetatable = getmetatable, _VERSION = _VERSION,
  pcall = function(...) return stop_if_killed(base_pcall(...)) end,
  xpcall = function(f, h) return stop_if_killed(base_xpcall(f, h)) end,
}

local function where()
  -- the line of the script that is running (its chunk is named @user_script)
  for level = 2, 32 do
    local info = getinfo(level, "Sl")
    if info == nil then break end
    if info.source == "@user_script" then return info.currentline end
  end
  return 0
end

local function compile(source)
  local fn, err = base_loadstring(source, "@user_script")
  return fn or false, err or false
end

local function run(fn, py_call, sha1hex, expired, nkeys, ...)
  killed = nil
  local all, keys, argv = {...}, {}, {}
  for i = 1, base_select("#", ...) do
    if i <= nkeys then keys[i] = all[i] else argv[i - nkeys] = all[i] end
  end
  local call_error, call_line = nil, 0
  local function call(raise, ...)
    local status, value = py_call(...)
    if status == 2 then killed = value; base_error(value, 0) end
    if status == 1 then
      if raise then
        -- Redis raises the error text itself; the script's reply adds where it happened.
        call_error, call_line = value, where()
        base_error(value, 0)
      end
      return {err = value}
    end
    return value
  end
  local redis = {
    -- not tail calls: the script's frame (and so its line) stays on the stack
    call = function(...) local reply = call(true, ...); return reply end,
    pcall = function(...) local reply = call(false, ...); return reply end,
    error_reply = function(text) return {err = text} end,
    status_reply = function(text) return {ok = text} end,
    sha1hex = sha1hex,
    log = function() end,
    set_repl = function() end,
    replicate_commands = function() return true end,
    LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
    REPL_NONE = 0, REPL_AOF = 1, REPL_REPLICA = 2, REPL_SLAVE = 2, REPL_ALL = 3,
  }
  local globals = copy(base)
  globals.string, globals.table = readonly(strlib), readonly(tablib)
  globals.math = readonly(mathlib)
  globals.redis, globals.KEYS, globals.ARGV = readonly(redis), keys, argv
  local env = base_setmetatable({}, {
    __index = function(_, name)
      local value = globals[name]
      if value == nil then
        base_error("Script attempted to access nonexistent global variable '"
          .. base_tostring(name) .. "'", 2)
      end
      return value
    end,
    __newindex = readonly_error,
    __metatable = false,
  })
  base_setfenv(fn, env)
  randomseed(0)
  local failed_line = 0
  local function handler(err)
    failed_line = where()
    return err
  end
  local function deadline()
    if not killed and expired() then killed = "timeout"; base_error(killed, 0) end
  end
  sethook(deadline, "", HOOK_EVERY)
  local ok, result = base_xpcall(fn, handler)
  sethook()
  base_setfenv(fn, {})
  if killed then return false, killed, 0, true end
  if ok then return true, result, 0, false end
  if result ~= nil and result == call_error then failed_line = call_line end
  if base_type(result) == "table" and result.err ~= nil then result = result.err end
  return false, base_tostring(result), failed_line, false
end

local function collect_garbage() collect("collect") end

return compile, run, collect_garbage
"""


class Overlay:
    """A ``WriteTxn`` that holds its writes until ``commit()``.

    Reads see the held writes, then the transaction under it. Nothing else writes to that
    transaction until ``commit()`` (a script runs inside one plan), so the held changes will
    get the sequences that follow its next one, in order: ``log`` and ``next_sequence``
    answer those, and record generations come out as if written directly.
    """

    def __init__(self, txn: WriteTxn) -> None:
        self._txn = txn
        self._values: dict[bytes, bytes | None] = {}
        self._ops: list[Callable[[WriteTxn], Any]] = []
        self._logged = 0

    def get(self, rk: bytes) -> bytes | None:
        return self._values[rk] if rk in self._values else self._txn.get(rk)

    def put(self, rk: bytes, value: bytes, expires_ms: int, prev_expires_ms: int | None) -> None:
        self._values[rk] = value
        self._ops.append(lambda txn: txn.put(rk, value, expires_ms, prev_expires_ms))

    def delete(self, rk: bytes, prev_expires_ms: int) -> None:
        self._values[rk] = None
        self._ops.append(lambda txn: txn.delete(rk, prev_expires_ms))

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        return overlay_scan(self._txn.scan, self._values, start, end, limit, reverse)

    def log(self, kind: str, rk: bytes, generation: int, at_ms: int) -> int:
        sequence = self.next_sequence()

        def replay(txn: WriteTxn) -> None:
            # generations of created records were computed from this prediction
            if txn.log(kind, rk, generation, at_ms) != sequence:
                raise RuntimeError("a script's changes did not get the sequences predicted")

        self._ops.append(replay)
        self._logged += 1
        return sequence

    def next_sequence(self) -> int:
        return self._txn.next_sequence() + self._logged

    def commit(self) -> None:
        """Stage every held write, in order, in the transaction under this one."""
        for op in self._ops:
            op(self._txn)
        self._ops.clear()
        self._logged = 0


class ScriptFailed(RedisError):
    """A script stopped with an error: nothing it wrote is applied."""


def _deny_attributes(obj: Any, name: Any, is_setting: bool) -> Any:
    raise AttributeError("Python objects are not reachable from scripts")


class _Runtime:
    """One sandboxed Lua state and the functions compiled in it."""

    def __init__(self) -> None:
        import lupa.lua51 as lua

        self.lua = lua
        self.runtime = lua.LuaRuntime(
            unpack_returned_tuples=True,
            register_eval=False,
            register_builtins=False,
            encoding=None,
            attribute_filter=_deny_attributes,
            max_memory=SCRIPT_MEMORY,
        )
        boot = _BOOT.replace("HOOK_EVERY", str(_HOOK_EVERY))
        self.compile, self.run, self.collect = self.runtime.execute(boot)
        self.functions: dict[str, Any] = {}

    def function(self, sha: str, source: bytes) -> Any:
        fn = self.functions.get(sha)
        if fn is None:
            fn, error = self.compile(source)
            if fn is False:
                raise Reply(f"ERR Error compiling script (new function): {_text(error)}")
            self.functions[sha] = fn
        return fn


class ScriptEngine:
    """The scripts a server knows (by SHA1) and the Lua runtime that runs them.

    Scripts run inside write plans, one at a time; SCRIPT LOAD checks syntax on a second,
    idle runtime, so the event loop never waits for a running script.
    """

    def __init__(self) -> None:
        self._sources: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._runner: _Runtime | None = None
        self._checker: _Runtime | None = None

    # the script cache --------------------------------------------------------------------

    def load(self, source: bytes) -> str:
        """Check ``source`` compiles and keep it; returns its SHA1 (Redis' script id)."""
        sha = hashlib.sha1(source).hexdigest()
        with self._lock:
            if sha in self._sources:
                self._sources.move_to_end(sha)
                return sha
            if self._checker is None:
                self._checker = _Runtime()
            checker = self._checker
        try:
            fn, error = checker.compile(source)
        except checker.lua.LuaMemoryError:
            with self._lock:
                self._checker = None
            raise Reply("ERR Error compiling script: out of memory") from None
        if fn is False:
            raise Reply(f"ERR Error compiling script (new function): {_text(error)}")
        with self._lock:
            self._sources[sha] = source
            while len(self._sources) > MAX_SCRIPTS:
                self._sources.popitem(last=False)
        return sha

    def source(self, sha: str) -> bytes | None:
        with self._lock:
            source = self._sources.get(sha)
            if source is not None:
                self._sources.move_to_end(sha)
            return source

    def exists(self, sha: str) -> bool:
        with self._lock:
            return sha.lower() in self._sources

    def flush(self) -> None:
        with self._lock:
            self._sources.clear()
            self._runner = None  # its compiled functions go with it

    # running -----------------------------------------------------------------------------

    def run(
        self,
        sha: str,
        source: bytes,
        keys: list[bytes],
        argv: list[bytes],
        call: Callable[[list[bytes]], Any],
    ) -> Any:
        """Run a script (inside a write plan); returns its reply or raises ``ScriptFailed``.

        ``call(args)`` runs one command for ``redis.call``: it returns the reply, an
        ``ErrorReply`` for a command error, or raises to stop the script and fail the plan.
        """
        with self._lock:
            if self._runner is None:
                self._runner = _Runtime()
            runtime = self._runner
        lua = runtime.lua
        fatal: list[BaseException] = []
        deadline = time.monotonic() + SCRIPT_TIME_LIMIT

        def expired() -> bool:
            return time.monotonic() > deadline

        def py_call(*raw: Any) -> tuple[int, Any]:
            try:
                args = _command_args(raw)
                cmd = COMMANDS.get(args[0].upper()) if args else None
                if cmd is None:
                    return 1, b"ERR Unknown Redis command called from script"
                if not arity_ok(cmd, args):
                    return 1, b"ERR Wrong number of args calling Redis command from script"
                # Redis 7.0 refuses blocking commands in scripts (flag noscript).
                if cmd.name in NOT_IN_SCRIPT or not queueable(cmd) or "blocking" in cmd.flags:
                    return 1, b"ERR This Redis command is not allowed from script"
                reply = call(args)
                if type(reply) is ErrorReply:
                    return 1, reply.encode("utf-8", "surrogateescape")
                # Lua running out of memory while Python builds a table hangs the Lua
                # state (lupa): never let a reply be the allocation that hits the limit.
                used = runtime.runtime.get_memory_used()
                if used + _lua_cost(reply) + _HEADROOM > SCRIPT_MEMORY:
                    return 2, _OUT_OF_MEMORY
                return 0, _to_lua(runtime.runtime, reply)
            except _ArgumentError as e:
                return 1, str(e).encode()
            except BaseException as e:  # storage failure, bug: stop and fail the whole write
                fatal.append(e)
                return 2, b"the script was stopped: the write failed"

        pushed = sum(96 + len(a) for a in keys) + sum(96 + len(a) for a in argv)
        if runtime.runtime.get_memory_used() + pushed + _HEADROOM > SCRIPT_MEMORY:
            raise ScriptFailed(_MEMORY_TEXT)  # KEYS and ARGV alone would not fit
        try:
            fn = runtime.function(sha, source)
            ok, value, line, killed = runtime.run(
                fn, py_call, _sha1hex, expired, len(keys), *keys, *argv
            )
            runtime.collect()
        except lua.LuaMemoryError:
            with self._lock:
                if self._runner is runtime:
                    self._runner = None  # a Lua state that ran out of memory is not reused
            raise ScriptFailed(_MEMORY_TEXT) from None
        if fatal:
            raise fatal[0]
        if killed and value == _OUT_OF_MEMORY:
            raise ScriptFailed(_MEMORY_TEXT)
        if killed:
            raise ScriptFailed(
                f"ERR the script ran longer than {SCRIPT_TIME_LIMIT:g}s and was stopped; "
                "nothing it wrote was applied"
            )
        if not ok:
            text = _text(value)
            if not _has_code(text):
                text = "ERR " + text
            raise ScriptFailed(f"{text} script: {sha}, on @user_script:{line}.")
        return _from_lua(lua, value)


ENGINE = ScriptEngine()


class _ArgumentError(Exception):
    pass


def _command_args(raw: tuple[Any, ...]) -> list[bytes]:
    args: list[bytes] = []
    for value in raw:
        kind = type(value)
        if kind is bytes:
            args.append(value)
        elif kind is int:
            args.append(b"%d" % value)
        elif kind is float:
            args.append(b"%d" % value if value.is_integer() else b"%.17g" % value)
        else:
            raise _ArgumentError("ERR Lua redis lib command arguments must be strings or integers")
    if not args:
        raise _ArgumentError("ERR Please specify at least one argument for this redis lib call")
    return args


def _sha1hex(text: Any) -> bytes:
    data = text if type(text) is bytes else str(text).encode()
    return hashlib.sha1(data).hexdigest().encode()


def _text(value: Any) -> str:
    """A Lua string as reply text: bytes that are not UTF-8 kept as surrogate escapes, so the
    reply (and an error's code in INFO errorstats) carries them back unchanged, as Redis'."""
    if type(value) is bytes:
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def _has_code(text: str) -> bool:
    """Whether an error text starts with an upper-case code (``ERR``, ``WRONGTYPE``...)."""
    code = text.split(" ", 1)[0]
    return len(text) > len(code) and code.isupper() and code.isalpha()


def _to_lua(runtime: Any, reply: Any) -> Any:
    """A command's reply as Redis hands it to Lua (RESP2 conversions)."""
    kind = type(reply)
    if kind is bytes or kind is int:
        return reply
    if reply is None or reply is NULL_ARRAY:
        return False
    if kind is SimpleString:
        return runtime.table_from({b"ok": reply.encode()})
    if kind is ErrorReply:
        return runtime.table_from({b"err": reply.encode()})
    if kind is str or kind is Verbatim:
        return reply.encode()
    if kind is bool:
        return int(reply)
    if kind is float:
        return format_float(reply)
    if kind is Double:
        return b"%.17g" % reply  # a score: the bulk string RESP2 sends
    if kind is list or kind is SetReply or kind is tuple or kind is set or kind is frozenset:
        return runtime.table_from([_to_lua(runtime, item) for item in reply])
    if kind is dict:
        flat: list[Any] = []
        for name, value in reply.items():
            flat.append(_to_lua(runtime, name))
            flat.append(_to_lua(runtime, value))
        return runtime.table_from(flat)
    raise TypeError(f"cannot hand a {kind.__name__} reply to Lua")


def _lua_cost(reply: Any) -> int:
    """An upper estimate of the Lua heap bytes ``_to_lua(reply)`` allocates."""
    kind = type(reply)
    if kind is bytes or kind is str or kind is SimpleString or kind is ErrorReply:
        return 96 + len(reply)
    if kind is list or kind is SetReply or kind is tuple or kind is set or kind is frozenset:
        return 128 + sum(48 + _lua_cost(item) for item in reply)
    if kind is dict:
        return 128 + sum(96 + _lua_cost(k) + _lua_cost(v) for k, v in reply.items())
    return 48


def _from_lua(lua: Any, value: Any) -> Any:
    """A script's return value as the reply Redis would send."""
    if value is None or value is False:
        return None
    if value is True:
        return 1
    kind = type(value)
    if kind is bytes:
        return value
    if kind is int:
        return max(LLONG_MIN, min(LLONG_MAX, value))
    if kind is float:
        if not math.isfinite(value):
            return LLONG_MIN  # what Redis' (long long) cast gives for inf and nan on x86-64
        return max(LLONG_MIN, min(LLONG_MAX, int(value)))
    if lua.lua_type(value) == "table":
        err = value[b"err"]
        if err is not None:
            return ErrorReply(_text(err))
        ok = value[b"ok"]
        if ok is not None:
            return SimpleString(_text(ok))
        out: list[Any] = []
        index = 1
        while (item := value[index]) is not None:
            out.append(_from_lua(lua, item))
            index += 1
        return out
    return None  # functions, userdata: Redis answers nil


# the commands ----------------------------------------------------------------------------


def _split(args: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """KEYS and ARGV after the script (or SHA) and ``numkeys``."""
    try:
        count = parse_int(args[1])
    except Reply:
        raise Reply("ERR value is not an integer or out of range") from None
    if count < 0:
        raise Reply("ERR Number of keys can't be negative")
    if count > len(args) - 2:
        raise Reply("ERR Number of keys can't be greater than number of args")
    return args[2 : 2 + count], args[2 + count :]


def plan_script(
    conn: Connection, sha: str, source: bytes, keys: list[bytes], argv: list[bytes]
) -> WriteFn:
    """The write plan of one script run: its writes reach ``txn`` only if it finishes."""

    def run(txn: WriteTxn) -> Any:
        overlay = Overlay(txn)
        view = txn_connection(conn, overlay)
        cast(Any, view).resp3 = False  # scripts see RESP2 replies, whatever the client speaks
        reply = ENGINE.run(sha, source, keys, argv, lambda args: execute(view, args))
        overlay.commit()
        return reply

    return run


@command("eval", -3, "write", keys=(0, 0, 0))
def eval_(conn: Connection, args: list[bytes]) -> Any:
    keys, argv = _split(args)
    sha = ENGINE.load(args[0])  # compile errors are answered before anything runs
    return Write(plan_script(conn, sha, args[0], keys, argv), _script_reply)


@command("evalsha", -3, "write", keys=(0, 0, 0))
def evalsha(conn: Connection, args: list[bytes]) -> Any:
    keys, argv = _split(args)
    sha = args[0].decode(errors="replace").lower()
    source = ENGINE.source(sha)
    if source is None:
        raise Reply(_NOSCRIPT)
    return Write(plan_script(conn, sha, source, keys, argv), _script_reply)


def _script_reply(reply: Any) -> Any:
    return reply


@command("script", -2, keys=(0, 0, 0))
def script(conn: Connection, args: list[bytes]) -> Any:
    sub = args[0].upper()
    if sub == b"LOAD" and len(args) == 2:
        return ENGINE.load(args[1]).encode()
    if sub == b"EXISTS" and len(args) >= 2:
        return [int(ENGINE.exists(raw.decode(errors="replace"))) for raw in args[1:]]
    if sub == b"FLUSH" and len(args) <= 2:
        if len(args) == 2 and args[1].upper() not in (b"SYNC", b"ASYNC"):
            raise Reply("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
        ENGINE.flush()
        return OK
    if sub == b"KILL" and len(args) == 1:
        # A script here is stopped by its own deadline and never leaves others waiting.
        raise Reply("NOTBUSY No scripts in execution right now.")
    raise Reply(
        f"ERR unknown subcommand or wrong number of arguments for "
        f"'{args[0].decode(errors='replace')}'. Try SCRIPT HELP."
    )

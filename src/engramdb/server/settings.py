"""Runtime settings: what ``CONFIG GET`` reports and ``CONFIG SET`` changes.

One table (``PARAMETERS``) names every parameter, how to read it and, for the ones that can
change while the server runs, how to parse and apply a new value. A parameter Redis has
but engramdb does not (``maxmemory``, eviction, RDB/AOF tuning) is not listed: ``CONFIG GET``
does not report it and ``CONFIG SET`` refuses it, rather than accepting a value that would
do nothing. Fixed parameters report the behaviour engramdb has (``appendfsync always`` under
``--durability sync``...); setting one to the value it already has is accepted, any other
value is refused as immutable.

``CONFIG SET a 1 b 2`` is all or nothing: every value is parsed first, then all are applied.
Settings belong to this server process and are not persisted (as in Redis without
``CONFIG REWRITE``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engramdb.server.structures import DATABASES

if TYPE_CHECKING:
    from engramdb.server.app import Server

__all__ = ["PARAMETERS", "OutputLimit", "Parameter", "SettingError", "Settings", "parse_memory"]


class SettingError(ValueError):
    """A value ``CONFIG SET`` cannot take; the message is Redis' reason."""


@dataclass(frozen=True, slots=True)
class OutputLimit:
    """``client-output-buffer-limit`` of one client class: bytes, bytes, seconds (0: none)."""

    hard: int
    soft: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.hard} {self.soft} {self.seconds}"


@dataclass
class Settings:
    """The mutable settings of a running server (the rest is ``ServerConfig``)."""

    notify_keyspace_events: str = ""
    pubsub_limit: OutputLimit = OutputLimit(32 << 20, 8 << 20, 60)
    replica_limit: OutputLimit = OutputLimit(256 << 20, 64 << 20, 60)


Apply = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Parameter:
    """``get`` renders the current value; ``parse`` (None: fixed) validates a new one and
    returns the function that applies it."""

    get: Callable[[Server], str]
    parse: Callable[[Server, str], Apply] | None = None


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3,
          "gb": 1024**3}  # fmt: skip


def parse_memory(text: str) -> int:
    """Redis' memory notation: ``100``, ``32mb``, ``1gb``, ``64k``..."""
    raw = text.strip().lower()
    digits = raw.rstrip("kmgb")
    unit = raw[len(digits) :]
    if not digits.isdigit() or unit not in _UNITS:
        raise SettingError("argument must be a memory value")
    return int(digits) * _UNITS[unit]


def _integer(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SettingError("argument couldn't be parsed into an integer") from None
    if not low <= value <= high:
        raise SettingError(f"argument must be between {low} and {high} inclusive")
    return value


# notify-keyspace-events ---------------------------------------------------------------

EVENT_CLASSES = "g$lshzxetdmnKEA"
ALL_CLASSES = "g$lshzxetd"  # what "A" stands for (not m, n: key misses and new keys)


def parse_events(text: str) -> str:
    """The canonical form of a ``notify-keyspace-events`` value (as Redis prints it)."""
    chosen: set[str] = set()
    for char in text:
        if char not in EVENT_CLASSES:
            raise SettingError("Invalid event class character. Use 'Ag$lshzxeKEtmdn'.")
        chosen.update(ALL_CLASSES if char == "A" else char)
    head = "A" if set(ALL_CLASSES) <= chosen else "".join(c for c in ALL_CLASSES if c in chosen)
    return head + "".join(c for c in "KEmn" if c in chosen)


def _set_events(server: Server, text: str) -> Apply:
    value = parse_events(text)
    return lambda: server.notifier.configure(value)


# client-output-buffer-limit -----------------------------------------------------------

_CLASSES = {"normal": "normal", "slave": "replica", "replica": "replica", "pubsub": "pubsub"}


def _output_limits(server: Server) -> str:
    s = server.settings
    normal = OutputLimit(server.config.max_output_buffer, 0, 0)
    return f"normal {normal} slave {s.replica_limit} pubsub {s.pubsub_limit}"


def _set_output_limits(server: Server, text: str) -> Apply:
    words = text.split()
    if not words or len(words) % 4:
        raise SettingError("Wrong number of arguments in buffer limit configuration.")
    changes: dict[str, OutputLimit] = {}
    for i in range(0, len(words), 4):
        kind = _CLASSES.get(words[i].lower())
        if kind is None:
            raise SettingError("Invalid client class specified in buffer limit configuration.")
        try:
            hard, soft = parse_memory(words[i + 1]), parse_memory(words[i + 2])
        except SettingError:
            raise SettingError("Error in hard, soft or soft_seconds setting in buffer limit "
                               "configuration.") from None  # fmt: skip
        if not words[i + 3].isdigit():
            raise SettingError(
                "Error in hard, soft or soft_seconds setting in buffer limit configuration."
            )
        changes[kind] = OutputLimit(hard, soft, int(words[i + 3]))
    normal = changes.pop("normal", None)
    if normal is not None and normal != OutputLimit(server.config.max_output_buffer, 0, 0):
        raise SettingError(
            "the normal class is fixed by --max-output-buffer "
            f"({server.config.max_output_buffer} 0 0)"
        )

    def apply() -> None:
        for kind, limit in changes.items():
            setattr(server.settings, f"{kind}_limit", limit)

    return apply


# the others ---------------------------------------------------------------------------


def _set_slowlog_threshold(server: Server, text: str) -> Apply:
    value = _integer(text, -1, (1 << 62) // 1000)
    return lambda: server.slowlog.configure(value, server.slowlog.max_len)


def _set_slowlog_len(server: Server, text: str) -> Apply:
    value = _integer(text, 0, 1 << 20)  # bounded: the log's memory is ours
    return lambda: server.slowlog.configure(server.slowlog.slower_than_us, value)


def _set_timeout(server: Server, text: str) -> Apply:
    value = _integer(text, 0, 1 << 31)
    return lambda: server.set_idle_timeout(float(value))


def _set_maxclients(server: Server, text: str) -> Apply:
    value = _integer(text, 1, server.max_clients_cap)

    def apply() -> None:
        server.max_clients = value

    return apply


def _set_tracking_keys(server: Server, text: str) -> Apply:
    value = _integer(text, 0, 1 << 40)

    def apply() -> None:
        server.tracker.resize(value)

    return apply


def _fixed(value: str) -> Parameter:
    return Parameter(lambda server: value)


def _format_timeout(server: Server) -> str:
    return f"{server.idle_timeout:g}"


PARAMETERS: dict[str, Parameter] = {
    # changeable
    "notify-keyspace-events": Parameter(lambda server: server.notifier.events, _set_events),
    "slowlog-log-slower-than": Parameter(
        lambda server: str(server.slowlog.slower_than_us), _set_slowlog_threshold
    ),
    "slowlog-max-len": Parameter(lambda server: str(server.slowlog.max_len), _set_slowlog_len),
    "client-output-buffer-limit": Parameter(_output_limits, _set_output_limits),
    "timeout": Parameter(_format_timeout, _set_timeout),
    "tracking-table-max-keys": Parameter(
        lambda server: str(server.tracker.max_keys), _set_tracking_keys
    ),
    "maxclients": Parameter(lambda server: str(server.max_clients), _set_maxclients),
    # what this server is, fixed while it runs
    "port": Parameter(lambda server: str(server.port)),
    "bind": Parameter(lambda server: server.config.host),
    "databases": _fixed(str(DATABASES)),
    "appendonly": Parameter(lambda s: "no" if s.config.durability == "none" else "yes"),
    "appendfsync": Parameter(
        lambda s: {"sync": "always", "async": "everysec", "none": "no"}[s.config.durability]
    ),
    "save": _fixed(""),
    "maxmemory": _fixed("0"),
    "maxmemory-policy": _fixed("noeviction"),
    "proto-max-bulk-len": Parameter(lambda server: str(server.config.max_frame)),
    "client-query-buffer-limit": Parameter(lambda s: str(s.config.limits.max_buffer)),
    "protected-mode": _fixed("yes"),  # a non-loopback bind always needs a password
    "hz": _fixed("10"),
    "tcp-backlog": _fixed("1024"),
    "io-threads": _fixed("1"),
    "busy-reply-threshold": _fixed("1000"),  # scripts are stopped after 1 s
    "lua-time-limit": _fixed("1000"),
    "cluster-enabled": _fixed("no"),
    "daemonize": _fixed("no"),
    "replica-read-only": _fixed("yes"),
    "latency-tracking": _fixed("yes"),
    "latency-tracking-info-percentiles": _fixed("50 99 99.9"),
    "engramdb-durability": Parameter(lambda server: server.config.durability),
    "engramdb-max-inflight": Parameter(lambda server: str(server.config.max_inflight)),
    "engramdb-max-record-bytes": Parameter(lambda server: str(server.config.max_record_bytes)),
}
ALIASES = {"slave-read-only": "replica-read-only"}


def config_get(server: Server, patterns: list[bytes]) -> dict[bytes, bytes]:
    """Every parameter matching any glob in ``patterns`` (case-insensitive), once."""
    # Imported here: handlers import this module, and the handlers package fills the
    # command table when first imported.
    from engramdb.server.handlers.pattern import compile_pattern

    out: dict[bytes, bytes] = {}
    for raw in patterns:
        pattern = raw.lower()
        name = ALIASES.get(pattern.decode(errors="replace"), pattern.decode(errors="replace"))
        if name in PARAMETERS:  # the common case, no glob
            out[name.encode()] = PARAMETERS[name].get(server).encode()
            continue
        matches = compile_pattern(pattern)
        for key, parameter in PARAMETERS.items():
            if matches(key.encode()):
                out[key.encode()] = parameter.get(server).encode()
    return out


def config_set(server: Server, pairs: list[tuple[bytes, bytes]]) -> None:
    """Set every pair, or none (``SettingError`` naming the parameter at fault)."""
    pending: list[Apply] = []
    seen: set[str] = set()
    for raw_name, raw_value in pairs:
        name = raw_name.decode(errors="replace").lower()
        name = ALIASES.get(name, name)
        value = raw_value.decode(errors="replace")
        parameter = PARAMETERS.get(name)
        if parameter is None:
            raise KeyError(name)
        if name in seen:
            raise SettingError(f"CONFIG SET failed (possibly related to argument '{name}') - "
                               "duplicate parameter")  # fmt: skip
        seen.add(name)
        try:
            if parameter.parse is None:
                if value != parameter.get(server):
                    raise SettingError("can't set immutable config")
                continue
            pending.append(parameter.parse(server, value))
        except SettingError as e:
            raise SettingError(
                f"CONFIG SET failed (possibly related to argument '{name}') - {e}"
            ) from None
    for apply in pending:
        apply()

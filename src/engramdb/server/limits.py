"""Limits the server keeps on strangers and on itself: AUTH failure backoff, the descriptor
limit ``max_clients`` needs, and log lines a client can trigger at will.

Each piece takes its clock as an argument, so its rules are tested without waiting.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "AUTH_BACKOFF_BASE",
    "AUTH_BACKOFF_CAP",
    "RESERVED_DESCRIPTORS",
    "AuthAttempts",
    "AuthThrottle",
    "LogLimiter",
    "address_key",
    "fit_descriptor_limit",
]

# AUTH failure backoff: the n-th failure in a row makes the next attempt wait
# min(CAP, BASE * 2**(n-1)) seconds, per connection and per client address. A typo costs
# 10 ms; a guessing client gets ~8 answers in its first 2 s, then one every 2 s per address
# (instead of ~55,000 a second per connection without it).
AUTH_BACKOFF_BASE = 0.01
AUTH_BACKOFF_CAP = 2.0
# An address with no failure for this long starts again from a clean slate.
AUTH_FORGET_AFTER = 60.0
# Addresses remembered at once (least recently failed forgotten first): bounded memory.
AUTH_MAX_ADDRESSES = 65_536

# Descriptors the process needs besides one per client: listeners, LMDB and index files,
# thread wake-up pipes, the metrics server, logs.
RESERVED_DESCRIPTORS = 256


def address_key(host: str) -> str:
    """The unit of the per-address backoff: the IPv4 address, or the IPv6 /64 (one host
    usually holds a whole /64, so counting single IPv6 addresses would count nothing)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AuthAttempts:
    """One connection's AUTH failures (the per-connection half of the backoff)."""

    __slots__ = ("failures", "next_at", "pushed", "waiting")

    def __init__(self) -> None:
        self.failures = 0
        self.next_at = 0.0
        self.waiting = False  # an attempt holds one of its address's turns
        self.pushed = 0.0  # how much later that turn made the address's next one


@dataclass(slots=True)
class _Address:
    failures: int
    next_at: float  # the next AUTH from this address is not checked before this time
    last_failure: float
    waiting: int = 0  # attempts holding a turn, not checked yet


class AuthThrottle:
    """Failure backoff for AUTH, per connection and per client address.

    A password is checked only once both the connection's and the address's backoff have
    passed: attempts that arrive earlier wait (their reply comes late), and the waiting
    ones from one address are spaced out, so parallel connections do not multiply the
    guessing rate. An attempt that would wait longer than the cap is refused at once
    without being checked. Success clears the connection's count, not the address's: a
    client that shares an address with a guesser does not reset the guesser's backoff.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        base: float = AUTH_BACKOFF_BASE,
        cap: float = AUTH_BACKOFF_CAP,
        forget_after: float = AUTH_FORGET_AFTER,
        max_addresses: int = AUTH_MAX_ADDRESSES,
    ) -> None:
        self._clock = clock
        self.base = base
        self.cap = cap
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self._addresses: OrderedDict[str, _Address] = OrderedDict()

    def __len__(self) -> int:
        return len(self._addresses)

    def delay(self, failures: int) -> float:
        """Seconds the attempt after ``failures`` failures in a row waits."""
        if failures <= 0:
            return 0.0
        return min(self.cap, self.base * float(1 << min(failures - 1, 64)))

    def reserve(self, key: str, attempts: AuthAttempts) -> float | None:
        """Seconds before this attempt may be checked (0: now), or None: refuse it unchecked.

        A delayed attempt takes the address's next turn, so the one after it waits longer.
        """
        now = self._clock()
        entry = self._entry(key, now)
        at = max(now, attempts.next_at, entry.next_at if entry is not None else 0.0)
        if at - now > self.cap:
            return None
        if entry is not None and at > now:
            # Each waiting attempt is spaced as if the ones before it had failed: a hundred
            # connections guessing at once get turns 10, 20, 40... ms apart, not 10 ms.
            entry.waiting += 1
            attempts.waiting = True
            attempts.pushed = self.delay(entry.failures + entry.waiting)
            entry.next_at = at + attempts.pushed
        return at - now

    def failed(self, key: str, attempts: AuthAttempts) -> None:
        now = self._clock()
        attempts.failures += 1
        attempts.next_at = now + self.delay(attempts.failures)
        self._checked(key, attempts)
        entry = self._entry(key, now)
        if entry is None:
            if len(self._addresses) >= self.max_addresses:
                self._addresses.popitem(last=False)
            entry = self._addresses[key] = _Address(0, 0.0, now)
        else:
            self._addresses.move_to_end(key)
        entry.failures += 1
        entry.last_failure = now
        entry.next_at = max(entry.next_at, now + self.delay(entry.failures))

    def succeeded(self, key: str, attempts: AuthAttempts) -> None:
        attempts.failures = 0
        attempts.next_at = 0.0
        self.release(key, attempts)  # it was no guess: the next client need not wait for it

    def release(self, key: str, attempts: AuthAttempts) -> None:
        """Give back the turn a waiting attempt took, unchecked (its connection closed) or
        successful."""
        entry = self._addresses.get(key)
        if entry is not None and attempts.waiting:
            entry.next_at = max(self._clock(), entry.next_at - attempts.pushed)
        self._checked(key, attempts)

    def _checked(self, key: str, attempts: AuthAttempts) -> None:
        if attempts.waiting:
            attempts.waiting = False
            attempts.pushed = 0.0
            entry = self._addresses.get(key)
            if entry is not None and entry.waiting:
                entry.waiting -= 1

    def retry_after(self, key: str) -> float:
        """Seconds until the address may try again (for the refusal's message)."""
        entry = self._addresses.get(key)
        return 0.0 if entry is None else max(0.0, entry.next_at - self._clock() - self.cap)

    def _entry(self, key: str, now: float) -> _Address | None:
        entry = self._addresses.get(key)
        if entry is not None and now - max(entry.last_failure, entry.next_at) > self.forget_after:
            del self._addresses[key]
            return None
        return entry


class LogLimiter:
    """At most ``burst`` lines per ``period`` seconds for one kind of event a client can
    cause at will (refused connections, oversized frames...); the next line after a quiet
    spell says how many were left out."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float],
        *,
        burst: int = 10,
        period: float = 10.0,
    ) -> None:
        self._log = logger
        self._clock = clock
        self.burst = burst
        self.period = period
        self._window_start = float("-inf")
        self._in_window = 0
        self.suppressed = 0

    def log(self, level: int, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._window_start >= self.period:
            self._window_start = now
            self._in_window = 0
        if self._in_window >= self.burst:
            self.suppressed += 1
            return
        self._in_window += 1
        if self.suppressed:
            message += " (%d similar lines left out)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self._log.log(level, message, *args)


def fit_descriptor_limit(max_clients: int, log: logging.Logger) -> int:
    """Raise this process's open-file limit to what ``max_clients`` needs; return how many
    clients it can actually hold (lower than asked when the hard limit is too low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max_clients + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                log.info("raised the open-file limit from %d to %d", soft, target)
                soft = target
            except (ValueError, OSError) as e:
                log.warning("could not raise the open-file limit from %d: %s", soft, e)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_clients
    fits = max(1, soft - RESERVED_DESCRIPTORS)
    log.warning(
        "--max-clients %d does not fit the open-file limit (%d, hard limit %s): serving at "
        "most %d clients; raise the hard limit (ulimit -Hn) to serve more",
        max_clients,
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else str(hard),
        fits,
    )
    return fits

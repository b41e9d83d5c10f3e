"""Golden signals of each call as its caller sees it: latency, traffic, errors, and spans.

``Measured`` wraps one call of a client (``engramdb.connect``, ``engramdb.aio.connect``) or
of the embedded database: it counts the call in the caller's ``Metrics`` (``stats()``'s
``operations``), its error by type if it raises, and, when telemetry is on, runs it in an
OpenTelemetry span (``engramdb.observability.tracing``).

Telemetry is off unless the environment variable ``ENGRAMDB_TELEMETRY`` is ``1`` (or
``true``/``yes``/``on``) when the client, database or server is created. Off, nothing here
imports ``opentelemetry`` and the cost of a call is one ``is None`` test; on, it needs the
``otel`` extra (``pip install 'engramdb[otel]'``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from engramdb.errors import InvalidArgument

if TYPE_CHECKING:
    from engramdb.observability.metrics import Metrics
    from engramdb.observability.tracing import Tracer

__all__ = ["ENV", "FILE_ENV", "Measured", "server_call", "tracer_for"]

ENV = "ENGRAMDB_TELEMETRY"
# Where a process with no OpenTelemetry SDK set up writes its spans (JSON, one a line).
FILE_ENV = "ENGRAMDB_TELEMETRY_FILE"
_ON = frozenset({"1", "true", "yes", "on"})


def telemetry_on() -> bool:
    """Whether ``ENGRAMDB_TELEMETRY`` asks for spans."""
    return os.environ.get(ENV, "").strip().lower() in _ON


def tracer_for(server: tuple[str, int] | None, on: bool | None = None) -> Tracer | None:
    """The tracer of a new client of ``server`` (host, port), or of an embedded database
    (None); None when telemetry is off (``on``; None: as ``ENGRAMDB_TELEMETRY`` says)."""
    if not (telemetry_on() if on is None else on):
        return None
    try:
        from engramdb.observability.tracing import Tracer
    except ImportError as e:
        raise InvalidArgument(
            f"telemetry is on ({ENV}) but OpenTelemetry is not installed "
            f"(pip install 'engramdb[otel]'): {e}"
        ) from None
    return Tracer(server)


class Measured:
    """Counts one call in ``metrics``: its latency, and its error (by type) if it raises
    one. With a ``tracer``, the call also runs in a client span; entering gives the W3C
    trace context to send with the request (an empty tuple without a tracer)."""

    __slots__ = ("op", "span", "started")

    def __init__(
        self,
        metrics: Metrics,
        method: str,
        tracer: Tracer | None = None,
        args: Sequence[Any] = (),
    ) -> None:
        self.op = metrics.op(method.rpartition(".")[2])
        self.span = None if tracer is None else tracer.call(method, args)

    def __enter__(self) -> tuple[bytes, ...]:
        self.started = perf_counter_ns()
        return () if self.span is None else self.span.__enter__()

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if error is not None:
            # Whatever the caller saw counts, cancellation and client-side refusals too.
            self.op.error(type(error).__name__)
        self.op.observe(perf_counter_ns() - self.started)
        if self.span is not None:
            self.span.__exit__(kind, error, tb)


_SERVER: list[Any] = []  # [Tracer | None], decided on the first traced request


def server_call(method: str, args: list[Any], context: list[bytes], run: Callable[[], Any]) -> Any:
    """Run a native call (``run()``, a command handler) that carries the caller's trace
    ``context`` (traceparent[, tracestate]) in a server span, if this server traces."""
    if len(context) > 2:
        raise InvalidArgument("ENGRAM takes a method, a payload and at most a trace context")
    if not _SERVER:
        try:
            _SERVER.append(tracer_for(None))
        except InvalidArgument as e:  # telemetry never fails a request: serve it untraced
            logging.getLogger("engramdb.server").warning("no spans: %s", e)
            _SERVER.append(None)
    tracer = _SERVER[0]
    return run() if tracer is None else tracer.serve(method, args, context, run)

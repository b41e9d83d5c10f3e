"""OpenTelemetry spans of engramdb calls (the ``otel`` extra; imported only when on).

Each call of a client or of the embedded database runs in a span that follows the
OpenTelemetry semantic conventions for database clients:

- name ``"{method} {collection}"`` (``records.get users``, ``collection.search docs``), or
  ``"{method}"``;
- kind ``CLIENT`` (``SERVER`` on the server, ``INTERNAL`` embedded);
- ``db.system.name`` ``"engramdb"``, ``db.operation.name`` the method (``records.get``),
  ``db.collection.name`` the record set, collection or memory store the call names;
- ``server.address`` and ``server.port`` of a network client;
- on failure, ``error.type`` (the exception's class, e.g. ``Conflict``) and status ERROR.

A network client sends its span's W3C trace context (``traceparent``, and ``tracestate``
when there is one) as optional trailing arguments of the native call (``ENGRAM <method>
<payload> [traceparent [tracestate]]``); a server that traces starts its span of the call
as a child of it, so both sides appear in one trace. Spans go to the global tracer
provider the application sets up; a process with none (``engramdb serve``) can write them to
the file ``ENGRAMDB_TELEMETRY_FILE`` names, as JSON, one span a line.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engramdb.observability.calls import FILE_ENV

__all__ = ["Tracer"]

_PROPAGATOR = TraceContextTextMapPropagator()
_HEADERS = ("traceparent", "tracestate")
_COLLECTIONS = frozenset({"records", "collection"})
_file_lock = threading.Lock()
_file_done: list[str] = []


def _export_to_file() -> None:
    """With ``ENGRAMDB_TELEMETRY_FILE`` set, write this process's spans there (once)."""
    path = os.environ.get(FILE_ENV)
    if not path:
        return
    with _file_lock:
        if _file_done:
            return
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        out = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open while the process runs)
        exporter = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _file_done.append(path)


def _describe(method: str, args: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """A call's span name and database attributes."""
    attributes: dict[str, Any] = {"db.system.name": "engramdb", "db.operation.name": method}
    namespace = method.partition(".")[0]
    first = args[0] if args else None
    collection = None
    if namespace in _COLLECTIONS and type(first) is str:
        collection = first
    elif namespace == "memory" and isinstance(first, Mapping):
        collection = first.get("name")
    if type(collection) is not str:
        return method, attributes
    attributes["db.collection.name"] = collection
    return f"{method} {collection}", attributes


def _failed(span: Span, error: BaseException) -> None:
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))


class _Call:
    """The span of one call, current while the call runs."""

    __slots__ = ("attributes", "kind", "name", "span", "token", "tracer")

    def __init__(self, tracer: trace.Tracer, kind: SpanKind, method: str, args: Any) -> None:
        self.tracer = tracer
        self.kind = kind
        self.name, self.attributes = _describe(method, args)

    def __enter__(self) -> tuple[bytes, ...]:
        self.span = self.tracer.start_span(self.name, kind=self.kind, attributes=self.attributes)
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        if self.kind is not SpanKind.CLIENT:
            return ()
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        # traceparent first: the server reads the trailing arguments by position
        return tuple(carrier[h].encode() for h in _HEADERS if h in carrier)

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if error is not None:
            _failed(self.span, error)
        self.span.end()
        otel_context.detach(self.token)


class _Ending:
    """Ends a server span once: when the call's reply is made, or when it fails."""

    __slots__ = ("done", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.done = False

    def __call__(self, error: BaseException | None) -> None:
        if not self.done:
            self.done = True
            if error is not None:
                _failed(self.span, error)
            self.span.end()

    def then(self, then: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def finish(value: Any) -> Any:
            try:
                reply = then(value)
            except BaseException as e:
                self(e)
                raise
            self(None)
            return reply

        return finish

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a write plan, slow work on a worker thread) in the span; a failure ends it."""

        def run(*args: Any) -> Any:
            try:
                with trace.use_span(self.span, end_on_exit=False, record_exception=False):
                    return fn(*args)
            except BaseException as e:
                self(e)
                raise

        return run


class Tracer:
    """Spans of the calls of one client (``server`` = its host and port) or of an embedded
    database (``server`` None), and of a server's calls (``serve``)."""

    def __init__(self, server: tuple[str, int] | None) -> None:
        _export_to_file()
        self._tracer = trace.get_tracer("engramdb")
        self._server = server
        self._kind = SpanKind.INTERNAL if server is None else SpanKind.CLIENT

    def call(self, method: str, args: Sequence[Any]) -> _Call:
        """A context manager: the span of one call; entering gives the trace context to
        send with the request."""
        made = _Call(self._tracer, self._kind, method, args)
        if self._server is not None:
            made.attributes["server.address"] = self._server[0]
            made.attributes["server.port"] = self._server[1]
        return made

    def instrument(self, obj: Any, namespace: str, collection: str | None = None) -> None:
        """Run every declared method of the embedded ``obj`` (a record set, a role) in a
        span: each is shadowed on the instance, so the class and other handles are as
        they were (no cost with telemetry off)."""
        from engramdb.remote import remote_methods

        if vars(obj).get("_spans"):
            return
        obj._spans = True
        args = () if collection is None else (collection,)
        for name in remote_methods(type(obj)):
            setattr(obj, name, self._traced(getattr(obj, name), f"{namespace}.{name}", args))

    def _traced(self, fn: Callable[..., Any], method: str, args: tuple[str, ...]) -> Any:
        @functools.wraps(fn)
        def traced(*call_args: Any, **kwargs: Any) -> Any:
            with self.call(method, args):
                result = fn(*call_args, **kwargs)
            if type(result).__name__ == "Collection":  # a vector collection's own calls
                self.instrument(result, "collection", result.name)
            return result

        return traced

    def serve(
        self, method: str, args: list[Any], context: list[bytes], run: Callable[[], Any]
    ) -> Any:
        """Run a command handler in a server span, child of the caller's ``context``; the
        span lasts until the reply is made (a write's commit, slow work's thread)."""
        from engramdb.server.commands import Offload, Write

        carrier = {h: v.decode("latin-1") for h, v in zip(_HEADERS, context)}
        name, attributes = _describe(method, args)
        span = self._tracer.start_span(
            name,
            context=_PROPAGATOR.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        ending = _Ending(span)
        result = ending.guard(run)()
        if type(result) is Write:
            return Write(ending.guard(result.plan), ending.then(result.then))
        if type(result) is Offload:
            return Offload(ending.guard(result.fn), ending.then(result.then))
        ending(None)
        return result

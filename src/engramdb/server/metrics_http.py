"""``/metrics``: the golden signals in Prometheus text, via prometheus_client.

A custom collector reads the server's own counters at scrape time, so the request path pays
nothing for exposition. Latency histograms are re-bucketed from the internal log-linear
histogram (16 buckets per power of two) onto Prometheus buckets starting at 10 µs; a
sample lands in the first Prometheus bucket whose bound is at least its internal bucket's
upper edge, so bucket counts can shift by up to one internal bucket width (~6%).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from engramdb.observability.metrics import OpMetrics, bucket_upper_ns

if TYPE_CHECKING:
    from engramdb.server.app import Server

__all__ = ["BUCKETS_S", "start_metrics_server"]

BUCKETS_S = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def histogram_buckets(op: OpMetrics) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets (``le`` label, count) of one operation."""
    counts = [0] * (len(BUCKETS_S) + 1)
    for index, n in enumerate(op.buckets):
        if not n:
            continue
        upper_s = bucket_upper_ns(index) / 1e9
        slot = next((i for i, bound in enumerate(BUCKETS_S) if upper_s <= bound), len(BUCKETS_S))
        counts[slot] += n
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip((*map(str, BUCKETS_S), "+Inf"), counts):
        running += n
        out.append((bound, running))
    return out


class ServerCollector(Collector):
    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        server = self.server
        latency = HistogramMetricFamily(
            "engramdb_command_duration_seconds",
            "Time from dispatch to reply, per command",
            labels=["command"],
        )
        requests = CounterMetricFamily(
            "engramdb_commands", "Commands processed", labels=["command"]
        )
        errors = CounterMetricFamily(
            "engramdb_command_errors",
            "Error replies by command and type",
            labels=["command", "type"],
        )
        for op in server.metrics.ops():
            latency.add_metric([op.name], histogram_buckets(op), op.total_ns / 1e9)
            requests.add_metric([op.name], op.count)
            for kind, n in list(op.errors.items()):
                # A script's error code may hold bytes that are not UTF-8 (surrogate escapes
                # in ``kind``); a label must be UTF-8.
                label = kind.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                errors.add_metric([op.name, label], n)
        yield latency
        yield requests
        yield errors
        stats = server.stats
        for name, doc, value in (
            ("connections_received", "Connections accepted", stats.connections_total),
            ("connections_rejected", "Connections refused", stats.rejected_connections),
            ("shed", "Requests answered BUSY by load shedding", stats.shed),
            ("protocol_errors", "Connections closed on protocol errors", stats.protocol_errors),
            ("output_buffer_disconnects", "Slow readers cut off", stats.output_buffer_disconnects),
            ("idle_disconnects", "Connections closed by --idle-timeout", stats.idle_disconnects),
            ("auth_failures", "AUTH attempts with a wrong password", stats.auth_failures),
            ("auth_refused", "AUTH attempts refused unchecked by the backoff", stats.auth_refused),
            ("net_input_bytes", "Bytes received", stats.bytes_in),
            ("net_output_bytes", "Bytes sent", stats.bytes_out),
        ):
            counter = CounterMetricFamily(f"engramdb_{name}", doc)
            counter.add_metric([], value)
            yield counter
        saturation = server.saturation()
        for name, doc in (
            ("inflight", "Writes and slow reads in progress"),
            ("connections", "Open client connections"),
            ("group_commit_queue", "Writes waiting for the next commit"),
            ("event_loop_lag_seconds", "Event-loop delay over the last 100 ms tick"),
            ("map_use_ratio", "Fraction of the LMDB map in use"),
            ("changelog_length", "Entries in the change log"),
        ):
            gauge = GaugeMetricFamily(f"engramdb_{name}", doc)
            gauge.add_metric([], saturation[name])
            yield gauge
        limit = GaugeMetricFamily("engramdb_max_inflight", "In-flight bound before shedding")
        limit.add_metric([], server.config.max_inflight)
        yield limit
        yield from _index_metrics(server.db.stats().get("indexes", {}))


_INDEX_GAUGES = (
    ("items_indexed", "Live items in the collection's vector index"),
    ("tombstones", "Deleted or replaced labels awaiting a rebuild"),
    ("memory_bytes", "Approximate memory of the vector index"),
    ("text_documents", "Documents in the collection's BM25 index"),
    ("lag", "Change-log entries the index has not applied yet"),
    ("rebuilds", "Graph rebuilds (compactions) since the index was opened"),
    ("snapshot_failures", "Index snapshots that could not be written (the items are safe)"),
    ("skipped_items", "Items that could not be indexed (corrupt records)"),
)


def _index_metrics(indexes: dict[str, dict[str, Any]]) -> Iterator[Any]:
    for field, doc in _INDEX_GAUGES:
        gauge = GaugeMetricFamily(f"engramdb_index_{field}", doc, labels=["collection"])
        for name, figures in indexes.items():
            gauge.add_metric([name], figures[field])
        yield gauge


def start_metrics_server(server: Server, host: str, port: int) -> Any:
    """Serve ``/metrics`` on a daemon thread; returns the HTTP server (``.shutdown()``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    http_server, _thread = start_http_server(port, addr=host, registry=registry)
    return http_server

"""Caller-side golden signals: real ``engramdb serve`` subprocesses (the server fault suite's
``serve``), real sockets, and OpenTelemetry's SDK with an in-memory exporter in this process."""

from __future__ import annotations

from tests.server_faults.conftest import Raw, Served, ServeFactory, serve, wait_for

__all__ = ["Raw", "ServeFactory", "Served", "serve", "wait_for"]

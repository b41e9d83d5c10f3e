"""The audit tests run ``engramdb audit`` against real ``engramdb serve`` processes too: the
server fault suite's ``serve`` fixture, shared."""

from __future__ import annotations

from tests.server_faults.conftest import Served, serve

__all__ = ["Served", "serve"]

"""The attack suite: each test is one attack a hostile client or an unlucky operator tried.

Read the test names as the list of attacks. Servers are real ``engramdb serve`` subprocesses
(``serve`` from the server fault suite), bytes go over real sockets (``Raw``), crashes are
real ``kill -9``.
"""

from __future__ import annotations

from tests.server_faults.conftest import Raw, Served, ServeFactory, serve, wait_for

__all__ = ["Raw", "ServeFactory", "Served", "serve", "wait_for"]

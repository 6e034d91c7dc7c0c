"""sd_notify (agent/notify.py) over a real datagram socket: READY, STATUS, WATCHDOG."""

from __future__ import annotations

import os
import socket
import time

import pytest

from agent.notify import Notifier, watchdog_interval


def test_notify_does_nothing_without_socket():
    n = Notifier.from_environment({})
    assert not n.enabled
    assert n.ready() is False
    assert n.status("anything") is False


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_datagrams(tmp_path, abstract):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"entra-agent-test-{os.getpid()}-{time.monotonic_ns()}"
        server.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        server.bind(address)
    server.settimeout(5)
    try:
        n = Notifier.from_environment({"NOTIFY_SOCKET": address})
        assert n.enabled
        assert n.ready()
        assert server.recv(4096) == b"READY=1"
        assert n.status("signed in\nas ada")
        assert server.recv(4096) == b"STATUS=signed in as ada"
        assert n.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"
        n.close()
    finally:
        server.close()


def test_notify_missing_socket_does_not_raise(tmp_path):
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.ready() is False
    assert n.watchdog() is False


def test_watchdog_interval():
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "bogus"}) is None

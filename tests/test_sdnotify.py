"""sd_notify against real AF_UNIX datagram sockets, a path and an abstract name,
as systemd passes them in $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket

import pytest

from picospec.edge.sdnotify import notify, watchdog_interval


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path, monkeypatch):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        s.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
    else:
        name = f"picospec-test-{os.getpid()}-{id(s)}"
        s.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    s.settimeout(5)
    yield s
    s.close()


def test_each_notification_is_one_datagram_on_the_socket(listener):
    assert notify("READY=1\nSTATUS=serving")
    assert notify("WATCHDOG=1")
    assert listener.recv(4096) == b"READY=1\nSTATUS=serving"
    assert listener.recv(4096) == b"WATCHDOG=1"


def test_without_systemd_or_with_a_dead_socket_notify_is_a_no_op(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert notify("READY=1") is False


def test_the_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only(monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", "")
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert watchdog_interval() is None

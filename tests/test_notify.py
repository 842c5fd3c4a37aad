"""sd_notify over NOTIFY_SOCKET, checked with a datagram socket the test binds itself."""
from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from streamer.notify import Notifier


@pytest.fixture
def notify_socket(tmp_path):
    """A bound AF_UNIX datagram socket standing in for systemd; yields (path, socket)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def _recv(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def test_from_env_without_notify_socket_is_a_silent_noop():
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.stopping() is False
    assert n.status("x") is False
    assert n.watchdog_interval() is None


def test_ready_watchdog_stopping_and_status_send_the_protocol_bytes(notify_socket, monkeypatch):
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = Notifier.from_env()
    assert n.enabled
    assert n.ready()
    assert _recv(sock) == b"READY=1"
    assert n.watchdog()
    assert _recv(sock) == b"WATCHDOG=1"
    assert n.status("2 cameras up")
    assert _recv(sock) == b"STATUS=2 cameras up"
    assert n.stopping()
    assert _recv(sock) == b"STOPPING=1"
    n.close()


def test_status_text_is_kept_on_one_line_so_it_cannot_inject_assignments(notify_socket):
    path, sock = notify_socket
    n = Notifier(path)
    n.status("camera lobby\nREADY=1")
    assert _recv(sock) == b"STATUS=camera lobby READY=1"
    n.ready(status="serving")
    assert _recv(sock) == b"READY=1\nSTATUS=serving"


def test_abstract_namespace_address_starting_with_at_is_used():
    name = f"vigil-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        n = Notifier("@" + name)
        assert n.watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_send_to_a_missing_socket_returns_false_and_does_not_raise(tmp_path):
    n = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert n.ready() is False
    assert n.watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_usec():
    n = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"})
    assert n.watchdog_interval() == pytest.approx(15.0)


def test_watchdog_interval_honours_watchdog_pid():
    mine = Notifier.from_env({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval() == pytest.approx(2.0)
    other = Notifier.from_env({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval() is None


@pytest.mark.parametrize("value", ["", "0", "abc", "-5"])
def test_watchdog_interval_is_none_for_unset_or_invalid_values(value):
    assert Notifier(None, watchdog_usec=value).watchdog_interval() is None


def test_a_receiver_that_never_reads_cannot_block_the_sender(tmp_path):
    path = str(tmp_path / "full.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)                      # bound, never read: its queue fills up
    try:
        n = Notifier(path)
        t0 = time.monotonic()
        results = [n.watchdog() for _ in range(2000)]
        assert time.monotonic() - t0 < 2.0
        assert results[0] is True and results[-1] is False   # the overflow is dropped, not waited on
    finally:
        sock.close()

"""systemd's notify protocol (sd_notify) spoken directly over `NOTIFY_SOCKET`.

The protocol is one AF_UNIX datagram per notification, newline-separated `KEY=VALUE` lines, sent
to the path in `$NOTIFY_SOCKET` (a leading `@` means Linux's abstract namespace: the name starts
with a NUL byte). It is a few lines, so no dependency on libsystemd or `sdnotify` is needed.

When the service is not run by systemd (`NOTIFY_SOCKET` unset) every call is a no-op, so the
daemon calls the same methods in a terminal, in tests and under systemd.
See sd_notify(3) and systemd.service(5) (`Type=notify`, `WatchdogSec=`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to one socket address; a no-op when the address is None.

    Args:
        address: the value of `NOTIFY_SOCKET` (a filesystem path, or `@name` for the abstract
            namespace); None disables notifications.
        watchdog_usec: the value of `WATCHDOG_USEC` (microseconds), or None.
        watchdog_pid: the value of `WATCHDOG_PID`, or None; when set and not our pid, the
            watchdog is meant for another process and `watchdog_interval()` returns None.
    """

    def __init__(self, address: str | None, watchdog_usec: str | None = None,
                 watchdog_pid: str | None = None) -> None:
        self.address = address or None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._sock: socket.socket | None = None
        # The worker thread pings while the main thread sends STATUS/STOPPING.
        self._lock = threading.Lock()
        self._failed_once = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Notifier":
        """A notifier for the socket systemd gave us, or a no-op one outside systemd."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"))

    @property
    def enabled(self) -> bool:
        """True when messages actually go somewhere."""
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram made of `lines` (`KEY=VALUE` each).

        Returns:
            True when the datagram was sent; False when disabled or the send failed (logged once:
            a missing supervisor must never take the service down).
        """
        if self.address is None:
            return False
        payload = "\n".join(lines).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block: an AF_UNIX datagram send waits while the receiver's queue is full,
                # and the watchdog ping is sent from the inference loop, which must not stall on
                # a supervisor that is slow to read. A dropped notification is logged once.
                self._sock.sendto(payload, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL,
                                  self._sockaddr())
                return True
            except OSError as exc:
                if not self._failed_once:
                    log.warning("sd_notify to %s failed: %s", self.address, exc)
                    self._failed_once = True
                return False

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is complete (`READY=1`); `Type=notify` units wait for this."""
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        """Tell systemd we are shutting down (`STOPPING=1`)."""
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        """Tell systemd a reload is in progress (`RELOADING=1`); follow with `ready()`."""
        return self.notify("RELOADING=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by `systemctl status` (`STATUS=...`)."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ping (`WATCHDOG=1`); systemd restarts us when they stop for `WatchdogSec`."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """How often to ping, in seconds: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.

        Returns:
            Seconds between pings, or None when no watchdog is configured for this process.
        """
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r: not an integer", self._watchdog_usec)
            return None
        if usec <= 0:
            return None
        return usec / 1e6 / 2.0

    def close(self) -> None:
        """Close the socket (a later call reopens it)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _sockaddr(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            # Abstract namespace: a NUL byte then the name, no terminating NUL.
            return b"\0" + self.address[1:].encode("utf-8")
        return self.address


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment in the datagram.
    return " ".join(str(text).split())

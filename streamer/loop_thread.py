"""A supervised loop thread: the shape of the daemon's inference and pose threads."""
from __future__ import annotations

import abc
import logging
import threading
from typing import Optional

log = logging.getLogger(__name__)


class LoopThread(threading.Thread, metaclass=abc.ABCMeta):
    """A daemon thread that calls `step()` until `stop()`.

    An exception ends the thread with `error` set and logged: the daemon's event loop sees the
    thread dead and exits 1, so systemd restarts the service (a half-working daemon that
    silently stopped scoring is worse).

    Args:
        name: the thread's name (logs, `/proc/<pid>/task`).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.error: Optional[BaseException] = None
        self._stop_event = threading.Event()

    @abc.abstractmethod
    def step(self) -> bool:
        """One iteration; True when it did work. It waits on `_stop_event` when idle."""

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Ask the loop to end after the current step; True when it ended within `timeout`."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        return not self.is_alive()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.step()
        except BaseException as exc:   # the service's problem: the daemon sees it and exits
            self.error = exc
            log.exception("%s failed", self.name)
            raise

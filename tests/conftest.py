"""Shared fixtures. `rtsp_server` starts the real GStreamer RTSP server of `tests/rtsp_server.py`;
`trained_checkpoint` (in `tests/_training.py`) trains the quick-start model once per session."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

pytest_plugins = ["tests._training"]

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")
READY_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gst_rtsp_missing() -> Optional[str]:
    """Why the RTSP server cannot run here, or None."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
         "gi.require_version('Gst', '1.0'); from gi.repository import Gst, GstRtspServer; "
         "Gst.init(None); assert Gst.ElementFactory.find('x264enc'), 'x264enc missing'"],
        capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines() or ["unknown error"]
        return ("GStreamer RTSP server unavailable (apt: python3-gi gir1.2-gst-rtsp-server-1.0 "
                f"gstreamer1.0-plugins-ugly): {lines[-1]}")
    return None


class RtspServer:
    """A running `tests/rtsp_server.py` process on a fixed port.

    Attributes:
        url: `rtsp://127.0.0.1:<port>/<path>`.
    """

    def __init__(self, port: int, path: str = "test", file: Optional[str] = None) -> None:
        self.port = port
        self.path = path.lstrip("/")
        self.file = file
        self.url = f"rtsp://127.0.0.1:{port}/{self.path}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = READY_TIMEOUT_S) -> "RtspServer":
        """Start (or restart, on the same port) and wait for `READY`."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        cmd = [SYSTEM_PYTHON, str(RTSP_SCRIPT), "--port", str(self.port), "--path", self.path]
        if self.file:
            cmd += ["--file", str(self.file)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"rtsp_server.py exited with {self.proc.returncode}: {err}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("READY"):
                    return self
        self.stop()
        raise RuntimeError(f"rtsp_server.py not ready within {timeout} s")

    def stop(self) -> None:
        """Kill the server (as a crash would: SIGKILL) and wait for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()              # a stopped process cannot act on signals until resumed
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
            self.proc = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): the connection stays open but no data flows."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause` (SIGCONT)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def _rtsp_available() -> None:
    reason = _gst_rtsp_missing()
    if reason:
        print(f"skipping RTSP tests: {reason}")
        pytest.skip(reason)


@pytest.fixture
def rtsp_server(_rtsp_available):
    """Factory: `rtsp_server(file=None, path="test") -> RtspServer`, started; all killed at teardown."""
    started: list[RtspServer] = []

    def start(file: Optional[str] = None, path: str = "test") -> RtspServer:
        server = RtspServer(free_port(), path, file)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()

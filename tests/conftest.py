"""Shared fixtures and alert-stream helpers.

`rtsp_server` starts the real GStreamer RTSP server (`vigil_tools.harness.RtspServer`, running
`scripts/rtsp_test_server.py`); `tiny_checkpoint` is the harness's random-weight model, built
once per session; `trained_checkpoint` (in `tests/_training.py`) trains the quick-start model once
per session. `subscriber` and `recv_json` read the daemon's ZeroMQ alerts as a raw client would.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest

from vigil_tools import harness

pytest_plugins = ["tests._training"]


@pytest.fixture(scope="session")
def _rtsp_available() -> None:
    reason = harness.rtsp_server_missing()
    if reason:
        print(f"skipping RTSP tests: {reason}")
        pytest.skip(reason)


@pytest.fixture
def rtsp_server(_rtsp_available):
    """Factory: `rtsp_server(file=None, path="test") -> RtspServer`, started; all killed at teardown."""
    started: list[harness.RtspServer] = []

    def start(file: Optional[str] = None, path: str = "test") -> harness.RtspServer:
        server = harness.RtspServer(harness.free_port(), path, file)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """`harness.tiny_checkpoint`, saved once per session (no test writes to it)."""
    return harness.tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def subscriber(endpoint: str, topic: bytes = b"") -> Any:
    """A raw ZeroMQ SUB socket on `endpoint` subscribed to `topic` (close it when done)."""
    import zmq      # imported here: test modules that need it skip when pyzmq is missing

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(endpoint)
    return sub


def recv_json(sub: Any, timeout: float) -> Optional[tuple[bytes, dict]]:
    """The next (topic, JSON body) on `sub`, or None after `timeout` seconds."""
    if not sub.poll(int(timeout * 1000)):
        return None
    topic, body = sub.recv_multipart()
    return topic, json.loads(body)

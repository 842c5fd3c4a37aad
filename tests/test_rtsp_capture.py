"""Capture from a real RTSP server (GStreamer) over TCP: frames, loss, stall, reconnection."""
import importlib.util
import os
import time

import cv2
import numpy as np
import pytest

from vigil_tools.harness import wait_until as wait_for

from streamer import sources  # noqa: F401  (sets OPENCV_FFMPEG_CAPTURE_OPTIONS on import)
from streamer.ringbuffer import RingBuffer
from streamer.capture import CaptureThread
from streamer.config import CameraSettings

pytestmark = pytest.mark.integration

TIMEOUTS = dict(open_timeout_s=3.0, read_timeout_s=2.0, stall_timeout_s=3.0,
                backoff_initial_s=0.2, backoff_max_s=1.0)


def _settings(**kw):
    return CameraSettings(**{**TIMEOUTS, **kw})


def test_opencv_reads_the_stream_over_tcp(rtsp_server):
    server = rtsp_server()
    assert "rtsp_transport;tcp" in os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]
    cap = cv2.VideoCapture(server.url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000,
                                                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, 3000])
    try:
        assert cap.isOpened()
        frames = [cap.read() for _ in range(5)]
    finally:
        cap.release()
    assert all(ok for ok, _ in frames)
    assert frames[-1][1].shape == (240, 320, 3)
    assert not np.array_equal(frames[0][1], frames[-1][1])     # the ball moves


def test_capture_thread_survives_server_crash_and_restart(rtsp_server):
    server = rtsp_server()
    states = []
    ring = RingBuffer(32, 64, 64)
    cap = CaptureThread("rtsp", server.url, ring, on_state=lambda n, up: states.append(up),
                        seed=0, settings=_settings())
    cap.start()
    try:
        assert wait_for(lambda: cap.up and cap.frames >= 5, 15), "never came up"
        assert cap.frame_size == (320, 240) and cap.fps == pytest.approx(15, rel=0.2)
        server.stop()                                    # SIGKILL: the connection drops
        t0 = time.monotonic()
        assert wait_for(lambda: not cap.up, TIMEOUTS["stall_timeout_s"] + 0.5)
        assert time.monotonic() - t0 <= TIMEOUTS["stall_timeout_s"] + 0.5
        frames_down = cap.frames
        server.start()                                   # same port
        assert wait_for(lambda: cap.up and cap.frames > frames_down + 3, 20), "never came back"
        assert cap.reconnects >= 1
        assert states[:3] == [True, False, True]
        assert not cap.stuck()
    finally:
        assert cap.stop(5)


def test_frozen_server_is_detected_as_a_stall_and_recovered(rtsp_server):
    server = rtsp_server()
    ring = RingBuffer(32, 64, 64)
    cap = CaptureThread("rtsp", server.url, ring, seed=0, settings=_settings())
    cap.start()
    try:
        assert wait_for(lambda: cap.up and cap.frames >= 5, 15), "never came up"
        server.pause()                                   # TCP stays open, nothing arrives
        t0 = time.monotonic()
        assert wait_for(lambda: not cap.up, TIMEOUTS["stall_timeout_s"] + 0.5)
        assert time.monotonic() - t0 <= TIMEOUTS["stall_timeout_s"] + 0.5
        time.sleep(1.0)
        assert not cap.stuck()                           # blocked, but within its timeouts
        server.resume()
        frames_down = cap.frames
        assert wait_for(lambda: cap.up and cap.frames > frames_down + 3, 20), "never came back"
    finally:
        assert cap.stop(8)


@pytest.mark.skipif(importlib.util.find_spec("train.synth") is None, reason="train/synth.py missing")
def test_a_synthetic_fight_video_streams_through_the_server(rtsp_server, tmp_path):
    from train.synth import Scene
    scene = Scene("fight", 3, 160, 120, 15, 20)
    path = tmp_path / "fight.avi"               # MJPG: decodable by this GStreamer without libav
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (160, 120))
    for i in range(20):
        vw.write(scene.render(i))
    vw.release()
    server = rtsp_server(file=str(path))
    cap = CaptureThread("fight", server.url, RingBuffer(32, 64, 64), seed=0, settings=_settings(loop=False))
    cap.start()
    try:
        assert wait_for(lambda: cap.frames >= 15, 15), f"only {cap.frames} frames"
        assert cap.frame_size == (160, 120)
    finally:
        assert cap.stop(5)

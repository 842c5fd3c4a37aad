"""Sources: URL parsing, and the capture thread's pacing, resizing, reconnects, stalls and state."""
import importlib.util
import logging
import os
import time

import cv2
import numpy as np
import pytest

from vigil_tools.harness import wait_until as wait_for

from detector.errors import ConfigError
from streamer import capture, sources
from streamer.ringbuffer import RingBuffer
from streamer.capture import CaptureThread
from streamer.config import CameraSettings
from streamer.sources import parse_source

SECRET = "hunter2"


@pytest.mark.parametrize("url,kind,target", [
    ("rtsp://user:pw@10.0.0.5:554/stream1", "stream", "rtsp://user:pw@10.0.0.5:554/stream1"),
    ("rtsps://cam/live", "stream", "rtsps://cam/live"),
    ("http://cam/video.mjpg", "stream", "http://cam/video.mjpg"),
    ("/dev/video2", "device", 2),
    ("webcam:1", "device", 1),
    (3, "device", 3),
    ("0", "device", 0),
    ("/data/lobby.mp4", "file", "/data/lobby.mp4"),
    ("videos/lobby.mp4", "file", "videos/lobby.mp4"),
    ("file:///data/lobby.mp4", "file", "/data/lobby.mp4"),
])
def test_parse_source_kinds(url, kind, target):
    spec = parse_source(url)
    assert (spec.kind, spec.target) == (kind, target)
    assert spec.live == (kind in ("stream", "device"))


def test_parse_synth_source_with_parameters():
    spec = parse_source("synth://collapse?seed=7&width=64&height=48&fps=10")
    assert spec.kind == "synth" and spec.target == "collapse"
    assert spec.params["seed"] == 7 and (spec.params["width"], spec.params["height"]) == (64, 48)
    assert spec.params["fps"] == 10 and spec.params["frames"] >= 1


@pytest.mark.parametrize("url,match", [
    ("synth://dance", "synthetic kind"),
    ("synth://fight?colour=red", "unknown parameter 'colour'"),
    ("synth://fight?fps=fast", "'fps' must be an integer"),
    ("synth://fight?width=8", "'width' must be >= 16"),
    ("synth://fight?fps=0", "'fps' must be >= 1"),
    (f"ftp://admin:{SECRET}@cam/x", "unsupported scheme 'ftp'"),
    ("  ", "empty"),
])
def test_bad_source_urls_are_refused_without_leaking_passwords(url, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_source(url)
    assert SECRET not in str(info.value)


def test_ffmpeg_is_asked_for_rtsp_over_tcp():
    assert "rtsp_transport;tcp" in os.environ[sources.FFMPEG_OPTIONS_ENV]


def _video(path, n, fps, w=64, h=48):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(n):
        vw.write(np.full((h, w, 3), (i * 10) % 250, np.uint8))
    vw.release()
    return path


def test_file_source_is_paced_at_its_own_fps_and_ends_when_not_looping(tmp_path):
    path = _video(tmp_path / "clip.mp4", 12, 20)
    ring = RingBuffer(32, 16, 16)
    cap = CaptureThread("f", str(path), ring, settings=CameraSettings(loop=False))
    t0 = time.monotonic()
    cap.start()
    assert wait_for(lambda: cap.ended, 5)
    elapsed = time.monotonic() - t0
    assert cap.frames == ring.count == 12 and cap.reconnects == 0
    assert elapsed >= 11 / 20 * 0.9                             # real time, not as fast as decoding
    _, t_mono, _ = ring.gather(np.arange(12))
    assert np.median(np.diff(t_mono)) == pytest.approx(1 / 20, abs=0.015)
    assert cap.frame_size == (64, 48) and cap.stream_fps == pytest.approx(20)
    assert not cap.up
    assert cap.stop(2)


@pytest.mark.parametrize("cameras, cpus, threads", [(1, 16, 16), (4, 16, 4), (128, 16, 1),
                                                    (3, 2, 1), (0, 2, 2)])
def test_many_cameras_share_the_cpus_out_as_decoding_threads(cameras, cpus, threads):
    # OpenCV's default is one FFmpeg thread per CPU for EVERY capture: 128 cameras on 16 CPUs
    # would run 2,048 decoding threads.
    assert sources.decode_threads_per_camera(cameras, cpus) == threads


def test_a_file_decodes_with_the_decoding_threads_asked_for(tmp_path):
    path = _video(tmp_path / "clip.mp4", 5, 20)
    reader = sources.open_source(str(path), decode_threads=1)
    try:
        frames = [reader.read() for _ in range(5)]
    finally:
        reader.release()
    assert all(ok and f.shape == (48, 64, 3) for ok, f in frames)
    cap = CaptureThread("f", str(path), RingBuffer(8, 16, 16), settings=CameraSettings(loop=False), decode_threads=1)
    cap.start()
    assert wait_for(lambda: cap.ended, 5) and cap.frames == 5
    assert cap.stop(2)


def test_looping_file_keeps_going_without_counting_reconnects(tmp_path):
    path = _video(tmp_path / "clip.mp4", 6, 30)
    ring = RingBuffer(8, 16, 16)
    cap = CaptureThread("f", f"file://{path}", ring, settings=CameraSettings(loop=True))
    cap.start()
    assert wait_for(lambda: cap.frames > 15, 5)
    assert cap.up and cap.reconnects == 0 and not cap.ended
    assert cap.stop(2)


def test_looping_file_rewinds_instead_of_reopening(tmp_path, monkeypatch):
    # A reopen would queue behind OpenCV's process-wide FFmpeg open lock (every dead camera's
    # open timeout), so a looping file seeks back to its first frame instead.
    path = _video(tmp_path / "clip.mp4", 6, 30)
    opens = []
    original = CaptureThread._open
    monkeypatch.setattr(CaptureThread, "_open", lambda self: opens.append(1) or original(self))
    cap = CaptureThread("f", str(path), RingBuffer(8, 16, 16), settings=CameraSettings(loop=True))
    cap.start()
    assert wait_for(lambda: cap.frames > 20, 5)       # past three loops of 6 frames
    assert cap.stop(2)
    assert len(opens) == 1


def test_display_ring_keeps_whole_frames_with_the_same_sequence_numbers(tmp_path):
    path = _video(tmp_path / "clip.mp4", 6, 30, w=320, h=180)
    ring = RingBuffer(8, 16, 16)
    cap = CaptureThread("f", str(path), ring, settings=CameraSettings(loop=False), display_max_width=64, display_seconds=1)
    cap.start()
    assert wait_for(lambda: cap.ended, 5)
    disp = cap.display_ring
    assert (disp.width, disp.height) == (64, 36)
    assert disp.count == ring.count == 6
    a, ta, _ = ring.gather([4])
    b, tb, _ = disp.gather([4])
    assert ta[0] == tb[0] and abs(int(a.mean()) - int(b.mean())) <= 2


class FakeReader:
    """A scripted source: each item of `script` is a frame, None (failed read), or a float
    (block that many seconds, then fail)."""

    def __init__(self, script, fps=None, period=0.0):
        self.script = list(script)
        self.fps = fps
        self.period = period              # seconds per read, as a live camera
        self.released = False

    def read(self):
        time.sleep(self.period)
        if not self.script:
            time.sleep(0.01)
            return False, None
        item = self.script.pop(0)
        if isinstance(item, float):
            time.sleep(item)
            return False, None
        return (item is not None), item

    def release(self):
        self.released = True


def _patch_open(monkeypatch, readers):
    """open_source returns the next reader, or raises (with a password in the message) on None."""
    calls = []

    def fake_open(spec, open_timeout_s, read_timeout_s, decode_threads=0):
        calls.append(time.monotonic())
        reader = readers.pop(0) if readers else None
        if reader is None:
            raise OSError(f"cannot open stream rtsp://admin:{SECRET}@cam/x")
        return reader

    monkeypatch.setattr(capture, "open_source", fake_open)
    return calls


def _frames(n, w, h, value=0):
    return [np.full((h, w, 3), value, np.uint8) for _ in range(n)]


def _live(seed=0, **kw):
    args = dict(open_timeout_s=0.2, read_timeout_s=1.0, stall_timeout_s=0.5,
                backoff_initial_s=0.05, backoff_max_s=0.2)
    args.update(kw)
    return {"settings": CameraSettings(**args), "seed": seed}


def test_first_open_failure_retries_with_backoff_and_logs_once(monkeypatch, caplog):
    readers = [None, None, None, FakeReader(_frames(200, 40, 30), fps=25, period=0.01)]
    calls = _patch_open(monkeypatch, readers)
    states = []
    ring = RingBuffer(8, 16, 16)
    cap = CaptureThread("cam", f"rtsp://admin:{SECRET}@cam/x", ring,
                        on_state=lambda name, up: states.append((name, up)), **_live())
    with caplog.at_level(logging.DEBUG, logger="streamer.capture"):
        cap.start()
        assert wait_for(lambda: cap.up, 5)
    assert cap.reconnects == 3 and len(calls) == 4
    gaps = np.diff(calls)
    assert np.all(gaps >= 0.05 * 0.5 - 0.01) and np.all(gaps <= 0.2 + 0.15)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert states == [("cam", True)]
    assert cap.stop(2)


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    cap = CaptureThread("cam", "rtsp://cam/x", RingBuffer(2, 8, 8),
                        settings=CameraSettings(backoff_initial_s=0.5, backoff_max_s=8), seed=3)
    delays = [cap._backoff_delay(a) for a in range(12)]
    for a, d in enumerate(delays):
        base = min(8, 0.5 * 2 ** a)
        assert base * 0.5 <= d <= base
    assert len(set(delays)) == len(delays)              # jittered


def test_lost_stream_goes_down_then_reconnects_and_comes_back(monkeypatch):
    readers = [FakeReader(_frames(20, 40, 30) + [None, None, None], fps=50),
               FakeReader(_frames(500, 40, 30), fps=50, period=0.01)]
    _patch_open(monkeypatch, readers)
    states = []
    cap = CaptureThread("cam", "rtsp://cam/x", RingBuffer(8, 16, 16),
                        on_state=lambda n, up: states.append(up), **_live())
    cap.start()
    assert wait_for(lambda: cap.frames > 25, 5)
    assert states == [True, False, True] and cap.reconnects == 1
    assert cap.dropped == 3                              # the failed reads while it was up
    assert cap.stop(2)


def test_stall_marks_the_camera_down_while_a_read_blocks(monkeypatch):
    readers = [FakeReader(_frames(5, 40, 30) + [1.5]),
               FakeReader(_frames(500, 40, 30), fps=50, period=0.01)]
    _patch_open(monkeypatch, readers)
    cap = CaptureThread("cam", "rtsp://cam/x", RingBuffer(8, 16, 16), **_live(stall_timeout_s=0.4))
    cap.start()
    assert wait_for(lambda: cap.frames == 5, 3)
    t0 = time.monotonic()
    assert wait_for(lambda: not cap.up, 2)
    assert time.monotonic() - t0 <= 0.4 + 0.2
    assert cap.last_frame_age() >= 0.4
    assert wait_for(lambda: cap.up and cap.frames > 5, 5)     # reconnected after the read failed
    assert cap.stop(2)


def test_stuck_native_call_is_reported(monkeypatch):
    readers = [FakeReader(_frames(2, 40, 30) + [1.2])]
    _patch_open(monkeypatch, readers)
    cap = CaptureThread("cam", "rtsp://cam/x", RingBuffer(8, 16, 16),
                        **_live(open_timeout_s=0.1, read_timeout_s=0.1))
    cap.start()
    assert wait_for(lambda: cap.frames == 2, 3)
    assert not cap.stuck()
    assert wait_for(cap.stuck, 2)                        # > 3 x 0.1 + 0.1 inside one read
    assert not cap.stop(0.1)                             # cannot be interrupted ...
    assert wait_for(lambda: not cap.is_alive(), 5)       # ... but ends once the call returns


def test_resolution_change_mid_stream_is_followed(monkeypatch):
    readers = [FakeReader(_frames(5, 64, 48, 10) + _frames(5, 32, 24, 200) + [None] * 3)]
    _patch_open(monkeypatch, readers)
    ring = RingBuffer(16, 16, 16)
    cap = CaptureThread("cam", "rtsp://cam/x", ring, **_live())
    cap.start()
    assert wait_for(lambda: cap.frames == 10, 3)
    assert cap.frame_size == (32, 24) and ring.source_size == (32, 24)
    frames, _, _ = ring.gather([3, 8])
    assert frames[0].max() == 10 and frames[1].min() == 200
    assert cap.stop(2)


def test_roi_is_cropped_before_the_resize(monkeypatch):
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, 40:] = 255                                   # right half white
    _patch_open(monkeypatch, [FakeReader([frame] * 3)])
    ring = RingBuffer(4, 16, 16)
    cap = CaptureThread("cam", "rtsp://cam/x", ring, **_live(roi=[0.5, 0.0, 1.0, 1.0]))
    cap.start()
    assert wait_for(lambda: cap.frames == 3, 3)
    assert ring.gather([2])[0].min() == 255 and ring.roi == (0.5, 0.0, 1.0, 1.0)
    assert cap.stop(2)


def test_bgr_frames_are_stored_rgb(monkeypatch):
    frame = np.zeros((30, 40, 3), np.uint8)
    frame[..., 0] = 255                                   # pure blue in BGR
    _patch_open(monkeypatch, [FakeReader([frame])])
    ring = RingBuffer(4, 8, 8)
    cap = CaptureThread("cam", "rtsp://cam/x", ring, **_live())
    cap.start()
    assert wait_for(lambda: cap.frames == 1, 3)
    rgb = ring.gather([0])[0][0]
    assert rgb[..., 2].min() == 255 and rgb[..., 0].max() == 0
    assert cap.stop(2)


def test_missing_webcam_is_retried_and_logged_once(caplog):
    ring = RingBuffer(4, 8, 8)
    cap = CaptureThread("desk", "webcam:97", ring, **_live(backoff_max_s=0.1))
    with caplog.at_level(logging.WARNING, logger="streamer.capture"):
        cap.start()
        assert wait_for(lambda: cap.reconnects >= 3, 5)
    assert not cap.up and cap.frames == 0
    assert len([r for r in caplog.records if r.name == "streamer.capture"]) == 1
    assert cap.stop(2)


def test_ring_factory_gets_the_source_fps(monkeypatch):
    _patch_open(monkeypatch, [FakeReader(_frames(3, 40, 30), fps=12.5)])
    seen = []

    def factory(fps):
        seen.append(fps)
        return RingBuffer(4, 8, 8)

    cap = CaptureThread("cam", "rtsp://cam/x", ring_factory=factory, **_live())
    cap.start()
    assert wait_for(lambda: cap.frames == 3, 3)
    assert seen == [12.5] and cap.ring.count == 3 and cap.fps == 12.5
    assert cap.stop(2)


@pytest.mark.skipif(importlib.util.find_spec("train.synth") is None, reason="train/synth.py not written yet")
def test_synthetic_source_renders_frames_in_real_time():
    ring = RingBuffer(8, 16, 16)
    cap = CaptureThread("s", "synth://fight?seed=1&width=64&height=48&fps=20&frames=8", ring)
    cap.start()
    assert wait_for(lambda: cap.frames >= 12, 5)          # loops past its 8 frames
    assert cap.frame_size == (64, 48) and cap.up
    assert cap.stop(2)
    assert cap.fps_measured == 0 or cap.fps_measured == pytest.approx(20, rel=0.3)

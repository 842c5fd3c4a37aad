"""Capture in processes (`accel.capture: processes`): a `SharedRingBuffer` is a `RingBuffer` that
another process writes, and a `CaptureProcess` is a capture thread run in a child process, seen by
the daemon through the same interface (frames, state, reconnects, stop), restarted when it dies."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from streamer.accel.capture_process import CaptureProcess
from streamer.accel.shared_ring import SharedRingBuffer
from streamer.config import CameraSettings
from streamer.ringbuffer import FramesUnavailableError, RingBuffer


def _wait(cond, timeout: float = 30.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def test_a_shared_ring_behaves_as_a_ring_buffer():
    rng = np.random.default_rng(0)
    lock = mp.get_context("forkserver").Lock()
    shared = SharedRingBuffer(5, 4, 6, lock=lock)
    plain = RingBuffer(5, 4, 6)
    try:
        for seq in range(13):                    # wraps around twice
            frame = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
            assert shared.write(frame, seq, 100 + seq, (640, 360)) == \
                plain.write(frame, seq, 100 + seq, (640, 360)) == seq
        assert shared.count == plain.count == 13 and shared.oldest == plain.oldest == 8
        assert shared.source_size == (640, 360)
        for a, b in zip(shared.gather([8, 10, 12]), plain.gather([8, 10, 12])):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(FramesUnavailableError):
            shared.gather([7])
        assert shared.latest()[0] == 12
        np.testing.assert_array_equal(shared.seqs_between(9, 11), [9, 10, 11])
        # Another mapping of the same block (what the other process gets) sees the same ring.
        other = SharedRingBuffer.attach(shared.state(), lock)
        assert other.count == 13 and other.source_size == (640, 360)
        np.testing.assert_array_equal(other.gather([11])[0], shared.gather([11])[0])
    finally:
        shared.close()


def _writer(state, lock, n):
    ring = SharedRingBuffer.attach(state, lock)
    for seq in range(n):
        ring.write(np.full((ring.height, ring.width, 3), seq % 256, np.uint8), seq, seq)


def test_frames_written_by_another_process_are_read_here():
    ctx = mp.get_context("forkserver")
    lock = ctx.Lock()
    ring = SharedRingBuffer(16, 8, 8, lock=lock)
    try:
        p = ctx.Process(target=_writer, args=(ring.state(), lock, 40))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        assert ring.count == 40
        frames, t_mono, _ = ring.gather(np.arange(30, 40))
        assert [int(f[0, 0, 0]) for f in frames] == list(range(30, 40))
        assert list(t_mono) == list(range(30, 40))
    finally:
        ring.close()


def _factory(made):
    def ring_factory(fps, lock):
        ring = SharedRingBuffer(int(fps * 2) + 4, 24, 32, lock=lock)
        made.append((fps, ring))
        return ring
    return ring_factory


def test_a_capture_process_fills_the_daemons_ring_and_reports_like_a_thread():
    made, states, frames = [], [], []
    cap = CaptureProcess("cam", "synth://fight?fps=10", ring_factory=_factory(made),
                         settings=CameraSettings(fps=10.0),
                         on_state=lambda name, up: states.append(up),
                         on_frame=lambda name: frames.append(name),
                         display_max_width=64, display_seconds=1.0)
    cap.start()
    try:
        assert _wait(lambda: cap.ring is not None and cap.ring.count >= 12), \
            "frames reach the shared ring"
        assert made and made[0][0] == pytest.approx(10.0)
        assert cap.up and states[:1] == [True]
        assert _wait(lambda: len(frames) >= 12)                 # on_frame once per frame
        assert cap.fps == pytest.approx(10.0)
        assert cap.last_frame_age() < 5 and not cap.stuck()
        seq = cap.ring.count - 1
        window, t_mono, _ = cap.ring.gather(np.arange(seq - 7, seq + 1))
        assert window.shape == (8, 24, 32, 3) and window.any()
        assert abs(time.monotonic() - t_mono[-1]) < 5          # one monotonic clock
        assert cap.display_ring is not None and cap.display_ring.width <= 64
        assert _wait(lambda: cap.display_ring.count > 0)
        assert cap.frame_size is not None
    finally:
        assert cap.stop(10.0), "the child ends when asked"
    assert not cap._proc.is_alive()
    assert not cap.is_alive()


def test_a_capture_process_that_dies_is_restarted(monkeypatch):
    import streamer.accel.capture_process as cp

    monkeypatch.setattr(cp, "RESTART_INITIAL_S", 0.2)
    made, reconnects = [], []
    cap = CaptureProcess("cam", "synth://fight?fps=10", ring_factory=_factory(made),
                         settings=CameraSettings(fps=10.0),
                         on_reconnect=lambda name: reconnects.append(name))
    cap.start()
    try:
        assert _wait(lambda: cap.ring is not None and cap.ring.count > 2)
        first = cap._proc.pid
        os.kill(first, signal.SIGKILL)                    # a decoder crash takes the child
        assert _wait(lambda: cap._proc.pid != first and cap.ring is not None
                     and cap.ring.count > 2), "a new child captures again"
        assert cap.restarts == 1 and cap.reconnects >= 1 and reconnects
        assert len(made) == 2                              # a fresh ring for the new child
    finally:
        assert cap.stop(10.0)

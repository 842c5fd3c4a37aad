"""RingBuffer: preallocated storage, gathers by absolute frame number, never a torn frame."""
import threading
import time

import cv2
import numpy as np
import pytest

from streamer.ringbuffer import FramesUnavailableError, RingBuffer


def _fill(ring, n, start_t=100.0):
    for i in range(n):
        seq = ring.count
        ring.write(np.full((ring.height, ring.width, 3), seq % 256, np.uint8),
                   start_t + seq * 0.1, 1e9 + seq * 0.1, source_size=(64, 48))


def test_gather_returns_requested_frames_and_timestamps():
    ring = RingBuffer(8, 6, 10)
    _fill(ring, 5)
    frames, t_mono, t_wall = ring.gather([1, 3, 3, 4])
    assert frames.shape == (4, 6, 10, 3) and frames.dtype == np.uint8
    assert [int(f[0, 0, 0]) for f in frames] == [1, 3, 3, 4]
    np.testing.assert_allclose(t_mono, [100.1, 100.3, 100.3, 100.4])
    np.testing.assert_allclose(t_wall - 1e9, [0.1, 0.3, 0.3, 0.4], atol=1e-6)
    assert ring.count == 5 and ring.source_size == (64, 48)


def test_gather_is_a_copy_not_a_view():
    ring = RingBuffer(4, 2, 2)
    _fill(ring, 2)
    frames, _, _ = ring.gather([0])
    frames[:] = 77
    assert ring.gather([0])[0][0, 0, 0, 0] == 0


def test_holds_exactly_capacity_newest_frames():
    ring = RingBuffer(5, 2, 2)
    _fill(ring, 12)
    assert ring.oldest == 12 - 5
    frames, _, _ = ring.gather(np.arange(ring.oldest, ring.count))
    assert [int(f[0, 0, 0]) for f in frames] == list(range(7, 12))


def test_overwritten_or_future_frames_are_refused():
    ring = RingBuffer(3, 2, 2)
    _fill(ring, 6)
    with pytest.raises(FramesUnavailableError):
        ring.gather([2, 3])          # 2 was overwritten
    with pytest.raises(FramesUnavailableError):
        ring.gather([5, 6])          # 6 is not written yet
    with pytest.raises(FramesUnavailableError):
        RingBuffer(3, 2, 2).gather([0])


def test_write_slot_is_filled_in_place_by_opencv():
    ring = RingBuffer(4, 12, 16)
    storage = ring.frames.__array_interface__["data"][0]
    src = np.zeros((120, 160, 3), np.uint8)
    src[..., 0] = 255                                   # blue in BGR
    scratch = np.empty((12, 16, 3), np.uint8)
    for _ in range(6):
        slot = ring.write_slot()
        cv2.resize(src, (16, 12), dst=scratch, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(scratch, cv2.COLOR_BGR2RGB, dst=slot)
        ring.commit(time.monotonic(), time.time())
    assert ring.frames.__array_interface__["data"][0] == storage   # never reallocated
    frame = ring.gather([ring.count - 1])[0][0]
    assert frame[..., 2].min() == 255 and frame[..., 0].max() == 0   # RGB: blue is last


def test_gather_into_preallocated_out():
    ring = RingBuffer(4, 3, 3)
    _fill(ring, 4)
    out = np.zeros((2, 3, 3, 3), np.uint8)
    frames, _, _ = ring.gather([2, 3], out=out)
    assert frames is out and out[1, 0, 0, 0] == 3


def test_start_seq_numbers_frames_like_another_ring():
    ring = RingBuffer(4, 2, 2, start_seq=100)
    assert ring.count == 100 and ring.latest() is None
    _fill(ring, 3)
    assert ring.count == 103 and ring.latest()[0] == 102
    assert int(ring.gather([101])[0][0, 0, 0, 0]) == 101 % 256
    with pytest.raises(FramesUnavailableError):
        ring.gather([99])


def test_seqs_between_selects_by_capture_time():
    ring = RingBuffer(10, 2, 2)
    _fill(ring, 10)
    assert list(ring.seqs_between(100.25, 100.55)) == [3, 4, 5]


def test_concurrent_reader_never_sees_a_torn_frame():
    """The writer fills each frame in two halves with a pause between; a reader hammering the
    newest frames must only ever see whole frames whose value matches their sequence number."""
    ring = RingBuffer(4, 32, 32)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            slot = ring.write_slot()
            value = ring.count % 251
            slot[:16] = value
            time.sleep(0)                     # let the reader run mid-frame
            slot[16:] = value
            ring.commit(time.monotonic(), time.time())

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    checked = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        hi = ring.count - 1
        if hi < 3:
            continue
        seqs = np.arange(hi - 3, hi + 1)
        try:
            frames, _, _ = ring.gather(seqs)
        except FramesUnavailableError:
            continue                          # the writer lapped us between count and gather
        for seq, frame in zip(seqs, frames):
            assert frame.min() == frame.max() == seq % 251
        checked += 1
    stop.set()
    t.join(2)
    assert checked > 10

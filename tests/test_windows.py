"""Window sampling: T frames spanning the training clip's duration at any camera frame rate."""
import numpy as np
import pytest

from streamer.ringbuffer import RingBuffer
from streamer.windows import DueTracker, required_capacity, window_seqs, window_span


@pytest.mark.parametrize("fps", [10, 12.5, 15, 25, 30])
@pytest.mark.parametrize("clip_seconds", [2.56, 1.0])
def test_window_spans_clip_seconds_at_any_fps(fps, clip_seconds):
    T = 16
    end = 1000
    seqs = window_seqs(end, fps, clip_seconds, T)
    assert seqs.shape == (T,) and seqs.dtype == np.int64
    assert seqs[-1] == end
    assert np.all(np.diff(seqs) >= 0)
    span_s = (seqs[-1] - seqs[0] + 1) / fps          # frames covered, as time
    assert abs(span_s - clip_seconds) <= 1.0 / fps


def test_window_is_uniform_like_the_reference_linspace():
    n = window_span(30, 2.56, 16)
    seqs = window_seqs(n - 1, 30, 2.56, 16)          # first frame is 0: offsets = indices
    np.testing.assert_array_equal(seqs, np.linspace(0, n - 1, 16).astype(np.int64))
    steps = np.diff(seqs)
    assert steps.max() - steps.min() <= 1


def test_not_due_until_the_span_is_in_the_buffer():
    n = window_span(15, 2.56, 16)
    assert window_seqs(n - 2, 15, 2.56, 16) is None
    assert window_seqs(n - 1, 15, 2.56, 16)[0] == 0


def test_without_clip_seconds_takes_t_consecutive_frames():
    np.testing.assert_array_equal(window_seqs(20, 30, None, 4), [17, 18, 19, 20])


def test_short_span_repeats_frames_rather_than_reaching_back():
    seqs = window_seqs(50, 5, 1.0, 16)                # 5 frames for 16 slots
    assert seqs[0] == 46 and seqs[-1] == 50 and len(set(seqs.tolist())) == 5


@pytest.mark.parametrize("fps", [10, 15, 25, 30])
def test_required_capacity_keeps_window_and_pre_roll_gatherable(fps):
    cap = required_capacity(fps, 2.56, 16, pre_roll_s=3.0)
    ring = RingBuffer(cap, 2, 2)
    for i in range(cap * 2):
        ring.write(np.zeros((2, 2, 3), np.uint8), i / fps, i / fps)
    end = ring.count - 1
    seqs = window_seqs(end, fps, 2.56, 16)
    pre_roll_first = seqs[0] - int(np.ceil(3.0 * fps))
    ring.gather(np.arange(pre_roll_first, end + 1))    # does not raise
    assert cap >= window_span(fps, 2.56, 16) + 3 * fps


def test_due_every_stride_frames_after_the_first_window():
    due = DueTracker(stride=4, min_count=10)
    hits = [count for count in range(1, 30) if due.poll(count)]
    assert hits == [10, 14, 18, 22, 26]


def test_due_tracker_counts_due_points_crossed_in_one_jump():
    due = DueTracker(stride=5, min_count=5)
    assert due.poll(4) == 0
    assert due.poll(21) == 4                          # 5, 10, 15, 20
    assert due.poll(24) == 0
    assert due.poll(25) == 1


@pytest.mark.parametrize("bad", [dict(fps=0, clip_seconds=1.0, T=4),
                                 dict(fps=10, clip_seconds=-1.0, T=4),
                                 dict(fps=10, clip_seconds=1.0, T=0)])
def test_invalid_window_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        window_span(**bad)

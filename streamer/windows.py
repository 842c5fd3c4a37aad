"""Which frames make a window, how many frames a ring must hold, and when a camera is due.

The model was trained on T frames sampled uniformly (reference: `linspace(0, n-1, T)` truncated)
from clips lasting `clip_seconds`. A live camera must be sampled the same way *in time*, so a
window spans `clip_seconds` whatever the camera's frame rate: at 30 fps a 2.56 s window picks 16
of the last 77 frames, at 10 fps 16 of the last 26.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def window_span(fps: float, clip_seconds: Optional[float], T: int) -> int:
    """Consecutive camera frames a window covers.

    Args:
        fps: the camera's frame rate.
        clip_seconds: duration of a training clip; None = T consecutive frames.
        T: frames the model takes.
    Returns:
        n >= 1 frames, so that n / fps is `clip_seconds` to within half a frame interval.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if clip_seconds is None:
        return T
    if fps <= 0 or clip_seconds <= 0:
        raise ValueError(f"fps and clip_seconds must be positive, got {fps} and {clip_seconds}")
    return max(1, int(round(clip_seconds * fps)))


def window_seqs(end_seq: int, fps: float, clip_seconds: Optional[float], T: int
                ) -> Optional[np.ndarray]:
    """The T absolute frame numbers of the window whose newest frame is `end_seq`.

    Args:
        end_seq: sequence number of the window's last frame.
        fps, clip_seconds, T: see `window_span`.
    Returns:
        (T,) int64 non-decreasing sequence numbers ending at `end_seq` (uniform over the span,
        first = `end_seq - n + 1`; repeats when the span is shorter than T, as the reference does
        for short videos), or None when fewer than n frames exist yet (not due).
    """
    n = window_span(fps, clip_seconds, T)
    first = end_seq - n + 1
    if first < 0:
        return None
    offsets = np.linspace(0, n - 1, T).astype(np.int64)   # truncation, as the reference
    return first + offsets


def required_capacity(fps: float, clip_seconds: Optional[float], T: int,
                      pre_roll_s: float = 0.0, slack_s: float = 1.0) -> int:
    """Frames a camera's ring must hold.

    Args:
        fps, clip_seconds, T: the window (see `window_span`).
        pre_roll_s: extra history kept for evidence before the window.
        slack_s: extra time for the worker to gather a due window before it is overwritten,
            whatever the batching delay and one batch's inference time.
    Returns:
        capacity in frames.
    """
    n = window_span(fps, clip_seconds, T)
    return n + int(math.ceil(max(0.0, pre_roll_s) * fps)) + int(math.ceil(max(0.0, slack_s) * fps))


class DueTracker:
    """A camera is due every `stride` new frames, once it has enough frames for a window.

    Args:
        stride: frames between two consecutive windows' ends.
        min_count: frames needed before the first window (the window's span).
    """

    def __init__(self, stride: int, min_count: int = 1) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = int(stride)
        self.next_due = max(1, int(min_count))

    def poll(self, count: int) -> int:
        """How many due points the camera passed since the last poll.

        Args:
            count: frames the camera has written so far (its ring's `count`).
        Returns:
            0 when not due; k >= 1 when k due points were crossed (k - 1 of them were superseded
            before anyone asked, which the scheduler counts as skipped).
        """
        if count < self.next_due:
            return 0
        crossed = (count - self.next_due) // self.stride + 1
        self.next_due += crossed * self.stride
        return crossed

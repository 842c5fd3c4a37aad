"""Values passed between the daemon's threads. Immutable, so a thread can hand one over and forget it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassScore:
    """The model's best guess for one class in one window.

    Attributes:
        label: class name, e.g. "fight".
        score: the highest softmax probability of this class over the queries.
        box: that query's box, normalised xyxy in [0, 1] of the camera frame.
    """
    label: str
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class WindowResult:
    """What the inference worker saw in one camera's window.

    Attributes:
        camera: camera name.
        scores: class name -> best query for that class (every class present).
        frame_size: (width, height) of the camera's original frames, for `box_px`.
        t_start_wall, t_end_wall: wall-clock capture time (epoch seconds) of the first and last frame.
        t_end_mono: monotonic capture time of the last frame (for latency).
        end_seq: the camera's frame counter at the last frame of the window (for evidence).
    """
    camera: str
    scores: dict[str, ClassScore]
    frame_size: tuple[int, int]
    t_start_wall: float
    t_end_wall: float
    t_end_mono: float
    end_seq: int

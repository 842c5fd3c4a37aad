"""A pose sequence: one person's landmarks over time, as the pose path samples a camera.

The daemon and training must see the same thing, so both sample frames the same way: about
`POSE_FPS` frames a second (`sample_indices`), each frame shrunk to at most `POSE_MAX_WIDTH`
pixels wide with `pose_frame_size`'s rule (the daemon's display ring, which the pose path reads,
uses the same rule and width), then tracked by one `BlazePose` per stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .landmarks import NUM_LANDMARKS, PoseLandmarks

# Frames per second the pose path looks at: a fall takes about a second, so 8 samples show it;
# at ~20 ms a frame this is ~16% of one core per camera (BENCHMARKS.md, "Pose path").
POSE_FPS = 8.0
# Frames are shrunk to at most this width first: BlazePose's crops are 224 and 256 px, and the
# daemon's display ring (evidence) already holds frames this wide.
POSE_MAX_WIDTH = 480


def pose_frame_size(width: int, height: int, max_width: int = POSE_MAX_WIDTH) -> tuple[int, int]:
    """(w, h) at most `max_width` wide with the source's aspect, both even (video encoders)."""
    w = min(max_width, width)
    h = max(2, int(round(height * w / width)))
    return max(2, w - w % 2), h - h % 2


def sample_indices(n_frames: int, fps: float, pose_fps: float = POSE_FPS) -> np.ndarray:
    """Frame numbers of a video that the pose path looks at: about `pose_fps` a second.

    Args:
        n_frames: frames in the video; fps: its frame rate (> 0).
    Returns:
        int64 (M,) increasing, unique, each < n_frames (every frame when fps <= pose_fps).
    """
    if n_frames <= 0:
        return np.zeros(0, np.int64)
    step = max(1.0, fps / pose_fps)
    idx = np.unique(np.round(np.arange(0.0, n_frames, step)).astype(np.int64))
    return idx[idx < n_frames]


@dataclass
class PoseSequence:
    """Landmarks of one stream over time (NaN where nobody was seen).

    Attributes:
        t: float64 (N,) seconds (video time, or the camera's monotonic clock).
        points: float32 (N, 33, 5): x, y (normalised to the frame), z, visibility, presence.
        world: float32 (N, 33, 3): metric landmarks (metres, hip-centred).
        presence: float32 (N,): the landmark model's person score, 0 where nobody was seen.
        frame_size: (width, height) in pixels of the frames the pose was found in (angles are
            measured in pixels, so the aspect matters).
    """
    t: np.ndarray
    points: np.ndarray
    world: np.ndarray
    presence: np.ndarray
    frame_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def seen(self) -> np.ndarray:
        """bool (N,): a person was found in that frame."""
        return self.presence > 0

    @classmethod
    def empty(cls, frame_size: tuple[int, int]) -> "PoseSequence":
        return cls(np.zeros(0), np.zeros((0, NUM_LANDMARKS, 5), np.float32),
                   np.zeros((0, NUM_LANDMARKS, 3), np.float32), np.zeros(0, np.float32),
                   frame_size)

    @classmethod
    def from_frames(cls, times: list[float], found: list[PoseLandmarks | None],
                    frame_size: tuple[int, int]) -> "PoseSequence":
        """Stack per-frame results (None: nobody) into a sequence."""
        n = len(times)
        points = np.full((n, NUM_LANDMARKS, 5), np.nan, np.float32)
        world = np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32)
        presence = np.zeros(n, np.float32)
        for i, lm in enumerate(found):
            if lm is not None:
                points[i], world[i], presence[i] = lm.points, lm.world, lm.presence
        return cls(np.asarray(times, np.float64), points, world, presence, frame_size)

    def between(self, t0: float, t1: float) -> "PoseSequence":
        """The samples with t0 < t <= t1 (a window ending at t1)."""
        keep = (self.t > t0) & (self.t <= t1)
        return PoseSequence(self.t[keep], self.points[keep], self.world[keep],
                            self.presence[keep], self.frame_size)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """For `np.savez` (the training cache)."""
        return {"t": self.t, "points": self.points, "world": self.world,
                "presence": self.presence, "frame_size": np.asarray(self.frame_size)}

    @classmethod
    def from_arrays(cls, d) -> "PoseSequence":
        return cls(np.asarray(d["t"], np.float64), np.asarray(d["points"], np.float32),
                   np.asarray(d["world"], np.float32), np.asarray(d["presence"], np.float32),
                   tuple(int(v) for v in d["frame_size"]))

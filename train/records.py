"""`VideoRecord`: one labelled video of a dataset, as `train.dataset` scans it and
`train.splits` divides records into splits and folds (its own module so neither imports the other).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass
class VideoRecord:
    """One labelled video.

    Attributes:
        stem: the video's name without suffix, unique in the dataset.
        video: path of the video file.
        label_file: path of its label file, None when it has none (or its labels come from a
            manifest row or a class folder).
        width, height, fps, frames: from `video_io.probe`.
        annotations: (K, 5) float32 `[class, x1, y1, x2, y2]` in pixels, the box NaN for an
            action labelled without one; K = 0 for no action.
        segments: (K, 2) float32 `[start_s, end_s]` of each action, NaN for the whole clip.
        source: the dataset or source the video comes from, for per-source reports.
        group: clips of one source recording share it; "" means the video's own stem.
        split: "train" or "val" when the layout says so, else None.
    """
    stem: str
    video: Path
    label_file: Optional[Path]
    width: int
    height: int
    fps: float
    frames: int
    annotations: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    segments: Optional[np.ndarray] = None
    source: str = "all"
    group: str = ""
    split: Optional[str] = None

    def __post_init__(self) -> None:
        if self.segments is None:
            self.segments = np.full((len(self.annotations), 2), np.nan, np.float32)
        if not self.group:
            self.group = self.stem

    @property
    def is_positive(self) -> bool:
        """Whether the video holds at least one action."""
        return len(self.annotations) > 0

    @property
    def has_box(self) -> np.ndarray:
        """(K,) bool: which actions have a box."""
        return ~np.isnan(self.annotations[:, 1:5]).any(axis=1)

    @property
    def has_boxes(self) -> bool:
        """Whether some action of the video has a box."""
        return bool(self.has_box.any())

    @property
    def has_segments(self) -> bool:
        """Whether some action of the video is limited to a time segment."""
        return bool((~np.isnan(self.segments).any(axis=1)).any())

    @property
    def duration_s(self) -> float:
        """frames / fps (fps 0, unknown, is taken as 25)."""
        return self.frames / (self.fps if self.fps > 0 else 25.0)

    @property
    def stratum(self) -> int | str:
        """Class used to stratify splits: the first annotation's class, or "none"."""
        return int(self.annotations[0, 0]) if self.is_positive else "none"

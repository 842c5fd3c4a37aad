"""BlazePose: one person's 33 landmarks per frame, tracked from frame to frame.

The pipeline of MediaPipe's legacy `mp.solutions.pose` (model_complexity=1, the "full" model):
the detector finds a person and two alignment points; a square rotated ROI around the body is
cropped for the landmark model; while the landmark model says the person is still there, the
next frame's ROI comes from this frame's auxiliary points and the detector is not run.

Differences from MediaPipe, each deliberate:
- no landmark smoothing (MediaPipe's one-euro filters are tuned for 30 fps video; Vigil samples
  a camera at about 8 fps and its fall features use the raw positions);
- when tracking loses the person, the detector runs again on the same frame instead of the next
  one, since at 8 fps a lost frame is an eighth of a second.
With `track=False` every frame is detected afresh, exactly MediaPipe's `static_image_mode=True`
(the equivalence `tests/test_pose.py` checks).

Several people in view: the model is single-person. The detector's best-scoring person is
followed until the landmark model loses them; the others are not seen. Growing this into
several people means one landmark pass per detected person (each ~20 ms on one core) with the
detector re-run every few frames to pick up newcomers, and a fall feature track per person.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .detection import INPUT_SIZE as DETECTOR_INPUT, PersonDetection, PoseDetector
from .geometry import Rect, expand_rect, rect_from_alignment
from .landmarks import INPUT_SIZE as LANDMARK_INPUT, LandmarkModel, PoseLandmarks
from .runner import BLAZEPOSE_DIR, DETECTOR_FILE, LANDMARK_FILE, TfliteModel

# RectTransformationCalculator: the margin the landmark model was trained with.
ROI_SCALE = 1.25


def roi_from_points(start: np.ndarray, end: np.ndarray, size: tuple[int, int]) -> Rect:
    """The landmark model's ROI from two alignment points (normalised (x, y) each)."""
    return expand_rect(rect_from_alignment(start, end, size), size, ROI_SCALE)


class BlazePose:
    """One camera's (or one video's) pose tracker.

    Not thread-safe: one instance per stream, called from one thread.

    Args:
        model_dir: folder with `pose_detection.tflite` and `pose_landmark_full.tflite`
            (default: the copies shipped in `detector/weights/blazepose/`).
        threads: CPU threads for each model.
        min_detection: the detector's confidence threshold (MediaPipe's 0.5).
        min_presence: the landmark model's person-presence threshold (MediaPipe's 0.5).
        track: follow the person from the previous frame's landmarks (video); False: detect
            in every frame (still images, MediaPipe's `static_image_mode`).
    Raises:
        CheckpointError: a model file is missing or unreadable (the message names it).
    """

    def __init__(self, model_dir: str | Path | None = None, threads: int = 1,
                 min_detection: float = 0.5, min_presence: float = 0.5, track: bool = True):
        folder = Path(model_dir) if model_dir is not None else BLAZEPOSE_DIR
        self.detector = PoseDetector(
            TfliteModel(folder / DETECTOR_FILE, threads, (1, DETECTOR_INPUT, DETECTOR_INPUT, 3)),
            min_score=min_detection)
        self.landmarks = LandmarkModel(
            TfliteModel(folder / LANDMARK_FILE, threads, (1, LANDMARK_INPUT, LANDMARK_INPUT, 3)),
            min_presence=min_presence)
        self.track = track
        self._roi: Rect | None = None
        self.detections = 0      # detector passes so far (the costly re-acquisitions)

    def sharing_models(self) -> "BlazePose":
        """A new tracker (no person yet) that uses this one's models: one stream each, the
        models loaded once. Both must be called from the same thread (LiteRT interpreters are
        not thread-safe)."""
        other = object.__new__(BlazePose)
        other.detector, other.landmarks, other.track = self.detector, self.landmarks, self.track
        other._roi, other.detections = None, 0
        return other

    def reset(self) -> None:
        """Forget the tracked person (a new video, or a camera that reconnected)."""
        self._roi = None

    def detect(self, image: np.ndarray) -> list[PersonDetection]:
        """Every person the detector finds in `image`, best first."""
        self.detections += 1
        return self.detector(image)

    def __call__(self, image: np.ndarray) -> PoseLandmarks | None:
        """The person's landmarks in `image` (RGB uint8 (H, W, 3)), or None when nobody is seen.

        Raises:
            ValueError: `image` is not an (H, W, 3) uint8 array.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) frame, got {image.dtype} "
                             f"{image.shape}")
        size = (image.shape[1], image.shape[0])
        found = None
        if self.track and self._roi is not None:
            found = self.landmarks(image, self._roi)
        if found is None:
            people = self.detect(image)
            if people:
                kp = people[0].keypoints
                found = self.landmarks(image, roi_from_points(kp[0], kp[1], size))
        self._roi = (roi_from_points(found.aux[0, :2], found.aux[1, :2], size)
                     if self.track and found is not None else None)
        return found

"""BlazePose's landmark model: 33 body landmarks of the person inside a region of interest.

`pose_landmark_full.tflite` sees the ROI cropped upright to 256x256 (values in [0, 1]) and
returns, for 39 points (the 33 landmarks below, then 2 auxiliary points that place the next
frame's ROI, then 4 unused), x, y, z in input pixels and visibility and presence logits; a
pose-presence score; a segmentation mask (unused); a 64x64 heatmap per point, which refines
x and y; and metric world landmarks. Decoding follows MediaPipe's
`pose_landmark_by_roi_cpu.pbtxt` and its post-processing graph (mediapipe 0.10.14).

Landmark indices (MediaPipe's topology): 0 nose, 1-6 eyes, 7-8 ears, 9-10 mouth,
11/12 shoulders, 13/14 elbows, 15/16 wrists, 17-22 hands, 23/24 hips, 25/26 knees,
27/28 ankles, 29/30 heels, 31/32 feet (odd = the person's left).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import Rect, crop_rect, project_points, remove_letterbox
from .runner import TfliteModel

INPUT_SIZE = 256
NUM_POINTS = 39
NUM_LANDMARKS = 33
AUX = slice(33, 35)
# RefineLandmarksFromHeatmapCalculator: kernel 7, refine when the kernel's best is >= 0.5.
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class PoseLandmarks:
    """One person's landmarks in one frame.

    Attributes:
        points: float32 (33, 5): x, y normalised to the frame; z (depth relative to the hips, in
            frame widths, smaller = nearer); visibility and presence in [0, 1].
        aux: float32 (2, 5): the auxiliary points the next frame's ROI is placed from.
        world: float32 (33, 3): metric x, y, z (metres, origin between the hips, y down),
            rotated like the frame.
        presence: the model's confidence that a person is in the ROI, [0, 1].
        roi: the region the landmarks were found in.
    """
    points: np.ndarray
    aux: np.ndarray
    world: np.ndarray
    presence: float
    roi: Rect

    def box(self, min_visibility: float = 0.5) -> tuple[float, float, float, float]:
        """The person's box: `landmark_box` of `points`."""
        return landmark_box(self.points, min_visibility)


def landmark_box(points: np.ndarray, min_visibility: float = 0.5
                 ) -> tuple[float, float, float, float]:
    """A person's box (x1, y1, x2, y2), normalised and clipped to the frame.

    Args:
        points: (33, >=4) landmarks (x, y normalised; column 3 the visibility).
        min_visibility: the box spans the landmarks at least this visible (all of them when
            fewer than four are: a person mostly out of view still gets a box).
    """
    seen = points[points[:, 3] >= min_visibility]
    if len(seen) < 4:
        seen = points
    x1, y1 = np.clip(seen[:, :2].min(0), 0.0, 1.0)
    x2, y2 = np.clip(seen[:, :2].max(0), 0.0, 1.0)
    return float(x1), float(y1), float(x2), float(y2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def refine_from_heatmap(points: np.ndarray, heatmap: np.ndarray,
                        kernel: int = HEATMAP_KERNEL,
                        min_confidence: float = HEATMAP_MIN_CONFIDENCE) -> np.ndarray:
    """Move each point to the confidence-weighted centre of its heatmap around it.

    MediaPipe's `RefineLandmarksFromHeatmap`: the kernel is cut at the heatmap's edges; a point
    outside the heatmap, or whose kernel's best sigmoid confidence is below `min_confidence`,
    is kept as it is.

    Args:
        points: (N, >=2) normalised to the model input.
        heatmap: (H, W, N) logits.
    Returns:
        a copy of `points` with x and y refined.
    """
    hm_h, hm_w, _ = heatmap.shape
    out = points.copy()
    half = (kernel - 1) // 2
    for i in range(points.shape[0]):
        col, row = int(points[i, 0] * hm_w), int(points[i, 1] * hm_h)  # truncation, as C++
        if not (0 <= col < hm_w and 0 <= row < hm_h):
            continue
        r0, r1 = max(0, row - half), min(hm_h, row + half + 1)
        c0, c1 = max(0, col - half), min(hm_w, col + half + 1)
        conf = _sigmoid(heatmap[r0:r1, c0:c1, i].astype(np.float32))
        total = conf.sum()
        if conf.max() >= min_confidence and total > 0:
            rows, cols = np.mgrid[r0:r1, c0:c1]
            out[i, 0] = (cols * conf).sum() / hm_w / total
            out[i, 1] = (rows * conf).sum() / hm_h / total
    return out


class LandmarkModel:
    """Landmarks of the person in a region of interest.

    Args:
        model: the landmark model's runner (`TfliteModel`).
        min_presence: below this pose-presence score there is no person (MediaPipe's
            `min_tracking_confidence`, default 0.5).
    """

    def __init__(self, model: TfliteModel, min_presence: float = 0.5):
        self.model = model
        self.min_presence = min_presence

    def __call__(self, image: np.ndarray, roi: Rect) -> PoseLandmarks | None:
        """The person's landmarks in `roi` of `image` (RGB uint8 (H, W, 3)), or None."""
        tensor, padding, _ = crop_rect(image, roi, (INPUT_SIZE, INPUT_SIZE), (0.0, 1.0),
                                       border_zero=False)
        raw, flag, _segmentation, heatmap, world = self.model(tensor)
        presence = float(np.asarray(flag).reshape(-1)[0])
        if presence < self.min_presence:
            return None
        return self.decode(raw.reshape(NUM_POINTS, 5), heatmap.reshape(heatmap.shape[-3:]),
                           world.reshape(NUM_POINTS, 3), presence, padding, roi)

    @staticmethod
    def decode(raw: np.ndarray, heatmap: np.ndarray, world: np.ndarray, presence: float,
               padding: tuple[float, float, float, float], roi: Rect) -> PoseLandmarks:
        """Landmarks in frame coordinates from the model's raw outputs.

        Args:
            raw: (39, 5) x, y, z in input pixels, visibility and presence logits.
            heatmap: (64, 64, 39) logits.
            world: (39, 3) metres.
            presence: the pose-presence score.
            padding: the crop's letterbox; roi: the region cropped.
        """
        pts = raw.astype(np.float32).copy()
        pts[:, :3] /= INPUT_SIZE
        pts[:, 3:5] = _sigmoid(pts[:, 3:5])
        pts = refine_from_heatmap(pts, heatmap)
        pts = project_points(remove_letterbox(pts, padding), roi)
        c, s = math.cos(roi.rotation), math.sin(roi.rotation)
        w = world[:NUM_LANDMARKS].astype(np.float32).copy()
        w[:, 0], w[:, 1] = c * world[:NUM_LANDMARKS, 0] - s * world[:NUM_LANDMARKS, 1], \
            s * world[:NUM_LANDMARKS, 0] + c * world[:NUM_LANDMARKS, 1]
        return PoseLandmarks(pts[:NUM_LANDMARKS], pts[AUX], w, presence, roi)

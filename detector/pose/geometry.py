"""Rotated regions of interest: how BlazePose finds, crops and maps back a person.

BlazePose never looks at a whole frame with its landmark model. The detector (or the previous
frame's landmarks) gives two alignment points, the mid-hip and a point whose distance from it
encodes the body's size and whose direction encodes its rotation; from them comes a square,
rotated region of interest (ROI) around the whole body, and the landmark model sees that region
cropped, rotated upright and resized to 256x256. Its landmarks are then projected back.

The arithmetic is MediaPipe's (Apache-2.0), re-stated here so that our landmarks match
`mediapipe==0.10.14`'s own (`tests/test_pose.py`):
- `AlignmentPointsRectsCalculator` -> `rect_from_alignment`;
- `RectTransformationCalculator` (scale 1.25, square_long) -> `expand_rect`;
- `ImageToTensorCalculator` (OpenCV path: warpPerspective, bilinear, keep aspect ratio)
  -> `crop_rect`;
- `LandmarkLetterboxRemovalCalculator` + `LandmarkProjectionCalculator` -> `project_points`.

Coordinates: rects and points are normalised to the frame ([0, 1] of its width and height,
origin top-left); `rotation` is in radians, clockwise on screen (y points down).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Rect:
    """A rotated rectangle, normalised to the frame.

    Attributes:
        cx, cy: centre, fractions of the frame's width and height.
        width, height: fractions of the frame's width and height.
        rotation: radians.
    """
    cx: float
    cy: float
    width: float
    height: float
    rotation: float = 0.0


def normalize_radians(angle: float) -> float:
    """`angle` wrapped into [-pi, pi)."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rect_from_alignment(start: np.ndarray, end: np.ndarray, size: tuple[int, int],
                        target_angle: float = math.pi / 2) -> Rect:
    """The square body rect of two alignment points (MediaPipe's `AlignmentPointsRects`).

    Args:
        start: (2,) normalised (x, y) of the body's centre (the mid-hip).
        end: (2,) normalised point whose distance from `start` is half the body's size and
            whose direction gives its rotation.
        size: (width, height) of the frame in pixels.
        target_angle: the direction `end - start` has in an upright body (90 degrees: up).
    Returns:
        a `Rect` centred on `start`, 2 x |end - start| on each side (in pixels), rotated so
        that the body stands upright inside it.
    """
    w, h = size
    x0, y0 = float(start[0]) * w, float(start[1]) * h
    x1, y1 = float(end[0]) * w, float(end[1]) * h
    box = 2.0 * math.hypot(x1 - x0, y1 - y0)
    rotation = normalize_radians(target_angle - math.atan2(-(y1 - y0), x1 - x0))
    return Rect(x0 / w, y0 / h, box / w, box / h, rotation)


def expand_rect(rect: Rect, size: tuple[int, int], scale: float = 1.25) -> Rect:
    """`rect` made square on its long side (in pixels), then scaled by `scale` about its centre.

    The 1.25 margin is the one BlazePose's landmark model was trained with.
    """
    w, h = size
    long_side = max(rect.width * w, rect.height * h)
    return Rect(rect.cx, rect.cy, long_side / w * scale, long_side / h * scale,
                normalize_radians(rect.rotation))


def _pad_to_aspect(width: float, height: float, out_w: int, out_h: int
                   ) -> tuple[float, float, tuple[float, float, float, float]]:
    """Grow a (width, height) region to the output's aspect ratio (letterbox).

    Returns:
        new width, new height, and the padding (left, top, right, bottom) as fractions of
        the grown region.
    """
    target = out_h / out_w
    aspect = height / width
    if target > aspect:
        pad = (1.0 - aspect / target) / 2.0
        return width, width * target, (0.0, pad, 0.0, pad)
    pad = (1.0 - target / aspect) / 2.0
    return height / target, height, (pad, 0.0, pad, 0.0)


def crop_rect(image: np.ndarray, rect: Rect | None, out_size: tuple[int, int],
              value_range: tuple[float, float], border_zero: bool
              ) -> tuple[np.ndarray, tuple[float, float, float, float], Rect]:
    """Crop a rotated rect out of `image`, upright, letterboxed to `out_size`, as a model input.

    Args:
        image: RGB uint8 (H, W, 3).
        rect: the region (normalised); None = the whole frame, unrotated.
        out_size: (width, height) of the model input in pixels.
        value_range: (min, max) the pixel values 0..255 are mapped to.
        border_zero: pixels outside the frame are zero (the detector); else the edge pixels
            are repeated (the landmark model), as MediaPipe does for each.
    Returns:
        input float32 (1, out_h, out_w, 3); the letterbox padding (left, top, right, bottom)
        as fractions of the crop; and the rect actually cropped (the letterboxed region).
    Raises:
        ValueError: the rect has no area.
    """
    h, w = image.shape[:2]
    rect = rect or Rect(0.5, 0.5, 1.0, 1.0, 0.0)
    rw, rh = rect.width * w, rect.height * h
    if not (rw > 0 and rh > 0) or not all(map(math.isfinite, (rect.cx, rect.cy, rw, rh))):
        raise ValueError(f"region of interest has no area: {rect}")
    out_w, out_h = out_size
    rw, rh, padding = _pad_to_aspect(rw, rh, out_w, out_h)
    cropped = Rect(rect.cx, rect.cy, rw / w, rh / h, rect.rotation)
    src = cv2.boxPoints(((rect.cx * w, rect.cy * h), (rw, rh), math.degrees(rect.rotation)))
    dst = np.array([[0, out_h], [0, 0], [out_w, 0], [out_w, out_h]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src.astype(np.float32), dst)
    border = cv2.BORDER_CONSTANT if border_zero else cv2.BORDER_REPLICATE
    warped = cv2.warpPerspective(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                 borderMode=border)
    lo, hi = value_range
    tensor = warped.astype(np.float32) * ((hi - lo) / 255.0) + lo
    return tensor[None], padding, cropped


def remove_letterbox(points: np.ndarray, padding: tuple[float, float, float, float]) -> np.ndarray:
    """Points (N, >=2) normalised to a letterboxed crop -> normalised to the crop's content.

    A third column (depth, scaled like x) is rescaled too; further columns are left alone.
    """
    left, top, right, bottom = padding
    out = points.copy()
    sx, sy = 1.0 - left - right, 1.0 - top - bottom
    out[:, 0] = (points[:, 0] - left) / sx
    out[:, 1] = (points[:, 1] - top) / sy
    if points.shape[1] > 2:
        out[:, 2] = points[:, 2] / sx
    return out


def project_points(points: np.ndarray, rect: Rect) -> np.ndarray:
    """Points (N, >=2) normalised to an upright crop of `rect` -> normalised to the frame.

    A third column (depth, in crop widths) becomes frame widths; further columns are kept.
    """
    out = points.copy()
    x, y = points[:, 0] - 0.5, points[:, 1] - 0.5
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    out[:, 0] = (c * x - s * y) * rect.width + rect.cx
    out[:, 1] = (s * x + c * y) * rect.height + rect.cy
    if points.shape[1] > 2:
        out[:, 2] = points[:, 2] * rect.width
    return out

"""`cameras[].mask`: parts of the picture the model never sees.

The polygons are rasterised ONCE, at the size the frames are resized to for the model (the ring
buffer's), into a 3-channel keep-image (255 where the model may look, 0 under a mask). The
capture thread then blanks each frame with one `cv2.bitwise_and` into the buffer it already
resizes into: no allocation per frame, a few microseconds at model size. Masked pixels are black
(0) in every frame, so they show neither content nor motion (frame differences are 0 there).

A region of interest (`roi`) crops the frame before the resize; the mask's polygons are in
WHOLE-frame coordinates and are mapped into the crop here.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from .polygons import Polygon, to_pixels


class FrameMask:
    """A precomputed mask for frames of one size.

    Args:
        polygons: the masked areas, normalised whole-frame coordinates.
        height, width: the size of the frames it blanks (the model's input size).
        roi: the normalised (x1, y1, x2, y2) crop those frames show (None: the whole frame).
    Attributes:
        keep: uint8 (height, width, 3), 255 where pixels are kept, 0 where they are blanked.
        fraction: share of the frames' pixels blanked, in [0, 1].
    """

    def __init__(self, polygons: Sequence[Polygon], height: int, width: int,
                 roi: Optional[Sequence[float]] = None) -> None:
        blank = np.zeros((height, width), np.uint8)
        for poly in polygons:
            pts = np.asarray(to_pixels(poly, width, height, roi), np.int32)
            cv2.fillPoly(blank, [pts], 255)
        self.keep = np.repeat((255 - blank)[:, :, None], 3, axis=2)
        self.fraction = float(np.count_nonzero(blank)) / blank.size

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Blank the masked pixels of `frame` in place.

        Args:
            frame: uint8 (height, width, 3), any channel order.
        Returns:
            `frame` itself.
        """
        return cv2.bitwise_and(frame, self.keep, dst=frame)


def frame_mask(polygons: Sequence[Polygon], height: int, width: int,
               roi: Optional[Sequence[float]] = None) -> Optional[FrameMask]:
    """A `FrameMask`, or None when there is nothing to mask (the capture path stays untouched)."""
    return FrameMask(polygons, height, width, roi) if polygons else None

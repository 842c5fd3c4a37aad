"""Zones and masks drawn on a frame, so an operator can check the polygons
(`vigil snapshot --camera NAME --draw-zones`).

Masks are shaded dark grey with a grey outline (the model sees black there); zones are outlined
in a colour of their own, required zones thicker, each with its name at its first point; a
region of interest, when set, is a white rectangle.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

from .polygons import Polygon, to_pixels

# BGR colours for zones, in declaration order (cycled).
ZONE_COLOURS = ((0, 200, 255), (0, 255, 0), (255, 128, 0), (255, 0, 255), (0, 128, 255),
                (255, 255, 0))


def draw_regions(image_bgr: np.ndarray, mask: Sequence[Polygon] = (),
                 zones: Optional[Mapping[str, Polygon]] = None,
                 required: Optional[Sequence[str]] = None,
                 roi: Optional[Sequence[float]] = None) -> np.ndarray:
    """Draw a camera's masks, zones and roi on a copy of a frame.

    Args:
        image_bgr: uint8 (H, W, 3) BGR, the whole frame.
        mask: masked polygons (normalised).
        zones: name -> polygon (normalised).
        required: the names an event must overlap (None: all zones).
        roi: normalised (x1, y1, x2, y2) the model looks at, or None.
    Returns:
        A new uint8 (H, W, 3) BGR image.
    """
    out = image_bgr.copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(w, h) / 300))
    if mask:
        shade = out.copy()
        for poly in mask:
            cv2.fillPoly(shade, [np.asarray(to_pixels(poly, w, h), np.int32)], (40, 40, 40))
        out = cv2.addWeighted(shade, 0.75, out, 0.25, 0)
        for poly in mask:
            cv2.polylines(out, [np.asarray(to_pixels(poly, w, h), np.int32)], True,
                          (128, 128, 128), thick, cv2.LINE_AA)
            _label(out, "mask", to_pixels(poly, w, h)[0], (160, 160, 160), thick)
    zones = zones or {}
    needed = set(zones) if required is None else set(required)
    for i, (name, poly) in enumerate(zones.items()):
        colour = ZONE_COLOURS[i % len(ZONE_COLOURS)]
        pts = to_pixels(poly, w, h)
        cv2.polylines(out, [np.asarray(pts, np.int32)], True, colour,
                      thick * (2 if name in needed else 1), cv2.LINE_AA)
        _label(out, name + (" (required)" if name in needed else ""), pts[0], colour, thick)
    if roi is not None:
        x1, y1, x2, y2 = roi
        cv2.rectangle(out, (int(x1 * w), int(y1 * h)), (int(x2 * w) - 1, int(y2 * h) - 1),
                      (255, 255, 255), thick)
        _label(out, "roi", (int(x1 * w), int(y1 * h)), (255, 255, 255), thick)
    return out


def _label(img: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int],
           thick: int) -> None:
    h, w = img.shape[:2]
    scale = max(0.4, min(w, h) / 700)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x = min(max(at[0] + 3, 0), max(w - tw - 2, 0))
    y = min(max(at[1] + th + 3, th + 2), h - base - 1)
    cv2.rectangle(img, (x - 2, y - th - 2), (x + tw + 2, y + base), (0, 0, 0), -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)

"""Polygons in normalised image coordinates: validation at the door, and the geometry of zones.

A polygon is a list of at least 3 `[x, y]` points, each coordinate in [0, 1] of the camera's
WHOLE frame (x to the right, y down; a region of interest does not change them), given in order
around its outline (either direction) and not crossing itself. `parse_polygon` refuses anything
else with a message naming the key (`cameras[0].zones.bar: ...`).

The geometry is shapely's (GEOS): validity (`explain_validity` says where a polygon crosses
itself), areas and intersections are exact, and a concave polygon is as good as a convex one.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

from detector.errors import ConfigError

Point = tuple[float, float]
Polygon = tuple[Point, ...]

# Coverage of the frame above which a mask or a required zone is worth a warning (it hides or
# requires (nearly) the whole picture: almost certainly a polygon given in the wrong units).
WHOLE_FRAME = 0.98


def parse_polygon(value: Any, where: str) -> Polygon:
    """Validate one polygon from the YAML.

    Args:
        value: a list of `[x, y]` pairs, normalised to [0, 1].
        where: the dotted key, for messages (e.g. `cameras[0].mask[1]`).
    Returns:
        The polygon as a tuple of (x, y) float pairs, closing point (a repeat of the first)
        dropped.
    Raises:
        ConfigError: `<where>: ...` for a non-list, fewer than 3 distinct points, a point that is
            not two numbers, a coordinate outside [0, 1], a polygon of no area, or one whose
            edges cross (shapely's reason and place).
    """
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of [x, y] points, got "
                          f"{type(value).__name__}")
    points: list[Point] = []
    for i, p in enumerate(value):
        if (not isinstance(p, (list, tuple)) or len(p) != 2
                or not all(_is_number(v) for v in p)):
            raise ConfigError(f"{where}[{i}]: expected a point [x, y] of two numbers, got "
                              f"{p!r:.40}")
        x, y = float(p[0]), float(p[1])
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ConfigError(f"{where}[{i}]: coordinates are normalised to [0, 1] of the frame "
                              f"(x = column / width, y = row / height), got [{x:g}, {y:g}]")
        points.append((x, y))
    if len(points) > 1 and points[0] == points[-1]:
        points.pop()                       # a closed ring written out: same polygon
    if len(set(points)) < 3:
        raise ConfigError(f"{where}: a polygon needs at least 3 distinct points, got "
                          f"{len(set(points))}")
    shape = _shape(tuple(points))
    if shape.convex_hull.area <= 1e-9:
        raise ConfigError(f"{where}: the polygon has no area (its points are on one line)")
    if not shape.is_valid:
        from shapely.validation import explain_validity

        reason = explain_validity(shape)
        raise ConfigError(f"{where}: the polygon's edges cross or touch ({_describe(reason)}); "
                          "list the points in order around the outline")
    return tuple(points)


def _describe(reason: str) -> str:
    """`Self-intersection[0.5 0.5]` -> `self-intersection at [0.5, 0.5]`."""
    head, _, rest = reason.partition("[")
    if not rest:
        return reason.lower()
    coords = rest.rstrip("]").split()
    try:
        where = ", ".join(f"{float(c):.3g}" for c in coords)
    except ValueError:
        return reason.lower()
    return f"{head.strip().lower()} at [{where}]"


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _shape(polygon: Polygon) -> Any:
    from shapely.geometry import Polygon as ShapelyPolygon

    return ShapelyPolygon(polygon)


def union(polygons: Iterable[Polygon]) -> Any:
    """The shapely union of polygons (an empty geometry for none)."""
    from shapely.ops import unary_union

    return unary_union([_shape(p) for p in polygons])


def coverage(polygons: Iterable[Polygon]) -> float:
    """Fraction of the frame's area the polygons cover together (overlaps counted once)."""
    return float(union(polygons).area)


def box_overlap(box: Sequence[float], region: Any) -> float:
    """Fraction of a box's area that lies inside a region.

    Args:
        box: normalised xyxy.
        region: a shapely geometry (e.g. `union(polygons)`), prepared or not.
    Returns:
        area(box ∩ region) / area(box) in [0, 1]; for a degenerate (zero-area) box, 1.0 when its
        centre lies in the region, else 0.0.
    """
    from shapely.geometry import Point as ShapelyPoint, box as shapely_box

    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    area = (x2 - x1) * (y2 - y1)
    if area <= 1e-12:
        return 1.0 if region.covers(ShapelyPoint((x1 + x2) / 2, (y1 + y2) / 2)) else 0.0
    return min(float(region.intersection(shapely_box(x1, y1, x2, y2)).area) / area, 1.0)


def to_pixels(polygon: Polygon, width: int, height: int,
              roi: Optional[Sequence[float]] = None) -> list[tuple[int, int]]:
    """A normalised polygon as integer pixel points of an image showing the frame (or its roi).

    Args:
        polygon: normalised points of the whole frame.
        width, height: the image's size in pixels.
        roi: normalised (x1, y1, x2, y2) of the frame the image shows (None: all of it); points
            outside it land outside the image (cv2 clips while filling).
    """
    rx1, ry1, rx2, ry2 = roi if roi is not None else (0.0, 0.0, 1.0, 1.0)
    sx, sy = width / (rx2 - rx1), height / (ry2 - ry1)
    return [(int(round((x - rx1) * sx)), int(round((y - ry1) * sy))) for x, y in polygon]

"""`cameras[].zones`: named areas of the picture, and which of them an event must overlap.

A camera's zones are named polygons (normalised whole-frame coordinates). `required_zones` lists
those an event must overlap to count (null, the default: every zone is required, i.e. an event
counts in any of them; `[]`: none is required and zones only label the alerts).

"Overlaps enough": at least `zone_min_overlap` (default 0.25) of the event's box AREA lies inside
the union of the required zones. A fraction of the box rather than a point of it (Frigate's
bottom-centre) because a fight's or a fall's box covers the people involved, whose feet are not
where the action is; and a quarter rather than a half because on real footage the boxes are a
rough region (docs/models/real-cpu-v2.md), often larger than the people. The box tested is the
event's smoothed box, the one its `start` would carry.

An event whose box is outside the required zones does not start; it is tracked silently (and
counted in `vigil_events_suppressed_total{reason="zone"}`) and starts if the action moves into a
zone while it goes on. Once started, an event continues until it ends, wherever its box goes.
Alerts of a camera with zones carry `zones`: the names of the zones (required or not) the box
overlaps enough.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .polygons import Polygon, box_overlap, union


@dataclass
class CameraZones:
    """One camera's zones, prepared for testing boxes against them.

    Args:
        zones: name -> polygon.
        required: names an event must overlap; None = every zone.
        min_overlap: fraction of the box's area that must lie inside.
    """
    zones: Mapping[str, Polygon]
    required: Optional[Sequence[str]] = None
    min_overlap: float = 0.25
    _regions: dict[str, Any] = field(init=False, repr=False)
    _required: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from shapely import prepare

        self._regions = {name: union([poly]) for name, poly in self.zones.items()}
        names = list(self.zones) if self.required is None else list(self.required)
        self._required = union([self.zones[n] for n in names]) if names else None
        for geom in (*self._regions.values(), self._required):
            if geom is not None:
                prepare(geom)

    def names(self, box: Sequence[float]) -> list[str]:
        """The zones the box overlaps enough (declaration order).

        Args:
            box: normalised xyxy of the whole frame.
        """
        return [name for name, region in self._regions.items()
                if box_overlap(box, region) >= self.min_overlap]

    def allows(self, box: Sequence[float]) -> bool:
        """Whether an event with this box counts: it overlaps the required zones enough (always
        True when no zone is required)."""
        if self._required is None:
            return True
        return box_overlap(box, self._required) >= self.min_overlap

"""Where on a camera's picture to look and what counts: polygon masks and zones.

* `polygons.py`: a polygon in normalised coordinates, validated once at the config's door
  (`parse_polygon`), and the geometry the rest needs (overlap of a box with polygons, area);
* `mask.py`: `cameras[].mask` rasterised once at the model's input size, blanked in every frame
  before the model sees it (`FrameMask`, applied by the capture thread);
* `zones.py`: `cameras[].zones` and `required_zones`: which zones an alert's box overlaps, and
  whether an event may start there (`CameraZones`);
* `draw.py`: zones and masks drawn on a frame (`vigil snapshot --draw-zones`).
"""

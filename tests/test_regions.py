"""Masks and zones (`streamer/regions/`): polygon validation at the config's door (property tests
with hypothesis), the overlap that decides whether an event counts, the mask the capture thread
applies before the model, the tracker's zone gate, and the drawing `vigil snapshot` writes.
"""
from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.errors import ConfigError
from streamer.config import parse_config
from streamer.regions.mask import FrameMask
from streamer.regions.polygons import box_overlap, coverage, parse_polygon, union
from streamer.regions.zones import CameraZones

unit = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def star_polygons(draw, min_points=3, max_points=12):
    """Simple polygons: points at increasing angles around a centre (star-shaped, never
    crossing), kept inside [0, 1]^2."""
    cx, cy = draw(st.floats(0.2, 0.8)), draw(st.floats(0.2, 0.8))
    n = draw(st.integers(min_points, max_points))
    angles = sorted(draw(st.lists(st.floats(0, 2 * math.pi, exclude_max=True), min_size=n,
                                  max_size=n, unique_by=lambda a: round(a, 2))))
    gaps = [b - a for a, b in zip(angles, angles[1:] + [angles[0] + 2 * math.pi])]
    if max(gaps) >= math.pi * 0.95:      # all points on one side: could be degenerate
        angles = [2 * math.pi * i / n for i in range(n)]
    radii = draw(st.lists(st.floats(0.05, 0.19), min_size=n, max_size=n))
    return [[cx + r * math.cos(a), cy + r * math.sin(a)] for a, r in zip(angles, radii)]


@st.composite
def boxes(draw):
    x1, x2 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    return [x1, y1, x2, y2]


# ----------------------------------------------------------------------------- validation
@settings(max_examples=150, deadline=None)
@given(star_polygons())
def test_every_simple_polygon_inside_the_frame_is_accepted(points):
    poly = parse_polygon(points, "cameras[0].zones.a")
    assert len(poly) == len(points) and 0 < coverage([poly]) <= 1


@settings(max_examples=100, deadline=None)
@given(star_polygons(), st.integers(0, 11), st.sampled_from([-0.5, -1e-3, 1.001, 7.0]),
       st.integers(0, 1))
def test_a_point_outside_the_frame_is_refused_naming_it(points, which, bad, axis):
    i = which % len(points)
    points[i][axis] = bad
    with pytest.raises(ConfigError, match=rf"^cameras\[2\]\.mask\[0\]\[{i}\]: coordinates are "
                                          r"normalised"):
        parse_polygon(points, "cameras[2].mask[0]")


@settings(max_examples=100, deadline=None)
@given(st.floats(0.05, 0.45), st.floats(0.05, 0.45), st.floats(0.55, 0.95), st.floats(0.55, 0.95))
def test_a_bow_tie_is_refused_as_self_intersecting(x1, y1, x2, y2):
    # The corners of a rectangle taken across its diagonals: the edges cross in the middle.
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.zones\.bar: the polygon's edges cross"):
        parse_polygon([[x1, y1], [x2, y2], [x2, y1], [x1, y2]], "cameras[0].zones.bar")


@pytest.mark.parametrize("value, problem", [
    ([[0.1, 0.1], [0.5, 0.5]], "at least 3 distinct points, got 2"),
    ([[0.1, 0.1], [0.5, 0.5], [0.1, 0.1]], "at least 3 distinct points, got 2"),
    ([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]], "no area"),
    ([[0.1, 0.1], [0.5], [0.3, 0.9]], r"\[1\]: expected a point \[x, y\]"),
    ([[0.1, 0.1], ["a", 0.5], [0.3, 0.9]], r"\[1\]: expected a point"),
    ([[0.1, 0.1], [float("nan"), 0.5], [0.3, 0.9]], r"\[1\]: expected a point"),
    ("0,0 1,1", "expected a list of"),
])
def test_bad_polygons_are_refused_with_the_key(value, problem):
    with pytest.raises(ConfigError, match=r"^cameras\[0\]\.mask\[0\]" + ".*" + problem):
        parse_polygon(value, "cameras[0].mask[0]")


def test_a_closed_ring_written_out_is_the_same_polygon():
    square = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.1, 0.4]]
    assert parse_polygon(square + [square[0]], "k") == parse_polygon(square, "k")


# ----------------------------------------------------------------------------- overlap
def raster_overlap(box, polygon, n=400) -> float:
    img = np.zeros((n, n), np.uint8)
    cv2.fillPoly(img, [np.asarray([[x * n, y * n] for x, y in polygon], np.int32)], 1)
    x1, y1, x2, y2 = (int(round(v * n)) for v in box)
    cut = img[y1:y2, x1:x2]
    return float(cut.mean()) if cut.size else 0.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(star_polygons(), boxes())
def test_overlap_is_a_fraction_of_the_box_and_matches_a_raster_count(points, box):
    poly = parse_polygon(points, "k")
    got = box_overlap(box, union([poly]))
    assert 0.0 <= got <= 1.0
    if (box[2] - box[0]) * 400 >= 8 and (box[3] - box[1]) * 400 >= 8:   # >= 64 pixels
        assert got == pytest.approx(raster_overlap(box, poly), abs=0.12)


@settings(max_examples=100, deadline=None)
@given(star_polygons(), boxes())
def test_a_box_inside_the_zone_overlaps_fully_and_a_box_beside_it_not_at_all(points, box):
    poly = parse_polygon(points, "k")
    region = union([poly])
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
    if region.contains(union([((cx - 1e-3, cy - 1e-3), (cx + 1e-3, cy - 1e-3),
                               (cx + 1e-3, cy + 1e-3))])):
        assert box_overlap([cx - 1e-3, cy - 1e-3, cx + 1e-3, cy + 1e-3], region) == \
            pytest.approx(1.0)
    right = max(xs)
    if right < 0.99:
        assert box_overlap([right + 0.005, 0.0, 1.0, 1.0], region) == 0.0


@settings(max_examples=100, deadline=None)
@given(star_polygons(), st.lists(star_polygons(), max_size=2), boxes(), st.floats(0.05, 1.0))
def test_a_box_counts_when_enough_of_it_is_in_a_required_zone(required, others, box, need):
    zones = {"need": parse_polygon(required, "k")}
    zones.update({f"z{i}": parse_polygon(p, "k") for i, p in enumerate(others)})
    z = CameraZones(zones, required=["need"], min_overlap=need)
    assert z.allows(box) == (box_overlap(box, union([zones["need"]])) >= need)
    assert ("need" in z.names(box)) == z.allows(box)
    assert CameraZones(zones, required=[], min_overlap=need).allows(box)


# ----------------------------------------------------------------------------- masks
@settings(max_examples=60, deadline=None)
@given(st.lists(star_polygons(), min_size=1, max_size=3))
def test_the_mask_blanks_exactly_its_polygons_and_nothing_else(polys):
    polygons = [parse_polygon(p, "k") for p in polys]
    h, w = 48, 64
    mask = FrameMask(polygons, h, w)
    frame = np.random.default_rng(0).integers(1, 256, (h, w, 3), dtype=np.uint8)
    before = frame.copy()
    out = mask.apply(frame)
    assert out is frame                                   # in place: no allocation per frame
    blanked = (frame == 0).all(axis=2)
    # An independent rasterisation: matplotlib's point-in-polygon on the pixel centres.
    from matplotlib.path import Path as MplPath

    gx, gy = np.meshgrid((np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h)
    centres = np.stack([gx.ravel(), gy.ravel()], axis=1)
    expected = np.zeros(h * w, bool)
    for poly in polygons:
        expected |= MplPath(np.asarray(poly)).contains_points(centres)
    expected = expected.reshape(h, w)
    assert np.array_equal(blanked, expected)
    assert np.array_equal(frame[~blanked], before[~blanked])
    assert mask.fraction == pytest.approx(expected.mean())


def test_the_mask_follows_the_region_of_interest():
    # The roi shows the right half of the frame; a mask over the frame's right quarter covers
    # the right half of what the model sees.
    mask = FrameMask([((0.75, 0.0), (1.0, 0.0), (1.0, 1.0), (0.75, 1.0))], 10, 20,
                     roi=(0.5, 0.0, 1.0, 1.0))
    assert mask.keep[:, :10].all() and not mask.keep[:, 10:].any()


def test_the_capture_thread_blanks_the_mask_before_the_ring(tmp_path):
    from streamer.capture import CaptureThread
    from streamer.ringbuffer import RingBuffer

    ring = RingBuffer(4, 32, 32)
    cap = CaptureThread("cam", "synth://fight?width=64&height=64&fps=10", ring,
                        mask=[((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))])
    frame = np.full((64, 64, 3), 200, np.uint8)
    cap._store(frame, 0.0, 0.0)
    stored, _, _ = ring.gather(np.array([ring.count - 1]))
    assert (stored[0, :, :16] == 0).all() and (stored[0, :, 16:] == 200).all()


# ----------------------------------------------------------------------------- config
BASE = {"data_dir": "/tmp/vigil-test", "model": {"checkpoint": "x.pt"}}


def config_with(camera: dict, **top):
    return parse_config({**BASE, "cameras": [{"name": "bar", "url": "synth://fight", **camera}],
                         **top}, check_paths=False)


def test_zones_and_masks_load_with_required_zones_and_the_overlap_setting():
    cfg = config_with({"mask": [[0, 0], [0.2, 0], [0.2, 0.2]],           # one polygon alone
                       "zones": {"floor": [[0.1, 0.5], [0.9, 0.5], [0.9, 1], [0.1, 1]],
                                 "door": [[0.8, 0], [1, 0], [1, 0.4]]},
                       "required_zones": ["floor"], "zone_min_overlap": 0.5})
    cam = cfg.cameras[0]
    assert len(cam.mask) == 1 and list(cam.zones) == ["floor", "door"]
    assert cam.required_zones == ["floor"] and cam.settings.zone_min_overlap == 0.5


@pytest.mark.parametrize("camera, key", [
    ({"zones": {"a": [[0, 0], [1, 1], [1, 0], [0, 1]]}}, r"cameras\[0\]\.zones\.a: the polygon's"),
    ({"mask": [[[0, 0], [1.5, 0], [1, 1]]]}, r"cameras\[0\]\.mask\[0\]\[1\]: coordinates"),
    ({"zones": {"a": [[0, 0], [1, 0]]}}, r"cameras\[0\]\.zones\.a: a polygon needs at least 3"),
    ({"zones": {"a": [[0, 0], [1, 0], [1, 1]]}, "required_zones": ["b"]},
     r"cameras\[0\]\.required_zones: unknown zone 'b'"),
    ({"zones": {"a b": [[0, 0], [1, 0], [1, 1]]}}, r"cameras\[0\]\.zones: invalid zone name"),
    ({"zone_min_overlap": 0}, r"cameras\[0\]\.zone_min_overlap: must be in \(0, 1\]"),
    ({"mask": "everything"}, r"cameras\[0\]\.mask: expected a list of polygons"),
])
def test_bad_zones_and_masks_are_refused_at_load_naming_the_key(camera, key):
    with pytest.raises(ConfigError, match=key):
        config_with(camera)


def test_a_mask_or_required_zones_covering_the_whole_frame_load_with_a_warning(caplog):
    whole = [[0, 0], [1, 0], [1, 1], [0, 1]]
    with caplog.at_level(logging.WARNING, logger="streamer.config"):
        config_with({"mask": [whole]})
        config_with({"zones": {"all": whole}})
        config_with({"mask": [[[0, 0], [0.5, 0], [0.5, 1], [0, 1]]],
                     "zones": {"left": [[0.1, 0.1], [0.4, 0.1], [0.4, 0.9]]}})
    text = caplog.text
    assert "cameras[0].mask covers 100% of the frame" in text
    assert "cameras[0].zones: the required zones cover 100% of the frame" in text
    assert "cameras[0].zones: the required zones lie under the mask" in text


# ----------------------------------------------------------------------------- tracker gate
def _result(camera, score, box, t):
    from streamer.types import ClassScore, WindowResult

    return WindowResult(camera, {"fight": ClassScore("fight", score, tuple(box))}, (320, 240),
                        t, t + 1.0, t + 1.0, int(t))


def test_an_event_outside_the_required_zone_does_not_start_and_is_counted():
    from streamer.config import SmoothingConfig
    from streamer.events import EventTracker
    from streamer.metrics import VigilMetrics

    zones = CameraZones({"floor": parse_polygon([[0, 0.5], [1, 0.5], [1, 1], [0, 1]], "k")})
    gate = lambda cam, label, box: None if zones.allows(box) else "zone"  # noqa: E731
    metrics = VigilMetrics()
    tracker = EventTracker(SmoothingConfig(min_windows=1, cooldown_s=2), ["fight"],
                           metrics=metrics)
    sky = (0.1, 0.0, 0.5, 0.3)                  # the top of the frame: not the floor
    out = [m for t in range(5) for m in tracker.observe(_result("cam", 0.95, sky, t), gate)]
    assert out == []
    assert tracker.silent_events() == {("cam", "fight"): "zone"}
    assert metrics.events_suppressed.labels(camera="cam", label="fight",
                                            reason="zone")._value.get() == 1
    # The action moves onto the floor while it goes on: it starts there.
    floor = (0.1, 0.6, 0.5, 0.95)
    msgs = [m for t in range(5, 12) for m in tracker.observe(_result("cam", 0.95, floor, t),
                                                             gate)]
    assert [m["type"] for m in msgs][:1] == ["start"]
    assert tracker.silent_events() == {}


def test_a_silent_event_ends_with_the_cooldown_and_a_new_one_is_counted_again():
    from streamer.config import SmoothingConfig
    from streamer.events import EventTracker
    from streamer.metrics import VigilMetrics

    metrics = VigilMetrics()
    tracker = EventTracker(SmoothingConfig(min_windows=1, cooldown_s=2, alpha=1.0), ["fight"],
                           metrics=metrics)
    never = lambda *a: "zone"  # noqa: E731
    box = (0.1, 0.1, 0.2, 0.2)
    for t, score in enumerate([0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9]):
        assert tracker.observe(_result("cam", score, box, t), never) == []
    assert metrics.events_suppressed.labels(camera="cam", label="fight",
                                            reason="zone")._value.get() == 2


# ----------------------------------------------------------------------------- drawing
def test_draw_regions_marks_masks_and_zones_without_touching_the_input():
    from streamer.regions.draw import draw_regions

    frame = np.full((120, 160, 3), 255, np.uint8)
    out = draw_regions(frame, mask=[((0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5))],
                       zones={"floor": ((0.1, 0.6), (0.9, 0.6), (0.9, 0.95))},
                       required=["floor"], roi=(0.0, 0.0, 1.0, 1.0))
    assert (frame == 255).all()
    assert out[20, 40].mean() < 120                   # the mask is shaded dark
    assert (out[80, 130] == 255).all()                # inside the zone: the picture
    assert not (out[int(0.6 * 120), 80] == 255).all()  # its outline is drawn


def test_the_pose_path_blanks_the_mask_before_blazepose_too():
    # The pose threads read the display ring (the whole picture, kept for evidence): they blank
    # the camera's mask in their frame copy, rebuilt when the frame size changes.
    from streamer.pose.worker import PoseWorker, _Camera

    worker = PoseWorker.__new__(PoseWorker)
    worker.mask_of = lambda name: [((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))]
    st = _Camera(ring=None, tracker=None)
    for h, w in ((40, 60), (90, 120)):
        frame = np.full((h, w, 3), 200, np.uint8)
        worker._blank("cam", st, frame)
        assert (frame[:, : w // 2] == 0).all() and (frame[:, w // 2:] == 200).all()
    worker.mask_of = lambda name: []
    frame = np.full((10, 10, 3), 200, np.uint8)
    worker._blank("cam", st, frame)
    assert (frame == 200).all()

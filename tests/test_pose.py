"""detector/pose: BlazePose run by Vigil gives MediaPipe's own landmarks; its shapes; nobody in
view, several people, a person cut by the frame edge, dark frames; missing and corrupt model
files."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from detector.errors import CheckpointError
from detector.pose.blazepose import BlazePose
from detector.pose.detection import ssd_anchors, weighted_nms
from detector.pose.geometry import Rect, expand_rect, normalize_radians, rect_from_alignment
from detector.pose.landmarks import NUM_LANDMARKS, landmark_box
from detector.pose.runner import BLAZEPOSE_DIR, DETECTOR_FILE, LANDMARK_FILE, TfliteModel
from tests.pose_reference import (MEDIAPIPE_PYTHON, REAL, load_fixture, photo, photo_frames,
                                  real_frames, run_mediapipe)

# Agreement with MediaPipe on the landmarks it calls visible (visibility >= 0.5), in fractions
# of the frame (measured: median 0.00002-0.0013, 90th percentile at most 0.0034, largest 0.012):
# the median within a pixel of a 640-px frame, 90% within three. A landmark whose heatmap
# confidence sits at the refinement threshold may be refined on one side only (the 0.012).
MEDIAN_TOL, P90_TOL, MAX_TOL, VIS_TOL = 0.002, 0.005, 0.02, 0.01


@pytest.fixture(scope="module")
def static_pose():
    return BlazePose(track=False)


def assert_matches(ours, theirs: np.ndarray | None, name: str) -> None:
    """Our landmarks (or None) against MediaPipe's (33, 4) (or None)."""
    if theirs is None:
        assert ours is None, f"{name}: MediaPipe finds nobody, we find someone"
        return
    assert ours is not None, f"{name}: MediaPipe finds a person, we find nobody"
    theirs = np.asarray(theirs, np.float32)
    visible = theirs[:, 3] >= 0.5
    err = np.abs(ours.points[:, :2] - theirs[:, :2]).max(axis=1)[visible]
    assert visible.sum() >= 5, name
    assert np.median(err) < MEDIAN_TOL, f"{name}: median error {np.median(err):.4f}"
    assert np.percentile(err, 90) < P90_TOL, f"{name}: 90th percentile {np.percentile(err, 90):.4f}"
    assert err.max() < MAX_TOL, f"{name}: largest error {err.max():.4f}"
    assert np.abs(ours.points[:, 3] - theirs[:, 3]).max() < VIS_TOL, f"{name}: visibility"


# ------------------------------------------------------------------ equivalence with MediaPipe
def test_landmarks_match_mediapipes_own_on_the_photograph_and_its_variants(static_pose):
    recorded = load_fixture()
    assert recorded["mediapipe"] == "0.10.14"
    frames = photo_frames()
    for name, frame in frames.items():
        expected = recorded["frames"][name]
        assert list(frame.shape) == expected["shape"], name
        assert_matches(static_pose(frame), expected["landmarks"], name)


def test_landmarks_match_mediapipes_own_on_real_footage(static_pose):
    frames = real_frames()
    if not frames:
        pytest.skip(f"{REAL} is absent: the real-footage frames cannot be decoded")
    recorded = load_fixture()["frames"]
    for name, frame in frames.items():
        assert_matches(static_pose(frame), recorded[name]["landmarks"], name)


def test_landmarks_match_mediapipe_run_live(static_pose):
    """Against mediapipe itself, run now (`make pose-reference` installs it beside Vigil)."""
    if not MEDIAPIPE_PYTHON.exists():
        pytest.skip(f"{MEDIAPIPE_PYTHON} is absent (make pose-reference creates it); the "
                    f"recorded landmarks are checked above")
    frames = {**photo_frames(), **real_frames()}
    theirs, version = run_mediapipe(MEDIAPIPE_PYTHON, frames)
    assert version == "0.10.14"
    for name, frame in frames.items():
        assert_matches(static_pose(frame), theirs[name], name)


# ------------------------------------------------------------------ shapes and contracts
def test_shapes_and_ranges(static_pose):
    found = static_pose(photo())
    assert found.points.shape == (NUM_LANDMARKS, 5) and found.points.dtype == np.float32
    assert found.aux.shape == (2, 5) and found.world.shape == (NUM_LANDMARKS, 3)
    assert 0.5 <= found.presence <= 1.0
    assert ((found.points[:, 3:] >= 0) & (found.points[:, 3:] <= 1)).all()
    x1, y1, x2, y2 = found.box()
    assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
    # the face is in the upper half of the portrait, the shoulders below it
    assert found.points[0, 1] < found.points[11, 1] and found.points[0, 1] < 0.6


def test_rejects_frames_that_are_not_rgb_uint8(static_pose):
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                np.zeros((10, 10, 3), np.float32)):
        with pytest.raises(ValueError, match="RGB uint8"):
            static_pose(bad)


def test_the_anchor_grid_is_mediapipes():
    anchors = ssd_anchors()
    assert anchors.shape == (2254, 2)
    # first layer: 28x28 cells, two anchors each, centres at (x+0.5)/28
    assert np.allclose(anchors[0], [0.5 / 28, 0.5 / 28]) and np.allclose(anchors[1], anchors[0])
    assert np.allclose(anchors[2], [1.5 / 28, 0.5 / 28])
    # last: the three 32-stride layers share a 7x7 grid, six anchors a cell
    assert np.allclose(anchors[-1], [6.5 / 7, 6.5 / 7]) and np.allclose(anchors[-6], anchors[-1])


def test_weighted_nms_merges_overlaps_and_keeps_the_best_score():
    boxes = np.array([[0, 0, 1, 1], [0.1, 0, 1.1, 1], [5, 5, 6, 6]], np.float32)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    kps = np.stack([np.full((4, 2), v, np.float32) for v in (1.0, 2.0, 9.0)])
    out = weighted_nms(scores, boxes, kps)
    assert [round(s, 2) for s, _, _ in out] == [0.9, 0.8]
    merged_box, merged_kp = out[0][1], out[0][2]
    assert merged_box[0] == pytest.approx(0.06 / 1.5, rel=1e-5)       # (0.9 * 0 + 0.6 * 0.1) / 1.5
    assert merged_kp[0, 0] == pytest.approx(2.1 / 1.5, rel=1e-5)      # (0.9 * 1 + 0.6 * 2) / 1.5
    # a box without area is still reported (MediaPipe's loop would stop there)
    flat = weighted_nms(np.array([0.7], np.float32), np.zeros((1, 4), np.float32),
                        np.zeros((1, 4, 2), np.float32))
    assert len(flat) == 1


def test_roi_geometry_upright_and_lying():
    size = (640, 480)
    up = rect_from_alignment(np.array([0.5, 0.6]), np.array([0.5, 0.4]), size)
    assert up.rotation == pytest.approx(0.0)
    assert up.width * 640 == pytest.approx(2 * 0.2 * 480)
    lying = rect_from_alignment(np.array([0.5, 0.6]), np.array([0.7, 0.6]), size)
    assert abs(lying.rotation) == pytest.approx(math.pi / 2)
    square = expand_rect(Rect(0.5, 0.5, 0.1, 0.3), size, 1.25)
    assert square.width * 640 == pytest.approx(square.height * 480)
    assert normalize_radians(3 * math.pi) == pytest.approx(-math.pi)


# ------------------------------------------------------------------ hard cases
def test_nobody_in_view_is_none():
    pose = BlazePose()
    rng = np.random.default_rng(0)
    assert pose(np.zeros((360, 640, 3), np.uint8)) is None
    assert pose(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)) is None
    assert pose(np.full((360, 640, 3), 255, np.uint8)) is None


def test_tracking_follows_the_person_without_detecting_again():
    pose = BlazePose()
    img = photo()
    canvas = np.zeros((700, 900, 3), np.uint8)
    found = []
    for dx in range(0, 200, 25):                      # the person moves right
        frame = canvas.copy()
        frame[50:650, 100 + dx:612 + dx] = img
        found.append(pose(frame))
    assert all(f is not None for f in found)
    assert pose.detections == 1                        # found once, then tracked
    noses = [f.points[0, 0] for f in found]
    assert all(b > a for a, b in zip(noses, noses[1:]))
    pose.reset()
    pose(canvas)
    assert pose.detections == 2


def test_several_people_follows_one_of_them(static_pose):
    img = photo()
    pair = np.zeros((600, 1200, 3), np.uint8)
    pair[:, :512] = img
    pair[:, 688:1200] = img[:, ::-1]
    found = static_pose(pair)
    assert found is not None
    x1, _, x2, _ = found.box()
    assert x2 < 0.5 or x1 > 0.5                        # one person's box, not both


def test_a_person_cut_by_the_frame_edge_gets_a_box_inside_the_frame(static_pose):
    img = photo()
    cut = np.ascontiguousarray(img[:, 150:])           # a third of the person out of view
    found = static_pose(cut)
    assert found is not None
    assert found.points[:, 0].min() < 0.0              # landmarks extend beyond the edge
    x1, y1, x2, y2 = found.box()
    assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0
    assert landmark_box(found.points) == found.box()


def test_dark_and_infrared_like_frames(static_pose):
    """As MediaPipe: a dim colour frame still shows the person; this greyscale one does not."""
    recorded = load_fixture()["frames"]
    frames = photo_frames()
    assert (static_pose(frames["dark"]) is None) == (recorded["dark"]["landmarks"] is None)
    assert (static_pose(frames["greyscale"]) is None) == \
        (recorded["greyscale"]["landmarks"] is None)


# ------------------------------------------------------------------ model files
def test_a_missing_model_file_names_it(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / DETECTOR_FILE)):
        BlazePose(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a tflite file at all" * 100,
                                     b"TFL3" + bytes(4000)])
def test_a_corrupt_model_file_names_it(tmp_path, content):
    shutil.copy(BLAZEPOSE_DIR / LANDMARK_FILE, tmp_path / LANDMARK_FILE)
    (tmp_path / DETECTOR_FILE).write_bytes(content)
    with pytest.raises(CheckpointError, match=DETECTOR_FILE):
        BlazePose(tmp_path)


def test_the_files_swapped_are_refused(tmp_path):
    shutil.copy(BLAZEPOSE_DIR / LANDMARK_FILE, tmp_path / DETECTOR_FILE)
    shutil.copy(BLAZEPOSE_DIR / DETECTOR_FILE, tmp_path / LANDMARK_FILE)
    with pytest.raises(CheckpointError, match="not the BlazePose file"):
        BlazePose(tmp_path)


def test_runner_outputs_in_mediapipes_order():
    model = TfliteModel(BLAZEPOSE_DIR / LANDMARK_FILE)
    outs = model(np.zeros((1, 256, 256, 3), np.float32))
    assert [o.shape for o in outs] == [(1, 195), (1, 1), (1, 256, 256, 1), (1, 64, 64, 39),
                                       (1, 117)]

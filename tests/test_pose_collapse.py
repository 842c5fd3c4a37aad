"""The pose collapse model: fall features say what a body did, nobody in view scores 0, the
checkpoint format, and the pose recipe through `vigil train`, `vigil eval`, `vigil cv` and
`scripts/alert-check.py` on a small dataset of photographed people (`vigil synth --style photo`),
tracked by the real BlazePose."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.errors import CheckpointError
from detector.pose.collapse import (build_pose_model, is_pose_checkpoint, load_pose_checkpoint,
                                    save_pose_checkpoint)
from detector.pose.features import FEATURE_NAMES, MIN_SEEN, NUM_FEATURES, features_of
from detector.pose.paths import resolve_pose_path
from detector.pose.sequence import PoseSequence, pose_frame_size, sample_indices

ROOT = Path(__file__).resolve().parents[1]


def body(angle: float, hip=(0.5, 0.7), size: float = 0.3) -> np.ndarray:
    """33 landmarks (x, y, z, visibility, presence) of a straight body whose torso is tilted
    `angle` radians from upright (pi/2: lying), hips at `hip`, `size` frame-heights tall."""
    pts = np.zeros((33, 5), np.float32)
    pts[:, 3:] = 1.0
    up = np.array([math.sin(angle), -math.cos(angle)])
    hx, hy = hip
    for i in range(33):
        # head (0-10) above the shoulders (11-22) above the hips (23-24) above legs (25-32)
        along = 0.5 if i <= 10 else 0.3 if i <= 22 else 0.0 if i <= 24 else -0.4
        pts[i, :2] = (hx + up[0] * along * size, hy + up[1] * along * size)
    return pts


def sequence(angles, hips=None, fps=8.0, seen=None, size=(640, 480)) -> PoseSequence:
    n = len(angles)
    pts = np.stack([body(a, hips[i] if hips else (0.5, 0.7)) for i, a in enumerate(angles)])
    world = pts[:, :, :3].copy()
    presence = np.ones(n, np.float32)
    if seen is not None:
        off = ~np.asarray(seen)
        pts[off] = np.nan
        world[off] = np.nan
        presence[off] = 0
    return PoseSequence(np.arange(n) / fps, pts, world, presence, size)


def feat(seq: PoseSequence) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, features_of(seq)))


# ------------------------------------------------------------------ features
def test_a_fall_turns_the_torso_and_drops_the_hips_fast():
    fall = [0.0] * 6 + [0.5, 1.1, 1.5] + [1.55] * 7
    hips = [(0.5, 0.55)] * 6 + [(0.52, 0.62), (0.55, 0.7), (0.58, 0.78)] + [(0.6, 0.8)] * 7
    f = feat(sequence(fall, hips))
    stand = feat(sequence([0.02 * math.sin(i) for i in range(16)]))
    assert f["torso_angle_change"] > 1.2 and abs(stand["torso_angle_change"]) < 0.05
    assert f["angle_speed_max"] > 3.0 and stand["angle_speed_max"] < 0.5
    assert f["hip_drop"] > 0.3 and abs(stand["hip_drop"]) < 0.01
    assert f["torso_angle_last"] > 1.4 and stand["torso_angle_last"] < 0.1
    assert f["seen"] == 1.0 and len(features_of(sequence(fall, hips))) == NUM_FEATURES


def test_lying_still_is_not_a_change():
    f = feat(sequence([1.55] * 16))
    assert f["torso_angle_last"] > 1.4 and abs(f["torso_angle_change"]) < 0.01
    assert f["angle_speed_max"] < 0.1 and abs(f["hip_drop"]) < 0.01


def test_angles_are_measured_in_pixels_whatever_the_frame_aspect():
    """A body at 45 degrees in a 2:1 frame is 45 degrees, not what normalised x, y say."""
    seq = sequence([math.pi / 4] * 8, size=(480, 480))
    wide = sequence([math.pi / 4] * 8, size=(960, 480))
    wide.points[..., 0] = 0.5 + (wide.points[..., 0] - 0.5) / 2   # same pixels, wider frame
    assert feat(seq)["torso_angle_last"] == pytest.approx(math.pi / 4, abs=1e-3)
    assert feat(wide)["torso_angle_last"] == pytest.approx(math.pi / 4, abs=1e-3)


def test_nobody_in_view_has_no_features_and_scores_zero():
    seen = [False] * 16
    seen[3] = seen[9] = True                       # a person in 2 samples: below MIN_SEEN
    assert MIN_SEEN == 3
    seq = sequence([0.0] * 16, seen=seen)
    assert features_of(seq) is None
    model = build_pose_model({})
    assert model.score_window(seq) == (0.0, None)
    assert model.score_window(PoseSequence.empty((640, 480))) == (0.0, None)


def test_the_window_box_is_the_person_in_its_last_sample_with_one():
    seen = [True] * 10 + [False] * 6
    seq = sequence([0.0] * 10 + [1.5] * 6, seen=seen)
    model = build_pose_model({})
    _, box = model.score_window(seq)
    x1, y1, x2, y2 = box
    assert y2 - y1 > x2 - x1                        # the upright body of sample 9, not lying


def test_sampling_and_frame_size_rules():
    assert list(sample_indices(30, 30.0, 8.0)) == [0, 4, 8, 11, 15, 19, 22, 26]
    assert list(sample_indices(5, 5.0, 8.0)) == [0, 1, 2, 3, 4]     # slower than 8: all
    assert len(sample_indices(0, 25.0)) == 0
    assert pose_frame_size(1920, 1080) == (480, 270) and pose_frame_size(320, 240) == (320, 240)


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = build_pose_model({"hidden": [8]})
    model.set_normalisation(np.random.default_rng(0).normal(size=(50, NUM_FEATURES)))
    path = save_pose_checkpoint(tmp_path / "m.pt", model, note="x")
    assert is_pose_checkpoint(path)
    loaded, meta = load_pose_checkpoint(path)
    x = np.random.default_rng(1).normal(size=(4, NUM_FEATURES)).astype(np.float32)
    assert np.allclose(loaded.predict(x), model.predict(x)) and meta["note"] == "x"
    # a video checkpoint, garbage, a missing file, features of another version: one message each
    video = ROOT / "detector" / "weights" / "real-cpu-v2.pt"
    assert not is_pose_checkpoint(video)
    with pytest.raises(CheckpointError, match="not a pose collapse checkpoint"):
        load_pose_checkpoint(video)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.pt: cannot be read"):
        load_pose_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="file not found"):
        load_pose_checkpoint(tmp_path / "missing.pt")
    obj = torch.load(path, weights_only=True)
    obj["config"]["features"] = obj["config"]["features"][:-1]
    torch.save(obj, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="other features"):
        load_pose_checkpoint(tmp_path / "old.pt")


def test_the_shipped_model_is_found_by_its_alias():
    path = resolve_pose_path("vigil")
    assert path.name == "pose-collapse-v1.pt" and is_pose_checkpoint(path)
    model, meta = load_pose_checkpoint("vigil")
    assert model.cfg.label == "collapse" and model.cfg.hidden == []
    assert meta["train_videos"] == 291


# ------------------------------------------------------------------ the recipe end to end
def vigil(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def photo_data(tmp_path_factory):
    """12 clips of a photographed person (6 falls, 6 standing), 320x240 at 15 fps, 3.6 s."""
    out = tmp_path_factory.mktemp("photo")
    done = vigil("synth", "--style", "photo", "--out", str(out / "data"), "--videos", "12",
                 "--seed", "5", "--frames", "54", "--fps", "15", "--no-vary", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return out


def test_pose_recipe_trains_evaluates_and_cross_validates(photo_data):
    data, cache = photo_data / "data", photo_data / "cache"
    common = ["--config", "configs/train/pose-collapse.yaml", "--set",
              f"data.cache_dir={cache}"]
    done = vigil("train", *common, "--data", str(data), "--out", str(photo_data / "run"),
                 "--set", "data.val_fraction=0.34", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "pose collapse model" in done.stdout and (photo_data / "run" / "best.pt").is_file()
    assert is_pose_checkpoint(photo_data / "run" / "last.pt")
    done = vigil("eval", "--checkpoint", str(photo_data / "run" / "best.pt"), "--data",
                 str(data), "--split", "all", "--out", str(photo_data / "eval"), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in
            (photo_data / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    right = sum(r["true"] == r["pred"] for r in rows)
    assert right >= 10, rows                     # it learned falls from standing
    done = vigil("cv", *common, "--data", str(data), "--out", str(photo_data / "cv"),
                 "--folds", "2", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "out-of-fold" in done.stdout and (photo_data / "cv" / "cv.json").is_file()
    # the daemon's smoothing out of fold: the alert-check reads the fold models
    check = subprocess.run(
        [sys.executable, "scripts/alert-check.py", "--folds", str(photo_data / "cv"),
         "--data", str(data)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stderr
    assert "| all | 6 |" in check.stdout             # six quiet clips (and six falls) scored


def test_a_pose_recipe_refuses_a_dataset_without_falls(tmp_path):
    done = vigil("synth", "--out", str(tmp_path / "d"), "--videos", "3", "--frames", "8",
                 "--width", "64", "--height", "48", cwd=ROOT)
    assert done.returncode == 0
    for label in (tmp_path / "d" / "labels").glob("*.txt"):
        label.write_text("")                        # every clip: none
    done = vigil("train", "--config", "configs/train/pose-collapse.yaml", "--data",
                 str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--set",
                 f"data.cache_dir={tmp_path / 'cache'}", cwd=ROOT)
    assert done.returncode == 2
    assert "labelled collapse" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_key_of_a_pose_recipe_is_named(tmp_path):
    done = vigil("train", "--config", "configs/train/pose-collapse.yaml", "--data",
                 str(tmp_path), "--out", str(tmp_path / "run"), "--set", "optim.l3=1", cwd=ROOT)
    assert done.returncode == 2 and "optim.l3: unknown key" in done.stderr


def test_vigil_detect_with_the_alias_runs_what_the_daemon_serves(tmp_path):
    """`--checkpoint vigil`: collapse from the pose path (a photographed person falling), the
    video detector for the rest; `--pose none` leaves the pose path out."""
    from train.synth import write_video
    from train.synth_photo import PhotoScene

    video = tmp_path / "fall.mp4"
    write_video(video, PhotoScene("collapse", 21, 320, 240, fps=15, frames=96))
    done = vigil("detect", str(video), "--checkpoint", "vigil", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["class"] == "collapse" and row["score"] >= 0.5
    x1, y1, x2, y2 = row["box"]                        # the person, lying, in pixels
    assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240 and (x2 - x1) > (y2 - y1)
    done = vigil("detect", str(video), "--checkpoint", "vigil", "--pose", "none",
                 "--windows", "1", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert len(rows) >= 4 and all("start_s" in r for r in rows)


def test_the_pose_path_samples_whole_frames_of_the_camera():
    """At most POSE_FPS frames a second, each a real frame of the camera: the rate a camera
    gives is its fps over a whole number (what `vigil bench pipeline` holds it to)."""
    from streamer.pose.worker import sampled_fps

    assert sampled_fps(8) == 8 and sampled_fps(15) == 7.5 and sampled_fps(25) == 25 / 3
    assert sampled_fps(30) == 7.5 and sampled_fps(5) == 5 and sampled_fps(0) == 0.0

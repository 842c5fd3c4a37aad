"""`vigil calibrate`: a camera's thresholds from its own quiet footage, replayed through the
daemon's smoothing (`streamer.tuning`), and what it refuses."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from streamer.config import SmoothingConfig, parse_config
from streamer.tuning import calibrate as C
from streamer.tuning.offline import ClipScores, class_outcome, clip_starts
from streamer.types import ClassScore, WindowResult
from vigil_tools.harness import REPO, base_config, tiny_checkpoint

STEP_S = 0.32           # stride 8 at 25 fps
BOX = (0.1, 0.1, 0.5, 0.9)


def windows(fight: list[float], collapse: list[float] | None = None) -> list[WindowResult]:
    """Window results every STEP_S seconds with these class scores."""
    collapse = collapse or [0.01] * len(fight)
    return [WindowResult("clip", {"fight": ClassScore("fight", f, BOX),
                                  "collapse": ClassScore("collapse", c, BOX)},
                         (640, 480), i * STEP_S, i * STEP_S + 2, (i + 1) * STEP_S, i)
            for i, (f, c) in enumerate(zip(fight, collapse))]


def quiet(stem: str, fight: list[float], minutes: float = 10.0) -> ClipScores:
    return ClipScores(stem, "lobby", None, 0.0, minutes, windows(fight))


def bursts(peak: float, n: int = 6, length: int = 3, gap: int = 30) -> list[float]:
    """`n` bursts of `length` windows at `peak` in quiet footage scoring 0.05."""
    return ([0.05] * gap + [peak] * length) * n + [0.05] * gap


def test_a_rate_needs_footage_long_enough_to_show_it():
    assert C.required_minutes(1.0) == 180.0            # 3 / rate hours: the rule of three
    assert C.required_minutes(6.0) == 30.0
    assert C.least_target(30.0) == 6.0


def test_thresholds_rise_just_above_what_the_quiet_footage_scores():
    base = SmoothingConfig()                            # EMA 0.5, on 0.6, two windows
    clips = [quiet("a", bursts(0.85))]
    assert class_outcome(clips, base, ["fight", "collapse"], "fight").per_hour > 6
    cal = C.calibrate_class(clips, base, ["fight", "collapse"], "fight", target_per_hour=6.0)
    assert cal.changed and cal.after.min_windows == 2
    assert cal.outcome_after.per_hour <= 6.0
    # the loosest such threshold: one step lower still starts on the bursts
    lower = C.class_setting(base, "fight", round(cal.after.on_threshold - C.STEP, 4), 2)
    assert class_outcome(clips, lower, ["fight", "collapse"], "fight").per_hour > 6.0
    assert cal.after.off_threshold == pytest.approx(cal.after.on_threshold - 0.2)


def test_a_class_already_under_the_target_is_kept():
    clips = [quiet("a", [0.05] * 200)]
    cal = C.calibrate_class(clips, SmoothingConfig(), ["fight", "collapse"], "fight", 1.0)
    assert cal.after == cal.before and not cal.changed


def test_labelled_actions_choose_the_setting_that_still_finds_them():
    base = SmoothingConfig()
    fights = [ClipScores(f"fight{i}", "lobby", "fight", 0.0, 0.2,
                         windows([0.05, 0.97, 0.97, 0.97, 0.97, 0.97, 0.97])) for i in range(3)]
    clips = [quiet("a", bursts(0.8, length=4))] + fights
    cal = C.calibrate_class(clips, base, ["fight", "collapse"], "fight", target_per_hour=6.0)
    assert cal.outcome_after.per_hour <= 6.0
    assert cal.outcome_after.found(3.0) == 3
    assert C.class_outcome(clips, cal.after, ["fight", "collapse"], "fight").found() == 3


def test_footage_the_model_cannot_be_calibrated_on_is_reported_not_forced():
    clips = [quiet("a", ([0.05] * 10 + [0.99] * 8) * 30)]     # 2.5 s bursts, near-certain
    cal = C.calibrate_class(clips, SmoothingConfig(), ["fight", "collapse"], "fight", 1.0)
    assert cal.after is None


def test_a_long_confident_stretch_is_a_suspected_event():
    scores = [0.05] * 20 + [0.95] * 12 + [0.05] * 20          # 12 windows = 3.5 s
    short = [0.05] * 20 + [0.95] * 5 + [0.05] * 20            # 1.3 s: a false alarm's length
    sus = C.find_suspects([quiet("a", scores), quiet("b", short)], ["fight", "collapse"])
    assert [(s.stem, s.label) for s in sus] == [("a", "fight")]
    assert sus[0].start_s == pytest.approx(21 * STEP_S) and sus[0].peak == 0.95
    assert "fight scored >= 0.9 for 3.5 s" in str(sus[0])


def test_the_override_is_the_per_camera_smoothing_key_the_daemon_validates():
    clips = [quiet("a", bursts(0.85))]
    cals = [C.calibrate_class(clips, SmoothingConfig(), ["fight", "collapse"], label, 6.0)
            for label in ("fight", "collapse")]
    text = C.override_yaml("lobby", cals, "made by a test")
    assert text.startswith("# made by a test\n")
    data = yaml.safe_load(text)
    entry = data["cameras"][0]
    assert entry["name"] == "lobby" and list(entry["smoothing"]["classes"]) == ["fight"]
    override = SmoothingConfig(classes=entry["smoothing"]["classes"])
    override.validate("cameras[0].smoothing")
    applied = C.apply_calibrations(SmoothingConfig(), cals)
    starts = clip_starts(clips[0].results, applied, ["fight", "collapse"])
    assert 60 * len(starts) / clips[0].minutes <= 6.0


# ----------------------------------------------------------------- the verb, end to end
def video(path: Path, frames: int = 40, fps: float = 15.0) -> Path:
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


@pytest.fixture
def setup(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = base_config(tmp_path / "data", ckpt, {"lobby": "rtsp://viewer:${CAM_PASS}@cam/1"},
                      always_on=False)
    cfg["smoothing"] = {"on_threshold": 0.02, "off_threshold": 0.01, "min_windows": 1}
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump(cfg))
    footage = tmp_path / "quiet"
    footage.mkdir()
    for i in range(12):                     # 12 x 8 s: 1.6 minutes
        video(footage / f"q{i}.mp4", frames=120)
    return config, footage


def calibrate(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", "calibrate", "--config",
                           str(config), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def test_the_verb_writes_the_camera_override_from_its_footage(setup, tmp_path):
    config, footage = setup
    out = tmp_path / "lobby.yaml"
    # 1.6 minutes of footage: a target the rule of three allows for that (>= 112.5 per hour).
    # At threshold 0.02 each file starts an event of each class at once: 450 per hour.
    proc = calibrate(config, "--camera", "lobby", "--footage", str(footage),
                     "--target-per-hour", "150", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1.6 minutes of quiet footage" in proc.stdout
    assert "| fight | 0.02, 1 | 450.0 |" in proc.stdout
    data = yaml.safe_load(out.read_text())
    classes = data["cameras"][0]["smoothing"]["classes"]
    # Threshold 0.02 on a random model starts everywhere: both classes are raised.
    assert set(classes) == {"fight", "collapse"}
    assert all(c["on_threshold"] > 0.02 for c in classes.values())
    merged = yaml.safe_load(config.read_text())
    merged["smoothing"]["classes"] = classes             # what the daemon would then run
    parse_config(merged, environ={"CAM_PASS": "x"}, check_paths=False)


def test_too_little_footage_says_how_much_is_needed(setup):
    config, footage = setup
    proc = calibrate(config, "--camera", "lobby", "--footage", str(footage))
    assert proc.returncode == 2
    assert "1.6 minutes of footage cannot show at most 1 false starts per hour" in proc.stderr
    assert "that needs 180 minutes" in proc.stderr and "at least 112.5" in proc.stderr


def test_footage_that_cannot_be_opened_is_named(setup, tmp_path):
    config, footage = setup
    broken = footage / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    proc = calibrate(config, "--camera", "lobby", "--footage", str(footage),
                     "--target-per-hour", "150")
    assert proc.returncode == 2
    assert "broken.mp4" in proc.stderr
    missing = calibrate(config, "--camera", "lobby", "--footage", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_an_unknown_camera_lists_the_configured_ones(setup):
    config, footage = setup
    proc = calibrate(config, "--camera", "hall", "--footage", str(footage))
    assert proc.returncode == 2 and "no camera 'hall' (cameras: lobby)" in proc.stderr


def test_footage_the_model_calls_a_fight_throughout_is_not_calibrated_away(setup, tmp_path):
    """Quiet footage is supposed to hold no event; where the model is sure of one for seconds,
    the user is told where, and nothing is written."""
    import torch

    from detector.checkpoint import load_checkpoint, save_checkpoint

    config, footage = setup
    model, mcfg, _ = load_checkpoint(yaml.safe_load(config.read_text())["model"]["checkpoint"])
    with torch.no_grad():
        model.class_head[-1].bias[0] = 30.0                # fight, whatever the frames show
    sure = save_checkpoint(tmp_path / "sure.pt", model, mcfg)
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["checkpoint"] = str(sure)
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "lobby.yaml"
    proc = calibrate(config, "--camera", "lobby", "--footage", str(footage),
                     "--target-per-hour", "150", "--out", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "like a real event" in proc.stdout
    # stride 4 at 15 fps: windows end at 0.93 s, 1.2 s, ... 7.87 s
    assert "q0.mp4 0:00.9-0:07.9: fight scored >= 0.9 for 6.9 s" in proc.stdout
    assert "Nothing was written" in proc.stdout and not out.exists()


def test_a_camera_that_watches_collapse_is_calibrated_on_the_pose_path(tmp_path):
    """As the daemon does: a collapse-only camera never runs the video detector, and its
    collapse scores come from BlazePose and the pose collapse model."""
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = base_config(tmp_path / "data", ckpt, {"ward": "/dev/null"}, pose=True)
    cfg["cameras"][0]["events"] = ["collapse"]
    cfg["smoothing"] = {"on_threshold": 0.02, "off_threshold": 0.01, "min_windows": 1}
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump(cfg))
    footage = tmp_path / "quiet"
    footage.mkdir()
    for i in range(4):                      # 4 x 8 s: 0.53 minutes
        video(footage / f"q{i}.mp4", frames=120)
    proc = calibrate(config, "--camera", "ward", "--footage", str(footage),
                     "--target-per-hour", "400")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # pose windows every 0.5 s (model.pose.stride_s), not the video detector's every 4 frames
    assert "4/4 q3.mp4: 0.1 min, 13 windows" in proc.stderr
    # nobody in view: the pose path raises nothing even at 0.02, so the setting is kept
    assert "| collapse | 0.02, 1 | 0.0 | 0.02, 1 (kept) | 0.0 |" in proc.stdout
    assert "| fight |" not in proc.stdout                 # the camera does not watch fights


# ----------------------------------------------------------------- --record MINUTES
def test_record_takes_the_minutes_from_the_camera_itself(tmp_path):
    """`--record` opens the camera as the daemon does, writes the minutes under
    data_dir/calibration/<camera>/, and calibrates on them."""
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = base_config(tmp_path / "data", ckpt,
                      {"hall": "synth://none?width=96&height=64&fps=15&frames=45&seed=3"},
                      always_on=False)
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = calibrate(config, "--camera", "hall", "--record", "0.25",
                     "--target-per-hour", "1000", "--classes", "fight")
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    files = list((tmp_path / "data" / "calibration" / "hall").glob("*.mp4"))
    assert len(files) == 1
    cap = cv2.VideoCapture(str(files[0]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 225          # 0.25 min at 15 fps
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) \
        == (96, 64)
    cap.release()
    assert "0.2 minutes of quiet footage" in proc.stdout


def test_record_refuses_too_few_minutes_before_opening_the_camera(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = base_config(tmp_path / "data", ckpt, {"gate": "rtsp://viewer:hunter22@192.0.2.1/s"},
                      always_on=False)
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = calibrate(config, "--camera", "gate", "--record", "30")
    assert proc.returncode == 2
    assert "that needs 180 minutes" in proc.stderr and "record longer" in proc.stderr
    assert not (tmp_path / "data" / "calibration").exists()


def test_a_file_camera_is_recorded_to_its_end_not_looped(tmp_path):
    from streamer.tuning.record import record_camera

    src = video(tmp_path / "short.mp4", frames=30, fps=15.0)       # 2 s
    rec = record_camera(str(src), tmp_path / "out.mp4", minutes=1.0)
    assert rec.frames == 30 and rec.seconds == pytest.approx(2.0) and rec.fps == 15.0


def test_a_stalled_live_camera_is_reopened_then_given_up(tmp_path, monkeypatch):
    """A live camera that stops sending is reopened a bounded number of times; the recording
    then ends with what it has, on a fake clock (no real waiting for the stall)."""
    from streamer.tuning import record as R

    now = [0.0]
    opened = []

    class Stalls:
        fps = 10.0

        def __init__(self):
            self.left = 5 if not opened else 0      # the first connection gives 5 frames
            opened.append(self)

        def read(self):
            now[0] += 1.0                              # each read costs a second
            if self.left:
                self.left -= 1
                return True, np.zeros((48, 64, 3), np.uint8)
            return False, None

        def release(self):
            pass

    monkeypatch.setattr(R, "open_source", lambda *a, **k: Stalls())
    monkeypatch.setattr(R.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    rec = R.record_camera("rtsp://viewer:pw@192.0.2.1/s", tmp_path / "o.mp4", minutes=60.0,
                          clock=lambda: now[0])
    assert rec.frames == 5 and rec.reopens == R.RECORD_MAX_REOPENS
    assert len(opened) == 1 + R.RECORD_MAX_REOPENS

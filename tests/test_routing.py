"""Per-camera choice of events (issue 24): which path scores which class for which camera, the
`events` key validated at load, a camera watching what no model detects refused at
`vigil serve --check` and at start, and in a running daemon a collapse-only camera that never
runs the video detector and a fight-only one that never runs BlazePose."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from detector.errors import ConfigError
from streamer.config import parse_config
from streamer.routing import EventRouting
from streamer.types import ClassScore, WindowResult

ROOT = Path(__file__).resolve().parents[1]
BOX = (0.1, 0.1, 0.5, 0.5)


def result(*labels: str) -> WindowResult:
    return WindowResult("cam", {k: ClassScore(k, 0.9, BOX) for k in labels}, (640, 480),
                        0.0, 2.0, 2.0, 30)


# ------------------------------------------------------------------ the routing rule
def test_the_pose_path_owns_its_class_and_each_camera_watches_its_events():
    both = EventRouting(("fight", "collapse"), "collapse")
    assert both.classes == ["fight", "collapse"]
    assert both.watched(None) == ["fight", "collapse"]
    assert both.video_classes(None) == {"fight"}          # collapse is the pose path's
    assert both.needs_video(["fight"]) and not both.needs_pose(["fight"])
    assert both.needs_pose(["collapse"]) and not both.needs_video(["collapse"])
    assert both.video_result(result("fight", "collapse"), None).scores.keys() == {"fight"}
    assert both.video_result(result("fight", "collapse"), ["collapse"]) is None

    video_only = EventRouting(("fight", "collapse"), None)
    assert video_only.video_classes(None) == {"fight", "collapse"}
    assert not video_only.needs_pose(None)
    r = result("fight", "collapse")
    assert video_only.video_result(r, None) is r             # nothing to take out: as it was

    pose_adds = EventRouting(("fight",), "collapse")           # a fight-only video model
    assert pose_adds.classes == ["fight", "collapse"]


class _Cam:
    def __init__(self, name, events):
        self.name = name
        self.settings = type("S", (), {"events": events})()


def test_a_camera_watching_what_no_model_detects_is_refused_with_its_key():
    routing = EventRouting(("fight",), None)
    routing.check([_Cam("street", ["fight"]), _Cam("gate", None)])
    with pytest.raises(ConfigError, match=r"cameras\[1\]\.events: care-room watches 'collapse'"
                                          r".*model.pose is off"):
        routing.check([_Cam("street", ["fight"]), _Cam("care-room", ["collapse"])])
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.events: .*'smoke'"):
        EventRouting(("fight", "collapse"), "collapse").check([_Cam("x", ["smoke"])])


# ------------------------------------------------------------------ the config key
def config(events=None, defaults_events=None, pose=True) -> dict:
    cam = {"name": "cam", "url": "synth://collapse"}
    if events is not None:
        cam["events"] = events
    data = {"data_dir": "/tmp/vigil-routing", "model": {"checkpoint": "vigil"},
            "cameras": [cam, {"name": "other", "url": "synth://none"}]}
    if defaults_events is not None:
        data["defaults"] = {"events": defaults_events}
    if not pose:
        data["model"]["pose"] = None
    return data


def test_events_per_camera_over_the_defaults():
    cfg = parse_config(config(events=["collapse"], defaults_events=["fight"]),
                       check_paths=False)
    assert cfg.cameras[0].settings.events == ["collapse"]
    assert cfg.cameras[1].settings.events == ["fight"]
    assert parse_config(config(), check_paths=False).cameras[0].settings.events is None
    assert parse_config(config(pose=False), check_paths=False).model.pose is None


@pytest.mark.parametrize("events, problem", [
    ([], "at least one event class"), (["Fight"], "invalid event class"),
    (["fight", "fight"], "listed twice"), ("fight", "expected a list")])
def test_bad_events_are_refused_naming_the_key(events, problem):
    with pytest.raises(ConfigError, match=rf"cameras\[0\]\.events.*{problem}|{problem}"):
        parse_config(config(events=events), check_paths=False)


# ------------------------------------------------------------------ vigil serve --check
def check(tmp_path: Path, data: dict) -> subprocess.CompletedProcess:
    data = dict(data, data_dir=str(tmp_path / "data"))
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(data))
    return subprocess.run([sys.executable, "-m", "streamer.cli", "serve", "--config", str(path),
                           "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_serve_check_shows_each_cameras_paths(tmp_path):
    done = check(tmp_path, config(events=["collapse"]))
    assert done.returncode == 0, done.stderr
    assert "pose path:" in done.stdout and "pose-collapse-v1.pt" in done.stdout
    assert "watches collapse (pose)" in done.stdout
    assert "watches fight, collapse (video + pose)" in done.stdout


def test_serve_check_refuses_an_event_no_model_detects(tmp_path):
    done = check(tmp_path, config(events=["smoke"]))
    assert done.returncode == 2
    assert "cameras[0].events" in done.stderr and "'smoke'" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_check_names_a_missing_or_corrupt_pose_model(tmp_path):
    data = config()
    data["model"]["pose"] = {"checkpoint": str(tmp_path / "gone.pt")}
    done = check(tmp_path, data)
    assert done.returncode == 2 and "model.pose.checkpoint" in done.stderr
    assert "gone.pt" in done.stderr
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 100)
    data["model"]["pose"] = {"checkpoint": str(tmp_path / "bad.pt")}
    done = check(tmp_path, data)
    assert done.returncode == 2 and "bad.pt" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ a running daemon
@pytest.mark.integration
def test_each_camera_runs_only_the_paths_it_needs(tmp_path):
    from vigil_tools.harness import DaemonProcess, base_config, tiny_checkpoint, wait_until

    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = base_config(tmp_path / "data", ckpt, {
        "care-room": "synth://collapse?photo=1&width=320&height=240&fps=15&frames=90",
        "street": "synth://fight?width=160&height=120&fps=15&frames=60"}, always_on=False,
        pose=True)
    cfg["cameras"][0]["events"] = ["collapse"]
    cfg["cameras"][1]["events"] = ["fight"]
    daemon = DaemonProcess(tmp_path, cfg)
    try:
        daemon.start()
        daemon.wait_ready(timeout=120)
        def seen(name: str, camera: str) -> float:
            return daemon.value(daemon.metrics(), name, camera=camera) or 0.0

        assert wait_until(lambda: seen("vigil_pose_windows_total", "care-room") >= 4,
                          timeout=60)
        assert wait_until(lambda: seen("vigil_windows_total", "street") >= 4, timeout=60)
        time.sleep(1.0)
        assert seen("vigil_windows_total", "care-room") == 0        # no video model there
        assert seen("vigil_pose_frames_total", "street") == 0       # no BlazePose there
        assert seen("vigil_pose_person", "care-room") == 1          # the person is seen
    finally:
        code = daemon.stop()
        daemon.close()
    assert code == 0


def test_a_missing_blazepose_file_stops_check_and_start_with_one_line(tmp_path):
    """The BlazePose files ship with Vigil; a broken install is named, not a traceback."""
    data = config(events=["collapse"])
    data["data_dir"] = str(tmp_path / "data")
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(data))
    prelude = ("from pathlib import Path\nimport detector.pose.runner as r\n"
               f"r.BLAZEPOSE_DIR = Path({str(tmp_path / 'nowhere')!r})\n"
               "import detector.pose.blazepose as b\nb.BLAZEPOSE_DIR = r.BLAZEPOSE_DIR\n"
               "import sys\nfrom streamer.cli import main\nsys.exit(main(sys.argv[1:]))")
    for extra in (["--check"], []):
        done = subprocess.run([sys.executable, "-c", prelude, "serve", "--config", str(path),
                               *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if "pose_detection.tflite" in line]
        assert errors and "is missing" in errors[0], done.stderr
        assert "Traceback" not in done.stderr

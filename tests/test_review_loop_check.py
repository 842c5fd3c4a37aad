"""`scripts/review-loop-check.py`'s own arithmetic: which camera a clip belongs to, where each
clip sits in a camera's footage, when each camera's first frame came (from the daemon's JSON
log), and the verdict an operator would give an event. (The loop itself serves real footage
for minutes and is run by hand; its result is in docs/review.md.)"""
from __future__ import annotations

import importlib.util
import json
import sys
import time

import cv2
import numpy as np
import pytest

from vigil_tools.harness import REPO


@pytest.fixture(scope="module")
def loop():
    spec = importlib.util.spec_from_file_location("review_loop_check",
                                                  REPO / "scripts" / "review-loop-check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module         # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def write_clip(path, frames: int, fps: float = 10.0, size=(64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), i * 7 % 255, np.uint8))
    writer.release()


def test_cameras_are_told_apart_by_cam_n_in_the_name(loop):
    assert loop.camera_of("upfall_Activity1_Subject1_Trial1Cam2.mp4") == "cam2"
    assert loop.camera_of("fight_fi001.mp4") is None


def test_footage_is_the_clips_one_after_another_then_the_last_frame_held(loop, tmp_path):
    write_clip(tmp_path / "a.mp4", 20)
    write_clip(tmp_path / "b.mp4", 30)
    rows = [{"file": "a.mp4", "label": "none"}, {"file": "b.mp4", "label": "collapse"}]
    path, pieces = loop.build_footage(rows, tmp_path, tmp_path / "cam.mp4")
    assert [(p.file, p.label, p.t0, p.t1) for p in pieces] == [
        ("a.mp4", "none", 0.0, 2.0), ("b.mp4", "collapse", 2.0, 5.0)]
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 50 + int(loop.PAD_S * 10)
    cap.release()


def test_an_events_verdict_is_the_label_of_the_clip_playing_at_its_window(loop):
    pieces = [loop.Piece("adl.mp4", "none", 0.0, 10.0), loop.Piece("fall.mp4", "collapse", 10.0,
                                                                     20.0)]
    first = 1_000_000.0

    def iso(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first + t)) + "Z"

    def alert(label: str, start: float, end: float) -> dict:
        return {"label": label, "window": {"start": iso(start), "end": iso(end)}}

    assert loop.verdict(alert("collapse", 12, 14), first, pieces) == ("real", "fall.mp4")
    assert loop.verdict(alert("fight", 12, 14), first, pieces) == ("false_alarm", "fall.mp4")
    assert loop.verdict(alert("collapse", 3, 5), first, pieces) == ("false_alarm", "adl.mp4")
    assert loop.verdict(alert("collapse", 30, 32), first, pieces) == ("false_alarm", "(padding)")


def test_each_cameras_first_frame_time_comes_from_the_json_log(loop):
    lines = [json.dumps({"time": "2026-12-07T03:49:41.070Z", "message": "camera cam1: "
                         "receiving frames (640x480)"}),
             "not json",
             json.dumps({"time": "2026-12-07T03:49:45.000Z", "message": "camera cam1: "
                         "receiving frames (640x480)"}),
             json.dumps({"time": "2026-12-07T03:49:42.500Z", "message": "camera cam2: "
                         "receiving frames (640x480)"})]
    times = loop.first_frame_times("\n".join(lines))
    assert set(times) == {"cam1", "cam2"}
    assert times["cam2"] - times["cam1"] == pytest.approx(1.43, abs=1e-3)

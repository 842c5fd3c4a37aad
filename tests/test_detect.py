"""Offline detection: `vigil detect` rows, sliding windows, sequential reading, rendering."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from train import detect as D
from streamer.cli import main as vigil
from train.video_io import read_frames, sample_indices

from ._training import tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two small videos of different lengths and an (untrained) tiny checkpoint."""
    import dataclasses

    from detector.checkpoint import save_checkpoint
    from detector.model import build_model
    from train.synth import Scene, write_video

    root = tmp_path_factory.mktemp("detect")
    (root / "videos").mkdir()
    write_video(root / "videos" / "a.mp4", Scene("fight", 1, 64, 48, 10, 20))
    write_video(root / "videos" / "b.mp4", Scene("none", 2, 80, 48, 10, 45))
    cfg = tiny_config().model
    cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, clip_seconds=1.0))
    ckpt = save_checkpoint(root / "tiny.pt", build_model(cfg), cfg)
    return root, ckpt


def test_detect_writes_one_json_row_per_video(setup, tmp_path):
    root, ckpt = setup
    out = tmp_path / "rows.jsonl"
    code = vigil(["detect", str(root / "videos"), "--checkpoint", str(ckpt),
                           "--out", str(out), "--threshold", "0.0", "--workers", "1"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["video"]).name for r in rows) == ["a.mp4", "b.mp4"]
    for r in rows:
        # Threshold 0: every clip has a detection, its box in the video's own pixels.
        assert r["class"] in ("fight", "collapse") and 0.0 <= r["score"] <= 1.0
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"]


def test_detect_writes_csv_with_pixel_box_columns(setup, tmp_path):
    root, ckpt = setup
    out = tmp_path / "rows.csv"
    code = vigil(["detect", str(root / "videos" / "a.mp4"),
                           str(root / "videos" / "b.mp4"), "--checkpoint", str(ckpt),
                           "--csv", str(out), "--threshold", "1.01", "--batch", "1"])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2
    assert {"video", "class", "score", "x1", "y1", "x2", "y2"} <= set(rows[0])
    assert all(r["class"] == "none" and r["x1"] == "" for r in rows)   # nothing reaches 1.01


def test_windows_mode_gives_rows_with_time_spans(setup, tmp_path):
    root, ckpt = setup
    out = tmp_path / "w.jsonl"
    code = vigil(["detect", str(root / "videos" / "b.mp4"), "--checkpoint", str(ckpt),
                           "--windows", "1.0", "--out", str(out), "--threshold", "0.0",
                           "--render", str(tmp_path / "render")])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # 45 frames at 10 fps = 4.5 s; 1 s windows every 1 s: starts 0, 1, 2, 3.
    assert [(r["start_s"], r["end_s"]) for r in rows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0),
                                                          (3.0, 4.0)]
    rendered = tmp_path / "render" / "b.mp4"
    cap = cv2.VideoCapture(str(rendered))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 45
    cap.release()


def test_plan_windows_covers_the_video_and_short_videos_get_one_window():
    wins = D.plan_windows(frames=100, fps=10, T=4, stride_s=2.0, window_s=3.0)
    assert [(w.start_s, w.end_s) for w in wins] == [(0.0, 3.0), (2.0, 5.0), (4.0, 7.0),
                                                    (6.0, 9.0)]
    assert wins[1].indices.tolist() == (20 + sample_indices(30, 4)).tolist()
    one = D.plan_windows(frames=20, fps=10, T=4, stride_s=1.0, window_s=5.0)
    assert len(one) == 1 and one[0].indices.tolist() == sample_indices(20, 4).tolist()


def test_streamed_windows_equal_frames_read_directly(setup):
    root, _ = setup
    video = root / "videos" / "b.mp4"
    wins = D.plan_windows(frames=45, fps=10, T=5, stride_s=0.7, window_s=1.5)
    got = dict(D.stream_windows(video, wins, (24, 32)))
    assert sorted(got) == list(range(len(wins)))
    for n, w in enumerate(wins):
        np.testing.assert_array_equal(got[n], read_frames(video, w.indices, (24, 32)))


def test_an_unreadable_video_gets_an_error_row_and_exit_status_1(setup, tmp_path):
    root, ckpt = setup
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    out = tmp_path / "rows.jsonl"
    code = vigil(["detect", str(bad), str(root / "videos" / "a.mp4"),
                           "--checkpoint", str(ckpt), "--out", str(out)])
    assert code == 1
    rows = {Path(r["video"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert "broken.mp4" in rows["broken.mp4"]["error"] and "class" in rows["a.mp4"]

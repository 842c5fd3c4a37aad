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


# --------------------------------------------------------------------------- known labels
FALL = D.VideoTruth(Path("fall.mp4"), "collapse", (D.Segment("collapse", 1.2, 2.6),))


def test_a_window_is_its_segments_class_when_its_centre_is_inside_none_when_outside():
    # Windows of 1 s every 0.5 s against a fall from 1.2 s to 2.6 s.
    spans = [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5), (2.0, 3.0), (2.5, 3.5), (3.0, 4.0)]
    assert [D.window_truth(a, b, FALL) for a, b in spans] == [
        "none",        # ends before the fall starts
        "ambiguous",   # overlaps it, centre 1.0 before it
        "collapse", "collapse", "collapse",   # centres 1.5, 2.0, 2.5
        "ambiguous",   # centre 3.0 after it, overlaps 2.5-2.6
        "none"]


def test_a_segment_of_unknown_times_covers_the_clip_and_a_none_video_is_none_throughout():
    whole = D.VideoTruth(Path("f.mp4"), "fight", (D.Segment("fight"),))
    nothing = D.VideoTruth(Path("n.mp4"), "none")
    assert D.window_truth(7.0, 8.0, whole) == "fight"
    assert D.window_truth(0.0, 1.0, nothing) == "none"


def test_a_clip_row_takes_the_video_class_and_an_ambiguous_window_is_neither_right_nor_wrong():
    clip = D.label_row({"video": "fall.mp4", "class": "collapse"}, FALL)
    assert (clip["true"], clip["correct"]) == ("collapse", True)
    win = D.label_row({"video": "fall.mp4", "class": "none", "start_s": 0.5, "end_s": 1.5}, FALL)
    assert (win["true"], win["correct"]) == ("ambiguous", None)


def test_the_video_summary_counts_windows_and_the_latency_from_the_fall_start():
    # Predicted: a false alarm before the fall, a miss, then collapse from 1.5 s to 3.5 s.
    predicted = ["fight", "none", "none", "collapse", "collapse", "collapse", "none"]
    spans = [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5), (2.0, 3.0), (2.5, 3.5), (3.0, 4.0)]
    rows = [D.label_row({"video": "fall.mp4", "class": c, "start_s": a, "end_s": b}, FALL)
            for c, (a, b) in zip(predicted, spans)]
    s = D.summarise_video(rows, FALL)
    # Scored windows (true / predicted): none/fight, collapse/none, collapse/collapse x2,
    # none/none; two ambiguous ones left out.
    assert {k: s[k] for k in ("windows", "positive", "ambiguous", "tp", "fp", "fn")} == {
        "windows": 7, "positive": 3, "ambiguous": 2, "tp": 2, "fp": 1, "fn": 1}
    # The first collapse window ends at 2.5 s, the fall starts at 1.2 s.
    assert s["latency_s"] == 1.3
    never = D.summarise_video([dict(r, **{"class": "none"}) for r in rows], FALL)
    assert never["latency_s"] is None and not never["detected"] and never["fn"] == 3
    total = D.total_summary([s, never])
    assert (total["detected_videos"], total["action_videos"], total["median_latency_s"]) == (
        1, 2, 1.3)
    text = D.format_summary([s, never])
    assert "1.30" in text and "action videos detected: 1/2" in text


def test_a_whole_clip_action_counts_as_detected_but_has_no_latency():
    whole = D.VideoTruth(Path("f.mp4"), "fight", (D.Segment("fight"),))
    rows = [D.label_row({"video": "f.mp4", "class": c, "start_s": a, "end_s": a + 1.0}, whole)
            for c, a in (("none", 0.0), ("fight", 1.0))]
    s = D.summarise_video(rows, whole)
    # "2.0 s after the start" would only restate where the window ends.
    assert s["detected"] and s["latency_s"] is None and (s["tp"], s["fn"]) == (1, 1)


def test_videos_are_matched_to_labels_by_file_then_by_unique_stem(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "sub" / "b.mp4"
    truths = [D.VideoTruth(a, "fight"), D.VideoTruth(Path("/elsewhere/b.mp4"), "none")]
    got = D.match_truths([a, b, tmp_path / "c.mp4"], truths)
    assert got == {str(a): truths[0], str(b): truths[1]}


def test_truth_from_a_record_names_classes_and_reads_segments():
    from types import SimpleNamespace

    rec = SimpleNamespace(video=Path("v.mp4"),
                          annotations=np.array([[1, np.nan, np.nan, np.nan, np.nan]], np.float32),
                          segments=np.array([[3.4, 11.0]], np.float32))
    t = D.truth_from_record(rec, ("fight", "collapse"))
    assert t.label == "collapse" and t.segments[0].label == "collapse"
    assert t.segments[0].span == pytest.approx((3.4, 11.0))
    none = SimpleNamespace(video=Path("n.mp4"), annotations=np.zeros((0, 5), np.float32),
                           segments=np.zeros((0, 2), np.float32))
    assert D.truth_from_record(none, ("fight", "collapse")).label == "none"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A labels.csv folder of three 4.5 s videos (a fall from 1.2 s to 2.6 s, a whole-clip fight,
    a walk) and a checkpoint that calls every clip a collapse (class bias +8)."""
    import dataclasses

    import torch

    from detector.checkpoint import save_checkpoint
    from detector.model import build_model
    from train.synth import Scene, write_video

    root = tmp_path_factory.mktemp("labelled")
    (root / "clips").mkdir()
    for name, kind in (("fall", "collapse"), ("brawl", "fight"), ("walk", "none")):
        write_video(root / "clips" / f"{name}.mp4", Scene(kind, 3, 64, 48, 10, 45))
    (root / "labels.csv").write_text("file,label,start_s,end_s,group\n"
                                     "clips/fall.mp4,collapse,1.2,2.6,fall\n"
                                     "clips/brawl.mp4,fight,,,brawl\n"
                                     "clips/walk.mp4,none,,,walk\n")
    cfg = tiny_config().model
    cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, clip_seconds=1.0))
    model = build_model(cfg)
    with torch.no_grad():
        head = model.class_head[-1]
        head.weight.zero_()
        head.bias.copy_(torch.tensor([-8.0, 8.0, 0.0]))
    return root, save_checkpoint(root / "collapse.pt", model, cfg)


def test_detect_with_labels_marks_windows_and_summarises_each_video(labelled, tmp_path, capsys):
    root, ckpt = labelled
    out, summary = tmp_path / "w.jsonl", tmp_path / "summary.json"
    code = vigil(["detect", str(root / "clips"), "--checkpoint", str(ckpt), "--windows", "0.5",
                  "--window-seconds", "1.0", "--labels", str(root / "labels.csv"),
                  "--out", str(out), "--summary", str(summary), "--workers", "0"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    fall = [r for r in rows if r["video"].endswith("fall.mp4")]
    # 1 s windows every 0.5 s: centres 0.5, 1.0, ..., 4.0 against the fall at 1.2-2.6 s.
    assert [r["true"] for r in fall] == ["none", "ambiguous", "collapse", "collapse", "collapse",
                                         "ambiguous", "none", "none"]
    assert [r["correct"] for r in fall] == [False, None, True, True, True, None, False, False]
    got = {Path(v["video"]).stem: v for v in json.loads(summary.read_text())["videos"]}
    counts = {stem: (v["windows"], v["tp"], v["fp"], v["fn"], v["detected"], v["latency_s"])
              for stem, v in got.items()}
    # The fall: first collapse window ending after 1.2 s is 0.5-1.5 s -> 0.3 s latency.
    assert counts == {"fall": (8, 3, 3, 0, True, 0.3),
                      "brawl": (8, 0, 8, 8, False, None),  # every window the wrong class
                      "walk": (8, 0, 8, 0, None, None)}
    total = json.loads(summary.read_text())["total"]
    assert (total["tp"], total["fp"], total["fn"], total["detected_videos"],
            total["none_videos_with_alarm"]) == (3, 19, 8, 1, 1)
    err = capsys.readouterr().err
    assert "latency s" in err and "action videos detected: 1/2" in err


def test_detect_summary_without_labels_is_refused(labelled, capsys):
    root, ckpt = labelled
    assert vigil(["detect", str(root / "clips"), "--checkpoint", str(ckpt),
                  "--summary", "x.json"]) == 2
    assert "--summary needs --labels" in capsys.readouterr().err


# --------------------------------------------------------------------------- reference CSV
def test_reference_csv_round_trips_through_the_authors_column_layout():
    """test.py's layout: video_name, then pred_class_i,x1_i,y1_i,x2_i,y2_i per query over the
    threshold (normalised xyxy), no_object when none; read back with those column names."""
    rows = [
        {"video": "/data/videos/fight_01.mp4", "queries": [
            {"query": 3, "class": "fight", "score": 0.91,
             "box": [0.125, 0.2000000029802322, 0.625, 0.9]},
            {"query": 7, "class": "collapse", "score": 0.31, "box": [0.0, 0.1, 1.0, 0.75]}]},
        {"video": "clips/none_02.avi", "queries": []},
        {"video": "bad.mp4", "error": "cannot open"},
        {"video": "collapse_03.mp4", "queries": [
            {"query": 0, "class": "collapse", "score": 0.5, "box": [0.1, 0.2, 0.3, 0.4]}]},
    ]
    import io

    buf = io.StringIO()
    assert D.write_reference_csv(rows, buf) == 3
    text = buf.getvalue()
    header = text.splitlines()[0].split(",")
    # The authors' columns, group by group, as many groups as the video with the most.
    assert header == ["video_name"] + [f"{c}_{i}" for i in (1, 2)
                                       for c in ("pred_class", "x1", "y1", "x2", "y2")]
    assert text.splitlines()[2] == "none_02.avi,no_object,,,,,,,,,"
    parsed = D.read_reference_csv(io.StringIO(text))
    assert parsed == [
        ("fight_01.mp4", [("fight", [0.125, 0.2000000029802322, 0.625, 0.9]),
                          ("collapse", [0.0, 0.1, 1.0, 0.75])]),
        ("none_02.avi", [("no_object", [])]),
        ("collapse_03.mp4", [("collapse", [0.1, 0.2, 0.3, 0.4])]),
    ]


def test_query_detections_keep_every_query_over_the_threshold_in_query_order():
    import torch

    # 3 queries, classes fight, collapse + no_object; boxes cxcywh, the second pokes out.
    logits = torch.log(torch.tensor([[[0.2, 0.1, 0.7], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4]]]))
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.9, 0.5, 0.4, 0.2], [0.3, 0.3, 0.2, 0.4]]])
    dets = D.query_detections({"pred_logits": logits, "pred_boxes": boxes},
                              ["fight", "collapse"], 0.3)[0]
    assert [(d["query"], d["class"]) for d in dets] == [(1, "collapse"), (2, "fight")]
    assert dets[0]["box"] == pytest.approx([0.7, 0.4, 1.0, 0.6])      # x2 clamped to the frame
    assert dets[1]["box"] == pytest.approx([0.2, 0.1, 0.4, 0.5])
    assert dets[1]["score"] == pytest.approx(0.5)


def test_detect_csv_format_reference_writes_test_py_columns(setup, tmp_path):
    root, ckpt = setup
    out = tmp_path / "ref.csv"
    assert vigil(["detect", str(root / "videos"), "--checkpoint", str(ckpt), "--csv", str(out),
                  "--csv-format", "reference", "--threshold", "0.0", "--workers", "1"]) == 0
    parsed = D.read_reference_csv(out.open())
    assert sorted(name for name, _ in parsed) == ["a.mp4", "b.mp4"]
    for _, dets in parsed:
        # Threshold 0: every one of the tiny model's queries is a group.
        assert len(dets) == 3 and all(c in ("fight", "collapse") for c, _ in dets)
        assert all(0.0 <= v <= 1.0 for _, box in dets for v in box)
    out2 = tmp_path / "none.csv"
    assert vigil(["detect", str(root / "videos"), "--checkpoint", str(ckpt), "--csv", str(out2),
                  "--csv-format", "reference", "--threshold", "1.01", "--workers", "1"]) == 0
    assert out2.read_text().splitlines()[1:] == ["a.mp4,no_object,,,,", "b.mp4,no_object,,,,"]


# --------------------------------------------------------------------------- pooled decoding
def _key(row):
    return (row["video"], row.get("start_s", 0.0))


@pytest.mark.parametrize("windows", [None, 0.5])
def test_decode_workers_give_the_sequential_paths_rows(setup, tmp_path, windows):
    """Several decoder processes feeding one batcher: the same rows as decoding in this process,
    clip mode and window mode, with a broken file among them."""
    import shutil

    root, ckpt = setup
    folder = tmp_path / "videos"
    shutil.copytree(root / "videos", folder)
    shutil.copy(root / "videos" / "a.mp4", folder / "c.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video")
    sequential = sorted(D.detect([folder], ckpt, windows=windows, batch=3, workers=0,
                                 device="cpu"), key=_key)
    pooled = sorted(D.detect([folder], ckpt, windows=windows, batch=3, decode_workers=2,
                             device="cpu"), key=_key)
    assert len(sequential) >= 4 and any("error" in r for r in sequential)
    assert [_key(r) for r in pooled] == [_key(r) for r in sequential]
    for a, b in zip(pooled, sequential):
        assert a.keys() == b.keys()
        assert a.get("class") == b.get("class") and a.get("box") == b.get("box")
        assert a.get("score") == pytest.approx(b.get("score"), abs=1e-6)


def test_pooled_batches_are_full_whatever_worker_a_clip_came_from():
    import torch

    items = [(torch.full((2, 1, 1, 3), i, dtype=torch.uint8), {"i": i}) for i in range(7)]
    items.insert(3, (None, {"error": "bad"}))
    out = list(D.pooled_batches(iter(items), 3))
    assert [len(infos) for _, infos, _ in out] == [3, 0, 3, 1]       # the error as it comes
    assert out[1][0] is None and out[1][2] == [{"error": "bad"}]
    assert [int(c[0, 0, 0, 0]) for clips, _, _ in out if clips is not None
            for c in clips] == list(range(7))


def test_decode_workers_and_workers_together_are_refused(setup):
    root, ckpt = setup
    with pytest.raises(D.VigilError, match="not both"):
        list(D.detect([root / "videos"], ckpt, workers=2, decode_workers=2))


def test_vigil_detect_decode_workers_on_the_command_line(setup, tmp_path):
    root, ckpt = setup
    rows = {}
    for name, flags in (("sequential", ["--workers", "0"]), ("pooled", ["--decode-workers", "2"])):
        out = tmp_path / f"{name}.jsonl"
        assert vigil(["detect", str(root / "videos"), "--checkpoint", str(ckpt), "--out",
                      str(out), "--threshold", "0.0", "--windows", "0.5", *flags]) == 0
        rows[name] = sorted((json.loads(line) for line in out.read_text().splitlines()),
                            key=_key)
    assert [(_key(r), r["class"], r["box"]) for r in rows["pooled"]] == \
        [(_key(r), r["class"], r["box"]) for r in rows["sequential"]]
    assert vigil(["detect", str(root / "videos"), "--checkpoint", str(ckpt), "--workers", "1",
                  "--decode-workers", "2"]) != 0

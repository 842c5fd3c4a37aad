"""Real footage in: every layout and label form people already have is read as it is, every bad
input costs one clear line naming the file (and line) and nothing else, and time segments turn
into windows inside (positive) and clearly outside (negative) the action."""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from detector.config import InputConfig
from detector.errors import ConfigError, DataError
from train.config import load_train_config
from train.dataset import (ClipDataset, check_dataset, inspect_dataset, plan_samples,
                           scan_dataset, scan_dataset_lenient)
from train.labels import parse_label_file

import cv2

REAL = Path(__file__).resolve().parents[2] / "shared" / "real"
W, H = 64, 48


def make_video(path: Path, n: int, size=(W, H), fps: float = 10.0) -> Path:
    """Frame i is a flat colour whose green channel is 4 * i (see `frame_number`)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        frame = np.empty((size[1], size[0], 3), np.uint8)
        frame[:] = (180, 4 * i, 40)
        writer.write(frame)
    writer.release()
    return path


def frame_number(rgb: np.ndarray) -> int:
    return int(round(float(rgb[..., 1].mean()) / 4))


def by_stem(records):
    return {r.stem: r for r in records}


# ----- label file forms ----------------------------------------------------------------------
def test_label_file_forms_class_only_segment_and_box(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("\ufefffight\r\ncollapse t=1.5-3\r\n1 1 2 30 40 t=0-1\r\n# c\r\n",
                    encoding="utf-8")
    actions = parse_label_file(path, W, H, duration_s=4.0, class_names=("fight", "collapse"))
    ann, seg = actions.annotations, actions.segments
    assert ann[:, 0].tolist() == [0, 1, 1]
    assert np.isnan(ann[0, 1:]).all() and np.isnan(ann[1, 1:]).all()
    assert ann[2, 1:].tolist() == [1, 2, 30, 40]
    assert np.isnan(seg[0]).all()
    assert seg[1].tolist() == [1.5, 3.0] and seg[2].tolist() == [0.0, 1.0]


def test_none_line_means_no_action(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("none\n")
    assert len(parse_label_file(path, W, H, class_names=("fight", "collapse"))) == 0


@pytest.mark.parametrize("line,what", [
    ("punch", "unknown class 'punch' (known: fight, collapse, none)"),
    ("fight t=5-3", "segment 5-3 s is reversed or empty"),
    ("fight t=2-9", "segment 2-9 s ends after the video (4.00 s)"),
    ("fight t=5-6", "starts after the video ends"),
    ("fight t=abc", "must be t=START-END"),
    ("fight 1 2", "got 3 fields"),
    ("none t=1-2", "'none' takes no box and no segment"),
])
def test_bad_label_lines_name_file_and_line(tmp_path: Path, line: str, what: str) -> None:
    path = tmp_path / "v.txt"
    path.write_text(f"fight\n{line}\n")
    with pytest.raises(DataError) as err:
        parse_label_file(path, W, H, duration_s=4.0, class_names=("fight", "collapse"))
    assert str(err.value).startswith(f"{path}:2: ") and what in str(err.value)


def test_overlapping_segments_of_one_class_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("collapse t=1-3\ncollapse t=2.5-4\nfight t=1-3\n")
    with pytest.raises(DataError, match="1-3 s and 2.5-4 s of the same class overlap"):
        parse_label_file(path, W, H, duration_s=5.0, class_names=("fight", "collapse"))


# ----- CSV manifest --------------------------------------------------------------------------
def make_manifest_dataset(root: Path, rows: list[str], crlf: bool = True, bom: bool = True) -> Path:
    (root / "cam1").mkdir(parents=True)
    (root / "cam2").mkdir()
    make_video(root / "cam1" / "fight.mp4", 20, (W, H), 10.0)       # 2.0 s
    make_video(root / "cam1" / "walk.mp4", 20, (W, H), 10.0)
    make_video(root / "cam2" / "fall.mp4", 60, (W, H), 10.0)        # 6.0 s
    make_video(root / "cam2" / "boxed.mp4", 20, (W, H), 10.0)
    (root / "cam2" / "broken.mp4").write_bytes(b"not a video at all")
    end = "\r\n" if crlf else "\n"
    text = end.join(["file,label,start_s,end_s,x1,y1,x2,y2,group", *rows]) + end
    (root / "labels.csv").write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return root


GOOD_ROWS = ["cam1/fight.mp4,fight,,,,,,,scene-a",
             "cam1/walk.mp4,none,,,,,,,scene-a",
             "cam2/fall.mp4,1,2.5,4.5,,,,,",
             "cam2/boxed.mp4,collapse,,,4,6,40,44,"]


def test_csv_manifest_with_bom_and_crlf_reads_names_ids_segments_boxes_groups(tmp_path) -> None:
    root = make_manifest_dataset(tmp_path / "d", GOOD_ROWS)
    recs = by_stem(scan_dataset(root))
    assert set(recs) == {"fight", "walk", "fall", "boxed"}
    assert recs["fight"].annotations[:, 0].tolist() == [0] and not recs["fight"].has_boxes
    assert not recs["walk"].is_positive
    assert recs["fall"].annotations[0, 0] == 1 and recs["fall"].segments[0].tolist() == [2.5, 4.5]
    assert recs["boxed"].annotations[0].tolist() == [1, 4, 6, 40, 44]
    assert recs["fight"].group == recs["walk"].group == "scene-a"
    assert recs["fall"].group == "fall"                      # no group: its own
    assert recs["fight"].source == "cam1" and recs["fall"].source == "cam2"
    # The manifest file itself may be given instead of its folder.
    assert set(by_stem(scan_dataset(root / "labels.csv"))) == set(recs)


def test_csv_problems_are_one_line_each_and_the_rest_still_loads(tmp_path: Path) -> None:
    rows = GOOD_ROWS + ["cam2/broken.mp4,fight,,,,,,,",         # cannot be decoded
                        "cam1/missing.mp4,fight,,,,,,,",        # no such file
                        "cam1/fight.mp4,kick,,,,,,,",           # unknown class
                        "cam2/fall.mp4,collapse,5,9,,,,,"]      # segment past the end
    root = make_manifest_dataset(tmp_path / "d", rows)
    records, problems = inspect_dataset(root)
    manifest = root / "labels.csv"
    assert len(problems) == 4, problems
    assert any("broken.mp4" in p for p in problems)
    assert any(p.startswith(f"{manifest}:7: video 'cam1/missing.mp4' not found") for p in problems)
    assert any(p.startswith(f"{manifest}:8: unknown class 'kick'") for p in problems)
    assert any(p.startswith(f"{manifest}:9: segment 5-9 s ends after the video") for p in problems)
    # The bad rows cost their own videos only.
    assert {r.stem for r in records} == {"walk", "boxed"}
    records2, skipped = scan_dataset_lenient(root)
    assert {r.stem for r in records2} == {"walk", "boxed"} and len(skipped) == 4
    assert check_dataset(root) == problems


# ----- class folders -------------------------------------------------------------------------
def test_class_folders_map_the_usual_names_and_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "rwf"
    for split in ("train", "val"):
        for folder in ("Fight", "NonFight"):
            (root / split / folder).mkdir(parents=True)
            make_video(root / split / folder / "001.mp4", 10, (W, H), 10.0)
    recs = scan_dataset(root)
    assert len(recs) == 4
    assert len({r.stem for r in recs}) == 4                  # 001 four times: made unique
    got = sorted((r.split, str(r.stratum)) for r in recs)
    assert got == [("train", "0"), ("train", "none"), ("val", "0"), ("val", "none")]
    from train.splits import split_records
    assert {r.split for r in split_records(recs, root, "val")} == {"val"}


def test_class_folder_names_are_case_and_separator_blind_and_overridable(tmp_path) -> None:
    root = tmp_path / "mixed"
    for folder in ("violence", "Non_Violence", "Fall", "ADL", "corridor"):
        (root / folder).mkdir(parents=True)
        make_video(root / folder / f"{folder}.mp4", 10, (W, H), 10.0)
    records, problems = inspect_dataset(root)
    assert len(problems) == 1 and "'corridor' maps to no class" in problems[0]
    assert str(root / "corridor") in problems[0] and "data.class_folders" in problems[0]
    classes = {r.stem: ("none" if not r.is_positive else int(r.annotations[0, 0]))
               for r in records}
    assert classes == {"violence": 0, "Non_Violence": "none", "Fall": 1, "ADL": "none"}
    records, problems = inspect_dataset(root, class_folders={"corridor": "none"})
    assert problems == [] and len(records) == 5


def test_groups_csv_names_groups_in_any_layout(tmp_path: Path) -> None:
    root = tmp_path / "g"
    (root / "fight").mkdir(parents=True)
    for name in ("a", "b", "c"):
        make_video(root / "fight" / f"{name}.mp4", 10, (W, H), 10.0)
    (root / "groups.csv").write_text("\ufefffile,group\r\nfight/a.mp4,src1\r\nb,src1\r\n")
    recs = by_stem(scan_dataset(root))
    assert recs["a"].group == recs["b"].group == "src1" and recs["c"].group == "c"


# ----- reference layout: the id base is never guessed --------------------------------------
def make_reference(root: Path, ids: list[int]) -> Path:
    root.mkdir(parents=True)
    rows = ["video_file,label_file"]
    for i, cls in enumerate(ids):
        make_video(root / f"v{i}.mp4", 10, (W, H), 10.0)
        (root / f"v{i}.txt").write_text(f"{cls} 1 1 20 20\n")
        rows.append(f"v{i}.mp4,v{i}.txt")
    (root / "action_challenge.csv").write_text("\n".join(rows) + "\n")
    return root


def test_reference_ids_that_could_mean_either_base_are_refused_with_the_fix(tmp_path) -> None:
    root = make_reference(tmp_path / "ref", [1, 1])
    with pytest.raises(DataError, match=r"data.label_id_base=1.*data.label_id_base=0"):
        scan_dataset(root)
    assert [r.annotations[0, 0] for r in scan_dataset(root, label_id_base=1)] == [0, 0]
    assert [r.annotations[0, 0] for r in scan_dataset(root, label_id_base=0)] == [1, 1]
    # Unambiguous sets need no option: 0 used means 0-based, K used means 1-based.
    assert [r.annotations[0, 0] for r in scan_dataset(make_reference(tmp_path / "z", [0, 1]))] \
        == [0, 1]
    assert [r.annotations[0, 0] for r in scan_dataset(make_reference(tmp_path / "o", [1, 2]))] \
        == [0, 1]


# ----- segments become windows ---------------------------------------------------------------
def test_segment_gives_an_inside_positive_and_an_outside_negative(tmp_path: Path) -> None:
    root = make_manifest_dataset(tmp_path / "d", GOOD_ROWS)
    rec = by_stem(scan_dataset(root))["fall"]                # 6 s, collapse at 2.5-4.5 s
    inp = InputConfig(frames=4, size=[16, 24], clip_seconds=1.0)
    train = ClipDataset([rec], inp, train=True, margin_s=0.5)
    assert [s.kind for s in train.samples] == ["inside", "outside"]
    assert train.is_positive == [True, False]
    for epoch in range(5):
        train.set_epoch(epoch)
        clip, target = train[0]
        frames = [frame_number(f) for f in clip.numpy()]
        # Every frame of the positive window lies in the segment (frames 25..45 at 10 fps).
        assert 25 <= min(frames) and max(frames) <= 45, frames
        assert target["labels"].tolist() == [1] and target["has_box"].tolist() == [False]
        clip, target = train[1]
        frames = [frame_number(f) for f in clip.numpy()]
        # The negative keeps 0.5 s clear of the segment: ends by 2.0 s or starts from 5.0 s.
        assert max(frames) < 20 or min(frames) >= 50, frames
        assert target["labels"].numel() == 0
    evaluation = ClipDataset([rec], inp, train=False)
    assert [s.kind for s in evaluation.samples] == ["inside"]


def test_long_video_without_action_is_cut_into_windows_short_ones_stay_whole(tmp_path) -> None:
    root = make_manifest_dataset(tmp_path / "d", GOOD_ROWS)
    recs = by_stem(scan_dataset(root))
    kinds = [s.kind for s in plan_samples([recs["walk"], recs["fight"]], 1.0, train=True)]
    assert kinds == ["window", "whole"]
    # Without a window length everything is a whole video (the reference's sampling).
    assert {s.kind for s in plan_samples(list(recs.values()), None, train=True)} == {"whole"}


def test_class_only_target_has_no_box(tmp_path: Path) -> None:
    root = make_manifest_dataset(tmp_path / "d", GOOD_ROWS)
    recs = by_stem(scan_dataset(root))
    ds = ClipDataset([recs["fight"], recs["boxed"]], InputConfig(frames=4, size=[16, 24]))
    _, fight = ds[0]
    _, boxed = ds[1]
    assert fight["has_box"].tolist() == [False] and fight["boxes"].tolist() == [[0, 0, 0, 0]]
    assert boxed["has_box"].tolist() == [True]
    np.testing.assert_allclose(boxed["boxes"][0], [22 / W, 25 / H, 36 / W, 38 / H], rtol=1e-5)


# ----- the --epochs shortcut -----------------------------------------------------------------
def test_epochs_shortcut_shortens_a_warmup_that_would_not_fit(caplog) -> None:
    recipe = Path(__file__).resolve().parents[1] / "configs" / "train" / "cpu-small.yaml"
    with caplog.at_level(logging.INFO, logger="train.config"):
        cfg = load_train_config(recipe, epochs=1)
    assert cfg.optim.epochs == 1 and cfg.optim.warmup_epochs == 0
    assert any("warmup_epochs 1 shortened to 0" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="--epochs must be >= 1"):
        load_train_config(recipe, epochs=0)


# ----- the real clips, when this checkout has them -------------------------------------------
@pytest.fixture(scope="module")
def real_slice(tmp_path_factory) -> Path:
    """A manifest over 12 clips of ../shared/real (3 per folder), read in place."""
    if not (REAL / "labels.csv").is_file():
        pytest.skip(f"{REAL} is absent: the real-footage slice cannot be read")
    with open(REAL / "labels.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    picked, per_folder = [], {}
    for row in rows:
        folder = row["file"].split("/")[0]
        wanted = row["label"] != "none" or per_folder.get(folder, 0) < 1
        if per_folder.get(folder, 0) < 3 and (wanted or row["start_s"]):
            picked.append(row)
            per_folder[folder] = per_folder.get(folder, 0) + 1
    out = tmp_path_factory.mktemp("real") / "labels.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "start_s", "end_s", "group"])
        writer.writeheader()
        for row in picked:
            writer.writerow({k: row[k] if k != "file" else str(REAL / row["file"])
                             for k in writer.fieldnames})
    return out


def test_real_clips_read_with_their_labels_segments_and_groups(real_slice: Path) -> None:
    with open(real_slice, newline="", encoding="utf-8") as f:
        rows = {Path(r["file"]).stem: r for r in csv.DictReader(f)}
    # The slice names the clips by absolute path, outside its own folder: read only on request.
    with pytest.raises(DataError, match="outside the dataset folder"):
        scan_dataset(real_slice)
    records = scan_dataset(real_slice, allow_outside_root=True)
    assert len(records) == len(rows)
    names = ("fight", "collapse")
    for r in records:
        row = rows[r.stem]
        got = "none" if not r.is_positive else names[int(r.annotations[0, 0])]
        assert got == row["label"] and not r.has_boxes
        assert r.group == row["group"]
        if row["start_s"]:
            assert math.isclose(r.segments[0, 0], float(row["start_s"]), abs_tol=1e-4)
        assert r.frames > 0 and r.fps > 0


def run_vigil(args: list[str], cwd: Path, timeout: float = 600):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "streamer.cli", *map(str, args)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(root), "VIGIL_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=timeout)


def test_data_check_reads_the_real_folder_as_it_is(tmp_path: Path) -> None:
    if not (REAL / "labels.csv").is_file():
        pytest.skip(f"{REAL} is absent: vigil data check has no real folder to read")
    out = run_vigil(["data", "check", REAL], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK (csv layout)" in out.stdout and "class-only" in out.stdout
    assert "fight_surv (210)" in out.stdout


def test_train_and_eval_on_real_clips_print_the_per_source_table(real_slice: Path,
                                                                 tmp_path: Path) -> None:
    from .test_readme import TINY

    sets = [x for s in TINY for x in ("--set", s)]
    train = run_vigil(["train", "--data", real_slice, "--out", tmp_path / "run", "--epochs", "1",
                       "--no-progress", "--set", "data.cache=false", "--allow-outside-root",
                       *sets], tmp_path)
    assert train.returncode == 0, train.stdout + train.stderr
    assert "class-only" in train.stderr        # the epoch log counts box-less targets
    ev = run_vigil(["eval", "--checkpoint", tmp_path / "run" / "best.pt", "--data", real_slice,
                    "--split", "all", "--workers", "0", "--allow-outside-root"], tmp_path)
    assert ev.returncode == 0, ev.stdout + ev.stderr
    assert "no boxes in this set" in ev.stdout
    for source in ("fight_surv", "collapse_upfall", "collapse_gmdcsa24", "overall"):
        assert source in ev.stdout, ev.stdout


# ----- found by trying it as a user -----------------------------------------------------------
def test_a_bad_split_cell_drops_its_video_and_blank_cells_keep_the_given_split(tmp_path) -> None:
    from train.splits import split_records

    root = tmp_path / "s"
    root.mkdir()
    for name in "abcdef":
        make_video(root / f"{name}.mp4", 10)
    (root / "labels.csv").write_text("file,label,split\na.mp4,fight,train\nb.mp4,none,train\n"
                                     "c.mp4,collapse,test\nd.mp4,fight,val\ne.mp4,none,val\n"
                                     "f.mp4,fight,\n")
    records, problems = inspect_dataset(root)
    assert len(problems) == 1 and "split 'test' must be train or val" in problems[0]
    assert "c" not in {r.stem for r in records}
    assert [r.stem for r in split_records(records, root, "val")] == ["d", "e"]
    assert [r.stem for r in split_records(records, root, "train")] == ["a", "b", "f"]


@pytest.mark.parametrize("rows,what", [
    (["k.mp4,fight", "k.mp4,none"], "'none' and an action are both given"),
    (["k.mp4,fight,,", "k.mp4,fight,0.2,0.8"], "whole clip and also for a segment"),
])
def test_contradictory_labels_of_one_video_are_refused(tmp_path, rows, what) -> None:
    root = tmp_path / "c"
    root.mkdir()
    make_video(root / "k.mp4", 10)
    make_video(root / "z.mp4", 10)
    (root / "labels.csv").write_text("file,label,start_s,end_s\n" + "\n".join(rows)
                                     + "\nz.mp4,fight,,\n")
    records, problems = inspect_dataset(root)
    assert len(problems) == 1 and what in problems[0], problems
    assert [r.stem for r in records] == ["z"]


def test_dataset_class_names_work_as_labels_too(tmp_path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    for name in ("a", "b", "c"):
        make_video(root / f"{name}.mp4", 10)
    (root / "labels.csv").write_text("file,label\na.mp4,Fall\nb.mp4,violence\nc.mp4,ADL\n")
    recs = by_stem(scan_dataset(root))
    assert [recs[s].stratum for s in "abc"] == [1, 0, "none"]


def test_ids_wrong_under_either_base_name_the_bad_line(tmp_path) -> None:
    root = make_reference(tmp_path / "r", [1, 3])
    problems = check_dataset(root)
    assert any("class_id 3 outside 0..1" in p for p in problems), problems
    assert not any("label_id_base" in p for p in problems)


def test_a_mapping_to_an_unknown_class_says_so(tmp_path) -> None:
    root = tmp_path / "m"
    (root / "misc").mkdir(parents=True)
    make_video(root / "misc" / "a.mp4", 10)
    (root / "fight").mkdir()
    make_video(root / "fight" / "b.mp4", 10)
    _, problems = inspect_dataset(root, class_folders={"misc": "dance"})
    assert len(problems) == 1 and "maps 'misc' to 'dance', which is not a class" in problems[0]


def test_resuming_a_run_on_other_videos_is_refused(tmp_path) -> None:
    from detector.errors import CheckpointError

    from ._training import tiny_config, tiny_dataset
    from train.trainer import fit

    cfg = tiny_config(epochs=1)
    fit(cfg, tiny_dataset(tmp_path / "a", videos=6, seed=1), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="trained on other videos"):
        fit(tiny_config(epochs=2), tiny_dataset(tmp_path / "b", videos=6, seed=2),
            tmp_path / "run", progress=False)

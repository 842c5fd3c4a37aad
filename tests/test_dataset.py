"""Dataset layouts, checks, splits, the clip dataset and its decoded-clip cache."""
from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from detector.config import InputConfig
from detector.errors import DataError
from train import video_io
from train.augment import AugmentConfig
from train.cache import ClipCache
from train.dataset import (ClipDataset, VideoRecord, check_dataset, collate, scan_dataset,
                           split_records, stratified_folds)

# stem -> (frames, (width, height), fps, label lines with 0-based ids)
VIDEOS = {
    "a_fight": (12, (64, 48), 10.0, ["0 4 6 40 44"]),
    "b_collapse": (10, (48, 48), 8.0, ["1 0 10 30 48"]),
    "c_none": (8, (64, 48), 10.0, None),
    "d_empty": (9, (64, 48), 10.0, []),
    "e_two": (14, (80, 48), 12.0, ["0 1 1 20 20", "1 30 10 70 40"]),
}


def make_video(path: Path, n: int, size=(64, 48), fps: float = 10.0) -> Path:
    """Frame i is a flat colour whose green channel encodes i (see `frame_number`)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        frame = np.empty((h, w, 3), np.uint8)
        frame[:] = (180, 20 + 15 * i, 40)
        writer.write(frame)
    writer.release()
    return path


def frame_number(rgb: np.ndarray) -> int:
    return int(round((float(rgb[..., 1].mean()) - 20) / 15))


def make_folder_dataset(root: Path) -> Path:
    (root / "videos").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem, (n, size, fps, lines) in VIDEOS.items():
        make_video(root / "videos" / f"{stem}.mp4", n, size, fps)
        if lines is not None:
            (root / "labels" / f"{stem}.txt").write_text("".join(f"{l}\n" for l in lines))
    return root


def make_reference_dataset(root: Path, one_based: bool) -> Path:
    root.mkdir(parents=True)
    rows = ["video_file,label_file"]
    for stem, (n, size, fps, lines) in VIDEOS.items():
        make_video(root / f"{stem}.mp4", n, size, fps)
        if lines is None:
            rows.append(f"{stem}.mp4,")
            continue
        shifted = []
        for line in lines:
            cls, *rest = line.split()
            shifted.append(" ".join([str(int(cls) + one_based), *rest]))
        (root / f"{stem}_labels.txt").write_text("".join(f"{l}\n" for l in shifted))
        rows.append(f"{stem}.mp4,{stem}_labels.txt")
    (root / "action_challenge.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("folder") / "data")


@pytest.fixture(scope="module")
def records(folder_root: Path) -> list[VideoRecord]:
    return scan_dataset(folder_root)


def _summary(records: list[VideoRecord]):
    return [(r.stem, r.width, r.height, r.frames, round(r.fps, 3), r.annotations.tolist())
            for r in records]


# ----- scanning ------------------------------------------------------------------------------
def test_folder_layout_records_hold_probe_and_labels(folder_root: Path,
                                                     records: list[VideoRecord]) -> None:
    assert [r.stem for r in records] == sorted(VIDEOS)
    by_stem = {r.stem: r for r in records}
    for stem, (n, (w, h), fps, lines) in VIDEOS.items():
        r = by_stem[stem]
        assert (r.frames, r.width, r.height) == (n, w, h)
        assert r.fps == pytest.approx(fps)
        assert r.annotations.shape == (len(lines or []), 5)
        assert r.is_positive == bool(lines)
        assert r.video == folder_root / "videos" / f"{stem}.mp4"
    assert by_stem["c_none"].label_file is None
    np.testing.assert_allclose(by_stem["e_two"].annotations[1], [1, 30, 10, 70, 40])


@pytest.mark.parametrize("one_based", [True, False])
def test_reference_layout_gives_the_same_records(tmp_path: Path, records, one_based: bool,
                                                 caplog) -> None:
    root = make_reference_dataset(tmp_path / "ref", one_based)
    with caplog.at_level(logging.INFO, logger="train"):
        ref = scan_dataset(root)
    assert _summary(ref) == _summary(records)
    shift_logs = [r for r in caplog.records if "shifting" in r.getMessage()]
    assert len(shift_logs) == (1 if one_based else 0)


def test_reference_layout_missing_video_names_the_csv_line(tmp_path: Path) -> None:
    root = make_reference_dataset(tmp_path / "ref", one_based=False)
    (root / "b_collapse.mp4").unlink()
    with pytest.raises(DataError, match=r"action_challenge.csv:3: video 'b_collapse.mp4' not found"):
        scan_dataset(root)


def test_reference_layout_bad_header_is_refused(tmp_path: Path) -> None:
    root = make_reference_dataset(tmp_path / "ref", one_based=False)
    (root / "action_challenge.csv").write_text("video,label\nx.mp4,\n")
    with pytest.raises(DataError, match=r"action_challenge.csv:1: header"):
        scan_dataset(root)


def test_label_file_without_video_is_refused(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d")
    (root / "videos" / "a_fight.mp4").unlink()
    with pytest.raises(DataError, match=r"a_fight.txt: label file without a video"):
        scan_dataset(root)


def test_dataset_without_positives_is_refused(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d")
    for label in (root / "labels").glob("*.txt"):
        label.write_text("")
    with pytest.raises(DataError, match="no positives"):
        scan_dataset(root)
    assert len(scan_dataset(root, require_positives=False)) == len(VIDEOS)


def test_empty_or_missing_dataset_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty" / "videos").mkdir(parents=True)
    with pytest.raises(DataError, match="no videos found"):
        scan_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        scan_dataset(tmp_path / "nowhere")


def test_check_dataset_reports_every_problem_in_one_pass(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d")
    (root / "labels" / "ghost.txt").write_text("0 1 1 5 5\n")                 # no video
    (root / "labels" / "b_collapse.txt").write_text("1 0 10 30 48\n5 1 1 2 2\n")  # bad class
    (root / "videos" / "c_none.mp4").write_bytes(b"\x00" * 500)               # unreadable
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("a_fight\nnobody\n")             # unknown stem
    problems = check_dataset(root)
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert "ghost.txt: label file without a video" in text
    assert "b_collapse.txt:2: class_id 5 outside 0..1" in text
    assert "c_none.mp4" in text
    assert "val.txt:2: unknown stem 'nobody'" in text
    assert check_dataset(make_folder_dataset(tmp_path / "ok")) == []


def test_check_dataset_reports_missing_positives_and_videos(tmp_path: Path) -> None:
    (tmp_path / "e" / "videos").mkdir(parents=True)
    assert any("no videos found" in p for p in check_dataset(tmp_path / "e"))
    root = make_folder_dataset(tmp_path / "d")
    shutil.rmtree(root / "labels")
    assert any("no positives" in p for p in check_dataset(root))


# ----- splits --------------------------------------------------------------------------------
def fake_records(per_class: int = 10) -> list[VideoRecord]:
    out = []
    for cls in (0, 1, None):
        for k in range(per_class):
            ann = (np.zeros((0, 5), np.float32) if cls is None
                   else np.array([[cls, 1, 1, 10, 10]], np.float32))
            out.append(VideoRecord(f"{cls}_{k:02d}", Path(f"/nonexistent/{cls}_{k}.mp4"), None,
                                   64, 48, 10.0, 20, ann))
    return out


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    recs = fake_records()
    train = split_records(recs, None, "train", seed=5)
    val = split_records(recs, None, "val", seed=5)
    assert Counter(r.stratum for r in val) == {0: 2, 1: 2, "none": 2}
    assert Counter(r.stratum for r in train) == {0: 8, 1: 8, "none": 8}
    assert {r.stem for r in train}.isdisjoint(r.stem for r in val)
    assert [r.stem for r in split_records(recs, None, "val", seed=5)] == [r.stem for r in val]
    other = {r.stem for r in split_records(recs, None, "val", seed=6)}
    assert other != {r.stem for r in val}
    assert split_records(recs, None, "all") == recs


def test_small_classes_keep_one_video_in_each_split() -> None:
    recs = fake_records(per_class=2)
    val = split_records(recs, None, "val")
    assert Counter(r.stratum for r in val) == {0: 1, 1: 1, "none": 1}


def test_split_files_take_precedence(tmp_path: Path) -> None:
    recs = fake_records(per_class=3)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("# held out\n0_00\n\nNone_02.mp4\n")
    val = split_records(recs, tmp_path, "val")
    train = split_records(recs, tmp_path, "train")
    assert [r.stem for r in val] == ["0_00", "None_02"]
    assert len(train) == len(recs) - 2
    (tmp_path / "splits" / "train.txt").write_text("1_00\nmissing_stem\n")
    with pytest.raises(DataError, match=r"train.txt:2: unknown stem 'missing_stem'"):
        split_records(recs, tmp_path, "train")


def test_stratified_folds_partition_and_balance_classes() -> None:
    recs = fake_records(per_class=10)
    folds = stratified_folds(recs, 5, seed=1)
    assert len(folds) == 5
    all_val = sorted(i for _, val in folds for i in val)
    assert all_val == list(range(len(recs)))
    for train, val in folds:
        assert set(train).isdisjoint(val) and len(train) + len(val) == len(recs)
        assert Counter(recs[i].stratum for i in val) == {0: 2, 1: 2, "none": 2}
    assert stratified_folds(recs, 5, seed=1) == folds
    with pytest.raises(DataError, match="folds"):
        stratified_folds(recs, 1)


# ----- ClipDataset ---------------------------------------------------------------------------
INPUT = InputConfig(frames=4, size=[16, 24])
AUG = AugmentConfig(enabled=True, temporal_jitter=1.0, hflip=0.5, color_jitter=0.3,
                    resized_crop=0.5)


def test_clip_dataset_sample_has_uint8_clip_and_normalised_cxcywh_target(records) -> None:
    ds = ClipDataset(records, INPUT)
    by_stem = {r.stem: i for i, r in enumerate(records)}
    clip, target = ds[by_stem["e_two"]]
    assert clip.dtype == torch.uint8 and clip.shape == (4, 16, 24, 3)
    assert target["stem"] == "e_two" and target["size"] == (80, 48)
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [0, 1]
    assert target["boxes"].dtype == torch.float32
    # "1 30 10 70 40" in an 80x48 video -> cx 50/80, cy 25/48, w 40/80, h 30/48
    np.testing.assert_allclose(target["boxes"][1], [50 / 80, 25 / 48, 40 / 80, 30 / 48], rtol=1e-6)
    # Frames are the reference's linspace indices.
    assert [frame_number(f) for f in clip.numpy()] == [0, 4, 8, 13]
    _, empty = ds[by_stem["c_none"]]
    assert empty["labels"].shape == (0,) and empty["boxes"].shape == (0, 4)
    assert ds.is_positive == [r.is_positive for r in records]


def test_collate_stacks_clips_and_lists_targets(records) -> None:
    ds = ClipDataset(records, INPUT)
    clips, targets = collate([ds[0], ds[1], ds[2]])
    assert clips.shape == (3, 4, 16, 24, 3) and clips.dtype == torch.uint8
    assert [t["stem"] for t in targets] == [r.stem for r in records[:3]]


def _epoch(ds: ClipDataset, epoch: int, workers: int = 0):
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
    clips, boxes = [], []
    for c, targets in loader:
        clips.append(c)
        boxes += [t["boxes"] for t in targets]
    return torch.cat(clips), boxes


def test_augmented_samples_are_deterministic_per_epoch_and_worker_independent(records) -> None:
    ds = ClipDataset(records, INPUT, augment=AUG, seed=3)
    c0, b0 = _epoch(ds, 0)
    c0_again, b0_again = _epoch(ds, 0, workers=2)
    assert torch.equal(c0, c0_again)
    assert all(torch.equal(x, y) for x, y in zip(b0, b0_again))
    c1, _ = _epoch(ds, 1)
    assert not torch.equal(c0, c1)
    boxes = torch.cat([b for b in b0 if len(b)])
    assert bool(((boxes >= 0) & (boxes <= 1)).all())


def test_temporal_jitter_changes_which_frames_are_sampled(records) -> None:
    ds = ClipDataset(records, INPUT, augment=AugmentConfig(enabled=True, temporal_jitter=1.0))
    i = [r.stem for r in records].index("e_two")
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        frames = [frame_number(f) for f in ds[i][0].numpy()]
        assert frames == sorted(frames) and 0 <= frames[0] and frames[-1] <= 13
        seen.add(tuple(frames))
    assert len(seen) > 1


# ----- cache ---------------------------------------------------------------------------------
@pytest.mark.parametrize("augment", [None, AUG], ids=["plain", "augmented"])
def test_cache_decodes_nothing_from_the_second_epoch(records, tmp_path: Path, monkeypatch,
                                                     augment) -> None:
    reference = _epoch(ClipDataset(records, INPUT, augment=augment, seed=1), 1)[0]
    calls = []
    real = video_io.read_frames

    def counting_read_frames(path, indices, size=None):
        calls.append(Path(path).name)
        return real(path, indices, size)

    monkeypatch.setattr(video_io, "read_frames", counting_read_frames)
    ds = ClipDataset(records, INPUT, augment=augment, cache=ClipCache(tmp_path / "cache"), seed=1)
    _epoch(ds, 0)
    assert len(calls) == len(records)
    cached = _epoch(ds, 1)[0]
    assert len(calls) == len(records), "epoch 2 decoded video"
    # A fresh cache object over the same directory (a new run, or a worker) reads no video either.
    ds2 = ClipDataset(records, INPUT, augment=augment, cache=ClipCache(tmp_path / "cache"), seed=1)
    _epoch(ds2, 2)
    assert len(calls) == len(records)
    assert torch.equal(cached, reference), "the cache must not change what a sample is"
    assert not list((tmp_path / "cache").rglob(".tmp-*")), "no temporary files left behind"


def test_cache_key_follows_content_and_preprocessing(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", 6)
    cache = ClipCache(tmp_path / "cache")
    k = cache.key(video, [0, 2, 4], (16, 16))
    assert k == ClipCache(tmp_path / "cache").key(video, [0, 2, 4], (16, 16))
    assert k != cache.key(video, [0, 2, 5], (16, 16))
    assert k != cache.key(video, [0, 2, 4], (16, 24))
    first = cache.get_or_decode(video, [0, 2, 4], (16, 16))
    make_video(video, 6, size=(32, 32))  # same name, new content
    fresh = ClipCache(tmp_path / "cache")
    assert fresh.key(video, [0, 2, 4], (16, 16)) != k
    assert fresh.get_or_decode(video, [0, 2, 4], (16, 16)).shape == first.shape
    assert (fresh.hits, fresh.misses) == (0, 1)


def test_corrupt_cache_entry_is_decoded_again(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", 6)
    cache = ClipCache(tmp_path / "cache")
    good = cache.get_or_decode(video, [1, 3], (16, 16))
    cache.path_for(cache.key(video, [1, 3], (16, 16))).write_bytes(b"truncated")
    again = cache.get_or_decode(video, [1, 3], (16, 16))
    np.testing.assert_array_equal(again, good)
    assert cache.misses == 2

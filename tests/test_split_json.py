"""The reference implementation's split.json in the dataset folder decides the split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train.dataset import VideoRecord
from train.layouts import Problems
from train.splits import read_split_files, split_records


def records(n: int = 6) -> list[VideoRecord]:
    out = []
    for i in range(n):
        ann = (np.zeros((0, 5), np.float32) if i % 3 == 2
               else np.array([[i % 3, 1, 2, 30, 40]], np.float32))
        out.append(VideoRecord(f"vid{i}", Path(f"/nonexistent/vid{i}.mp4"), None, 64, 48, 10.0,
                               20, ann))
    return out


@pytest.mark.parametrize("form", ["names", "stems", "paths", "objects"])
def test_split_json_forms_give_the_listed_videos(tmp_path, form):
    train = ["vid0", "vid1", "vid2", "vid3"]
    val = ["vid4", "vid5"]

    def entry(stem):
        return {"names": f"{stem}.mp4", "stems": stem, "paths": f"data/videos\\{stem}.avi",
                "objects": {"video_file": f"videos/{stem}.mp4", "label": 0}}[form]

    (tmp_path / "split.json").write_text(json.dumps(
        {"train": [entry(s) for s in train], "val": [entry(s) for s in val], "test": ["x"]}))
    recs = records()
    assert [r.stem for r in split_records(recs, tmp_path, "train")] == train
    assert [r.stem for r in split_records(recs, tmp_path, "val")] == val


def test_split_txt_files_win_over_split_json(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"train": ["vid0"], "val": ["vid1"]}))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("vid5\n")
    assert [r.stem for r in split_records(records(), tmp_path, "val")] == ["vid5"]


def test_split_json_problems_name_the_entry(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps(
        {"train": ["vid0", "nope.mp4", 3], "validation": ["vid0"]}))
    problems = Problems(collect=True)
    lists = read_split_files(tmp_path, {r.stem for r in records()}, problems)
    text = "\n".join(problems.items)
    assert lists == {"train": ["vid0"], "val": []}
    assert "train[1]" in text and "'nope'" in text
    assert "train[2]" in text
    assert "validation[0]" in text and "already listed" in text

"""`train.mil` and `ClipDataset(weak_positives="mil")`: a clip labelled as a whole is a bag of
windows, and training shows the window the model scores highest for the clip's class."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detector.config import InputConfig
from train.config import DataConfig
from train.dataset import ClipDataset, plan_samples
from train.mil import choose_bag_windows
from train.records import VideoRecord

FPS = 10.0
INPUT = InputConfig(frames=4, size=[16, 16], mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0],
                    clip_seconds=1.0)


def ramp_video(path: Path, n: int) -> Path:
    """Frame i is grey level 5 * i: later frames are brighter."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (16, 16))
    for i in range(n):
        writer.write(np.full((16, 16, 3), 5 * i, np.uint8))
    writer.release()
    return path


def record(path: Path, frames: int, label: int | None) -> VideoRecord:
    ann = (np.zeros((0, 5), np.float32) if label is None
           else np.array([[label, np.nan, np.nan, np.nan, np.nan]], np.float32))
    return VideoRecord(path.stem, path, None, 16, 16, FPS, frames, ann,
                       np.full((len(ann), 2), np.nan, np.float32))


class BrightnessModel(nn.Module):
    """One query whose class-`label` logit is the clip's mean brightness x 10."""

    def __init__(self, label: int, num_classes: int = 2) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(input=INPUT)
        self.label, self.num_classes = label, num_classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = torch.zeros(x.shape[0], 1, self.num_classes + 1)
        logits[:, 0, self.label] = x.mean(dim=(1, 2, 3, 4)) * 10
        return {"pred_logits": logits}


def test_only_long_positives_without_segments_become_bags(tmp_path):
    long_pos = record(tmp_path / "fall.mp4", 40, 1)         # 4 s, window 1 s
    short_pos = record(tmp_path / "fight.mp4", 11, 0)       # 1.1 s < 1.25 windows
    long_neg = record(tmp_path / "walk.mp4", 40, None)
    recs = [long_pos, short_pos, long_neg]
    assert [s.kind for s in plan_samples(recs, 1.0, train=True, weak_positives="mil")] == \
        ["bag", "whole", "window"]
    assert [s.kind for s in plan_samples(recs, 1.0, train=True)] == \
        ["whole", "whole", "window"]


@pytest.mark.parametrize("weak_positives", ["mil", "whole"])
def test_in_evaluation_every_long_clip_is_a_bag_whatever_its_label_and_recipe(tmp_path,
                                                                              weak_positives):
    """A model trained on whole clips is judged as the daemon sees it too: window by window,
    not a positive squeezed whole and a negative through its middle window."""
    long_pos = record(tmp_path / "fall.mp4", 40, 1)
    long_neg = record(tmp_path / "walk.mp4", 40, None)
    short_neg = record(tmp_path / "still.mp4", 11, None)
    assert [s.kind for s in plan_samples([long_pos, long_neg, short_neg], 1.0, train=False,
                                         weak_positives=weak_positives)] == ["bag", "bag", "whole"]


def test_evaluation_judges_positives_and_negatives_by_their_highest_scoring_window(tmp_path):
    """Label-blind max pooling: the window with the highest score of ANY class is chosen, so a
    negative is judged by the window most likely to raise a false alarm, and a positive's label
    does not pick its window."""
    walk = record(ramp_video(tmp_path / "walk.mp4", 40), 40, None)
    fall = record(ramp_video(tmp_path / "fall.mp4", 40), 40, 1)
    ds = ClipDataset([walk, fall], INPUT, window_s=1.0, train=False, weak_positives="mil")
    assert ds.bag_indices() == [0, 1]

    class DarkForFightBrightForCollapse(BrightnessModel):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 1, 3)
            logits[:, 0, 0] = 1.0 - x.mean(dim=(1, 2, 3, 4)) * 10 / 255   # fight: darkest
            logits[:, 0, 1] = -5.0 + x.mean(dim=(1, 2, 3, 4)) * 10 / 255   # collapse: brightest
            return {"pred_logits": logits}

    choose_bag_windows(DarkForFightBrightForCollapse(label=0), ds, torch.device("cpu"))
    # Both clips are looked at by their most fight-like window, the fall's label notwithstanding.
    assert ds.bag_choice(0) == 0 and ds.bag_choice(1) == 0
    assert ds[0][1]["labels"].tolist() == [] and ds[1][1]["labels"].tolist() == [1]


def test_each_bag_shows_the_window_the_model_scores_highest(tmp_path):
    fall = record(ramp_video(tmp_path / "fall.mp4", 40), 40, 1)
    ds = ClipDataset([fall], INPUT, window_s=1.0, train=True, weak_positives="mil")
    assert ds.bag_indices() == [0]
    windows = ds.bag_windows(0)
    assert len(windows) == 7                        # starts 0, 0.5, ..., 3.0 s
    assert ds.bag_choice(0) == -1

    stats = choose_bag_windows(BrightnessModel(label=1), ds, torch.device("cpu"))

    assert stats["bags"] == 1 and stats["windows"] == 7
    assert ds.bag_choice(0) == 6 and stats["mean_position"] == 1.0    # the brightest: the last
    clip, target = ds[0]
    first, count = windows[6]
    grey = clip.float().mean(dim=(1, 2, 3)).numpy()
    assert grey.min() >= 5 * first - 3 and grey.max() <= 5 * (first + count - 1) + 3
    assert target["labels"].tolist() == [1] and target["kind"] == "bag"


def test_the_choice_follows_the_clip_class_and_the_model_mode_is_kept(tmp_path):
    fall = record(ramp_video(tmp_path / "fall.mp4", 40), 40, 1)
    ds = ClipDataset([fall], INPUT, window_s=1.0, train=True, weak_positives="mil")

    class DarkForCollapse(BrightnessModel):
        def forward(self, x):
            out = super().forward(x)
            out["pred_logits"][:, 0, 1] *= -1       # the darkest window scores highest
            return out

    model = DarkForCollapse(label=1).train()
    choose_bag_windows(model, ds, torch.device("cpu"))
    assert ds.bag_choice(0) == 0
    assert model.training


def test_a_choice_outside_the_bag_is_refused(tmp_path):
    fall = record(ramp_video(tmp_path / "fall.mp4", 40), 40, 1)
    ds = ClipDataset([fall], INPUT, window_s=1.0, train=True, weak_positives="mil")
    with pytest.raises(IndexError):
        ds.choose_bag_window(0, 7)


def test_weak_positives_is_validated():
    assert DataConfig(weak_positives="mil").weak_positives == "mil"
    with pytest.raises(ValueError, match="weak_positives"):
        DataConfig(weak_positives="random")


def test_hard_negatives_make_long_quiet_clips_bags_in_training(tmp_path):
    long_pos = record(tmp_path / "fall.mp4", 40, 1)
    long_neg = record(tmp_path / "walk.mp4", 40, None)
    short_neg = record(tmp_path / "still.mp4", 11, None)
    kinds = [s.kind for s in plan_samples([long_pos, long_neg, short_neg], 1.0, train=True,
                                          weak_positives="mil", hard_negatives=True)]
    assert kinds == ["bag", "bag", "whole"]


def test_a_hard_negative_shows_its_most_action_like_window(tmp_path):
    """A quiet clip trains on the window the model now scores highest for any action: the
    stretch of the user's own footage it is most likely to raise a false alarm on."""
    walk = record(ramp_video(tmp_path / "walk.mp4", 40), 40, None)
    ds = ClipDataset([walk], INPUT, window_s=1.0, train=True, weak_positives="mil",
                     hard_negatives=True)
    assert ds.bag_indices() == [0]
    choose_bag_windows(BrightnessModel(label=0), ds, torch.device("cpu"))   # fight: brightest
    assert ds.bag_choice(0) == 6
    assert ds[0][1]["labels"].tolist() == []


def test_hard_negatives_is_a_data_option():
    assert DataConfig(hard_negatives=True).hard_negatives

"""What a training set must show: `train.trainer.check_classes` refuses a set of one class only
(a fine-tune on a user's fight clips alone would alarm on every window) and warns about a class
of the model that no clip shows."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from detector.errors import DataError
from train.records import VideoRecord
from train.trainer import check_classes

CLASSES = ["fight", "collapse"]


def record(stem: str, label: int | None, segment=None) -> VideoRecord:
    ann = (np.zeros((0, 5), np.float32) if label is None
           else np.array([[label, np.nan, np.nan, np.nan, np.nan]], np.float32))
    seg = np.array([segment if segment else [np.nan, np.nan]] * len(ann), np.float32)
    return VideoRecord(stem, Path(f"{stem}.mp4"), None, 64, 48, 25.0, 250, ann,
                       seg.reshape(len(ann), 2))


def test_clips_of_one_action_and_nothing_else_are_refused():
    with pytest.raises(DataError, match="every training clip is labelled fight, and none shows "
                                        "ordinary activity"):
        check_classes([record("a", 0), record("b", 0)], CLASSES, "my-clips")


def test_timed_actions_leave_quiet_windows_to_learn_from(caplog):
    check_classes([record("a", 1, [3.0, 5.0])], CLASSES, "my-clips")      # no error
    assert "no training clip without an action" not in caplog.text


def test_a_class_no_clip_shows_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        check_classes([record("a", 0), record("b", None)], CLASSES, "my-clips")
    assert "no training clip of collapse" in caplog.text


def test_actions_without_quiet_clips_are_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        check_classes([record("a", 0), record("b", 1)], CLASSES, "my-clips")
    assert "no training clip without an action" in caplog.text

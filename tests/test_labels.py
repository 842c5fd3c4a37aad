"""Label file parsing: every bad input is refused with `<path>:<line>: <what>`."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from detector.errors import DataError
from train.labels import parse_label_file, read_class_ids

W, H = 64, 48


def write(tmp_path: Path, text: str, name: str = "clip.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_lines_parse_to_class_and_pixel_box(tmp_path: Path) -> None:
    path = write(tmp_path, "# fight in the corner\n\n0 1 2 30 40\n1 10.5 5 63 47.5\n")
    rows = parse_label_file(path, W, H).annotations
    assert rows.dtype == np.float32 and rows.shape == (2, 5)
    np.testing.assert_allclose(rows, [[0, 1, 2, 30, 40], [1, 10.5, 5, 63, 47.5]])


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n"])
def test_empty_file_means_no_action(tmp_path: Path, content: str) -> None:
    assert parse_label_file(write(tmp_path, content), W, H).annotations.shape == (0, 5)


def test_missing_file_or_none_means_no_action(tmp_path: Path) -> None:
    assert parse_label_file(tmp_path / "absent.txt", W, H).annotations.shape == (0, 5)
    assert parse_label_file(None, W, H).annotations.shape == (0, 5)


@pytest.mark.parametrize("line,what", [
    ("0 1 2 30", "got 4 fields"),
    ("0 1 2 30 40 7", "got 6 fields"),
    ("0 1 two 30 40", "y1 'two' is not a number"),
    ("0 1 2 nan 40", "x2 'nan' is not a finite number"),
    ("0.5 1 2 30 40", "class_id '0.5' is not an integer"),
    ("2 1 2 30 40", "class_id 2 outside 0..1"),
    ("-1 1 2 30 40", "class_id -1 outside 0..1"),
    ("0 30 2 30 40", "x2 (30) must be greater than x1 (30)"),
    ("0 1 40 30 2", "y2 (2) must be greater than y1 (40)"),
    ("0 1 2 70 40", "outside the 64x48 frame by 6 px"),
    ("1 -10 2 30 40", "outside the 64x48 frame by 10 px"),
    ("0 1 2 30 53", "outside the 64x48 frame by 5 px"),
])
def test_bad_line_raises_with_file_and_line(tmp_path: Path, line: str, what: str) -> None:
    path = write(tmp_path, f"# header\n0 1 1 10 10\n{line}\n")
    with pytest.raises(DataError) as err:
        parse_label_file(path, W, H)
    assert str(err.value).startswith(f"{path}:3: ")
    assert what in str(err.value)


def test_box_slightly_outside_is_clipped_with_a_warning(tmp_path: Path, caplog) -> None:
    path = write(tmp_path, "0 -3 -1 66 50\n")
    with caplog.at_level(logging.WARNING, logger="train.labels"):
        rows = parse_label_file(path, W, H, tolerance_px=4.0).annotations
    np.testing.assert_allclose(rows, [[0, 0, 0, W, H]])
    assert any(f"{path}:1" in r.getMessage() and "clipped" in r.getMessage()
               for r in caplog.records)


def test_tolerance_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "0 1 2 66 40\n")
    with pytest.raises(DataError, match=":1: .*tolerance 1"):
        parse_label_file(path, W, H, tolerance_px=1.0)


def test_class_offset_maps_one_based_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "1 1 2 30 40\n2 3 4 20 30\n")
    rows = parse_label_file(path, W, H, class_offset=1).annotations
    np.testing.assert_array_equal(rows[:, 0], [0, 1])
    with pytest.raises(DataError, match=":1: class_id 0 outside 1..2"):
        parse_label_file(write(tmp_path, "0 1 2 30 40\n", "zero.txt"), W, H, class_offset=1)


def test_more_classes_widen_the_valid_range(tmp_path: Path) -> None:
    rows = parse_label_file(write(tmp_path, "4 1 2 30 40\n"), W, H, num_classes=5).annotations
    assert rows[0, 0] == 4


def test_read_class_ids_skips_malformed_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "2 1 2 3 4\n# c\nx 1 2 3 4\n1.0 0 0 1 1\n")
    assert read_class_ids(path) == [2, 1]

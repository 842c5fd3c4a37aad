"""Label files: one action per line, `<class_id> <x1> <y1> <x2> <y2>` in pixels (xyxy).

A label file that is empty or missing means the video holds no action. Blank lines and lines
starting with `#` are ignored. Every problem is refused with `DataError("<path>:<line>: <what>")`
so the user can open the file at that line; the one exception is a box that pokes out of the
frame by at most `tolerance_px` (annotation tools round and drag past the border), which is
clipped to the frame with a warning.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np

from detector.errors import DataError

log = logging.getLogger(__name__)


def read_class_ids(path: str | Path) -> list[int]:
    """The integer class ids of a label file's well-formed lines, without any validation.

    Used to detect the reference layout's 1-based ids before the files are parsed for real;
    malformed lines are skipped here and reported by `parse_label_file`.
    """
    ids: list[int] = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ids
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        if math.isfinite(value) and value.is_integer():
            ids.append(int(value))
    return ids


def parse_label_file(path: Optional[str | Path], width: int, height: int,
                     tolerance_px: float = 4.0, num_classes: int = 2,
                     class_offset: int = 0) -> np.ndarray:
    """Read and validate one label file.

    Args:
        path: the label file; None or a missing file means no action.
        width, height: the video's frame size in pixels, to check the boxes against.
        tolerance_px: how far a box may extend outside the frame and still be accepted
            (clipped, with a warning).
        num_classes: valid class ids are 0 .. num_classes - 1 (after `class_offset`).
        class_offset: subtracted from every class id before checking it (1 for the reference
            layout's 1-based ids).
    Returns:
        (K, 5) float32 array, rows `[class, x1, y1, x2, y2]` in pixels; K = 0 for no action.
    Raises:
        DataError: "<path>:<line>: <what>" for the first bad line, or "<path>: ..." when the
            file cannot be read.
    """
    empty = np.zeros((0, 5), dtype=np.float32)
    if path is None:
        return empty
    path = Path(path)
    if not path.exists():
        return empty
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read label file: {exc.strerror or exc}") from None

    rows: list[list[float]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{line_no}"
        parts = stripped.split()
        if len(parts) != 5:
            raise DataError(f"{where}: expected 5 fields '<class_id> <x1> <y1> <x2> <y2>', "
                            f"got {len(parts)}")
        values = []
        for name, token in zip(("class_id", "x1", "y1", "x2", "y2"), parts):
            try:
                v = float(token)
            except ValueError:
                raise DataError(f"{where}: {name} {token!r} is not a number") from None
            if not math.isfinite(v):
                raise DataError(f"{where}: {name} {token!r} is not a finite number")
            values.append(v)
        raw_cls, x1, y1, x2, y2 = values
        if not raw_cls.is_integer():
            raise DataError(f"{where}: class_id {parts[0]!r} is not an integer")
        cls = int(raw_cls) - class_offset
        if not 0 <= cls < num_classes:
            valid = f"{class_offset}..{num_classes - 1 + class_offset}"
            raise DataError(f"{where}: class_id {int(raw_cls)} outside {valid}")
        if x2 <= x1:
            raise DataError(f"{where}: x2 ({x2:g}) must be greater than x1 ({x1:g})")
        if y2 <= y1:
            raise DataError(f"{where}: y2 ({y2:g}) must be greater than y1 ({y1:g})")
        out_by = max(-x1, -y1, x2 - width, y2 - height)
        if out_by > tolerance_px:
            raise DataError(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the "
                            f"{width}x{height} frame by {out_by:g} px (tolerance {tolerance_px:g})")
        if out_by > 0:
            x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
            if x2 <= x1 or y2 <= y1:
                raise DataError(f"{where}: box is empty once clipped to the "
                                f"{width}x{height} frame")
            log.warning("%s: box extends %.3g px outside the %dx%d frame; clipped", where,
                        out_by, width, height)
        rows.append([float(cls), x1, y1, x2, y2])
    if not rows:
        return empty
    return np.asarray(rows, dtype=np.float32)

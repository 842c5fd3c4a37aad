"""Reading video files for training: probe, choose frame indices, decode only those frames.

Decoding is sequential: `read_frames` walks the file once with `grab()` (demux + decode, no
colour conversion) and calls `retrieve()` only for the frames it keeps. Seeking with
`CAP_PROP_POS_FRAMES` is avoided on purpose: with inter-frame codecs it lands on the previous
key frame and decodes forward anyway, is slower for the 16-of-64 patterns used here, and is not
frame-accurate in every backend.

Frames leave this module as RGB uint8 (T, H, W, 3), the project's convention.

File names that are not UTF-8 (`caf\\xe9.mp4` from an archive made on Windows: Python holds such
a name with surrogate escapes) are never handed to OpenCV: `cv2.VideoCapture` crashes the
process (SIGSEGV) on them. `name_problem(path)` tells them apart and `open_video` refuses them with a
`DataError` naming the file escaped (`shown(path)`: the raw bytes as `\\xNN`), so every verb lists
the file as a problem and goes on.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from detector.errors import DataError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` found out about a video file.

    Attributes:
        frames: number of decodable frames (counted by reading when the container does not say).
        fps: frames per second as the container reports it (0.0 when unknown).
        width, height: frame size in pixels.
    """
    frames: int
    fps: float
    width: int
    height: int


def escape_text(text: str) -> str:
    """`text` with the bytes of a non-UTF-8 file name shown as `\\xNN` escapes (Python keeps
    them as lone surrogates, which cannot be printed or written as UTF-8)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:                # a surrogate not from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def shown(path: str | Path) -> str:
    """A path as it can be printed: itself, or with its non-UTF-8 bytes escaped (`\\xe9`)."""
    return escape_text(str(path))


def name_problem(path: str | Path) -> str | None:
    """Why OpenCV must not be given this path (its name is not UTF-8), or None."""
    text = str(path)
    if shown(text) == text:
        return None
    return (f"{shown(text)}: the file name is not valid UTF-8 (bytes shown as \\xNN), which "
            f"the video decoder cannot open; rename the file (e.g. `convmv -f latin1 -t utf8 "
            f"--notest FILE`, or re-extract the archive with the right encoding)")


def open_video(path: str | Path) -> cv2.VideoCapture:
    """An opened `cv2.VideoCapture` of a video file; release it when done.

    Raises:
        DataError: the name is not UTF-8 (never given to OpenCV), the file is missing or it
            cannot be opened.
    """
    path = Path(path)
    problem = name_problem(path)
    if problem is not None:
        raise DataError(problem)     # cv2.VideoCapture would crash the process on this name
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise DataError(f"{path}: cannot open video (unsupported codec or corrupt file)")
    return cap


def probe(path: str | Path, count: bool = False) -> VideoInfo:
    """Frame count, frame rate and size of a video.

    Args:
        path: the video file.
        count: count frames by reading the whole file even when the container reports a count.
            Done automatically when the reported count is 0 or negative (some AVI/MKV files).
    Returns:
        VideoInfo.
    Raises:
        DataError: the file is missing, cannot be opened or holds no decodable frame.
    """
    path = Path(path)
    cap = open_video(path)
    try:
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if not math.isfinite(fps) or fps < 0:
            fps = 0.0
        if count or frames <= 0 or width <= 0 or height <= 0:
            frames = 0
            while True:
                if width <= 0 or height <= 0:
                    ok, frame = cap.read()
                    if ok:
                        height, width = frame.shape[:2]
                else:
                    ok = cap.grab()
                if not ok:
                    break
                frames += 1
    finally:
        cap.release()
    if frames <= 0:
        raise DataError(f"{path}: video has no decodable frames")
    return VideoInfo(frames=frames, fps=fps, width=width, height=height)


def sample_indices(n_frames: int, T: int, jitter: Optional[float] = 0.0,
                   rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """T frame indices spread uniformly over a video, as the reference implementation does.

    Without jitter this is exactly `np.linspace(0, n_frames - 1, T).astype(int)`. With jitter,
    each index moves by a random offset of up to `jitter / 2` of the spacing between samples
    either way (so it stays within its own segment and the indices stay non-decreasing).

    Args:
        n_frames: frames in the video (>= 1).
        T: indices wanted (>= 1); repeats occur when n_frames < T.
        jitter: 0 (or None) for the reference sampling, up to 1 for offsets across the
            whole segment.
        rng: random generator for the offsets; required when jitter > 0.
    Returns:
        (T,) int64 array of indices in [0, n_frames - 1], non-decreasing.
    """
    if n_frames < 1 or T < 1:
        raise ValueError(f"need n_frames >= 1 and T >= 1, got {n_frames}, {T}")
    pos = np.linspace(0, n_frames - 1, T)
    if jitter and T > 1 and n_frames > 1:
        if rng is None:
            raise ValueError("sample_indices: jitter > 0 needs an rng")
        spacing = (n_frames - 1) / (T - 1)
        amount = min(max(float(jitter), 0.0), 1.0)
        pos = pos + rng.uniform(-0.5, 0.5, size=T) * amount * spacing
        pos = np.clip(np.rint(pos), 0, n_frames - 1)
        # Rounding of neighbours whose offsets meet half-way can cross; sorting restores order.
        pos = np.sort(pos)
    return pos.astype(np.int64)


def read_frames(path: str | Path, indices: Sequence[int] | np.ndarray,
                size: Optional[Sequence[int]] = None) -> np.ndarray:
    """Decode the frames at `indices`, resized, as RGB.

    The file is read once from the start; frames not asked for are only `grab()`bed. Indices
    may repeat and need not be sorted. When the file ends before the largest index (container
    frame counts can be wrong), the missing positions repeat the last frame decoded and a warning
    is logged.

    Args:
        path: the video file.
        indices: frame numbers (0-based) to return, in output order.
        size: (H, W) to resize to with bilinear interpolation; None keeps the file's size.
    Returns:
        (len(indices), H, W, 3) uint8 RGB array.
    Raises:
        DataError: the file cannot be opened or no requested frame could be decoded.
    """
    path = Path(path)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("read_frames: no indices given")
    if idx.min() < 0:
        raise ValueError(f"read_frames: negative frame index {int(idx.min())}")
    # Output positions wanting each frame number: one decode serves every repeat.
    wanted: dict[int, list[int]] = {}
    for out_pos, frame_no in enumerate(idx.tolist()):
        wanted.setdefault(frame_no, []).append(out_pos)
    last = int(idx.max())

    out: Optional[np.ndarray] = None
    filled = np.zeros(idx.size, dtype=bool)
    last_good: Optional[np.ndarray] = None
    cap = open_video(path)
    try:
        frame_no = 0
        while frame_no <= last:
            if not cap.grab():
                break
            if frame_no in wanted:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    if out is None:
                        h, w = (bgr.shape[:2] if size is None else (int(size[0]), int(size[1])))
                        out = np.empty((idx.size, h, w, 3), dtype=np.uint8)
                    positions = wanted[frame_no]
                    first = positions[0]
                    # Resize before the colour conversion: converting the smaller image is cheaper.
                    if size is not None and bgr.shape[:2] != out.shape[1:3]:
                        bgr = cv2.resize(bgr, (out.shape[2], out.shape[1]),
                                         interpolation=cv2.INTER_LINEAR)
                    cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[first])
                    for p in positions[1:]:
                        out[p] = out[first]
                    filled[positions] = True
                    last_good = out[first]
                else:
                    log.warning("%s: frame %d could not be decoded", path, frame_no)
            frame_no += 1
    finally:
        cap.release()

    if out is None or last_good is None:
        raise DataError(f"{path}: too few frames: none of the requested frames "
                        f"(up to index {last}) could be decoded")
    if not filled.all():
        # Fill every gap with the nearest earlier good frame (the last good one at the end).
        missing = int((~filled).sum())
        log.warning("%s: video ended or failed after frame %d of %d wanted; repeating the last "
                    "good frame for %d position(s)", path, frame_no - 1, last, missing)
        order = np.argsort(idx, kind="stable")
        prev: Optional[int] = None
        for p in order.tolist():
            if filled[p]:
                prev = p
            else:
                out[p] = out[prev] if prev is not None else last_good
    return out

"""Recording a camera's footage for `vigil calibrate --record MINUTES`.

The camera is opened as the daemon opens it (`streamer.sources`), its frames are written as they
come to an MP4 file under `data_dir/calibration/<camera>/`, and the file is then calibrated on like
any other footage. Recording at most `RECORD_MAX_WIDTH` wide keeps an hour of footage small while
leaving more pixels than either path uses (the video detector's input is 64-224 px, the pose
path's frames at most `detector.pose.sequence.POSE_MAX_WIDTH` = 480 px wide).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from ..masking import mask_url
from ..sources import open_source, parse_source

log = logging.getLogger(__name__)

RECORD_MAX_WIDTH = 640
# A live camera that gives no frame for this long is reopened (as the capture thread would);
# after `RECORD_MAX_REOPENS` failed reopenings in a row the recording stops with what it has.
RECORD_STALL_S = 10.0
RECORD_MAX_REOPENS = 5
FALLBACK_FPS = 15.0


@dataclass
class Recording:
    """What `record_camera` wrote.

    Attributes:
        path: the MP4 file (absent when no frame came).
        frames: frames written.
        seconds: footage length (frames / fps), the time calibration counts.
        fps: the file's frame rate (the source's, else the camera's `fps` setting, else 15).
        reopens: how often a stalled live camera was reopened.
    """
    path: Path
    frames: int
    seconds: float
    fps: float
    reopens: int


class _Closed:
    """A camera that could not be reopened: reads nothing until the next reopening."""

    def read(self) -> tuple[bool, None]:
        return False, None

    def release(self) -> None:
        pass


def _even_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """(w, h) at most `max_width` wide, the source's aspect, even (video encoders like them)."""
    if width > max_width:
        height = round(height * max_width / width)
        width = max_width
    return max(2, width - width % 2), max(2, height - height % 2)


def record_camera(url: str, out: Path, minutes: float, fps_hint: Optional[float] = None,
                  open_timeout_s: float = 10.0, read_timeout_s: float = 10.0,
                  max_width: int = RECORD_MAX_WIDTH,
                  clock: Callable[[], float] = time.monotonic,
                  progress: Optional[Callable[[float], None]] = None) -> Recording:
    """Record `minutes` of a camera's footage into `out` (MP4, `mp4v`).

    A live source (RTSP, V4L2) is recorded for `minutes` of wall-clock time; a file or synthetic
    source, which gives frames as fast as they are read, for `minutes` of its own time (frames /
    fps) or until it ends (a file is not looped: the same footage twice is not more evidence).
    A stalled live source is reopened up to `RECORD_MAX_REOPENS` times in a row; then the
    recording ends early with what it has (the caller checks whether that is enough).

    Args:
        url: the camera's URL (credentials allowed; never logged unmasked).
        out: the MP4 file to write (its folder is created).
        minutes: how long to record, > 0.
        fps_hint: the camera's `fps` setting, used when the source reports no frame rate.
        open_timeout_s, read_timeout_s: FFmpeg network timeouts (streams).
        max_width: frames wider than this are shrunk (aspect kept).
        clock: monotonic seconds (tests).
        progress: called with the seconds recorded so far, about every 10 s of footage.
    Returns:
        a `Recording`.
    Raises:
        OSError: the camera could not be opened at all, or the file could not be written.
        ValueError: `minutes` not above 0.
    """
    if not minutes > 0:
        raise ValueError(f"minutes must be above 0 (got {minutes})")
    spec = parse_source(url)
    reader = open_source(spec, open_timeout_s, read_timeout_s)
    fps = float(getattr(reader, "fps", None) or fps_hint or FALLBACK_FPS)
    if not 1.0 <= fps <= 240.0:          # a container that reports nonsense (0, 90000)
        fps = float(fps_hint or FALLBACK_FPS)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer: Optional[cv2.VideoWriter] = None
    size = None
    frames = reopens = failed = 0
    want_frames = int(round(minutes * 60.0 * fps))
    t0 = last_frame = clock()
    next_report = 10.0
    try:
        while True:
            if spec.live:
                if clock() - t0 >= minutes * 60.0:
                    break
            elif frames >= want_frames:
                break
            ok, frame = reader.read()
            if not ok or frame is None:
                if not spec.live:                     # a file ends (it is not looped: the same
                    break                             # footage twice is not twice the minutes)
                if clock() - last_frame < RECORD_STALL_S:
                    time.sleep(0.05)
                    continue
                if failed >= RECORD_MAX_REOPENS:
                    log.warning("%s: no frames after %d reopenings; recording ends after %.0f s",
                                mask_url(url), failed, frames / fps)
                    break
                reader.release()
                failed += 1
                reopens += 1
                try:
                    reader = open_source(spec, open_timeout_s, read_timeout_s)
                except OSError as exc:
                    log.warning("%s: reopening failed (%s)", mask_url(url), exc)
                    reader = _Closed()
                    time.sleep(min(2.0 ** failed, 10.0))
                last_frame = clock()
                continue
            failed = 0
            last_frame = clock()
            if writer is None:
                size = _even_size(frame.shape[1], frame.shape[0], max_width)
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                if not writer.isOpened():
                    raise OSError(f"cannot write {out}")
            if (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            writer.write(np.ascontiguousarray(frame))
            frames += 1
            if progress is not None and frames / fps >= next_report:
                progress(frames / fps)
                next_report += 10.0
    finally:
        reader.release()
        if writer is not None:
            writer.release()
    return Recording(out, frames, frames / fps, fps, reopens)

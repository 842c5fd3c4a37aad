"""Evidence clips as a browser plays them, and what the review dataset needs to know of a clip.

The evidence writer stores `clip.mp4` as MPEG-4 Part 2 ('mp4v', `streamer/evidence.py`), which
no browser decodes, and OpenCV's wheel has no H.264 encoder. Browsers (Chromium, Firefox, Safari
14.1+) all play VP8 in WebM, which the wheel's FFmpeg writes (libvpx), so the page serves a
WebM copy made on first request and cached under `data_dir/web-cache/` (at most `CACHE_FILES`
files, oldest removed first; the cache is rebuilt from the evidence whenever it is missing).
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2

from ..evidence import safe_name

log = logging.getLogger(__name__)

CACHE_DIR = "web-cache"
CACHE_FILES = 200


@dataclass(frozen=True)
class ClipInfo:
    """A video file's frame count, fps, size and duration in seconds (frames / fps)."""
    frames: int
    fps: float
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0


def clip_info(path: Path) -> Optional[ClipInfo]:
    """What OpenCV reads of a video's header, or None when it cannot open it."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        return ClipInfo(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS)),
                        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()


def transcode_webm(src: Path, dst: Path) -> None:
    """Re-encode `src` as VP8 WebM at `dst` (atomic: a temporary file, then rename).

    Raises:
        OSError: the source cannot be read, or the encoder cannot be opened or wrote nothing.
    """
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise OSError(errno.EIO, "cannot read the clip", str(src))
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.webm")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    writer = None
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"VP80"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(errno.EIO, "cannot open the VP8 encoder", str(tmp))
            writer.write(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if writer is None or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise OSError(errno.EIO, "the clip has no frames", str(src))
    os.replace(tmp, dst)


class ClipCache:
    """WebM copies of evidence clips in `data_dir/web-cache/`, made one at a time (the
    daemon's CPU is for its cameras), at most `CACHE_FILES` kept (oldest removed first).

    Args:
        data_dir: the daemon's data_dir.
    """

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / CACHE_DIR
        self._lock = threading.Lock()

    def webm(self, key: str, src: Path) -> Path:
        """The WebM copy of `src`, made when missing or older than the source.

        Args:
            key: the event id (names the cached file).
            src: the evidence clip (already checked by `paths.evidence_path`).
        Raises:
            OSError: as `transcode_webm`.
        """
        dst = self.dir / f"{safe_name(key)}.webm"
        with self._lock:
            if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
                return dst
            self.dir.mkdir(parents=True, exist_ok=True)
            transcode_webm(src, dst)
            _trim(self.dir)
        return dst


def _trim(cache: Path) -> None:
    files = sorted(cache.glob("*.webm"), key=lambda p: p.stat().st_mtime)
    for old in files[:max(len(files) - CACHE_FILES, 0)]:
        old.unlink(missing_ok=True)

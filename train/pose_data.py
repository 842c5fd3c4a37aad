"""Pose sequences of labelled videos: BlazePose run once per video, then cached on disk.

Training, evaluation and cross-validation of the pose collapse model all start from each
video's `PoseSequence`: the frames the daemon's pose path would look at (about 8 a second,
`detector.pose.sequence.sample_indices`), shrunk as its display ring shrinks them (INTER_AREA to
at most 480 px wide), tracked by one `BlazePose`. Running BlazePose costs about 20 ms a frame, so
the result is cached: one `.npz` per video, keyed by the file's content fingerprint
(`train.cache.file_fingerprint`), the sampling and the pose models' files. A second epoch, fold
or run reads no video at all.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from detector.pose.blazepose import BlazePose
from detector.pose.runner import BLAZEPOSE_DIR, DETECTOR_FILE, LANDMARK_FILE
from detector.pose.sequence import (POSE_FPS, POSE_MAX_WIDTH, PoseSequence, pose_frame_size,
                                    sample_indices)

from .cache import file_fingerprint
from .video_io import open_video, probe

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def iter_frames(path: Path, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, BGR frame) for each of the sorted `indices` the file holds, read once.

    Raises:
        DataError: the file cannot be opened.
    """
    cap = open_video(path)
    wanted = set(int(i) for i in indices)
    last = int(indices[-1]) if len(indices) else -1
    try:
        n = 0
        while n <= last and cap.grab():
            if n in wanted:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    yield n, frame
            n += 1
    finally:
        cap.release()


def track_video(path: str | Path, tracker: BlazePose, pose_fps: float = POSE_FPS,
                max_width: int = POSE_MAX_WIDTH) -> PoseSequence:
    """BlazePose over one video as the daemon's pose path would see it.

    Args:
        path: the video; tracker: a `BlazePose` (reset here: each video is a new stream).
        pose_fps: samples per second; max_width: frames are shrunk to at most this width.
    Returns:
        the video's `PoseSequence` (t = frame number / fps).
    Raises:
        DataError: the video cannot be read.
    """
    path = Path(path)
    info = probe(path)
    fps = info.fps or 25.0
    size = pose_frame_size(info.width, info.height, max_width)
    tracker.reset()
    times, found = [], []
    for n, bgr in iter_frames(path, sample_indices(info.frames, fps, pose_fps)):
        h, w = bgr.shape[:2]
        interp = cv2.INTER_AREA if w >= size[0] else cv2.INTER_LINEAR
        rgb = cv2.cvtColor(cv2.resize(bgr, size, interpolation=interp), cv2.COLOR_BGR2RGB)
        times.append(n / fps)
        found.append(tracker(rgb))
    return PoseSequence.from_frames(times, found, size)


class PoseCache:
    """Pose sequences on disk, one `.npz` per (video content, sampling, pose models).

    Args:
        dir: the cache directory (created when first written).
        pose_fps, max_width: the sampling (part of the key).
        threads: CPU threads for BlazePose when a video must be tracked.
    Attributes:
        hits, misses: sequences read from disk / computed.
    """

    def __init__(self, dir: str | Path, pose_fps: float = POSE_FPS,
                 max_width: int = POSE_MAX_WIDTH, threads: int = 1):
        self.dir = Path(dir)
        self.pose_fps, self.max_width, self.threads = pose_fps, max_width, threads
        self.hits = self.misses = 0
        self._tracker: BlazePose | None = None
        models = hashlib.sha1()
        for name in (DETECTOR_FILE, LANDMARK_FILE):
            models.update((BLAZEPOSE_DIR / name).read_bytes())
        self._models = models.hexdigest()[:12]

    def key(self, video: Path) -> str:
        prep = json.dumps({"v": _FORMAT_VERSION, "fps": self.pose_fps, "w": self.max_width,
                           "models": self._models}, sort_keys=True)
        return hashlib.sha1(f"{file_fingerprint(video)}|{prep}".encode()).hexdigest()

    def get(self, video: str | Path) -> PoseSequence:
        """The video's pose sequence, from the cache or tracked now (and stored).

        Raises:
            DataError: the video cannot be read.
        """
        video = Path(video)
        entry = self.dir / (self.key(video) + ".npz")
        if entry.exists():
            try:
                with np.load(entry, allow_pickle=False) as d:
                    seq = PoseSequence.from_arrays(d)
                self.hits += 1
                return seq
            except (OSError, ValueError, KeyError) as exc:
                log.warning("%s: unreadable pose cache entry (%s); tracking again", entry, exc)
        self.misses += 1
        if self._tracker is None:
            self._tracker = BlazePose(threads=self.threads)
        seq = track_video(video, self._tracker, self.pose_fps, self.max_width)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".npz")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **seq.to_arrays())
            os.replace(tmp, entry)
        except OSError as exc:
            log.warning("%s: cannot write pose cache entry (%s); continuing without it",
                        entry, exc)
        return seq

"""The daemon's windows, worker and event logic, run offline on video files.

What `vigil serve` would make of a recording, without a camera, a clock or a socket: every frame
is decoded and prepared as a capture thread prepares it (`streamer.capture.model_frame`: roi
crop, INTER_AREA, RGB); a window ends every `stride` frames once a whole window exists
(`streamer.windows.window_seqs`: the checkpoint's `clip_seconds` at the file's frame rate); the
windows go through `streamer.worker.InferenceWorker` in batches, and their results, in time
order, through `streamer.events.EventTracker`. Time is the file's own (frame index / fps), so
the result does not depend on how busy the machine is; what it leaves out is real-time capture
(dropped frames, skipped windows), which `vigil bench pipeline` measures.

The pose path (`detector.pose`, for the cameras that watch collapse) is replayed the same way
from a clip's cached pose sequence: a window of the pose model's `window_s` ending every
`stride_s` seconds (`score_pose_clip`), its class taken from the pose path only.

Used by `vigil calibrate` (`streamer.tuning.calibrate`) and `scripts/alert-check.py`, so both
measure the same thing the daemon does.
"""
from __future__ import annotations

import logging
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import cv2
import numpy as np

from detector.errors import DataError
from detector.pose.sequence import PoseSequence

from ..capture import model_frame
from ..config import SmoothingConfig
from ..events import EventTracker
from ..types import ClassScore, WindowResult
from ..windows import window_seqs, window_span
from ..worker import InferenceWorker, WindowMeta

log = logging.getLogger(__name__)

CAMERA = "clip"           # the camera name every offline window carries


@dataclass
class ClipScores:
    """One file's windows as the worker scored them, and what its label says.

    Attributes:
        stem: the file's name (dataset stem).
        source: its source (dataset source, or the folder) for per-source tables.
        label: the action's class name, or None for quiet footage.
        t_action: seconds into the file where the action starts (0: the whole clip is one).
        minutes: footage played (an action clip looped to `loop_s` counts its loops).
        results: the worker's `WindowResult`s in time order (t_end_mono = end frame / fps).
    """
    stem: str
    source: str
    label: str | None
    t_action: float
    minutes: float
    results: list = field(default_factory=list)


def read_frames(path: Path, size: tuple[int, int], roi: Optional[Sequence[float]] = None
                ) -> Iterator[np.ndarray]:
    """Every frame of `path` as the model's ring would hold it: RGB uint8 (H, W, 3), `size` =
    (H, W), cropped to `roi` first.

    Raises:
        DataError: the file cannot be opened or holds no frame.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot be opened as a video")
    h, w = size
    roi_t = tuple(float(v) for v in roi) if roi is not None else None
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            n += 1
            yield model_frame(frame, (w, h), roi_t)
    finally:
        cap.release()
    if n == 0:
        raise DataError(f"{path}: no frame could be decoded")


def video_fps(path: Path, default: float = 25.0) -> float:
    """The frame rate the container reports, or `default` when it reports none."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return float(fps) if fps and 0 < fps < 1000 else default


def looped(frames: Iterable[np.ndarray], fps: float, loop_s: float) -> Iterator[np.ndarray]:
    """`frames` played again and again until at least `loop_s` seconds have passed, as a
    looping file camera plays a short clip (0: once)."""
    if loop_s <= 0:
        yield from frames
        return
    clip = list(frames)
    reps = max(1, int(np.ceil(loop_s * fps / max(len(clip), 1))))
    for _ in range(reps):
        yield from clip


def score_frames(worker: InferenceWorker, frames: Iterable[np.ndarray], fps: float,
                 clip_seconds: float | None, T: int, stride: int, batch: int = 16
                 ) -> tuple[list[WindowResult], int]:
    """The worker's result for every window a camera with this `stride` would take.

    Frames are consumed as they come (a recording of hours is never held whole: only the
    frames of one window span, plus a batch of windows).

    Returns:
        (results in time order, frames read).
    """
    n = window_span(fps, clip_seconds, T)
    span: list[np.ndarray] = []          # the last n frames; span[i] is frame first + i
    first = 0
    out: list[WindowResult] = []
    pending = []
    count = 0
    for frame in frames:
        span.append(frame)
        if len(span) > n:
            span.pop(0)
            first += 1
        end = count
        count += 1
        if end < n - 1 or (end - (n - 1)) % stride:
            continue
        seqs = window_seqs(end, fps, clip_seconds, T)
        h, w = frame.shape[:2]
        meta = WindowMeta(end_seq=end, t_start_wall=seqs[0] / fps, t_end_wall=end / fps,
                          t_end_mono=end / fps, frame_size=(w, h))
        pending.append((CAMERA, np.stack([span[s - first] for s in seqs]), meta))
        if len(pending) >= batch:
            out.extend(worker.infer(pending))
            pending = []
    if pending:
        out.extend(worker.infer(pending))
    return out, count


def score_file(worker: InferenceWorker, path: Path, size: tuple[int, int], stride: int,
               clip_seconds: float | None, T: int, roi: Optional[Sequence[float]] = None,
               fps: float | None = None, loop_s: float = 0.0
               ) -> tuple[list[WindowResult], float, float]:
    """Score one file as a camera would play it (looped to `loop_s` seconds when given).

    Returns:
        (window results, frame rate used, minutes played).
    Raises:
        DataError: the file cannot be opened or decoded.
    """
    fps = fps or video_fps(path)
    results, frames = score_frames(worker, looped(read_frames(path, size, roi), fps, loop_s),
                                   fps, clip_seconds, T, stride)
    return results, fps, frames / fps / 60.0


def looped_pose(seq: PoseSequence, duration: float, loop_s: float
                ) -> tuple[PoseSequence, float]:
    """A clip's pose sequence played on a loop to at least `loop_s` seconds, and its length."""
    if loop_s <= 0 or duration <= 0 or duration >= loop_s or not len(seq):
        return seq, duration
    reps = int(np.ceil(loop_s / duration))
    return PoseSequence(np.concatenate([seq.t + k * duration for k in range(reps)]),
                        np.concatenate([seq.points] * reps), np.concatenate([seq.world] * reps),
                        np.concatenate([seq.presence] * reps), seq.frame_size), duration * reps


def score_pose_clip(model, seq: PoseSequence, duration: float, stride_s: float,
                    frame_size: tuple[int, int], fps: float) -> list[WindowResult]:
    """The pose path's `WindowResult`s of one clip: a window ending every `stride_s` seconds."""
    out = []
    w = model.cfg.window_s
    for t_end in np.arange(min(w, duration), duration + 1e-6, stride_s):
        score, box = model.score_window(seq.between(t_end - w, t_end))
        out.append(WindowResult(CAMERA, {model.cfg.label: ClassScore(
            model.cfg.label, score, box or (0.0, 0.0, 1.0, 1.0))}, frame_size,
            t_end - w, float(t_end), float(t_end), int(t_end * fps)))
    return out


def clip_label(rec, classes: Sequence[str]) -> tuple[str | None, float]:
    """A labelled clip's action (or None) and where in it the action starts (0: from the
    first frame)."""
    if not rec.is_positive:
        return None, 0.0
    seg = rec.segments[0]
    return classes[int(rec.annotations[0, 0])], 0.0 if np.isnan(seg[0]) else float(seg[0])


@dataclass
class Paths:
    """What scores a camera's windows offline, as the daemon's paths do (`streamer.routing`).

    Attributes:
        worker: the video detector's `InferenceWorker`, or None (the pose path alone).
        model_cfg: its `ModelConfig` (input size, frames, clip length); None without it.
        pose_model: the pose collapse model (`detector.pose.collapse`), or None; its class is
            then taken from the pose path only.
        pose_cache: the clips' pose sequences (`train.pose_data.PoseCache`) for `pose_model`.
        pose_stride_s: seconds between the pose path's windows.
        video_classes: the classes taken from the video detector (None: all it scores but the
            pose model's).
    """
    worker: Optional[InferenceWorker] = None
    model_cfg: object = None
    pose_model: object = None
    pose_cache: object = None
    pose_stride_s: float = 0.5
    video_classes: Optional[set[str]] = None

    def score(self, path: Path, stride: int, fps: float, duration_s: float,
              frame_size: tuple[int, int], loop_s: float = 0.0,
              clip_seconds: Optional[float] = None, roi: Optional[Sequence[float]] = None
              ) -> tuple[list[WindowResult], float]:
        """One file's window results in time order, and the minutes played.

        Args:
            path: the video file.
            stride: frames between the video detector's windows.
            fps: its frame rate.
            duration_s: its length (the pose path's clock).
            frame_size: (width, height) of its frames (for the pose boxes).
            loop_s: play it looped to this many seconds (0: once).
            clip_seconds: the window length (None: the model's `clip_seconds`).
            roi: the camera's region of interest for the video detector.
        Raises:
            DataError: the file cannot be opened or decoded.
        """
        results: list[WindowResult] = []
        minutes = duration_s / 60.0
        if self.worker is not None:
            cfg = self.model_cfg
            results, _, minutes = score_file(
                self.worker, path, tuple(cfg.input.size), stride,
                clip_seconds or cfg.input.clip_seconds, cfg.input.frames, roi=roi, fps=fps,
                loop_s=loop_s)
            pose_label = self.pose_model.cfg.label if self.pose_model is not None else None
            results = [replace(r, scores={k: v for k, v in r.scores.items()
                                          if k != pose_label and (self.video_classes is None
                                                                  or k in self.video_classes)})
                       for r in results]
        if self.pose_model is not None:
            seq, duration = looped_pose(self.pose_cache.get(path), duration_s, loop_s)
            results = sorted(results + score_pose_clip(self.pose_model, seq, duration,
                                                       self.pose_stride_s, frame_size, fps),
                             key=lambda r: r.t_end_mono)
            if self.worker is None:
                minutes = duration / 60.0
        return results, minutes


def pose_path(checkpoint: str | Path) -> tuple[object, object]:
    """A pose collapse checkpoint (`vigil`: the shipped one) and the cache of pose sequences its
    own training run used (its recipe's `data.cache_dir`), so nothing is tracked twice."""
    from detector.pose.collapse import load_pose_checkpoint
    from detector.schema import from_dict
    from train.pose_data import PoseCache
    from train.pose_trainer import PoseDataConfig

    model, meta = load_pose_checkpoint(checkpoint)
    data_cfg = from_dict(PoseDataConfig, (meta.get("train_config") or {}).get("data"), "data")
    return model, PoseCache(data_cfg.resolved_cache_dir(), model.cfg.fps)


def score_records(paths: Paths, records: Sequence, stride: int, loop_s: float,
                  classes: Sequence[str], name: str = "model") -> list[ClipScores]:
    """Score labelled clips (`train.records.VideoRecord`s) as the daemon would.

    Args:
        paths: what scores them (`Paths`).
        records: the clips.
        stride: frames between the video detector's windows.
        loop_s: action clips are looped to this many seconds (a looping file camera; most fight
            clips last about one window); quiet clips play once.
        classes: the class names the records' labels index.
        name: for the progress log.
    """
    clips = []
    t0 = time.monotonic()
    for n, rec in enumerate(records, 1):
        label, t_action = clip_label(rec, classes)
        results, minutes = paths.score(Path(rec.video), stride, rec.fps or 25.0,
                                       rec.duration_s, (rec.width, rec.height),
                                       loop_s=loop_s if rec.is_positive else 0.0)
        clips.append(ClipScores(rec.stem, rec.source, label, t_action, minutes, results))
        if n % 25 == 0:
            log.info("%s: %d/%d clips, %.0f s", name, n, len(records), time.monotonic() - t0)
    return clips


def clip_starts(results: Sequence[WindowResult], smoothing: SmoothingConfig,
                classes: Sequence[str]) -> list[tuple[float, str]]:
    """(time in the file, label) of every `start` alert the daemon's event logic raises."""
    tracker = EventTracker(smoothing, list(classes), clock=lambda: 0.0)
    starts: list[tuple[float, str]] = []
    for result in results:
        for msg in tracker.observe(result):
            if msg.get("type") == "start":
                starts.append((result.t_end_mono, msg["label"]))
    return starts


@dataclass
class ClassOutcome:
    """What one class's smoothing setting does on a set of clips (`class_outcome`).

    Attributes:
        false_starts: starts of the class on quiet clips, per source.
        quiet_minutes: minutes of quiet footage, per source.
        positives: stems of the clips labelled with the class.
        latencies: stem -> seconds from the action's start to the first right start (a clip
            with no right start is missing).
        false_times: (stem, seconds) of every start on quiet footage.
    """
    false_starts: dict[str, int]
    quiet_minutes: dict[str, float]
    positives: list[str]
    latencies: dict[str, float]
    false_times: list[tuple[str, float]]

    @property
    def per_hour(self) -> float:
        """False starts per hour of quiet footage (nan without quiet footage)."""
        minutes = sum(self.quiet_minutes.values())
        return 60.0 * sum(self.false_starts.values()) / minutes if minutes else float("nan")

    def found(self, within: float | None = None) -> int:
        """Action clips with a right start (within `within` seconds of the action, if given)."""
        return sum(within is None or t <= within for t in self.latencies.values())

    @property
    def median_latency(self) -> float:
        return statistics.median(self.latencies.values()) if self.latencies else float("nan")


def class_setting(base: SmoothingConfig, label: str, on: float, min_windows: int
                  ) -> SmoothingConfig:
    """`label`'s own smoothing (`smoothing.classes` applied) with `on_threshold` and
    `min_windows` replaced; `off_threshold` keeps its distance below (but stays at least 0.05,
    or half of `on` for thresholds under 0.1)."""
    own = replace(base.for_class(label), classes={})
    gap = own.on_threshold - own.off_threshold
    off = on - gap if on - gap >= 0.05 else min(0.05, on / 2)
    return replace(own, on_threshold=on, off_threshold=round(off, 4), min_windows=min_windows)


def class_outcome(clips: Sequence[ClipScores], setting: SmoothingConfig, classes: Sequence[str],
                  label: str) -> ClassOutcome:
    """`label`'s starts under `setting` on the quiet clips and the clips labelled `label`.

    Each (camera, label) is smoothed on its own in the daemon, so one class's setting changes
    no other class's alerts: clips of other labels are left out.
    """
    false = defaultdict(int)
    minutes = defaultdict(float)
    positives, latencies, false_times = [], {}, []
    for c in clips:
        if c.label is not None and c.label != label:
            continue
        starts = [t for t, lab in clip_starts(c.results, setting, classes) if lab == label]
        if c.label is None:
            false[c.source] += len(starts)
            minutes[c.source] += c.minutes
            false_times += [(c.stem, t) for t in starts]
        else:
            positives.append(c.stem)
            if starts:
                latencies[c.stem] = starts[0] - c.t_action
    return ClassOutcome(dict(false), dict(minutes), positives, latencies, false_times)

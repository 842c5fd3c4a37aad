"""Offline detection on video files (`vigil detect`).

Clip mode (default): one row per video, the reference inference script's prediction: T frames
spread over the whole video, the best query of the best foreground class when its score is at
least the threshold. Window mode (`windows=STRIDE` seconds): the video is cut into windows of the
checkpoint's `clip_seconds`, one every STRIDE seconds, and every window gets a row with its time
span. Each video is read once, front to back, without seeking (windows are assembled from the
frames as they stream past); decoding runs in DataLoader worker processes, so it overlaps the
model's work on the previous batch.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from detector.errors import DataError, VigilError

from . import video_io

log = logging.getLogger(__name__)


def find_videos(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively) into video files, sorted per folder.

    Raises:
        DataError: a path does not exist, or nothing to process was found.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*")
                          if f.is_file() and f.suffix.lower() in video_io.VIDEO_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not out:
        raise DataError(f"no video files ({', '.join(video_io.VIDEO_SUFFIXES)}) in "
                        f"{', '.join(map(str, paths))}")
    return out


@dataclass(frozen=True)
class Window:
    """T frame indices of one video and the time span they cover."""
    start_s: float
    end_s: float
    indices: np.ndarray


def plan_windows(frames: int, fps: float, T: int, stride_s: float | None,
                 window_s: float | None) -> list[Window]:
    """The windows of a video.

    Args:
        frames, fps: the video's frame count and rate (fps 0 = unknown, taken as 25).
        T: frames per window.
        stride_s: seconds between window starts; None = one window over the whole video.
        window_s: window length in seconds (ignored without a stride).
    Returns:
        Windows in time order; a video shorter than one window gets one window over all of it.
    """
    fps = fps if fps and fps > 0 else 25.0
    duration = frames / fps
    if stride_s is None or window_s is None or window_s >= duration:
        return [Window(0.0, duration, video_io.sample_indices(frames, T))]
    span = max(int(round(window_s * fps)), 1)
    step = max(stride_s * fps, 1e-9)
    out = []
    k = 0
    while True:
        first = int(round(k * step))
        if first + span > frames:
            break
        idx = first + video_io.sample_indices(span, T)
        out.append(Window(first / fps, (first + span) / fps, idx))
        k += 1
    return out


def stream_windows(path: Path, windows: Sequence[Window], size: Sequence[int]
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """Read a video once, front to back, yielding each window's clip as soon as it is complete.

    Only the frames some unfinished window still needs are kept, so memory is bounded by one
    window's span, not the video's length.

    Args:
        path: the video.
        windows: from `plan_windows`.
        size: (H, W) of the clips.
    Yields:
        (window number, (T, H, W, 3) uint8 RGB clip).
    Raises:
        DataError: the file cannot be opened or ends before a window's first frame.
    """
    import cv2

    need: dict[int, list[int]] = {}
    for w, win in enumerate(windows):
        for i in win.indices.tolist():
            need.setdefault(int(i), []).append(w)
    ends = [int(win.indices.max()) for win in windows]
    kept: dict[int, np.ndarray] = {}
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open video (unsupported codec or corrupt file)")
    h, w_ = int(size[0]), int(size[1])
    next_win, frame_no, last_good = 0, 0, None
    try:
        while next_win < len(windows):
            grabbed = cap.grab()
            if grabbed and frame_no in need:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    bgr = cv2.resize(bgr, (w_, h), interpolation=cv2.INTER_LINEAR)
                    kept[frame_no] = last_good = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                else:
                    log.warning("%s: frame %d could not be decoded", path, frame_no)
            # Emit every window whose last frame has now passed (or the file ended): a frame
            # that could not be decoded is replaced by the latest good one.
            while next_win < len(windows) and (not grabbed or frame_no >= ends[next_win]):
                if last_good is None:
                    raise DataError(f"{path}: no frame of window {next_win} could be decoded")
                win = windows[next_win]
                clip = np.stack([kept.get(int(i), last_good) for i in win.indices])
                yield next_win, clip
                next_win += 1
                first_needed = (int(windows[next_win].indices.min()) if next_win < len(windows)
                                else math.inf)
                for f in [f for f in kept if f < first_needed]:
                    del kept[f]
            if not grabbed:
                break
            frame_no += 1
    finally:
        cap.release()


class VideoWindows(IterableDataset):
    """Windows (or whole-video clips) of many files, each file decoded by one worker.

    Yields (clip uint8 (T, H, W, 3) tensor, info dict: video, index of the file, window number,
    start_s, end_s, width, height, fps, frames; or "error" when the file failed).
    """

    def __init__(self, files: Sequence[Path], frames: int, size: Sequence[int],
                 stride_s: float | None, window_s: float | None) -> None:
        self.files = list(files)
        self.frames = frames
        self.size = (int(size[0]), int(size[1]))
        self.stride_s = stride_s
        self.window_s = window_s

    def __iter__(self) -> Iterator[tuple[torch.Tensor | None, dict[str, Any]]]:
        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info is not None else (0, 1)
        for n in range(start, len(self.files), step):
            path = self.files[n]
            base = {"video": str(path), "file_index": n}
            try:
                meta = video_io.probe(path)
                wins = plan_windows(meta.frames, meta.fps, self.frames, self.stride_s,
                                    self.window_s)
                base.update(width=meta.width, height=meta.height, fps=meta.fps,
                            frames=meta.frames)
                for w, clip in stream_windows(path, wins, self.size):
                    yield torch.from_numpy(clip), dict(base, window=w,
                                                       start_s=round(wins[w].start_s, 3),
                                                       end_s=round(wins[w].end_s, 3))
            except (DataError, OSError) as exc:
                yield None, dict(base, error=str(exc))


def _collate(batch: list[tuple[torch.Tensor | None, dict]]) -> tuple[torch.Tensor | None,
                                                                   list[dict], list[dict]]:
    good = [(c, i) for c, i in batch if c is not None]
    errors = [i for c, i in batch if c is None]
    clips = torch.stack([c for c, _ in good]) if good else None
    return clips, [i for _, i in good], errors


def detect(paths: Sequence[str | Path], checkpoint: str | Path, windows: float | None = None,
           window_seconds: float | None = None, batch: int = 8, workers: int | None = None,
           threshold: float = 0.3, device: str = "auto",
           precision: str = "auto") -> Iterator[dict[str, Any]]:
    """Run the detector over videos, yielding one row per video (or per window).

    Args:
        paths: video files and folders.
        checkpoint: a Vigil checkpoint (or a reference `best_model.pth`).
        windows: stride in seconds between windows; None = one clip per video.
        window_seconds: window length; default the checkpoint's `input.clip_seconds`.
        batch: clips per forward pass.
        workers: decoding processes (default: up to 2, one per file).
        threshold: minimum score of a detection.
        device: `auto`, `cpu`, `cuda`, ...
        precision: `auto`, `fp32`, `bf16`, `fp16` (see `detector.precision`).
    Yields:
        {"video", "class" (name or "none"), "score", "box" ([x1, y1, x2, y2] pixels or None),
         "width", "height"} plus "start_s", "end_s" in window mode; a failed file yields
        {"video", "error"}.
    """
    from detector.checkpoint import load_checkpoint
    from detector.postprocess import clip_predictions
    from detector.precision import autocast, autocast_dtype
    from detector.preprocess import normalize_clips

    from .engine import resolve_device

    files = find_videos(paths)
    dev = resolve_device(device)
    model, cfg, _ = load_checkpoint(checkpoint, device=dev)
    amp = autocast_dtype(dev, precision)
    if windows is not None:
        if windows <= 0:
            raise VigilError(f"--windows: stride must be > 0 seconds, got {windows}")
        window_seconds = window_seconds or cfg.input.clip_seconds
        if not window_seconds:
            raise VigilError(f"{checkpoint}: the checkpoint does not record clip_seconds; give "
                             "the window length with --window-seconds")
    data = VideoWindows(files, cfg.input.frames, cfg.input.size, windows, window_seconds)
    n_workers = min(2, len(files)) if workers is None else workers
    loader = DataLoader(data, batch_size=batch, num_workers=n_workers, collate_fn=_collate)
    with torch.inference_mode():
        for clips, infos, errors in loader:
            for err in errors:
                log.error("%s", err["error"])
                yield {"video": err["video"], "error": err["error"]}
            if clips is None:
                continue
            x = normalize_clips(clips.to(dev), cfg.input.mean, cfg.input.std)
            with autocast(dev, amp):
                outputs = model(x)
            outputs = {k: v.float() for k, v in outputs.items()}
            dets = clip_predictions(outputs, cfg.class_names, threshold)
            for info, det in zip(infos, dets):
                row: dict[str, Any] = {"video": info["video"]}
                if windows is not None:
                    row.update(start_s=info["start_s"], end_s=info["end_s"])
                size = (info["width"], info["height"])
                if det is None:
                    row.update({"class": "none", "score": None, "box": None})
                else:
                    row.update({"class": det.label_name, "score": round(det.score, 4),
                                "box": list(det.xyxy_px(size))})
                row.update(width=size[0], height=size[1])
                yield row


def render_video(src: str | Path, rows: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """Write a copy of `src` with each row's box and label drawn over the frames it covers.

    Args:
        src: the video.
        rows: its rows from `detect` (one clip row covers the whole video; window rows cover
            their span; the latest window covering a frame wins).
        out: the MP4 to write.
    Returns:
        The path written.
    """
    import cv2

    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise DataError(f"{src}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        cap.release()
        raise DataError(f"{out}: cannot open a video writer (fourcc mp4v)")
    frame_no = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            t = frame_no / fps
            active = [r for r in rows if r.get("box") is not None
                      and r.get("start_s", 0.0) <= t <= r.get("end_s", math.inf)]
            if active:
                r = active[-1]
                x1, y1, x2, y2 = (int(v) for v in r["box"])
                cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 0, 255), 2)
                cv2.putText(frame, f"{r['class']} {r['score']:.2f}", (x1 + 2, max(y1 - 4, 12)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
            writer.write(frame)
            frame_no += 1
    finally:
        cap.release()
        writer.release()
    return out

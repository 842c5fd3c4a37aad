"""Offline detection on video files (`vigil detect`).

Clip mode (default): one row per video, the reference inference script's prediction: T frames
spread over the whole video, the best query of the best foreground class when its score is at
least the threshold. Window mode (`windows=STRIDE` seconds): the video is cut into windows of the
checkpoint's `clip_seconds`, one every STRIDE seconds, and every window gets a row with its time
span. Each video is read once, front to back, without seeking (windows are assembled from the
frames as they stream past); decoding runs in DataLoader worker processes, so it overlaps the
model's work on the previous batch. By default (`workers`) each worker decodes its share of the
files and hands over whole batches of its own clips. With `decode_workers=N`, N decoder processes
hand over single clips, which this process gathers into full batches as they come: with many
workers and few clips each, the model still gets full batches (a GPU needs them), and no worker
waits for its own batch to fill. The rows are the same, in another order.

Known labels (`--labels`, read with `train.dataset.scan_dataset`): each row gets `true` and
`correct`. A clip row's true class is the video's. A window's follows the overlap rule of
`window_truth`: the class of a segment that holds the window's centre; "none" when the window
lies entirely outside every segment; otherwise "ambiguous" (partly inside, centre outside),
excluded from every count. A segment with unknown times (NaN) covers the whole clip.
`summarise_video` counts true-positive, false-positive and false-negative windows per video,
whether the action was detected, and the latency: seconds from the segment's start to the end of
the first window predicted as its class that ends after that start (only for a segment with a
known start: for a whole-clip label it would be the window length).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from detector.errors import DataError, VigilError

from detector.precision import checkpoint_precision  # noqa: F401  (re-exported)

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
    cap = video_io.open_video(path)
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
            base = {"video": video_io.shown(path), "file_index": n}
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


def _as_is(item: Any) -> Any:
    """The DataLoader's collate for single items: no conversion (module level: picklable)."""
    return item


def pooled_batches(items: Iterator[tuple[torch.Tensor | None, dict]], batch: int,
                   pinned: torch.Tensor | None = None
                   ) -> Iterator[tuple[torch.Tensor | None, list[dict], list[dict]]]:
    """Single clips from any number of decoders -> (clips, infos, errors) batches of `batch`.

    Args:
        items: (clip (T, H, W, 3) uint8 or None, info) as `VideoWindows` yields them.
        batch: clips per batch (the last one may be short).
        pinned: optional (batch, T, H, W, 3) uint8 pinned buffer to stack into (a CUDA copy
            from it is one DMA); it is reused, so a batch is valid until the next is asked for.
    Yields:
        what `_collate` returns: an error is handed on at once, in a batch of no clips.
    """
    clips: list[torch.Tensor] = []
    infos: list[dict] = []

    def flush() -> tuple[torch.Tensor, list[dict], list[dict]]:
        out = (torch.stack(clips, out=pinned[:len(clips)]) if pinned is not None
               else torch.stack(clips))
        return out, list(infos), []

    for clip, info in items:
        if clip is None:
            yield None, [], [info]
            continue
        clips.append(clip)
        infos.append(info)
        if len(clips) == batch:
            yield flush()
            clips.clear()
            infos.clear()
    if clips:
        yield flush()


class PosePath:
    """The daemon's pose path over whole videos: each video's BlazePose sequence (as
    `train.pose_data.track_video` samples it) and the pose collapse model's windows.

    Args:
        checkpoint: a pose collapse checkpoint, or `vigil` (the shipped one).
    """

    def __init__(self, checkpoint: str | Path):
        from detector.pose.blazepose import BlazePose
        from detector.pose.collapse import load_pose_checkpoint

        self.model, _ = load_pose_checkpoint(checkpoint)
        self.label = self.model.cfg.label
        self._tracker = BlazePose()
        # Rows of a few videos interleave (one decoding worker each): keep their sequences.
        self._seqs: dict[Path, Any] = {}

    def sequence(self, video: Path):
        """The video's pose sequence (tracked once per video)."""
        from .pose_data import track_video

        if video not in self._seqs:
            if len(self._seqs) >= 8:
                self._seqs.pop(next(iter(self._seqs)))
            self._seqs[video] = track_video(video, self._tracker, self.model.cfg.fps)
        return self._seqs[video]

    def window(self, video: Path, end_s: float) -> tuple[float, Any]:
        """(score, normalised xyxy box or None) of the window ending at `end_s`."""
        w = self.model.cfg.window_s
        return self.model.score_window(self.sequence(video).between(end_s - w, end_s))

    def best(self, video: Path, duration: float, stride_s: float = 0.5) -> tuple[float, Any]:
        """The highest-scoring window of the whole video (the clip-mode verdict)."""
        w = self.model.cfg.window_s
        ends = np.arange(min(w, duration), duration + 1e-6, stride_s)
        scored = [self.window(video, float(t)) for t in ends] or [(0.0, None)]
        return max(scored, key=lambda sb: sb[0])


def _bundle_row(row: dict[str, Any], video_scores: dict[str, tuple[float, Any]],
                pose: tuple[float, Any], label: str, threshold: float) -> dict[str, Any]:
    """A row's verdict with the pose path owning `label`: the best of the video detector's
    other classes and the pose score, when it reaches `threshold` (as the daemon decides)."""
    cands = {k: v for k, v in video_scores.items() if k != label}
    cands[label] = pose
    name, (score, box) = max(cands.items(), key=lambda kv: kv[1][0])
    size = (row["width"], row["height"])
    if score < threshold or box is None:
        return {**row, "class": "none", "score": None, "box": None}
    px = [round(box[0] * size[0]), round(box[1] * size[1]), round(box[2] * size[0]),
          round(box[3] * size[1])]
    return {**row, "class": name, "score": round(float(score), 4), "box": px}


def detect(paths: Sequence[str | Path], checkpoint: str | Path, windows: float | None = None,
           window_seconds: float | None = None, batch: int = 8, workers: int | None = None,
           threshold: float = 0.3, device: str = "auto",
           precision: str = "auto", queries: bool = False,
           pose: str | Path | None = None,
           decode_workers: int | None = None) -> Iterator[dict[str, Any]]:
    """Run the detector over videos, yielding one row per video (or per window).

    Args:
        paths: video files and folders.
        checkpoint: a Vigil checkpoint (or a reference `best_model.pth`), or `vigil`: the
            shipped default, which with `pose="vigil"` is exactly what the daemon serves by
            default.
        pose: a pose collapse checkpoint (or `vigil`): its class is then scored by the pose
            path, as the daemon's `model.pose` does (the video detector keeps the others);
            None: the video detector alone.
        windows: stride in seconds between windows; None = one clip per video.
        window_seconds: window length; default the checkpoint's `input.clip_seconds`.
        batch: clips per forward pass.
        workers: decoding processes (default: up to 2, one per file), each handing over
            batches of its own clips.
        decode_workers: instead of `workers`: this many decoding processes (>= 1), each handing
            over single clips that are pooled into full batches here (`pooled_batches`).
        threshold: minimum score of a detection.
        device: `auto`, `cpu`, `cuda`, ...
        queries: also give each row "queries": every query whose best foreground score
            reaches the threshold (`query_detections`), for `--csv-format reference`.
        precision: `auto`, `fp32`, `bf16`, `fp16` (see `detector.precision`); `auto` takes
            the checkpoint's `checkpoint_precision` first (fp16 for a reference recipe run or
            an imported reference model, as the reference's test.py autocasts).
    Yields:
        {"video", "class" (name or "none"), "score", "box" ([x1, y1, x2, y2] pixels or None),
         "width", "height"} plus "start_s", "end_s" in window mode; a failed file yields
        {"video", "error"}.
    Raises:
        VigilError: a bad stride, an unknown window length, or both `workers` and
            `decode_workers`, or `decode_workers` < 1.
    """
    from detector.postprocess import boxes_xyxy, clip_predictions
    from detector.precision import autocast, autocast_dtype
    from detector.preprocess import normalize_clips
    from detector.runtime import load_model, model_device, resolve_device

    from detector.init_weights import resolve_model_path
    from detector.postprocess import class_scores

    if decode_workers is not None:
        if workers is not None:
            raise VigilError("give --workers or --decode-workers, not both")
        if decode_workers < 1:
            raise VigilError(f"--decode-workers must be >= 1, got {decode_workers}")
    files = find_videos(paths)
    dev = resolve_device(device)
    model, cfg, meta = load_model(resolve_model_path(checkpoint), dev,
                                  threads=torch.get_num_threads())
    pose_path = PosePath(pose) if pose is not None else None
    dev = model_device(meta, dev)  # an .onnx model runs on the CPU, in fp32
    if precision == "auto":
        precision = checkpoint_precision(meta)
    amp = autocast_dtype(dev, precision)
    if windows is not None:
        if windows <= 0:
            raise VigilError(f"--windows: stride must be > 0 seconds, got {windows}")
        window_seconds = window_seconds or cfg.input.clip_seconds
        if not window_seconds:
            raise VigilError(f"{checkpoint}: the checkpoint does not record clip_seconds; give "
                             "the window length with --window-seconds")
    # A file whose name is not UTF-8 would crash the decoder (and its worker): named and skipped.
    for bad in [f for f in files if video_io.name_problem(f) is not None]:
        files.remove(bad)
        problem = video_io.name_problem(bad)
        log.error("%s", problem)
        yield {"video": video_io.shown(bad), "error": problem}
    if not files:
        return
    data = VideoWindows(files, cfg.input.frames, cfg.input.size, windows, window_seconds)
    if decode_workers is None:
        n_workers = min(2, len(files)) if workers is None else workers
        batches: Any = DataLoader(data, batch_size=batch, num_workers=n_workers,
                                  collate_fn=_collate)
    else:
        n_workers = min(decode_workers, len(files))
        # Enough clips in flight for a full batch, whichever workers are ahead.
        singles = DataLoader(data, batch_size=None, num_workers=n_workers, collate_fn=_as_is,
                             prefetch_factor=max(2, math.ceil(2 * batch / n_workers)))
        T, (H, W) = cfg.input.frames, cfg.input.size
        pinned = (torch.empty((batch, T, H, W, 3), dtype=torch.uint8, pin_memory=True)
                  if dev.type == "cuda" else None)
        batches = pooled_batches(iter(singles), batch, pinned)
    with torch.inference_mode():
        for clips, infos, errors in batches:
            for err in errors:
                log.error("%s", err["error"])
                yield {"video": err["video"], "error": err["error"]}
            if clips is None:
                continue
            x = normalize_clips(clips.to(dev, non_blocking=True), cfg.input.mean, cfg.input.std)
            with autocast(dev, amp):
                outputs = model(x)
            outputs = {k: v.float() for k, v in outputs.items()}
            dets = clip_predictions(outputs, cfg.class_names, threshold)
            per_query = (query_detections(outputs, cfg.class_names, threshold) if queries
                         else [None] * len(dets))
            if pose_path is not None:
                scores, boxes = class_scores(outputs)
                boxes = boxes_xyxy(boxes)
            for b, (info, det, qd) in enumerate(zip(infos, dets, per_query)):
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
                if qd is not None:
                    row["queries"] = qd
                if pose_path is not None:
                    video = Path(info["video"])
                    verdict = (pose_path.window(video, info["end_s"]) if windows is not None
                               else pose_path.best(video, info["frames"] / (info["fps"] or 25.0)))
                    own = {name: (float(scores[b, c]), boxes[b, c].tolist())
                           for c, name in enumerate(cfg.class_names)}
                    row = _bundle_row(row, own, verdict, pose_path.label, threshold)
                yield row


# --------------------------------------------------------------------------- reference CSV
REFERENCE_NO_OBJECT = "no_object"
REFERENCE_GROUP = ("pred_class", "x1", "y1", "x2", "y2")


def query_detections(outputs: Mapping[str, torch.Tensor], class_names: Sequence[str],
                     threshold: float = 0.3) -> list[list[dict[str, Any]]]:
    """Every query whose best foreground class reaches the threshold, per clip: the reference
    implementation's test.py output.

    Args:
        outputs: {"pred_logits": (B, N, K+1), "pred_boxes": (B, N, 4) cxcywh}.
        class_names: the K foreground classes.
        threshold: minimum softmax probability (test.py: 0.3).
    Returns:
        B lists, in query order, of {"query", "class", "score", "box"}: `box` normalised
        [x1, y1, x2, y2] clamped to the frame.
    """
    from detector.postprocess import boxes_xyxy

    probs = outputs["pred_logits"].detach().float().softmax(-1)[..., :-1].cpu()
    boxes = boxes_xyxy(outputs["pred_boxes"].detach().float()).cpu()
    scores, labels = probs.max(-1)                                   # (B, N)
    out = []
    for b in range(probs.shape[0]):
        out.append([{"query": q, "class": class_names[int(labels[b, q])],
                     "score": float(scores[b, q]),
                     "box": [float(v) for v in boxes[b, q]]}
                    for q in range(probs.shape[1]) if float(scores[b, q]) >= threshold])
    return out


def reference_csv_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, str]]]:
    """The reference test.py's CSV: header and rows.

    One row per video: `video_name` (the file name), then for each query over the threshold, in
    query order, a group `pred_class_i, x1_i, y1_i, x2_i, y2_i` (i from 1; normalised xyxy,
    written as Python writes a float, so they read back exactly); a video with no such query
    has `pred_class_1 = no_object` and nothing else. The header has as many groups as the
    video with the most; shorter rows leave the rest empty (as pandas writes missing values).

    Args:
        rows: `detect(..., queries=True)` clip rows; error rows are left out.
    """
    table: list[dict[str, str]] = []
    groups = 1
    for row in rows:
        if "error" in row:
            continue
        out = {"video_name": Path(row["video"]).name}
        dets = row.get("queries") or []
        if not dets:
            out["pred_class_1"] = REFERENCE_NO_OBJECT
        for i, det in enumerate(dets, start=1):
            out[f"pred_class_{i}"] = det["class"]
            for name, value in zip(REFERENCE_GROUP[1:], det["box"]):
                out[f"{name}_{i}"] = repr(float(value))
        groups = max(groups, len(dets))
        table.append(out)
    header = ["video_name"] + [f"{name}_{i}" for i in range(1, groups + 1)
                               for name in REFERENCE_GROUP]
    return header, table


def write_reference_csv(rows: Sequence[dict[str, Any]], file: Any) -> int:
    """Write `reference_csv_rows` to an open text file; returns the number of rows."""
    import csv

    header, table = reference_csv_rows(rows)
    writer = csv.DictWriter(file, fieldnames=header, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return len(table)


def read_reference_csv(file: Any) -> list[tuple[str, list[tuple[str, list[float]]]]]:
    """Parse a CSV in test.py's column layout: per row (video_name, [(class, [x1, y1, x2, y2])
    for each group i = 1, 2, ... whose pred_class_i is set]); a `no_object` group is kept as
    ("no_object", [])."""
    import csv

    out = []
    for rec in csv.DictReader(file):
        dets: list[tuple[str, list[float]]] = []
        i = 1
        while rec.get(f"pred_class_{i}"):
            cls = rec[f"pred_class_{i}"]
            box = ([] if cls == REFERENCE_NO_OBJECT else
                   [float(rec[f"{n}_{i}"]) for n in REFERENCE_GROUP[1:]])
            dets.append((cls, box))
            i += 1
        out.append((rec["video_name"], dets))
    return out


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

    cap = video_io.open_video(src)
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


# --------------------------------------------------------------------------- known labels
NONE = "none"
AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class Segment:
    """One labelled action: its class name and the seconds it spans (NaN = clip start / end)."""
    label: str
    start_s: float = math.nan
    end_s: float = math.nan

    @property
    def span(self) -> tuple[float, float]:
        """(start, end) seconds with the unknowns made the clip's: 0 and infinity."""
        return (0.0 if math.isnan(self.start_s) else self.start_s,
                math.inf if math.isnan(self.end_s) else self.end_s)


@dataclass(frozen=True)
class VideoTruth:
    """What a video is known to show.

    Attributes:
        video: its file.
        label: the video-level class: the first action's class name, or "none".
        segments: the actions, in label-file order (empty for a "none" video).
    """
    video: Path
    label: str
    segments: tuple[Segment, ...] = ()


def truth_from_record(record: Any, class_names: Sequence[str]) -> VideoTruth:
    """A `VideoTruth` from a `train.dataset.VideoRecord`.

    Args:
        record: with `video`, `annotations` (K, 5) rows `[class, x1, y1, x2, y2]` and optionally
            `segments` (K, 2) seconds (NaN = the whole clip; absent = every action unknown).
        class_names: the checkpoint's class names, index = class id.
    Raises:
        DataError: a class id outside the checkpoint's classes.
    """
    ann = np.asarray(record.annotations, dtype=np.float64).reshape(-1, 5)
    segs = getattr(record, "segments", None)
    segs = (np.full((len(ann), 2), np.nan) if segs is None
            else np.asarray(segs, dtype=np.float64).reshape(-1, 2))
    out = []
    for row, (start, end) in zip(ann, segs):
        cls = int(row[0])
        if not 0 <= cls < len(class_names):
            raise DataError(f"{record.video}: class id {cls} is not one of the checkpoint's "
                            f"{len(class_names)} classes ({', '.join(class_names)})")
        out.append(Segment(class_names[cls], float(start), float(end)))
    return VideoTruth(Path(record.video), out[0].label if out else NONE, tuple(out))


def read_truths(labels: str | Path, class_names: Sequence[str],
                class_folders: Mapping[str, str] | None = None,
                label_id_base: int | None = None,
                allow_outside_root: bool = False) -> list[VideoTruth]:
    """The known labels of a dataset (a folder in any layout, or a CSV manifest such as
    labels.csv), read with `train.dataset.scan_dataset_lenient` (unreadable videos are logged
    and left out).

    Args:
        labels: the folder or CSV file.
        class_names: the checkpoint's classes (label names map to these ids).
        class_folders, label_id_base: the training run's layout options, as `scan_dataset`.
        allow_outside_root: read files that resolve outside the dataset's folder.
    Raises:
        DataError: no usable video, or a label outside the classes.
    """
    from .dataset import scan_dataset_lenient

    records, _ = scan_dataset_lenient(labels, num_classes=len(class_names),
                                      require_positives=False, class_names=tuple(class_names),
                                      class_folders=class_folders, label_id_base=label_id_base,
                                      allow_outside_root=allow_outside_root)
    return [truth_from_record(r, class_names) for r in records]


def match_truths(files: Sequence[Path], truths: Sequence[VideoTruth]) -> dict[str, VideoTruth]:
    """Pair each video file with its labels: by the same file, else by a stem only one labelled
    video has.

    Returns:
        {str(file): truth} for the files that have labels (the others are logged).
    """
    by_path = {t.video.resolve(): t for t in truths}
    stems: dict[str, list[VideoTruth]] = {}
    for t in truths:
        stems.setdefault(t.video.stem, []).append(t)
    out = {}
    for f in files:
        t = by_path.get(Path(f).resolve())
        if t is None and len(stems.get(Path(f).stem, ())) == 1:
            t = stems[Path(f).stem][0]
        if t is not None:
            out[str(f)] = t
    missing = len(files) - len(out)
    if missing:
        log.warning("%d of %d video(s) have no labels: no true class for their rows",
                    missing, len(files))
    return out


def window_truth(start_s: float, end_s: float, truth: VideoTruth) -> str:
    """The true class of the window [start_s, end_s] of a labelled video.

    The rule: the class of the first segment whose [start, end] holds the window's centre;
    "none" when the window does not overlap any segment (touching an end does not count);
    "ambiguous" when it overlaps one but its centre lies outside (part action, part not:
    neither a detection nor a miss should be held against the model there).

    Returns:
        A class name, "none" or "ambiguous".
    """
    centre = (start_s + end_s) / 2.0
    overlaps = False
    for seg in truth.segments:
        s, e = seg.span
        if s <= centre <= e:
            return seg.label
        overlaps = overlaps or (start_s < e and end_s > s)
    return AMBIGUOUS if overlaps else NONE


def label_row(row: dict[str, Any], truth: VideoTruth) -> dict[str, Any]:
    """Add "true" and "correct" to a `detect` row (in place; returned for convenience).

    A window row (with start_s/end_s) gets `window_truth`'s class, a clip row the video's;
    "correct" is whether the predicted class equals it, None for an ambiguous window.
    """
    if "start_s" in row:
        true = window_truth(row["start_s"], row["end_s"], truth)
    else:
        true = truth.label
    row["true"] = true
    row["correct"] = None if true == AMBIGUOUS else row["class"] == true
    return row


def first_segment(truth: VideoTruth) -> Segment | None:
    """The earliest action of a video (unknown start = 0), None for a "none" video."""
    return min(truth.segments, key=lambda s: s.span[0], default=None)


def first_detection(rows: Sequence[dict[str, Any]], segment: Segment) -> dict[str, Any] | None:
    """The first row predicted as the segment's class that ends after the segment starts (a
    window that ends before the action starts is a false alarm, not an early detection; a clip
    row, without times, covers the whole video).

    Args:
        rows: one video's rows from `detect`, in time order.
        segment: the action.
    Returns:
        The row, or None when the action was never detected.
    """
    start = segment.span[0]
    for r in rows:
        if r.get("class") == segment.label and r.get("end_s", math.inf) > start:
            return r
    return None


def detection_latency(rows: Sequence[dict[str, Any]], segment: Segment) -> float | None:
    """Seconds from the segment's start to the end of its `first_detection` window.

    Returns:
        Seconds >= 0 (rounded to ms); None when the action was never detected, its start is
        unknown (a whole-clip label: the number would only be the window length), or the rows
        have no times (clip mode).
    """
    hit = first_detection(rows, segment)
    if hit is None or "end_s" not in hit or math.isnan(segment.start_s):
        return None
    return round(hit["end_s"] - segment.start_s, 3)


def summarise_video(rows: Sequence[dict[str, Any]], truth: VideoTruth) -> dict[str, Any]:
    """Window counts and latency of one labelled video.

    Args:
        rows: its rows from `detect`, labelled by `label_row` (error rows are ignored).
        truth: its labels.
    Returns:
        {"video", "true" (video-level class), "windows", "positive" (windows whose true class is
         an action), "ambiguous", "tp" (windows predicted as their true action), "fp" (windows
         predicted as an action they do not show: on none windows, or the wrong class), "fn"
         (action windows not predicted as their class), "detected" (the earliest action has a
         `first_detection`; None for a none video), "latency_s" (`detection_latency` of the
         earliest action)}.
    """
    rows = [r for r in rows if "error" not in r]
    scored = [r for r in rows if r["true"] != AMBIGUOUS]
    seg = first_segment(truth)
    return {
        "video": str(truth.video),
        "true": truth.label,
        "windows": len(rows),
        "positive": sum(r["true"] != NONE for r in scored),
        "ambiguous": len(rows) - len(scored),
        "tp": sum(r["true"] != NONE and r["class"] == r["true"] for r in scored),
        "fp": sum(r["class"] != NONE and r["class"] != r["true"] for r in scored),
        "fn": sum(r["true"] != NONE and r["class"] != r["true"] for r in scored),
        "detected": None if seg is None else first_detection(rows, seg) is not None,
        "latency_s": None if seg is None else detection_latency(rows, seg),
    }


def total_summary(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sums over videos, how many action videos were detected, the median latency over
    those with a known start, and how many none videos had any false-positive window."""
    positives = [s for s in summaries if s["true"] != NONE]
    latencies = [s["latency_s"] for s in positives if s["latency_s"] is not None]
    nones = [s for s in summaries if s["true"] == NONE]
    return {
        "videos": len(summaries),
        **{k: sum(s[k] for s in summaries) for k in ("windows", "positive", "ambiguous", "tp",
                                                      "fp", "fn")},
        "action_videos": len(positives),
        "detected_videos": sum(bool(s["detected"]) for s in positives),
        "latency_videos": len(latencies),
        "median_latency_s": round(float(np.median(latencies)), 3) if latencies else None,
        "none_videos": len(nones),
        "none_videos_with_alarm": sum(s["fp"] > 0 for s in nones),
    }


def format_summary(summaries: Sequence[dict[str, Any]]) -> str:
    """Per-video and total window counts as an aligned text table.

    Returns:
        Multi-line text without a trailing newline.
    """
    head = ("video", "true", "windows", "ambiguous", "TP", "FP", "FN", "detected", "latency s")
    rows = [head]
    for s in summaries:
        lat = "n/a" if s["latency_s"] is None else f"{s['latency_s']:.2f}"
        found = "" if s["detected"] is None else ("yes" if s["detected"] else "no")
        rows.append((Path(s["video"]).name, s["true"], str(s["windows"]), str(s["ambiguous"]),
                     str(s["tp"]), str(s["fp"]), str(s["fn"]), found, lat))
    t = total_summary(summaries)
    med = "n/a" if t["median_latency_s"] is None else f"{t['median_latency_s']:.2f} (median)"
    rows.append(("total", "", str(t["windows"]), str(t["ambiguous"]), str(t["tp"]),
                 str(t["fp"]), str(t["fn"]), f"{t['detected_videos']}/{t['action_videos']}",
                 med))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.append(f"  action videos detected: {t['detected_videos']}/{t['action_videos']} "
                 f"(latency known for {t['latency_videos']}: a time segment's start); none "
                 f"videos with a false alarm: {t['none_videos_with_alarm']}/{t['none_videos']}")
    return "\n".join(lines)


def checkpoint_label_options(checkpoint: str | Path) -> dict[str, Any]:
    """How a checkpoint's training run read labels: {"class_names", "class_folders",
    "label_id_base"} for `read_truths` (loads the checkpoint on the CPU once more; `detect`
    loads its own copy on the chosen device).

    Raises:
        CheckpointError: from `detector.checkpoint.load_checkpoint`.
    """
    from detector.init_weights import resolve_model_path
    from detector.runtime import load_model

    _, cfg, meta = load_model(resolve_model_path(checkpoint), torch.device("cpu"))
    data = (meta.get("train_config") or {}).get("data") or {}
    return {"class_names": tuple(cfg.class_names),
            "class_folders": dict(data.get("class_folders") or {}),
            "label_id_base": data.get("label_id_base")}

"""`vigil bench offline`: `vigil detect` against a reference-style loop, same files, same weights.

The reference-style loop does what the report authors' inference script does, per video: open it
with `cv2.VideoCapture`, take `linspace(0, n - 1, 16).astype(int)` frame indices, and for each
one `set(CAP_PROP_POS_FRAMES, i)` then `read()`; resize to 224x224, BGR -> RGB, normalise on the
CPU in numpy with the model's mean/std, then one fp32 forward pass with a batch of 1.

`vigil detect`'s code path is `train.detect.detect` (sequential decode in DataLoader workers
overlapping the model, batched). Both run in this process, one after the other, on the same
files with the same checkpoint; each pass includes loading the checkpoint, as a script run
would. Each is timed `repeats` times after a warm-up on one video; the reported time is the
median pass and the speed-up is the ratio of the two medians. Their predictions are compared
video by video: the class must agree and the box IoU (pixel boxes) should be >= 0.95.

Also timed: decoding alone, seek-per-index (reference) against `train.video_io.read_frames`
(one sequential pass), which shows how much of the difference is the decoder's.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from detector.errors import DataError
from detector.runtime import resolve_device
from detector.timing import median, ratio

from train.metrics import iou_matrix

from .kit import BenchReport, Section, bench_env

log = logging.getLogger(__name__)


# =============================================================================== reference loop
def reference_clip(path: str | Path, frames: int = 16, size: Sequence[int] = (224, 224)
                   ) -> np.ndarray:
    """Decode a clip the way the reference inference script does (one seek per frame).

    Args:
        path: the video.
        frames: T, frames per clip.
        size: (H, W) to resize to (cv2's default bilinear).
    Returns:
        (T, H, W, 3) uint8 RGB; a frame that cannot be read repeats the previous one.
    Raises:
        DataError: the file cannot be opened or no frame could be read.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open video")
    H, W = int(size[0]), int(size[1])
    out = np.empty((frames, H, W, 3), np.uint8)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        last: Optional[np.ndarray] = None
        first_good = -1
        for t, i in enumerate(np.linspace(0, max(n - 1, 0), frames).astype(int)):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
            ok, bgr = cap.read()
            if ok and bgr is not None:
                last = cv2.cvtColor(cv2.resize(bgr, (W, H)), cv2.COLOR_BGR2RGB)
                if first_good < 0:
                    first_good = t
            elif last is not None:
                log.debug("%s: frame %d unreadable, repeating the previous one", path, i)
            if last is not None:
                out[t] = last
    finally:
        cap.release()
    if last is None:
        raise DataError(f"{path}: no frame could be read")
    out[:first_good] = out[first_good]     # unreadable leading frames take the first good one
    return out


def reference_input(clip: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """CPU normalisation as the reference script does it.

    Args:
        clip: (T, H, W, 3) uint8 RGB.
        mean, std: per-channel statistics in [0, 1] units.
    Returns:
        (1, 3, T, H, W) float32.
    """
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    x = (clip.astype(np.float32) / 255.0 - m) / s
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 0, 1, 2)))[None]


def reference_loop(files: Sequence[Path], checkpoint: str | Path, device: torch.device,
                   threshold: float = 0.3) -> list[dict[str, Any]]:
    """Load the checkpoint, then per video: seek-decode, CPU normalise, fp32 forward, batch 1.

    Returns:
        One row per video like `vigil detect`'s: video, class, score, box (pixels) or None.
    """
    import cv2

    from detector.checkpoint import load_checkpoint
    from detector.postprocess import clip_predictions

    model, cfg, _ = load_checkpoint(checkpoint, device=device)
    rows = []
    with torch.inference_mode():
        for path in files:
            clip = reference_clip(path, cfg.input.frames, cfg.input.size)
            cap = cv2.VideoCapture(str(path))
            width, height = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                             int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            cap.release()
            x = reference_input(clip, cfg.input.mean, cfg.input.std).to(device)
            det = clip_predictions(model(x), cfg.class_names, threshold)[0]
            rows.append({"video": str(path), "class": det.label_name if det else "none",
                         "score": det.score if det else None,
                         "box": list(det.xyxy_px((width, height))) if det else None,
                         "width": width, "height": height})
    return rows


# =============================================================================== comparison
def box_iou_px(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two pixel xyxy boxes (0 when the union is empty)."""
    return float(iou_matrix(np.asarray([a]), np.asarray([b]))[0, 0])


@dataclass
class Agreement:
    """How the fast path's predictions compare with the reference loop's, per video."""
    videos: int
    same_class: int
    ious: list[float]
    mismatches: list[str]

    @property
    def class_agreement(self) -> float:
        return self.same_class / self.videos if self.videos else 0.0

    @property
    def min_iou(self) -> Optional[float]:
        return min(self.ious) if self.ious else None

    @property
    def mean_iou(self) -> Optional[float]:
        return float(np.mean(self.ious)) if self.ious else None


def compare_rows(reference: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]]) -> Agreement:
    """Match rows by video; class must agree; IoU of the boxes when both detected something.

    A video missing from `other` (or with an error row) counts as a disagreement.
    """
    by_video = {r["video"]: r for r in other}
    same, ious, bad = 0, [], []
    for ref in reference:
        row = by_video.get(ref["video"])
        if row is None or "error" in row:
            bad.append(f"{Path(ref['video']).name}: missing")
            continue
        if row["class"] != ref["class"]:
            bad.append(f"{Path(ref['video']).name}: {ref['class']} vs {row['class']}")
            continue
        same += 1
        if ref.get("box") is not None and row.get("box") is not None:
            ious.append(box_iou_px(ref["box"], row["box"]))
    return Agreement(len(reference), same, ious, bad)


# =============================================================================== the benchmark
@dataclass
class OfflineBenchOptions:
    """What `vigil bench offline` measures.

    Args:
        device: "auto", "cpu", "cuda", ...
        quick: 8 synthetic clips, 2 repeats.
        data: a folder of videos (default: synthetic clips written by the benchmark).
        videos: synthetic clips to write (default 8 --quick, 32 otherwise).
        checkpoint: the weights (default: the reference-shaped model, random init, seed 0).
        batch, workers: `vigil detect`'s --batch and decoding workers (None = its defaults).
        precision: passed to `detect` (None = its default).
        decode_workers: also time `detect(..., decode_workers=N)` (N decoders pooled into full
            batches) in the same passes, against the same reference.
        repeats: timed passes of each method.
        workdir: where clips and checkpoint go (default: a temporary folder, removed).
    """
    device: str = "auto"
    quick: bool = False
    data: Optional[str] = None
    videos: Optional[int] = None
    checkpoint: Optional[str] = None
    batch: int = 8
    workers: Optional[int] = None
    precision: Optional[str] = None
    repeats: Optional[int] = None
    workdir: Optional[str] = None
    command: Optional[str] = None
    decode_workers: Optional[int] = None


def reference_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """The reference implementation's architecture with random weights (fixed seed)."""
    from detector.checkpoint import save_checkpoint
    from detector.model import build_model
    from detector.reference import reference_model_config

    cfg = reference_model_config()
    torch.manual_seed(seed)
    return save_checkpoint(Path(directory) / "reference-random.pt", build_model(cfg), cfg)


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def run_offline_bench(opts: OfflineBenchOptions) -> BenchReport:
    """Measure both paths on the same files; see the module docstring."""
    from detector.checkpoint import load_checkpoint

    from train import video_io
    from train.detect import detect, find_videos

    device = resolve_device(opts.device)
    env = bench_env(device, opts.command)
    repeats = opts.repeats or (2 if opts.quick else 3)
    own_dir = opts.workdir is None
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="vigil-bench-offline-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if opts.data:
            files = find_videos([opts.data])
        else:
            from train.synth_dataset import write_dataset

            n = opts.videos or (8 if opts.quick else 32)
            write_dataset(work / "clips", videos=n, seed=0)
            files = find_videos([work / "clips" / "videos"])
        ckpt = Path(opts.checkpoint) if opts.checkpoint else reference_checkpoint(work)
        _, cfg, _ = load_checkpoint(ckpt, device="cpu")
        T, size = cfg.input.frames, cfg.input.size

        kwargs: dict[str, Any] = {"batch": opts.batch, "workers": opts.workers,
                                  "device": str(device)}
        if opts.precision is not None:
            kwargs["precision"] = opts.precision

        def run_detect(paths: Sequence[Path], **extra: Any) -> list[dict[str, Any]]:
            return list(detect(list(paths), ckpt, **{**kwargs, **extra}))

        pooled = ({"workers": None, "decode_workers": opts.decode_workers}
                  if opts.decode_workers else None)
        # Warm-up on one video each: imports, allocator, oneDNN/cuDNN kernel selection.
        reference_loop(files[:1], ckpt, device)
        run_detect(files[:1])
        ref_times, det_times, pool_times = [], [], []
        ref_rows: list[dict[str, Any]] = []
        det_rows: list[dict[str, Any]] = []
        pool_rows: list[dict[str, Any]] = []
        for r in range(repeats):
            # Alternate so drift (thermal, other load) hits both alike.
            t, ref_rows = _timed(lambda: reference_loop(files, ckpt, device))
            ref_times.append(t)
            t, det_rows = _timed(lambda: run_detect(files))
            det_times.append(t)
            if pooled is not None:
                t, pool_rows = _timed(lambda: run_detect(files, **pooled))
                pool_times.append(t)
            log.info("offline pass %d/%d: reference %.2f s, detect %.2f s%s", r + 1, repeats,
                     ref_times[-1], det_times[-1],
                     f", detect --decode-workers {pool_times[-1]:.2f} s" if pool_times else "")
        errors = [row for row in det_rows + pool_rows if "error" in row]
        agree = compare_rows(ref_rows, det_rows)
        # Pooled rows come in another order: compare_rows matches them by video.
        pool_agree = compare_rows(ref_rows, pool_rows) if pool_rows else None

        # Decoding alone, both strategies, same files.
        seek_t, seq_t = [], []
        for _ in range(repeats):
            seek_t.append(_timed(lambda: [reference_clip(f, T, size) for f in files])[0])
            seq_t.append(_timed(lambda: [video_io.read_frames(
                f, video_io.sample_indices(video_io.probe(f).frames, T), size)
                for f in files])[0])
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)

    n = len(files)
    ref_med, det_med = median(ref_times), median(det_times)
    shape = f"{T}x{size[0]}x{size[1]}"
    precision = kwargs.get("precision", "auto")
    common = {"videos": n, "device": str(device), "input": shape, "repeats": repeats}
    rows = [
        {"method": "reference-style loop (seek per frame, CPU normalise, batch 1)",
         "precision": "fp32", "batch": 1, **common, "s per pass": ref_med,
         "videos/s": n / ref_med, "speed-up": 1.0, "samples_s": ref_times},
        {"method": "vigil detect (train.detect.detect)", "precision": precision,
         "batch": opts.batch, **common, "s per pass": det_med, "videos/s": n / det_med,
         "speed-up": ratio(ref_med, det_med), "class agreement": f"{agree.class_agreement:.0%}",
         "min IoU": agree.min_iou, "mean IoU": agree.mean_iou, "samples_s": det_times}]
    if pool_agree is not None:
        pool_med = median(pool_times)
        rows.append({"method": f"vigil detect --decode-workers {opts.decode_workers}",
                     "precision": precision, "batch": opts.batch, **common,
                     "s per pass": pool_med, "videos/s": n / pool_med,
                     "speed-up": ratio(ref_med, pool_med),
                     "class agreement": f"{pool_agree.class_agreement:.0%}",
                     "min IoU": pool_agree.min_iou, "mean IoU": pool_agree.mean_iou,
                     "samples_s": pool_times})
    notes = [f"checkpoint {ckpt.name}; each pass loads it; median of {repeats} passes after a "
             "one-video warm-up; speed-up = reference median / detect median, same run",
             "class agreement and IoU: `vigil detect` against the fp32 reference loop, video by "
             "video (target: same class on every video, IoU >= 0.95)"]
    if agree.mismatches:
        notes.append("disagreements: " + "; ".join(agree.mismatches[:10]))
    if errors:
        notes.append(f"{len(errors)} file(s) failed in detect: {errors[0]['error']}")
    report = BenchReport("vigil bench offline", env)
    report.sections.append(Section(
        "Offline: vigil detect against the reference-style loop",
        ["method", "videos", "input", "device", "precision", "batch", "s per pass", "videos/s",
         "speed-up", "class agreement", "min IoU", "mean IoU", "repeats"], rows, notes))
    seek_med, seq_med = median(seek_t), median(seq_t)
    report.sections.append(Section(
        f"Decoding only ({T} frames per video, resized to {size[0]}x{size[1]})",
        ["method", "videos", "s per pass", "ms per video", "speed-up", "repeats"],
        [{"method": "seek per index (reference)", "videos": n, "s per pass": seek_med,
          "ms per video": 1e3 * seek_med / n, "speed-up": 1.0, "repeats": repeats,
          "samples_s": seek_t},
         {"method": "one sequential pass (video_io.read_frames)", "videos": n,
          "s per pass": seq_med, "ms per video": 1e3 * seq_med / n,
          "speed-up": ratio(seek_med, seq_med), "repeats": repeats, "samples_s": seq_t}]))
    return report

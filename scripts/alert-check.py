#!/usr/bin/env python3
"""Which alerts the daemon would raise on labelled videos: its windows, its worker and its
event logic, run offline on every clip of a dataset, each clip played once as its own camera.

    python scripts/alert-check.py --checkpoint vigil --data ../shared/real [--out FILE.md]

For each clip: every frame is decoded and resized to the model's input as a capture thread does
(INTER_AREA, RGB); a window ends every `--stride` frames once the clip holds a whole window
(`streamer.windows.window_seqs`: `clip_seconds` of the checkpoint at the clip's own frame rate);
windows go through `streamer.worker.InferenceWorker` in batches and their results, in time
order, through `streamer.events.EventTracker` with the `smoothing:` defaults of `vigil serve`
(or `--config`'s). An action clip is looped to at least `--loop-s` seconds, as a looping file
camera plays it (most fight clips last about 2 s, one window); a quiet clip plays once. Time is
the clip's own (frame index / fps), so the result does not depend on
how busy this machine is; what it leaves out is real-time capture (dropped frames, skipped
windows), which `vigil bench pipeline` measures.

A pose collapse checkpoint (`vigil train --config configs/train/pose-collapse.yaml`) is scored
as the daemon's pose path scores a camera: each clip's BlazePose sequence (about 8 frames a
second, cached), a window of the model's `window_s` ending every `--pose-stride-s`, the window's
score and the person's box. `--checkpoint vigil` is what the daemon serves by default: the
shipped video detector for fights and the shipped pose model for collapse (`--pose none` leaves
the pose path out and scores collapse with the video detector, as before the pose path).

Reported per source and overall:
- clips without an action: minutes of footage, `start` alerts, starts per 10 minutes, and how
  many of those clips got any `start`;
- clips with an action: how many got a `start` of the right label, how many within
  `--within` seconds of the action's start (the segment's start, or the clip's first frame when
  the whole clip is the action), the median latency, and starts of the wrong label.
Exit status 0; the table goes to stdout and, with --out, to a Markdown file.
"""
from __future__ import annotations

import argparse
import json
import logging
import pickle
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.checkpoint import load_checkpoint  # noqa: E402
from detector.init_weights import resolve_model_path  # noqa: E402
from detector.errors import VigilError  # noqa: E402
from detector.schema import from_dict  # noqa: E402
from detector.pose.collapse import is_pose_checkpoint, load_pose_checkpoint  # noqa: E402
from detector.pose.sequence import PoseSequence  # noqa: E402
from streamer.config import SmoothingConfig, load_smoothing  # noqa: E402
from streamer.events import EventTracker  # noqa: E402
from streamer.types import ClassScore, WindowResult  # noqa: E402
from streamer.windows import window_seqs, window_span  # noqa: E402
from streamer.worker import InferenceWorker, WindowMeta  # noqa: E402
from train.dataset import scan_dataset_lenient  # noqa: E402
from train.pose_data import PoseCache  # noqa: E402
from train.pose_trainer import PoseDataConfig  # noqa: E402
from train.splits import split_records  # noqa: E402
from train.trainer import LAST  # noqa: E402

log = logging.getLogger("alert-check")


def decode(path: Path, size: tuple[int, int]) -> np.ndarray:
    """All frames of `path` resized to `size` (H, W) as RGB uint8 (N, H, W, 3).

    INTER_AREA, as `CaptureThread` shrinks frames (`train.video_io.read_frames` is bilinear,
    as training reads them): this is what the daemon's model sees.
    """
    cap = cv2.VideoCapture(str(path))
    frames = []
    H, W = size
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        small = cv2.resize(frame, (W, H), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames) if frames else np.zeros((0, H, W, 3), np.uint8)


@dataclass
class ClipScores:
    """One clip's windows as the worker scored them, and what the clip's label says.

    results: the worker's `WindowResult`s in time order (clip time: t_end_mono = end / fps).
    label: the action's class name, or None for a quiet clip; t_action: seconds into the clip
    where the action starts (0 when the whole clip is the action); minutes: footage played.
    """
    stem: str
    source: str
    label: str | None
    t_action: float
    minutes: float
    results: list = field(default_factory=list)


def score_clip(worker: InferenceWorker, frames: np.ndarray, fps: float,
               clip_seconds: float | None, T: int, stride: int, batch: int = 16) -> list:
    """The worker's `WindowResult` for every window a camera with this `stride` would take."""
    ends = list(range(window_span(fps, clip_seconds, T) - 1, len(frames), stride))
    h, w = frames.shape[1:3]
    out = []
    for i in range(0, len(ends), batch):
        chunk = []
        for end in ends[i:i + batch]:
            seqs = window_seqs(end, fps, clip_seconds, T)
            t_end = end / fps
            meta = WindowMeta(end_seq=end, t_start_wall=seqs[0] / fps, t_end_wall=t_end,
                              t_end_mono=t_end, frame_size=(w, h))
            chunk.append(("clip", frames[seqs], meta))
        out.extend(worker.infer(chunk))
    return out


def clip_starts(results: list, smoothing: SmoothingConfig, classes: list[str]
                ) -> list[tuple[float, str]]:
    """(time in the clip, label) of every `start` alert the daemon's event logic raises."""
    tracker = EventTracker(smoothing, classes, clock=lambda: 0.0)
    starts: list[tuple[float, str]] = []
    for result in results:
        for msg in tracker.observe(result):
            if msg.get("type") == "start":
                starts.append((result.t_end_mono, msg["label"]))
    return starts


def looped(seq: PoseSequence, duration: float, loop_s: float) -> tuple[PoseSequence, float]:
    """The sequence of a clip played on a loop to at least `loop_s` seconds, and its length."""
    if loop_s <= 0 or duration <= 0 or duration >= loop_s or not len(seq):
        return seq, duration
    reps = int(np.ceil(loop_s / duration))
    return PoseSequence(np.concatenate([seq.t + k * duration for k in range(reps)]),
                        np.concatenate([seq.points] * reps), np.concatenate([seq.world] * reps),
                        np.concatenate([seq.presence] * reps), seq.frame_size), duration * reps


def score_pose_clip(model, seq: PoseSequence, duration: float, stride_s: float,
                    frame_size: tuple[int, int], fps: float) -> list:
    """The pose path's `WindowResult`s of one clip: a window ending every `stride_s` seconds."""
    out = []
    w = model.cfg.window_s
    for t_end in np.arange(min(w, duration), duration + 1e-6, stride_s):
        score, box = model.score_window(seq.between(t_end - w, t_end))
        out.append(WindowResult("clip", {model.cfg.label: ClassScore(
            model.cfg.label, score, box or (0.0, 0.0, 1.0, 1.0))}, frame_size,
            t_end - w, float(t_end), float(t_end), int(t_end * fps)))
    return out


def _clip_label(rec, classes: list[str]) -> tuple[str | None, float]:
    """The clip's action label (or None) and where in it the action starts."""
    if not rec.is_positive:
        return None, 0.0
    seg = rec.segments[0]
    return classes[int(rec.annotations[0, 0])], 0.0 if np.isnan(seg[0]) else float(seg[0])


def score_records(ckpt: Path | None, records: list, stride: int, loop_s: float,
                  pose: Path | None = None, pose_stride_s: float = 0.5,
                  dataset_classes: list[str] | None = None) -> tuple[list, list]:
    """Score every record's windows with the video checkpoint `ckpt` and/or the pose collapse
    checkpoint `pose` (the pose model's class is then taken from the pose path only, as the
    daemon does); returns (ClipScores list, classes)."""
    model = cfg = None
    classes: list[str] = []
    if ckpt is not None:
        model, cfg, _ = load_checkpoint(ckpt)
        model.eval()
        classes = list(cfg.class_names)
        worker = InferenceWorker(model, cfg.input, classes, "cpu", "fp32", policy=16)
    pose_model = pose_cache = None
    if pose is not None:
        pose_model, pose_meta = load_pose_checkpoint(pose)
        # the run's own pose cache (data.cache_dir of its recipe), so nothing is tracked twice
        data_cfg = from_dict(PoseDataConfig,
                             (pose_meta.get("train_config") or {}).get("data"), "data")
        pose_cache = PoseCache(data_cfg.resolved_cache_dir(), pose_model.cfg.fps)
        if pose_model.cfg.label not in classes:
            classes.append(pose_model.cfg.label)
    names = dataset_classes or classes
    clips = []
    t0 = time.monotonic()
    for n, rec in enumerate(records, 1):
        fps = rec.fps or 25.0                    # as probed; 0.0 means the container has none
        label, t_action = _clip_label(rec, names)
        loop = loop_s if rec.is_positive else 0.0
        results: list = []
        minutes = rec.duration_s / 60.0
        if model is not None:
            frames = decode(rec.video, tuple(cfg.input.size))
            if loop and len(frames):
                frames = np.concatenate([frames] * max(1, int(np.ceil(loop * fps / len(frames)))))
            minutes = len(frames) / fps / 60.0   # quiet clips are never looped
            results = score_clip(worker, frames, fps, cfg.input.clip_seconds, cfg.input.frames,
                                 stride)
            if pose_model is not None:           # the pose path owns its class
                results = [replace(r, scores={k: v for k, v in r.scores.items()
                                              if k != pose_model.cfg.label}) for r in results]
        if pose_model is not None:
            seq, duration = looped(pose_cache.get(rec.video), rec.duration_s, loop)
            results = sorted(results + score_pose_clip(pose_model, seq, duration, pose_stride_s,
                                                       (rec.width, rec.height), fps),
                             key=lambda r: r.t_end_mono)
            if model is None:
                minutes = duration / 60.0
        clips.append(ClipScores(rec.stem, rec.source, label, t_action, minutes, results))
        if n % 25 == 0:
            log.info("%s: %d/%d clips, %.0f s", (ckpt or pose).name, n, len(records),
                     time.monotonic() - t0)
    return clips, classes


def alert_table(clips: list[ClipScores], smoothing: SmoothingConfig, classes: list[str],
                within: float) -> list[str]:
    """The per-source Markdown rows (header included) of what `smoothing` makes of `clips`."""
    per: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for c in clips:
        starts = clip_starts(c.results, smoothing, classes)
        for src in (c.source, "all"):
            bucket = per[src]
            if c.label is None:
                bucket["none_minutes"].append(c.minutes)
                bucket["none_starts"].append(len(starts))
                bucket["none_alarmed"].append(bool(starts))
            else:
                right = [t for t, lab in starts if lab == c.label]
                bucket["action_clips"].append(c.stem)
                bucket["wrong"].append(sum(lab != c.label for _, lab in starts))
                if right:
                    bucket["latency"].append(right[0] - c.t_action)
    lines = ["| source | none clips | none minutes | starts on none | per 10 min | none clips "
             f"with a start | action clips | right start | within {within:g} s | median latency "
             "s | wrong-label starts |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for src in sorted(per, key=lambda s: (s == "all", s)):
        b = per[src]
        mins = sum(b["none_minutes"])
        starts = sum(b["none_starts"])
        lat = b["latency"]
        n_within = sum(x <= within for x in lat)     # early starts count as found
        lines.append(
            f"| {src} | {len(b['none_minutes'])} | {mins:.1f} | {starts} | "
            f"{(10 * starts / mins) if mins else float('nan'):.2f} | {sum(b['none_alarmed'])} | "
            f"{len(b['action_clips'])} | "
            f"{len(lat)} | {n_within} | {statistics.median(lat) if lat else float('nan'):.2f} | "
            f"{sum(b['wrong'])} |")
    return lines


def sweep_table(clips: list[ClipScores], base: SmoothingConfig, classes: list[str],
                within: float, on_grid: list[float], min_windows_grid: list[int]) -> list[str]:
    """Per class, for every (on_threshold, min_windows): that label's starts per 10 minutes on
    quiet clips (per source that has quiet clips, and all), and its recall within `within` s.

    Each (camera, label) is smoothed on its own, so one class's setting does not change another
    class's alerts: a row here is what that class would do with its own thresholds.
    off_threshold keeps its distance below on_threshold (min 0.05); the other keys are the
    class's own (`smoothing.classes` applied).
    """
    quiet_sources = sorted({c.source for c in clips if c.label is None})
    lines = ["| class | on | min windows | " + " | ".join(f"{s} /10 min" for s in quiet_sources)
             + f" | all quiet /10 min | recall within {within:g} s | found at all | "
               "median latency s |",
             "|---|---|---|" + "---|" * (len(quiet_sources) + 4)]
    for label in classes:
        # The class's own settings (`smoothing.classes`) with the grid's values in their place.
        own = replace(base.for_class(label), classes={})
        gap = own.on_threshold - own.off_threshold
        for on in on_grid:
            for mw in min_windows_grid:
                sm = replace(own, on_threshold=on, off_threshold=max(0.05, on - gap),
                             min_windows=mw)
                false = defaultdict(int)
                minutes = defaultdict(float)
                found, fast, lat = 0, 0, []
                positives = [c for c in clips if c.label == label]
                for c in clips:
                    if c.label is not None and c.label != label:
                        continue
                    starts = [t for t, lab in clip_starts(c.results, sm, classes) if lab == label]
                    if c.label is None:
                        false[c.source] += len(starts)
                        minutes[c.source] += c.minutes
                    elif starts:
                        found += 1
                        lat.append(starts[0] - c.t_action)
                        fast += starts[0] - c.t_action <= within
                rates = [10 * false[s] / minutes[s] if minutes[s] else float("nan")
                         for s in quiet_sources]
                total = 10 * sum(false.values()) / max(sum(minutes.values()), 1e-9)
                n = max(len(positives), 1)
                lines.append(f"| {label} | {on:g} | {mw} | "
                             + " | ".join(f"{r:.2f}" for r in rates)
                             + f" | {total:.2f} | {fast}/{len(positives)} ({fast / n:.2f}) | "
                               f"{found}/{len(positives)} | "
                               f"{statistics.median(lat) if lat else float('nan'):.2f} |")
    return lines


def dataset_classes(ckpt: Path) -> tuple[list[str], dict]:
    """The class names a checkpoint's dataset is read with (a pose model's run read the
    dataset's own classes, of which it scores one), and the checkpoint's meta."""
    if is_pose_checkpoint(ckpt):
        _, meta = load_pose_checkpoint(ckpt)
        return list(meta["train_config"]["data"]["class_names"]), meta
    _, cfg, meta = load_checkpoint(ckpt)
    return list(cfg.class_names), meta


def fold_dirs(folds_dir: Path) -> list[Path]:
    """The fold run folders of a `vigil cv` output directory, in order.

    Raises SystemExit when the directory holds none.
    """
    folds = sorted(folds_dir.glob("fold*/"))
    if not folds:
        raise SystemExit(f"--folds {folds_dir}: no fold*/ directories with val_predictions.jsonl")
    return folds


def fold_jobs(folds_dir: Path, records: list) -> list[tuple[Path, list]]:
    """(fold checkpoint, that fold's held-out records) for a `vigil cv` output directory.

    A fold's held-out clips are the stems in its `val_predictions.jsonl`; its model is its last
    epoch (`train.trainer.LAST`), the model `vigil cv` scores (`best.pt` was chosen on these very
    clips, which would flatter the check).
    Raises SystemExit when the directory holds no fold.
    """
    by_stem = {r.stem: r for r in records}
    jobs = []
    for fold in fold_dirs(folds_dir):
        stems = [json.loads(line)["stem"]
                 for line in (fold / "val_predictions.jsonl").read_text().splitlines() if line]
        jobs.append((fold / LAST, [by_stem[s] for s in stems if s in by_stem]))
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="vigil",
                   help="checkpoint file (video or pose collapse), or vigil: what the daemon "
                        "serves by default (the shipped video detector and pose path)")
    p.add_argument("--pose", default=None, metavar="CHECKPOINT",
                   help="also run this pose collapse checkpoint (vigil: the shipped one) and "
                        "take collapse from it; none: no pose path. Default: vigil with "
                        "--checkpoint vigil, else none")
    p.add_argument("--pose-stride-s", type=float, default=0.5,
                   help="seconds between the pose path's windows (the daemon's default)")
    p.add_argument("--folds", type=Path, default=None, metavar="CV_DIR",
                   help="a `vigil cv` output directory: score each clip with the fold model that "
                        "held it out (out-of-fold alerts for the recipe); replaces --checkpoint")
    p.add_argument("--data", required=True, help="labelled dataset (any layout vigil reads)")
    p.add_argument("--config", default=None,
                   help="a vigil.yaml whose smoothing: to use (only that section is read)")
    p.add_argument("--stride", type=int, default=8, help="frames between windows (default 8)")
    p.add_argument("--within", type=float, default=3.0, help="seconds allowed after the action")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument("--limit", type=int, default=None, help="first N clips only (a quick look)")
    p.add_argument("--split", choices=("all", "val", "train"), default="all",
                   help="val: only the clips the checkpoint's own run held out (its "
                        "data.val_fraction and split seed); default all")
    p.add_argument("--loop-s", type=float, default=8.0, metavar="S",
                   help="play each ACTION clip looped to at least S seconds, as a looping file "
                        "camera does (default 8; many action clips are shorter than two "
                        "windows); quiet clips play once")
    p.add_argument("--scores", type=Path, default=None, metavar="FILE",
                   help="cache of the windows' scores: read it when it exists (no model runs), "
                        "else write it after scoring; the smoothing is replayed on it")
    p.add_argument("--sweep", action="store_true",
                   help="also print, per class, the false starts and recall for a grid of "
                        "on_threshold x min_windows (see --on-grid, --min-windows-grid)")
    p.add_argument("--on-grid", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--min-windows-grid", type=int, nargs="+", default=[1, 2, 3, 4])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)           # its own progress; the libraries' INFO stays quiet
    try:
        return run(args, p)
    except VigilError as exc:            # a bad file or path: one line, as `vigil` says it
        print(f"alert-check: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """Score (or read the cached scores), replay the smoothing, print the tables."""
    smoothing = load_smoothing(args.config) if args.config else SmoothingConfig()
    t0 = time.monotonic()
    if args.scores and args.scores.exists():
        with args.scores.open("rb") as f:
            cached = pickle.load(f)
        clips, classes, what = cached["clips"], cached["classes"], cached["what"]
    else:
        pose_arg = args.pose if args.pose is not None else (
            "vigil" if str(args.checkpoint) == "vigil" and not args.folds else "none")
        pose = None if pose_arg == "none" else Path(pose_arg)
        if args.folds:
            classes, _ = dataset_classes(fold_dirs(args.folds)[0] / LAST)
        else:
            ckpt = resolve_model_path(args.checkpoint)
            classes, meta = dataset_classes(ckpt)
        records, problems = scan_dataset_lenient(args.data, len(classes),
                                                 require_positives=False, class_names=classes)
        if args.folds:
            jobs = fold_jobs(args.folds, records)
            what = f"out-of-fold models of {args.folds}"
        else:
            if args.split != "all":
                data = (meta.get("train_config") or {}).get("data") or {}
                if "val_fraction" not in data:
                    p.error(f"--split {args.split}: {ckpt.name} does not record its training "
                            "split")
                records = split_records(records, args.data, args.split, data["val_fraction"],
                                        data.get("split_seed", 0))
            if args.split != "val":
                log.warning("scoring %s clips of %s: any the model trained on flatter it; "
                            "--split val keeps the clips its run held out, --folds scores each "
                            "clip with the `vigil cv` fold model that did not train on it",
                            args.split, args.data)
            jobs = [(ckpt, records[:args.limit] if args.limit else records)]
            what = f"checkpoint {ckpt.name}"
        clips = []
        for ckpt_path, recs in jobs:
            if is_pose_checkpoint(ckpt_path):
                scored = score_records(None, recs, args.stride, args.loop_s, pose=ckpt_path,
                                       pose_stride_s=args.pose_stride_s, dataset_classes=classes)
            else:
                scored = score_records(ckpt_path, recs, args.stride, args.loop_s, pose=pose,
                                       pose_stride_s=args.pose_stride_s, dataset_classes=classes)
            clips.extend(scored[0])
        classes = [c for c in classes if any(c in r.scores for clip in clips
                                             for r in clip.results)]
        other = [c for c in clips if c.label is not None and c.label not in classes]
        if other:   # e.g. fight clips for a pose collapse model: neither quiet nor its events
            clips = [c for c in clips if c not in other]
            what += f", {len(other)} clips of classes no model here scores left out"
        what += (f"{', pose path ' + str(pose) if pose is not None and not args.folds else ''}"
                 f", data {args.data} ({'folds' if args.folds else args.split}), stride "
                 f"{args.stride}, action clips looped to {args.loop_s:g} s, {len(clips)} clips, "
                 f"{len(problems)} skipped (unreadable or badly labelled, see the warnings)")
        if args.scores:
            with args.scores.open("wb") as f:
                pickle.dump({"clips": clips, "classes": classes, "what": what}, f)

    lines = [f"{what}; smoothing {smoothing.method} on {smoothing.on_threshold} off "
             f"{smoothing.off_threshold} min_windows {smoothing.min_windows}"
             + "".join(f", {label}: {over}" for label, over in smoothing.classes.items())
             + f"; {time.monotonic() - t0:.0f} s", ""]
    lines += alert_table(clips, smoothing, classes, args.within)
    if args.sweep:
        lines += ["", f"Sweep ({smoothing.method}, alpha {smoothing.alpha}):", ""]
        lines += sweep_table(clips, smoothing, classes, args.within, args.on_grid,
                             args.min_windows_grid)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

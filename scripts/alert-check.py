#!/usr/bin/env python3
"""Which alerts the daemon would raise on labelled videos: its windows, its worker and its
event logic, run offline on every clip of a dataset, each clip played once as its own camera
(`streamer.tuning.offline`, which `vigil calibrate` uses too).

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
- clips without an action: minutes of footage, `start` alerts, starts per 10 minutes, how
  many of those clips got any `start`, and each class's own starts per 10 minutes;
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.checkpoint import load_checkpoint  # noqa: E402
from detector.init_weights import resolve_model_path  # noqa: E402
from detector.errors import VigilError  # noqa: E402
from detector.pose.collapse import is_pose_checkpoint, load_pose_checkpoint  # noqa: E402
from streamer.config import SmoothingConfig, load_smoothing  # noqa: E402
from streamer.tuning.offline import (ClipScores, Paths, class_outcome,  # noqa: E402
                                     class_setting, clip_starts, pose_path, score_records)
from streamer.worker import InferenceWorker  # noqa: E402
from train.dataset import scan_dataset_lenient  # noqa: E402
from train.splits import split_records  # noqa: E402
from train.trainer import LAST  # noqa: E402

log = logging.getLogger("alert-check")


def score_job(ckpt: Path, records: list, stride: int, loop_s: float, pose: Path | None,
              pose_stride_s: float, classes: list[str]) -> list[ClipScores]:
    """Score `records` with the video checkpoint `ckpt` (and the pose collapse checkpoint
    `pose`, which then scores its class), or with `ckpt` alone when it is a pose checkpoint."""
    paths = Paths(pose_stride_s=pose_stride_s)
    if is_pose_checkpoint(ckpt):
        pose = ckpt
    else:
        model, cfg, _ = load_checkpoint(ckpt)
        paths.worker = InferenceWorker(model.eval(), cfg.input, list(cfg.class_names), "cpu",
                                       "fp32", policy=16)
        paths.model_cfg = cfg
    if pose is not None:
        paths.pose_model, paths.pose_cache = pose_path(pose)
    return score_records(paths, records, stride, loop_s, classes, name=ckpt.name)


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
                for _, lab in starts:
                    bucket[f"none_{lab}"].append(1)
            else:
                right = [t for t, lab in starts if lab == c.label]
                bucket["action_clips"].append(c.stem)
                bucket["wrong"].append(sum(lab != c.label for _, lab in starts))
                if right:
                    bucket["latency"].append(right[0] - c.t_action)
    lines = ["| source | none clips | none minutes | starts on none | per 10 min | none clips "
             f"with a start | action clips | right start | within {within:g} s | median latency "
             "s | wrong-label starts | "
             + " | ".join(f"{label} starts on none /10 min" for label in classes) + " |",
             "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(classes)]
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
            f"{sum(b['wrong'])} | "
            + " | ".join(f"{10 * len(b[f'none_{label}']) / mins if mins else float('nan'):.2f}"
                         for label in classes) + " |")
    return lines


def sweep_table(clips: list[ClipScores], base: SmoothingConfig, classes: list[str],
                within: float, on_grid: list[float], min_windows_grid: list[int]) -> list[str]:
    """Per class, for every (on_threshold, min_windows): that label's starts per 10 minutes on
    quiet clips (per source that has quiet clips, and all), and its recall within `within` s.

    Each (camera, label) is smoothed on its own, so one class's setting does not change another
    class's alerts: a row here is what that class would do with its own thresholds
    (`streamer.tuning.offline.class_setting`: off_threshold keeps its distance below
    on_threshold, min 0.05; the other keys are the class's own, `smoothing.classes` applied).
    """
    quiet_sources = sorted({c.source for c in clips if c.label is None})
    lines = ["| class | on | min windows | " + " | ".join(f"{s} /10 min" for s in quiet_sources)
             + f" | all quiet /10 min | recall within {within:g} s | found at all | "
               "median latency s |",
             "|---|---|---|" + "---|" * (len(quiet_sources) + 4)]
    for label in classes:
        for on in on_grid:
            for mw in min_windows_grid:
                o = class_outcome(clips, class_setting(base, label, on, mw), classes, label)
                rates = [10 * o.false_starts.get(s, 0) / o.quiet_minutes[s]
                         if o.quiet_minutes.get(s) else float("nan") for s in quiet_sources]
                total = 10 * sum(o.false_starts.values()) / max(sum(o.quiet_minutes.values()),
                                                                 1e-9)
                n, fast = len(o.positives), o.found(within)
                lines.append(f"| {label} | {on:g} | {mw} | "
                             + " | ".join(f"{r:.2f}" for r in rates)
                             + f" | {total:.2f} | {fast}/{n} ({fast / max(n, 1):.2f}) | "
                               f"{o.found()}/{n} | {o.median_latency:.2f} |")
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
            clips.extend(score_job(ckpt_path, recs, args.stride, args.loop_s, pose,
                                   args.pose_stride_s, classes))
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

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

Reported per source and overall:
- clips without an action: minutes of footage, `start` alerts, starts per 10 minutes;
- clips with an action: how many got a `start` of the right label, how many within
  `--within` seconds of the action's start (the segment's start, or the clip's first frame when
  the whole clip is the action), the median latency, and starts of the wrong label.
Exit status 0; the table goes to stdout and, with --out, to a Markdown file.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.checkpoint import load_checkpoint  # noqa: E402
from detector.init_weights import resolve_model_path  # noqa: E402
from streamer.config import SmoothingConfig, load_config  # noqa: E402
from streamer.events import EventTracker  # noqa: E402
from streamer.windows import window_seqs, window_span  # noqa: E402
from streamer.worker import InferenceWorker, WindowMeta  # noqa: E402
from train.dataset import scan_dataset_lenient  # noqa: E402
from train.splits import split_records  # noqa: E402

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


def clip_alerts(worker: InferenceWorker, smoothing: SmoothingConfig, classes: list[str],
                frames: np.ndarray, fps: float, clip_seconds: float | None, T: int,
                stride: int, batch: int = 16) -> list[tuple[float, str]]:
    """(time in the clip, label) of every `start` alert the daemon's event logic raises."""
    ends = list(range(window_span(fps, clip_seconds, T) - 1, len(frames), stride))
    tracker = EventTracker(smoothing, classes, clock=lambda: 0.0)
    starts: list[tuple[float, str]] = []
    h, w = frames.shape[1:3]
    for i in range(0, len(ends), batch):
        chunk = []
        for end in ends[i:i + batch]:
            seqs = window_seqs(end, fps, clip_seconds, T)
            t_end = end / fps
            meta = WindowMeta(end_seq=end, t_start_wall=seqs[0] / fps, t_end_wall=t_end,
                              t_end_mono=t_end, frame_size=(w, h))
            chunk.append(("clip", frames[seqs], meta))
        for result in worker.infer(chunk):
            for msg in tracker.observe(result):
                if msg.get("type") == "start":
                    starts.append((result.t_end_mono, msg["label"]))
    return starts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="vigil", help="checkpoint file, or vigil (shipped)")
    p.add_argument("--data", required=True, help="labelled dataset (any layout vigil reads)")
    p.add_argument("--config", default=None, help="a vigil.yaml whose smoothing: to use")
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
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    ckpt = resolve_model_path(args.checkpoint)
    model, cfg, meta = load_checkpoint(ckpt)
    model.eval()
    smoothing = (load_config(args.config, check_paths=False).smoothing if args.config
                 else SmoothingConfig())
    classes = list(cfg.class_names)
    worker = InferenceWorker(model, cfg.input, classes, "cpu", "fp32", max_batch=16)
    records, problems = scan_dataset_lenient(args.data, len(classes), require_positives=False,
                                             class_names=classes)
    if args.split != "all":
        data = (meta.get("train_config") or {}).get("data") or {}
        if "val_fraction" not in data:
            p.error(f"--split {args.split}: {ckpt.name} does not record its training split")
        records = split_records(records, args.data, args.split, data["val_fraction"],
                                data.get("split_seed", 0))
    records = records[:args.limit] if args.limit else records
    per: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    t0 = time.monotonic()
    for n, rec in enumerate(records, 1):
        frames = decode(rec.video, tuple(cfg.input.size))
        fps = rec.fps or 25.0                    # as probed; 0.0 means the container has none
        if rec.is_positive and len(frames) and args.loop_s > 0:
            frames = np.concatenate([frames] * max(1, int(np.ceil(args.loop_s * fps
                                                                   / len(frames)))))
        starts = clip_alerts(worker, smoothing, classes, frames, fps, cfg.input.clip_seconds,
                             cfg.input.frames, args.stride)
        minutes = len(frames) / fps / 60.0       # quiet clips are never looped
        for src in (rec.source, "all"):
            bucket = per[src]
            if not rec.is_positive:
                bucket["none_minutes"].append(minutes)
                bucket["none_starts"].append(len(starts))
            else:
                label = classes[int(rec.annotations[0, 0])]
                seg = rec.segments[0]
                t_action = 0.0 if np.isnan(seg[0]) else float(seg[0])
                right = [t for t, lab in starts if lab == label]
                bucket["action_clips"].append(rec.stem)
                bucket["wrong"].append(sum(lab != label for _, lab in starts))
                if right:
                    bucket["latency"].append(right[0] - t_action)
        if n % 25 == 0:
            log.warning("%d/%d clips, %.0f s", n, len(records), time.monotonic() - t0)

    lines = [f"checkpoint {ckpt.name}, data {args.data} ({args.split}), stride {args.stride}, "
             f"action clips "
             f"looped to {args.loop_s:g} s, smoothing "
             f"{smoothing.method} on {smoothing.on_threshold} off {smoothing.off_threshold} "
             f"min_windows {smoothing.min_windows}; {len(records)} clips in "
             f"{time.monotonic() - t0:.0f} s; {len(problems)} not readable", "",
             "| source | none clips | none minutes | starts on none | per 10 min | action clips "
             f"| right start | within {args.within:g} s | median latency s | wrong-label starts |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for src in sorted(per, key=lambda s: (s == "all", s)):
        b = per[src]
        mins = sum(b["none_minutes"])
        starts = sum(b["none_starts"])
        n_act = len(b["action_clips"])
        lat = b["latency"]
        within = sum(x <= args.within for x in lat)     # early starts count as found
        lines.append(
            f"| {src} | {len(b['none_minutes'])} | {mins:.1f} | {starts} | "
            f"{(10 * starts / mins) if mins else float('nan'):.2f} | {n_act} | {len(lat)} | "
            f"{within} | {statistics.median(lat) if lat else float('nan'):.2f} | "
            f"{sum(b['wrong'])} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Does per-camera calibration hold on footage it did not see? Measured out of fold.

    python scripts/alert-check.py --folds runs/cv --data ../shared/real --scores runs/oof.pkl
    python scripts/calibrate-check.py --scores runs/oof.pkl --data ../shared/real \
        [--target-per-hour 18] [--config configs/vigil.yaml]

Reads the window scores `scripts/alert-check.py --scores` cached (each clip scored by the fold
model that did not train on it). For every source (a camera, or a room of cameras) with enough
quiet footage, its quiet clips are dealt by recording (`group`) into two halves of about equal
minutes; `vigil calibrate`'s search (`streamer.tuning.calibrate.calibrate_class`) sets each
class's thresholds on one half, and the other half is scored before and after, then the halves
swap. Reported per source and class: false starts per 10 quiet minutes on the held-out half
before and after (both directions added up), and what the calibrated setting costs in actions
found: the clips labelled with the class (of any source; a fight in front of this camera would
have to pass the same thresholds), started at all and within `--within` seconds.
"""
from __future__ import annotations

import argparse
import pickle
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.config import SmoothingConfig, load_smoothing  # noqa: E402
from streamer.tuning import calibrate as C  # noqa: E402
from streamer.tuning.offline import class_outcome  # noqa: E402
from train.dataset import scan_dataset_lenient  # noqa: E402


def halves(clips: list, groups: dict[str, str]) -> tuple[list, list]:
    """Quiet clips dealt by group into two halves of about equal minutes (largest first)."""
    by_group: dict[str, list] = defaultdict(list)
    for c in clips:
        by_group[groups.get(c.stem, c.stem)].append(c)
    a, b = [], []
    for _, members in sorted(by_group.items(), key=lambda kv: (-sum(c.minutes for c in kv[1]),
                                                               kv[0])):
        (a if sum(c.minutes for c in a) <= sum(c.minutes for c in b) else b).extend(members)
    return a, b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scores", type=Path, required=True, help="alert-check.py --scores cache")
    p.add_argument("--data", type=Path, required=True, help="the dataset (for groups)")
    p.add_argument("--config", type=Path, default=None,
                   help="a vigil.yaml whose smoothing: is the starting point (default: defaults)")
    p.add_argument("--target-per-hour", type=float, default=18.0,
                   help="false starts per hour per class to calibrate to (default 18 = 3 per "
                        "10 minutes: what a 10-minute half can show)")
    p.add_argument("--within", type=float, default=3.0)
    p.add_argument("--any-length", action="store_true",
                   help="calibrate halves shorter than the target needs (3 / target hours, "
                        "which `vigil calibrate` refuses): to see how a target the footage "
                        "cannot show holds up on the other half")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    with args.scores.open("rb") as f:
        cached = pickle.load(f)
    clips, classes = cached["clips"], cached["classes"]
    base = load_smoothing(args.config) if args.config else SmoothingConfig()
    records, _ = scan_dataset_lenient(args.data, len(classes), require_positives=False,
                                      class_names=classes)
    groups = {r.stem: r.group for r in records}
    need = C.required_minutes(args.target_per_hour)
    lines = [f"{cached['what']}; calibrated to {args.target_per_hour:g} false starts per hour "
             f"per class on one half of a source's quiet clips, scored on the other, both ways"
             + (f" (halves shorter than the {need:.0f} minutes the target needs calibrated too)"
                if args.any_length else ""),
             "", "| source | class | quiet minutes (halves) | false starts /10 min held out, "
             "before | after | setting(s) chosen | found within "
             f"{args.within:g} s, before -> after | found at all, before -> after |",
             "|---|---|---|---|---|---|---|---|"]
    quiet_sources = sorted({c.source for c in clips if c.label is None})
    for source in quiet_sources:
        quiet = [c for c in clips if c.label is None and c.source == source]
        a, b = halves(quiet, groups)
        ma, mb = sum(c.minutes for c in a), sum(c.minutes for c in b)
        if min(ma, mb) < need and not args.any_length:
            lines.append(f"| {source} | - | {ma + mb:.1f} ({ma:.1f} + {mb:.1f}) | too short for "
                         f"the target: a half needs {need:.0f} min | | | | |")
            continue
        for label in classes:
            actions = [c for c in clips if c.label == label]
            before = after = 0
            found_b = found_a = fast_b = fast_a = 0
            chosen = []
            for fit, held in ((a, b), (b, a)):
                cal = C.calibrate_class(fit, base, classes, label, args.target_per_hour)
                ob = class_outcome(held, cal.before, classes, label)
                before += sum(ob.false_starts.values())
                setting = cal.after if cal.after is not None else cal.before
                oa = class_outcome(held, setting, classes, label)
                after += sum(oa.false_starts.values())
                ab = class_outcome(actions, cal.before, classes, label)
                aa = class_outcome(actions, setting, classes, label)
                fast_b += ab.found(args.within)
                fast_a += aa.found(args.within)
                found_b += ab.found()
                found_a += aa.found()
                chosen.append("not reachable" if cal.after is None else
                              f"({setting.on_threshold:g}, {setting.min_windows})")
            n = 2 * len(actions)
            lines.append(
                f"| {source} | {label} | {ma + mb:.1f} ({ma:.1f} + {mb:.1f}) | "
                f"{10 * before / (ma + mb):.2f} | {10 * after / (ma + mb):.2f} | "
                f"{', '.join(chosen)} | {fast_b}/{n} -> {fast_a}/{n} | "
                f"{found_b}/{n} -> {found_a}/{n} |")
    lines += ["", f"Actions are counted once per direction ({len(classes)} classes; each "
              "calibrated setting is applied to every clip of its class)."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

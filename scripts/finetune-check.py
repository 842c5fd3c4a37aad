#!/usr/bin/env python3
""""A user's own cameras": does fine-tuning on some recordings of a camera help on its others?

    vigil cv --config configs/train/real-cpu.yaml --data ../shared/real --out runs/cv
    python scripts/finetune-check.py --folds runs/cv --data ../shared/real \
        --config configs/train/finetune-cpu.yaml --out runs/ft [--set KEY=VALUE ...]

The shipped model has trained on nearly every clip of `../shared/real`, so it cannot be scored
there as a user's unseen cameras. Each fold model of a `vigil cv` run can: it never trained on
its fold's recordings. So, per fold, the fold's clips are "the user's cameras": they are dealt by
recording (`group`, each source and label spread evenly: `train.splits.stratified_folds` with
k = 2) into a fine-tuning half and a held-out half; the fold model (its `last.pt`, as `vigil cv`
scores it) stands for the shipped model and is fine-tuned with `--config` on the first half
(`train.init` = the fold model, whose architecture replaces the recipe's `model:`; the
recipe's own validation split of that half chooses `best.pt`), and both are scored on the held-out half as `vigil eval` scores clips (every long
clip judged by its highest-scoring window, label-blind; threshold 0.3).

Reported, summed over the folds: CCTV fight-vs-not accuracy (fight_surv clips: called a fight
or not), falls found (collapse clips called a collapse), and false alarms (clips without an
action called anything), for the fold model and the fine-tuned `best.pt` and `last.pt`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from detector.checkpoint import load_checkpoint  # noqa: E402
from detector.losses import build_criterion  # noqa: E402
from train import engine  # noqa: E402
from train.cache import ClipCache  # noqa: E402
from train.config import load_train_config  # noqa: E402
from train.dataset import ClipDataset, collate, scan_dataset_lenient  # noqa: E402
from train.metrics import NONE_NAME  # noqa: E402
from train.mil import choose_bag_windows  # noqa: E402
from train.splits import split_records, stratified_folds  # noqa: E402
from train.trainer import BEST, LAST, fit_records, frame_feature_cache  # noqa: E402

log = logging.getLogger("finetune-check")
CCTV = "fight_surv"


def score(ckpt: Path, records: list, cfg) -> dict[str, int]:
    """Counts on `records` of the model in `ckpt`, as `vigil eval` judges clips."""
    model, mcfg, _ = load_checkpoint(ckpt)
    device = torch.device("cpu")
    cache_dir = cfg.data.resolved_cache_dir()
    cache = ClipCache(cache_dir) if cache_dir is not None else None
    features = frame_feature_cache(cfg, model, cache, device) if (
        cfg.data.frame_features and model.caches_frames) else None
    ds = ClipDataset(records, mcfg.input, cache=cache, train=False,
                     window_s=cfg.data.window_seconds, features=features)
    choose_bag_windows(model, ds, device)
    loader = DataLoader(ds, batch_size=8, shuffle=False, collate_fn=collate)
    criterion = build_criterion(cfg.loss, mcfg.num_classes)
    _, preds = engine.evaluate(model, criterion, loader, device, mcfg.class_names, 0.3)
    c: Counter = Counter()
    for p in preds:
        true, pred = p["true"], p["pred"]
        if p["source"] == CCTV:
            c["cctv"] += 1
            c["cctv_right"] += (true == "fight") == (pred == "fight")
        if true == "collapse":
            c["falls"] += 1
            c["falls_found"] += pred == "collapse"
        if true == "fight":
            c["fights"] += 1
            c["fights_found"] += pred == "fight"
        if true == NONE_NAME:
            c["quiet"] += 1
            c["false_alarms"] += pred != NONE_NAME
    return dict(c)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folds", type=Path, required=True, help="a `vigil cv` output directory")
    p.add_argument("--data", type=Path, required=True, help="the dataset it was run on")
    p.add_argument("--config", type=Path, required=True, help="the fine-tuning recipe")
    p.add_argument("--out", type=Path, required=True, help="folder for the fine-tuning runs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0, help="seed of the halves")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    t0 = time.monotonic()
    cfg0 = load_train_config(args.config, args.overrides)
    records, _ = scan_dataset_lenient(args.data, len(cfg0.model.class_names),
                                      require_positives=False,
                                      class_names=cfg0.model.class_names)
    by_stem = {r.stem: r for r in records}
    totals = {"base": Counter(), "best": Counter(), "last": Counter()}
    for fold in sorted(args.folds.glob("fold*/")):
        stems = [json.loads(line)["stem"]
                 for line in (fold / "val_predictions.jsonl").read_text().splitlines() if line]
        mine = [by_stem[s] for s in stems if s in by_stem]
        (tune_idx, held_idx), _ = stratified_folds(mine, 2, args.seed)
        tune = [mine[i] for i in tune_idx]
        held = [mine[i] for i in held_idx]
        base = fold / LAST
        cfg = load_train_config(args.config, args.overrides + [f"train.init={base}"])
        # Fine-tuning keeps the architecture of the model it starts from; what the recipe
        # freezes is a choice of training, so it is kept.
        start = load_checkpoint(base)[1]
        start = dataclasses.replace(start, backbone=dataclasses.replace(
            start.backbone, freeze=cfg.model.backbone.freeze))
        cfg = dataclasses.replace(cfg, model=start)
        out = args.out / fold.name
        train_recs = split_records(tune, None, "train", cfg.data.val_fraction, cfg.data.split_seed)
        val_recs = split_records(tune, None, "val", cfg.data.val_fraction, cfg.data.split_seed)
        log.info("%s: fine-tuning on %d clips (%d to choose the epoch), scoring %d", fold.name,
                 len(train_recs), len(val_recs), len(held))
        fit_records(cfg, train_recs, val_recs, out, resume=True, progress=False,
                    data_root=str(args.data))
        for name, ckpt in (("base", base), ("best", out / BEST), ("last", out / LAST)):
            counts = score(ckpt, held, cfg)
            totals[name].update(counts)
            log.info("%s %s: %s", fold.name, name, counts)
    lines = [f"fine-tune check: {args.config} {' '.join(args.overrides)} on the folds of "
             f"{args.folds}, halves seed {args.seed}; {time.monotonic() - t0:.0f} s", "",
             "| model | CCTV fight-vs-not | fights found | falls found | false alarms on quiet "
             "clips |", "|---|---|---|---|---|"]
    for name, c in totals.items():
        label = {"base": "fold model (the shipped recipe, not fine-tuned)",
                 "best": "fine-tuned, best.pt", "last": "fine-tuned, last.pt"}[name]
        lines.append(f"| {label} | {c['cctv_right']}/{c['cctv']} "
                     f"({c['cctv_right'] / max(c['cctv'], 1):.3f}) | "
                     f"{c['fights_found']}/{c['fights']} | {c['falls_found']}/{c['falls']} | "
                     f"{c['false_alarms']}/{c['quiet']} |")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "finetune-check.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

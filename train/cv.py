"""Stratified, grouped k-fold cross-validation (the report's advice for small datasets).

Folds never separate a group (clips cut from one source recording, `train.splits`).

Each fold trains a fresh model with the same recipe on the other folds and is evaluated on its
own; the fold's numbers are those of its last epoch (choosing the best epoch on the very videos
being scored would flatter the estimate). The result gives the mean and standard deviation of
every scalar metric over the folds.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import metrics as M
from .config import TrainConfig
from .splits import stratified_folds
from .metrics import NONE_NAME
from .report import source_report
from .trainer import PREDICTIONS, fit_records, load_records, load_splits

log = logging.getLogger(__name__)


def cross_validate(cfg: TrainConfig, data_root: str | Path, out_dir: str | Path, folds: int = 5,
                   seed: int = 0, progress: bool = True,
                   also_train: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Train and evaluate one model per fold.

    Args:
        cfg: the training recipe (used unchanged for every fold).
        data_root: dataset folder; its `splits/` files are ignored (the folds replace them).
        out_dir: `fold1/` ... `foldK/` run folders and `cv.json` go here; finished folds are
            resumed, not retrained.
        folds: k.
        seed: seed of the fold assignment.
        progress: progress bars.
        also_train: datasets added whole to every fold's training set (e.g. the synthetic set
            a real-footage model is trained with); they are never validated on.
    Returns:
        {"folds": k, "per_fold": [scalar metrics of each fold's last epoch], "mean": {metric:
         mean}, "std": {metric: population std}, "n": {metric: folds where it is defined},
         "per_source": `pooled_source_report` of the out-of-fold predictions}.
    """
    out_dir = Path(out_dir)
    records = load_records(cfg, data_root)
    extra = (load_splits(cfg, also_train, ["all"], require_positives=False)[0] if also_train
             else [])
    per_fold: list[dict[str, float]] = []
    for k, (train_idx, val_idx) in enumerate(stratified_folds(records, folds, seed), start=1):
        log.info("fold %d/%d: %d training videos, %d validation videos", k, folds,
                 len(train_idx), len(val_idx))
        result = fit_records(cfg, [records[i] for i in train_idx] + extra,
                             [records[i] for i in val_idx],
                             out_dir / f"fold{k}", progress=progress, data_root=data_root)
        per_fold.append(M.scalar_metrics(result["last"]))
    summary = summarize(per_fold)
    pooled = pooled_rows(out_dir, folds)
    if pooled:
        summary["per_source"] = pooled_source_report(pooled, cfg.model.class_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cv.json").write_text(json.dumps(M.to_jsonable(summary), indent=2) + "\n",
                                     encoding="utf-8")
    return summary


def pooled_rows(out_dir: Path, folds: int) -> list[dict[str, Any]]:
    """Every fold's last-epoch validation predictions (`val_predictions.jsonl`), pooled: each
    video of the dataset appears once, predicted by the model that did not train on it."""
    rows: list[dict[str, Any]] = []
    for k in range(1, folds + 1):
        path = out_dir / f"fold{k}" / PREDICTIONS
        if path.is_file():
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                     if line.strip()]
    return rows


def pooled_source_report(rows: Sequence[dict[str, Any]], class_names: Sequence[str]
                         ) -> dict[str, dict[str, Any]]:
    """`train.report.source_report` over pooled out-of-fold predictions: per source (for a fall
    dataset, its room) and overall, accuracy, per-class precision/recall, ROC AUC and the
    false-alarm rate on `none` videos at the operating threshold."""
    names = list(class_names) + [NONE_NAME]
    scores = np.array([[r["class_scores"][c] for c in class_names] for r in rows], dtype=float)
    return source_report(scores.reshape(len(rows), len(class_names)),
                         [names.index(r["true"]) for r in rows],
                         [names.index(r["pred"]) for r in rows],
                         [r.get("source") or "all" for r in rows], class_names)


def summarize(per_fold: list[dict[str, float]]) -> dict[str, Any]:
    """Mean and standard deviation of each metric over folds, ignoring undefined (NaN) values."""
    keys = sorted({k for fold in per_fold for k in fold})
    mean, std, n = {}, {}, {}
    for key in keys:
        vals = np.array([f[key] for f in per_fold if key in f and f[key] is not None
                         and not math.isnan(f[key])], dtype=float)
        n[key] = int(vals.size)
        mean[key] = float(vals.mean()) if vals.size else math.nan
        std[key] = float(vals.std()) if vals.size else math.nan
    return {"folds": len(per_fold), "per_fold": per_fold, "mean": mean, "std": std, "n": n}


def format_cv_table(summary: dict[str, Any]) -> str:
    """Aligned text: one metric per line with mean ± std over the folds."""
    order = ["video_acc", "det_acc", "miou", "map50", "map", "loss", "loss_ce", "loss_bbox",
             "loss_giou"]
    keys = [k for k in order if k in summary["mean"]]
    keys += [k for k in summary["mean"] if k not in keys and k not in ("num_videos", "seconds")]
    width = max((len(k) for k in keys), default=6)
    lines = [f"cross-validation over {summary['folds']} folds (last epoch of each fold)",
             f"  {'metric':<{width}}  {'mean':>7}  {'std':>7}"]
    for k in keys:
        m, s = summary["mean"][k], summary["std"][k]
        lines.append(f"  {k:<{width}}  {_num(m):>7}  {_num(s):>7}")
    return "\n".join(lines)


def _num(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.3f}"

"""Training, evaluating and cross-validating the pose collapse model (`detector.pose.collapse`).

A pose recipe (`model.kind: pose-collapse`, e.g. `configs/train/pose-collapse.yaml`) goes through
the same verbs as a video recipe: `vigil train`, `vigil eval`, `vigil cv`, and
`scripts/alert-check.py --folds` on the result. What differs is the data: every video becomes its
BlazePose sequence once (`train.pose_data.PoseCache`), then windows of `model.window_s` seconds
ending every `data.stride_s`, each described by `detector.pose.features`.

Which windows teach what:
- a video labelled `none`: every window is a negative (people walking, sitting, lying down on
  purpose: exactly what must not alarm);
- a collapse video with the seconds of the fall: windows that overlap the fall by at least
  `data.positive_overlap_s` (or half the fall, or half a window, whichever is shorter) are
  positives; windows more than `data.margin_s` away from it are negatives; the rest is left out;
- a collapse video labelled as a whole (when in it the fall happens is unknown): multiple-instance
  learning, as the video recipe's `mil`: after a first fit on the windows above, the
  `mil.top_k` windows the model scores highest in each such video become its positives, and the
  model is fitted again, `mil.rounds` times;
- a video of another event (a fight): left out (`data.other_events: ignore`) or negatives
  (`negative`);
- a window without a person: never shown to the model (it scores 0 by rule).

The model is fitted full-batch with L-BFGS on the binary cross-entropy plus `optim.l2` times the
squared weights (with `model.hidden: []` this is an L2 logistic regression, the measured
default; docs/models/pose-collapse-v1.md).

Evaluation is label-blind, as the daemon: a video's score is its highest-scoring window (every
`train.eval_stride_s`), and it is called a collapse at `train.threshold`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch

from detector.errors import ConfigError, DataError
from detector.pose.collapse import (PoseCollapseModel, PoseModelConfig, build_pose_model,
                                    save_pose_checkpoint)
from detector.pose.features import NUM_FEATURES, features_of
from detector.pose.sequence import PoseSequence
from detector.schema import Validated, apply_overrides, check_fields, from_dict, load_yaml, \
    setting, to_dict

from .config import default_cache_dir
from .metrics import NONE_NAME, to_jsonable
from .pose_data import PoseCache
from .records import VideoRecord
from .report import source_report
from .splits import split_records, stratified_folds

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"
PREDICTIONS = "val_predictions.jsonl"


@dataclass
class PoseOptimConfig(Validated):
    """How the model is fitted (full batch, L-BFGS).

    Args:
        l2: penalty on the squared weights (not the biases), per training window.
        max_iter: L-BFGS iterations per fit.
        pos_weight: weight of a positive window in the loss relative to a negative one.
    """
    l2: float = setting(1e-3, ge=0, doc="L2 penalty on the weights")
    max_iter: int = setting(300, ge=1, doc="L-BFGS iterations per fit")
    pos_weight: float = setting(1.0, gt=0, doc="weight of a positive window in the loss")

    SECTION = "optim"


@dataclass
class PoseDataConfig(Validated):
    """Which videos, which windows, where the pose sequences are cached.

    Args:
        class_names: the dataset's event classes (as the video recipes name them); the model's
            `label` must be one of them.
        class_folders, label_id_base: layout options, as in the video recipes.
        val_fraction, split_seed: the held-out split (grouped, stratified).
        cache_dir: pose sequence cache; null = `$XDG_CACHE_HOME/vigil/pose`.
        stride_s: seconds between training windows' ends.
        positive_overlap_s, margin_s: see the module docstring.
        other_events: videos of other event classes: `ignore` or `negative`.
    """
    class_names: list[str] = setting(default_factory=lambda: ["fight", "collapse"],
                                     doc="the dataset's event classes")
    class_folders: dict[str, str] = setting(default_factory=dict,
                                            doc="folder name -> class for class folders")
    label_id_base: Optional[int] = setting(None, doc="0 or 1 for numeric label files")
    val_fraction: float = setting(0.2, ge=0, le=0.9, doc="share of each class held out")
    split_seed: int = setting(0, doc="seed of the held-out split")
    cache_dir: Optional[str] = setting(None, doc="pose cache; null = ~/.cache/vigil/pose")
    stride_s: float = setting(0.25, gt=0, doc="seconds between training windows")
    positive_overlap_s: float = setting(1.0, gt=0, doc="overlap with the fall of a positive")
    margin_s: float = setting(1.0, ge=0, doc="a negative window stays this far from the fall")
    other_events: Literal["ignore", "negative"] = setting(
        "ignore", doc="videos of other event classes: ignore or negative")

    SECTION = "data"

    def resolved_cache_dir(self) -> Path:
        return (Path(os.path.expanduser(self.cache_dir)) if self.cache_dir
                else default_cache_dir("pose"))


@dataclass
class PoseMilConfig(Validated):
    """Multiple-instance learning for collapse videos labelled as a whole.

    Args:
        top_k: windows of each such video taken as its positives.
        rounds: refits after the first fit.
    """
    top_k: int = setting(2, ge=1, doc="positives taken from each whole-video label")
    rounds: int = setting(2, ge=0, doc="refits with the chosen windows")

    SECTION = "mil"


@dataclass
class PoseRunConfig(Validated):
    """The run.

    Args:
        seed: seeds torch and numpy.
        threshold: a video is called a collapse when its best window scores this much.
        eval_stride_s: seconds between windows in evaluation (the daemon's pose cadence).
        init: `scratch` (a pose model has no pretrained start).
    """
    seed: int = setting(0, doc="random seed")
    threshold: float = setting(0.5, gt=0, le=1, doc="video-level decision threshold")
    eval_stride_s: float = setting(0.5, gt=0, doc="seconds between evaluated windows")
    init: str = setting("scratch", doc="scratch (no pretrained start for a pose model)")

    SECTION = "train"


@dataclass
class PoseTrainConfig:
    """A pose recipe."""
    model: PoseModelConfig = field(default_factory=PoseModelConfig)
    optim: PoseOptimConfig = field(default_factory=PoseOptimConfig)
    data: PoseDataConfig = field(default_factory=PoseDataConfig)
    mil: PoseMilConfig = field(default_factory=PoseMilConfig)
    train: PoseRunConfig = field(default_factory=PoseRunConfig)

    def validate(self) -> "PoseTrainConfig":
        for section in ("model", "optim", "data", "mil", "train"):
            check_fields(getattr(self, section), section)
        if self.model.label not in self.data.class_names:
            raise ConfigError(f"model.label: {self.model.label!r} is not one of "
                              f"data.class_names {self.data.class_names}")
        return self


def is_pose_recipe(data: Any) -> bool:
    """Whether a recipe's YAML mapping is a pose recipe (`model.kind: pose-collapse`)."""
    model = data.get("model") if isinstance(data, dict) else None
    return isinstance(model, dict) and model.get("kind") == "pose-collapse"


def load_pose_config(data: dict, overrides: Sequence[str] = (), where: str = "") -> PoseTrainConfig:
    """A validated pose recipe from its YAML mapping and `--set` overrides.

    Raises:
        ConfigError: unknown key or bad value, naming it.
    """
    data = apply_overrides(data, list(overrides))
    return from_dict(PoseTrainConfig, data, where).validate()


def read_pose_config(path: str | Path, overrides: Sequence[str] = ()) -> PoseTrainConfig:
    """`load_pose_config` of a recipe file."""
    return load_pose_config(load_yaml(path), overrides, str(path))


# --------------------------------------------------------------------------- data
def load_records(cfg: PoseTrainConfig, root: str | Path, require_positives: bool = False
                 ) -> list[VideoRecord]:
    """The dataset's usable records under the recipe's classes and layout options.

    Raises:
        DataError: no usable video (or, with `require_positives`, no video of the label).
    """
    from .dataset import scan_dataset_lenient

    records, _ = scan_dataset_lenient(
        root, num_classes=len(cfg.data.class_names), require_positives=False,
        class_names=cfg.data.class_names, class_folders=cfg.data.class_folders,
        label_id_base=cfg.data.label_id_base)
    if not records:
        raise DataError(f"{root}: no usable video")
    if require_positives and not any(_role(r, cfg) == "positive" for r in records):
        raise DataError(f"{root}: no video is labelled {cfg.model.label}: a collapse model "
                        f"cannot learn from this")
    return records


def _role(record: VideoRecord, cfg: PoseTrainConfig) -> str:
    """`positive` (has the model's label), `other` (another event only) or `none`."""
    label_id = cfg.data.class_names.index(cfg.model.label)
    classes = {int(c) for c in record.annotations[:, 0]} if len(record.annotations) else set()
    if label_id in classes:
        return "positive"
    return "other" if classes else "none"


def _segments(record: VideoRecord, cfg: PoseTrainConfig) -> list[tuple[float, float]] | None:
    """The (start, end) seconds of the label's segments; None when the whole video is the label."""
    label_id = cfg.data.class_names.index(cfg.model.label)
    out = []
    for ann, seg in zip(record.annotations, record.segments):
        if int(ann[0]) != label_id:
            continue
        if np.isnan(seg[0]) or np.isnan(seg[1]):
            return None
        out.append((float(seg[0]), float(seg[1])))
    return out


def window_ends(duration: float, window_s: float, stride_s: float) -> np.ndarray:
    """Ends of the windows of a video: every `stride_s` from one window in (a shorter video:
    one window, its whole length)."""
    first = min(window_s, duration)
    return np.arange(first, duration + 1e-6, stride_s)


def video_windows(seq: PoseSequence, duration: float, window_s: float, stride_s: float
                  ) -> list[tuple[float, Optional[np.ndarray]]]:
    """(end second, features or None when nobody) of every window of one video."""
    return [(float(t), features_of(seq.between(t - window_s, t)))
            for t in window_ends(duration, window_s, stride_s)]


@dataclass
class TrainingWindows:
    """Labelled windows (features (N, F), targets (N,)) and the bags of whole-video labels."""
    x: np.ndarray
    y: np.ndarray
    bags: list[np.ndarray]


def training_windows(records: Sequence[VideoRecord], seqs: Sequence[PoseSequence],
                     cfg: PoseTrainConfig) -> TrainingWindows:
    """The windows of `records` with what each teaches (module docstring)."""
    xs, ys, bags = [], [], []
    w = cfg.model.window_s
    for rec, seq in zip(records, seqs):
        role = _role(rec, cfg)
        if role == "other" and cfg.data.other_events == "ignore":
            continue
        windows = video_windows(seq, rec.duration_s, w, cfg.data.stride_s)
        segs = _segments(rec, cfg) if role == "positive" else []
        bag = []
        for t, f in windows:
            if f is None:
                continue
            if role != "positive":
                xs.append(f)
                ys.append(0.0)
            elif segs is None:
                bag.append(f)
            else:
                target = _segment_target(t - w, t, segs, cfg)
                if target is not None:
                    xs.append(f)
                    ys.append(target)
        if bag:
            bags.append(np.stack(bag))
    x = np.stack(xs) if xs else np.zeros((0, NUM_FEATURES), np.float32)
    return TrainingWindows(x, np.asarray(ys, np.float32), bags)


def _segment_target(t0: float, t1: float, segs: list[tuple[float, float]],
                    cfg: PoseTrainConfig) -> Optional[float]:
    """1 for a window on a fall, 0 for one clear of every fall, None in between."""
    for s, e in segs:
        overlap = max(0.0, min(t1, e) - max(t0, s))
        if overlap >= min(cfg.data.positive_overlap_s, 0.5 * (e - s), 0.5 * (t1 - t0)):
            return 1.0
    if all(t1 < s - cfg.data.margin_s or t0 > e + cfg.data.margin_s for s, e in segs):
        return 0.0
    return None


# --------------------------------------------------------------------------- fitting
def fit_model(x: np.ndarray, y: np.ndarray, cfg: PoseTrainConfig,
              model: PoseCollapseModel | None = None) -> PoseCollapseModel:
    """Fit a model (fresh, or `model` again) on features (N, F) and targets (N,) in {0, 1}.

    Raises:
        DataError: no positive or no negative window.
    """
    if y.size == 0 or y.min() == y.max():
        raise DataError(f"pose training needs positive and negative windows, got "
                        f"{int(y.sum())} positive of {y.size}")
    model = model if model is not None else build_pose_model(cfg.model)
    model.set_normalisation(x)
    model.train()
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    pos_weight = torch.tensor(cfg.optim.pos_weight)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=cfg.optim.max_iter,
                            line_search_fn="strong_wolfe", history_size=20)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(xt), yt, pos_weight=pos_weight)
        loss = loss + cfg.optim.l2 * sum((p ** 2).sum() for p in weights)
        loss.backward()
        return loss

    opt.step(closure)
    model.eval()
    return model


def fit_windows(data: TrainingWindows, cfg: PoseTrainConfig) -> PoseCollapseModel:
    """The first fit on the labelled windows, then `mil.rounds` refits with each bag's
    `mil.top_k` best windows as positives (module docstring)."""
    x, y = data.x, data.y
    if data.bags and (y.size == 0 or y.max() < 1):
        # Only whole-video labels: start from each bag's mean window as a weak positive.
        x = np.concatenate([x, np.stack([b.mean(0) for b in data.bags])])
        y = np.concatenate([y, np.ones(len(data.bags), np.float32)])
    model = fit_model(x, y, cfg)
    for _ in range(cfg.mil.rounds if data.bags else 0):
        chosen = [b[np.argsort(-model.predict(b))[:cfg.mil.top_k]] for b in data.bags]
        xr = np.concatenate([data.x] + chosen)
        yr = np.concatenate([data.y, np.ones(sum(len(c) for c in chosen), np.float32)])
        model = fit_model(xr, yr, cfg)
    return model


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- evaluation
def score_video(model: PoseCollapseModel, seq: PoseSequence, duration: float,
                stride_s: float) -> list[tuple[float, float]]:
    """(window end, score) of every window of one video (0 where nobody was seen)."""
    windows = video_windows(seq, duration, model.cfg.window_s, stride_s)
    feats = [f for _, f in windows if f is not None]
    probs = iter(model.predict(np.stack(feats)).tolist()) if feats else iter(())
    return [(t, 0.0 if f is None else float(next(probs))) for t, f in windows]


def predict_records(model: PoseCollapseModel, records: Sequence[VideoRecord],
                    seqs: Sequence[PoseSequence], cfg: PoseTrainConfig) -> list[dict[str, Any]]:
    """One prediction row per video (those of other events left out unless they are negatives):
    stem, source, group, true (`collapse`/`none`), pred, score (best window), class_scores."""
    label, rows = cfg.model.label, []
    for rec, seq in zip(records, seqs):
        role = _role(rec, cfg)
        if role == "other" and cfg.data.other_events == "ignore":
            continue
        scores = score_video(model, seq, rec.duration_s, cfg.train.eval_stride_s)
        best = max((s for _, s in scores), default=0.0)
        rows.append({"stem": rec.stem, "source": rec.source, "group": rec.group,
                     "true": label if role == "positive" else NONE_NAME,
                     "pred": label if best >= cfg.train.threshold else NONE_NAME,
                     "score": best, "class_scores": {label: best}})
    return rows


def report(rows: Sequence[dict[str, Any]], label: str) -> dict[str, dict[str, Any]]:
    """`train.report.source_report` of prediction rows (per source and overall)."""
    names = [label, NONE_NAME]
    return source_report(np.array([[r["class_scores"][label]] for r in rows]).reshape(-1, 1),
                         [names.index(r["true"]) for r in rows],
                         [names.index(r["pred"]) for r in rows],
                         [r.get("source") or "all" for r in rows], [label])


def sequences(records: Sequence[VideoRecord], cfg: PoseTrainConfig, progress: bool = False
              ) -> list[PoseSequence]:
    """Each record's pose sequence (tracked once, then from the cache)."""
    cache = PoseCache(cfg.data.resolved_cache_dir(), cfg.model.fps)
    out = []
    t0 = time.monotonic()
    for i, rec in enumerate(records, 1):
        out.append(cache.get(rec.video))
        if progress and (i % 25 == 0 or i == len(records)) and cache.misses:
            log.info("pose: %d/%d videos (%d tracked now, %.0f s)", i, len(records),
                     cache.misses, time.monotonic() - t0)
    return out


# --------------------------------------------------------------------------- runs
def fit_records(cfg: PoseTrainConfig, train_records: Sequence[VideoRecord],
                val_records: Sequence[VideoRecord], out_dir: str | Path,
                progress: bool = True) -> dict[str, Any]:
    """Train on `train_records`, evaluate on `val_records`, write the run folder.

    Writes `last.pt` and `best.pt` (the same model: there are no epochs to choose among),
    `config.yaml`, `metrics.json` and `val_predictions.jsonl`.

    Returns:
        {"report": per-source report of the validation videos (or {}), "windows": training
         windows, "positives": positive windows, "seconds": time taken}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    seed_all(cfg.train.seed)
    seqs = sequences(train_records, cfg, progress)
    data = training_windows(train_records, seqs, cfg)
    model = fit_windows(data, cfg)
    meta = {"train_config": to_dict(cfg), "train_videos": len(train_records),
            "train_windows": int(data.y.size), "bags": len(data.bags)}
    save_pose_checkpoint(out_dir / LAST, model, **meta)
    save_pose_checkpoint(out_dir / BEST, model, **meta)
    import yaml
    (out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False),
                                         encoding="utf-8")
    rows = predict_records(model, val_records, sequences(val_records, cfg, progress), cfg)
    with open(out_dir / PREDICTIONS, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(to_jsonable(r)) + "\n")
    rep = report(rows, cfg.model.label) if rows else {}
    result = {"report": rep, "windows": int(data.y.size) + sum(len(b) for b in data.bags),
              "positives": int(data.y.sum()), "bags": len(data.bags),
              "seconds": time.monotonic() - t0}
    (out_dir / "metrics.json").write_text(json.dumps(to_jsonable(result), indent=2) + "\n",
                                          encoding="utf-8")
    log.info("pose model: %d training windows (%d positive, %d whole-video bags), %.0f s",
             result["windows"], result["positives"], result["bags"], result["seconds"])
    return result


def fit(cfg: PoseTrainConfig, data_roots: Sequence[str | Path], out_dir: str | Path,
        progress: bool = True) -> dict[str, Any]:
    """`vigil train` of a pose recipe: each dataset split on its own, then `fit_records`."""
    train, val = [], []
    for root in data_roots:
        records = load_records(cfg, root)
        train += split_records(records, root, "train", cfg.data.val_fraction,
                               cfg.data.split_seed)
        val += split_records(records, root, "val", cfg.data.val_fraction, cfg.data.split_seed)
    if not any(_role(r, cfg) == "positive" for r in train):
        raise DataError(f"{', '.join(map(str, data_roots))}: no training video is labelled "
                        f"{cfg.model.label}")
    return fit_records(cfg, train, val, out_dir, progress)


def cross_validate(cfg: PoseTrainConfig, data_root: str | Path, out_dir: str | Path,
                   folds: int = 5, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """`vigil cv` of a pose recipe: grouped, stratified folds (`train.splits.stratified_folds`),
    one model per fold, the out-of-fold predictions pooled into one per-source report.

    Returns:
        {"folds": k, "per_source": report, "seconds": time}; also written to `cv.json`.
    """
    out_dir = Path(out_dir)
    t0 = time.monotonic()
    records = load_records(cfg, data_root, require_positives=True)
    rows: list[dict[str, Any]] = []
    for k, (tr, va) in enumerate(stratified_folds(records, folds, seed), start=1):
        log.info("fold %d/%d: %d training videos, %d validation videos", k, folds, len(tr),
                 len(va))
        fit_records(cfg, [records[i] for i in tr], [records[i] for i in va],
                    out_dir / f"fold{k}", progress)
        rows += [json.loads(line) for line in
                 (out_dir / f"fold{k}" / PREDICTIONS).read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    summary = {"folds": folds, "per_source": report(rows, cfg.model.label),
               "seconds": time.monotonic() - t0}
    (out_dir / "cv.json").write_text(json.dumps(to_jsonable(summary), indent=2) + "\n",
                                     encoding="utf-8")
    return summary


def evaluate_checkpoint(model: PoseCollapseModel, meta: dict, data_root: str | Path,
                        split: str = "val", threshold: float | None = None
                        ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], PoseTrainConfig]:
    """`vigil eval` of a pose checkpoint: the run's own split and layout options.

    Returns:
        (prediction rows, per-source report, the run's config with `threshold` applied).
    """
    data = dict(meta.get("train_config") or {})
    data["model"] = to_dict(model.cfg)
    cfg = load_pose_config(data, where="checkpoint train_config")
    if threshold is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threshold=threshold))
    records = load_records(cfg, data_root)
    records = split_records(records, data_root, split, cfg.data.val_fraction,
                            cfg.data.split_seed)
    if not records:
        raise DataError(f"{data_root}: the {split} split is empty")
    rows = predict_records(model, records, sequences(records, cfg, progress=True), cfg)
    return rows, report(rows, cfg.model.label), cfg

"""The training configuration: a recipe (`configs/train/*.yaml`) plus `--set key=value` overrides.

Sections: `model` (the detector, `detector.config.ModelConfig`, which checkpoints carry), `loss`
(`detector.losses.LossConfig`), `optim`, `data`, `augment` (`train.augment.AugmentConfig`) and
`train`. Defaults are the technical report's recipe, so `configs/train/seed.yaml` only restates
them; every field is checked by `detector.schema.from_dict` (unknown keys and wrong types are
errors naming the dotted key).

`--config` names a file or a shipped recipe (`train.recipes`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from detector.config import ModelConfig
from detector.errors import ConfigError
from detector.losses import LossConfig
from detector.schema import apply_overrides, from_dict, load_yaml

from .augment import AugmentConfig
from .recipes import resolve_recipe

log = logging.getLogger(__name__)


@dataclass
class OptimConfig:
    """AdamW with cosine annealing (report section 3.4).

    Args:
        lr: peak learning rate (report: 5e-5).
        lr_min: learning rate at the end of the cosine (report: 1e-6).
        weight_decay: AdamW weight decay (report: 1e-4).
        betas: AdamW betas.
        grad_clip: max L2 norm of all gradients; 0 disables clipping (report: 0.5).
        epochs: length of the run (report: 50).
        warmup_epochs: linear warm-up from lr/100 before the cosine (report: 0).
        schedule: step the cosine every `epoch` (eq. 15) or after every optimiser `step`
            (smoother, for short runs).
    """
    lr: float = 5e-5
    lr_min: float = 1e-6
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 0.5
    epochs: int = 50
    warmup_epochs: int = 0
    schedule: Literal["step", "epoch"] = "epoch"

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.lr_min < 0 or self.lr_min > self.lr:
            raise ValueError("optim: need lr > 0 and 0 <= lr_min <= lr")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError("optim.betas must be two values in [0, 1)")
        if self.epochs < 1 or not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError("optim: need epochs >= 1 and 0 <= warmup_epochs < epochs")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("optim: grad_clip and weight_decay must be >= 0")


@dataclass
class DataConfig:
    """Loading.

    Args:
        batch_size: clips per optimiser step (report: 4).
        num_workers: DataLoader worker processes (0 = load in the training process).
        val_fraction: share of each class held out when the dataset has no `splits/` files.
        split_seed: seed of that stratified split.
        cache: keep decoded, resized clips on disk so epoch 2 onward decodes no video.
        cache_dir: where; null = `$XDG_CACHE_HOME/vigil/clips` (default `~/.cache/vigil/clips`).
        window_seconds: seconds a training window spans where windows are used (videos with
            time segments, long videos without an action); null = the model's clip length
            (`model.input.clip_seconds`, else the median training video); 0 = always sample
            whole videos, as the reference implementation does.
        segment_margin_s: a negative window cut from a video with segments keeps at least this
            many seconds away from every segment.
        class_folders: folder name -> class name (or `none`) for the class-folder layout, on
            top of the built-in names (`fight`, `NonFight`, `Fall`, `ADL`, ...).
        label_id_base: 0 or 1: how the reference layout's label files number classes; null =
            decide from the ids where they can only mean one thing, refuse otherwise.
        allow_outside_root: read videos and label files that resolve outside the dataset's
            folder (a manifest's `../x.mp4` or `/abs/x.mp4`, symlinks pointing elsewhere);
            false: each such file is a problem and is left out (`--allow-outside-root`).
        positive: what the balanced sampler (the report's Algorithm 1) counts as a positive
            sample: `action` (Vigil) = the sample itself holds an action, so a window cut
            outside a labelled segment is a negative; `annotated` (the reference, Algorithm 1
            line 2 read literally: "indices of samples with annotations") = the sample's video
            has any annotation, whatever part of it the sample shows. With whole-video samples
            (`window_seconds: 0`) and no time segments the two are the same.
        weak_positives: how a video labelled as an action for the whole clip (no time segment)
            but longer than a window is sampled in training: `whole` (the reference) squeezes
            the whole clip into T frames; `mil` treats it as a bag of windows and trains, each
            epoch, on the window the model then scores highest for the clip's class
            (`train.mil`), so the model learns the action at the time scale the daemon's windows
            show. Evaluation does not depend on it (`train.dataset.plan_samples`).
        hard_negatives: a video without an action that is longer than a window trains, each
            epoch, on its window the model then scores highest for any action (hard-negative
            mining, `train.mil`), instead of a random window: quiet footage of the user's own
            cameras teaches the model what it mistakes for an action there.
        frame_features: with a 2D backbone whose 2D stages are frozen (`model.backbone.name:
            mobilenet_v2`, `freeze: all`), compute their output once per decoded frame and keep
            it on disk (`~/.cache/vigil/features`, or `<cache_dir>/features` when `cache_dir` is
            set; `train.features`), so that an epoch runs only
            the temporal stage and the decoder. Pixel augmentation is then a horizontal flip
            and temporal jitter only (the others are not applied; the run says so).
    """
    batch_size: int = 4
    num_workers: int = 2
    val_fraction: float = 0.2
    split_seed: int = 0
    cache: bool = True
    cache_dir: Optional[str] = None
    window_seconds: Optional[float] = None
    segment_margin_s: float = 1.0
    class_folders: dict[str, str] = field(default_factory=dict)
    label_id_base: Optional[int] = None
    allow_outside_root: bool = False
    positive: Literal["action", "annotated"] = "action"
    weak_positives: Literal["whole", "mil"] = "whole"
    hard_negatives: bool = False
    frame_features: bool = False

    def __post_init__(self) -> None:
        if self.positive not in ("action", "annotated"):
            raise ValueError(f"data.positive must be action or annotated, got {self.positive!r}")
        if self.weak_positives not in ("whole", "mil"):
            raise ValueError(f"data.weak_positives must be whole or mil, "
                             f"got {self.weak_positives!r}")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("data: need batch_size >= 1 and num_workers >= 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("data.val_fraction must be in (0, 1)")
        if self.window_seconds is not None and self.window_seconds < 0:
            raise ValueError("data.window_seconds must be >= 0 (0 = whole videos) or null")
        if self.segment_margin_s < 0:
            raise ValueError("data.segment_margin_s must be >= 0")
        if self.label_id_base not in (None, 0, 1):
            raise ValueError("data.label_id_base must be 0, 1 or null")

    def resolved_cache_dir(self) -> Path | None:
        """The clip cache directory, or None when caching is off."""
        if not self.cache:
            return None
        if self.cache_dir:
            return Path(os.path.expanduser(self.cache_dir))
        return default_cache_dir()


@dataclass
class RunConfig:
    """The `train:` section: how the run itself behaves.

    Args:
        seed: seeds torch, numpy, random and the DataLoader workers.
        device: `auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:1`, ...
        amp: `auto` = fp16 autocast + GradScaler on CUDA, off on CPU; `on` also enables bf16
            autocast on CPU; `off` = float32 everywhere.
        score_threshold: clip-level decision threshold in evaluation (reference: 0.3).
        iou_threshold: det-acc IoU threshold (report: 0.5).
        log_every: log a line every this many steps when the progress bar is off.
        init: starting weights (`detector.init_weights`): `scratch`, `vigil` (Vigil's shipped
            weights for this architecture), the name of shipped weights (`synth-cpu-v2`) or a
            checkpoint path. A resumed run ignores it.
        loss_autocast: compute the loss inside the autocast region, on the model's fp16
            outputs (the reference implementation); false = in float32 (Vigil: fp16 logits
            through softmax/log lose the small no_object terms). Only matters when `amp` is on.
        inference_precision: the autocast precision `vigil detect --precision auto` uses for
            the checkpoints of this run: `auto` (bf16 on GPUs that have it, else fp16; fp32 on
            a CPU), `fp16` (the reference's test.py), `bf16` or `fp32`. Validation during
            training uses `amp`.
        val_every: validate (and consider the epoch for best.pt) after every this many epochs,
            and always after the last one (the reference: 2, i.e. epochs 2, 4, ...).
        select_by: how best.pt is chosen among validated epochs: `det_acc` (Vigil: det-acc,
            video accuracy when no validation video has a box, ties to lower loss) or
            `reference` (video accuracy + 0.2 x det-acc, the first epoch reaching the highest
            value wins).
        deterministic: cuDNN in deterministic mode with benchmarking off (the reference);
            slower convolutions on a GPU, no effect on a CPU.
    """
    seed: int = 0
    device: str = "auto"
    amp: Literal["auto", "on", "off"] = "auto"
    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    log_every: int = 20
    init: str = "scratch"
    loss_autocast: bool = False
    inference_precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    val_every: int = 1
    select_by: Literal["det_acc", "reference"] = "det_acc"
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.val_every < 1:
            raise ValueError(f"train.val_every must be >= 1, got {self.val_every}")
        if self.select_by not in ("det_acc", "reference"):
            raise ValueError(f"train.select_by must be det_acc or reference, got "
                             f"{self.select_by!r}")
        if self.inference_precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError("train.inference_precision must be auto, fp32, bf16 or fp16")
        if not self.init:
            raise ValueError("train.init must be scratch, vigil or a checkpoint path")
        if not 0.0 <= self.score_threshold <= 1.0 or not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError("train: score_threshold must be in [0, 1], iou_threshold in (0, 1]")
        if self.log_every < 1:
            raise ValueError("train.log_every must be >= 1")


@dataclass
class TrainConfig:
    """A whole training recipe."""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: RunConfig = field(default_factory=RunConfig)


def default_cache_dir(kind: str = "clips") -> Path:
    """`$XDG_CACHE_HOME/vigil/<kind>`, falling back to `~/.cache/vigil/<kind>` (`clips`:
    decoded clips; `pose`: pose sequences, `train.pose_data`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vigil" / kind


def load_train_config(path: str | Path | None, overrides: list[str] | None = None,
                      epochs: int | None = None) -> TrainConfig:
    """Read a training config and apply `--set` overrides.

    Args:
        path: YAML file or shipped recipe (`resolve_recipe`); None starts from the defaults (the
            report's recipe, which `seed.yaml` restates).
        overrides: `["loss.giou=0", "optim.lr=1e-4"]`; values are parsed as YAML.
        epochs: the `--epochs N` shortcut: sets `optim.epochs` and, when the recipe's warm-up
            would not fit in N epochs, shortens `optim.warmup_epochs` to N - 1 (logged), so a
            quick run of a documented recipe works as it is.
    Returns:
        The validated config.
    Raises:
        ConfigError: unreadable file, unknown key or bad value, naming the file and the key.
    """
    if path is not None:
        path = resolve_recipe(path)
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {epochs}")
        optim = data.setdefault("optim", {}) if isinstance(data, dict) else {}
        optim["epochs"] = epochs
        warm = optim.get("warmup_epochs", OptimConfig.warmup_epochs)
        if isinstance(warm, (int, float)) and warm >= epochs:
            log.info("--epochs %d: optim.warmup_epochs %s shortened to %d", epochs, warm,
                     epochs - 1)
            optim["warmup_epochs"] = epochs - 1
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


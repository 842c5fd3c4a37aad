"""The pose collapse model: fall features of a window -> probability that someone is collapsing.

A small multilayer perceptron over `features.FEATURE_NAMES` (standardised with the training
set's mean and spread, kept in the model as buffers), trained by `vigil train` with a pose
recipe (`configs/train/pose-collapse.yaml`, `train/pose_trainer.py`). Why so small: the inputs
are a few dozen numbers that already say what a fall is; what must be learned is where the
line lies between a fall and lying down on purpose, sitting or bending, and a few hundred real
clips cannot teach more parameters than this (docs/models/pose-collapse-v1.md has the measured
comparison with gradient boosting and logistic regression).

No person in the window (fewer than `features.MIN_SEEN` samples with one) is not asked of the
model: it scores 0, whatever the model would say.

Checkpoints are `torch.save`d dicts, loaded with `weights_only=True`:
`{"format": FORMAT, "config": {...}, "state_dict": {...}, "meta": {...}}`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..schema import Validated, check_fields, from_dict, setting, to_dict
from .features import FEATURE_NAMES, NUM_FEATURES, features_of
from .landmarks import landmark_box
from .paths import resolve_pose_path
from .sequence import POSE_FPS, PoseSequence

log = logging.getLogger(__name__)

FORMAT = "vigil-pose-collapse/1"


@dataclass
class PoseModelConfig(Validated):
    """The `model:` section of a pose recipe.

    Args:
        kind: always `pose-collapse` (what tells a pose recipe from a video one).
        label: the event class the model scores.
        window_s: seconds of pose the model looks at, ending at the window's end.
        fps: pose samples per second the features were computed at.
        hidden: widths of the hidden layers.
        dropout: dropout after each hidden layer (training only).
    """
    kind: str = setting("pose-collapse", doc="`pose-collapse`: a model over pose sequences")
    label: str = setting("collapse", doc="the event class it scores")
    window_s: float = setting(2.0, gt=0, le=10, doc="seconds of pose per window")
    fps: float = setting(POSE_FPS, gt=0, le=30, doc="pose samples per second")
    hidden: list[int] = setting(default_factory=list,
                                doc="hidden layer widths; [] = a logistic regression")
    dropout: float = setting(0.2, ge=0, le=0.9, doc="dropout after each hidden layer")
    features: list[str] = setting(default_factory=lambda: list(FEATURE_NAMES),
                                  doc="the features, in order (set by the code; for checks)")

    SECTION = "model"

    def _check_cross_fields(self, where: str) -> None:
        from ..errors import ConfigError
        if self.kind != "pose-collapse":
            raise ConfigError(f"{where}.kind: must be pose-collapse, got {self.kind!r}")
        if any(int(h) < 1 for h in self.hidden):
            raise ConfigError(f"{where}.hidden: a list of positive widths ([] = a logistic "
                              f"regression), got {self.hidden!r}")


class PoseCollapseModel(nn.Module):
    """Standardise, then a perceptron: (B, F) features -> (B,) logits.

    Args:
        cfg: the model config.
    """

    def __init__(self, cfg: PoseModelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(NUM_FEATURES))
        self.register_buffer("std", torch.ones(NUM_FEATURES))
        layers: list[nn.Module] = []
        width = NUM_FEATURES
        for h in cfg.hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def set_normalisation(self, features: np.ndarray) -> None:
        """Take the standardisation from training features (N, F)."""
        x = torch.as_tensor(features, dtype=torch.float32)
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) float features -> (B,) logits."""
        return self.mlp((x - self.mean) / self.std).squeeze(-1)

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """(B, F) features -> (B,) probabilities (eval mode, no gradients)."""
        was = self.training
        self.eval()
        p = torch.sigmoid(self(torch.as_tensor(np.asarray(features), dtype=torch.float32)))
        self.train(was)
        return p.numpy()

    def score_window(self, window: PoseSequence) -> tuple[float, tuple[float, float, float, float] | None]:
        """Collapse probability of one window and the person's box.

        Args:
            window: the pose samples of the window (exactly its span).
        Returns:
            (score, box): 0.0 and None when nobody was seen; else the probability and the
            person's box (normalised xyxy) in the window's last sample with a person.
        """
        feats = features_of(window)
        if feats is None:
            return 0.0, None
        score = float(self.predict(feats[None])[0])
        return score, last_box(window)


def last_box(window: PoseSequence) -> tuple[float, float, float, float] | None:
    """The person's box (normalised xyxy) in the last sample of `window` where one was seen."""
    seen = np.flatnonzero(window.seen)
    if seen.size == 0:
        return None
    return landmark_box(window.points[seen[-1]])


def build_pose_model(cfg: PoseModelConfig | dict) -> PoseCollapseModel:
    """A fresh model from its config (or the `model:` mapping of a pose recipe)."""
    if isinstance(cfg, dict):
        cfg = from_dict(PoseModelConfig, cfg)
    check_fields(cfg, "model")
    return PoseCollapseModel(cfg)


def save_pose_checkpoint(path: str | Path, model: PoseCollapseModel, **meta: Any) -> Path:
    """Write the model atomically (a temporary file, then a rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "config": to_dict(model.cfg),
                "state_dict": model.state_dict(), "meta": meta}, tmp)
    tmp.replace(path)
    return path


def is_pose_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a pose collapse checkpoint (False for video checkpoints and others)."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_pose_checkpoint(path: str | Path) -> tuple[PoseCollapseModel, dict]:
    """A pose collapse model (eval mode) and its meta.

    Raises:
        CheckpointError: missing file, not a pose collapse checkpoint, or damaged; the message
            names the file.
    """
    path = resolve_pose_path(path)
    if not path.is_file():
        raise CheckpointError(f"pose collapse model {path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"pose collapse model {path}: cannot be read ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"pose collapse model {path}: not a pose collapse checkpoint "
                              f"(expected format {FORMAT})")
    cfg = from_dict(PoseModelConfig, obj["config"])
    if list(cfg.features) != list(FEATURE_NAMES):
        raise CheckpointError(f"pose collapse model {path}: trained on other features than this "
                              f"Vigil computes; retrain it with this version")
    model = PoseCollapseModel(cfg)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"pose collapse model {path}: weights do not fit "
                              f"({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, dict(obj.get("meta") or {})

"""Several trained detectors served as one: the mean of their class scores.

Why: out of fold on `../shared/real`, the 3D CNN (`small3d`) and the ImageNet MobileNetV2
detector raised their false fights in different places (the fall labs' daily activities against
passing cars and headlights on CCTV), and the mean of their fight scores, through the daemon's
smoothing, raised none in 24 quiet minutes where each alone raised three, while starting more
fights within 3 s (`docs/models/fight-candidates.md`). Averaging members trained differently is
the oldest remedy for uncorrelated errors (Dietterich, "Ensemble Methods in Machine Learning",
2000).

`ScoreEnsemble` takes one clip and gives each member the input it was trained on: the clip
arrives in [0, 1] (the ensemble's `input` has mean 0 and std 1) at the largest member's size;
each member's copy is resized (bilinear, antialiased) and normalised with its own statistics.
All members must look at the same number of frames over the same span, and name the same
classes in the same order.

Its output keeps the detector's contract (`{"pred_logits", "pred_boxes"}`, read by
`detector.postprocess`), as a set of K predictions, one per class: prediction k gives class k
the members' mean probability and a box, and the rest to no_object. The box is the one of the
member most sure of the class, or always one member's (`box_from`): a member trained on class
labels alone has a box head that never learned anything, and its boxes should not reach an
alert. Its logits are the logarithms of those probabilities, so a softmax gives them back
and `postprocess.class_scores` reads the mean unchanged. An ensemble only infers: it is built
from trained members and never trained as a whole (train a member, then rebuild it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import InputConfig, ModelConfig
from .errors import CheckpointError
from .postprocess import class_scores

COMBINE_RULES = ("mean",)
# The smallest probability written as a logit: log(0) would be -inf, which some runtimes refuse.
_MIN_PROB = 1e-9


def ensemble_input(members: Sequence[ModelConfig]) -> InputConfig:
    """The input the ensemble takes: the members' frames and span, the largest member's size,
    and identity statistics (mean 0, std 1), so the clip reaches it in [0, 1].

    Raises:
        CheckpointError: fewer than two members, or members that differ in classes, frames or
            span (`clip_seconds`); the message names the first difference.
    """
    if len(members) < 2:
        raise CheckpointError(f"an ensemble needs at least two members, got {len(members)}")
    first = members[0]
    for i, cfg in enumerate(members[1:], start=2):
        for what, mine, theirs in (
                ("classes", list(first.class_names), list(cfg.class_names)),
                ("input.frames", first.input.frames, cfg.input.frames),
                ("input.clip_seconds", first.input.clip_seconds, cfg.input.clip_seconds)):
            if mine != theirs:
                raise CheckpointError(f"ensemble member {i} has {what} {theirs}, member 1 "
                                      f"{mine}: members must see the same frames over the same "
                                      f"time and name the same classes")
    height = max(c.input.size[0] for c in members)
    width = max(c.input.size[1] for c in members)
    return InputConfig(frames=first.input.frames, size=[height, width], mean=[0.0, 0.0, 0.0],
                       std=[1.0, 1.0, 1.0], clip_seconds=first.input.clip_seconds)


def ensemble_config(members: Sequence[ModelConfig]) -> ModelConfig:
    """The `ModelConfig` an ensemble presents to the daemon and the tools: the first member's,
    with the ensemble's input (`ensemble_input`). Its backbone is the first member's; what the
    ensemble is made of is in its meta (`architecture`)."""
    return dataclasses.replace(members[0], input=ensemble_input(members))


def describe(members: Sequence[ModelConfig], combine: str = "mean") -> str:
    """A short name for logs: e.g. `mean of small3d 64x64 + mobilenet_v2 112x112`."""
    parts = [f"{c.backbone.name} {c.input.size[1]}x{c.input.size[0]}" for c in members]
    return f"{combine} of " + " + ".join(parts)


class ScoreEnsemble(nn.Module):
    """Members' class scores, averaged.

    Args:
        members: trained detectors (`VideoDETR`), each with its `cfg`.
        combine: how scores combine; only `mean` (measured; `fight-candidates.md`).
        box_from: the member (0-based) whose boxes every prediction takes; None: for each
            class, the member most sure of it.
    Attributes:
        cfg: `ensemble_config(...)`: what the daemon reads (input, classes).
        member_cfgs: each member's own `ModelConfig`.
    Raises:
        CheckpointError: an unknown rule, a `box_from` that is no member, or members that cannot
            share a clip.
    """

    def __init__(self, members: Sequence[nn.Module], combine: str = "mean",
                 box_from: Optional[int] = None) -> None:
        super().__init__()
        if combine not in COMBINE_RULES:
            raise CheckpointError(f"ensemble combine {combine!r}: expected one of "
                                  f"{', '.join(COMBINE_RULES)}")
        if box_from is not None and not 0 <= box_from < len(members):
            raise CheckpointError(f"ensemble box_from {box_from}: there are {len(members)} "
                                  f"members (0-based)")
        self.box_from = box_from
        self.member_cfgs: list[ModelConfig] = [m.cfg for m in members]
        self.cfg = ensemble_config(self.member_cfgs)
        self.combine = combine
        self.members = nn.ModuleList(members)
        for i, c in enumerate(self.member_cfgs):
            # Buffers, so they follow the model to its device and dtype.
            self.register_buffer(f"mean_{i}", torch.tensor(c.input.mean).view(1, 3, 1, 1, 1),
                                 persistent=False)
            self.register_buffer(f"std_{i}", torch.tensor(c.input.std).view(1, 3, 1, 1, 1),
                                 persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> "ScoreEnsemble":
        """Always evaluation mode: an ensemble is never trained as a whole."""
        if mode:
            raise RuntimeError("an ensemble only infers: train its members one at a time and "
                               "rebuild it (`vigil ensemble`)")
        return super().train(False)

    def member_input(self, i: int, clips: torch.Tensor) -> torch.Tensor:
        """Member `i`'s input from the ensemble's.

        Args:
            clips: (B, 3, T, H, W) in [0, 1], H x W = the ensemble's `input.size`.
        Returns:
            (B, 3, T, h, w) normalised with member i's statistics, h x w its size.
        """
        h, w = self.member_cfgs[i].input.size
        b, c, t, height, width = clips.shape
        x = clips
        if (height, width) != (h, w):
            frames = x.transpose(1, 2).reshape(b * t, c, height, width)
            frames = F.interpolate(frames, size=(h, w), mode="bilinear", align_corners=False,
                                   antialias=True)
            x = frames.reshape(b, t, c, h, w).transpose(1, 2)
        return (x - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}")

    def member_scores(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's per-class best score and its box.

        Args:
            clips: (B, 3, T, H, W) in [0, 1].
        Returns:
            scores (M, B, K) and boxes (M, B, K, 4) cxcywh, float32, M = members.
        """
        scores, boxes = [], []
        for i, member in enumerate(self.members):
            s, bx = class_scores(member(self.member_input(i, clips)))
            scores.append(s)
            boxes.append(bx)
        return torch.stack(scores), torch.stack(boxes)

    def forward(self, clips: torch.Tensor) -> dict[str, Any]:
        """Args:
            clips: (B, 3, T, H, W) float in [0, 1] (the ensemble's `input`: mean 0, std 1).
        Returns:
            {"pred_logits": (B, K, K+1), "pred_boxes": (B, K, 4) cxcywh}: one prediction per
            class (see the module's docstring).
        """
        if clips.dim() != 5 or clips.shape[1] != 3:
            raise ValueError(f"expected (B, 3, T, H, W) clips, got {tuple(clips.shape)}")
        scores, boxes = self.member_scores(clips)             # (M, B, K), (M, B, K, 4)
        mean = scores.mean(dim=0)                             # (B, K)
        surest = (scores.argmax(dim=0) if self.box_from is None   # (B, K)
                  else torch.full_like(mean, self.box_from, dtype=torch.long))
        idx = surest.unsqueeze(0).unsqueeze(-1).expand(1, -1, -1, 4)
        box = torch.gather(boxes, 0, idx).squeeze(0)          # (B, K, 4)
        # Prediction k: class k at the mean, no_object the rest, every other class zero.
        probs = torch.cat([torch.diag_embed(mean), (1.0 - mean).unsqueeze(-1)], dim=-1)
        return {"pred_logits": probs.clamp_min(_MIN_PROB).log(), "pred_boxes": box}


def ensemble_meta(members: Sequence[ModelConfig], combine: str) -> dict[str, Any]:
    """What a loaded ensemble adds to its meta: `architecture` (for logs), `members`."""
    return {"architecture": describe(members, combine),
            "members": [{"backbone": c.backbone.name, "size": list(c.input.size)}
                        for c in members]}

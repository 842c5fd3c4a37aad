"""From model outputs to detections.

`clip_predictions` is the reference inference script's rule: softmax over classes, drop
no_object, take the single best (query, foreground class) pair; the clip has a detection when
that probability is at least the threshold. `class_scores` gives, for every class, its best
query's probability and box, which the daemon smooths over time per class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .box_ops import cxcywh_to_xyxy


@dataclass(frozen=True)
class Detection:
    """One detected action in a clip.

    Attributes:
        label: class id (0 = fight, 1 = collapse with the default classes).
        label_name: class name.
        score: softmax probability of `label` for the chosen query.
        box: (cx, cy, w, h) normalised to [0, 1] of the frame.
    """
    label: int
    label_name: str
    score: float
    box: tuple[float, float, float, float]

    def xyxy(self) -> tuple[float, float, float, float]:
        """Normalised (x1, y1, x2, y2), clipped to [0, 1]."""
        cx, cy, w, h = self.box
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        return tuple(min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))  # type: ignore[return-value]

    def xyxy_px(self, size: Sequence[int]) -> tuple[int, int, int, int]:
        """Pixel (x1, y1, x2, y2), rounded, for a frame of `size` = (width, height)."""
        w, h = size
        x1, y1, x2, y2 = self.xyxy()
        return (round(x1 * w), round(y1 * h), round(x2 * w), round(y2 * h))


def _foreground_probs(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, N, K) softmax probabilities of the foreground classes (no_object dropped)."""
    return outputs["pred_logits"].detach().float().softmax(-1)[..., :-1]


def class_scores(outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each foreground class, its best query's probability and that query's box.

    Args:
        outputs: {"pred_logits": (B, N, K+1), "pred_boxes": (B, N, 4) cxcywh}.
    Returns:
        scores (B, K) float32 and boxes (B, K, 4) cxcywh, detached, on the outputs' device.
    """
    probs = _foreground_probs(outputs)                        # (B, N, K)
    scores, query = probs.max(dim=1)                          # (B, K) each
    boxes = outputs["pred_boxes"].detach().float()
    idx = query.unsqueeze(-1).expand(-1, -1, 4)               # (B, K, 4)
    return scores, torch.gather(boxes, 1, idx)


def clip_predictions(outputs: dict[str, torch.Tensor], class_names: Sequence[str],
                     threshold: float = 0.3) -> list[Detection | None]:
    """The reference rule: the best query of the best foreground class, if its score >= threshold.

    Args:
        outputs: {"pred_logits": (B, N, K+1), "pred_boxes": (B, N, 4) cxcywh}.
        class_names: K names, index = class id.
        threshold: minimum softmax probability for a detection.
    Returns:
        B entries: a `Detection`, or None when the clip has no action.
    """
    scores, boxes = class_scores(outputs)
    if scores.shape[1] != len(class_names):
        raise ValueError(f"outputs have {scores.shape[1]} classes, names {len(class_names)}")
    best, label = scores.max(dim=1)                           # (B,)
    best, label, boxes = best.cpu(), label.cpu(), boxes.cpu()
    result: list[Detection | None] = []
    for b in range(scores.shape[0]):
        k = int(label[b])
        if float(best[b]) < threshold:
            result.append(None)
            continue
        result.append(Detection(k, class_names[k], float(best[b]),
                                tuple(float(v) for v in boxes[b, k])))  # type: ignore[arg-type]
    return result


def top_per_class(outputs: dict[str, torch.Tensor], class_names: Sequence[str],
                  k: int = 1) -> list[list[Detection]]:
    """The k best queries of every foreground class, per clip.

    Args:
        outputs: {"pred_logits": (B, N, K+1), "pred_boxes": (B, N, 4) cxcywh}.
        class_names: K names.
        k: queries per class (at most N).
    Returns:
        B lists of K*k detections, grouped by class id, best first within a class.
    """
    probs = _foreground_probs(outputs).cpu()                  # (B, N, K)
    boxes = outputs["pred_boxes"].detach().float().cpu()
    k = min(k, probs.shape[1])
    top, query = probs.topk(k, dim=1)                          # (B, k, K)
    result = []
    for b in range(probs.shape[0]):
        dets = []
        for c, name in enumerate(class_names):
            for j in range(k):
                box = tuple(float(v) for v in boxes[b, int(query[b, j, c])])
                dets.append(Detection(c, name, float(top[b, j, c]), box))  # type: ignore[arg-type]
        result.append(dets)
    return result


def boxes_xyxy(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """(…, 4) normalised cxcywh to normalised xyxy clipped to [0, 1] (alert `box`)."""
    return cxcywh_to_xyxy(boxes_cxcywh).clamp(0.0, 1.0)

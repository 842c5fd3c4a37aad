"""Hungarian matching of predictions to ground truth (the report's eq. 10-11, DETR's matcher).

For each clip the cost of assigning query i to ground-truth box j is

    C[i, j] = -cost_class * p_i[c_j] + cost_bbox * |b_i - b_j|_1 + cost_giou * (-GIoU(b_i, b_j))

with p the softmax over classes and boxes in normalised cxcywh. The report writes the last term
as `2 * (1 - GIoU)`; it differs from `-2 * GIoU` by a constant per assignment, so the argmin is
the same. A target without a box (footage labelled by class only, `has_box` False) has only the
class term: it is matched by class alone. The one-to-one assignment minimising the total cost is
found with `scipy.optimize.linear_sum_assignment` per clip (clips have different numbers of targets).

`clamp_boxes` (`loss.clamp_boxes`): the GIoU term is computed on boxes clamped to the frame
([0, 1] in xyxy), as the reference implementation does; the L1 term stays on the unclamped
cxcywh boxes.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from .box_ops import pairwise_giou_cxcywh
from .errors import ConfigError

# Stands in for NaN/inf costs (a diverged model) so matching still returns an assignment; the
# loss is then non-finite too and the training loop's finite-loss guard deals with it.
_INVALID_COST = 1e8


def box_mask(target: dict[str, torch.Tensor]) -> torch.Tensor:
    """(M,) bool: which targets of a clip have a box (`target["has_box"]`, else all)."""
    if "has_box" in target:
        return target["has_box"].to(torch.bool)
    return torch.ones(target["labels"].shape[0], dtype=torch.bool, device=target["labels"].device)


class HungarianMatcher:
    """One-to-one assignment between the N queries and the K targets of each clip.

    Args:
        cost_class: weight of the (negative) probability of the target class.
        cost_bbox: weight of the L1 distance between cxcywh boxes.
        cost_giou: weight of the negative generalised IoU.
        clamp_boxes: clamp predicted and target boxes to [0, 1] (xyxy) before the GIoU.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0,
                 cost_giou: float = 2.0, clamp_boxes: bool = False) -> None:
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ConfigError("loss.cost_class, loss.cost_bbox, loss.cost_giou: all three are 0, "
                              "so the matching would be arbitrary")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.clamp_boxes = bool(clamp_boxes)

    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor,
                    target: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cost of every (query, target) pair of one clip.

        Args:
            logits: (N, K+1) class logits of the clip's queries.
            boxes: (N, 4) predicted cxcywh boxes.
            target: {"labels": (M,) int64, "boxes": (M, 4) cxcywh, optionally "has_box"
                (M,) bool: False for a target without a box, whose cost is the class term only}.
        Returns:
            (N, M) float32 cost matrix on the CPU.
        """
        prob = logits.float().softmax(-1)
        tgt_ids = target["labels"].to(logits.device)
        tgt_boxes = target["boxes"].to(boxes.device, torch.float32)
        pred_boxes = boxes.float()
        cost = -self.cost_class * prob[:, tgt_ids]
        box_cost = (self.cost_bbox * torch.cdist(pred_boxes, tgt_boxes, p=1)
                    - self.cost_giou * pairwise_giou_cxcywh(pred_boxes, tgt_boxes,
                                                           clamp=self.clamp_boxes))
        # A target labelled without a box (class-only footage) is matched by class alone.
        has_box = box_mask(target).to(box_cost.device)
        cost = cost + torch.where(has_box[None, :], box_cost, torch.zeros_like(box_cost))
        return torch.nan_to_num(cost, nan=_INVALID_COST, posinf=_INVALID_COST,
                                neginf=-_INVALID_COST).cpu()

    @torch.no_grad()
    def __call__(self, outputs: dict[str, torch.Tensor],
                 targets: list[dict[str, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match each clip's queries to its targets.

        Args:
            outputs: {"pred_logits": (B, N, K+1), "pred_boxes": (B, N, 4) cxcywh}.
            targets: B dicts {"labels": (M_b,) int64, "boxes": (M_b, 4) cxcywh}; M_b may be 0.
        Returns:
            B pairs (pred_idx, tgt_idx) of int64 CPU tensors of length min(N, M_b): query
            pred_idx[k] is assigned target tgt_idx[k].
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {logits.shape[0]} clips")
        indices = []
        for b, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(logits[b], boxes[b], target)
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64),
                            torch.as_tensor(cols, dtype=torch.int64)))
        return indices

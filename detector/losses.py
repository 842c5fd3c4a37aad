"""The set loss (the report's eq. 12-14, DETR's `SetCriterion`).

After Hungarian matching:
- `loss_ce`: cross-entropy over ALL queries: a matched query's target is its ground truth's
  class, an unmatched query's is no_object (the last logit), whose class weight is `eos_coef`
  (DETR's `empty_weight`); the mean is weighted, as `F.cross_entropy(weight=...)` does;
- `loss_bbox`: L1 distance between matched cxcywh boxes, divided by `num_boxes`; per box the
  four coordinates' absolute errors are summed (`l1_reduction: sum`, DETR's and Vigil's) or
  averaged (`mean`, the reference implementation's `F.l1_loss` default: the term is a quarter);
- `loss_giou`: `1 - GIoU` of matched boxes, summed, divided by `num_boxes`; with `clamp_boxes`
  both boxes are first clamped to the frame ([0, 1] in xyxy), as the reference does;
with `num_boxes` = max(ground-truth boxes in the batch, 1).

Footage labelled by class only (targets with `has_box` False, e.g. a whole clip marked "fight")
is matched by class cost alone and contributes to `loss_ce` only: its matched query learns the
class, no L1/GIoU term is computed for it and it is not counted in `num_boxes`. A clip without
any action is a negative as always: every query's target is no_object.

Auxiliary decoding losses (DETR's `aux_loss`): when the outputs carry "aux_outputs" (one
{"pred_logits", "pred_boxes"} per intermediate decoder layer), each is matched on its own and its
terms are returned as `loss_ce_0`, `loss_bbox_0`, ... (layer index suffix), weighted like the
final layer's (`weight_dict` holds them when the criterion is built with `aux_layers`).

Zero weights (the report's ablations, e.g. `--set loss.giou=0`): the term is still computed and
returned, detached, so it can be logged and compared across ablations, but it has weight 0 and
`total()` leaves it out entirely (not multiplied by 0, so a non-finite value cannot leak in).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .box_ops import giou_loss_cxcywh
from .matcher import HungarianMatcher, box_mask


@dataclass
class LossConfig:
    """The `loss:` section of a training config.

    Args:
        ce, l1, giou: weights of the classification, L1 and GIoU terms in the total (0 = off).
        eos_coef: class weight of no_object in the cross-entropy.
        cost_class, cost_bbox, cost_giou: weights of the matcher's cost terms.
        l1_reduction: how one box's four absolute coordinate errors make its L1 term: `sum`
            (DETR, Vigil's default) or `mean` (the reference implementation: a quarter of `sum`,
            so the same weight 5 pulls boxes a quarter as hard).
        clamp_boxes: clamp predicted and target boxes to the frame ([0, 1] xyxy) before every
            GIoU and IoU: the matcher's GIoU cost, the GIoU loss and the det-acc / mIoU IoU in
            evaluation (the reference implementation does; Vigil's default does not, so a box
            that pokes out of the frame is still pulled back by the GIoU gradient).
    """
    ce: float = 2.0
    l1: float = 5.0
    giou: float = 2.0
    eos_coef: float = 0.1
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    l1_reduction: Literal["sum", "mean"] = "sum"
    clamp_boxes: bool = False

    def __post_init__(self) -> None:
        if self.l1_reduction not in ("sum", "mean"):
            raise ValueError(f"loss.l1_reduction must be sum or mean, got {self.l1_reduction!r}")
        for name in ("ce", "l1", "giou", "cost_class", "cost_bbox", "cost_giou"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.eos_coef <= 0:
            raise ValueError(f"loss.eos_coef must be > 0, got {self.eos_coef}")
        if self.ce == 0 and self.l1 == 0 and self.giou == 0:
            raise ValueError("loss.ce, loss.l1 and loss.giou are all 0: nothing to train")


class SetCriterion(nn.Module):
    """Matches predictions to targets and computes the unweighted loss terms.

    Args:
        num_classes: K foreground classes; logits have K+1 columns, the last is no_object.
        matcher: assigns queries to targets.
        cfg: weights (`weight_dict`) and `eos_coef`.
        aux_layers: intermediate decoder layers whose auxiliary outputs are weighted
            (`loss_ce_0` ... `loss_giou_{aux_layers - 1}`), as the final layer's terms.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, cfg: LossConfig,
                 aux_layers: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.cfg = cfg
        # False: the terms are computed in the dtype the model's outputs come in (the reference
        # implementation computes its loss inside fp16 autocast; `train.loss_autocast`).
        self.cast_float = True
        base = {"loss_ce": cfg.ce, "loss_bbox": cfg.l1, "loss_giou": cfg.giou}
        self.weight_dict = dict(base)
        for i in range(aux_layers):
            self.weight_dict.update({f"{k}_{i}": v for k, v in base.items()})
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = cfg.eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]],
                indices: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                ) -> dict[str, torch.Tensor]:
        """Args:
            outputs: {"pred_logits": (B, N, K+1), "pred_boxes": (B, N, 4) cxcywh}, optionally
                "aux_outputs": a list of such dicts, one per intermediate decoder layer.
            targets: B dicts {"labels": (M_b,) int64, "boxes": (M_b, 4) cxcywh, optionally
                "has_box": (M_b,) bool}.
            indices: a matching of the final outputs already computed by `self.matcher` (else
                it is computed; auxiliary outputs are always matched on their own).
        Returns:
            {"loss_ce", "loss_bbox", "loss_giou"}, plus `loss_ce_{i}`, ... for auxiliary output
            i: unweighted scalars; zero-weight terms detached.
        """
        losses = self._terms(outputs, targets, indices)
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            losses.update({f"{k}_{i}": v for k, v in self._terms(aux, targets, None).items()})
        return {k: (v if self.weight_dict.get(k, 0) != 0 else v.detach())
                for k, v in losses.items()}

    def _terms(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]],
               indices: list[tuple[torch.Tensor, torch.Tensor]] | None
               ) -> dict[str, torch.Tensor]:
        """The three terms of one set of predictions (B, N, ...), unweighted, with gradients."""
        logits = outputs["pred_logits"]
        boxes = outputs["pred_boxes"]
        if self.cast_float:
            logits, boxes = logits.float(), boxes.float()
        if indices is None:
            indices = self.matcher(outputs, targets)
        device = logits.device

        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        batch_idx, src_idx = batch_idx.to(device), src_idx.to(device)
        matched_labels = torch.cat([t["labels"][tgt.to(t["labels"].device)].to(device)
                                    for t, (_, tgt) in zip(targets, indices)])
        matched_boxes = torch.cat([t["boxes"][tgt.to(t["boxes"].device)].to(device, boxes.dtype)
                                   for t, (_, tgt) in zip(targets, indices)])
        matched_has_box = torch.cat([box_mask(t)[tgt.to(t["labels"].device)].to(device)
                                     for t, (_, tgt) in zip(targets, indices)])
        num_boxes = max(sum(int(box_mask(t).sum()) for t in targets), 1)

        # Every query defaults to no_object; matched ones get their ground truth's class.
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=device)
        target_classes[batch_idx, src_idx] = matched_labels
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes,
                                  weight=self.empty_weight.to(device))

        # Box terms only for targets that have a box; a class-only target adds nothing here.
        src_boxes = boxes[batch_idx, src_idx][matched_has_box]     # (M_box, 4)
        matched_boxes = matched_boxes[matched_has_box]
        if src_boxes.numel():
            loss_bbox = F.l1_loss(src_boxes, matched_boxes, reduction="sum") / num_boxes
            if self.cfg.l1_reduction == "mean":
                loss_bbox = loss_bbox / src_boxes.shape[-1]
            loss_giou = giou_loss_cxcywh(src_boxes, matched_boxes, reduction="sum",
                                         clamp=self.cfg.clamp_boxes) / num_boxes
        else:   # zero, but still part of the graph so backward() sees every term
            loss_bbox = loss_giou = boxes.sum() * 0.0

        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the terms with a non-zero weight (a zero-weight term is left out)."""
        terms = [self.weight_dict[k] * v for k, v in losses.items()
                 if self.weight_dict.get(k, 0) != 0]
        return torch.stack(terms).sum()


def build_criterion(cfg: LossConfig, num_classes: int, aux_layers: int = 0) -> SetCriterion:
    """The criterion of a training config's `loss:` section for `num_classes` classes.

    Args:
        aux_layers: intermediate decoder layers with auxiliary outputs to weight (a model built
            with `aux_loss: true` has `decoder_layers - 1`); 0 = none.
    """
    matcher = HungarianMatcher(cfg.cost_class, cfg.cost_bbox, cfg.cost_giou,
                               clamp_boxes=cfg.clamp_boxes)
    return SetCriterion(num_classes, matcher, cfg, aux_layers)

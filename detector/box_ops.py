"""Box conversions and overlaps, as thin wrappers over `torchvision.ops`.

Inside the model and the datasets boxes are normalised cxcywh in [0, 1]; label files and alert
`box_px` are pixel xyxy; alert `box` is normalised xyxy. These helpers are the only place the
formats are converted, so the conventions live in one file. IoU and pairwise GIoU come from
torchvision; the element-wise GIoU loss is eq. 13 written out (no epsilon), the same values.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.ops import box_convert, box_iou, generalized_box_iou

__all__ = [
    "cxcywh_to_xyxy", "xyxy_to_cxcywh", "box_iou", "generalized_box_iou",
    "pairwise_giou_cxcywh", "to_xyxy_in_frame", "giou_loss_cxcywh", "normalize_xyxy",
    "denormalize_xyxy",
]


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Args:
        boxes: (..., 4) centre x, centre y, width, height.
    Returns:
        (..., 4) x1, y1, x2, y2 in the same units.
    """
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """Args:
        boxes: (..., 4) x1, y1, x2, y2.
    Returns:
        (..., 4) centre x, centre y, width, height in the same units.
    """
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def to_xyxy_in_frame(boxes: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    """cxcywh to xyxy, clamped to the frame ([0, 1] after normalisation) when `clamp`.

    The reference implementation clamps both predicted and target boxes to the frame before
    every IoU and GIoU (matcher, loss and det-acc); `loss.clamp_boxes` chooses it.
    """
    xyxy = cxcywh_to_xyxy(boxes)
    return xyxy.clamp(0.0, 1.0) if clamp else xyxy


def pairwise_giou_cxcywh(boxes1: torch.Tensor, boxes2: torch.Tensor,
                         clamp: bool = False) -> torch.Tensor:
    """Generalised IoU of every box of `boxes1` with every box of `boxes2`.

    Args:
        boxes1: (N, 4) cxcywh.
        boxes2: (M, 4) cxcywh.
        clamp: clamp both to [0, 1] in xyxy first (the reference implementation's GIoU).
    Returns:
        (N, M) GIoU in [-1, 1].
    """
    return generalized_box_iou(to_xyxy_in_frame(boxes1, clamp), to_xyxy_in_frame(boxes2, clamp))


def giou_loss_cxcywh(boxes1: torch.Tensor, boxes2: torch.Tensor,
                     reduction: str = "none", clamp: bool = False) -> torch.Tensor:
    """`1 - GIoU` of corresponding boxes (element-wise, not pairwise).

    GIoU is the report's eq. 13 exactly, `IoU - |C \\ (A u B)| / |C|`, the same values as the
    matcher's `generalized_box_iou` (the diagonal of it, as DETR's loss takes); torchvision's
    `generalized_box_iou_loss` adds 1e-7 to both denominators, which moves the loss of a small
    box by ~1e-6. At least one box of each pair must have a positive area (true boxes do).

    Args:
        boxes1, boxes2: (N, 4) cxcywh, row i of one paired with row i of the other.
        reduction: "none" -> (N,), "sum" or "mean" -> scalar.
        clamp: clamp both to [0, 1] in xyxy first (the reference implementation's GIoU).
    Returns:
        The loss, in [0, 2] per pair.
    """
    a, b = to_xyxy_in_frame(boxes1, clamp), to_xyxy_in_frame(boxes2, clamp)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area_a + area_b - inter
    c_wh = torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])
    c_area = c_wh[:, 0] * c_wh[:, 1]
    loss = 1.0 - (inter / union - (c_area - union) / c_area)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0.0
    if reduction != "none":
        raise ValueError(f"reduction must be none, sum or mean, got {reduction!r}")
    return loss


def normalize_xyxy(boxes_px: torch.Tensor, size: Sequence[float]) -> torch.Tensor:
    """Pixel xyxy to normalised xyxy.

    Args:
        boxes_px: (..., 4) pixel x1, y1, x2, y2.
        size: (width, height) of the frame the pixels refer to.
    Returns:
        (..., 4) in [0, 1] units of the frame (not clipped).
    """
    w, h = float(size[0]), float(size[1])
    scale = boxes_px.new_tensor([w, h, w, h])
    return boxes_px / scale


def denormalize_xyxy(boxes: torch.Tensor, size: Sequence[float]) -> torch.Tensor:
    """Normalised xyxy to pixel xyxy.

    Args:
        boxes: (..., 4) normalised x1, y1, x2, y2.
        size: (width, height) of the target frame.
    Returns:
        (..., 4) pixel coordinates (float, not rounded).
    """
    w, h = float(size[0]), float(size[1])
    scale = boxes.new_tensor([w, h, w, h])
    return boxes * scale

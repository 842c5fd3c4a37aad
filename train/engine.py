"""One training epoch and one evaluation pass, small and generic like torchvision's detection
references: the trainer owns the run (schedule, checkpoints, resume); this file owns the loops.

Clips travel as uint8 (B, T, H, W, 3) to the device (a quarter of float32's bytes) and are
normalised there with `detector.preprocess.normalize_clips`, exactly as the daemon does. A loader
of frozen frame features (`train.features`) yields float16 (B, T, C', h', w') instead, which
`forward` hands to the model with `from_frozen=True`.
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from detector.errors import VigilError
from detector.precision import autocast
from detector.preprocess import normalize_clips

from . import metrics as M
from .distributed import unwrap

log = logging.getLogger(__name__)


class NonFiniteLossError(VigilError, FloatingPointError):
    """The loss became NaN or infinite: training diverged (the message holds every term)."""


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp` on `device`, or None for full float32.

    `auto`: fp16 on CUDA (with a GradScaler), off on CPU. `on`: fp16 on CUDA, bf16 on CPU (bf16
    has float32's range, so it needs no scaler). `off`: None.
    """
    if mode == "off":
        return None
    if device.type == "cuda":
        return torch.float16
    if mode == "on":
        return torch.bfloat16
    return None


def targets_to(targets: Sequence[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    """Copy the tensors of every target dict to `device` (other values, like the stem, stay)."""
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
             for k, v in t.items()} for t in targets]


def _model_input(model: nn.Module, clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    inp = unwrap(model).cfg.input  # type: ignore[attr-defined]
    clips = clips.to(device, non_blocking=True)
    return normalize_clips(clips, inp.mean, inp.std)


def forward(model: nn.Module, batch: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """The model's outputs for a loader's batch (call it inside autocast as needed).

    Args:
        model: the detector (or DDP around it).
        batch: uint8 clips (B, T, H, W, 3), normalised here as the daemon does; or float16
            frozen frame features (B, T, C', h', w') from a `ClipDataset` with `features`.
    """
    if batch.dtype == torch.uint8:
        return model(_model_input(model, batch, device))
    return model(batch.to(device, non_blocking=True).float(), from_frozen=True)


def _check_finite(total: torch.Tensor, terms: dict[str, torch.Tensor], epoch: int,
                  step: int) -> None:
    if not torch.isfinite(total):
        values = {k: float(v.detach()) for k, v in terms.items()}
        raise NonFiniteLossError(
            f"training diverged at epoch {epoch} step {step}: loss is {float(total.detach())} "
            f"(terms {values}); lower optim.lr, keep optim.grad_clip on, or set train.amp=off")


def _count_targets(counts: dict[str, int], targets: Sequence[dict[str, Any]]) -> None:
    """Add a batch's boxed and box-less targets and its clips without an action to `counts`."""
    for t in targets:
        n = int(t["labels"].numel())
        boxed = int(t["has_box"].sum()) if "has_box" in t else n
        counts["targets_boxed"] += boxed
        counts["targets_boxless"] += n - boxed
        counts["clips_negative"] += int(n == 0)


def train_one_epoch(model: nn.Module, criterion: Any, loader: Iterable,
                    optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device,
                    epoch: int, grad_clip: float, amp: torch.dtype | None,
                    scaler: "torch.amp.GradScaler | None", progress: bool = True,
                    log_every: int = 20, loss_autocast: bool = False) -> dict[str, float]:
    """Train for one pass over `loader`.

    Args:
        model: a `VideoDETR` (its `cfg.input` gives the normalisation statistics).
        criterion: `detector.losses.SetCriterion`: `criterion(outputs, targets)` returns the
            unweighted terms and `criterion.total(terms)` their weighted sum.
        loader: yields (clips uint8 (B, T, H, W, 3) or frozen features, list of B target
            dicts); see `forward`.
        optimizer: the optimiser.
        scheduler: stepped after every optimiser step; None when the caller steps per epoch.
        device: where the model lives.
        epoch: epoch number, for the progress bar and error messages.
        grad_clip: max total gradient L2 norm; 0 disables clipping.
        amp: autocast dtype, or None for float32.
        scaler: GradScaler for fp16 on CUDA, else None.
        progress: show a tqdm bar with the running loss terms.
        log_every: with the bar off, log the running means every this many steps.
        loss_autocast: compute the loss inside autocast as well (`train.loss_autocast`, the
            reference implementation); the criterion should then have `cast_float` False.
    Returns:
        {term: mean over the epoch} for every loss term, plus `loss` (the weighted total),
        the epoch's totals `targets_boxed`, `targets_boxless` (actions trained with and without
        a box) and `clips_negative` (clips without an action), `steps` and `seconds`.
    """
    from tqdm import tqdm

    model.train()
    sums: dict[str, float] = defaultdict(float)
    counts = {"targets_boxed": 0, "targets_boxless": 0, "clips_negative": 0}
    steps = 0
    start = time.monotonic()
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not progress, leave=False,
               dynamic_ncols=True, unit="batch")
    for clips, targets in bar:
        tgts = targets_to(targets, device)
        if loss_autocast and amp is not None:
            # The reference implementation: the loss too inside autocast, on fp16 outputs.
            with autocast(device, amp):
                outputs = forward(model, clips, device)
                terms = criterion(outputs, tgts)
                total = criterion.total(terms)
        else:
            with autocast(device, amp):
                outputs = forward(model, clips, device)
            # The loss in float32: fp16 logits through softmax/log would lose the small
            # no_object terms. (Auxiliary outputs, a list, are cast by the criterion itself.)
            outputs = {k: (v.float() if torch.is_tensor(v) else v) for k, v in outputs.items()}
            terms = criterion(outputs, tgts)
            total = criterion.total(terms)
        _check_finite(total, terms, epoch, steps)

        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            if grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()

        steps += 1
        _count_targets(counts, targets)
        for k, v in terms.items():
            sums[k] += float(v.detach())
        sums["loss"] += float(total.detach())
        running = {k: sums[k] / steps for k in sums}
        if progress:
            bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in running.items()})
        elif steps % log_every == 0:
            log.info("epoch %d step %d: %s", epoch, steps,
                     " ".join(f"{k}={v:.4f}" for k, v in running.items()))
    bar.close()
    out = {k: v / max(steps, 1) for k, v in sums.items()}
    out.update({k: float(v) for k, v in counts.items()})
    out["steps"] = float(steps)
    out["seconds"] = time.monotonic() - start
    return out


def evaluate(model: nn.Module, criterion: Any, loader: Iterable, device: torch.device,
             class_names: Sequence[str], score_threshold: float = 0.3,
             amp: torch.dtype | None = None, iou_threshold: float = 0.5,
             progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the model over a loader and compute the report's metrics and the loss terms.

    `predict` then `summarise`; under DDP the trainer calls the two itself, gathering every
    rank's predictions in between.

    Args:
        model: the detector.
        criterion: the training criterion (its matcher's weights also drive mIoU matching).
        loader: yields (clips uint8 (B, T, H, W, 3), targets with "labels", "boxes", "stem",
            and optionally "has_box" (K,) bool (absent: every action has a box) and "source"
            (absent: "all")).
        device: where the model lives.
        class_names: the K foreground classes.
        score_threshold: clip-level decision threshold.
        amp: autocast dtype or None.
        iou_threshold: det-acc IoU threshold.
        progress: show a tqdm bar.
    Returns:
        (metrics, predictions): `train.metrics.compute_metrics`'s dict plus the mean loss terms
        (`loss_ce`, ..., `loss`) and `seconds`; and per video {"stem", "source", "probs"
        (N, K+1), "boxes" (N, 4) cxcywh, "gt_labels" (G,), "gt_boxes" (G, 4), "gt_has_box" (G,)}
        merged with its `per_video` entry (pred, score, true, iou, correct, box,
        in_box_metrics). Box metrics cover only the videos with boxes (see
        `train.metrics.compute_metrics`).
    """
    start = time.monotonic()
    preds, loss_sums = predict(model, criterion, loader, device, amp, progress)
    metrics, preds = summarise(preds, loss_sums, criterion, class_names, score_threshold,
                               iou_threshold)
    metrics["seconds"] = time.monotonic() - start
    return metrics, preds


@torch.inference_mode()
def predict(model: nn.Module, criterion: Any, loader: Iterable, device: torch.device,
            amp: torch.dtype | None = None, progress: bool = False
            ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The model's outputs and the loss over a loader, without metrics (see `evaluate`).

    Returns:
        (predictions, loss_sums): per video, in loader order, {"stem", "source", "probs"
        (N, K+1), "boxes" (N, 4) cxcywh, "gt_labels" (G,), "gt_boxes" (G, 4), "gt_has_box"
        (G,)}; and each loss term (and `loss`, the weighted total) summed over the videos
        (batch mean x batch size), with `videos`, the number of videos. Plain data: it can
        be gathered from other ranks with `torch.distributed.gather_object`.
    """
    from tqdm import tqdm

    model.eval()
    sums: dict[str, float] = defaultdict(float)
    preds: list[dict[str, Any]] = []
    for clips, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
        tgts = targets_to(targets, device)
        with autocast(device, amp):
            outputs = forward(model, clips, device)
        outputs = {k: v.float() for k, v in outputs.items()}
        terms = criterion(outputs, tgts)
        total = criterion.total(terms)
        b = clips.shape[0]
        sums["videos"] += b
        for k, v in terms.items():
            sums[k] += float(v) * b
        sums["loss"] += float(total) * b
        probs = outputs["pred_logits"].softmax(-1).cpu().numpy()
        boxes = outputs["pred_boxes"].cpu().numpy()
        for i, t in enumerate(targets):
            preds.append(_prediction(t, probs[i], boxes[i], len(preds)))
    return preds, dict(sums)


def summarise(preds: list[dict[str, Any]], loss_sums: dict[str, float], criterion: Any,
              class_names: Sequence[str], score_threshold: float = 0.3,
              iou_threshold: float = 0.5) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The metrics of `predict`'s predictions (one list over the whole validation set) and the
    mean loss terms from its `loss_sums` (added up over ranks: each term and `videos`).

    Returns:
        (metrics, predictions) as `evaluate` returns them, without `seconds`.
    """
    matcher = getattr(criterion, "matcher", None)
    weights = (float(getattr(matcher, "cost_class", 2.0)), float(getattr(matcher, "cost_bbox", 5.0)),
               float(getattr(matcher, "cost_giou", 2.0)))
    metrics = M.compute_metrics([p["probs"] for p in preds], [p["boxes"] for p in preds],
                                [p["gt_labels"] for p in preds], [p["gt_boxes"] for p in preds],
                                class_names, score_threshold, iou_threshold, weights,
                                gt_has_box=[p["gt_has_box"] for p in preds],
                                clamp_boxes=bool(getattr(matcher, "clamp_boxes", False)))
    for p, v in zip(preds, metrics["per_video"]):
        p.update(v)
        v["stem"] = p["stem"]
    n_videos = loss_sums.get("videos", 0)
    for k, v in loss_sums.items():
        if k != "videos":
            metrics[k] = v / n_videos if n_videos else math.nan
    return metrics, preds


def _prediction(target: dict[str, Any], probs: np.ndarray, boxes: np.ndarray,
                index: int) -> dict[str, Any]:
    """One video's record for `evaluate`: its model output and its truth as numpy arrays."""
    labels = target["labels"].cpu().numpy().astype(np.int64)
    has_box = target.get("has_box")
    has_box = (np.ones(len(labels), dtype=bool) if has_box is None
               else np.asarray(has_box.cpu() if torch.is_tensor(has_box) else has_box, dtype=bool))
    return {"stem": target.get("stem", str(index)), "source": target.get("source") or "all",
            "probs": probs, "boxes": boxes, "gt_labels": labels,
            "gt_boxes": target["boxes"].cpu().numpy().astype(np.float64),
            "gt_has_box": has_box.reshape(-1)}

"""Evaluation metrics of the technical report, plus COCO-style average precision.

Everything here is plain numpy (and scipy's Hungarian solver) over per-video arrays, so the
definitions can be checked against hand-computed cases without a model:

- video accuracy (report eq. 16): the clip-level prediction is the best query of the best
  foreground class when its score is at least the threshold, otherwise "none"; the true class is
  the first annotation's class, or "none" for a video without annotations;
- det-acc@IoU (eq. 17): the class is right and the predicted box overlaps a true box of that class
  by at least the IoU threshold; a no-action video counts as correct when "none" is predicted;
- mIoU (eq. 18): mean IoU of the Hungarian-matched (query, true box) pairs, matched with the
  training cost `-w_cls * p[c] + w_l1 * L1 + w_giou * (1 - GIoU)`;
- per-class precision/recall/F1 over the K foreground classes plus "none", with macro and
  support-weighted averages (the report's Table 2), and the (K+1)x(K+1) confusion matrix;
- AP@0.5 and AP@[0.5:0.95] per class and their means: every query is a detection of its best
  foreground class (as DETR evaluates), ranked over all videos, greedily matched to unmatched true
  boxes, precision interpolated at 101 recall points as pycocotools does.

Boxes are normalised cxcywh throughout, as the model outputs them. With `clamp_boxes` (the
reference implementation's evaluation, `loss.clamp_boxes`) boxes are clamped to the frame
([0, 1] in xyxy) before the det-acc IoU and the mIoU matching.

Real footage often has only a video-level class. Box metrics (det-acc, mIoU, AP) are then taken
over the videos where they are defined: negatives, and positives whose every action has a box
(`box_metric_videos`); a positive without boxes counts for video accuracy and the per-class
table only. When no positive in the set has a box, the box metrics are NaN and
`metrics["box_metrics"]` says why.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, box_iou, generalized_box_iou

NONE_NAME = "none"
COCO_IOUS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


# --------------------------------------------------------------------------- boxes
def cxcywh_to_xyxy(boxes: np.ndarray, clamp: bool = False) -> np.ndarray:
    """Args:
        boxes: (..., 4) cx, cy, w, h.
        clamp: clamp the result to [0, 1] (the frame, for normalised boxes).
    Returns:
        (..., 4) x1, y1, x2, y2.
    """
    out = box_convert(torch.as_tensor(np.asarray(boxes, dtype=np.float64)),
                      in_fmt="cxcywh", out_fmt="xyxy").numpy()
    return np.clip(out, 0.0, 1.0) if clamp else out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (torchvision's `box_iou`, in float64 for exact metrics).

    Args:
        a: (N, 4) xyxy.
        b: (M, 4) xyxy.
    Returns:
        (N, M) IoU in [0, 1]; 0 where a union is empty.
    """
    iou = box_iou(_boxes(a), _boxes(b)).numpy()
    return np.nan_to_num(iou, nan=0.0)


def giou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise generalised IoU of xyxy boxes (torchvision's `generalized_box_iou`).

    Args:
        a: (N, 4) xyxy.
        b: (M, 4) xyxy.
    Returns:
        (N, M) GIoU in [-1, 1].
    """
    return np.nan_to_num(generalized_box_iou(_boxes(a), _boxes(b)).numpy(), nan=0.0)


def _boxes(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1, 4))


# --------------------------------------------------------------------------- per video
def clip_decision(probs: np.ndarray, boxes: np.ndarray,
                  threshold: float) -> tuple[int, float, np.ndarray | None]:
    """The clip-level prediction of the reference inference script.

    Args:
        probs: (N, K+1) softmax over K foreground classes and no_object (last column).
        boxes: (N, 4) cxcywh.
        threshold: minimum score of a foreground prediction.
    Returns:
        (label, score, box): label in [0, K) with its query's box, or K ("none") with box None
        when the best foreground score is below the threshold; score is that best score.
    """
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1] - 1
    fg = probs[:, :k]
    cls = int(np.argmax(fg.max(axis=0)))
    query = int(np.argmax(fg[:, cls]))
    score = float(fg[query, cls])
    if score >= threshold:
        return cls, score, np.asarray(boxes, dtype=np.float64)[query]
    return k, score, None


def true_class(labels: np.ndarray, num_classes: int) -> int:
    """The video's class as the report counts it: its first annotation's, or none (= K)."""
    labels = np.asarray(labels).reshape(-1)
    return int(labels[0]) if labels.size else num_classes


def detection_correct(pred_label: int, pred_box: np.ndarray | None, gt_labels: np.ndarray,
                      gt_boxes: np.ndarray, num_classes: int, iou_threshold: float,
                      clamp_boxes: bool = False) -> tuple[bool, float]:
    """Whether one video's clip prediction counts for det-acc (report eq. 17).

    Args:
        pred_label: predicted class, K for none.
        pred_box: (4,) cxcywh or None.
        gt_labels: (G,) classes; gt_boxes: (G, 4) cxcywh.
        clamp_boxes: clamp both boxes to the frame before the IoU.
    Returns:
        (correct, iou): iou with the best true box of the predicted class (0 when none applies).
    """
    want = true_class(gt_labels, num_classes)
    if want == num_classes or pred_label == num_classes:
        return pred_label == want, 0.0
    if pred_label != want:
        return False, 0.0
    gt_labels = np.asarray(gt_labels).reshape(-1)
    same = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)[gt_labels == pred_label]
    iou = float(iou_matrix(cxcywh_to_xyxy(pred_box, clamp_boxes)[None],
                           cxcywh_to_xyxy(same, clamp_boxes)).max())
    return iou >= iou_threshold, iou


def matched_ious(probs: np.ndarray, boxes: np.ndarray, gt_labels: np.ndarray,
                 gt_boxes: np.ndarray, weights: Sequence[float] = (2.0, 5.0, 2.0),
                 clamp_boxes: bool = False) -> np.ndarray:
    """IoU of each Hungarian-matched (query, true box) pair of one video.

    Args:
        probs: (N, K+1) softmax; boxes: (N, 4) cxcywh.
        gt_labels: (G,); gt_boxes: (G, 4) cxcywh.
        weights: (class, L1, GIoU) weights of the matching cost, as in training.
        clamp_boxes: clamp boxes to the frame before GIoU and IoU, as training's matcher.
    Returns:
        (min(N, G),) IoUs; empty when the video has no true boxes.
    """
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    if gt_labels.size == 0:
        return np.zeros(0)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    w_cls, w_l1, w_giou = weights
    pred_xyxy = cxcywh_to_xyxy(boxes, clamp_boxes)
    gt_xyxy = cxcywh_to_xyxy(gt_boxes, clamp_boxes)
    cost = (-w_cls * np.asarray(probs, dtype=np.float64)[:, gt_labels]
            + w_l1 * np.abs(boxes[:, None, :] - gt_boxes[None, :, :]).sum(-1)
            + w_giou * (1.0 - giou_matrix(pred_xyxy, gt_xyxy)))
    rows, cols = linear_sum_assignment(cost)
    return iou_matrix(pred_xyxy, gt_xyxy)[rows, cols]


# --------------------------------------------------------------------------- classification
def confusion_matrix(true: Sequence[int], pred: Sequence[int], n: int) -> np.ndarray:
    """Args:
        true, pred: class ids in [0, n).
    Returns:
        (n, n) int64 counts, rows = true class, columns = predicted class.
    """
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def classification_report(cm: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-class precision, recall, F1 and support from a confusion matrix, as the report's Table 2.

    A ratio with a zero denominator is 0 (as scikit-learn's `zero_division=0`).

    Returns:
        {name: {precision, recall, f1, support}} for every class, plus "macro_avg" and
        "weighted_avg" (weighted by support).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        out[name] = {"precision": float(precision[i]), "recall": float(recall[i]),
                     "f1": float(f1[i]), "support": int(support[i])}
    total = support.sum()
    out["macro_avg"] = {"precision": float(precision.mean()), "recall": float(recall.mean()),
                        "f1": float(f1.mean()), "support": int(total)}
    w = support / total if total > 0 else np.zeros_like(support)
    out["weighted_avg"] = {"precision": float((precision * w).sum()),
                           "recall": float((recall * w).sum()),
                           "f1": float((f1 * w).sum()), "support": int(total)}
    return out


# --------------------------------------------------------------------------- average precision
def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """COCO's 101-point interpolated AP of one ranked list of detections.

    Args:
        scores: (D,) detection scores.
        tp: (D,) bool, whether each detection matched a true box.
        num_gt: number of true boxes.
    Returns:
        AP in [0, 1], or NaN when there are no true boxes (COCO leaves such a class out).
    """
    if num_gt == 0:
        return math.nan
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    hits = np.asarray(tp, dtype=bool)[order]
    if hits.size == 0:
        return 0.0
    ctp = np.cumsum(hits)
    recall = ctp / num_gt
    precision = ctp / np.arange(1, hits.size + 1)
    # The envelope: the best precision at this recall or any higher one.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(idx < precision.size, precision[np.minimum(idx, precision.size - 1)], 0.0)
    return float(sampled.mean())


def class_detections(probs: Sequence[np.ndarray], boxes: Sequence[np.ndarray], cls: int
                     ) -> list[tuple[float, int, np.ndarray]]:
    """Every query whose best foreground class is `cls`, as (score, video index, box cxcywh)."""
    out = []
    for v, (p, b) in enumerate(zip(probs, boxes)):
        p = np.asarray(p, dtype=np.float64)
        fg = p[:, :-1]
        best = fg.argmax(axis=1)
        for q in np.flatnonzero(best == cls):
            out.append((float(fg[q, cls]), v, np.asarray(b, dtype=np.float64)[q]))
    return out


def ap_per_threshold(probs: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                     gt_labels: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray], cls: int,
                     iou_thresholds: Sequence[float] = COCO_IOUS) -> np.ndarray:
    """AP of one class at each IoU threshold, ranking its detections over all videos.

    Detections are matched greedily in descending score to the unmatched true box of the same
    class and video with the highest IoU, as pycocotools does.

    Args:
        probs: per video (N, K+1) softmax; boxes: per video (N, 4) cxcywh.
        gt_labels: per video (G,); gt_boxes: per video (G, 4) cxcywh.
        cls: the class.
        iou_thresholds: (T,) thresholds.
    Returns:
        (T,) AP per threshold (NaN when the class has no true box anywhere).
    """
    dets = class_detections(probs, boxes, cls)
    dets.sort(key=lambda d: -d[0])  # stable, so ties keep video order
    gts = []
    for labels, bxs in zip(gt_labels, gt_boxes):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        gts.append(cxcywh_to_xyxy(np.asarray(bxs, dtype=np.float64).reshape(-1, 4)[labels == cls]))
    num_gt = sum(len(g) for g in gts)
    scores = np.array([d[0] for d in dets])
    out = np.zeros(len(iou_thresholds))
    for t, thr in enumerate(iou_thresholds):
        used = [np.zeros(len(g), dtype=bool) for g in gts]
        tp = np.zeros(len(dets), dtype=bool)
        for i, (_, v, box) in enumerate(dets):
            if not len(gts[v]):
                continue
            ious = iou_matrix(cxcywh_to_xyxy(box)[None], gts[v])[0]
            ious[used[v]] = -1.0
            j = int(np.argmax(ious))
            if ious[j] >= thr:
                used[v][j] = True
                tp[i] = True
        out[t] = average_precision(scores, tp, num_gt)
    return out


# --------------------------------------------------------------------------- box coverage
NO_BOXES_NOTE = "no boxes in this set"


def video_has_boxes(gt_labels: np.ndarray, has_box: Any) -> bool:
    """Whether a video's box metrics are defined: it has no action, or every action has a box.

    Args:
        gt_labels: (G,) true classes.
        has_box: (G,) bool per action (the dataset's `has_box` target), or one bool for all.
    Returns:
        True for a negative; for a positive, True when all G actions have a box (a video with
        some box-less action is left out whole: its unboxed action would otherwise make a
        correct detection count as a false positive).
    """
    g = np.asarray(gt_labels).reshape(-1).size
    flags = np.broadcast_to(np.asarray(has_box, dtype=bool).reshape(-1), (g,)) if g else ()
    return bool(np.all(flags))


def box_metric_videos(gt_labels: Sequence[np.ndarray],
                      gt_has_box: Sequence[Any] | None) -> np.ndarray:
    """(V,) bool: the videos box metrics are computed over (see `video_has_boxes`).

    `gt_has_box` None means every action has a box (the synthetic and fully boxed datasets).
    """
    if gt_has_box is None:
        return np.ones(len(gt_labels), dtype=bool)
    if len(gt_has_box) != len(gt_labels):
        raise ValueError(f"gt_has_box has {len(gt_has_box)} entries for {len(gt_labels)} videos")
    return np.array([video_has_boxes(gl, hb) for gl, hb in zip(gt_labels, gt_has_box)],
                    dtype=bool)


def box_coverage_note(used: np.ndarray, gt_labels: Sequence[np.ndarray]) -> str | None:
    """What `format_table` says about the box metrics' videos; None when they cover all.

    Returns:
        None when every video counts; NO_BOXES_NOTE when no positive video has boxes (then the
        box metrics are NaN: det-acc over the negatives alone would read as a detection score);
        otherwise "over U of V videos (N positives without boxes left out)".
    """
    used = np.asarray(used, dtype=bool)
    if used.all():
        return None
    positive = np.array([np.asarray(gl).size > 0 for gl in gt_labels], dtype=bool)
    if not (used & positive).any():
        return NO_BOXES_NOTE
    return (f"over {int(used.sum())} of {used.size} videos "
            f"({int((~used).sum())} positives without boxes left out)")


# --------------------------------------------------------------------------- everything
def compute_metrics(probs: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                    gt_labels: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                    class_names: Sequence[str], score_threshold: float = 0.3,
                    iou_threshold: float = 0.5,
                    match_weights: Sequence[float] = (2.0, 5.0, 2.0),
                    gt_has_box: Sequence[Any] | None = None,
                    clamp_boxes: bool = False) -> dict[str, Any]:
    """All the report's validation metrics over a set of videos.

    Args:
        probs: per video (N, K+1) softmax over the K classes and no_object.
        boxes: per video (N, 4) predicted cxcywh.
        gt_labels: per video (G,) true classes (G may be 0).
        gt_boxes: per video (G, 4) true cxcywh.
        class_names: the K foreground class names.
        score_threshold: clip-level decision threshold (reference: 0.3).
        iou_threshold: det-acc IoU threshold (report: 0.5).
        match_weights: matching cost weights for mIoU.
        gt_has_box: per video (G,) bool (or one bool): which actions have a true box; None =
            all. Box metrics (det_acc, miou, ap50, ap, map50, map) are computed over the videos
            of `box_metric_videos` only, and are NaN when no positive among them has a box.
        clamp_boxes: clamp boxes to the frame before the det-acc IoU and the mIoU matching
            (`loss.clamp_boxes`, the reference implementation's evaluation).
    Returns:
        {"num_videos", "video_acc", "det_acc", "miou", "report" (per-class P/R/F1, averages),
         "confusion_matrix" (list of lists, rows true), "labels" (class names + "none"),
         "ap50" {class: AP}, "ap" {class: AP@[.5:.95]}, "map50", "map", "box_videos" (how many
         videos the box metrics cover), "per_video" (list of {pred, score, true, iou, correct,
         box, in_box_metrics}), plus "box_metrics" (a note, see `box_coverage_note`) when the
         box metrics do not cover every video. NaN where a value is undefined. A per-video
         `in_box_metrics` says whether the video counts for the box metrics; its `correct` is
         det-acc's when it does, else whether the class is right, and its `iou` is NaN then.
    Raises:
        ValueError: gt_has_box's length differs from the number of videos.
    """
    k = len(class_names)
    names = list(class_names) + [NONE_NAME]
    used = box_metric_videos(gt_labels, gt_has_box)
    note = box_coverage_note(used, gt_labels)
    if note == NO_BOXES_NOTE:
        used = np.zeros_like(used)
    true_ids, pred_ids, correct, matched, per_video = [], [], [], [], []
    for p, b, gl, gb, boxed in zip(probs, boxes, gt_labels, gt_boxes, used):
        label, score, box = clip_decision(p, b, score_threshold)
        want = true_class(gl, k)
        if boxed:
            ok, iou = detection_correct(label, box, gl, gb, k, iou_threshold, clamp_boxes)
            correct.append(ok)
            matched.append(matched_ious(p, b, gl, gb, match_weights, clamp_boxes))
        else:
            ok, iou = label == want, math.nan
        true_ids.append(want)
        pred_ids.append(label)
        per_video.append({"pred": names[label], "score": score, "true": names[want],
                          "iou": iou, "correct": bool(ok),
                          "box": None if box is None else [float(x) for x in box],
                          "in_box_metrics": bool(boxed)})
    n = len(true_ids)
    cm = confusion_matrix(true_ids, pred_ids, k + 1)
    all_matched = np.concatenate(matched) if matched else np.zeros(0)
    ap50, ap = _ap_tables(probs, boxes, gt_labels, gt_boxes, class_names, used)
    out = {
        "num_videos": n,
        "video_acc": float(np.mean(np.asarray(true_ids) == np.asarray(pred_ids))) if n else math.nan,
        "det_acc": float(np.mean(correct)) if correct else math.nan,
        "miou": float(all_matched.mean()) if all_matched.size else math.nan,
        "report": classification_report(cm, names),
        "confusion_matrix": cm.tolist(),
        "labels": names,
        "ap50": ap50,
        "ap": ap,
        "map50": _nanmean(list(ap50.values())),
        "map": _nanmean(list(ap.values())),
        "per_video": per_video,
        "box_videos": int(used.sum()),
        "settings": {"score_threshold": float(score_threshold),
                     "iou_threshold": float(iou_threshold)},
    }
    if note is not None:
        out["box_metrics"] = note
    return out


def _ap_tables(probs: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
               gt_labels: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
               class_names: Sequence[str], used: np.ndarray
               ) -> tuple[dict[str, float], dict[str, float]]:
    """({class: AP@0.5}, {class: AP@[.5:.95]}) over the videos flagged in `used` (all NaN when
    none is)."""
    keep = np.flatnonzero(used)
    sub = [[seq[i] for i in keep] for seq in (probs, boxes, gt_labels, gt_boxes)]
    ap50, ap = {}, {}
    for c, name in enumerate(class_names):
        per_t = (ap_per_threshold(*sub, c, COCO_IOUS) if keep.size
                 else np.full(len(COCO_IOUS), math.nan))
        ap50[name] = float(per_t[0])
        ap[name] = float(per_t.mean())
    return ap50, ap


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Flatten a metrics dict to `name -> float` for logs, tables and cross-validation.

    Nested per-class values become e.g. `f1/fight`, `ap50/collapse`; `per_video`, the confusion
    matrix and label lists are left out.
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key in ("per_video", "confusion_matrix", "labels", "settings"):
            continue
        if key == "report":
            for cls, row in value.items():
                for stat in ("precision", "recall", "f1"):
                    out[f"{stat}/{cls}"] = float(row[stat])
        elif isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (int, float)):
                    out[f"{key}/{sub}"] = float(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def to_jsonable(value: Any) -> Any:
    """Replace NaN and infinities with None and numpy scalars/arrays with Python ones (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


# --------------------------------------------------------------------------- text table
def format_table(metrics: dict[str, Any], losses: dict[str, float] | None = None,
                 title: str = "") -> str:
    """The metrics as an aligned, human-readable text table (what `vigil eval` prints).

    Args:
        metrics: the output of `compute_metrics`.
        losses: optional loss terms to list below the headline numbers.
        title: optional first line.
    Returns:
        Multi-line text without a trailing newline.
    """
    def num(v: Any, digits: int = 3) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"

    lines = [title] if title else []
    thr = metrics.get("settings", {}).get("iou_threshold", 0.5)
    head = [("videos", str(metrics.get("num_videos", 0))),
            ("video accuracy", num(metrics.get("video_acc"))),
            (f"det-acc@IoU>={thr:g}", num(metrics.get("det_acc"))),
            ("mean IoU (matched)", num(metrics.get("miou"))),
            ("mAP@0.5", num(metrics.get("map50"))),
            ("mAP@[.5:.95]", num(metrics.get("map")))]
    for name, value in (losses or {}).items():
        head.append((name, num(value, 4)))
    width = max(len(k) for k, _ in head)
    lines += [f"  {k:<{width}}  {v:>8}" for k, v in head]
    if metrics.get("box_metrics"):
        lines.append(f"  (det-acc, mIoU and AP: {metrics['box_metrics']})")

    report = metrics.get("report", {})
    if report:
        names = [n for n in report if n not in ("macro_avg", "weighted_avg")]
        rows = names + ["macro_avg", "weighted_avg"]
        w = max(len(r) for r in rows)
        ap50, ap = metrics.get("ap50", {}), metrics.get("ap", {})
        lines.append("")
        lines.append(f"  {'class':<{w}}  {'precision':>9}  {'recall':>7}  {'f1':>6}  {'support':>7}"
                     f"  {'AP@0.5':>7}  {'AP@.5:.95':>9}")
        for r in rows:
            row = report[r]
            lines.append(f"  {r:<{w}}  {num(row['precision']):>9}  {num(row['recall']):>7}"
                         f"  {num(row['f1']):>6}  {row['support']:>7}"
                         f"  {num(ap50[r]) if r in ap50 else '':>7}"
                         f"  {num(ap[r]) if r in ap else '':>9}")
    cm = metrics.get("confusion_matrix")
    labels = metrics.get("labels")
    if cm and labels:
        corner = "true \\ pred"
        w = max(max(len(x) for x in labels), len(corner))
        cw = max(max(len(x) for x in labels), max(len(str(v)) for r in cm for v in r))
        lines.append("")
        lines.append(f"  {corner:<{w}}  " + "  ".join(f"{x:>{cw}}" for x in labels))
        for name, row in zip(labels, cm):
            lines.append(f"  {name:<{w}}  " + "  ".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)

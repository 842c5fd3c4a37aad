"""Per-source video-level report: how the detector does on each dataset a test set mixes.

Real footage comes with video-level labels (fight / collapse / none) from several public
datasets, each with its own cameras and hard negatives; one overall number hides a source where
the model fails. For each source and "overall", `source_report` gives:

- videos and video accuracy (true class == predicted class at the operating threshold);
- per class (the K foreground classes and "none"): precision and recall with their counts
  (NaN, not 0, when the denominator is 0: a source without collapse videos has no collapse
  recall);
- ROC AUC of each foreground class's video score, one-vs-rest (positives: the videos of that
  class; negatives: all others), threshold-free. The exact rank form (Mann-Whitney U / (n1 n0),
  Hanley & McNeil 1982), with average ranks for ties via `scipy.stats.rankdata`; NaN when the
  source lacks positives or negatives of the class;
- the false-alarm rate: the share of "none" videos predicted as any class at the threshold.

A video's score of class c is the largest probability of c over its queries (`video_scores`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata

from .metrics import NONE_NAME

OVERALL = "overall"


def video_scores(probs: np.ndarray) -> np.ndarray:
    """Each foreground class's video-level score: the max over queries of its probability.

    Args:
        probs: (N, K+1) softmax over K classes and no_object (last column).
    Returns:
        (K,) float64 scores in [0, 1].
    """
    probs = np.asarray(probs, dtype=np.float64)
    return probs[:, :-1].max(axis=0)


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Exact area under the ROC curve by ranks (the Mann-Whitney U statistic over n1 * n0).

    AUC = (sum of the positives' ranks - n1 (n1 + 1) / 2) / (n1 n0), ranks averaged over ties,
    so a tie between a positive and a negative counts one half (as scikit-learn's roc_auc_score).

    Args:
        scores: (V,) scores, higher = more likely positive.
        positive: (V,) bool.
    Returns:
        AUC in [0, 1]; NaN when there is no positive or no negative.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    n1 = int(positive.sum())
    n0 = positive.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def group_report(scores: np.ndarray, true: np.ndarray, pred: np.ndarray,
                 class_names: Sequence[str]) -> dict[str, Any]:
    """The report of one group of videos (a source, or all of them).

    Args:
        scores: (V, K) video-level class scores (`video_scores`).
        true, pred: (V,) class ids in [0, K], K = none.
        class_names: the K foreground class names.
    Returns:
        {"videos", "correct", "video_acc", "per_class" {name: {"support", "predicted", "tp",
         "precision", "recall"}} for the K classes and "none", "auc" {foreground name: AUC},
         "none_videos", "false_alarms", "false_alarm_rate"}; NaN where undefined.
    """
    k = len(class_names)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, k)
    true = np.asarray(true, dtype=np.int64).reshape(-1)
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    names = list(class_names) + [NONE_NAME]
    per_class = {}
    for c, name in enumerate(names):
        support, predicted = int((true == c).sum()), int((pred == c).sum())
        tp = int(((true == c) & (pred == c)).sum())
        per_class[name] = {"support": support, "predicted": predicted, "tp": tp,
                           "precision": _ratio(tp, predicted), "recall": _ratio(tp, support)}
    none = true == k
    false_alarms = int((none & (pred != k)).sum())
    correct = int((true == pred).sum())
    return {
        "videos": int(true.size),
        "correct": correct,
        "video_acc": _ratio(correct, int(true.size)),
        "per_class": per_class,
        "auc": {name: roc_auc(scores[:, c], true == c) for c, name in enumerate(class_names)},
        "none_videos": int(none.sum()),
        "false_alarms": false_alarms,
        "false_alarm_rate": _ratio(false_alarms, int(none.sum())),
    }


def source_report(scores: np.ndarray, true: Sequence[int], pred: Sequence[int],
                  sources: Sequence[str], class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`group_report` of every source and of all videos together.

    Args:
        scores: (V, K) video-level class scores.
        true: (V,) true class ids, K = none.
        pred: (V,) predicted class ids at the operating threshold, K = none.
        sources: (V,) source name of each video.
        class_names: the K foreground class names.
    Returns:
        {source: report} in sorted source order, then {"overall": report}.
    Raises:
        ValueError: the arrays do not all have V entries, or a source is named "overall".
    """
    true_a = np.asarray(true, dtype=np.int64).reshape(-1)
    pred_a = np.asarray(pred, dtype=np.int64).reshape(-1)
    src = np.asarray([str(s) for s in sources], dtype=object)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, len(class_names))
    if not (len(scores) == true_a.size == pred_a.size == src.size):
        raise ValueError(f"per-video arrays differ in length: scores {len(scores)}, true "
                         f"{true_a.size}, pred {pred_a.size}, sources {src.size}")
    if OVERALL in set(src):
        raise ValueError(f"a source may not be called {OVERALL!r}")
    out = {}
    for name in sorted(set(src)):
        m = src == name
        out[name] = group_report(scores[m], true_a[m], pred_a[m], class_names)
    out[OVERALL] = group_report(scores, true_a, pred_a, class_names)
    return out


def report_from_predictions(preds: Sequence[dict[str, Any]],
                            class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`source_report` of `train.engine.evaluate`'s per-video predictions.

    Args:
        preds: per video {"probs" (N, K+1), "true", "pred" (class names or "none"), and
            optionally "source" (absent: "all")}.
        class_names: the K foreground classes.
    """
    names = list(class_names) + [NONE_NAME]
    k = len(class_names)
    scores = (np.stack([video_scores(p["probs"]) for p in preds]) if preds
              else np.zeros((0, k)))
    return source_report(scores, [names.index(p["true"]) for p in preds],
                         [names.index(p["pred"]) for p in preds],
                         [p.get("source") or "all" for p in preds], class_names)


def _num(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _with_count(v: float, num: int, den: int) -> str:
    return f"{_num(v)} ({num}/{den})"


def format_source_table(report: dict[str, dict[str, Any]], class_names: Sequence[str],
                        threshold: float | None = None) -> str:
    """The per-source report as two aligned text tables (what `vigil eval` prints).

    First one line per source (videos, video accuracy, false alarms on none videos), then one
    line per (source, foreground class): support, recall, precision (with counts) and ROC AUC.
    A class a source neither has nor was predicted on is left out of the second table (its row
    would be all n/a); `report` keeps it.

    Returns:
        Multi-line text without a trailing newline.
    """
    at = f" at threshold {threshold:g}" if threshold is not None else ""
    rows = [("source", "videos", "accuracy", "false alarms (none)")]
    for src, r in report.items():
        rows.append((src, str(r["videos"]), _with_count(r["video_acc"], r["correct"], r["videos"]),
                     _with_count(r["false_alarm_rate"], r["false_alarms"], r["none_videos"])))
    lines = [f"per source{at}:"] + _align(rows, left=1)
    rows = [("source", "class", "support", "recall", "precision", "ROC AUC")]
    for src, r in report.items():
        for name in class_names:
            c = r["per_class"][name]
            if c["support"] == 0 and c["predicted"] == 0:
                continue
            rows.append((src, name, str(c["support"]),
                         _with_count(c["recall"], c["tp"], c["support"]),
                         _with_count(c["precision"], c["tp"], c["predicted"]),
                         _num(r["auc"][name])))
    return "\n".join(lines + [""] + _align(rows, left=2))


def _align(rows: list[tuple[str, ...]], left: int) -> list[str]:
    """Rows as text columns: the first `left` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(r, widths))) for r in rows]

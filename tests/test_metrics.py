"""The report's metrics against cases computed by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from train import metrics as M

NAMES = ["fight", "collapse"]


def probs_for(label: int, score: float, n: int = 3) -> np.ndarray:
    """(n, 3) softmax rows: query 0 gives `label` the score and the rest to no_object; the other
    queries are mostly no_object."""
    p = np.tile(np.array([0.05, 0.05, 0.9]), (n, 1))
    row = np.zeros(3)
    row[label] = score
    row[2] += 1.0 - score
    p[0] = row
    return p


def boxes_for(box: list[float], n: int = 3) -> np.ndarray:
    b = np.tile(np.array([0.1, 0.1, 0.05, 0.05]), (n, 1))
    b[0] = box
    return b


def test_iou_and_giou_of_hand_computed_boxes():
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 5.0, 1.0]])
    assert M.iou_matrix(a, b)[0, 0] == pytest.approx(1 / 7)
    assert M.iou_matrix(a, b)[0, 1] == 0.0
    # Disjoint: hull [0,0,5,2] = 10, union 5 -> GIoU = 0 - 5/10.
    assert M.giou_matrix(a, b)[0, 1] == pytest.approx(-0.5)


def test_clip_decision_takes_best_query_of_best_class_or_none_below_threshold():
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    b = np.array([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1], [0.0, 0.0, 0.1, 0.1]])
    label, score, box = M.clip_decision(p, b, 0.3)
    assert (label, score) == (0, pytest.approx(0.6))
    np.testing.assert_allclose(box, b[1])
    label, score, box = M.clip_decision(p, b, 0.7)
    assert label == 2 and box is None and score == pytest.approx(0.6)


def test_det_acc_counts_none_videos_predicted_none_as_correct():
    gt_box = [0.5, 0.5, 0.4, 0.4]
    probs = [probs_for(0, 0.9),            # fight, right box -> correct
             probs_for(0, 0.9),            # fight, box far off -> wrong
             probs_for(1, 0.2),            # no action, predicted none (0.2 < 0.3) -> correct
             probs_for(1, 0.8)]            # no action, predicted collapse -> wrong
    boxes = [boxes_for(gt_box), boxes_for([0.1, 0.1, 0.1, 0.1]), boxes_for(gt_box),
             boxes_for(gt_box)]
    gl = [np.array([0]), np.array([0]), np.zeros(0, np.int64), np.zeros(0, np.int64)]
    gb = [np.array([gt_box]), np.array([gt_box]), np.zeros((0, 4)), np.zeros((0, 4))]
    m = M.compute_metrics(probs, boxes, gl, gb, NAMES, score_threshold=0.3)
    assert m["det_acc"] == pytest.approx(2 / 4)
    assert m["video_acc"] == pytest.approx(3 / 4)   # the wrong-box fight is still right by class
    assert [v["correct"] for v in m["per_video"]] == [True, False, True, False]
    # Confusion matrix rows = true (fight, collapse, none), columns = predicted.
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 0, 0], [0, 1, 1]]
    assert m["labels"] == ["fight", "collapse", "none"]


def test_classification_report_matches_hand_computed_precision_recall_f1():
    cm = np.array([[2, 0, 0], [0, 0, 0], [0, 1, 1]])
    r = M.classification_report(cm, ["fight", "collapse", "none"])
    assert r["fight"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert r["collapse"]["precision"] == 0.0 and r["collapse"]["support"] == 0
    assert r["none"]["precision"] == 1.0 and r["none"]["recall"] == 0.5
    assert r["none"]["f1"] == pytest.approx(2 / 3)
    assert r["macro_avg"]["f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert r["weighted_avg"]["recall"] == pytest.approx((2 * 1.0 + 2 * 0.5) / 4)
    assert r["weighted_avg"]["support"] == 4


def test_confusion_matrix_counts_pairs():
    cm = M.confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_average_precision_of_a_tiny_ranked_list_uses_101_point_interpolation():
    # Ranked TP, FP, TP with 2 true boxes: recall .5 .5 1, precision 1 .5 .667;
    # envelope 1 .667 .667 -> 51 recall points at 1.0 and 50 at 2/3.
    ap = M.average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    assert ap == pytest.approx((51 * 1.0 + 50 * (2 / 3)) / 101)
    # Order comes from the scores, not from the input order.
    ap2 = M.average_precision(np.array([0.7, 0.9, 0.8]), np.array([True, True, False]), 2)
    assert ap2 == pytest.approx(ap)
    assert M.average_precision(np.array([0.5]), np.array([True]), 4) == pytest.approx(26 / 101)
    assert math.isnan(M.average_precision(np.zeros(0), np.zeros(0, bool), 0))


def test_ap_ranks_queries_over_all_videos_and_matches_each_true_box_once():
    gt = [0.5, 0.5, 0.2, 0.2]
    # Video 0: two fight queries on the same true box: the second is a duplicate (FP).
    p0 = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.0, 0.1, 0.9]])
    b0 = np.array([gt, gt, [0.1, 0.1, 0.1, 0.1]])
    # Video 1: fight query at 0.7 on its box.
    p1 = np.array([[0.7, 0.2, 0.1], [0.0, 0.1, 0.9], [0.0, 0.1, 0.9]])
    b1 = np.array([gt, gt, gt])
    gl = [np.array([0]), np.array([0])]
    gb = [np.array([gt]), np.array([gt])]
    ap = M.ap_per_threshold([p0, p1], [b0, b1], gl, gb, cls=0, iou_thresholds=[0.5])
    # Fight detections: 0.9 TP, 0.8 FP (duplicate), 0.7 TP; video 1's other queries pick collapse
    # (0.1 > 0.0), which are collapse detections, not fight ones.
    assert ap[0] == pytest.approx((51 * 1.0 + 50 * (2 / 3)) / 101)
    m = M.compute_metrics([p0, p1], [b0, b1], gl, gb, NAMES)
    assert m["ap50"]["fight"] == pytest.approx(ap[0])
    assert math.isnan(m["ap50"]["collapse"])          # no true collapse anywhere
    assert m["map50"] == pytest.approx(ap[0])           # NaN classes left out of the mean


def test_coco_ap_averages_over_iou_thresholds():
    gt = [0.5, 0.5, 0.4, 0.4]
    pred = [0.5, 0.5, 0.4, 0.32]                        # IoU = 0.8 with gt
    p = np.array([[0.9, 0.05, 0.05]])
    ap = M.ap_per_threshold([p], [np.array([pred])], [np.array([0])], [np.array([gt])], 0)
    # Perfect at thresholds 0.5 .. 0.8 (7 of them), zero above.
    assert ap.tolist() == pytest.approx([1.0] * 7 + [0.0] * 3)


def test_miou_uses_hungarian_matching_of_queries_to_true_boxes():
    gts = np.array([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]])
    # Query 0 sits exactly on gt 1, query 1 is a shifted copy of gt 0 (IoU 1/3).
    preds = np.array([[0.75, 0.75, 0.2, 0.2], [0.30, 0.25, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]])
    probs = np.array([[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    ious = M.matched_ious(probs, preds, np.array([0, 1]), gts)
    assert sorted(ious.tolist()) == pytest.approx(sorted([1.0, (0.15 * 0.2) / (0.08 - 0.15 * 0.2)]))
    assert M.matched_ious(probs, preds, np.zeros(0), np.zeros((0, 4))).size == 0


def test_scalar_metrics_and_json_output_are_flat_and_strict():
    gt = [0.5, 0.5, 0.2, 0.2]
    m = M.compute_metrics([probs_for(0, 0.9)], [boxes_for(gt)], [np.array([0])],
                          [np.array([gt])], NAMES)
    flat = M.scalar_metrics(m)
    assert flat["det_acc"] == 1.0 and flat["f1/fight"] == 1.0 and "ap50/fight" in flat
    assert all(isinstance(v, float) for v in flat.values())
    text = json.dumps(M.to_jsonable(m), allow_nan=False)
    assert '"collapse": null' in text                   # NaN AP written as null


def test_format_table_is_aligned_and_names_every_class():
    gt = [0.5, 0.5, 0.2, 0.2]
    m = M.compute_metrics([probs_for(0, 0.9), probs_for(1, 0.1)], [boxes_for(gt)] * 2,
                          [np.array([0]), np.zeros(0)], [np.array([gt]), np.zeros((0, 4))], NAMES)
    text = M.format_table(m, losses={"loss_ce": 0.5})
    for word in ("video accuracy", "det-acc@IoU>=0.5", "fight", "collapse", "none",
                 "macro_avg", "weighted_avg", "loss_ce"):
        assert word in text
    head = [ln for ln in text.splitlines()[:7] if ln.strip()]
    assert len({len(ln) for ln in head}) == 1          # the headline block is one column wide


# --------------------------------------------------------------------------- box-less videos
def _mixed_set():
    """Three videos: a boxed fight found at IoU 1, a box-less collapse predicted collapse with a
    box that would miss any real one, and a negative predicted none."""
    gt = [0.5, 0.5, 0.2, 0.2]
    probs = [probs_for(0, 0.9), probs_for(1, 0.8), probs_for(0, 0.1)]
    boxes = [boxes_for(gt), boxes_for([0.9, 0.9, 0.05, 0.05]), boxes_for(gt)]
    labels = [np.array([0]), np.array([1]), np.zeros(0, np.int64)]
    gt_boxes = [np.array([gt]), np.zeros((1, 4)), np.zeros((0, 4))]
    has_box = [np.array([True]), np.array([False]), np.zeros(0, bool)]
    return probs, boxes, labels, gt_boxes, has_box


def test_box_metrics_leave_out_positives_without_boxes_and_say_so():
    probs, boxes, labels, gt_boxes, has_box = _mixed_set()
    m = M.compute_metrics(probs, boxes, labels, gt_boxes, NAMES, gt_has_box=has_box)
    assert m["video_acc"] == 1.0                        # the class counts on every video
    assert m["box_videos"] == 2                         # the boxed fight and the negative
    assert m["det_acc"] == 1.0 and m["miou"] == pytest.approx(1.0)
    assert m["ap50"]["fight"] == pytest.approx(1.0)
    assert math.isnan(m["ap50"]["collapse"])            # its only video has no box
    assert m["box_metrics"] == "over 2 of 3 videos (1 positives without boxes left out)"
    collapse = m["per_video"][1]
    assert collapse["correct"] and not collapse["in_box_metrics"] and math.isnan(collapse["iou"])
    assert "over 2 of 3 videos" in M.format_table(m)


def test_box_metrics_are_nan_with_a_note_when_no_video_has_boxes():
    probs, boxes, labels, gt_boxes, _ = _mixed_set()
    no_boxes = [np.zeros(len(lab), bool) for lab in labels]
    m = M.compute_metrics(probs, boxes, labels, gt_boxes, NAMES, gt_has_box=no_boxes)
    assert m["video_acc"] == 1.0 and m["box_videos"] == 0
    for key in ("det_acc", "miou", "map50", "map"):
        assert math.isnan(m[key]), key
    assert m["box_metrics"] == M.NO_BOXES_NOTE
    text = M.format_table(m)
    assert "no boxes in this set" in text
    det_line = next(ln for ln in text.splitlines() if "det-acc" in ln)
    assert det_line.split()[-1] == "n/a"


def test_fully_boxed_data_gives_the_same_metrics_with_or_without_has_box():
    probs, boxes, labels, gt_boxes, _ = _mixed_set()
    gt_boxes[1] = np.array([[0.3, 0.3, 0.2, 0.2]])
    all_boxed = [np.ones(len(lab), bool) for lab in labels]
    plain = M.compute_metrics(probs, boxes, labels, gt_boxes, NAMES)
    flagged = M.compute_metrics(probs, boxes, labels, gt_boxes, NAMES, gt_has_box=all_boxed)
    assert json.dumps(M.to_jsonable(plain)) == json.dumps(M.to_jsonable(flagged))
    assert "box_metrics" not in plain and plain["box_videos"] == 3
    assert plain["det_acc"] == pytest.approx(2 / 3)     # the collapse box misses

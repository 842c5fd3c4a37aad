"""The per-source video-level report against a toy prediction set counted by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from train import report as R

NAMES = ["fight", "collapse"]
FIGHT, COLLAPSE, NONE = 0, 1, 2

# (source, true, predicted, fight score, collapse score)
TOY = [
    ("A", FIGHT, FIGHT, 0.9, 0.1),        # v1 hit
    ("A", FIGHT, NONE, 0.2, 0.1),         # v2 missed
    ("A", NONE, FIGHT, 0.6, 0.05),        # v3 false alarm
    ("A", NONE, NONE, 0.1, 0.4),          # v4
    ("B", COLLAPSE, COLLAPSE, 0.1, 0.8),  # v5 hit
    ("B", COLLAPSE, FIGHT, 0.5, 0.4),     # v6 wrong class (collapse score ties with v4's)
    ("B", NONE, NONE, 0.3, 0.1),          # v7
]


def toy_report():
    src, true, pred, f, c = zip(*TOY)
    return R.source_report(np.c_[f, c], true, pred, src, NAMES)


def test_per_source_numbers_equal_a_hand_count():
    rep = toy_report()
    assert list(rep) == ["A", "B", "overall"]
    a, b, overall = rep["A"], rep["B"], rep["overall"]

    # A: v1 and v4 right; fight predicted on v1 and v3, true on v1 and v2.
    assert (a["videos"], a["correct"], a["video_acc"]) == (4, 2, 0.5)
    assert a["per_class"]["fight"] == {"support": 2, "predicted": 2, "tp": 1,
                                       "precision": 0.5, "recall": 0.5}
    assert math.isnan(a["per_class"]["collapse"]["recall"])       # no collapse video in A
    assert math.isnan(a["per_class"]["collapse"]["precision"])    # and none predicted
    # fight AUC in A: positives 0.9, 0.2 vs negatives 0.6, 0.1 -> 3 of 4 pairs ordered.
    assert a["auc"]["fight"] == pytest.approx(3 / 4)
    assert math.isnan(a["auc"]["collapse"])
    assert (a["none_videos"], a["false_alarms"], a["false_alarm_rate"]) == (2, 1, 0.5)

    # B: v5 and v7 right; v6 (collapse) predicted fight.
    assert (b["videos"], b["correct"]) == (3, 2)
    fight, collapse = b["per_class"]["fight"], b["per_class"]["collapse"]
    assert fight["precision"] == 0.0 and math.isnan(fight["recall"])
    assert collapse["precision"] == 1.0 and collapse["recall"] == 0.5
    assert b["auc"]["collapse"] == 1.0                             # 0.8, 0.4 > 0.1
    assert (b["none_videos"], b["false_alarms"], b["false_alarm_rate"]) == (1, 0, 0.0)

    # Overall: 4 of 7 right; fight predicted on v1, v3, v6.
    assert overall["videos"] == 7 and overall["video_acc"] == pytest.approx(4 / 7)
    assert overall["per_class"]["fight"]["precision"] == pytest.approx(1 / 3)
    assert overall["per_class"]["none"] == {"support": 3, "predicted": 3, "tp": 2,
                                            "precision": pytest.approx(2 / 3),
                                            "recall": pytest.approx(2 / 3)}
    # fight: 0.9 beats all 5 negatives, 0.2 beats 0.1 (v4) and 0.1 (v5) -> 7 / 10.
    assert overall["auc"]["fight"] == pytest.approx(7 / 10)
    # collapse: 0.8 beats all 5; 0.4 beats 4 and ties v4's 0.4 (half) -> 9.5 / 10.
    assert overall["auc"]["collapse"] == pytest.approx(9.5 / 10)
    assert overall["false_alarm_rate"] == pytest.approx(1 / 3)


def test_roc_auc_is_the_share_of_ordered_positive_negative_pairs():
    assert R.roc_auc([0.1, 0.2, 0.3, 0.4], [False, False, True, True]) == 1.0
    assert R.roc_auc([0.1, 0.2, 0.3, 0.4], [True, True, False, False]) == 0.0
    assert R.roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert math.isnan(R.roc_auc([0.1, 0.9], [True, True]))


def test_video_score_of_a_class_is_its_best_query():
    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.1, 0.3]])
    assert R.video_scores(probs).tolist() == [0.6, 0.7]


def test_report_from_eval_predictions_uses_names_and_sources():
    preds = [{"probs": np.array([[0.8, 0.1, 0.1]]), "true": "fight", "pred": "fight",
              "source": "fight_surv"},
             {"probs": np.array([[0.1, 0.1, 0.8]]), "true": "none", "pred": "none"}]
    rep = R.report_from_predictions(preds, NAMES)
    assert list(rep) == ["all", "fight_surv", "overall"]
    assert rep["overall"]["video_acc"] == 1.0 and rep["overall"]["auc"]["fight"] == 1.0


def test_the_table_shows_every_source_with_counts():
    text = R.format_source_table(toy_report(), NAMES, threshold=0.3)
    assert "threshold 0.3" in text
    line_a = next(ln for ln in text.splitlines() if ln.split()[:1] == ["A"])
    assert "0.500 (2/4)" in line_a and "0.500 (1/2)" in line_a
    fight_all = next(ln for ln in text.splitlines() if ln.split()[:2] == ["overall", "fight"])
    assert "0.500 (1/2)" in fight_all and "0.333 (1/3)" in fight_all and "0.700" in fight_all
    b_fight = next(ln for ln in text.splitlines() if ln.split()[:2] == ["B", "fight"])
    assert "n/a (0/0)" in b_fight and "0.000 (0/1)" in b_fight   # no fight in B, one predicted
    assert not any(ln.split()[:2] == ["A", "collapse"] for ln in text.splitlines())  # all n/a

"""Hungarian matching: optimal, one-to-one, and the same as brute force on small cases."""
import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from detector.errors import ConfigError
from detector.matcher import HungarianMatcher

N_QUERIES, N_CLASSES = 5, 2


def random_case(seed, n_targets, batch=1):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(batch, N_QUERIES, N_CLASSES + 1, generator=g) * 2,
        "pred_boxes": torch.rand(batch, N_QUERIES, 4, generator=g) * 0.5 + 0.2,
    }
    targets = [{"labels": torch.randint(0, N_CLASSES, (n_targets,), generator=g),
                "boxes": torch.rand(n_targets, 4, generator=g) * 0.5 + 0.2}
               for _ in range(batch)]
    return outputs, targets


def cost_table(logits, boxes, target, giou_term):
    """The cost written out independently of the matcher: rows queries, columns targets."""
    prob = logits.softmax(-1)
    xyxy_p = box_convert(boxes, "cxcywh", "xyxy")
    xyxy_t = box_convert(target["boxes"], "cxcywh", "xyxy")
    giou = generalized_box_iou(xyxy_p, xyxy_t)
    table = {}
    for i in range(boxes.shape[0]):
        for j in range(target["boxes"].shape[0]):
            c = -2.0 * prob[i, target["labels"][j]]
            c = c + 5.0 * (boxes[i] - target["boxes"][j]).abs().sum()
            table[i, j] = float(c + giou_term(giou[i, j]))
    return table


def brute_force_min(table, n_queries, n_targets):
    return min(sum(table[q, j] for j, q in enumerate(perm))
               for perm in itertools.permutations(range(n_queries), n_targets))


@pytest.mark.parametrize("n_targets", [1, 2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_matching_total_cost_equals_brute_force(seed, n_targets):
    outputs, targets = random_case(seed, n_targets)
    (rows, cols), = HungarianMatcher(2, 5, 2)(outputs, targets)
    assert len(rows) == len(cols) == n_targets
    assert len(set(rows.tolist())) == n_targets, "a query was assigned twice"
    assert sorted(cols.tolist()) == list(range(n_targets)), "every target once"
    logits, boxes = outputs["pred_logits"][0], outputs["pred_boxes"][0]
    # DETR's -GIoU form and the report's 2*(1-GIoU) form must both be minimised by it.
    for giou_term in (lambda g: -2.0 * g, lambda g: 2.0 * (1.0 - g)):
        table = cost_table(logits, boxes, targets[0], giou_term)
        got = sum(table[int(q), int(t)] for q, t in zip(rows, cols))
        assert got == pytest.approx(brute_force_min(table, N_QUERIES, n_targets), abs=1e-4)


def test_no_targets_gives_empty_assignment():
    outputs, targets = random_case(0, 0, batch=2)
    for rows, cols in HungarianMatcher()(outputs, targets):
        assert rows.numel() == 0 and cols.numel() == 0
        assert rows.dtype == cols.dtype == torch.int64


def test_batch_with_mixed_target_counts_is_matched_per_clip():
    outputs, _ = random_case(3, 0, batch=3)
    targets = [random_case(10 + k, k)[1][0] for k in (2, 0, 1)]
    indices = HungarianMatcher()(outputs, targets)
    assert [len(r) for r, _ in indices] == [2, 0, 1]
    for b, (rows, cols) in enumerate(indices):
        single = {k: v[b:b + 1] for k, v in outputs.items()}
        (r1, c1), = HungarianMatcher()(single, [targets[b]])
        assert r1.tolist() == rows.tolist() and c1.tolist() == cols.tolist()


def test_query_that_predicts_the_target_exactly_is_chosen():
    outputs, targets = random_case(5, 1)
    outputs["pred_boxes"][0, 3] = targets[0]["boxes"][0]
    outputs["pred_logits"][0, 3] = -5.0
    outputs["pred_logits"][0, 3, targets[0]["labels"][0]] = 5.0
    (rows, _), = HungarianMatcher()(outputs, targets)
    assert rows.tolist() == [3]


def test_non_finite_predictions_still_give_an_assignment():
    outputs, targets = random_case(1, 2)
    outputs["pred_boxes"][0, 0] = float("nan")
    (rows, _), = HungarianMatcher()(outputs, targets)
    assert len(rows) == 2 and 0 not in rows.tolist()


def test_all_zero_costs_are_refused():
    with pytest.raises(ConfigError, match="cost_class"):
        HungarianMatcher(0, 0, 0)

"""The set loss: invariant to query order, zero exactly where it must be, weights switchable."""
import pytest
import torch
import torch.nn.functional as F

from detector.errors import ConfigError
from detector.losses import LossConfig, build_criterion
from detector.schema import apply_overrides, from_dict

K = 2  # foreground classes; logits have K+1 columns


def make_batch(seed, counts=(1, 0, 2), n_queries=6):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(len(counts), n_queries, K + 1, generator=g),
        "pred_boxes": torch.rand(len(counts), n_queries, 4, generator=g) * 0.4 + 0.3,
    }
    targets = [{"labels": torch.randint(0, K, (n,), generator=g),
                "boxes": torch.rand(n, 4, generator=g) * 0.4 + 0.3} for n in counts]
    return outputs, targets


def loss_config(*overrides):
    """A LossConfig the way the training command builds it from `--set` overrides."""
    return from_dict(LossConfig, apply_overrides({"loss": {}}, list(overrides))["loss"], "loss")


@pytest.mark.parametrize("seed", range(3))
def test_loss_is_invariant_to_query_order(seed):
    outputs, targets = make_batch(seed)
    criterion = build_criterion(LossConfig(), K)
    n_queries = outputs["pred_logits"].shape[1]
    perm = torch.randperm(n_queries, generator=torch.Generator().manual_seed(9))
    permuted = {k: v[:, perm] for k, v in outputs.items()}
    a, b = criterion(outputs, targets), criterion(permuted, targets)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    torch.testing.assert_close(criterion.total(a), criterion.total(b))


def test_perfect_prediction_has_zero_box_losses():
    outputs, targets = make_batch(1, counts=(1, 2))
    logits = torch.full_like(outputs["pred_logits"], -20.0)
    logits[..., K] = 20.0                                   # everything no_object ...
    boxes = outputs["pred_boxes"].clone()
    for b, t in enumerate(targets):                         # ... except one query per target
        for j in range(len(t["labels"])):
            logits[b, j] = -20.0
            logits[b, j, t["labels"][j]] = 20.0
            boxes[b, j] = t["boxes"][j]
    losses = build_criterion(LossConfig(), K)({"pred_logits": logits, "pred_boxes": boxes},
                                              targets)
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-5)
    assert losses["loss_ce"].item() == pytest.approx(0.0, abs=1e-6)


def test_no_targets_means_zero_box_losses_and_positive_classification_loss():
    outputs, targets = make_batch(2, counts=(0, 0))
    losses = build_criterion(LossConfig(), K)(outputs, targets)
    assert losses["loss_bbox"].item() == 0.0
    assert losses["loss_giou"].item() == 0.0
    assert losses["loss_ce"].item() > 0.0
    # still differentiable: the no_object supervision reaches the logits
    outputs["pred_logits"].requires_grad_(True)
    losses = build_criterion(LossConfig(), K)(outputs, targets)
    build_criterion(LossConfig(), K).total(losses).backward()
    assert outputs["pred_logits"].grad.abs().sum() > 0


def test_every_term_is_positive_for_an_imperfect_prediction():
    outputs, targets = make_batch(3)
    losses = build_criterion(LossConfig(), K)(outputs, targets)
    assert all(v.item() > 0 for v in losses.values()), losses


def test_terms_match_a_hand_written_computation():
    """One clip, one target: the matching is trivial to state, so the loss can be written out."""
    outputs, targets = make_batch(4, counts=(1,), n_queries=3)
    criterion = build_criterion(LossConfig(eos_coef=0.1), K)
    (rows, cols), = criterion.matcher(outputs, targets)
    q = int(rows[0])
    logits = outputs["pred_logits"][0]
    classes = torch.full((3,), K)
    classes[q] = targets[0]["labels"][0]
    weight = torch.tensor([1.0] * K + [0.1])
    per_query = F.cross_entropy(logits, classes, reduction="none")
    expected_ce = (per_query * weight[classes]).sum() / weight[classes].sum()
    expected_l1 = (outputs["pred_boxes"][0, q] - targets[0]["boxes"][0]).abs().sum()
    losses = criterion(outputs, targets)
    torch.testing.assert_close(losses["loss_ce"], expected_ce)
    torch.testing.assert_close(losses["loss_bbox"], expected_l1)


def test_box_losses_are_normalised_by_the_number_of_boxes():
    outputs, targets = make_batch(5, counts=(2, 1))
    criterion = build_criterion(LossConfig(), K)
    indices = criterion.matcher(outputs, targets)
    total_l1 = sum((outputs["pred_boxes"][b, r] - t["boxes"][c]).abs().sum()
                   for b, ((r, c), t) in enumerate(zip(indices, targets)))
    losses = criterion(outputs, targets, indices=indices)
    torch.testing.assert_close(losses["loss_bbox"], total_l1 / 3)


def test_total_uses_the_report_weights():
    outputs, targets = make_batch(6)
    criterion = build_criterion(LossConfig(), K)
    assert criterion.weight_dict == {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    losses = criterion(outputs, targets)
    expected = 2 * losses["loss_ce"] + 5 * losses["loss_bbox"] + 2 * losses["loss_giou"]
    torch.testing.assert_close(criterion.total(losses), expected)


@pytest.mark.parametrize("override,off", [("loss.giou=0", "loss_giou"),
                                          ("loss.l1=0", "loss_bbox"),
                                          ("loss.ce=0", "loss_ce")])
def test_zero_weight_from_set_removes_the_term_from_the_total(override, off):
    outputs, targets = make_batch(7)
    outputs = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
    criterion = build_criterion(loss_config(override), K)
    assert criterion.weight_dict[off] == 0
    losses = criterion(outputs, targets)
    assert losses[off].item() > 0 and not losses[off].requires_grad  # logged, not trained
    full = build_criterion(LossConfig(), K)
    expected = sum(full.weight_dict[k] * v for k, v in losses.items() if k != off)
    torch.testing.assert_close(criterion.total(losses), expected)
    # a NaN in a switched-off term cannot poison the total
    losses[off] = torch.tensor(float("nan"))
    assert torch.isfinite(criterion.total(losses))


def test_invalid_weights_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match="loss.eos_coef"):
        loss_config("loss.eos_coef=0")
    with pytest.raises(ConfigError, match="loss.l1"):
        loss_config("loss.l1=-1")
    with pytest.raises(ConfigError, match="loss"):
        loss_config("loss.ce=0", "loss.l1=0", "loss.giou=0")


# ----- class-only footage: targets without a box --------------------------------------------
def test_box_less_positive_gives_zero_box_loss_and_a_class_loss_that_trains():
    outputs, _ = make_batch(0, counts=(1,))
    outputs = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
    targets = [{"labels": torch.tensor([1]), "boxes": torch.zeros(1, 4),
                "has_box": torch.tensor([False])}]
    criterion = build_criterion(LossConfig(), K)
    terms = criterion(outputs, targets)
    assert terms["loss_bbox"].item() == 0.0 and terms["loss_giou"].item() == 0.0
    assert terms["loss_ce"].item() > 0.0
    criterion.total(terms).backward()
    assert outputs["pred_logits"].grad.abs().sum() > 0
    assert outputs["pred_boxes"].grad is None or outputs["pred_boxes"].grad.abs().sum() == 0


def test_box_less_target_is_matched_by_class_alone():
    # Query 0 sits on the (dummy) box but says "fight"; query 1 is far away but says "collapse":
    # a class-only collapse must go to query 1, however the boxes lie.
    logits = torch.tensor([[[5.0, -5.0, -5.0], [-5.0, 5.0, -5.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05]]])
    target = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]),
              "has_box": torch.tensor([False])}
    criterion = build_criterion(LossConfig(), K)
    (src, tgt), = criterion.matcher({"pred_logits": logits, "pred_boxes": boxes}, [target])
    assert src.tolist() == [1] and tgt.tolist() == [0]
    boxed = dict(target, has_box=torch.tensor([True]), labels=torch.tensor([0]))
    (src, _), = criterion.matcher({"pred_logits": logits, "pred_boxes": boxes}, [boxed])
    assert src.tolist() == [0]


def test_mixed_batch_normalises_box_terms_by_boxed_targets_only():
    outputs, targets = make_batch(3, counts=(1, 1))
    criterion = build_criterion(LossConfig(), K)
    boxed_only = criterion(outputs, [targets[0], {"labels": torch.zeros(0, dtype=torch.int64),
                                                  "boxes": torch.zeros(0, 4)}])
    mixed = criterion(outputs, [dict(targets[0], has_box=torch.tensor([True])),
                                dict(targets[1], has_box=torch.tensor([False]))])
    torch.testing.assert_close(mixed["loss_bbox"], boxed_only["loss_bbox"])
    torch.testing.assert_close(mixed["loss_giou"], boxed_only["loss_giou"])
    assert mixed["loss_ce"] != boxed_only["loss_ce"]     # the class-only target still counts

"""DETR's auxiliary decoding losses: per-layer outputs from the shared heads in training only,
and the criterion's `loss_*_{i}` terms weighted like the final layer's."""
import torch

from detector.losses import LossConfig, build_criterion
from detector.model import build_model


def tiny_config(**model):
    """small3d on 8 frames of 32x32 (4 tokens), three narrow decoder layers."""
    data = {"backbone": {"name": "small3d", "channels": [4, 8, 8, 16], "pool": None},
            "input": {"frames": 8, "size": [32, 32]}, "num_queries": 3,
            "d_model": 32, "nheads": 4, "dim_feedforward": 64, "decoder_layers": 3,
            "dropout": 0.0}
    data.update(model)
    return data


def targets():
    return [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4]])},
            {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]


def test_aux_outputs_come_from_each_intermediate_layer_through_the_shared_heads():
    torch.manual_seed(0)
    model = build_model(tiny_config(aux_loss=True)).train()
    # Frozen BatchNorm statistics: the manual replay below must see the same features.
    model.backbone.eval()
    x = torch.randn(2, 3, 8, 32, 32)
    out = model(x)
    assert len(out["aux_outputs"]) == 2
    memory = model.tokens(x)
    hs = model.queries.weight.unsqueeze(0).expand(2, -1, -1)
    for layer, aux in zip(model.decoder.layers, out["aux_outputs"]):
        hs = layer(hs, memory)
        assert aux["pred_logits"].shape == (2, 3, 3) and aux["pred_boxes"].shape == (2, 3, 4)
        torch.testing.assert_close(aux["pred_logits"], model.class_head(hs))
        torch.testing.assert_close(aux["pred_boxes"], model.bbox_head(hs))
    # The final outputs are what the plain decoder gives.
    final = model.decoder(model.queries.weight.unsqueeze(0).expand(2, -1, -1), memory)
    torch.testing.assert_close(out["pred_logits"], model.class_head(final))


def test_aux_outputs_only_in_training_mode_and_only_when_asked():
    x = torch.randn(1, 3, 8, 32, 32)
    with_aux = build_model(tiny_config(aux_loss=True))
    with torch.inference_mode():
        assert "aux_outputs" not in with_aux.eval()(x)
    assert "aux_outputs" not in build_model(tiny_config()).train()(x)


def test_criterion_adds_weighted_terms_per_aux_output():
    torch.manual_seed(1)
    model = build_model(tiny_config(aux_loss=True)).train()
    out = model(torch.randn(2, 3, 8, 32, 32))
    criterion = build_criterion(LossConfig(), 2, aux_layers=2)
    terms = criterion(out, targets())
    expected = {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou")
                for s in ("", "_0", "_1")}
    assert set(terms) == expected
    assert criterion.weight_dict["loss_bbox_1"] == LossConfig().l1
    # Each aux term equals the plain criterion on that layer's outputs alone.
    plain = build_criterion(LossConfig(), 2)
    alone = plain(out["aux_outputs"][1], targets())
    for k, v in alone.items():
        torch.testing.assert_close(terms[f"{k}_1"], v)
    final_only = plain({k: out[k] for k in ("pred_logits", "pred_boxes")}, targets())
    total = criterion.total(terms)
    assert total > plain.total(final_only)
    # Gradients reach the first decoder layer through its own auxiliary head output.
    aux_only = sum(criterion.weight_dict[k] * terms[k] for k in terms if k.endswith("_0"))
    aux_only.backward()
    assert model.decoder.layers[0].linear1.weight.grad.abs().sum() > 0

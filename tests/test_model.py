"""VideoDETR: output contract, configuration options, freezing, and post-processing of outputs."""
import pytest
import torch
from torch import nn

from detector.config import ModelConfig
from detector.errors import ConfigError
from detector.model import build_model, count_parameters
from detector.postprocess import Detection, class_scores, clip_predictions, top_per_class


def tiny_config(**model):
    """small3d on 8 frames of 32x32 (1x2x2 = 4 tokens without pooling), narrow layers."""
    data = {"backbone": {"name": "small3d", "channels": [4, 8, 8, 16], "pool": None},
            "input": {"frames": 8, "size": [32, 32]},
            "d_model": 32, "nheads": 4, "dim_feedforward": 64, "decoder_layers": 2}
    data.update(model)
    return data


def test_small3d_output_shapes_and_ranges():
    model = build_model(tiny_config()).eval()
    with torch.inference_mode():
        out = model(torch.randn(3, 3, 8, 32, 32))
    assert out["pred_logits"].shape == (3, 12, 3)
    assert out["pred_boxes"].shape == (3, 12, 4)
    assert out["pred_boxes"].min() >= 0 and out["pred_boxes"].max() <= 1
    assert model.num_tokens == 4


def test_r2plus1d_output_shapes_at_16x112x112():
    model = build_model(ModelConfig()).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 16, 112, 112))
    assert out["pred_logits"].shape == (1, 12, 3)
    assert out["pred_boxes"].shape == (1, 12, 4)
    assert model.num_tokens == 98                  # pooled to 2x7x7, as in the report


def test_class_count_and_query_count_follow_the_config():
    model = build_model(tiny_config(class_names=["a", "b", "c"], num_queries=5)).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 8, 32, 32))
    assert out["pred_logits"].shape == (1, 5, 4)


def test_architecture_options():
    model = build_model(tiny_config(box_head_layers=3, proj_norm=True, pos_table_len=50))
    assert model.decoder.norm is None              # post-norm layers only, no final norm
    assert sum(isinstance(m, nn.Linear) for m in model.bbox_head) == 3
    assert isinstance(model.bbox_head[-1], nn.Sigmoid)
    assert isinstance(model.norm, nn.LayerNorm)
    assert model.pos_embedding.num_embeddings == 50
    plain = build_model(tiny_config())
    assert sum(isinstance(m, nn.Linear) for m in plain.bbox_head) == 2
    assert isinstance(plain.norm, nn.Identity)
    assert plain.pos_embedding.num_embeddings == plain.num_tokens


def test_only_the_first_n_positional_rows_are_used():
    model = build_model(tiny_config(pos_table_len=40)).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        before = model(x)["pred_logits"]
        model.pos_embedding.weight[4:] = 100.0     # rows beyond the 4 tokens
        assert torch.equal(model(x)["pred_logits"], before)
        model.pos_embedding.weight[0] += 1.0
        assert not torch.equal(model(x)["pred_logits"], before)


def test_positional_table_shorter_than_the_tokens_is_refused():
    with pytest.raises(ConfigError, match="pos_table_len"):
        build_model(tiny_config(pos_table_len=3))
    model = build_model(tiny_config()).eval()
    with pytest.raises(ValueError, match="positional table"):
        model(torch.randn(1, 3, 8, 64, 64))        # 16 tokens, table of 4


def test_eval_is_deterministic_and_train_uses_dropout():
    model = build_model(tiny_config(token_dropout=0.5, head_dropout=0.5))
    x = torch.randn(2, 3, 8, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)["pred_boxes"], model(x)["pred_boxes"])
        model.train()
        assert not torch.equal(model(x)["pred_boxes"], model(x)["pred_boxes"])


def test_frozen_backbone_is_unchanged_by_an_optimizer_step():
    model = build_model(tiny_config(backbone={"name": "small3d", "channels": [4, 8, 8, 16],
                                              "pool": None, "freeze": "all"}))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    out = model(torch.randn(2, 3, 8, 32, 32))
    (out["pred_logits"].mean() + out["pred_boxes"].mean()).backward()
    opt.step()
    after = model.state_dict()
    for key in before:
        if key.startswith("backbone."):
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["proj.weight"], after["proj.weight"])
    assert count_parameters(model, trainable_only=True) < count_parameters(model)


def test_build_model_from_a_mapping_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="model.d_modle"):
        build_model({"d_modle": 128})


def test_wrong_input_layout_is_refused():
    model = build_model(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(torch.randn(1, 8, 3, 32, 32))


# ---- post-processing of outputs ------------------------------------------------------------

def outputs_with(probs, boxes):
    """Outputs whose softmax gives `probs` (B, N, K+1) exactly (log of probabilities)."""
    return {"pred_logits": torch.tensor(probs).log(), "pred_boxes": torch.tensor(boxes)}


BOXES = [[[0.5, 0.5, 0.2, 0.4], [0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.4, 0.2]]]


def test_clip_prediction_is_the_best_query_of_the_best_class():
    out = outputs_with([[[0.2, 0.1, 0.7], [0.1, 0.6, 0.3], [0.45, 0.05, 0.5]]], BOXES)
    (det,) = clip_predictions(out, ["fight", "collapse"], threshold=0.3)
    assert det.label == 1 and det.label_name == "collapse"
    assert det.score == pytest.approx(0.6)
    assert det.box == pytest.approx(tuple(BOXES[0][1]))


def test_clip_prediction_below_threshold_is_none():
    out = outputs_with([[[0.2, 0.1, 0.7], [0.25, 0.05, 0.7], [0.1, 0.1, 0.8]]], BOXES)
    assert clip_predictions(out, ["fight", "collapse"], threshold=0.3) == [None]
    (det,) = clip_predictions(out, ["fight", "collapse"], threshold=0.25)
    assert det.label == 0 and det.score == pytest.approx(0.25)


def test_class_scores_give_each_class_its_best_query():
    out = outputs_with([[[0.2, 0.1, 0.7], [0.1, 0.6, 0.3], [0.45, 0.05, 0.5]]], BOXES)
    scores, boxes = class_scores(out)
    torch.testing.assert_close(scores, torch.tensor([[0.45, 0.6]]))
    torch.testing.assert_close(boxes, torch.tensor([[BOXES[0][2], BOXES[0][1]]]))
    per_class = top_per_class(out, ["fight", "collapse"], k=2)[0]
    assert [(d.label, round(d.score, 3)) for d in per_class] == [
        (0, 0.45), (0, 0.2), (1, 0.6), (1, 0.1)]


def test_detection_box_conversions():
    det = Detection(0, "fight", 0.9, (0.5, 0.5, 0.2, 0.4))
    assert det.xyxy() == pytest.approx((0.4, 0.3, 0.6, 0.7))
    assert det.xyxy_px((1920, 1080)) == (768, 324, 1152, 756)
    edge = Detection(0, "fight", 0.9, (0.05, 0.95, 0.2, 0.2))
    assert edge.xyxy() == pytest.approx((0.0, 0.85, 0.15, 1.0))   # clipped to the frame


def test_attention_fast_path_in_inference_gives_the_same_outputs():
    """torch may switch attention to a fused kernel in eval + inference_mode; results must agree."""
    model = build_model(tiny_config()).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.inference_mode():
        fast = model(x)
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            slow = model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
    torch.testing.assert_close(fast["pred_logits"], slow["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast["pred_boxes"], slow["pred_boxes"], atol=1e-5, rtol=1e-5)

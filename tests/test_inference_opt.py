"""Inference rewrites (`detector/inference.py`): a folded model is the same function; the layout
and compile switches change speed, never results."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detector.backbone import build_backbone
from detector.config import BackboneConfig, InputConfig, ModelConfig
from detector.inference import (count_batchnorms, fold_bn, prepare_for_inference,
                                to_memory_format)
from detector.model import build_model


def _assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal to 1e-5 of the output's scale (float32 sums in another order: a folded conv rounds
    its products differently; 18 random BatchNorms deep, outputs reach tens)."""
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * max(1.0, scale))


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (fresh ones are the
    identity map, which any folding bug would still pass)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.2)
                m.weight.copy_(torch.randn(n, generator=gen) * 0.5 + 1)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.3)
    return model.eval()


@pytest.mark.parametrize("name", ["r2plus1d_18", "r3d_18", "mc3_18", "small3d"])
def test_folded_backbone_equals_the_original_in_eval_mode(name):
    torch.manual_seed(0)
    cfg = BackboneConfig(name=name, channels=[4, 8, 8, 16], pool=None)
    net = _randomise_bn(build_backbone(cfg))
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        want = net(x)
        folded = fold_bn(net)
        got = folded(x)
    assert count_batchnorms(net) > 0
    assert count_batchnorms(folded) == 0, "every BatchNorm of these backbones follows a conv"
    _assert_same(got, want)
    # The original is untouched (a copy was folded).
    assert count_batchnorms(net) > 0 and net(x).equal(want)


def test_folded_detector_gives_the_same_logits_and_boxes():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(name="r2plus1d_18", pool=[1, 2, 2]),
                      input=InputConfig(frames=4, size=[32, 32]), d_model=16, num_queries=4,
                      decoder_layers=1, nheads=2, dim_feedforward=32)
    model = _randomise_bn(build_model(cfg))
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        want = model(x)
        got = fold_bn(model)(x)
    for key in ("pred_logits", "pred_boxes"):
        _assert_same(got[key], want[key])


def test_a_batchnorm_that_follows_no_conv_is_left_alone():
    net = nn.Sequential(nn.Conv3d(3, 4, 1), nn.ReLU(), nn.BatchNorm3d(4))
    _randomise_bn(net)
    folded = fold_bn(net)
    assert count_batchnorms(folded) == 1
    x = torch.randn(1, 3, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x))


def test_batchnorm_without_running_stats_is_not_folded():
    net = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4, track_running_stats=False))
    assert count_batchnorms(fold_bn(net)) == 1


def test_channels_last_model_and_input_give_the_same_output():
    torch.manual_seed(0)
    net = _randomise_bn(build_backbone(BackboneConfig(name="r2plus1d_18", channels=[4, 8, 8, 16],
                                                      pool=None)))
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        want = net(x)
        fast = prepare_for_inference(net, fold=True, channels_last=True)
        xc = to_memory_format(x, True)
        assert xc.is_contiguous(memory_format=torch.channels_last_3d)
        got = fast(xc)
    _assert_same(got, want)


def test_normalised_clips_are_already_channels_last_strided():
    from detector.preprocess import normalize_clips

    x = normalize_clips(torch.zeros(2, 4, 8, 8, 3, dtype=torch.uint8), [0.5] * 3, [0.5] * 3)
    assert x.is_contiguous(memory_format=torch.channels_last_3d)
    assert to_memory_format(x, True).data_ptr() == x.data_ptr()     # no copy


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="compile mode"):
        prepare_for_inference(nn.Linear(2, 2), compile_mode="turbo")

"""Motion input: frame differences in front of the backbone, so a static scene is zero."""
from __future__ import annotations

import pytest
import torch

from detector.config import BackboneConfig, InputConfig, ModelConfig
from detector.model import build_model
from detector.motion import MotionInput


def test_static_scene_gives_zero_difference_and_motion_does_not():
    still = torch.randn(1, 3, 1, 8, 8).expand(2, 3, 5, 8, 8).contiguous()
    assert MotionInput("diff")(still).abs().max() == 0
    moving = still.clone()
    moving[:, :, 3] += 1.0
    diff = MotionInput("diff")(moving)
    assert diff.shape == moving.shape
    torch.testing.assert_close(diff[:, :, 3], torch.ones_like(diff[:, :, 3]))
    torch.testing.assert_close(diff[:, :, 4], -torch.ones_like(diff[:, :, 4]))
    # The first frame has no predecessor: it repeats the second frame's difference.
    torch.testing.assert_close(diff[:, :, 0], diff[:, :, 1])


def test_rgb_plus_diff_keeps_the_clip_and_adds_its_differences():
    x = torch.randn(2, 3, 4, 8, 8)
    out = MotionInput("rgb+diff")(x)
    assert out.shape == (2, 6, 4, 8, 8)
    torch.testing.assert_close(out[:, :3], x)
    torch.testing.assert_close(out[:, 3:], MotionInput("diff")(x))
    assert MotionInput("none")(x) is x


def test_deviation_from_the_window_mean_keeps_a_person_who_stopped_moving():
    # A "person" (one bright pixel) walks in at frame 2 and then lies still until the end.
    x = torch.zeros(1, 3, 6, 4, 4)
    x[:, :, 2:, 1, 1] = 1.0
    out = MotionInput("diff+dev")(x)
    assert out.shape == (1, 6, 6, 4, 4)
    diff, dev = out[:, :3], out[:, 3:]
    assert diff[:, :, 4:].abs().max() == 0          # holding still: no frame difference ...
    assert (dev[:, :, 4:, 1, 1] > 0).all()          # ... but it is not the window's background
    assert dev[:, :, :, 0, 0].abs().max() == 0      # the static scene is zero in both
    torch.testing.assert_close(dev.sum(dim=2), torch.zeros(1, 3, 4, 4))


def test_rgb_plus_diff_plus_dev_stacks_the_three_in_that_order():
    x = torch.randn(2, 3, 4, 8, 8)
    out = MotionInput("rgb+diff+dev")(x)
    assert out.shape == (2, 9, 4, 8, 8)
    torch.testing.assert_close(out[:, :6], MotionInput("rgb+diff")(x))
    torch.testing.assert_close(out[:, 6:], x - x.mean(dim=2, keepdim=True))


@pytest.mark.parametrize("motion", ["none", "diff", "rgb+diff", "diff+dev", "rgb+diff+dev"])
def test_small3d_model_runs_with_each_motion_mode(motion):
    cfg = ModelConfig(backbone=BackboneConfig(name="small3d", channels=[4, 8, 8, 16],
                                              pool=[1, 2, 2], motion=motion),
                      input=InputConfig(frames=4, size=[32, 32]), d_model=16, num_queries=2,
                      decoder_layers=1, nheads=2, dim_feedforward=16)
    out = build_model(cfg).eval()(torch.randn(1, 3, 4, 32, 32))
    assert out["pred_logits"].shape == (1, 2, 3)


def test_more_than_three_channels_are_refused_for_a_resnet_stem():
    with pytest.raises(ValueError, match="rgb\\+diff needs 6 input channels"):
        BackboneConfig(name="r2plus1d_18", motion="rgb+diff")
    with pytest.raises(ValueError, match="rgb\\+diff\\+dev needs 9 input channels"):
        BackboneConfig(name="r3d_18", motion="rgb+diff+dev")


def test_a_motion_model_exports_to_onnx_with_the_same_outputs(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (extra 'onnx')")
    from detector.export import OnnxModel, check_against_torch, export_onnx

    cfg = ModelConfig(backbone=BackboneConfig(name="small3d", channels=[4, 8, 8, 16],
                                              pool=[1, 2, 2], motion="rgb+diff+dev"),
                      input=InputConfig(frames=4, size=[32, 32]), d_model=16, num_queries=2,
                      decoder_layers=1, nheads=2, dim_feedforward=16)
    model = build_model(cfg).eval()
    path = export_onnx(model, cfg, tmp_path / "motion.onnx")
    diff = check_against_torch(model, OnnxModel(path), torch.randn(2, 3, 4, 32, 32))
    assert max(diff.values()) < 1e-4

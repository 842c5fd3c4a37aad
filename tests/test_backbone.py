"""Backbones: shapes, stage freezing, Kinetics weights from the torch hub cache (never fetched)."""
import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18

from detector.backbone import build_backbone, feature_shape
from detector.config import BackboneConfig
from detector.errors import CheckpointError, ConfigError

TINY = [4, 8, 8, 8]
WEIGHTS_NAME = Path(R2Plus1D_18_Weights.KINETICS400_V1.url).name


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path; offline, as the test suite always is."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # monkeypatch restores the hub module's own setting afterwards, whatever it was.
    monkeypatch.setattr(torch.hub, "_hub_dir", getattr(torch.hub, "_hub_dir", None))
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    monkeypatch.setenv("VIGIL_OFFLINE", "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_small3d_maps_16x112x112_to_2x7x7():
    net = build_backbone(BackboneConfig(name="small3d", channels=TINY, pool=None)).eval()
    with torch.inference_mode():
        out = net(torch.randn(1, 3, 16, 112, 112))
    assert out.shape == (1, TINY[-1], 2, 7, 7)
    assert net.out_channels == TINY[-1]


def test_pool_sets_the_output_grid():
    net = build_backbone(BackboneConfig(name="small3d", channels=TINY, pool=[1, 3, 2])).eval()
    with torch.inference_mode():
        assert net(torch.randn(2, 3, 8, 48, 48)).shape == (2, TINY[-1], 1, 3, 2)


@pytest.mark.parametrize("name,pool,expected", [
    ("r2plus1d_18", None, (512, 2, 14, 14)),       # the reference: 392 tokens at 224x224
    ("r2plus1d_18", [2, 7, 7], (512, 2, 7, 7)),     # the report: 98 tokens
    ("r3d_18", None, (512, 2, 14, 14)),
    ("mc3_18", None, (512, 16, 14, 14)),            # mc3 keeps time in layers 2-4
    ("small3d", None, (256, 2, 14, 14)),
])
def test_feature_shape_without_running_the_network(name, pool, expected):
    assert feature_shape(BackboneConfig(name=name, pool=pool), 16, (224, 224)) == expected


def test_resnet_body_is_stem_and_four_layers_in_order():
    net = build_backbone(BackboneConfig(name="r3d_18"))
    assert len(net.body) == 5
    assert net.body[0][0].kernel_size == (3, 7, 7)             # r3d's stem conv
    assert net.body[4][0].conv1[0].out_channels == 512         # layer4


@pytest.mark.parametrize("freeze,frozen", [("none", 0), ("stem", 1), ("layer1", 2),
                                           ("layer3", 4), ("all", 4)])
def test_freeze_sets_requires_grad_up_to_the_stage(freeze, frozen):
    net = build_backbone(BackboneConfig(name="small3d", channels=TINY, freeze=freeze))
    for i, stage in enumerate(net.body):
        for p in stage.parameters():
            assert p.requires_grad == (i >= frozen), (freeze, i)


def test_frozen_stages_do_not_change_in_a_training_step():
    net = build_backbone(BackboneConfig(name="small3d", channels=TINY, freeze="layer1",
                                        pool=[1, 1, 1]))
    net.train()
    assert not net.body[0].training and not net.body[1].training   # frozen BatchNorm: eval
    assert net.body[2].training and net.training
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.1)
    net(torch.randn(2, 3, 8, 32, 32)).square().mean().backward()
    opt.step()
    after = net.state_dict()
    for key in before:
        if key.startswith(("body.0.", "body.1.")):   # weights and BatchNorm statistics alike
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["body.2.0.weight"], after["body.2.0.weight"])
    assert not torch.equal(before["body.2.1.running_mean"], after["body.2.1.running_mean"])


def test_small3d_has_no_pretrained_weights():
    with pytest.raises(ConfigError, match="backbone.pretrained"):
        build_backbone(BackboneConfig(name="small3d", pretrained="kinetics400"))


def test_kinetics_weights_are_loaded_from_the_hub_cache(hub):
    reference = r2plus1d_18()
    with torch.no_grad():                     # make the file's weights unlike any fresh init
        for p in reference.parameters():
            p.add_(0.5)
    hub.mkdir(parents=True)
    torch.save(reference.state_dict(), hub / WEIGHTS_NAME)
    net = build_backbone(BackboneConfig(name="r2plus1d_18", pretrained="kinetics400"))
    ours = net.state_dict()
    expected = reference.state_dict()
    stages = ["stem", "layer1", "layer2", "layer3", "layer4"]
    compared = 0
    for key, value in expected.items():
        stage, rest = key.split(".", 1)
        if stage in stages:
            assert torch.equal(ours[f"body.{stages.index(stage)}.{rest}"], value), key
            compared += 1
    assert compared == len(ours)              # every backbone tensor came from the file


def test_missing_weights_offline_name_the_expected_path(hub):
    with pytest.raises(CheckpointError) as err:
        build_backbone(BackboneConfig(name="r2plus1d_18", pretrained="kinetics400"))
    message = str(err.value)
    assert str(hub / WEIGHTS_NAME) in message
    assert R2Plus1D_18_Weights.KINETICS400_V1.url in message


def test_failed_download_is_a_checkpoint_error(hub, monkeypatch):
    monkeypatch.delenv("VIGIL_OFFLINE")
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(CheckpointError, match="download failed") as err:
        build_backbone(BackboneConfig(name="r2plus1d_18", pretrained="kinetics400"))
    assert calls == [R2Plus1D_18_Weights.KINETICS400_V1.url]
    assert str(hub / WEIGHTS_NAME) in str(err.value)


def test_corrupt_weights_file_is_a_checkpoint_error(hub):
    hub.mkdir(parents=True)
    (hub / WEIGHTS_NAME).write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        build_backbone(BackboneConfig(name="r2plus1d_18", pretrained="kinetics400"))


def test_weights_of_another_model_are_a_checkpoint_error(hub):
    hub.mkdir(parents=True)
    torch.save({"fc.weight": torch.zeros(2, 2)}, hub / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="not the Kinetics-400 weights"):
        build_backbone(BackboneConfig(name="r2plus1d_18", pretrained="kinetics400"))

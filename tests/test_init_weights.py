"""train.init: a run starts from Vigil's shipped weights or any checkpoint, copying every tensor
that fits and saying which did not."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch

from detector import init_weights
from detector.checkpoint import save_checkpoint
from detector.config import BackboneConfig, InputConfig, ModelConfig
from detector.errors import CheckpointError
from detector.init_weights import find_shipped, initialise
from detector.model import build_model

TINY = ModelConfig(backbone=BackboneConfig(name="small3d", channels=[4, 8, 8, 8], pool=[1, 2, 2]),
                   input=InputConfig(frames=4, size=[32, 32]), d_model=16, num_queries=2,
                   decoder_layers=1, nheads=2, dim_feedforward=16)


def saved(tmp_path: Path, cfg: ModelConfig, name: str = "start.pt", seed: int = 1) -> tuple:
    torch.manual_seed(seed)
    model = build_model(cfg)
    return save_checkpoint(tmp_path / name, model, cfg), model


def test_scratch_changes_nothing():
    torch.manual_seed(0)
    model = build_model(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert initialise(model, TINY, "scratch") is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_a_checkpoint_path_copies_every_tensor(tmp_path):
    path, source = saved(tmp_path, TINY)
    torch.manual_seed(99)
    model = build_model(TINY)
    assert initialise(model, TINY, str(path)) == str(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]), k


def test_other_classes_keep_the_backbone_and_leave_the_class_head_fresh(tmp_path, caplog):
    path, source = saved(tmp_path, TINY)
    three = dataclasses.replace(TINY, class_names=["fight", "collapse", "vandalism"])
    torch.manual_seed(5)
    model = build_model(three)
    fresh_head = model.state_dict()["class_embed.weight"].clone() \
        if "class_embed.weight" in model.state_dict() else None
    with caplog.at_level(logging.INFO, logger="detector.init_weights"):
        initialise(model, three, str(path))
    sd = model.state_dict()
    backbone_keys = [k for k in sd if k.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(sd[k], source.state_dict()[k]) for k in backbone_keys)
    skipped = [k for k in sd if sd[k].shape != source.state_dict()[k].shape]
    assert skipped, "the class head has another shape"
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "kept fresh" in message and skipped[0] in message
    if fresh_head is not None:
        assert torch.equal(sd["class_embed.weight"], fresh_head)


def test_a_checkpoint_that_fits_nothing_is_refused(tmp_path):
    other = dataclasses.replace(TINY, backbone=dataclasses.replace(TINY.backbone,
                                                                   channels=[3, 5, 7, 9]),
                                d_model=8, dim_feedforward=8, num_queries=5)
    path, _ = saved(tmp_path, other)
    model = build_model(TINY)
    with pytest.raises(CheckpointError, match="almost no tensor of it fits"):
        initialise(model, TINY, str(path))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        initialise(model, TINY, str(tmp_path / "missing.pt"))


def test_vigil_finds_the_shipped_weights_of_the_same_architecture(tmp_path, monkeypatch):
    monkeypatch.setattr(init_weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="no shipped weights fit"):
        find_shipped(TINY)
    path, _ = saved(tmp_path, TINY, "tiny-real.pt")
    bigger = dataclasses.replace(TINY, d_model=32, dim_feedforward=32)
    saved(tmp_path, bigger, "bigger.pt")
    # Class names, pretrained flags, freezing and dropout do not change the tensors.
    same_arch = dataclasses.replace(TINY, dropout=0.3)
    assert find_shipped(same_arch) == path
    model = build_model(same_arch)
    assert initialise(model, same_arch, "vigil") == str(path)


def test_shipped_weights_are_also_chosen_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(init_weights, "WEIGHTS_DIR", tmp_path)
    first, _ = saved(tmp_path, TINY, "tiny-a.pt")
    second, _ = saved(tmp_path, TINY, "tiny-b.pt")
    model = build_model(TINY)
    assert initialise(model, TINY, "tiny-a") == str(first)
    assert initialise(model, TINY, "tiny-b") == str(second)
    with pytest.raises(CheckpointError):
        initialise(model, TINY, "tiny-c")          # neither shipped nor a file

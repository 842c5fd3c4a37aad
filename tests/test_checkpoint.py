"""Checkpoint files: round trip, atomic writes, and refusal of anything but plain data."""
import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from detector import build_model, load_checkpoint, save_checkpoint
from detector.checkpoint import FORMAT
from detector.errors import CheckpointError

TINY = {"backbone": {"name": "small3d", "channels": [4, 8, 8, 16], "pool": [1, 2, 2]},
        "input": {"frames": 8, "size": [32, 32]}, "class_names": ["fight", "collapse"],
        "d_model": 32, "nheads": 4, "dim_feedforward": 64, "decoder_layers": 2}


class RunsCode:
    """Unpickling this calls os.mkdir(marker): the side effect a malicious checkpoint would have."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.backbone.body[0][1].running_mean.add_(0.3)   # buffers travel too
    return model.eval()


def test_round_trip_gives_identical_outputs(trained, tmp_path):
    path = save_checkpoint(tmp_path / "run" / "best.pt", trained, trained.cfg, epoch=7,
                           metrics={"det_acc": 0.83}, data_root=Path("/data/x"),
                           best=np.float64(0.5))
    model, cfg, meta = load_checkpoint(path)
    assert cfg == trained.cfg
    assert not model.training
    assert meta["format"] == FORMAT and meta["epoch"] == 7
    assert meta["metrics"] == {"det_acc": 0.83}
    assert meta["data_root"] == "/data/x" and meta["best"] == 0.5
    assert meta["class_names"] == ["fight", "collapse"]
    assert meta["input"]["size"] == [32, 32]
    assert meta["num_parameters"] == sum(p.numel() for p in trained.parameters())
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.inference_mode():
        a, b = trained(x), model(x)
    assert torch.equal(a["pred_logits"], b["pred_logits"])
    assert torch.equal(a["pred_boxes"], b["pred_boxes"])


def test_file_loads_with_weights_only_and_no_temporary_is_left(trained, tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", trained, trained.cfg)
    save_checkpoint(path, trained, trained.cfg, epoch=2)          # overwrite in place
    data = torch.load(path, weights_only=True)
    assert data["format"] == FORMAT and data["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_meta_that_cannot_be_stored_as_plain_data_is_refused(trained, tmp_path):
    with pytest.raises(TypeError, match="opt"):
        save_checkpoint(tmp_path / "a.pt", trained, trained.cfg, opt=object())
    with pytest.raises(TypeError, match="state_dict"):
        save_checkpoint(tmp_path / "a.pt", trained, trained.cfg, state_dict={})
    assert not (tmp_path / "a.pt").exists()


def test_pretrained_flag_in_a_checkpoint_needs_no_weights_file(tmp_path, monkeypatch):
    """The checkpoint holds every weight: loading must not look for Kinetics files."""
    monkeypatch.setenv("VIGIL_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    data = {**TINY, "backbone": {"name": "mc3_18", "pool": [1, 1, 1]}}
    model = build_model(data)
    cfg = dataclasses.replace(model.cfg, backbone=dataclasses.replace(
        model.cfg.backbone, pretrained="kinetics400"))
    path = save_checkpoint(tmp_path / "mc3.pt", model, cfg)
    _, loaded_cfg, _ = load_checkpoint(path)
    assert loaded_cfg.backbone.pretrained == "kinetics400"


@pytest.mark.parametrize("wrap", ["raw pickle", "inside torch.save"])
def test_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, wrap):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "state_dict": {"x": RunsCode(marker)}}
    if wrap == "raw pickle":
        path.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    else:
        torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert not marker.exists(), "unpickling ran code"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_unknown_format_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "something/9", "weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"other\.pt.*unknown checkpoint format"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)


def test_state_dict_that_does_not_fit_the_config_names_the_key(trained, tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", trained, trained.cfg)
    data = torch.load(path, weights_only=True)
    data["state_dict"]["proj.weight"] = torch.zeros(3, 3, 1, 1, 1)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"a\.pt.*'proj\.weight'"):
        load_checkpoint(path)
    del data["state_dict"]["proj.weight"]
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"a\.pt.*lacks key 'proj\.weight'"):
        load_checkpoint(path)
    data = torch.load(save_checkpoint(path, trained, trained.cfg), weights_only=True)
    data["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="'extra.weight'"):
        load_checkpoint(path)


def test_invalid_model_config_in_a_checkpoint_is_named(trained, tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", trained, trained.cfg)
    data = torch.load(path, weights_only=True)
    data["model_config"]["d_model"] = "wide"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"a\.pt.*model_config\.d_model"):
        load_checkpoint(path)

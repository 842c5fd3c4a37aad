"""Training configs: the YAML recipes, `--set` overrides and their errors."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from detector.errors import ConfigError
from train.config import TrainConfig, default_cache_dir, load_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


def test_seed_yaml_is_the_reports_recipe():
    cfg = load_train_config(CONFIGS / "seed.yaml")
    m = cfg.model
    assert (m.backbone.name, m.input.frames, m.input.size, m.backbone.pool) == \
        ("r2plus1d_18", 16, [224, 224], [2, 7, 7])
    assert (m.d_model, m.num_queries, m.decoder_layers, m.nheads, m.dim_feedforward) == \
        (256, 12, 4, 8, 2048)
    assert (cfg.optim.lr, cfg.optim.lr_min, cfg.optim.epochs, cfg.optim.grad_clip) == \
        (5e-5, 1e-6, 50, 0.5)
    assert cfg.optim.betas == [0.9, 0.999] and cfg.optim.weight_decay == 1e-4
    assert cfg.data.batch_size == 4 and not cfg.augment.enabled
    assert (cfg.loss.ce, cfg.loss.l1, cfg.loss.giou, cfg.loss.eos_coef) == (2, 5, 2, 0.1)
    # The YAML restates the code's defaults, except that it asks for the Kinetics weights.
    assert cfg.model.backbone.pretrained == "kinetics400"
    assert load_train_config(None, ["model.backbone.pretrained=kinetics400"]) == cfg


def test_reference_yaml_matches_the_reference_architecture():
    from detector.reference import reference_model_config

    cfg = load_train_config(CONFIGS / "reference.yaml")
    want = reference_model_config()
    # Only the pretrained switch differs: training from data starts from Kinetics weights.
    assert cfg.model.backbone.pretrained == "kinetics400"
    cfg.model.backbone.pretrained = None
    assert cfg.model == want


def test_cpu_small_yaml_loads_with_augmentation_on():
    cfg = load_train_config(CONFIGS / "cpu-small.yaml")
    assert cfg.model.backbone.name == "small3d"
    assert cfg.augment.enabled


def test_set_giou_zero_gives_a_zero_weight_that_drops_the_term():
    from detector.losses import build_criterion

    cfg = load_train_config(CONFIGS / "seed.yaml", ["loss.giou=0"])
    assert cfg.loss.giou == 0
    crit = build_criterion(cfg.loss, 2)
    assert crit.weight_dict["loss_giou"] == 0
    terms = {"loss_ce": torch.tensor(1.0), "loss_bbox": torch.tensor(1.0),
             "loss_giou": torch.tensor(float("nan"))}
    assert float(crit.total(terms)) == pytest.approx(2.0 + 5.0)


def test_set_parses_values_as_yaml():
    cfg = load_train_config(None, ["optim.lr=3e-4", "data.cache=false",
                                   "model.backbone.pool=null", "augment.enabled=true"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data.cache is False and cfg.data.resolved_cache_dir() is None
    assert cfg.model.backbone.pool is None and cfg.augment.enabled is True


def test_unknown_override_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"loss\.gioux: unknown key"):
        load_train_config(CONFIGS / "seed.yaml", ["loss.gioux=0"])
    with pytest.raises(ConfigError, match=r"seed\.yaml: optim\.lr: expected float"):
        load_train_config(CONFIGS / "seed.yaml", ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_train_config(None, ["optim.lr"])


def test_invalid_values_are_refused():
    with pytest.raises(ConfigError, match="optim"):
        load_train_config(None, ["optim.lr_min=1.0"])
    with pytest.raises(ConfigError, match="train.amp"):
        load_train_config(None, ["train.amp=maybe"])


def test_cache_dir_defaults_under_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "vigil" / "clips"
    assert TrainConfig().data.resolved_cache_dir() == tmp_path / "vigil" / "clips"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "vigil" / "clips"


def test_cli_epochs_and_device_shortcuts_become_overrides():
    from train.cli import _load_config

    args = argparse.Namespace(config=CONFIGS / "cpu-small.yaml", overrides=["optim.lr=2e-4"],
                              epochs=3, device="cpu")
    cfg = _load_config(args)
    assert (cfg.optim.epochs, cfg.train.device, cfg.optim.lr) == (3, "cpu", 2e-4)


def test_a_key_given_twice_in_a_train_config_is_refused_with_its_line(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  num_queries: 12\noptim:\n  lr: 0.001\nmodel:\n  num_queries: 6\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert str(info.value).startswith(str(path))
    assert "duplicate key 'model' (first given at line 1)" in str(info.value)

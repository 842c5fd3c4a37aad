"""Vigil's shipped real-footage weights: they load, they tell real fights, falls and ordinary
scenes apart on clips they were not trained on, and fine-tuning starts from them by default
(from the default ensemble's member of the fine-tuning recipe's architecture)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector.checkpoint import is_ensemble, load_checkpoint
from detector.init_weights import DEFAULT_MODEL, WEIGHTS_DIR, default_weights, find_shipped
from detector.preprocess import normalize_clips
from train.config import load_train_config
from train.dataset import ClipDataset, scan_dataset_lenient
from train.metrics import clip_decision, true_class
from train.mil import choose_bag_windows
from train.splits import split_records

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real"
SHIPPED = default_weights()
EVERY = sorted(WEIGHTS_DIR.glob("*.pt"))


def trained_on_real(path: Path) -> bool:
    """Whether the weights have seen real footage (their meta says what they trained on)."""
    return "shared/real" in load_checkpoint(path)[2]["trained_on"]


REAL_TRAINED = [p for p in EVERY if trained_on_real(p)]
SYNTH_ONLY = [p for p in EVERY if not trained_on_real(p)]


def clips_right(model, cfg, ds: ClipDataset) -> int:
    """How many of `ds`'s clips the model calls right by the report's clip decision (threshold
    0.3; none below it)."""
    right = 0
    with torch.inference_mode():
        for i in range(len(ds)):
            clip, target = ds[i]
            out = model(normalize_clips(clip[None], cfg.input.mean, cfg.input.std))
            probs = out["pred_logits"].softmax(-1)[0].numpy()
            label, _, _ = clip_decision(probs, out["pred_boxes"][0].numpy(), 0.3)
            right += int(label == true_class(target["labels"].numpy(), len(cfg.class_names)))
    return right


def test_the_default_model_is_the_newest_real_footage_model():
    assert SHIPPED == WEIGHTS_DIR / f"{DEFAULT_MODEL}.pt" and SHIPPED in EVERY
    assert SHIPPED.stem == "real-cpu-v4"
    model, _, meta = load_checkpoint(SHIPPED)
    # The mean of a 3D CNN and a per-frame ImageNet network (docs/models/real-cpu-v4.md), whose
    # alert boxes come from the 3D CNN (its box head learned boxes on synthetic scenes).
    assert is_ensemble(model) and model.box_from == 0
    assert meta["architecture"] == "mean of small3d 64x64 + mobilenet_v2 112x112"


@pytest.mark.parametrize("path", EVERY, ids=lambda p: p.stem)
def test_the_shipped_weights_load_with_their_card_and_clip_length(path):
    model, cfg, meta = load_checkpoint(path)
    assert path.stat().st_size < 20 * 2**20
    members = model.member_cfgs if is_ensemble(model) else [cfg]
    for member in members:
        assert member.backbone.name in ("small3d", "mobilenet_v2")
        assert member.backbone.motion in ("rgb+diff", "rgb+diff+dev")
    assert cfg.input.clip_seconds == 2.0 and list(cfg.class_names) == ["fight", "collapse"]
    assert (ROOT / meta["model_card"]).is_file()
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, cfg.input.frames, *cfg.input.size))
    queries = 2 if is_ensemble(model) else cfg.num_queries     # an ensemble: one per class
    assert out["pred_logits"].shape == (1, queries, 3)


@pytest.mark.parametrize("path", REAL_TRAINED, ids=lambda p: p.stem)
def test_on_real_clips_it_never_trained_on_it_is_right_well_above_chance(path):
    """The clips the shipped run held out (its grouped 10% validation split of ../shared/real,
    seed 0): 23 videos of three classes, so guessing gets about a third right."""
    if not (REAL / "labels.csv").is_file():
        pytest.skip(f"{REAL} is absent: no real clips to check the shipped weights on")
    model, cfg, meta = load_checkpoint(path)
    data = meta["train_config"]["data"]
    records, _ = scan_dataset_lenient(REAL, class_names=cfg.class_names)
    heldout = split_records(records, REAL, "val", data["val_fraction"], data["split_seed"])
    assert 15 <= len(heldout) <= 40
    # Sampled as the run's own evaluation samples them (`vigil eval` reads the same keys).
    ds = ClipDataset(heldout, cfg.input, window_s=data["window_seconds"], train=False)
    choose_bag_windows(model, ds, torch.device("cpu"))   # a long clip: its best window
    right = clips_right(model, cfg, ds)
    accuracy = right / len(ds)
    assert accuracy >= 0.7, f"{right}/{len(ds)} right on held-out real clips"


@pytest.mark.parametrize("path", SYNTH_ONLY, ids=lambda p: p.stem)
def test_the_synthetic_pretrained_weights_tell_synthetic_scenes_apart(path, tmp_path):
    """Weights pretrained on `vigil synth` alone, on scenes of a seed they never saw: 12 videos
    of three classes, so guessing gets about a third right."""
    from train.synth_dataset import write_dataset

    model, cfg, _ = load_checkpoint(path)
    write_dataset(tmp_path, 12, seed=99, width=128, height=96, fps=25, frames=48, vary=False)
    records, _ = scan_dataset_lenient(tmp_path, class_names=cfg.class_names)
    ds = ClipDataset(records, cfg.input, train=False)
    right = clips_right(model, cfg, ds)
    assert right >= 9, f"{right}/{len(ds)} right on unseen synthetic scenes"


def test_fine_tuning_recipe_starts_from_the_shipped_weights_by_default(tmp_path):
    cfg = load_train_config(ROOT / "configs" / "train" / "finetune-cpu.yaml")
    assert cfg.train.init == "vigil"
    assert find_shipped(cfg.model) == SHIPPED
    from train.synth_dataset import write_dataset
    from train.trainer import fit

    data = tmp_path / "mine"
    write_dataset(data, 6, seed=3, width=64, height=48, fps=10, frames=16, vary=False)
    cfg = load_train_config(ROOT / "configs" / "train" / "finetune-cpu.yaml", epochs=1,
                            overrides=["data.cache=false", "train.device=cpu"])
    fit(cfg, data, tmp_path / "run", progress=False)
    _, _, meta = load_checkpoint(tmp_path / "run" / "last.pt")
    assert meta["init_from"] == str(SHIPPED)
    # ... and the real-footage recipe starts from Vigil's synthetic-only pretrained weights.
    real = load_train_config(ROOT / "configs" / "train" / "real-cpu.yaml")
    assert real.train.init == "synth-cpu-v2" and (WEIGHTS_DIR / "synth-cpu-v2.pt").is_file()
    assert not trained_on_real(WEIGHTS_DIR / "synth-cpu-v2.pt")

"""Shared training fixtures.

`trained_checkpoint` (session scope) writes a synthetic dataset with `train.synth.write_dataset`
and trains the `configs/train/cpu-small.yaml` recipe on it once per test session; the learning
test checks what it learned and the daemon's integration tests serve it. Register with
`pytest_plugins = ["tests._training"]` in conftest.py, or import the fixture in a test module.

`tiny_config` is a model small enough that a training epoch on a dozen 32x32 clips takes a
fraction of a second, for tests of the machinery rather than of learning.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CPU_SMALL = REPO / "configs" / "train" / "cpu-small.yaml"

# The learning run: synthetic videos small enough to write and decode fast (the model sees
# 112x112 either way), a held-out set from another seed that training never sees.
LEARN_TRAIN_VIDEOS = int(os.environ.get("VIGIL_TEST_TRAIN_VIDEOS", "300"))
LEARN_HELDOUT_VIDEOS = 60
LEARN_SYNTH = dict(width=160, height=120, fps=25, frames=48)


@dataclass(frozen=True)
class TrainedRun:
    """What `trained_checkpoint` made.

    Attributes:
        checkpoint: the run's `best.pt`.
        data_dir: the training dataset (its val split was used for model selection).
        heldout_dir: a dataset of other videos (another synth seed), never trained on.
        run_dir: the run folder (`last.pt`, `metrics.jsonl`, `config.yaml`).
        result: what `train.trainer.fit` returned.
        seconds: wall time of data generation plus training.
    """
    checkpoint: Path
    data_dir: Path
    heldout_dir: Path
    run_dir: Path
    result: dict[str, Any]
    seconds: float


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """Train cpu-small on synthetic data once per session (a few minutes on 2 CPU cores)."""
    from train.config import load_train_config
    from train.synth import write_dataset
    from train.trainer import fit

    root = tmp_path_factory.mktemp("learning")
    start = time.monotonic()
    write_dataset(root / "data", LEARN_TRAIN_VIDEOS, seed=11, **LEARN_SYNTH)
    write_dataset(root / "heldout", LEARN_HELDOUT_VIDEOS, seed=12, **LEARN_SYNTH)
    cfg = load_train_config(CPU_SMALL, [f"data.cache_dir={root / 'cache'}", "train.device=cpu"])
    result = fit(cfg, root / "data", root / "run", progress=False)
    return TrainedRun(checkpoint=root / "run" / "best.pt", data_dir=root / "data",
                      heldout_dir=root / "heldout", run_dir=root / "run", result=result,
                      seconds=time.monotonic() - start)


def tiny_config(cache_dir: Path | None = None, epochs: int = 2, **extra: Any):
    """A `TrainConfig` with a model of a few thousand parameters on 8x32x32 clips."""
    from train.config import load_train_config

    overrides = [
        "model.backbone.name=small3d", "model.backbone.channels=[4,8,8,8]",
        "model.backbone.pool=[1,2,2]", "model.backbone.pretrained=null",
        "model.input.frames=8", "model.input.size=[32,32]",
        "model.d_model=16", "model.nheads=2", "model.dim_feedforward=32",
        "model.decoder_layers=1", "model.num_queries=3", "model.dropout=0.1",
        "optim.lr=1e-3", "optim.lr_min=1e-5", f"optim.epochs={epochs}",
        "data.batch_size=4", "data.num_workers=0", "train.device=cpu",
        "augment.enabled=true", "augment.hflip=0.5", "augment.color_jitter=0.1",
    ]
    overrides.append(f"data.cache_dir={cache_dir}" if cache_dir else "data.cache=false")
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_train_config(None, overrides)


def tiny_dataset(path: Path, videos: int = 12, seed: int = 0) -> Path:
    """A dozen small synthetic videos (64x48, 16 frames)."""
    from train.synth import write_dataset

    write_dataset(path, videos, seed=seed, width=64, height=48, fps=10, frames=16, vary=False)
    return path

"""Shared training fixtures.

`trained_checkpoint` (session scope) trains the quick-start recipe of `train/quickstart.py` (the
`configs/train/cpu-small.yaml` recipe on synthetic videos, the model `vigil demo` serves) once per
test session; the learning test checks what it learned on held-out videos, and the daemon's
integration tests and the demo test serve it. Register with
`pytest_plugins = ["tests._training"]` in conftest.py, or import the fixture in a test module.

`tiny_config` is a model small enough that a training epoch on a dozen 32x32 clips takes a
fraction of a second, for tests of the machinery rather than of learning.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

@dataclass(frozen=True)
class TrainedRun:
    """What `trained_checkpoint` made.

    Attributes:
        checkpoint: the run's `best.pt`.
        data_dir: the training dataset (its val split was used for model selection).
        heldout_dir: a dataset of other videos (another synth seed), never trained on.
        run_dir: the run folder (`last.pt`, `metrics.jsonl`).
        result: what `train.trainer.fit` returned.
        seconds: wall time of data generation plus training.
        cache_dir: give this to `vigil demo --cache-dir` and it serves this very model.
    """
    checkpoint: Path
    data_dir: Path
    heldout_dir: Path
    run_dir: Path
    result: dict[str, Any]
    seconds: float
    cache_dir: Path


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """Train the quick-start recipe (`train/quickstart.py`: cpu-small on synthetic videos) once
    per session: about 4 minutes on 2 CPU cores. `VIGIL_TEST_TRAIN_VIDEOS` overrides the number
    of training videos (fewer is faster but will not reach the learning test's bar)."""
    import dataclasses

    from train.quickstart import RECIPE, train_quick_model

    recipe = RECIPE
    if "VIGIL_TEST_TRAIN_VIDEOS" in os.environ:
        recipe = dataclasses.replace(RECIPE, train_videos=int(os.environ["VIGIL_TEST_TRAIN_VIDEOS"]))
    cache_dir = tmp_path_factory.mktemp("vigil-cache")
    # The folder name `vigil demo --cache-dir` looks for, so the demo test reuses this run.
    root = cache_dir / f"quickstart-{recipe.fingerprint()}"
    run = train_quick_model(root, recipe, heldout=True, progress=False, reuse=False)
    assert run.heldout_dir is not None and run.result is not None
    return TrainedRun(checkpoint=run.checkpoint, data_dir=run.data_dir,
                      heldout_dir=run.heldout_dir, run_dir=run.run_dir, result=run.result,
                      seconds=run.seconds, cache_dir=cache_dir)


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
    from train.synth_dataset import write_dataset

    write_dataset(path, videos, seed=seed, width=64, height=48, fps=10, frames=16, vary=False)
    return path

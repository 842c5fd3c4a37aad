"""The quick-start model: the `cpu-small` recipe trained on synthetic videos, once.

`vigil demo` and the test suite's `trained_checkpoint` fixture both need a detector that really
learned the synthetic scenes, and neither can download one. This module is the single recipe
they share (data size, synthetic scene parameters, seeds, config), so the model the tests check
is the model the demo serves.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .recipes import CPU_RECIPE, recipe_path

log = logging.getLogger(__name__)

CPU_SMALL = recipe_path(CPU_RECIPE)


@dataclass(frozen=True)
class QuickRecipe:
    """What to generate and how to train. Changing any field retrains the demo's cached model.

    Attributes:
        train_videos: synthetic videos generated for training (80/20 train/val split).
        heldout_videos: videos of another seed, never trained on, for the learning check.
        synth: `train.synth_dataset.write_dataset` keyword arguments (scene size, fps, length).
        train_seed, heldout_seed: synthetic data seeds.
        overrides: `--set` style overrides applied on top of `cpu-small.yaml`.
    """
    # Many unique videos rather than many epochs: with 240 training videos cpu-small overfits
    # (held-out det-acc ~0.55), with 800 it just reaches 0.8; 1500 (1275 after the 15% val
    # split) reached 0.883. Small frames write and decode fast (~30 ms a video at 128x96); the
    # model sees 64x64 either way.
    train_videos: int = 1500
    heldout_videos: int = 60
    synth: dict[str, Any] = field(default_factory=lambda: dict(width=128, height=96, fps=25,
                                                               frames=48))
    train_seed: int = 11
    heldout_seed: int = 12
    overrides: tuple[str, ...] = ("train.device=cpu",)

    def fingerprint(self, config: Path = CPU_SMALL) -> str:
        """Hash of the recipe and the config's values (not its comments): the cache key of the
        trained model."""
        from detector.schema import load_yaml

        payload = json.dumps({"recipe": self.__dict__, "config": load_yaml(config)},
                             sort_keys=True, default=list)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


RECIPE = QuickRecipe()


@dataclass(frozen=True)
class QuickRun:
    """A trained quick-start model.

    Attributes:
        checkpoint: the run's best checkpoint.
        data_dir: the training dataset; heldout_dir: videos never trained on (None if skipped).
        run_dir: the run folder (`last.pt`, `metrics.jsonl`).
        result: what `train.trainer.fit` returned (None when reused from the cache).
        seconds: wall time spent generating and training (0 when reused).
    """
    checkpoint: Path
    data_dir: Path
    heldout_dir: Optional[Path]
    run_dir: Path
    result: Optional[dict[str, Any]]
    seconds: float


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/vigil` (or `~/.cache/vigil`)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vigil"


def train_quick_model(root: Path, recipe: QuickRecipe = RECIPE, heldout: bool = True,
                      progress: bool = True, reuse: bool = True) -> QuickRun:
    """Generate the synthetic data and train `cpu-small` on it, or reuse a finished run.

    Args:
        root: folder for this recipe's data, clip cache and run (created).
        recipe: what to generate and train.
        heldout: also write the held-out set.
        progress: progress bars for generation and training.
        reuse: return the finished run in `root` if its `best.pt` exists.
    Returns:
        The run.
    """
    from train.config import load_train_config
    from train.synth_dataset import write_dataset
    from train.trainer import fit

    root = Path(root)
    data, held, run = root / "data", root / "heldout", root / "run"
    done = run / "best.pt"
    if reuse and done.exists() and (run / "DONE").exists():
        log.info("reusing the trained quick-start model %s", done)
        return QuickRun(done, data, held if heldout else None, run, None, 0.0)
    start = time.monotonic()
    for folder, videos, seed in ((data, recipe.train_videos, recipe.train_seed),
                                 (held, recipe.heldout_videos, recipe.heldout_seed)):
        if folder is held and not heldout:
            continue
        if not (folder / "DONE").exists():
            shutil.rmtree(folder, ignore_errors=True)
            write_dataset(folder, videos, seed=seed, progress=progress, **recipe.synth)
            (folder / "DONE").write_text("")
    cfg = load_train_config(CPU_SMALL, [*recipe.overrides, f"data.cache_dir={root / 'cache'}"])
    result = fit(cfg, data, run, progress=progress)
    (run / "DONE").write_text("")
    return QuickRun(done, data, held if heldout else None, run, result,
                    time.monotonic() - start)


def cached_quick_model(cache_dir: Optional[Path] = None, progress: bool = True) -> QuickRun:
    """The quick-start model under the user's cache directory, trained on first use."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = RECIPE.fingerprint()
    return train_quick_model(cache_dir / f"quickstart-{key}", heldout=False, progress=progress)

"""`vigil bench train`: timed training epochs of a recipe on synthetic data.

What runs is `vigil train` itself (`train.trainer.fit`: the recipe's data loaders, model, AdamW,
schedule, autocast and, for fp16 on CUDA, the GradScaler; validation and checkpoints after each
epoch) on a synthetic dataset written by `train.synth_dataset.write_dataset`, with the backbone's
pretrained weights off (no download; the speed does not depend on the weights). Each epoch's row
gives the training pass (steps, seconds, seconds per step, clips per second), the rest of the
epoch (validation pass and checkpoint writing) and the whole epoch; the first epoch also fills
the clip cache, so an epoch after it shows the steady state. Peak device memory is read from
`torch.cuda.max_memory_allocated` on CUDA.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from detector.runtime import resolve_device
from detector.timing import ratio

from .kit import BenchReport, Section, bench_env

log = logging.getLogger(__name__)


@dataclass
class TrainBenchOptions:
    """What `vigil bench train` measures.

    Args:
        device: "auto", "cpu", "cuda", "cuda:N".
        quick: 12 videos, one epoch.
        config: training YAML (None: the report's recipe, `configs/train/seed.yaml`'s values).
        overrides: `--set KEY=VALUE` overrides applied after it.
        videos: synthetic videos to write (default 64; --quick 12).
        epochs: epochs to time (default 2: one filling the clip cache, one steady; --quick 1).
        width, height, frames: geometry of the synthetic videos.
        workdir: where data and run go (default: a temporary folder, removed).
    """
    device: str = "auto"
    quick: bool = False
    config: Optional[str] = None
    overrides: Sequence[str] = field(default_factory=list)
    videos: Optional[int] = None
    epochs: Optional[int] = None
    width: int = 160
    height: int = 120
    frames: int = 48
    workdir: Optional[str] = None
    command: Optional[str] = None


def run_train_bench(opts: TrainBenchOptions) -> BenchReport:
    """Write the data, train, and tabulate each epoch; see the module docstring."""
    from train.config import load_train_config
    from train.dataset import scan_dataset, split_records
    from train.synth_dataset import write_dataset
    from train.trainer import fit

    device = resolve_device(opts.device)
    env = bench_env(device, opts.command)
    videos = opts.videos or (12 if opts.quick else 64)
    epochs = opts.epochs or (1 if opts.quick else 2)
    own_dir = opts.workdir is None
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="vigil-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        overrides = [*opts.overrides, "model.backbone.pretrained=null", f"train.device={device}",
                     f"data.cache_dir={work / 'cache'}"]
        # Fewer epochs than the recipe's warm-up would be refused: the warm-up is cut to fit.
        warmup = load_train_config(opts.config, overrides).optim.warmup_epochs
        if warmup >= epochs:
            overrides.append(f"optim.warmup_epochs={epochs - 1}")
        cfg = load_train_config(opts.config, [*overrides, f"optim.epochs={epochs}"])
        t0 = time.perf_counter()
        data = work / "data"
        write_dataset(data, videos, seed=0, width=opts.width, height=opts.height,
                      frames=opts.frames)
        synth_s = time.perf_counter() - t0
        records = scan_dataset(data, num_classes=len(cfg.model.class_names))
        n_train = len(split_records(records, data, "train", cfg.data.val_fraction,
                                    cfg.data.split_seed))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        result = fit(cfg, data, work / "run", resume=False, progress=False)
        fit_s = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated(device) / 2**30
                if device.type == "cuda" else None)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)

    m = cfg.model
    shape = f"{m.input.frames}x{m.input.size[0]}x{m.input.size[1]}"
    amp = {"auto": "fp16 + GradScaler" if device.type == "cuda" else "off",
           "on": "fp16 + GradScaler" if device.type == "cuda" else "bf16",
           "off": "off"}.get(cfg.train.amp, cfg.train.amp)
    rows: list[dict[str, Any]] = []
    for rec in result["history"]:
        tr = rec["train"]
        steps, train_s = int(tr["steps"]), float(tr["seconds"])
        rows.append({
            "epoch": rec["epoch"], "model": m.backbone.name, "input": shape,
            "parameters": result["parameters"], "device": str(device), "amp": amp,
            "batch": cfg.data.batch_size, "train videos": n_train, "steps": steps,
            "train s": train_s, "s/step": ratio(train_s, steps),
            "clips/s": ratio(n_train, train_s), "val + checkpoint s": rec["seconds"] - train_s,
            "epoch s": rec["seconds"], "loss": tr.get("loss"),
            "peak GiB": peak})
    report = BenchReport("vigil bench train", env)
    report.sections.append(Section(
        "Training epochs (vigil train on synthetic data)",
        ["epoch", "model", "input", "parameters", "device", "amp", "batch", "train videos",
         "steps", "train s", "s/step", "clips/s", "val + checkpoint s", "epoch s", "loss",
         "peak GiB"], rows,
        [f"recipe: {opts.config or 'the default (configs/train/seed.yaml)'}"
         + (f" with --set {' '.join(opts.overrides)}" if opts.overrides else "")
         + "; backbone pretrained weights off; "
         f"{videos} synthetic videos ({opts.width}x{opts.height}, {opts.frames} frames) written "
         f"in {synth_s:.1f} s; fit() took {fit_s:.1f} s in all",
         "epoch 1 also decodes every clip into the cache (data.cache); later epochs read it",
         "clips/s: training videos / training pass seconds; peak GiB: "
         "torch.cuda.max_memory_allocated over the whole run"]))
    return report

"""The detector learns: a few minutes of CPU training with cpu-small on synthetic videos reaches
det-acc@0.5 >= 0.8 on held-out synthetic videos (another seed, never trained on)."""
from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


def test_cpu_small_reaches_det_acc_08_on_held_out_synthetic_videos(trained_checkpoint):
    from detector.checkpoint import load_checkpoint
    from detector.losses import LossConfig, build_criterion
    from train import engine
    from train.dataset import ClipDataset, collate, scan_dataset
    from train.metrics import format_table

    run = trained_checkpoint
    model, cfg, meta = load_checkpoint(run.checkpoint)
    # Another synth seed: other scenes, backgrounds and figures than any training video.
    records = scan_dataset(run.heldout_dir)
    loader = DataLoader(ClipDataset(records, cfg.input), batch_size=16, collate_fn=collate)
    metrics, _ = engine.evaluate(model, build_criterion(LossConfig(), cfg.num_classes), loader,
                                 torch.device("cpu"), cfg.class_names)
    table = format_table(metrics, title=f"held-out synthetic videos, best epoch "
                                        f"{run.result['best_epoch']}, data + training "
                                        f"{run.seconds:.0f} s")
    log.warning("\n%s", table)
    assert metrics["det_acc"] >= 0.8, table

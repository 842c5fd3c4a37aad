"""Multiple-instance selection: which window of a weakly labelled clip to train on.

Most real footage is labelled per clip ("this 8-second clip shows a fall"), while the daemon
judges 2-second windows. Squeezing the whole clip into T frames (the reference's sampling)
teaches the model a time scale the daemon never shows it, and a random window of the clip may
miss the action. Multiple-instance learning treats the clip as a *bag* of windows of which at
least one holds the action (Sultani, Chen and Shah, "Real-world Anomaly Detection in
Surveillance Videos", CVPR 2018; here the top-1 instance, as in their MIL ranking loss): before
each epoch, every bag shows the window the current model scores highest for the clip's class.

`ClipDataset(weak_positives="mil")` plans the bags; `choose_bag_windows` makes the choice. In
evaluation every long clip, negatives too, is judged by its highest-scoring window, so the label
never decides how a clip is looked at.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from detector.precision import autocast

from .dataset import ClipDataset
from .distributed import unwrap
from .engine import forward

log = logging.getLogger(__name__)


@torch.no_grad()
def choose_bag_windows(model: nn.Module, dataset: ClipDataset, device: torch.device,
                       amp: torch.dtype | None = None, batch_size: int = 16) -> dict[str, Any]:
    """Point every bag of `dataset` at its window the model scores highest for the bag's class
    (a positive of a training dataset) or for any class (an evaluation dataset, whose bags
    include negatives: max pooling over the windows, as MIL infers a bag's label; and a
    negative of a training dataset with `hard_negatives`: its window most like an action).

    A window's score for class c is the best query's softmax probability of c (as the daemon's
    `class_scores`). Windows are loaded without augmentation. The model is put in eval mode for
    the pass and given back in the mode it was in.

    Args:
        model: a `VideoDETR` (or one wrapped by DDP, or an exported `OnnxModel`); its
            `cfg.input` gives the normalisation.
        dataset: the dataset whose bags to point (`dataset.bag_indices()`); others are untouched.
        device: where the model lives.
        amp: autocast dtype, or None for float32.
        batch_size: windows per forward pass.
    Returns:
        {"bags": how many, "windows": windows scored, "mean_position": mean of the chosen
        window's index / (windows in its bag - 1) (0 = first window, 1 = last; nan without bags),
        "mean_score": mean chosen score}.
    """
    bags = dataset.bag_indices()
    if not bags:
        return {"bags": 0, "windows": 0, "mean_position": float("nan"), "mean_score": float("nan")}
    net = unwrap(model)
    was_training = getattr(net, "training", False)     # an exported OnnxModel has no mode
    net.eval()
    # (bag, window k, first, count, class) for every window of every bag.
    jobs = []
    sizes = []                      # windows per bag, in `bags` order
    for i in bags:
        record = dataset.records[dataset.samples[i].record]
        # Training looks for the label's window; evaluation may not use the label, so it takes
        # the window with the highest score of any class (-1), for positives and negatives
        # alike; so does a training negative (a hard negative: its most action-like window).
        label = int(record.annotations[0, 0]) if dataset.train and record.is_positive else -1
        windows = dataset.bag_windows(i)
        sizes.append(len(windows))
        for k, (first, count) in enumerate(windows):
            jobs.append((i, k, first, count, label))
    scores = np.zeros(len(jobs), np.float32)
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b:b + batch_size]
        clips = torch.stack([torch.from_numpy(np.ascontiguousarray(
            dataset.load_window(dataset.records[dataset.samples[i].record], first, count)))
            for i, _, first, count, _ in chunk])
        with autocast(device, amp):
            logits = forward(net, clips, device)["pred_logits"]
        probs = logits.float().softmax(-1)
        labels = torch.tensor([job[4] for job in chunk], device=probs.device)
        own = probs.gather(-1, labels.clamp(min=0).view(-1, 1, 1).expand(-1, probs.shape[1], 1))
        best = torch.where(labels >= 0, own.amax(dim=(1, 2)), probs[..., :-1].amax(dim=(1, 2)))
        scores[b:b + len(chunk)] = best.cpu().numpy()
    if was_training:
        net.train(True)
    positions, chosen = [], []
    start = 0
    for i, n in zip(bags, sizes):
        k = int(np.argmax(scores[start:start + n]))
        dataset.choose_bag_window(i, k)
        positions.append(k / max(n - 1, 1))
        chosen.append(float(scores[start + k]))
        start += n
    return {"bags": len(bags), "windows": len(jobs), "mean_position": float(np.mean(positions)),
            "mean_score": float(np.mean(chosen))}

"""Frozen frame features, computed once per decoded frame and kept on disk.

A 2D backbone whose ImageNet stages are frozen (`detector.frame_backbone`, `freeze: all`) maps
each frame to the same features in every epoch and every fold: a cross-validation would run
the 2D network over the same frames some 100 times. `FrameFeatureCache` runs the frozen stages
(`model.backbone.frozen_features`) once per (video, frames, size, flip) and stores the result as
float16 `.npy` (`~/.cache/vigil/features/`, `data.frame_features`); `ClipDataset(features=...)`
then serves those features in place of pixels and the model continues from them
(`VideoDETR.forward(x, from_frozen=True)`). An epoch then costs the temporal stage and the
decoder only. Turned on by `data.frame_features`.

The key holds the clip cache's key (video content, frame indices, size) and a digest of the
frozen stages' weights, so another start (`train.init`) with the same frozen network reuses the
entries and a different one never does. Pixel augmentation cannot be applied to stored
features, except a horizontal flip, which is a second entry computed from flipped frames.

float16 storage: the features are post-ReLU6 activations in [0, 6]; float16 keeps them to 3
decimal digits, below what the frozen network's own float16 weights change
(`scripts/extract-mobilenet-weights.py`).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from detector.preprocess import normalize_clips

from . import video_io
from .cache import ClipCache, load_npy, store_npy

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def frozen_digest(model: torch.nn.Module) -> str:
    """SHA-1 (16 hex digits) of the frozen stages' parameters and buffers of `model`'s backbone."""
    backbone = model.backbone
    h = hashlib.sha1(f"v{_FORMAT_VERSION}".encode())
    for stage in list(backbone.body)[: backbone.frozen_stages]:
        for name, tensor in stage.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FrameFeatureCache:
    """Per-frame outputs of a model's frozen 2D stages, on disk.

    Args:
        model: a `VideoDETR` whose `caches_frames` is true; its frozen stages are run (under
            `torch.inference_mode`, in eval mode: they never train) on `device`.
        clips: the decoded-clip cache (None: decode every time a feature entry is missing).
        directory: where the feature entries go (created).
        device: where to run the frozen stages.
        batch_frames: frames per forward pass.
    Attributes:
        hits, misses: lookups served from disk / computed.
    """

    def __init__(self, model: torch.nn.Module, clips: Optional[ClipCache],
                 directory: str | Path, device: torch.device | str = "cpu",
                 batch_frames: int = 64) -> None:
        if not getattr(model, "caches_frames", False):
            raise ValueError("data.frame_features needs a 2D backbone with frozen stages "
                             "(model.backbone.name: mobilenet_v2, model.backbone.freeze: all)")
        self.model = model
        self.clips = clips
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.batch_frames = int(batch_frames)
        self.input = model.cfg.input
        self.digest = frozen_digest(model)
        self.hits = 0
        self.misses = 0
        # Keys need the videos' content fingerprints, which the clip cache computes (and
        # remembers); without a clip cache, one that only ever makes keys.
        self._keys = clips if clips is not None else ClipCache(self.dir)

    def key(self, video: str | Path, indices: Sequence[int] | np.ndarray,
            size: Sequence[int], flip: bool) -> str:
        """Entry key: the clip's cache key, the frozen weights' digest and the flip."""
        clip_key = self._keys.key(video, indices, size)
        return hashlib.sha1(f"{clip_key}|{self.digest}|flip={int(flip)}".encode()).hexdigest()

    def get(self, video: str | Path, indices: Sequence[int] | np.ndarray, size: Sequence[int],
            flip: bool = False) -> np.ndarray:
        """The frozen features of frames `indices` of `video` resized to `size` = (H, W).

        Returns:
            float16 (len(indices), C', h', w'), read-only (memory-mapped from the entry).
        """
        key = self.key(video, indices, size, flip)
        entry = self.dir / key[:2] / f"{key}.npy"
        feats = load_npy(entry, np.float16, len(indices), "computing", mmap=True)
        if feats is not None:
            self.hits += 1
            return feats
        self.misses += 1
        frames = (self.clips.get_or_decode(video, indices, size) if self.clips is not None
                  else video_io.read_frames(video, indices, size))
        if flip:
            frames = frames[:, :, ::-1]
        feats = self.compute(frames)
        try:
            store_npy(entry, feats)
        except OSError as exc:
            log.warning("%s: cannot write feature entry (%s); continuing without it", entry, exc)
        return feats

    @torch.inference_mode()
    def compute(self, frames: np.ndarray) -> np.ndarray:
        """The frozen stages' output of uint8 RGB frames (N, H, W, 3): float16 (N, C', h', w')."""
        backbone = self.model.backbone
        was_training = backbone.training
        backbone.eval()
        out = []
        for i in range(0, len(frames), self.batch_frames):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[i:i + self.batch_frames]))
            x = normalize_clips(chunk.unsqueeze(0).to(self.device), self.input.mean,
                                self.input.std)                      # (1, 3, n, H, W)
            out.append(backbone.frozen_features(x[0].transpose(0, 1)).half().cpu().numpy())
        backbone.train(was_training)
        return np.concatenate(out)


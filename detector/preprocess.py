"""Turning uint8 frames into model input, on whatever device the frames are already on.

Training and the daemon both move uint8 clips to the device (4x less to copy than float32) and
normalise there, so the statistics are applied by one function in one place.
"""
from __future__ import annotations

from typing import Sequence

import torch


def normalize_clips(clips: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 RGB clips to normalised model input.

    Args:
        clips: (B, T, H, W, 3) uint8, RGB, channels last as frames are decoded.
        mean, std: per-channel statistics in [0, 1] units.
        dtype: floating type of the result.
    Returns:
        (B, 3, T, H, W) tensor of `dtype` on the same device as `clips`.
    """
    if clips.dim() != 5 or clips.shape[-1] != 3:
        raise ValueError(f"expected (B, T, H, W, 3) clips, got {tuple(clips.shape)}")
    m = torch.tensor(mean, device=clips.device, dtype=dtype) * 255.0
    s = torch.tensor(std, device=clips.device, dtype=dtype) * 255.0
    x = (clips.to(dtype) - m) / s
    return x.permute(0, 4, 1, 2, 3)

"""Motion input: what changes between frames, put in front of the backbone.

A small network trained on a few hundred real clips learns whatever separates them most cheaply,
and in fall datasets that is the room: one room holds all the falls. Frame differences carry the
motion and little of the static scene (a wall, a bed, a chair that never moves is zero), so a
backbone fed with them has far less room to learn the room instead of the fall. This is the
two-stream idea (Simonyan and Zisserman, 2014) in its cheapest form: RGB differences in place of
optical flow, as in TSN's "RGB diff" modality (Wang et al., 2016).

Modes (`model.backbone.motion`):
- `none`: the normalised RGB clip, unchanged (3 channels);
- `diff`: x[t] - x[t-1] per channel, the first frame's difference repeated from the second
  (3 channels, so a 3-channel stem works unchanged);
- `rgb+diff`: both, concatenated (6 channels; `small3d` only, since a pretrained ResNet stem
  takes 3);
- `diff+dev` and `rgb+diff+dev`: the differences, and each frame's deviation from the clip's
  mean over time, x[t] - mean_t(x) (with the clip: 9 channels; without it: 6; `small3d` only).
  The deviation is a background subtraction with the window itself as the background: what
  stands still for the whole window is zero, and a person who moved in it stays visible, even
  in the frames where they hold still (a fallen person lying on the floor), where the frame
  difference is zero.
"""
from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

MotionMode = Literal["none", "diff", "rgb+diff", "diff+dev", "rgb+diff+dev"]
MOTION_MODES: tuple[str, ...] = get_args(MotionMode)


def _parts(mode: str) -> list[str]:
    """The 3-channel components of `mode`, in channel order (`none` is the RGB clip alone)."""
    return ["rgb"] if mode == "none" else mode.split("+")


def motion_channels(mode: str, channels: int = 3) -> int:
    """Channels the backbone's first layer receives in `mode` from a `channels`-channel input
    (3 for an RGB clip; a frame backbone's temporal stage applies the modes to its per-frame
    features, `detector.frame_backbone`)."""
    return channels * len(_parts(mode))


class MotionInput(nn.Module):
    """(B, C, T, H, W) -> (B, `motion_channels(mode, C)`, T, H, W): C = 3 for a normalised
    clip, or the channels of per-frame features (`detector.frame_backbone`).

    No parameters: checkpoints of a `none` model and of a motion model differ only in the first
    convolution's input width. Exportable to ONNX (slices and a concatenation).
    """

    def __init__(self, mode: str = "none") -> None:
        super().__init__()
        if mode not in MOTION_MODES:
            raise ValueError(f"backbone.motion must be one of {', '.join(MOTION_MODES)}, "
                             f"got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for part in _parts(self.mode):
            if part == "rgb":
                parts.append(x)
            elif part == "dev":
                parts.append(x - x.mean(dim=2, keepdim=True))
            elif x.shape[2] < 2:                                 # one frame: nothing moved
                parts.append(torch.zeros_like(x))
            else:
                diff = x[:, :, 1:] - x[:, :, :-1]                # (B, 3, T-1, H, W)
                parts.append(torch.cat([diff[:, :, :1], diff], dim=2))  # first frame: the second's
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"

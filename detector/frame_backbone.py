"""A 2D image network as a video backbone: every frame through it, then temporal modelling.

    clip (B, 3, T, H, W) -> frames (B*T, 3, H, W) -> `body` (2D stages, ImageNet weights)
    -> per-frame features (B, C, T, h, w) -> `temporal`: a 1x1x1 reduction to `temporal_width`,
    the motion modes on the reduced features, `temporal_layers` 3x1x1 convolutions of stride 2
    over time -> `pool` -> (B, temporal_width, T', H', W')

Why: a network pretrained on ImageNet knows people, cars and lights, where a video network
trained on a few hundred clips learns whatever separates them most cheaply (the room, the
camera). Measured in issue 25: frozen ImageNet MobileNetV2 features with a simple temporal
summary raised fewer false fights on ordinary scenes than Vigil's `small3d`
(`docs/models/`). The temporal stage is the cheapest temporal modelling that sees the order of
frames (TSN-style frame features with 1D temporal convolutions, as the temporal half of R(2+1)D).

The motion modes of `detector.motion` apply to the reduced per-frame features: `rgb+diff+dev`
gives the temporal convolutions the features, their change from the previous frame and their
deviation from the window's mean (what moved), so a 2D network's frames keep the motion input
of the 3D models. (Reducing first keeps the stage cheap: the motion modes on the 1280 channels
made a training step several times slower.)

Freezing (`freeze`) covers `body` only; a frozen prefix of `body` maps each frame on its own,
so training can compute it once per decoded frame and cache it (`frozen_features`,
`forward(..., from_frozen=True)`; `train.features`).

Stages of `mobilenet_v2` (torchvision's `features` indices; output stride and channels):
stem = 0-1 (2, 16), layer1 = 2-3 (4, 24), layer2 = 4-6 (8, 32), layer3 = 7-13 (16, 96),
layer4 = 14-18 (32, 1280). At 112x112 the feature map is 4x4.
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from .config import BackboneConfig, frozen_stage_count
from .errors import CheckpointError, ConfigError
from .motion import MotionInput, motion_channels
from .pretrained import load_imagenet, pretrained_path

log = logging.getLogger(__name__)

# torchvision `features` index ranges of each stage, `body` order (see the module docstring).
MOBILENET_V2_STAGES = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 19))


def mobilenet_v2_stages(pretrained: bool) -> tuple[list[nn.Module], int]:
    """torchvision's `mobilenet_v2().features` cut into five stages, and their output channels.

    Args:
        pretrained: load the ImageNet weights that ship with Vigil (`detector.pretrained`).
    Raises:
        CheckpointError: the shipped weights are missing or do not fit.
    """
    net = mobilenet_v2()
    if pretrained:
        sd = load_imagenet("mobilenet_v2")
        try:
            net.features.load_state_dict({k.removeprefix("features."): v for k, v in sd.items()})
        except RuntimeError as exc:
            raise CheckpointError(f"{pretrained_path('mobilenet_v2')}: not the weights of "
                                  f"mobilenet_v2: {' '.join(str(exc).split())[:300]}") from None
    stages = [nn.Sequential(*net.features[a:b]) for a, b in MOBILENET_V2_STAGES]
    return stages, net.last_channel


class TemporalStage(nn.Module):
    """(B, C, T, h, w) per-frame features -> (B, width, ceil(T / 2**layers), h, w).

    A 1x1 convolution to `width` (BatchNorm, ReLU), the motion modes on its output
    (`detector.motion`), then `layers` convolutions of kernel 3 and stride 2 over time, 1x1 in
    space (BatchNorm, ReLU; the first takes the motion modes' channels): each output step sees
    2**(layers + 1) - 1 frames; space is left to the decoder's attention. Run as 2D
    convolutions over (time, position), which the CPU kernels do several times faster than the
    same 3x1x1 `Conv3d`.
    """

    def __init__(self, in_channels: int, width: int, layers: int, motion: str = "none") -> None:
        super().__init__()
        if layers < 1:
            raise ConfigError("backbone.temporal_layers: a frame backbone needs at least one "
                              "temporal convolution")
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False),
                                    nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.motion = MotionInput(motion)
        blocks: list[nn.Module] = []
        cin = motion_channels(motion, width)
        for _ in range(layers):
            blocks += [nn.Conv2d(cin, width, (3, 1), (2, 1), (1, 0), bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.blocks(self.motion(self.reduce(x.flatten(3))))     # (B, width, T', h*w)
        return y.unflatten(3, (h, w))


class FrameBackbone(nn.Module):
    """2D stages per frame, a temporal stage, an optional adaptive pool; freezing of the 2D part.

    Attributes (as `detector.backbone.VideoBackbone`'s, which the detector relies on):
        body: `nn.Sequential` of the 2D stages (stem first), run on (B*T, 3, H, W).
        temporal: the `TemporalStage`.
        pool: `nn.AdaptiveAvgPool3d` or `nn.Identity`.
        out_channels: channels C of the output feature map (`temporal_width`).
        frozen_stages: how many leading stages of `body` are frozen.
    """

    def __init__(self, stages: list[nn.Module], stage_channels: int, width: int, layers: int,
                 pool: list[int] | None = None, frozen_stages: int = 0,
                 motion: str = "none") -> None:
        super().__init__()
        self.body = nn.Sequential(*stages)
        self.temporal = TemporalStage(stage_channels, width, layers, motion)
        self.pool: nn.Module = nn.AdaptiveAvgPool3d(tuple(pool)) if pool else nn.Identity()
        self.out_channels = width
        self.frozen_stages = min(frozen_stages, len(self.body))
        for stage in list(self.body)[: self.frozen_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "FrameBackbone":
        """Set train/eval mode, keeping frozen stages in eval (their BatchNorm statistics are
        part of the frozen weights)."""
        super().train(mode)
        for stage in list(self.body)[: self.frozen_stages]:
            stage.eval()
        return self

    def frozen_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The frozen stages' output for each frame on its own.

        Args:
            frames: (N, 3, H, W) normalised frames.
        Returns:
            (N, C', h', w') features (C' and stride those of the last frozen stage).
        Raises:
            ValueError: no stage is frozen (nothing fixed to compute once).
        """
        if not self.frozen_stages:
            raise ValueError("backbone.freeze is none: no frozen 2D stage to precompute")
        return self.body[: self.frozen_stages](frames)

    def forward(self, x: torch.Tensor, from_frozen: bool = False) -> torch.Tensor:
        """Args:
            x: (B, 3, T, H, W) normalised clips; or with `from_frozen`, (B, T, C', h', w')
               outputs of `frozen_features` for each clip's frames.
        Returns:
            (B, out_channels, T', H', W') features.
        """
        if from_frozen:
            b, t = x.shape[:2]
            feats = self.body[self.frozen_stages:](x.flatten(0, 1))
        else:
            b, _, t = x.shape[:3]
            feats = self.body(x.transpose(1, 2).flatten(0, 1))       # (B*T, C, h, w)
        feats = feats.unflatten(0, (b, t)).transpose(1, 2)            # (B, C, T, h, w)
        return self.pool(self.temporal(feats))


def build_frame_backbone(cfg: BackboneConfig) -> FrameBackbone:
    """The `FrameBackbone` of `cfg.name` (`mobilenet_v2`).

    Raises:
        ConfigError: an unknown 2D backbone, or pretrained weights it does not have.
        CheckpointError: the shipped ImageNet weights are missing or unreadable.
    """
    if cfg.name != "mobilenet_v2":
        raise ConfigError(f"backbone.name: unknown 2D backbone {cfg.name!r}")
    if cfg.pretrained not in (None, "imagenet"):
        raise ConfigError(f"backbone.pretrained: mobilenet_v2 has no {cfg.pretrained} weights; "
                          "use imagenet (shipped with Vigil) or null")
    stages, channels = mobilenet_v2_stages(cfg.pretrained == "imagenet")
    frozen = frozen_stage_count(cfg.freeze, len(stages))
    return FrameBackbone(stages, channels, cfg.temporal_width, cfg.temporal_layers, cfg.pool,
                         frozen, cfg.motion)

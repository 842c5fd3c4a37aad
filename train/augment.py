"""Clip augmentation: one random transform per clip, applied identically to all its frames.

Spatial transforms move the boxes with the pixels; the random resized crop is chosen so that every
box stays whole inside it (cutting an action out of the crop would teach the model to predict a
box for something it cannot see). Temporal jitter is not applied here: it happens when the frame
indices are sampled (`train.dataset.ClipDataset`), `temporal_jitter` only configures it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class AugmentConfig:
    """The `augment:` section of a training config.

    Args:
        enabled: master switch; False leaves clips untouched (evaluation always is).
        temporal_jitter: 0..1, random offset of each sampled frame as a fraction of the spacing
            between samples.
        hflip: probability of a horizontal flip.
        color_jitter: strength s of brightness/contrast/saturation jitter; each factor is drawn
            from [1 - s, 1 + s].
        resized_crop: probability of a random resized crop (resized back to the clip size).
        crop_scale: [min, max] fraction of the frame's area the crop covers (enlarged when
            needed to hold every box).
    """
    enabled: bool = False
    temporal_jitter: float = 0.0
    hflip: float = 0.0
    color_jitter: float = 0.0
    resized_crop: float = 0.0
    crop_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])

    def __post_init__(self) -> None:
        for name in ("temporal_jitter", "hflip", "resized_crop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"augment.color_jitter must be in [0, 1), got {self.color_jitter}")
        if (len(self.crop_scale) != 2 or not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0):
            raise ValueError(f"augment.crop_scale must be [min, max] with 0 < min <= max <= 1, "
                             f"got {self.crop_scale}")


def hflip(clip: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a clip left-right.

    Args:
        clip: (T, H, W, 3) uint8.
        boxes: (K, 4) normalised xyxy.
    Returns:
        The mirrored clip (a new contiguous array) and boxes.
    """
    out = np.ascontiguousarray(clip[:, :, ::-1])
    b = boxes.copy()
    b[:, 0], b[:, 2] = 1.0 - boxes[:, 2], 1.0 - boxes[:, 0]
    return out, b


def color_jitter(clip: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation, the same for every frame of the clip.

    Args:
        clip: (T, H, W, 3) uint8 RGB.
        strength: each factor is drawn uniformly from [1 - strength, 1 + strength].
        rng: random generator.
    Returns:
        (T, H, W, 3) uint8 RGB.
    """
    b, c, s = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
    x = clip.astype(np.float32)
    x *= b
    # Contrast pulls towards the clip's mean grey, saturation towards each pixel's grey (ITU-R 601
    # luma, as torchvision's ColorJitter does).
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey.mean()) * c + grey.mean()
    grey = (grey - grey.mean()) * c + grey.mean()
    x = (x - grey[..., None]) * s + grey[..., None]
    return np.clip(x, 0, 255, out=x).astype(np.uint8)


def crop_window(width: int, height: int, boxes: np.ndarray, scale: tuple[float, float],
                rng: np.random.Generator, ratio: tuple[float, float] = (3 / 4, 4 / 3)
                ) -> tuple[int, int, int, int]:
    """A random crop (pixel xyxy, integer) that holds every box whole.

    Args:
        width, height: frame size in pixels.
        boxes: (K, 4) normalised xyxy; K may be 0.
        scale: (min, max) fraction of the frame's area.
        rng: random generator.
        ratio: range of the crop's aspect ratio relative to the frame's.
    Returns:
        (x0, y0, x1, y1) in pixels with 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height.
    """
    area = rng.uniform(*scale)
    r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = min(math.sqrt(area * r), 1.0), min(math.sqrt(area / r), 1.0)
    if len(boxes):
        ux0, uy0 = float(boxes[:, 0].min()), float(boxes[:, 1].min())
        ux1, uy1 = float(boxes[:, 2].max()), float(boxes[:, 3].max())
        ux0, uy0, ux1, uy1 = max(ux0, 0.0), max(uy0, 0.0), min(ux1, 1.0), min(uy1, 1.0)
    else:
        ux0 = uy0 = 1.0
        ux1 = uy1 = 0.0
    cw, ch = max(cw, ux1 - ux0), max(ch, uy1 - uy0)
    # The crop's left edge may lie anywhere that keeps [ux0, ux1] and the frame inside it.
    x_lo, x_hi = max(0.0, ux1 - cw), min(ux0, 1.0 - cw)
    y_lo, y_hi = max(0.0, uy1 - ch), min(uy0, 1.0 - ch)
    cx0 = rng.uniform(x_lo, max(x_lo, x_hi))
    cy0 = rng.uniform(y_lo, max(y_lo, y_hi))
    # Round outwards so the pixel crop still contains the boxes.
    x0 = max(0, int(math.floor(cx0 * width)))
    y0 = max(0, int(math.floor(cy0 * height)))
    x1 = min(width, max(x0 + 1, int(math.ceil((cx0 + cw) * width))))
    y1 = min(height, max(y0 + 1, int(math.ceil((cy0 + ch) * height))))
    return x0, y0, x1, y1


def resized_crop(clip: np.ndarray, boxes: np.ndarray, window: tuple[int, int, int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Crop every frame to `window` and resize back to the clip's size (bilinear).

    Args:
        clip: (T, H, W, 3) uint8.
        boxes: (K, 4) normalised xyxy of the full frame.
        window: (x0, y0, x1, y1) pixel crop.
    Returns:
        (T, H, W, 3) uint8 clip and (K, 4) boxes normalised to the crop, clipped to [0, 1].
    """
    T, H, W, _ = clip.shape
    x0, y0, x1, y1 = window
    out = np.empty_like(clip)
    for t in range(T):
        cv2.resize(clip[t, y0:y1, x0:x1], (W, H), dst=out[t], interpolation=cv2.INTER_LINEAR)
    b = boxes.astype(np.float32).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] * W - x0) / (x1 - x0)
    b[:, [1, 3]] = (b[:, [1, 3]] * H - y0) / (y1 - y0)
    return out, np.clip(b, 0.0, 1.0)


def augment_clip(clip: np.ndarray, boxes: np.ndarray, cfg: AugmentConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply the configured random transforms to one clip and its boxes.

    Args:
        clip: (T, H, W, 3) uint8 RGB.
        boxes: (K, 4) normalised xyxy (K may be 0).
        cfg: what to apply and how strongly.
        rng: random generator (the dataset seeds it per sample and epoch).
    Returns:
        (T, H, W, 3) uint8 clip and (K, 4) float32 boxes, normalised xyxy.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not cfg.enabled:
        return clip, boxes
    T, H, W, _ = clip.shape
    if cfg.resized_crop > 0 and rng.random() < cfg.resized_crop:
        window = crop_window(W, H, boxes, (cfg.crop_scale[0], cfg.crop_scale[1]), rng)
        clip, boxes = resized_crop(clip, boxes, window)
    if cfg.hflip > 0 and rng.random() < cfg.hflip:
        clip, boxes = hflip(clip, boxes)
    if cfg.color_jitter > 0:
        clip = color_jitter(clip, cfg.color_jitter, rng)
    return clip, boxes.astype(np.float32)

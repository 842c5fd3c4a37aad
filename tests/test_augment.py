"""Clip augmentation: boxes move with the pixels, crops keep every box, one transform per clip."""
from __future__ import annotations

import numpy as np
import pytest

from detector.errors import ConfigError
from detector.schema import from_dict
from train.augment import AugmentConfig, augment_clip, crop_window, hflip

T, H, W = 4, 48, 64


def clip_with_rectangle(box_norm) -> np.ndarray:
    """A dark clip with a bright filled rectangle exactly covering `box_norm` (xyxy)."""
    clip = np.full((T, H, W, 3), 20, np.uint8)
    x1, y1, x2, y2 = box_norm
    clip[:, int(round(y1 * H)):int(round(y2 * H)), int(round(x1 * W)):int(round(x2 * W))] = 230
    return clip


def bright_extent(frame: np.ndarray) -> tuple[float, float, float, float]:
    """Normalised xyxy extent of the frame's bright pixels."""
    ys, xs = np.nonzero(frame[..., 0] > 125)
    return xs.min() / W, ys.min() / H, (xs.max() + 1) / W, (ys.max() + 1) / H


def test_flip_mirrors_the_box_and_the_pixels() -> None:
    box = np.array([[0.125, 0.25, 0.5, 0.75]], np.float32)
    clip = clip_with_rectangle(box[0])
    out, boxes = hflip(clip, box)
    np.testing.assert_allclose(boxes, [[0.5, 0.25, 0.875, 0.75]])
    np.testing.assert_array_equal(out, clip[:, :, ::-1])
    np.testing.assert_allclose(bright_extent(out[0]), boxes[0], atol=1 / W)


def test_flip_probability_one_always_flips() -> None:
    cfg = AugmentConfig(enabled=True, hflip=1.0)
    box = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    _, boxes = augment_clip(clip_with_rectangle(box[0]), box, cfg, np.random.default_rng(0))
    np.testing.assert_allclose(boxes, [[0.7, 0.2, 0.9, 0.4]], atol=1e-6)


@pytest.mark.parametrize("seed", range(25))
def test_resized_crop_keeps_the_box_around_the_drawn_rectangle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x1, y1 = rng.uniform(0.0, 0.6, 2)
    x2, y2 = x1 + rng.uniform(0.15, 0.4), y1 + rng.uniform(0.15, 0.4)
    box = np.array([[x1, y1, min(x2, 1.0), min(y2, 1.0)]], np.float32)
    clip = clip_with_rectangle(box[0])
    # Snap the box to the pixels actually drawn so the check is exact up to interpolation.
    box[0] = bright_extent(clip[0])
    cfg = AugmentConfig(enabled=True, resized_crop=1.0, crop_scale=[0.3, 0.6], hflip=0.5)
    out, boxes = augment_clip(clip, box, cfg, rng)
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert boxes.shape == (1, 4) and np.all((boxes >= 0) & (boxes <= 1))
    for frame in out:
        ex = bright_extent(frame)
        # The rectangle's pixels lie inside the transformed box (1.5 px of interpolation slack)
        # and the box is no bigger than the rectangle.
        np.testing.assert_allclose(ex, boxes[0], atol=1.5 / min(W, H))
    # Every frame got the same transform.
    assert all(np.array_equal(out[0], f) for f in out[1:])


def test_crop_window_always_contains_every_box() -> None:
    rng = np.random.default_rng(1)
    boxes = np.array([[0.05, 0.1, 0.2, 0.3], [0.6, 0.5, 0.9, 0.95]], np.float32)
    for _ in range(200):
        x0, y0, x1, y1 = crop_window(W, H, boxes, (0.1, 0.5), rng)
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        assert x0 <= boxes[:, 0].min() * W and x1 >= boxes[:, 2].max() * W
        assert y0 <= boxes[:, 1].min() * H and y1 >= boxes[:, 3].max() * H


def test_crop_without_boxes_covers_the_requested_area() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        x0, y0, x1, y1 = crop_window(W, H, np.zeros((0, 4), np.float32), (0.3, 0.5), rng)
        area = (x1 - x0) * (y1 - y0) / (W * H)
        assert 0.2 < area < 0.65


def test_colour_jitter_is_identical_across_frames_and_changes_pixels() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1, H, W, 3), dtype=np.uint8)
    clip = np.repeat(frame, T, axis=0)
    cfg = AugmentConfig(enabled=True, color_jitter=0.4)
    out, boxes = augment_clip(clip, np.zeros((0, 4), np.float32), cfg, np.random.default_rng(5))
    assert boxes.shape == (0, 4)
    assert all(np.array_equal(out[0], f) for f in out[1:])
    assert np.abs(out.astype(int) - clip.astype(int)).mean() > 1.0


def test_disabled_config_returns_the_clip_untouched() -> None:
    clip = clip_with_rectangle((0.1, 0.1, 0.5, 0.5))
    box = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)
    cfg = AugmentConfig(enabled=False, hflip=1.0, color_jitter=0.5, resized_crop=1.0)
    out, boxes = augment_clip(clip, box, cfg, np.random.default_rng(0))
    assert out is clip
    np.testing.assert_array_equal(boxes, box)


def test_config_from_yaml_mapping_validates_values() -> None:
    cfg = from_dict(AugmentConfig, {"enabled": True, "hflip": 0.5, "crop_scale": [0.5, 1]})
    assert cfg.crop_scale == [0.5, 1.0]
    with pytest.raises(ConfigError, match="hflip"):
        from_dict(AugmentConfig, {"hflip": 1.5})
    with pytest.raises(ConfigError, match="crop_scale"):
        from_dict(AugmentConfig, {"crop_scale": [0.9, 0.5]})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(AugmentConfig, {"mixup": 0.2})

"""Clip augmentation: boxes move with the pixels, crops keep every box, one transform per clip."""
from __future__ import annotations

import numpy as np
import pytest

from detector.errors import ConfigError
from detector.schema import from_dict
from train.augment import (CAMERA_STEPS, AugmentConfig, augment_clip, burn_timestamp,
                           crop_window, hflip, perturbation, random_timestamps, shake_offsets)

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


# --- Real-camera transforms -------------------------------------------------------------------

CAMERA = ("blur", "jpeg", "low_light", "greyscale", "shake", "frame_drop", "timestamp")
N = 16  # frames of the real-camera test clips (64 x 64, the small training size)


def camera_clip(seed: int = 0, frames: int = N, size: int = 64) -> np.ndarray:
    """A colourful textured scene panning one pixel a frame: every frame differs from the last."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size + frames]
    scene = np.stack([xx * 3, yy * 3, 255 - (xx + yy) * 2], -1)
    scene = np.clip(scene + rng.integers(-25, 26, scene.shape), 0, 255).astype(np.uint8)
    return np.stack([scene[:, t:t + size] for t in range(frames)])


def only(name: str, p: float = 1.0) -> AugmentConfig:
    """An enabled config with a single real-camera transform at probability p."""
    return AugmentConfig(enabled=True, **{name: p})


def test_real_camera_fields_default_to_off_and_are_validated() -> None:
    cfg = AugmentConfig()
    assert all(getattr(cfg, name) == 0.0 for name in CAMERA)
    for name in CAMERA:
        assert getattr(from_dict(AugmentConfig, {name: 0.3}), name) == 0.3
        with pytest.raises(ConfigError, match=name):
            from_dict(AugmentConfig, {name: 1.5})
        with pytest.raises(ConfigError, match=name):
            from_dict(AugmentConfig, {name: -0.1})


@pytest.mark.parametrize("name", CAMERA)
def test_each_is_a_no_op_at_probability_zero_and_draws_nothing(name: str) -> None:
    clip = camera_clip()
    box = np.array([[0.2, 0.3, 0.6, 0.9]], np.float32)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    out, boxes = augment_clip(clip, box, only(name, 0.0), rng)
    np.testing.assert_array_equal(out, clip)
    np.testing.assert_array_equal(boxes, box)
    # Untouched rng: recipes without the new fields see the same random stream as before.
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("name", CAMERA)
def test_each_at_probability_one_changes_pixels_but_not_shape_dtype_boxes_or_input(name: str
                                                                                   ) -> None:
    clip = camera_clip()
    before = clip.copy()
    box = np.array([[0.2, 0.3, 0.6, 0.9]], np.float32)
    out, boxes = augment_clip(clip, box, only(name), np.random.default_rng(4))
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert not np.array_equal(out, clip)
    np.testing.assert_array_equal(boxes, box)
    np.testing.assert_array_equal(clip, before)  # clips may be cached: never edited in place


def test_blur_removes_fine_detail_and_keeps_the_mean() -> None:
    clip = camera_clip()
    out, _ = augment_clip(clip, np.zeros((0, 4)), only("blur"), np.random.default_rng(0))

    def detail(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x.astype(np.float32), axis=2)).mean())

    assert detail(out) < 0.7 * detail(clip)
    assert abs(out.mean() - clip.mean()) < 1.0


def test_jpeg_changes_pixels_but_keeps_the_mean() -> None:
    clip = camera_clip()
    out, _ = augment_clip(clip, np.zeros((0, 4)), only("jpeg"), np.random.default_rng(0))
    assert np.abs(out.astype(int) - clip.astype(int)).mean() > 2.0
    assert abs(out.mean() - clip.mean()) < 2.0
    for channel in range(3):
        assert abs(out[..., channel].mean() - clip[..., channel].mean()) < 3.0


def test_low_light_darkens_and_adds_noise_that_changes_every_frame() -> None:
    still = np.repeat(camera_clip(frames=1), N, axis=0)
    for seed in range(5):
        out, _ = augment_clip(still, np.zeros((0, 4)), only("low_light"),
                              np.random.default_rng(seed))
        assert out.mean() < 0.75 * still.mean()
        # Sensor noise is new in each frame of a still scene.
        assert all(not np.array_equal(out[0], f) for f in out[1:])


def test_greyscale_makes_the_three_channels_equal() -> None:
    clip = camera_clip()
    out, _ = augment_clip(clip, np.zeros((0, 4)), only("greyscale"), np.random.default_rng(0))
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 1], out[..., 2])
    luma = clip.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(out[..., 0] - luma).max() <= 1.0


def test_shake_offsets_are_a_zero_mean_walk_within_the_amplitude() -> None:
    rng = np.random.default_rng(0)
    for frames in (2, 16, 64):
        off = shake_offsets(frames, 0.03, rng)
        assert off.shape == (frames, 2)
        np.testing.assert_allclose(off.mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.abs(off).max(axis=0), 0.03)
    np.testing.assert_array_equal(shake_offsets(1, 0.03, rng), [[0.0, 0.0]])


@pytest.mark.parametrize("seed", range(5))
def test_shake_moves_each_frame_a_little_and_leaves_the_box_on_the_mean_position(seed: int
                                                                                 ) -> None:
    box = np.array([[0.25, 0.25, 0.5, 0.625]], np.float32)
    clip = np.repeat(clip_with_rectangle(box[0])[:1], N, axis=0)  # a still camera, then shaken
    out, boxes = augment_clip(clip, box, only("shake"), np.random.default_rng(seed))
    assert out.shape == clip.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(boxes, box)

    def centre(frame: np.ndarray) -> np.ndarray:
        """Brightness-weighted centre of the rectangle (pixel i spans [i, i + 1))."""
        weights = frame[..., 0].astype(np.float64) - 20
        ys, xs = np.mgrid[0:H, 0:W] + 0.5
        return np.array([np.average(xs, weights=weights) / W, np.average(ys, weights=weights) / H])

    centres = np.array([centre(f) for f in out])
    true_centre = np.array([(box[0, 0] + box[0, 2]) / 2, (box[0, 1] + box[0, 3]) / 2])
    # Frames move by up to 4 % of the frame, and the box stays on their mean position.
    assert np.abs(centres - centres[0]).max() > 0.2 / W
    assert np.abs(centres - true_centre).max() <= 0.04 + 0.5 / W
    np.testing.assert_allclose(centres.mean(axis=0), true_centre, atol=0.25 / W)


@pytest.mark.parametrize("seed", range(10))
def test_frame_drop_repeats_predecessors_and_keeps_the_frame_count(seed: int) -> None:
    clip = camera_clip()
    out, _ = augment_clip(clip, np.zeros((0, 4)), only("frame_drop"), np.random.default_rng(seed))
    assert out.shape == clip.shape
    # Each output frame is some input frame, in order, never from the future.
    source = [next(i for i in range(N) if np.array_equal(f, clip[i])) for f in out]
    assert source[0] == 0 and all(s <= t for t, s in enumerate(source))
    assert source == sorted(source)
    repeated = sum(np.array_equal(out[t], out[t - 1]) for t in range(1, N))
    assert 1 <= repeated <= N // 4


def test_frame_drop_leaves_a_single_frame_alone() -> None:
    clip = camera_clip(frames=1)
    out, _ = augment_clip(clip, np.zeros((0, 4)), only("frame_drop"), np.random.default_rng(0))
    np.testing.assert_array_equal(out, clip)


@pytest.mark.parametrize("seed", range(12))
def test_timestamp_changes_only_one_corner_of_every_frame(seed: int) -> None:
    clip = camera_clip()
    out, _ = augment_clip(clip, np.zeros((0, 4)), only("timestamp"), np.random.default_rng(seed))
    changed = (out != clip).any(axis=-1)  # (T, H, W)
    assert changed.reshape(N, -1).any(axis=1).all()
    ys, xs = np.nonzero(changed.any(axis=0))
    top, left = ys.max() < 64 // 3, xs.max() < 0.7 * 64
    bottom, right = ys.min() >= 64 - 64 // 3, xs.min() >= 0.3 * 64
    assert (top or bottom) and (left or right)


def test_timestamp_ticks_a_second_at_the_given_frame() -> None:
    still = np.repeat(camera_clip(frames=1), N, axis=0)
    out = burn_timestamp(still, ("2024-05-06 07:08:09", "2024-05-06 07:08:10"), tick=5,
                         corner=0, width=0.6, colour=(255, 255, 0))
    assert all(np.array_equal(out[0], f) for f in out[1:5])
    assert all(np.array_equal(out[5], f) for f in out[6:])
    assert not np.array_equal(out[4], out[5])
    # Yellow text: some pixels turn to (255, 255, low blue).
    text = (out[0, ..., 0] > 200) & (out[0, ..., 1] > 200) & (out[0, ..., 2] < 120)
    assert text.any()


def test_random_timestamps_are_one_second_apart() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        first, second = random_timestamps(rng)
        assert len(first) >= 19 and first != second
        assert first[:-2] == second[:-2] or first[-2:] == "59"


ALL = dict(enabled=True, hflip=0.5, color_jitter=0.3, resized_crop=0.7, crop_scale=[0.4, 1.0],
           blur=0.5, jpeg=0.5, low_light=0.5, greyscale=0.5, shake=0.7, frame_drop=0.5,
           timestamp=0.5)


def test_the_whole_chain_is_deterministic_for_a_seeded_rng() -> None:
    clip = camera_clip()
    box = np.array([[0.2, 0.3, 0.6, 0.9], [0.5, 0.1, 0.7, 0.4]], np.float32)
    cfg = AugmentConfig(**ALL)
    for seed in range(10):
        a = augment_clip(clip, box, cfg, np.random.default_rng([7, 1, seed]))
        b = augment_clip(clip, box, cfg, np.random.default_rng([7, 1, seed]))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    other_epoch = augment_clip(clip, box, cfg, np.random.default_rng([7, 2, 0]))[0]
    assert not np.array_equal(other_epoch, augment_clip(clip, box, cfg,
                                                        np.random.default_rng([7, 1, 0]))[0])


@pytest.mark.parametrize("size", [(16, 64, 64), (8, 112, 112), (3, 48, 80)])
def test_the_whole_chain_keeps_boxes_valid_and_clips_whole(size: tuple[int, int, int]) -> None:
    frames, h, w = size
    rng = np.random.default_rng(size)
    clip = rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
    before = clip.copy()
    cfg = AugmentConfig(**{**ALL, **{name: 1.0 for name in CAMERA}})
    for seed in range(20):
        xy = rng.uniform(0.0, 0.7, (3, 2))
        box = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (3, 2))], axis=1).clip(0, 1)
        box = np.concatenate([box, [[0.0, 0.0, 1.0, 1.0]]]).astype(np.float32)  # box-less action
        out, boxes = augment_clip(clip, box, cfg, np.random.default_rng(seed))
        assert out.shape == clip.shape and out.dtype == np.uint8
        assert boxes.shape == box.shape and boxes.dtype == np.float32
        assert np.all((boxes >= 0) & (boxes <= 1))
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    np.testing.assert_array_equal(clip, before)


def test_a_perturbation_applies_its_camera_transforms_to_every_clip_and_nothing_else() -> None:
    cfg = perturbation(["greyscale", "low_light"])
    assert (cfg.greyscale, cfg.low_light, cfg.blur, cfg.hflip, cfg.resized_crop,
            cfg.color_jitter, cfg.temporal_jitter) == (1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    box = np.array([[0.25, 0.25, 0.75, 0.75]], np.float32)
    source = np.random.default_rng(0).integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    for seed in range(5):
        clip, boxes = augment_clip(source.copy(), box, cfg, np.random.default_rng(seed))
        assert np.array_equal(clip[..., 0], clip[..., 1])        # greyscale, every time
        assert clip.mean() < source.mean()                       # darker, every time
        np.testing.assert_allclose(boxes, box)                   # no geometry changed
    again, _ = augment_clip(source.copy(), box, cfg, np.random.default_rng(4))
    assert np.array_equal(again, clip)                           # seeded: the same clip


def test_an_unknown_perturbation_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'fog'.*known: shake, blur"):
        perturbation(["fog"])


def test_vigil_eval_offers_every_camera_transform_as_a_perturbation() -> None:
    import argparse

    from train.cli import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    known = [name for name, _ in CAMERA_STEPS]
    args = parser.parse_args(["eval", "--checkpoint", "x", "--data", "y", "--perturb", *known])
    assert args.perturb == known

"""`train.features`: a 2D backbone's frozen stages run once per decoded frame, stored, and
served by `ClipDataset` in place of pixels; the model continues from them to the same outputs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detector.config import ModelConfig
from detector.model import build_model
from detector.preprocess import normalize_clips
from detector.schema import from_dict
from train import engine, video_io
from train.augment import AugmentConfig
from train.cache import ClipCache
from train.config import load_train_config
from train.dataset import ClipDataset
from train.features import FrameFeatureCache
from train.records import VideoRecord
from train.trainer import frame_feature_cache

FPS = 10.0


def noise_video(path: Path, n: int = 30, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (48, 32))
    for _ in range(n):
        writer.write(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    writer.release()
    return path


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = from_dict(ModelConfig, {
        "backbone": {"name": "mobilenet_v2", "pretrained": None, "freeze": "all", "pool": None,
                     "motion": "rgb+diff", "temporal_width": 8, "temporal_layers": 1},
        "input": {"frames": 4, "size": [64, 64], "clip_seconds": 1.0}, "d_model": 16,
        "num_queries": 2, "decoder_layers": 1, "nheads": 2, "dim_feedforward": 16,
        "dropout": 0.0}, "model")
    return build_model(cfg).eval()


def test_features_are_computed_once_then_read_back(tmp_path):
    video = noise_video(tmp_path / "a.mp4")
    model = small_model()
    cache = FrameFeatureCache(model, ClipCache(tmp_path / "clips"), tmp_path / "features")
    idx = np.array([0, 3, 9, 20])
    first = cache.get(video, idx, (64, 64))
    assert (cache.misses, cache.hits) == (1, 0)
    again = cache.get(video, idx, (64, 64))
    assert (cache.misses, cache.hits) == (1, 1)
    assert first.dtype == np.float16 and first.shape == (4, 1280, 2, 2)
    assert np.array_equal(first, again)
    frames = video_io.read_frames(video, idx, (64, 64))
    x = normalize_clips(torch.from_numpy(frames)[None], model.cfg.input.mean,
                        model.cfg.input.std)[0].transpose(0, 1)
    with torch.inference_mode():
        want = model.backbone.frozen_features(x).numpy()
    assert np.allclose(first.astype(np.float32), want, atol=1e-2, rtol=1e-3)
    # A flip is another entry, computed from mirrored frames.
    flipped = cache.get(video, idx, (64, 64), flip=True)
    assert cache.misses == 2
    assert np.array_equal(flipped, cache.compute(frames[:, :, ::-1]))


def test_other_frozen_weights_never_read_these_entries(tmp_path):
    video = noise_video(tmp_path / "a.mp4")
    idx = np.arange(4)
    one = FrameFeatureCache(small_model(0), None, tmp_path / "features")
    other = FrameFeatureCache(small_model(1), None, tmp_path / "features")
    same = FrameFeatureCache(small_model(0), None, tmp_path / "features")
    assert one.digest != other.digest and one.digest == same.digest
    one.get(video, idx, (64, 64))
    other.get(video, idx, (64, 64))
    same.get(video, idx, (64, 64))
    assert (other.misses, same.hits) == (1, 1)


def record(path: Path, frames: int, label: int | None, box=None) -> VideoRecord:
    ann = (np.zeros((0, 5), np.float32) if label is None
           else np.array([[label, *(box or [np.nan] * 4)]], np.float32))
    return VideoRecord(path.stem, path, None, 48, 32, FPS, frames, ann,
                       np.full((len(ann), 2), np.nan, np.float32))


def test_a_dataset_of_features_gives_the_model_the_outputs_of_its_pixels(tmp_path):
    video = noise_video(tmp_path / "fight.mp4", 30)
    model = small_model()
    rec = record(video, 30, 0, [0.0, 0.0, 12.0, 32.0])       # a box on the left quarter
    feats = FrameFeatureCache(model, ClipCache(tmp_path / "clips"), tmp_path / "features")
    pixels = ClipDataset([rec], model.cfg.input, cache=ClipCache(tmp_path / "clips"),
                         window_s=1.0, train=False)
    frozen = ClipDataset([rec], model.cfg.input, cache=ClipCache(tmp_path / "clips"),
                         window_s=1.0, train=False, features=feats)
    (clip, target), (fclip, ftarget) = pixels[0], frozen[0]
    assert fclip.dtype == torch.float16 and fclip.shape == (4, 1280, 2, 2)
    assert torch.equal(target["boxes"], ftarget["boxes"])
    with torch.inference_mode():
        want = engine.forward(model, clip[None], torch.device("cpu"))
        got = engine.forward(model, fclip[None], torch.device("cpu"))
    assert torch.allclose(got["pred_logits"], want["pred_logits"], atol=1e-2)


def test_a_flip_mirrors_the_frames_and_the_box(tmp_path):
    video = noise_video(tmp_path / "fight.mp4", 30)
    model = small_model()
    rec = record(video, 30, 0, [0.0, 0.0, 12.0, 32.0])
    feats = FrameFeatureCache(model, None, tmp_path / "features")
    always = AugmentConfig(enabled=True, hflip=1.0, color_jitter=0.5)
    ds = ClipDataset([rec], model.cfg.input, augment=always, window_s=1.0, train=True,
                     features=feats)
    clip, target = ds[0]
    cx, cy, w, h = target["boxes"][0].tolist()
    assert cx == pytest.approx(1 - 6 / 48) and w == pytest.approx(12 / 48)   # now on the right
    assert feats.misses == 1
    key_flipped = feats.key(video, video_io.sample_indices(30, 4), (64, 64), True)
    assert (feats.dir / key_flipped[:2] / f"{key_flipped}.npy").exists()


def test_frame_features_need_a_model_with_frozen_2d_stages(tmp_path):
    cfg = load_train_config("configs/train/real-cpu.yaml", ["data.frame_features=true"])
    small3d = build_model(cfg.model)
    with pytest.raises(Exception, match="data.frame_features"):
        frame_feature_cache(cfg, small3d, None, torch.device("cpu"))


def test_the_recipe_warns_about_augmentation_stored_features_cannot_have(tmp_path, caplog):
    cfg = load_train_config("configs/train/real-mobilenet.yaml",
                            ["augment.color_jitter=0.3", f"data.cache_dir={tmp_path}"])
    model = build_model(cfg.model)
    cache = frame_feature_cache(cfg, model, None, torch.device("cpu"))
    assert cache.dir == tmp_path / "features"        # beside the clips of data.cache_dir
    assert "augment.color_jitter cannot change stored features" in caplog.text

"""Synthetic datasets: scenes of any style (`train.synth` stick figures, `train.synth_styles`
capsule figures, `train.synth_photo` a photographed person for the pose path) written in
Vigil's folder layout (`videos/`, `labels/`).

Its own module so that the two renderers stay below it: `synth_styles` builds on `synth`, and
this module picks between them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .synth import KINDS, Scene, write_video
from .synth_photo import PHOTO_KINDS, PhotoScene
from .synth_styles import OtherScene

log = logging.getLogger(__name__)

STYLES = ("stick", "other", "photo")


def make_scene(kind: str, seed: int, width: int = 320, height: int = 240, fps: float = 25,
               frames: int = 64, style: str = "stick", variety: bool = False) -> Scene:
    """A scene of the given style: "stick" (`Scene`, optionally with `variety`), "other"
    (`train.synth_styles.OtherScene`: capsule figures outdoors, shoving and slumping) or
    "photo" (`train.synth_photo.PhotoScene`: a photographed person; collapse and none only).

    Raises:
        ValueError: unknown style, or `variety` with a style other than "stick".
    """
    if style == "stick":
        return Scene(kind, seed, width, height, fps, frames, variety=variety)
    if style == "other":
        if variety:
            raise ValueError("variety applies to the stick style only")
        return OtherScene(kind, seed, width, height, fps, frames)
    if style == "photo":
        if variety:
            raise ValueError("variety applies to the stick style only")
        return PhotoScene(kind, seed, width, height, fps, frames)
    raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")


def _allocate(videos: int, mix: Sequence[float]) -> list[str]:
    """Kinds for `videos` clips in proportion to `mix` (largest remainder)."""
    weights = np.asarray(mix, dtype=float)
    if weights.shape != (3,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"mix must be 3 non-negative weights (fight, collapse, none), got {mix}")
    exact = videos * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for j in np.argsort(-(exact - counts), kind="stable")[: videos - counts.sum()]:
        counts[j] += 1
    return [kind for kind, c in zip(KINDS, counts) for _ in range(c)]


def _even(v: float) -> int:
    return max(16, int(round(v / 2)) * 2)


def write_dataset(out: str | Path, videos: int, seed: int, width: int = 320, height: int = 240,
                  fps: float = 25, frames: int = 64, mix: Sequence[float] = (1, 1, 1),
                  vary: bool = True, progress: bool = False, *, variety: bool = False,
                  style: str = "stick") -> list[str]:
    """Write a synthetic dataset in Vigil's layout (`videos/*.mp4`, `labels/*.txt`, no splits).

    Args:
        out: dataset folder (created; existing files with the same names are overwritten).
        videos: number of clips.
        seed: the whole dataset is a function of it (and the other arguments).
        width, height, fps, frames: the base geometry of every clip.
        mix: relative numbers of fight, collapse and none clips.
        vary: give each clip one of three sizes (base, 1.25x wider, square) and one of three
            frame rates (base, 0.8x, 0.6x), so per-video normalisation is exercised.
        progress: show a tqdm progress bar.
        variety: stick scenes in many looks (see `Scene`); off: exactly the plain default.
        style: "stick", "other" or "photo" (see `make_scene`; photo has no fights, so its
            fight share of `mix` must be 0).
    Returns:
        The stems written, in order.
    """
    from tqdm import tqdm

    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if variety and style != "stick":
        raise ValueError("variety applies to the stick style only")
    if style == "photo" and any(m > 0 for k, m in zip(KINDS, mix) if k not in PHOTO_KINDS):
        raise ValueError(f"photo scenes are {', '.join(PHOTO_KINDS)} only: give fights a mix "
                         f"of 0, e.g. mix (0, 1, 1)")
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), 7919])
    kinds = _allocate(videos, mix)
    kinds = [kinds[j] for j in rng.permutation(len(kinds))]
    sizes = [(width, height)]
    rates = [fps]
    if vary:
        sizes += [(_even(width * 1.25), height), (_even(height * 16 / 15),) * 2]
        rates += [max(1.0, round(fps * 0.8)), max(1.0, round(fps * 0.6))]
    stems = []
    for i, kind in enumerate(tqdm(kinds, desc="synth", unit="video", disable=not progress)):
        w, h = sizes[int(rng.integers(len(sizes)))]
        rate = rates[int(rng.integers(len(rates)))]
        scene_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
        scene = make_scene(kind, scene_seed, w, h, rate, frames, style=style, variety=variety)
        stem = f"{kind}_{i:04d}"
        write_video(out / "videos" / f"{stem}.mp4", scene)
        (out / "labels" / f"{stem}.txt").write_text(scene.label_line(), encoding="utf-8")
        stems.append(stem)
    log.info("wrote %d synthetic videos to %s", len(stems), out)
    return stems

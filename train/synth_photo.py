"""A synthetic scene with a photographed person: what the pose path can see.

The stick and capsule figures of `synth.py` and `synth_styles.py` teach the video detector, but
BlazePose, trained on real people, rarely finds a person in them, so a pose path fed such scenes
sees nobody and (rightly) raises nothing. This style moves a real photograph of a person instead:
Grace Hopper's official portrait, which ships with matplotlib (`mpl-data/sample_data/
grace_hopper.jpg`, a US Navy photograph in the public domain), cut out and animated over a plain
room:

  * collapse: the person stands, then topples over sideways about the feet in 0.4-0.8 s and
    stays lying (the label: the union of the person's extents from the fall on);
  * none: the person stands, sways and walks a little, always upright.

It is what `vigil demo`'s collapse camera shows (`synth://collapse?photo=1`), and a tiny dataset
of it lets the tests train the pose recipe end to end (`vigil synth --style photo`). It is not
training data for a real model: one person, one photograph, rigid motion.
"""
from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from .synth import CLASS_IDS

PHOTO_KINDS = ("collapse", "none")


def _photo() -> np.ndarray:
    """The portrait as BGR uint8 (loaded once per scene; 512x600)."""
    import matplotlib.cbook as cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = cv2.imread(str(path))
    if img is None:                         # a broken matplotlib install
        raise FileNotFoundError(f"cannot read matplotlib's sample photograph {path}")
    return img


class PhotoScene:
    """One clip with a photographed person (see the module docstring).

    Args:
        kind: "collapse" or "none".
        seed: everything random derives from it.
        width, height, fps, frames: as `synth.Scene`.
    Raises:
        ValueError: another kind, or bad geometry.
    """
    style = "photo"
    variety = False

    def __init__(self, kind: str, seed: int, width: int = 320, height: int = 240,
                 fps: float = 25, frames: int = 64) -> None:
        if kind not in PHOTO_KINDS:
            raise ValueError(f"photo scenes are {', '.join(PHOTO_KINDS)}, got {kind!r}")
        if width < 16 or height < 16 or frames < 1 or fps <= 0:
            raise ValueError(f"bad scene geometry {width}x{height}, {frames} frames at {fps} fps")
        self.kind, self.seed, self.variant = kind, int(seed), kind
        self.width, self.height, self.fps, self.frames = int(width), int(height), float(fps), int(frames)
        self.class_id = CLASS_IDS.get(kind)
        rng = np.random.default_rng([self.seed, 7, PHOTO_KINDS.index(kind)])
        ph = int(self.height * rng.uniform(0.5, 0.62))
        photo = _photo()
        pw = int(round(photo.shape[1] * ph / photo.shape[0]))
        self._person = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)
        self._background = self._room(rng)
        self._feet_y = self.height * rng.uniform(0.82, 0.92)
        self._x0 = self.width * rng.uniform(0.3, 0.7)
        duration = self.frames / self.fps
        self._fall_at = duration * rng.uniform(0.2, 0.35)
        self._fall_s = rng.uniform(0.4, 0.8)
        self._side = 1.0 if rng.random() < 0.5 else -1.0
        self._walk = rng.uniform(-0.08, 0.08) * self.width / max(duration, 1e-6)
        self._sway = rng.uniform(2.0, 6.0)
        self._noise = rng.normal(0.0, 2.5, (self.height, self.width, 3)).astype(np.float32)
        self._action_box: Optional[tuple[float, float, float, float]] = None

    def _room(self, rng: np.random.Generator) -> np.ndarray:
        wall = rng.uniform(120, 210, 3)
        floor = rng.uniform(60, 140, 3)
        img = np.empty((self.height, self.width, 3), np.float32)
        horizon = int(self.height * rng.uniform(0.45, 0.6))
        img[:horizon] = wall
        img[horizon:] = floor
        return np.clip(img, 0, 255).astype(np.uint8)

    def _pose(self, i: int) -> tuple[float, float]:
        """(x of the feet in pixels, tilt in degrees) at frame i."""
        t = i / self.fps
        x = self._x0
        if self.kind == "none":
            return x + self._walk * t, self._sway * math.sin(2 * math.pi * 0.4 * t)
        u = min(max((t - self._fall_at) / self._fall_s, 0.0), 1.0)
        u = u * u * (3 - 2 * u)                       # smooth start, faster middle, settle
        return x, self._side * 88.0 * u

    def _paint(self, canvas: np.ndarray, i: int, mask_only: bool = False) -> np.ndarray:
        """Paste the person at frame i; returns the (H, W) bool mask of their pixels."""
        x, tilt = self._pose(i)
        ph, pw = self._person.shape[:2]
        # The photo's bottom centre (the feet) goes to (x, feet_y); rotate about it.
        m = cv2.getRotationMatrix2D((pw / 2.0, float(ph)), -tilt, 1.0)
        m[0, 2] += x - pw / 2.0
        m[1, 2] += self._feet_y - ph
        size = (self.width, self.height)
        alpha = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), m, size, flags=cv2.INTER_LINEAR)
        mask = alpha > 127
        if not mask_only:
            person = cv2.warpAffine(self._person, m, size, flags=cv2.INTER_LINEAR)
            canvas[mask] = person[mask]
        return mask

    def render(self, i: int) -> np.ndarray:
        """Frame i as BGR uint8 (H, W, 3)."""
        if not 0 <= i < self.frames:
            raise IndexError(f"frame {i} outside 0..{self.frames - 1}")
        img = self._background.copy()
        self._paint(img, i)
        return np.clip(img.astype(np.float32) + self._noise, 0, 255).astype(np.uint8)

    def box(self, i: int, subjects: bool = False) -> Optional[tuple[float, float, float, float]]:
        """Pixel xyxy extent of the person in frame i (None for "none" unless `subjects`)."""
        if self.class_id is None and not subjects:
            return None
        mask = self._paint(np.empty((0,)), i, mask_only=True)
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        if cols.size == 0:
            return None
        return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))

    def action_box(self) -> Optional[tuple[float, float, float, float]]:
        """The label: union of the person's extents from the fall on, or None for "none"."""
        if self.class_id is None:
            return None
        if self._action_box is None:
            first = min(int(self._fall_at * self.fps), self.frames - 1)
            b = np.array([self.box(i) for i in range(first, self.frames)])
            self._action_box = (float(b[:, 0].min()), float(b[:, 1].min()),
                                float(b[:, 2].max()), float(b[:, 3].max()))
        return self._action_box

    def label_line(self) -> str:
        """`<class> x1 y1 x2 y2 t=START-END`, or "" for none (the same format as `Scene`)."""
        box = self.action_box()
        if box is None:
            return ""
        x1, y1 = math.floor(box[0]), math.floor(box[1])
        x2, y2 = min(math.ceil(box[2]), self.width), min(math.ceil(box[3]), self.height)
        end = self.frames / self.fps
        return (f"{self.class_id} {x1} {y1} {x2} {y2} "
                f"t={self._fall_at:.2f}-{min(self._fall_at + self._fall_s, end):.2f}\n")

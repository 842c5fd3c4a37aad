"""Synthetic labelled videos: stick figures fighting, collapsing, or doing neither.

The only training data that can be made on a machine without downloads. Each `Scene` is fully
determined by (kind, seed, size, fps, frames): its background, figures and every pose are
computed up front, so `render(i)` is a few OpenCV drawing calls (about a millisecond at 320x240)
and gives the same pixels for the same frame whatever order frames are asked in.

What makes it a video task rather than an image task:
  * "fight": two figures close together, facing each other, striking alternately and fast
    (punches, overhead blows, kicks) with jerky bodies that recoil when hit;
  * "collapse": a figure walks or stands, falls over within about a second and stays down;
  * "none": walkers and standers, and hard negatives that look like the actions in a single
    frame: a person lying still on the floor for the whole clip, or a pair standing as close
    as fighters but talking with small, slow gestures.
Every scene also has 1-2 distractor walkers, drawn behind or in front of the action.

The label box is the union over all frames of the drawn extents of the figures doing the action
(both fighters; the falling figure), clipped to the frame. Action figures are 42-72% of the
frame height, so the box is typically 35-60% of the frame's width.

`variety=True` (`vigil synth --variety`) keeps the kinds, motions and labels but draws each
scene in one of many looks, for pretraining that transfers better to real CCTV: clothed, filled
silhouettes (elliptic body, thick limbs, skin, hair, shoes) instead of sticks; furnished rooms
with textured walls, floors in perspective, windows, doors, furniture, a light pool and lens
vignetting; in 40% of scenes a camera high up looking down (figures 20-45% of the frame height,
smaller the farther away); 0-4 bystanders; lighting that drifts, flickers or switches mid-clip,
gamma and haze; greyscale IR (20%), optical blur, a burnt-in clock. `train.synth_styles` holds
a second, different style ("other") for few-shot tests; `train.synth_dataset.make_scene` picks
either and `train.synth_dataset.write_dataset` writes Vigil's folder layout.

Frames are BGR (what `cv2.VideoWriter` expects); `write_video` encodes a scene.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from detector.errors import DataError

log = logging.getLogger(__name__)

KINDS = ("fight", "collapse", "none")
CLASS_IDS = {"fight": 0, "collapse": 1}

# Body proportions as fractions of standing height (feet to top of head = 0.99).
_HIP, _TORSO, _NECK, _HEAD_R = 0.47, 0.33, 0.03, 0.08
_SHOULDER_DROP, _UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.03, 0.16, 0.15, 0.24, 0.23
_SHIFT = 4  # cv2 sub-pixel bits: smooth motion even on tiny frames
_ONE = 1 << _SHIFT

# Segments between joint indices (see `_joints`): far limbs, torso, near limbs.
_FAR = ((3, 6), (6, 7), (0, 10), (10, 11))
_NEAR = ((3, 4), (4, 5), (0, 8), (8, 9))


@dataclass(frozen=True)
class Pose:
    """One figure in one frame.

    Attributes:
        x, y: feet centre in pixels (y grows downwards).
        h: standing height in pixels.
        facing: +1 looks towards +x, -1 towards -x.
        tilt: rotation of the whole body around the feet, radians, positive towards +x
            (pi/2: lying along the floor towards +x).
        arms: (shoulder, elbow) angles of the near and far arm; shoulder 0 = hanging,
            pi/2 = straight ahead, pi = up; elbow bends further the same way.
        legs: (hip, knee) angles of the near and far leg; hip 0 = straight down, positive
            forward; knee bends the shin backwards.
    """
    x: float
    y: float
    h: float
    facing: float
    tilt: float
    arms: tuple[tuple[float, float], tuple[float, float]]
    legs: tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class Style:
    """Colours (BGR) and line widths of a figure.

    `parts` (clothed figures of `variety` scenes only): BGR colours of shirt, trousers, skin,
    hair and shoes, and whether the sleeves are long (1) or short (0).
    """
    colour: tuple[int, int, int]
    far_colour: tuple[int, int, int]
    limb: int
    torso: int
    parts: Optional[tuple] = None


@dataclass
class _Actor:
    poses: list[Pose]
    style: Style
    is_action: bool
    is_subject: bool = True   # False for distractor walkers
    paint: Optional[Callable[..., None]] = None   # how to draw a pose; None: `_draw`


def _joints(p: Pose) -> np.ndarray:
    """World coordinates (12, 2) of hip, neck, head centre, shoulder, near elbow, near hand,
    far elbow, far hand, near knee, near foot, far knee, far foot."""
    f = p.facing
    pts = np.zeros((12, 2))
    pts[0] = (0.0, _HIP)
    pts[1] = (0.0, _HIP + _TORSO)
    pts[2] = (0.0, _HIP + _TORSO + _NECK + _HEAD_R)
    pts[3] = (0.0, _HIP + _TORSO - _SHOULDER_DROP)
    for k, (s, e) in enumerate(p.arms):
        elbow = pts[3] + _UPPER_ARM * np.array([f * math.sin(s), -math.cos(s)])
        pts[4 + 2 * k] = elbow
        pts[5 + 2 * k] = elbow + _FOREARM * np.array([f * math.sin(s + e), -math.cos(s + e)])
    for k, (a, kn) in enumerate(p.legs):
        knee = pts[0] + _THIGH * np.array([f * math.sin(a), -math.cos(a)])
        pts[8 + 2 * k] = knee
        pts[9 + 2 * k] = knee + _SHIN * np.array([f * math.sin(a - kn), -math.cos(a - kn)])
    c, s = math.cos(p.tilt), math.sin(p.tilt)
    xr = pts[:, 0] * c + pts[:, 1] * s
    yr = -pts[:, 0] * s + pts[:, 1] * c
    return np.stack([p.x + p.h * xr, p.y - p.h * yr], axis=1)


def _draw(img: np.ndarray, p: Pose, style: Style, colour: Optional[tuple] = None) -> None:
    """Paint a stick figure (in place). `colour` overrides the style (used for masks)."""
    pts = np.rint(_joints(p) * _ONE).astype(np.int64)
    near = colour or style.colour
    far = colour or style.far_colour

    def seg(a: int, b: int, col: tuple, width: int) -> None:
        cv2.line(img, (int(pts[a, 0]), int(pts[a, 1])), (int(pts[b, 0]), int(pts[b, 1])),
                 col, width, cv2.LINE_AA, _SHIFT)

    for a, b in _FAR:
        seg(a, b, far, style.limb)
    seg(0, 1, near, style.torso)
    cv2.circle(img, (int(pts[2, 0]), int(pts[2, 1])), int(round(_HEAD_R * p.h * _ONE)), near,
               -1, cv2.LINE_AA, _SHIFT)
    for a, b in _NEAR:
        seg(a, b, near, style.limb)


# Everyday colours (BGR) for `variety` scenes: walls, floors, furniture, clothes, skin, hair.
_WALLS = ((200, 205, 210), (170, 190, 205), (150, 160, 165), (215, 225, 230), (120, 140, 160),
          (180, 175, 160), (95, 105, 110), (160, 200, 200))
_FLOORS = ((90, 100, 110), (60, 80, 110), (140, 150, 150), (40, 45, 50), (100, 130, 160),
           (120, 120, 125), (70, 110, 150))
_FURNITURE = ((40, 60, 90), (70, 100, 140), (200, 200, 200), (50, 50, 55), (110, 90, 60),
              (150, 170, 190), (60, 60, 120))
_SHIRTS = ((30, 30, 30), (225, 225, 225), (128, 128, 128), (90, 40, 20), (40, 40, 190),
           (50, 90, 40), (150, 190, 210), (220, 180, 130), (40, 30, 110), (60, 200, 230),
           (40, 70, 110), (30, 120, 230))
_TROUSERS = ((120, 80, 50), (80, 50, 30), (35, 35, 35), (110, 110, 110), (120, 160, 180),
             (30, 50, 70))
_SKINS = ((60, 90, 140), (90, 130, 190), (140, 170, 225), (120, 150, 205), (80, 110, 165))
_HAIRS = ((25, 25, 30), (30, 50, 80), (100, 170, 210), (150, 150, 150), (40, 40, 45))
_SHOES = ((30, 30, 30), (220, 220, 220), (30, 50, 80), (60, 60, 60))


def _pick(rng: np.random.Generator, palette: Sequence) -> np.ndarray:
    return np.asarray(palette[int(rng.integers(len(palette)))], dtype=np.float64)


def _shade(col: tuple, k: float) -> tuple:
    return tuple(int(min(255, v * k)) for v in col)


def _draw_clothed(img: np.ndarray, p: Pose, style: Style, colour: Optional[tuple] = None) -> None:
    """Paint a filled, clothed silhouette (in place): an elliptic body, thick round-ended limbs,
    head with hair, hands and shoes. Same joints as `_draw`; `colour` overrides every part."""
    pts = _joints(p)
    P = np.rint(pts * _ONE).astype(np.int64)
    shirt, trousers, skin, hair, shoes, long_sleeves = style.parts
    h = p.h

    def pt(k: int) -> tuple[int, int]:
        return int(P[k, 0]), int(P[k, 1])

    def c(col: tuple, far: bool = False) -> tuple:
        return colour or (_shade(col, 0.72) if far else col)

    def seg(a: int, b: int, col: tuple, width: int) -> None:
        cv2.line(img, pt(a), pt(b), col, width, cv2.LINE_AA, _SHIFT)

    def dot(k: int, r: float, col: tuple, at: Optional[np.ndarray] = None) -> None:
        q = np.rint((pts[k] if at is None else at) * _ONE).astype(np.int64)
        cv2.circle(img, (int(q[0]), int(q[1])), max(1, int(round(r * _ONE))), col, -1,
                   cv2.LINE_AA, _SHIFT)

    arm_w, leg_w = style.limb, max(style.limb + 1, int(round(style.limb * 1.35)))
    for k, far in ((1, True), (0, False)):
        if not far:
            # Body between the limbs: hips, then an ellipse from hip to shoulders.
            dot(0, 0.55 * leg_w + 0.02 * h, c(trousers))
            mid = (pts[0] + pts[1]) / 2
            d = pts[1] - pts[0]
            half = float(np.hypot(*d)) / 2 + 0.03 * h
            ang = math.degrees(math.atan2(d[1], d[0]))
            q = np.rint(mid * _ONE).astype(np.int64)
            cv2.ellipse(img, (int(q[0]), int(q[1])),
                        (int(round(half * _ONE)), int(round(style.torso / 2 * _ONE))), ang, 0, 360,
                        c(shirt), -1, cv2.LINE_AA, _SHIFT)
            up = (pts[2] - pts[1]) / max(float(np.hypot(*(pts[2] - pts[1]))), 1e-6)
            seg(1, 2, c(skin), max(1, int(round(0.06 * h))))          # neck
            dot(2, _HEAD_R * h * 1.05, c(hair), pts[2] + 0.15 * _HEAD_R * h * up)
            fwd = p.facing * np.array([-up[1], up[0]])
            dot(2, _HEAD_R * h * 0.88, c(skin), pts[2] - 0.12 * _HEAD_R * h * up
                + 0.18 * _HEAD_R * h * fwd)
        # Leg k: thigh and shin in trousers, a shoe; arm k: sleeve(s), hand.
        hip, foot = (8, 9) if k == 0 else (10, 11)
        seg(0, hip, c(trousers, far), leg_w)
        seg(hip, foot, c(trousers, far), leg_w)
        dot(foot, 0.6 * leg_w, c(shoes, far))
        elbow, hand = (4, 5) if k == 0 else (6, 7)
        seg(3, elbow, c(shirt, far), arm_w)
        seg(elbow, hand, c(shirt if long_sleeves else skin, far), max(1, arm_w - 1))
        dot(hand, 0.55 * arm_w, c(skin, far))


def _lying_limbs(rng: np.random.Generator, up: float
                 ) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
    """Arm and leg angles of a body lying on its side, limbs spread towards the camera's "up"
    (sign `up`) so they do not vanish under the floor."""
    arms = ((up * rng.uniform(1.6, 2.8), up * rng.uniform(0.0, 0.6)),
            (up * rng.uniform(0.3, 1.2), up * rng.uniform(0.0, 0.8)))
    legs = ((up * rng.uniform(0.05, 0.5), -up * rng.uniform(0.0, 0.6)),
            (up * rng.uniform(0.0, 0.2), -up * rng.uniform(0.0, 0.3)))
    return arms, legs


class Scene:
    """One synthetic clip.

    Args:
        kind: "fight", "collapse" or "none".
        seed: everything random in the scene derives from it.
        width, height: frame size in pixels.
        fps: frame rate; motion is defined in seconds, so it looks the same at any rate.
        frames: number of frames.
        variety: draw the scene in one of many looks instead of the plain default (see
            `_setup_look`): clothed silhouettes, furnished rooms with perspective floors, a
            camera high up, 0-4 bystanders, lighting changes, greyscale (IR), blur, a clock
            overlay. Same kinds, motions and label semantics. Off: pixels exactly as before
            this option existed.
    """
    style = "stick"
    variety = False
    # Looks of `variety` scenes; the class values are the plain default.
    _high = False
    _fig_scale = 1.0
    _gain: Optional[np.ndarray] = None
    _grey = False
    _blur = 0.0
    _clock: Optional[tuple] = None

    def __init__(self, kind: str, seed: int, width: int = 320, height: int = 240,
                 fps: float = 25, frames: int = 64, variety: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if width < 16 or height < 16 or frames < 1 or fps <= 0:
            raise ValueError(f"bad scene geometry {width}x{height}, {frames} frames at {fps} fps")
        self.kind, self.seed = kind, int(seed)
        self.width, self.height, self.fps, self.frames = int(width), int(height), float(fps), int(frames)
        self.class_id = CLASS_IDS.get(kind)
        rng = np.random.default_rng([self.seed, KINDS.index(kind)])
        self._t = np.arange(self.frames) / self.fps
        self.variety = bool(variety)
        if self.variety:
            self._setup_look(rng)
            self._background = self._make_room(rng)
        else:
            self._background = self._make_background(rng)
        self._bg_luma = float(cv2.cvtColor(self._background, cv2.COLOR_BGR2GRAY).mean())
        actors: list[_Actor] = []
        # What the scene's main figures do: the kind itself, or for "none" which negative.
        self.variant = kind
        if kind == "fight":
            actors += self._fight(rng)
        elif kind == "collapse":
            actors.append(self._collapse(rng))
        else:
            r = rng.random()
            if r < 0.2:
                self.variant = "lying"
                actors.append(self._lying(rng))
            elif r < 0.4:
                self.variant = "talking"
                actors += self._talking(rng)
            else:
                self.variant = "walking"
                actors.append(self._walker(rng, big=True))
        if self.variety:
            distractors = [self._walker(rng, big=False) for _ in range(int(rng.integers(0, 5)))]
        else:
            distractors = [self._walker(rng, big=False)
                           for _ in range(1 + int(rng.random() < 0.3))]
        for d in distractors:
            d.is_subject = False
            # Behind or in front of the action, at random.
            if rng.random() < 0.5:
                actors.insert(0, d)
            else:
                actors.append(d)
        if self.variety:
            for a in actors:
                a.paint = _draw_clothed
            # Farther from the camera (feet higher in the frame) first: nearer people occlude.
            actors.sort(key=lambda a: a.poses[0].y)
        self._actors = actors
        noise_sigma = rng.uniform(1.5, 6.0 if self._grey else 4.5) if self.variety \
            else rng.uniform(1.5, 4.0)
        field = rng.normal(0.0, noise_sigma, (self.height + 8, self.width + 8, 3))
        self._noise_pos = np.clip(field, 0, 255).astype(np.uint8)
        self._noise_neg = np.clip(-field, 0, 255).astype(np.uint8)
        self._noise_offsets = rng.integers(0, 9, size=(self.frames, 2))
        self._action_box: Optional[tuple[float, float, float, float]] = None

    # ----- public -------------------------------------------------------------------------
    def render(self, i: int) -> np.ndarray:
        """Frame i as BGR uint8 (H, W, 3)."""
        if not 0 <= i < self.frames:
            raise IndexError(f"frame {i} outside 0..{self.frames - 1}")
        img = self._background.copy()
        for actor in self._actors:
            (actor.paint or _draw)(img, actor.poses[i], actor.style)
        if self._gain is not None:
            img = cv2.LUT(img, self._lut(i))
        if self._blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), self._blur)
        oy, ox = self._noise_offsets[i]
        h, w = self.height, self.width
        # Sensor noise: a fixed noise field shifted per frame is as good as fresh noise here and
        # costs a saturating add instead of a random draw per pixel.
        cv2.add(img, self._noise_pos[oy:oy + h, ox:ox + w], dst=img)
        cv2.subtract(img, self._noise_neg[oy:oy + h, ox:ox + w], dst=img)
        if self._grey:
            img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if self._clock is not None:
            self._draw_clock(img, i)
        return img

    def box(self, i: int, subjects: bool = False) -> Optional[tuple[float, float, float, float]]:
        """Pixel xyxy extent of what the action's figures paint in frame i; None for "none".

        Measured on the drawing itself (every pixel with any coverage, antialiasing included),
        so it is exact and already clipped to the frame: pixel k spans [k, k + 1).
        With `subjects`, the extent of the scene's main figures whatever the kind (for "none":
        the lying person, the talking pair or the prominent walker), distractors excluded.
        """
        mask = self._mask(i, subjects)
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        if cols.size == 0:
            return None
        return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))

    def subject_box(self) -> tuple[float, float, float, float]:
        """Pixel xyxy union over all frames of the main figures' extents (see `box`)."""
        boxes = [b for b in (self.box(i, subjects=True) for i in range(self.frames))
                 if b is not None]
        b = np.array(boxes)
        return (float(b[:, 0].min()), float(b[:, 1].min()),
                float(b[:, 2].max()), float(b[:, 3].max()))

    def action_box(self) -> Optional[tuple[float, float, float, float]]:
        """The label: pixel xyxy union of the action's extents over all frames, or None."""
        if self.class_id is None:
            return None
        if self._action_box is None:
            self._action_box = self.subject_box()
        return self._action_box

    def actor_mask(self, i: int) -> np.ndarray:
        """Boolean (H, W) mask of the pixels the action's figures paint in frame i."""
        return self._mask(i, subjects=False)

    def _mask(self, i: int, subjects: bool) -> np.ndarray:
        canvas = np.zeros((self.height, self.width), np.uint8)
        for actor in self._actors:
            if actor.is_subject if subjects else actor.is_action:
                (actor.paint or _draw)(canvas, actor.poses[i], actor.style, colour=(255,))
        return canvas > 0

    def label_line(self) -> str:
        """The scene's label file content: one `<class> x1 y1 x2 y2` line, or "" for none."""
        box = self.action_box()
        if box is None:
            return ""
        x1, y1 = math.floor(box[0]), math.floor(box[1])
        x2 = min(math.ceil(box[2]), self.width)
        y2 = min(math.ceil(box[3]), self.height)
        return f"{self.class_id} {x1} {y1} {x2} {y2}\n"

    # ----- variety ------------------------------------------------------------------------
    def _setup_look(self, rng: np.random.Generator) -> None:
        """Draw how a `variety` scene looks: camera height, lighting, sensor, overlays."""
        n, t = self.frames, self._t
        # A camera high up looking down: figures 20-45% of the frame, most of the frame floor.
        self._high = bool(rng.random() < 0.4)
        self._fig_scale = float(rng.uniform(0.5, 0.65)) if self._high else 1.0
        self._grey = bool(rng.random() < 0.2)            # night / IR camera
        self._blur = float(rng.uniform(0.4, 1.1)) if rng.random() < 0.35 else 0.0
        # Lighting over time: steady, slow drift, flicker, or a light switched mid-clip.
        base = rng.uniform(0.65, 1.25)
        mode = int(rng.choice(4, p=[0.4, 0.25, 0.15, 0.2]))
        if mode == 1:
            gain = base * (1 + rng.uniform(0.05, 0.2)
                           * np.sin(2 * math.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6.3)))
        elif mode == 2:
            gain = base * (1 + rng.normal(0, rng.uniform(0.02, 0.06), n))
        elif mode == 3:
            t_switch = rng.uniform(0.2, 0.8) * max(float(t[-1]), 1e-6)
            ramp = np.clip((t - t_switch) / 0.12, 0, 1)
            gain = base * (1 - ramp) + base * rng.uniform(0.55, 1.45) * ramp
        else:
            gain = np.full(n, base)
        self._gain = np.asarray(gain, dtype=np.float64)
        self._gamma = float(rng.uniform(0.8, 1.25))
        self._lift = float(rng.uniform(0, 20))           # haze / raised black level
        if rng.random() < 0.35:                          # a burnt-in camera clock
            self._clock = (int(rng.integers(0, 4)), int(rng.integers(0, 86400 - 3600)),
                           int(rng.integers(1, 17)))

    def _lut(self, i: int) -> np.ndarray:
        x = np.arange(256, dtype=np.float64) / 255.0
        return np.clip(255.0 * x ** self._gamma * self._gain[i] + self._lift, 0, 255
                       ).astype(np.uint8)

    def _draw_clock(self, img: np.ndarray, i: int) -> None:
        corner, start, cam = self._clock
        s = start + int(self._t[i])
        text = f"CAM{cam:02d} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
        scale = self.height / 420
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = 3 if corner % 2 == 0 else self.width - tw - 3
        y = th + 3 if corner < 2 else self.height - 4
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1,
                    cv2.LINE_AA)

    def _make_room(self, rng: np.random.Generator) -> np.ndarray:
        """A furnished room: lit, textured walls, a floor in perspective (tiles or boards),
        windows, doors and pictures, furniture boxes with tops and shadows, a light pool and
        lens vignetting."""
        H, W = self.height, self.width
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        self.floor_y = fy = int(rng.uniform(0.12, 0.35) * H) if self._high \
            else int(rng.uniform(0.35, 0.62) * H)
        wall = _pick(rng, _WALLS) * rng.uniform(0.75, 1.15) + rng.normal(0, 10, 3)
        floor = _pick(rng, _FLOORS) * rng.uniform(0.75, 1.2) + rng.normal(0, 8, 3)
        lx = rng.uniform(-0.3, 1.3) * W                  # where the light comes from
        side = np.clip(np.abs(xx - lx) / W, 0, 1)
        img = wall * (1.0 - rng.uniform(0.1, 0.35) * side
                      - rng.uniform(0.0, 0.15) * yy / max(fy, 1))[..., None]
        depth = np.clip((yy - fy) / max(H - fy, 1), 0, 1)
        fl = floor * (rng.uniform(0.65, 0.9) + rng.uniform(0.1, 0.35) * depth
                      - 0.15 * side)[..., None]
        img = np.where((yy >= fy)[..., None], fl, img)
        for cell, amp in ((max(4, H // 5), rng.uniform(4, 16)),
                          (max(2, H // 24), rng.uniform(2, 7))):
            low = rng.normal(0, 1, (H // cell + 2, W // cell + 2)).astype(np.float32)
            img += amp * cv2.resize(low, (W, H), interpolation=cv2.INTER_CUBIC)[..., None]
        img = np.clip(img, 0, 255).astype(np.uint8)
        floor_mean = tuple(float(v) for v in img[fy:].reshape(-1, 3).mean(axis=0))
        line = _shade(floor_mean, rng.uniform(0.6, 0.85))
        vx, vy = rng.uniform(0.1, 0.9) * W, fy - rng.uniform(0.2, 1.2) * H
        pattern = rng.random()
        if pattern < 0.7:                                # boards or tiles towards a vanishing point
            n = int(rng.integers(4, 12))
            t_top = (fy - vy) / (H - vy)
            for k in range(-n, 2 * n + 1):
                bx = k * W / n
                cv2.line(img, (int(vx + t_top * (bx - vx)), fy), (int(bx), H), line, 1, cv2.LINE_AA)
            if pattern < 0.4:                            # tiles: cross lines closer far away
                m = int(rng.integers(3, 9))
                for j in range(1, m):
                    y = int(fy + (H - fy) * (j / m) ** 1.7)
                    cv2.line(img, (0, y), (W, y), line, 1, cv2.LINE_AA)
        cv2.line(img, (0, fy), (W, fy), _shade(floor_mean, 0.5), max(1, H // 100))
        # Things on the wall: windows (bright), doors (tall, from the floor), pictures.
        for _ in range(int(rng.integers(0, 4))):
            what = rng.random()
            rw = int(rng.uniform(0.08, 0.25) * W)
            x0 = int(rng.uniform(0, max(1, W - rw)))
            if what < 0.3 and fy > 0.2 * H:
                rh = int(rng.uniform(0.5, 0.85) * fy)
                y0, y1 = fy - rh, fy
                col = tuple(float(v) for v in _pick(rng, _FURNITURE) * rng.uniform(0.7, 1.2))
            else:
                rh = int(rng.uniform(0.25, 0.6) * fy)
                y0 = int(rng.uniform(0.05 * fy, max(0.06 * fy, fy - rh - 0.05 * fy)))
                y1 = min(fy - 1, y0 + rh)
                col = tuple(float(v) for v in (rng.uniform(200, 255, 3) if what < 0.65
                                               else rng.uniform(30, 230, 3)))
            if y1 - y0 < 2:
                continue
            cv2.rectangle(img, (x0, y0), (x0 + rw, y1), col, -1)
            cv2.rectangle(img, (x0, y0), (x0 + rw, y1), _shade(col, 0.55), max(1, W // 160))
            if 0.3 <= what < 0.65:                       # window bars
                cv2.line(img, (x0 + rw // 2, y0), (x0 + rw // 2, y1), _shade(col, 0.5),
                         max(1, W // 200))
                cv2.line(img, (x0, (y0 + y1) // 2), (x0 + rw, (y0 + y1) // 2), _shade(col, 0.5),
                         max(1, W // 200))
        # Furniture on the floor: a box with its top seen from above, and a soft shadow.
        for _ in range(int(rng.integers(0, 5))):
            yb = int(rng.uniform(fy + 0.02 * H, fy + (0.6 if self._high else 0.2) * (H - fy)))
            scale = (0.5 + 0.5 * (yb - fy) / max(H - fy, 1)) * (0.6 if self._high else 1.0)
            rw = int(rng.uniform(0.1, 0.35) * W * scale)
            rh = int(rng.uniform(0.1, 0.35) * H * scale)
            x0 = int(rng.uniform(-0.05 * W, W - 0.5 * rw))
            if rw < 2 or rh < 2:
                continue
            col = _pick(rng, _FURNITURE) * rng.uniform(0.6, 1.25) + rng.normal(0, 10, 3)
            col = tuple(float(np.clip(v, 0, 255)) for v in col)
            cv2.ellipse(img, (x0 + rw // 2, yb), (int(rw * 0.65), max(1, int(rh * 0.12))),
                        0, 0, 360, _shade(floor_mean, 0.55), -1, cv2.LINE_AA)
            dy = int(rh * rng.uniform(0.3, 0.8) if self._high else rh * rng.uniform(0.05, 0.3))
            dx = int((vx - (x0 + rw / 2)) * 0.15)
            top = np.array([[x0, yb - rh], [x0 + rw, yb - rh], [x0 + rw + dx, yb - rh - dy],
                            [x0 + dx, yb - rh - dy]], np.int32)
            cv2.rectangle(img, (x0, yb - rh), (x0 + rw, yb), _shade(col, 0.8), -1)
            cv2.fillConvexPoly(img, top, _shade(col, 1.15), cv2.LINE_AA)
            cv2.rectangle(img, (x0, yb - rh), (x0 + rw, yb), _shade(col, 0.5), 1)
        # A pool of light and lens vignetting; the optics soften everything a little.
        f = np.ones((H, W), np.float32)
        if rng.random() < 0.6:
            cx, cy, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.2, 0.6) * W
            f += rng.uniform(0.1, 0.45) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r))
        rr = ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / ((W / 2) ** 2 + (H / 2) ** 2)
        f *= 1.0 - rng.uniform(0.0, 0.45) * rr
        img = img.astype(np.float32) * f[..., None]
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.9))
        grain = rng.normal(0, rng.uniform(1, 4), img.shape)
        return np.clip(img + grain, 0, 255).astype(np.uint8)

    def _clothed_style(self, rng: np.random.Generator, h: float) -> Style:
        """Clothes, skin, hair and shoes from everyday palettes; limbs about 7% of the height
        thick, the body 20% wide. A figure whose shirt and trousers both nearly match the
        background gets a darker or lighter shirt."""
        shirt, trousers, skin, hair, shoes = (
            np.clip(_pick(rng, pal) + rng.normal(0, 12, 3), 0, 255)
            for pal in (_SHIRTS, _TROUSERS, _SKINS, _HAIRS, _SHOES))
        luma = np.array([0.114, 0.587, 0.299])
        if abs(shirt @ luma - self._bg_luma) < 35 and abs(trousers @ luma - self._bg_luma) < 35:
            light_bg = self._bg_luma > 110
            shirt = np.clip(shirt * 0.35 if light_bg else shirt + 110, 0, 255)
        parts = tuple(tuple(int(v) for v in c) for c in (shirt, trousers, skin, hair, shoes))
        return Style(colour=parts[0], far_colour=_shade(parts[0], 0.72),
                     limb=max(2, int(round(0.075 * h))), torso=max(3, int(round(0.2 * h))),
                     parts=parts + (int(rng.random() < 0.6),))

    # ----- construction -------------------------------------------------------------------
    def _make_background(self, rng: np.random.Generator) -> np.ndarray:
        H, W = self.height, self.width
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        a = rng.uniform(0, 2 * math.pi)
        g = xx * math.cos(a) + yy * math.sin(a)
        g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
        c1, c2 = rng.uniform(40, 210, 3), rng.uniform(40, 210, 3)
        img = c1 * (1 - g[..., None]) + c2 * g[..., None]
        self.floor_y = int(rng.uniform(0.45, 0.7) * H)
        c3 = rng.uniform(40, 200, 3)
        depth = (yy[self.floor_y:, :1] - self.floor_y) / max(H - self.floor_y, 1)
        img[self.floor_y:] = c3 * (1.0 - 0.3 * depth[..., None])
        low = rng.normal(0, 1, (H // 16 + 2, W // 16 + 2)).astype(np.float32)
        img += rng.uniform(4, 14) * cv2.resize(low, (W, H), interpolation=cv2.INTER_CUBIC)[..., None]
        img = np.clip(img, 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(1, 5))):
            rw, rh = int(rng.uniform(0.08, 0.3) * W), int(rng.uniform(0.1, 0.35) * H)
            x0 = int(rng.uniform(0, W - rw))
            if rng.random() < 0.5:   # furniture standing on the floor
                y1 = min(H - 1, self.floor_y + int(rng.uniform(0, 0.08) * H))
                y0 = max(0, y1 - rh)
            else:                    # picture or window on the wall
                y0 = int(rng.uniform(0.03 * H, max(0.04 * H, self.floor_y - rh)))
                y1 = min(self.floor_y, y0 + rh)
            col = tuple(int(v) for v in rng.uniform(30, 230, 3))
            cv2.rectangle(img, (x0, y0), (x0 + rw, y1), col, -1)
            cv2.rectangle(img, (x0, y0), (x0 + rw, y1), tuple(int(v * 0.6) for v in col),
                          max(1, W // 200))
        cv2.line(img, (0, self.floor_y), (W, self.floor_y),
                 tuple(int(v * 0.5) for v in c3), max(1, H // 120))
        grain = rng.normal(0, rng.uniform(2, 5), img.shape)
        return np.clip(img + grain, 0, 255).astype(np.uint8)

    def _style(self, rng: np.random.Generator, h: float) -> Style:
        """A colour that stands out from the background, line widths scaled to the figure."""
        if self.variety:
            return self._clothed_style(rng, h)
        base = rng.uniform(30, 255, 3)
        luma = float(base @ np.array([0.114, 0.587, 0.299]))  # BGR
        if self._bg_luma > 128:
            target = max(15.0, self._bg_luma - rng.uniform(70, 130))
        else:
            target = min(240.0, self._bg_luma + rng.uniform(70, 130))
        col = np.clip(base * (target / max(luma, 1.0)), 0, 255)
        if abs(float(col @ np.array([0.114, 0.587, 0.299])) - self._bg_luma) < 50:
            col = np.full(3, target)  # a saturated colour clipped back towards the background
        return Style(colour=tuple(int(v) for v in col),
                     far_colour=tuple(int(v * 0.7) for v in col),
                     limb=max(1, int(round(0.05 * h))), torso=max(2, int(round(0.09 * h))))

    def _size_and_feet(self, rng: np.random.Generator, lo: float, hi: float,
                       max_h: Optional[float] = None) -> tuple[float, float]:
        """A figure height (fraction lo..hi of the frame height) and a feet line that keeps
        its head inside the frame."""
        H = self.height
        h = rng.uniform(lo, hi) * H
        if self.variety:
            h *= self._fig_scale
        if max_h is not None:
            h = min(h, max_h)
        bottom = 0.97 * H
        top = max(self.floor_y + 0.05 * H, h * 0.99 + 0.03 * H)
        if top > bottom:
            h = (bottom - 0.03 * H) / 0.99
            top = bottom
        if not self._high:
            return h, rng.uniform(top, bottom)
        fy = rng.uniform(top, bottom)
        # Seen from high up, the farther from the camera (the higher the feet), the smaller.
        return h * (0.8 + 0.2 * (fy - self.floor_y) / max(H - self.floor_y, 1)), fy

    def _walker(self, rng: np.random.Generator, big: bool) -> _Actor:
        """Someone walking back and forth, or standing with a slight sway."""
        W = self.width
        h, fy = self._size_and_feet(rng, *((0.5, 0.72) if big else (0.3, 0.55)))
        standing = rng.random() < 0.25
        v = 0.0 if standing else rng.uniform(0.3, 0.9) * h
        direction = 1.0 if rng.random() < 0.5 else -1.0
        lo, hi = 0.03 * W + 0.15 * h, 0.97 * W - 0.15 * h
        span = max(hi - lo, 1.0)
        start = rng.uniform(0, 2 * span)
        phase0, sway = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.5)
        poses = []
        for t in self._t:
            u = (start + direction * v * t) % (2 * span)
            x = lo + (u if u < span else 2 * span - u)
            facing = direction * (1.0 if u < span else -1.0)
            if standing:
                s = 0.02 * math.sin(2 * math.pi * sway * t + phase0)
                poses.append(Pose(x, fy, h, direction, s, ((0.1, 0.1), (0.05, 0.15)),
                                  ((0.08, 0.05), (-0.08, 0.05))))
                continue
            ph = 2 * math.pi * v * t / (0.9 * h) + phase0
            a = 0.35 * math.sin(ph)
            poses.append(Pose(
                x, fy, h, facing, facing * 0.04,
                ((-0.35 * math.sin(ph), 0.25), (0.35 * math.sin(ph), 0.25)),
                ((a, 0.1 + 0.4 * max(0.0, -math.cos(ph))),
                 (-a, 0.1 + 0.4 * max(0.0, math.cos(ph))))))
        return _Actor(poses, self._style(rng, h), is_action=False)

    def _pair_layout(self, rng: np.random.Generator, gap_range: tuple[float, float]
                     ) -> tuple[float, float, float, float]:
        """Height, feet line, gap between feet and centre x of two figures facing each other."""
        W = self.width
        gap_frac = rng.uniform(*gap_range)
        h, fy = self._size_and_feet(rng, 0.5, 0.72, max_h=0.45 * W)
        gap = gap_frac * h
        half = gap / 2 + 0.4 * h
        cx = rng.uniform(min(0.04 * W + half, W / 2), max(0.96 * W - half, W / 2))
        return h, fy, gap, cx

    def _fight(self, rng: np.random.Generator) -> list[_Actor]:
        """Two figures trading fast, alternating blows, jerking and recoiling."""
        h, fy, gap, cx0 = self._pair_layout(rng, (0.38, 0.55))
        heights = h * rng.uniform(0.92, 1.05, 2)
        period = rng.uniform(0.22, 0.36)            # seconds per strike
        n = int(self._t[-1] / period) + 3
        first = int(rng.integers(0, 2))
        who = [(k + first) % 2 if rng.random() < 0.8 else int(rng.integers(0, 2)) for k in range(n)]
        arm = rng.integers(0, 2, n)
        style_of = rng.choice(3, n, p=[0.6, 0.25, 0.15])  # punch, overhead, kick
        sway_amp = rng.uniform(0.02, 0.07) * h
        sway_f, sway_ph = rng.uniform(0.4, 1.0), rng.uniform(0, 2 * math.pi)
        jerk_tilt = rng.normal(0, 0.08, (self.frames, 2))
        jerk_x = rng.normal(0, 0.03, (self.frames, 2)) * h
        offset = rng.uniform(0, period)
        poses: list[list[Pose]] = [[], []]
        for i, t in enumerate(self._t):
            k = int((t + offset) / period)
            p = (t + offset) / period - k
            ext = math.sin(math.pi * p)
            cx = cx0 + sway_amp * math.sin(2 * math.pi * sway_f * t + sway_ph)
            bounce = abs(math.sin(2 * math.pi * 2.0 * t))
            for f in (0, 1):
                facing = 1.0 if f == 0 else -1.0
                x = cx - facing * gap / 2 + jerk_x[i, f]
                lean = 0.08 + jerk_tilt[i, f]
                arms = [(0.9, 1.9), (1.0, 2.0)]
                legs = [(0.3, 0.15 + 0.1 * bounce), (-0.25, 0.1 + 0.1 * bounce)]
                if who[k] == f:
                    if style_of[k] == 0:
                        arms[arm[k]] = (0.9 + 0.7 * ext, 1.9 * (1 - ext) + 0.05)
                        lean += 0.15 * ext
                        x += facing * 0.06 * heights[f] * ext
                    elif style_of[k] == 1:
                        arms[arm[k]] = (2.8 - 1.6 * p, 0.2 + 0.4 * p)
                        lean += 0.12 * ext
                    else:
                        legs[0] = (0.3 + 1.0 * ext, 0.7 * (1 - ext))
                        lean -= 0.1 * ext
                else:
                    lean -= 0.25 * ext          # recoil from the blow
                    x -= facing * 0.06 * heights[f] * ext
                poses[f].append(Pose(x, fy, heights[f], facing, facing * lean,
                                     (arms[0], arms[1]), (legs[0], legs[1])))
        return [_Actor(poses[f], self._style(rng, heights[f]), is_action=True) for f in (0, 1)]

    def _talking(self, rng: np.random.Generator) -> list[_Actor]:
        """Hard negative: two people as close as fighters, talking with slow, small gestures."""
        h, fy, gap, cx = self._pair_layout(rng, (0.4, 0.6))
        actors = []
        for f in (0, 1):
            facing = 1.0 if f == 0 else -1.0
            hf = h * rng.uniform(0.92, 1.05)
            period, ph = rng.uniform(1.8, 3.5), rng.uniform(0, 2 * math.pi)
            amp = rng.uniform(0.1, 0.4)
            poses = []
            for t in self._t:
                g = 0.5 - 0.5 * math.cos(2 * math.pi * t / period + ph)
                sway = 0.02 * math.sin(2 * math.pi * 0.25 * t + ph)
                poses.append(Pose(cx - facing * gap / 2, fy, hf, facing, facing * (0.03 + sway),
                                  ((0.25 + amp * g, 0.5 + 0.3 * g), (0.1, 0.2)),
                                  ((0.08, 0.05), (-0.08, 0.05))))
            actors.append(_Actor(poses, self._style(rng, hf), is_action=False))
        return actors

    def _lying_place(self, rng: np.random.Generator, fall_dir: float, h: float) -> float:
        """Feet x that keeps a body lying towards `fall_dir` inside the frame."""
        W = self.width
        if fall_dir > 0:
            lo, hi = 0.04 * W + 0.15 * h, 0.96 * W - 1.05 * h
        else:
            lo, hi = 0.04 * W + 1.05 * h, 0.96 * W - 0.15 * h
        return rng.uniform(min(lo, hi), max(lo, hi))

    def _lying(self, rng: np.random.Generator) -> _Actor:
        """Hard negative: a person lying still on the floor for the whole clip."""
        h, fy = self._size_and_feet(rng, 0.42, 0.62, max_h=0.42 * self.width)
        fy = min(fy, 0.97 * self.height - 0.12 * h)
        fall_dir = 1.0 if rng.random() < 0.5 else -1.0
        facing = 1.0 if rng.random() < 0.5 else -1.0
        x = self._lying_place(rng, fall_dir, h)
        arms, legs = _lying_limbs(rng, -facing * fall_dir)
        pose = Pose(x, fy, h, facing, fall_dir * math.pi / 2, arms, legs)
        return _Actor([pose] * self.frames, self._style(rng, h), is_action=False)

    def _collapse(self, rng: np.random.Generator) -> _Actor:
        """A figure walks or stands, falls over within a fraction of a second, stays down."""
        W = self.width
        h, fy = self._size_and_feet(rng, 0.42, 0.62, max_h=0.42 * W)
        fy = min(fy, 0.97 * self.height - 0.12 * h)
        duration = self.frames / self.fps
        # Standing for a quarter to half of the clip and a fall long enough to span several
        # sampled frames: the fall itself is what tells this apart from someone lying still.
        t_fall = rng.uniform(0.25, 0.5) * duration
        fall_time = rng.uniform(0.5, 0.9)
        fall_dir = 1.0 if rng.random() < 0.5 else -1.0
        facing = fall_dir if rng.random() < 0.6 else -fall_dir   # forwards or backwards
        x_fall = self._lying_place(rng, fall_dir, h)
        walking = rng.random() < 0.6
        v = rng.uniform(0.25, 0.7) * h if walking else 0.0
        # Keep the walk short so the box stays about the person, not their whole path.
        v = min(v, 0.25 * h / max(t_fall, 1e-6))
        x0 = float(np.clip(x_fall - facing * v * t_fall, 0.03 * W + 0.1 * h, 0.97 * W - 0.1 * h))
        v = abs(x_fall - x0) / max(t_fall, 1e-6)
        lying_arms, lying_legs = _lying_limbs(rng, -facing * fall_dir)
        flail = rng.uniform(8, 16)
        phase0 = rng.uniform(0, 2 * math.pi)
        poses = []
        for t in self._t:
            if t < t_fall:
                x = x0 + np.sign(x_fall - x0) * v * t
                ph = 2 * math.pi * v * t / (0.9 * h) + phase0
                a = 0.35 * math.sin(ph) if v > 0 else 0.0
                poses.append(Pose(x, fy, h, facing, facing * 0.04,
                                  ((-a, 0.25), (a, 0.25)),
                                  ((a, 0.1 + 0.4 * max(0.0, -math.cos(ph)) * (v > 0)),
                                   (-a, 0.1 + 0.4 * max(0.0, math.cos(ph)) * (v > 0)))))
            elif t < t_fall + fall_time:
                u = (t - t_fall) / fall_time
                ang = (math.pi / 2) * u * u            # accelerating, like a fall
                arms = ((0.4 + 1.8 * u + 0.3 * math.sin(flail * u), 0.4),
                        (0.3 + 1.0 * u, 0.5 + 0.3 * math.sin(flail * u + 1)))
                knee = 0.9 * math.sin(math.pi * u)
                poses.append(Pose(x_fall, fy, h, facing, fall_dir * ang, arms,
                                  ((0.2 * u, knee), (-0.1 * u, 0.6 * knee))))
            else:
                poses.append(Pose(x_fall, fy, h, facing, fall_dir * math.pi / 2,
                                  lying_arms, lying_legs))
        return _Actor(poses, self._style(rng, h), is_action=True)


def write_video(path: str | Path, scene: Scene) -> None:
    """Encode every frame of `scene` to `path` with the mp4v codec.

    Raises:
        DataError: the writer cannot be opened.
    """
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), scene.fps,
                             (scene.width, scene.height))
    if not writer.isOpened():
        raise DataError(f"{path}: cannot open a video writer (fourcc mp4v)")
    try:
        for i in range(scene.frames):
            writer.write(scene.render(i))
    finally:
        writer.release()


def synth_clips(batch: int, frames: int, size: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Rendered synthetic scenes (fight/collapse/none) as uint8 (B, T, H, W, 3) RGB.

    Real-looking clips rather than noise, so a precision check sees the model's usual inputs.
    """
    import torch

    H, W = int(size[0]), int(size[1])
    out = np.empty((batch, frames, H, W, 3), np.uint8)
    for b in range(batch):
        scene = Scene(KINDS[b % len(KINDS)], seed + b, width=max(W, 64), height=max(H, 48),
                      frames=frames)
        for t in range(frames):
            bgr = cv2.resize(scene.render(t), (W, H), interpolation=cv2.INTER_AREA)
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[b, t])
    return torch.from_numpy(out)

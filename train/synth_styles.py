"""A second synthetic style, "other" (`vigil synth --style other`), for few-shot tests.

Made to be unlike both the default stick scenes and `--variety`, so that a model trained on
those has not seen it: fine-tuning on a few dozen of these clips measures how well the model
adapts to a new look and new motions, not how well it remembers.

  * figures: cartoon capsules with a dark outline (an elliptic body, a big oval head, thick
    round-ended limbs) in flat, saturated colours; figures can crouch (hips sink) and bend;
  * backgrounds: outdoors: a sky (clear, overcast or dusk, with clouds) over grass, asphalt or
    sand, a path towards the horizon, trees and bushes as blobs, far buildings, lamp posts;
  * camera: at about chest height (55-90% of a person's height), so everyone's head is near
    the horizon and size follows depth: main figures 50-80% of the frame height, passers-by
    anywhere between small and near;
  * fight: pushing, shoving and grappling at arm's length: one shoves with both arms, the
    other is thrown back a step (tilting, arms up) and comes back; or both grapple, locked
    and swaying; a scuffle moves the pair around;
  * collapse: fainting backwards (stiff, arms up), or slumping (knees give way, the body
    sinks and bends, then topples sideways), then lying still;
  * none: passers-by (walking with a bob and a wide arm swing, or standing), and the same
    hard negatives as the stick style: someone lying still, a pair talking close together.
Labels mean the same (the union over all frames of the action figures' drawn extents) and
`train.synth_dataset.write_dataset(..., style="other")` writes the same layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .synth import (_FOREARM, _HIP, _NECK, _ONE, _SHIFT, _SHIN, _SHOULDER_DROP, _THIGH, _TORSO,
                    _UPPER_ARM, CLASS_IDS, KINDS, Scene, Style, _Actor, _lying_limbs, _pick,
                    _shade)

_HEAD = 0.1          # head radius as a fraction of the height (bigger than the stick figures')

# Flat, saturated colours (BGR) for bodies, and the outdoor palettes.
_BODIES = ((0, 140, 255), (200, 40, 200), (220, 200, 0), (0, 215, 240), (160, 40, 110),
           (40, 220, 120), (40, 40, 230), (150, 150, 0), (255, 120, 60), (120, 0, 200))
_FACES = ((170, 200, 245), (120, 160, 215), (90, 120, 170), (200, 225, 250))
_OUTLINES = ((20, 20, 20), (60, 20, 20), (20, 20, 70))
_SKIES = (((235, 190, 120), (250, 225, 190)),      # clear: deep blue to pale at the horizon
          ((190, 185, 180), (215, 212, 210)),      # overcast
          ((140, 100, 150), (120, 170, 240)))      # dusk: purple to orange
_GROUNDS = ((60, 150, 70), (70, 120, 50), (95, 95, 100), (140, 185, 205), (80, 130, 110))
_LEAVES = ((40, 110, 40), (30, 80, 30), (50, 130, 80), (40, 90, 60))


@dataclass(frozen=True)
class BlobPose:
    """One capsule figure in one frame: like `synth.Pose`, plus `sink` (0 standing, 1 hips
    almost on the ground: thighs forward, knees bent) and `lean` (torso bent forward at the
    hips, radians; negative: backwards)."""
    x: float
    y: float
    h: float
    facing: float
    tilt: float
    sink: float
    lean: float
    arms: tuple[tuple[float, float], tuple[float, float]]
    legs: tuple[tuple[float, float], tuple[float, float]]


def _blob_joints(p: BlobPose) -> np.ndarray:
    """Pixel coordinates (12, 2), same order as `synth._joints`; arms hang from the torso."""
    f = p.facing
    pts = np.zeros((12, 2))
    pts[0] = (0.0, _HIP * (1 - 0.75 * p.sink))
    up = np.array([f * math.sin(p.lean), math.cos(p.lean)])
    pts[1] = pts[0] + _TORSO * up
    pts[2] = pts[0] + (_TORSO + _NECK + _HEAD) * up
    pts[3] = pts[0] + (_TORSO - _SHOULDER_DROP) * up
    for k, (s, e) in enumerate(p.arms):
        s = s + p.lean
        elbow = pts[3] + _UPPER_ARM * np.array([f * math.sin(s), -math.cos(s)])
        pts[4 + 2 * k] = elbow
        pts[5 + 2 * k] = elbow + _FOREARM * np.array([f * math.sin(s + e), -math.cos(s + e)])
    for k, (a, kn) in enumerate(p.legs):
        a, kn = a + 1.4 * p.sink, kn + 2.6 * p.sink
        knee = pts[0] + _THIGH * np.array([f * math.sin(a), -math.cos(a)])
        pts[8 + 2 * k] = knee
        pts[9 + 2 * k] = knee + _SHIN * np.array([f * math.sin(a - kn), -math.cos(a - kn)])
    c, s = math.cos(p.tilt), math.sin(p.tilt)
    xr = pts[:, 0] * c + pts[:, 1] * s
    yr = -pts[:, 0] * s + pts[:, 1] * c
    return np.stack([p.x + p.h * xr, p.y - p.h * yr], axis=1)


def _draw_capsules(img: np.ndarray, p: BlobPose, style: Style, colour=None) -> None:
    """Paint a capsule figure with a dark outline (in place); `colour` overrides every part."""
    pts = _blob_joints(p)
    P = np.rint(pts * _ONE).astype(np.int64)
    body, limbs, face, outline = style.parts
    h = p.h
    ow = max(1, int(round(0.022 * h)))
    arm_w, leg_w = max(2, int(round(0.085 * h))), max(2, int(round(0.12 * h)))

    def pt(k: int) -> tuple[int, int]:
        return int(P[k, 0]), int(P[k, 1])

    def limb(a: int, b: int, c: int, width: int, col: tuple) -> None:
        for w, cc in ((width + 2 * ow, outline), (width, col)):
            cc = colour or cc
            cv2.line(img, pt(a), pt(b), cc, w, cv2.LINE_AA, _SHIFT)
            cv2.line(img, pt(b), pt(c), cc, w, cv2.LINE_AA, _SHIFT)

    def oval(centre: np.ndarray, a: float, b: float, angle: float, col: tuple) -> None:
        q = np.rint(centre * _ONE).astype(np.int64)
        for extra, cc in ((ow, outline), (0, col)):
            axes = (max(1, int(round((a + extra) * _ONE))), max(1, int(round((b + extra) * _ONE))))
            cv2.ellipse(img, (int(q[0]), int(q[1])), axes, angle, 0, 360, colour or cc, -1,
                        cv2.LINE_AA, _SHIFT)

    far = _shade(limbs, 0.7)
    limb(0, 10, 11, leg_w, far)
    limb(3, 6, 7, arm_w, far)
    d = pts[1] - pts[0]
    ang = math.degrees(math.atan2(d[1], d[0]))
    oval((pts[0] + pts[1]) / 2, float(np.hypot(*d)) / 2 + 0.07 * h, 0.15 * h, ang, body)
    oval(pts[2], 1.05 * _HEAD * h, 0.92 * _HEAD * h, ang, face)
    limb(0, 8, 9, leg_w, limbs)
    limb(3, 4, 5, arm_w, _shade(body, 0.85))


def _smooth(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3 - 2 * u)


class OtherScene(Scene):
    """One clip of the "other" style; same interface and label semantics as `Scene`."""
    style = "other"

    def __init__(self, kind: str, seed: int, width: int = 320, height: int = 240,
                 fps: float = 25, frames: int = 64) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if width < 16 or height < 16 or frames < 1 or fps <= 0:
            raise ValueError(f"bad scene geometry {width}x{height}, {frames} frames at {fps} fps")
        self.kind, self.seed = kind, int(seed)
        self.width, self.height = int(width), int(height)
        self.fps, self.frames = float(fps), int(frames)
        self.class_id = CLASS_IDS.get(kind)
        rng = np.random.default_rng([self.seed, KINDS.index(kind), 0x07E4])
        self._t = np.arange(self.frames) / self.fps
        H = self.height
        self.horizon = rng.uniform(0.25, 0.42) * H
        self.cam = rng.uniform(0.6, 0.9)             # camera height / a person's height
        self._background = self._make_outdoors(rng)
        self._bg_luma = float(cv2.cvtColor(self._background, cv2.COLOR_BGR2GRAY).mean())
        actors: list[_Actor] = []
        self.variant = self.motion = kind
        if kind == "fight":
            actors += self._shoving(rng)
        elif kind == "collapse":
            actors.append(self._slump_or_faint(rng))
        else:
            r = rng.random()
            if r < 0.2:
                self.variant = self.motion = "lying"
                actors.append(self._lying_blob(rng))
            elif r < 0.4:
                self.variant = self.motion = "talking"
                actors += self._chatting(rng)
            else:
                self.variant = self.motion = "walking"
                h, fy = self._place(rng, 0.5, 0.8, 0.5 * self.width)
                actors.append(self._stroller(rng, h, fy))
        front = max(a.poses[0].y for a in actors)
        for _ in range(int(rng.integers(0, 3))):
            # Passers-by: mostly behind the action (feet nearer the horizon: smaller).
            far = rng.random() < 0.85
            lo = self.horizon + 0.06 * H
            fy = rng.uniform(lo, max(lo + 1, front - 0.03 * H)) if far \
                else rng.uniform(min(front, 0.96 * H), 0.97 * H)
            h = min((fy - self.horizon) / self.cam, 0.9 * H)
            d = self._stroller(rng, h, fy)
            d.is_subject = False
            actors.append(d)
        actors.sort(key=lambda a: a.poses[0].y)           # farther first
        for a in actors:
            a.paint = _draw_capsules
        self._actors = actors
        field = rng.normal(0.0, rng.uniform(2.0, 6.0), (H + 8, self.width + 8, 3))
        self._noise_pos = np.clip(field, 0, 255).astype(np.uint8)
        self._noise_neg = np.clip(-field, 0, 255).astype(np.uint8)
        self._noise_offsets = rng.integers(0, 9, size=(self.frames, 2))
        self._action_box = None

    # ----- looks --------------------------------------------------------------------------
    def _make_outdoors(self, rng: np.random.Generator) -> np.ndarray:
        H, W = self.height, self.width
        hz = int(round(self.horizon))
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        top, low = (np.asarray(c, np.float64) for c in _SKIES[int(rng.integers(len(_SKIES)))])
        g = np.clip(yy / max(hz, 1), 0, 1)[..., None]
        img = top * (1 - g) + low * g
        ground = _pick(rng, _GROUNDS) * rng.uniform(0.8, 1.15)
        depth = np.clip((yy - hz) / max(H - hz, 1), 0, 1)[..., None]
        img = np.where((yy >= hz)[..., None], ground * (0.75 + 0.35 * depth), img)
        # Ground texture: fine, strong grain (grass, gravel) fading towards the horizon.
        tex = rng.normal(0, 1, (H, W)).astype(np.float32)
        tex = cv2.GaussianBlur(tex, (0, 0), 0.8) * rng.uniform(8, 20)
        img += (tex[..., None] * (yy >= hz)[..., None] * (0.3 + 0.7 * depth))
        img = np.clip(img, 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(0, 4))):          # clouds
            c = (int(rng.uniform(0, W)), int(rng.uniform(0.05, 0.8) * hz))
            col = tuple(int(v) for v in rng.uniform(225, 255, 3))
            for _ in range(3):
                cv2.ellipse(img, (c[0] + int(rng.uniform(-0.06, 0.06) * W), c[1]),
                            (int(rng.uniform(0.05, 0.12) * W),
                             max(1, int(rng.uniform(0.02, 0.05) * H))), 0, 0, 360, col, -1,
                            cv2.LINE_AA)
        if rng.random() < 0.6:                            # a path towards the horizon
            vx = rng.uniform(0.2, 0.8) * W
            half_far, half_near = rng.uniform(0.01, 0.04) * W, rng.uniform(0.2, 0.45) * W
            xn = vx + rng.uniform(-0.3, 0.3) * W
            poly = np.array([[vx - half_far, hz], [vx + half_far, hz], [xn + half_near, H],
                             [xn - half_near, H]], np.int32)
            cv2.fillConvexPoly(img, poly, tuple(int(v) for v in rng.uniform(110, 200, 3)),
                               cv2.LINE_AA)
        if rng.random() < 0.4:                            # far buildings on the horizon
            x = 0
            while x < W:
                bw, bh = int(rng.uniform(0.08, 0.2) * W), int(rng.uniform(0.05, 0.2) * H)
                col = tuple(int(v) for v in rng.uniform(90, 170) + rng.normal(0, 8, 3))
                cv2.rectangle(img, (x, hz - bh), (x + bw, hz), col, -1)
                x += bw + int(rng.uniform(0, 0.15) * W)
        for _ in range(int(rng.integers(1, 6))):          # trees: trunk and a cluster of blobs
            yb = int(rng.uniform(hz + 0.01 * H, hz + 0.25 * (H - hz)))
            size = (yb - hz + 0.05 * H) * rng.uniform(1.2, 2.2)
            x = int(rng.uniform(0, W))
            trunk = tuple(int(v) for v in np.array((30, 50, 80)) * rng.uniform(0.7, 1.3))
            tw = max(1, int(0.08 * size))
            cv2.rectangle(img, (x - tw // 2, int(yb - 0.55 * size)), (x + tw // 2, yb), trunk, -1)
            leaf = _pick(rng, _LEAVES) * rng.uniform(0.7, 1.2)
            for _ in range(int(rng.integers(3, 7))):
                cx = x + int(rng.uniform(-0.25, 0.25) * size)
                cy = int(yb - 0.55 * size - rng.uniform(0, 0.4) * size)
                r = max(1, int(rng.uniform(0.15, 0.3) * size))
                cv2.circle(img, (cx, cy), r, tuple(int(v) for v in leaf * rng.uniform(0.8, 1.2)),
                           -1, cv2.LINE_AA)
        for _ in range(int(rng.integers(0, 4))):          # bushes along the horizon
            cv2.ellipse(img, (int(rng.uniform(0, W)), hz + int(rng.uniform(0, 0.05) * H)),
                        (int(rng.uniform(0.04, 0.12) * W),
                         max(1, int(rng.uniform(0.02, 0.06) * H))), 0, 180, 360,
                        tuple(int(v) for v in _pick(rng, _LEAVES) * 0.9), -1, cv2.LINE_AA)
        if rng.random() < 0.3:                            # a lamp post
            x, yb = int(rng.uniform(0, W)), int(rng.uniform(hz + 0.05 * H, H))
            ph = int((yb - hz) / self.cam * 1.6)
            cv2.line(img, (x, yb), (x, yb - ph), (40, 40, 40), max(1, W // 160), cv2.LINE_AA)
            cv2.circle(img, (x, yb - ph), max(2, W // 80), (170, 230, 250), -1, cv2.LINE_AA)
        grain = rng.normal(0, rng.uniform(1, 3), img.shape)
        return np.clip(img + grain, 0, 255).astype(np.uint8)

    def _capsule_style(self, rng: np.random.Generator, h: float) -> Style:
        body = tuple(int(v) for v in np.clip(_pick(rng, _BODIES) + rng.normal(0, 10, 3), 0, 255))
        limbs = tuple(int(v) for v in np.clip(_pick(rng, _BODIES) * rng.uniform(0.45, 0.8), 0, 255))
        face = tuple(int(v) for v in _pick(rng, _FACES))
        outline = tuple(int(v) for v in _pick(rng, _OUTLINES))
        return Style(colour=body, far_colour=_shade(body, 0.7), limb=max(2, int(round(0.085 * h))),
                     torso=max(3, int(round(0.3 * h))), parts=(body, limbs, face, outline))

    # ----- placement ----------------------------------------------------------------------
    def _place(self, rng: np.random.Generator, lo: float, hi: float, max_h: float
               ) -> tuple[float, float]:
        """Height and feet line of a main figure: height lo..hi of the frame, feet where the
        camera's perspective puts someone that tall, head inside the frame."""
        H = self.height
        h = min(rng.uniform(lo, hi) * H, max_h,
                (0.97 * H - self.horizon) / self.cam,
                (self.horizon - 0.03 * H) / max(1 - self.cam, 1e-6))
        return h, self.horizon + self.cam * h

    # ----- people -------------------------------------------------------------------------
    def _stroller(self, rng: np.random.Generator, h: float, fy: float) -> _Actor:
        """Walking with a bob and a wide arm swing, or standing and shifting weight."""
        W = self.width
        standing = rng.random() < 0.3
        v = 0.0 if standing else rng.uniform(0.4, 1.1) * h
        direction = 1.0 if rng.random() < 0.5 else -1.0
        lo, hi = 0.03 * W + 0.15 * h, 0.97 * W - 0.15 * h
        span = max(hi - lo, 1.0)
        start, phase0 = rng.uniform(0, 2 * span), rng.uniform(0, 2 * math.pi)
        poses = []
        for t in self._t:
            u = (start + direction * v * t) % (2 * span)
            x = lo + (u if u < span else 2 * span - u)
            facing = direction * (1.0 if u < span else -1.0)
            if standing:
                w = math.sin(2 * math.pi * 0.3 * t + phase0)
                poses.append(BlobPose(x, fy, h, direction, 0.03 * w, 0.02, 0.05,
                                      ((0.15, 0.3), (0.1, 0.3)),
                                      ((0.1 * w, 0.05), (-0.1 * w, 0.05))))
                continue
            ph = 2 * math.pi * v * t / (0.8 * h) + phase0
            a = 0.45 * math.sin(ph)
            poses.append(BlobPose(x, fy, h, facing, 0.0, 0.04 * abs(math.cos(ph)), 0.08,
                                  ((-0.6 * math.sin(ph), 0.4), (0.6 * math.sin(ph), 0.4)),
                                  ((a, 0.15 + 0.5 * max(0.0, -math.cos(ph))),
                                   (-a, 0.15 + 0.5 * max(0.0, math.cos(ph))))))
        return _Actor(poses, self._capsule_style(rng, h), is_action=False)

    def _pair(self, rng: np.random.Generator, gap_range: tuple[float, float], margin: float
              ) -> tuple[float, float, float, float]:
        W = self.width
        h, fy = self._place(rng, 0.5, 0.8, 0.42 * W)
        gap = rng.uniform(*gap_range) * h
        half = gap / 2 + (0.35 + margin) * h
        cx = rng.uniform(min(0.04 * W + half, W / 2), max(0.96 * W - half, W / 2))
        return h, fy, gap, cx

    def _shoving(self, rng: np.random.Generator) -> list[_Actor]:
        """Two people pushing, shoving and grappling: throws back, recoveries, locked sways."""
        h, fy, gap, cx0 = self._pair(rng, (0.3, 0.42), 0.25)
        heights = h * rng.uniform(0.92, 1.06, 2)
        period = rng.uniform(0.5, 0.85)
        n = int(self._t[-1] / period) + 3
        events = rng.choice(3, n, p=[0.38, 0.38, 0.24])   # 0/1: that one shoves; 2: grapple
        throw = rng.uniform(0.15, 0.3, n) * h
        drift = np.cumsum(rng.normal(0, 0.02, n)) * h
        jitter = rng.normal(0, 1, (self.frames, 2, 2))
        offset = rng.uniform(0, period)
        poses: list[list[BlobPose]] = [[], []]
        for i, t in enumerate(self._t):
            k = int((t + offset) / period)
            p = (t + offset) / period - k
            ev = int(events[k])
            cx = cx0 + float(np.clip(drift[k], -0.15 * h, 0.15 * h))
            if ev == 2:
                cx += 0.07 * h * math.sin(4 * math.pi * p)
            for f in (0, 1):
                facing = 1.0 if f == 0 else -1.0
                x = cx - facing * gap / 2 + 0.025 * h * jitter[i, f, 0]
                tilt, lean, sink = 0.0, 0.15, 0.05
                arms = [(1.2, 0.5), (1.3, 0.4)]
                legs = [(0.35, 0.2), (-0.3, 0.15)]
                if ev == 2:                               # locked together, heads down
                    lean, sink = 0.35, 0.12
                    arms = [(1.15, 0.9), (1.25, 0.8)]
                elif ev == f:                             # shoving with both arms
                    push = math.sin(math.pi * min(p / 0.35, 1.0))
                    arms = [(1.2 + 0.35 * push, 0.5 * (1 - push)),
                            (1.3 + 0.25 * push, 0.4 * (1 - push))]
                    lean += 0.25 * push
                    x += facing * 0.06 * h * push
                    legs = [(0.35 + 0.3 * push, 0.2), (-0.3 - 0.2 * push, 0.1)]
                else:                                     # thrown back, then coming back
                    back = _smooth((p - 0.1) / 0.3) * (1 - _smooth((p - 0.5) / 0.5))
                    x -= facing * throw[k] * back
                    tilt = -facing * 0.3 * back
                    lean -= 0.25 * back
                    wave = math.sin(12 * p + f)
                    arms = [(1.2 + 1.2 * back + 0.3 * wave * back, 0.3), (1.3 + 0.9 * back, 0.4)]
                    legs = [(0.35 - 0.5 * back, 0.3 * back), (-0.3 - 0.4 * back, 0.15)]
                tilt += 0.04 * jitter[i, f, 1]
                poses[f].append(BlobPose(x, fy, heights[f], facing, tilt, sink, lean,
                                         (arms[0], arms[1]), (legs[0], legs[1])))
        self.motion = "shove"
        return [_Actor(poses[f], self._capsule_style(rng, heights[f]), is_action=True)
                for f in (0, 1)]

    def _chatting(self, rng: np.random.Generator) -> list[_Actor]:
        """Hard negative: two people close together, nodding and gesturing slowly."""
        h, fy, gap, cx = self._pair(rng, (0.3, 0.5), 0.0)
        actors = []
        for f in (0, 1):
            facing = 1.0 if f == 0 else -1.0
            hf = h * rng.uniform(0.92, 1.06)
            period, ph = rng.uniform(1.6, 3.2), rng.uniform(0, 2 * math.pi)
            amp = rng.uniform(0.2, 0.6)
            poses = []
            for t in self._t:
                g = 0.5 - 0.5 * math.cos(2 * math.pi * t / period + ph)
                nod = 0.04 * math.sin(2 * math.pi * 0.7 * t + ph)
                poses.append(BlobPose(cx - facing * gap / 2, fy, hf, facing, 0.0, 0.02, 0.06 + nod,
                                      ((0.4 + amp * g, 0.9 - 0.4 * g), (0.15, 0.3)),
                                      ((0.08, 0.05), (-0.08, 0.05))))
            actors.append(_Actor(poses, self._capsule_style(rng, hf), is_action=False))
        return actors

    def _lying_pose(self, rng: np.random.Generator, x: float, fy: float, h: float,
                    facing: float, fall_dir: float) -> BlobPose:
        arms, legs = _lying_limbs(rng, -facing * fall_dir)
        return BlobPose(x, fy, h, facing, fall_dir * math.pi / 2, rng.uniform(0.0, 0.25),
                        -facing * fall_dir * rng.uniform(0.0, 0.2), arms, legs)

    def _down_place(self, rng: np.random.Generator) -> tuple[float, float]:
        h, fy = self._place(rng, 0.5, 0.8, 0.55 * self.width)
        return h, min(fy, 0.97 * self.height - 0.17 * h)

    def _lying_blob(self, rng: np.random.Generator) -> _Actor:
        """Hard negative: someone lying still for the whole clip."""
        h, fy = self._down_place(rng)
        fall_dir = 1.0 if rng.random() < 0.5 else -1.0
        facing = 1.0 if rng.random() < 0.5 else -1.0
        pose = self._lying_pose(rng, self._lying_place(rng, fall_dir, h), fy, h, facing, fall_dir)
        return _Actor([pose] * self.frames, self._capsule_style(rng, h), is_action=False)

    def _slump_or_faint(self, rng: np.random.Generator) -> _Actor:
        """Stands or strolls a little, then faints backwards or slumps and topples; stays down."""
        W = self.width
        h, fy = self._down_place(rng)
        duration = self.frames / self.fps
        t_fall = rng.uniform(0.2, 0.45) * duration
        faint = rng.random() < 0.5
        self.motion = "faint" if faint else "slump"
        facing = 1.0 if rng.random() < 0.5 else -1.0
        fall_dir = -facing if faint else (1.0 if rng.random() < 0.5 else -1.0)
        x_fall = self._lying_place(rng, fall_dir, h)
        v = rng.uniform(0.2, 0.5) * h if rng.random() < 0.5 else 0.0
        v = min(v, 0.2 * h / max(t_fall, 1e-6))
        x0 = float(np.clip(x_fall - facing * v * t_fall, 0.03 * W + 0.1 * h, 0.97 * W - 0.1 * h))
        v = abs(x_fall - x0) / max(t_fall, 1e-6)
        down = self._lying_pose(rng, x_fall, fy, h, facing, fall_dir)
        sink_time, topple = rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.6)
        fall_time = rng.uniform(0.45, 0.75) if faint else sink_time + topple
        # Down before the clip ends, lying for at least a sixth of it.
        squeeze = min(1.0, max(0.83 * duration - t_fall, 0.2) / fall_time)
        fall_time, sink_time, topple = fall_time * squeeze, sink_time * squeeze, topple * squeeze
        phase0 = rng.uniform(0, 2 * math.pi)
        poses = []
        for t in self._t:
            if t < t_fall:
                x = x0 + np.sign(x_fall - x0) * v * t
                ph = 2 * math.pi * v * t / (0.8 * h) + phase0
                a = 0.4 * math.sin(ph) if v > 0 else 0.0
                poses.append(BlobPose(x, fy, h, facing, 0.0, 0.02, 0.06,
                                      ((-a, 0.35), (a, 0.35)),
                                      ((a, 0.15 + 0.4 * max(0.0, -math.cos(ph)) * (v > 0)),
                                       (-a, 0.15 + 0.4 * max(0.0, math.cos(ph)) * (v > 0)))))
                continue
            u = (t - t_fall) / fall_time
            if u >= 1:
                poses.append(down)
            elif faint:                                   # stiff, backwards, arms flung up
                buckle = 0.15 * math.sin(math.pi * min(u / 0.4, 1.0))
                poses.append(BlobPose(x_fall, fy, h, facing, fall_dir * (math.pi / 2) * u * u,
                                      buckle, -0.25 * u,
                                      ((0.5 + 2.0 * u, 0.3), (0.3 + 1.6 * u, 0.5)),
                                      ((0.1 * u, 0.2 * u), (-0.05, 0.1))))
            else:                                         # knees give way, sink, bend, topple
                s_t = (t - t_fall) / sink_time
                sink = 0.75 * _smooth(s_t)
                bend = 0.6 * _smooth(s_t)
                tp = max(0.0, (t - t_fall - sink_time) / topple)
                ang = (math.pi / 2) * tp * tp
                sink = sink * (1 - tp) + down.sink * tp
                bend = bend * (1 - tp) + down.lean * tp
                sway = 0.05 * math.sin(9 * s_t)
                poses.append(BlobPose(x_fall, fy, h, facing, fall_dir * ang + sway * (1 - tp),
                                      sink, bend, ((0.05 + 0.5 * tp, 0.1), (0.1, 0.15)),
                                      ((0.05, 0.1), (-0.05, 0.1))))
        return _Actor(poses, self._capsule_style(rng, h), is_action=True)

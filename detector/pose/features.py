"""Fall features of one person over one window: what a fall does to a body.

A fall is a body going from upright to low and horizontal, fast, and staying there. These
numbers say that and nothing about the room, so a model trained on them in one room has a chance
in another (the pixel models learned the room: issue 24). Measured in pixels of the frame the
pose was found in, so that angles are true angles whatever the aspect; lengths are in units of
the person's own size (the median diagonal of their landmarks' box over the window), so that a
near and a far person give the same numbers; speeds are per second of real time, so the frame
rate does not change them.

Per frame: torso angle from the vertical (0 upright, pi/2 horizontal, from mid-hip to
mid-shoulder), the same angle in BlazePose's metric 3D landmarks (less fooled by a body seen
end-on), hip, shoulder and head height, the landmarks' box (width / height, height), their
vertical extent and mean visibility. Per window: their values in the first and last third,
the change, extremes and the fastest changes between consecutive samples, and the share of
samples where a person was seen. `FEATURE_NAMES` lists them in order.

A window where the person was seen in fewer than `MIN_SEEN` samples has no features: nobody,
no fall (`window_features` returns None and the collapse model scores it 0).
"""
from __future__ import annotations

import warnings

import numpy as np

from .sequence import PoseSequence

SHOULDERS, HIPS, KNEES, ANKLES = (11, 12), (23, 24), (25, 26), (27, 28)
NOSE = 0
# A landmark counts as visible from this visibility on (MediaPipe's drawing default).
VISIBLE = 0.5
# Fewer samples with a person than this in a window: no features, score 0.
MIN_SEEN = 3

_PER_FRAME = ("torso_angle", "world_angle", "hip_y", "shoulder_y", "head_y", "aspect",
              "box_h", "extent", "visibility")
FEATURE_NAMES: tuple[str, ...] = (
    ("seen", "seen_last")
    + tuple(f"{name}_{part}" for name in ("torso_angle", "world_angle", "aspect", "box_h",
                                          "extent", "visibility")
            for part in ("first", "last", "change"))
    + ("torso_angle_max", "world_angle_max", "aspect_max",
       "hip_drop", "shoulder_drop", "head_drop", "head_below_hip_last",
       "hip_speed_max", "head_speed_max", "shoulder_speed_max", "angle_speed_max",
       "world_angle_speed_max", "hip_drop_max", "head_drop_max")
)
NUM_FEATURES = len(FEATURE_NAMES)


def _angle_from_vertical(vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Angle (radians, 0..pi) between (vx, vy) and 'up' (0, -1) with y pointing down."""
    return np.arctan2(np.abs(vx), -vy)


def frame_measures(seq: PoseSequence) -> dict[str, np.ndarray]:
    """The per-frame measures of `seq`, each float (N,) (NaN where nobody was seen).

    Positions are in pixels of `seq.frame_size`; `hip_y` etc. grow downwards.
    """
    w, h = seq.frame_size
    pts = seq.points
    xy = pts[..., :2] * np.array([w, h], np.float32)               # (N, 33, 2) pixels
    vis = pts[..., 3]
    sh = xy[:, SHOULDERS].mean(1)
    hp = xy[:, HIPS].mean(1)
    torso = sh - hp
    world = seq.world
    wtorso = world[:, SHOULDERS].mean(1) - world[:, HIPS].mean(1)
    seen_pts = np.where((vis >= VISIBLE)[..., None], xy, np.nan)
    # a person with fewer than 4 visible landmarks: their box from all landmarks
    few = (vis >= VISIBLE).sum(1) < 4
    seen_pts[few] = xy[few]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # all-NaN rows: nobody in that frame
        x1, y1 = np.nanmin(seen_pts[..., 0], 1), np.nanmin(seen_pts[..., 1], 1)
        x2, y2 = np.nanmax(seen_pts[..., 0], 1), np.nanmax(seen_pts[..., 1], 1)
        bw, bh = x2 - x1, y2 - y1
        return {
            "torso_angle": _angle_from_vertical(torso[:, 0], torso[:, 1]),
            "world_angle": _angle_from_vertical(wtorso[:, 0], wtorso[:, 1]),
            "hip_y": hp[:, 1], "shoulder_y": sh[:, 1], "head_y": xy[:, NOSE, 1],
            "aspect": np.log(np.maximum(bw, 1.0) / np.maximum(bh, 1.0)),
            "box_h": bh, "extent": y2 - y1, "diag": np.hypot(bw, bh),
            "visibility": np.nanmean(vis, 1),
        }


def _thirds(v: np.ndarray) -> tuple[float, float]:
    """Mean of the first and of the last third of the finite values (in time order)."""
    f = v[np.isfinite(v)]
    k = max(1, len(f) // 3)
    return float(f[:k].mean()), float(f[-k:].mean())


def _max_rate(v: np.ndarray, t: np.ndarray, sign: float = 1.0) -> float:
    """The largest sign * dv/dt between consecutive finite samples (0 when there are none)."""
    ok = np.isfinite(v)
    if ok.sum() < 2:
        return 0.0
    dv, dt = np.diff(v[ok]), np.diff(t[ok])
    rates = sign * dv / np.maximum(dt, 1e-3)
    return float(max(rates.max(), 0.0))


def window_features(seq: PoseSequence, t_end: float, window_s: float) -> np.ndarray | None:
    """Fall features of the window (t_end - window_s, t_end] of `seq`.

    Args:
        seq: the stream's pose sequence (it may hold more than the window).
        t_end: the window's last instant (seconds, `seq.t`'s clock); window_s: its length.
    Returns:
        float32 (NUM_FEATURES,) in `FEATURE_NAMES` order, or None when a person was seen in
        fewer than `MIN_SEEN` of the window's samples.
    """
    win = seq.between(t_end - window_s, t_end)
    return features_of(win)


def features_of(win: PoseSequence) -> np.ndarray | None:
    """`window_features` of a sequence that is exactly the window."""
    seen = win.seen
    if seen.sum() < MIN_SEEN:
        return None
    m = frame_measures(win)
    t = win.t
    size = float(np.nanmedian(m["diag"][seen]))
    size = max(size, 1.0)
    for key in ("hip_y", "shoulder_y", "head_y", "box_h", "extent"):
        m[key] = m[key] / size
    out: dict[str, float] = {"seen": float(seen.mean()),
                             "seen_last": float(seen[-max(1, len(seen) // 3):].mean())}
    for name in ("torso_angle", "world_angle", "aspect", "box_h", "extent", "visibility"):
        first, last = _thirds(m[name])
        out[f"{name}_first"], out[f"{name}_last"], out[f"{name}_change"] = first, last, last - first
    for name in ("torso_angle", "world_angle", "aspect"):
        out[f"{name}_max"] = float(np.nanmax(m[name]))
    for name, key in (("hip_drop", "hip_y"), ("shoulder_drop", "shoulder_y"),
                      ("head_drop", "head_y")):
        first, last = _thirds(m[key])
        out[name] = last - first                           # > 0: went down in the frame
    head_last, hip_last = _thirds(m["head_y"])[1], _thirds(m["hip_y"])[1]
    out["head_below_hip_last"] = head_last - hip_last      # > 0: head lower than the hips
    out["hip_speed_max"] = _max_rate(m["hip_y"], t)
    out["head_speed_max"] = _max_rate(m["head_y"], t)
    out["shoulder_speed_max"] = _max_rate(m["shoulder_y"], t)
    out["angle_speed_max"] = _max_rate(m["torso_angle"], t)
    out["world_angle_speed_max"] = _max_rate(m["world_angle"], t)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hip = m["hip_y"][np.isfinite(m["hip_y"])]
        head = m["head_y"][np.isfinite(m["head_y"])]
    # the largest fall of the hips / head from any earlier sample to any later one
    out["hip_drop_max"] = float(max(0.0, (hip - np.minimum.accumulate(hip)).max()))
    out["head_drop_max"] = float(max(0.0, (head - np.minimum.accumulate(head)).max()))
    vec = np.array([out[name] for name in FEATURE_NAMES], np.float32)
    return np.nan_to_num(vec, nan=0.0, posinf=0.0, neginf=0.0)

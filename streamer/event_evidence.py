"""An event's evidence, assembled from its camera's display ring and written by
`streamer.evidence.EvidenceWriter`: at `start` the pre-roll is copied and the snapshot (the
window's last frame, with the box) written; at `end` the clip (pre-roll + every frame since the
start still in the ring) is written. The alert names the files (`snapshot`, `clip`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import EvidenceConfig
from .evidence import EvidenceWriter
from .ringbuffer import FramesUnavailableError, RingBuffer


@dataclass
class _OpenEvidence:
    """What an open event's clip needs at its end: the pre-roll copied at its start."""
    camera: str
    start_seq: int
    pre_roll: Optional[np.ndarray]           # (N, H, W, 3) uint8 RGB, or None
    fps: float
    when: float


class EventEvidence:
    """The evidence of open events, between their `start` and `end` (event loop thread only).

    Args:
        writer: where snapshots and clips are written (its queue, retention and limits).
    """

    def __init__(self, writer: EvidenceWriter) -> None:
        self.writer = writer
        self._open: dict[str, _OpenEvidence] = {}

    def attach(self, msg: dict, ring: Optional[RingBuffer], fps: Optional[float],
               cfg: EvidenceConfig) -> None:
        """Write the evidence of one alert and name it in `msg` (`snapshot` at a `start`, `clip`
        at an `end`); `update`s have none.

        Args:
            msg: the alert, before the journal finalises it (`_end_seq`, `_t_end_wall` set).
            ring: the camera's display ring, None when the camera is gone.
            fps: the camera's frame rate (None when it is gone: 15 is assumed).
            cfg: the `evidence:` section (snapshot, clip, pre_roll_s).
        """
        ev = self.writer
        camera, event_id = msg["camera"], msg["event_id"]
        if msg["type"] == "start":
            end_seq = int(msg.get("_end_seq", -1))
            when = float(msg.get("_t_end_wall", time.time()))
            fps = 15.0 if fps is None else fps
            pre = None
            if ring is not None:
                pre_n = int(math.ceil(cfg.pre_roll_s * fps)) if cfg.clip else 0
                lo = max(ring.oldest, end_seq - pre_n)
                try:
                    pre, _, _ = ring.gather(np.arange(lo, end_seq + 1))
                except FramesUnavailableError:
                    latest = ring.latest()
                    pre = latest[1][None] if latest is not None else None
            if cfg.snapshot and pre is not None and len(pre):
                msg["snapshot"] = ev.snapshot(camera, event_id, pre[-1], msg["box"], msg["label"],
                                              float(msg["score"]), when=when)
            self._open[event_id] = _OpenEvidence(
                camera, end_seq, pre if cfg.clip else None, fps, when)
        elif msg["type"] == "end":
            opened = self._open.pop(event_id, None)
            if opened is None or not cfg.clip:
                return
            frames = [] if opened.pre_roll is None else [opened.pre_roll]
            if ring is not None:
                end_seq = int(msg.get("_end_seq", ring.count - 1))
                lo = max(ring.oldest, opened.start_seq + 1)
                if end_seq >= lo:
                    try:
                        tail, _, _ = ring.gather(np.arange(lo, end_seq + 1))
                        frames.append(tail)
                    except FramesUnavailableError:
                        pass
            if frames:
                clip = frames[0] if len(frames) == 1 else concat_frames(frames)
                msg["clip"] = ev.clip(camera, event_id, clip, opened.fps, when=opened.when)


def concat_frames(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate frame arrays whose sizes may differ (a resolution change mid-event)."""
    shape = parts[0].shape[1:]
    if all(p.shape[1:] == shape for p in parts):
        return np.concatenate(parts)
    import cv2
    h, w = shape[:2]
    return np.stack([f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h))
                     for p in parts for f in p])

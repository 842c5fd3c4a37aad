"""One running camera: its capture thread (and through it its rings), window spec and metrics hooks.

With `accel.capture: processes` the capture runs in a process of its own
(`streamer/accel/capture_process.py`), behind the same interface, and the rings are
`SharedRingBuffer`s.

The daemon holds a dict name -> `CameraRuntime`, replaced (never mutated) on every change, so the
worker thread and the scheduler read a consistent snapshot without a lock. `window` (the
`scheduler.CameraWindow`, stride included) is set by the capture thread when the source first
opens and its real fps is known; until then the camera is not scheduled.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

from .accel.capture_process import CaptureProcess
from .accel.shared_ring import SharedRingBuffer
from .capture import CaptureThread
from .config import CameraConfig, EvidenceConfig
from .metrics import VigilMetrics
from .ringbuffer import RingBuffer
from .scheduler import CameraWindow
from .windows import required_capacity, window_span

from detector.pose.sequence import POSE_MAX_WIDTH

log = logging.getLogger(__name__)

# Evidence frames are kept at most this wide (the camera's aspect): readable, and ~0.4 MB a frame.
# The pose path reads the same frames, and its model was trained on frames this wide (480).
EVIDENCE_MAX_WIDTH = POSE_MAX_WIDTH
# Seconds of an event kept for its clip after the start (plus the pre-roll copied at the start):
# a clip shows the pre-roll, then the last CLIP_TAIL_S seconds before the end.
CLIP_TAIL_S = 6.0
# Extra ring time so a due window or a snapshot frame is still there when the worker or the
# event loop gets to it (batching delay plus one batch's inference on a slow CPU).
RING_SLACK_S = 2.0
# The pose path reads only the newest frame of the display ring; this much keeps it safe from
# the capture thread's next writes (seconds).
POSE_RING_S = 2.0


@dataclass
class CameraRuntime:
    """A running camera.

    Attributes:
        cfg: the camera's `CameraConfig` (settings resolved).
        thread: its `CaptureThread` (anything with `up`, `fps`, `ring`, `display_ring`,
            `reconnects`, `last_frame_age()`, `stuck()`, `start()`, `stop(timeout)`).
        clip_seconds: time a window spans (None: T consecutive frames).
        metrics: where its series live (None: no metrics, e.g. unit tests).
        labels: the model's class names (its per-class series).
        reported_skipped: skipped windows already counted in metrics (event loop's bookkeeping).
        window: how its windows are taken; None until the source first opens.
    """
    cfg: CameraConfig
    thread: Any
    clip_seconds: Optional[float]
    metrics: Optional[VigilMetrics] = None
    labels: tuple[str, ...] = ()
    reported_skipped: int = 0
    window: Optional[CameraWindow] = None

    @classmethod
    def create(cls, cfg: CameraConfig, *, frames: int, size: tuple[int, int],
               clip_seconds: Optional[float], metrics: VigilMetrics, labels: tuple[str, ...],
               evidence: EvidenceConfig, keep_evidence: bool,
               decode_threads: int, pose: bool = False,
               capture: str = "threads") -> "CameraRuntime":
        """Build a camera's runtime and its capture thread (not started).

        Args:
            cfg: the camera.
            frames, size: the model's T and (H, W): windows and the model-size ring.
            clip_seconds: time a window spans (None: `frames` consecutive frames).
            metrics: the daemon's metrics (the capture hooks count frames, drops, reconnects).
            labels: the model's class names.
            evidence: the evidence settings (pre-roll, clip).
            keep_evidence: evidence is written: a display-size ring is kept for snapshots and
                clips (else the model ring also holds the pre-roll).
            decode_threads: FFmpeg decoding threads for this camera.
            pose: the pose path watches this camera: it reads the display-size ring, which is
                then kept even without evidence (`POSE_RING_S` at least).
            capture: `threads` (a `CaptureThread`) or `processes` (a `CaptureProcess`), the
                `accel.capture` switch.
        """
        s = cfg.settings
        display_seconds = 0.0
        pre_roll_s = 0.0 if keep_evidence else evidence.pre_roll_s
        if keep_evidence:
            # A window's span, then pre-roll + clip tail for the evidence, plus slack.
            span_s = clip_seconds if clip_seconds is not None else frames / (s.fps or 15.0)
            tail_s = evidence.pre_roll_s + CLIP_TAIL_S if evidence.clip else 0.0
            display_seconds = span_s + tail_s + RING_SLACK_S
        if pose:
            display_seconds = max(display_seconds, POSE_RING_S)
        rt = cls(cfg, None, clip_seconds, metrics, tuple(labels))
        m = metrics

        def ring_factory(fps: float, lock: Any = None) -> RingBuffer:
            # Called once by the capture thread when the source first opens, with its real fps
            # (by a capture process's monitor thread, with the lock the process shares).
            capacity = required_capacity(fps, clip_seconds, frames, pre_roll_s=pre_roll_s,
                                         slack_s=RING_SLACK_S)
            ring = (RingBuffer(capacity, size[0], size[1]) if lock is None
                    else SharedRingBuffer(capacity, size[0], size[1], lock=lock))
            rt.window = CameraWindow(fps=fps, clip_seconds=clip_seconds, frames=frames,
                                     stride=s.stride)   # the scheduler reads it from the snapshot
            log.info("camera %s: %.1f fps, window of %d frames over %d, ring of %d frames",
                     cfg.name, fps, frames, window_span(fps, clip_seconds, frames), capacity)
            return ring

        kind: Any = CaptureThread
        extra: dict[str, Any] = {}
        if capture == "processes":
            kind, extra = CaptureProcess, {"secrets": cfg.secrets}
        rt.thread = kind(
            cfg.name, cfg.url, settings=s, ring_factory=ring_factory,
            on_state=lambda name, up: m.camera_up.labels(camera=name).set(1 if up else 0),
            on_frame=lambda name: m.frames.labels(camera=name).inc(),
            on_drop=lambda name: m.frames_dropped.labels(camera=name).inc(),
            on_reconnect=lambda name: m.camera_reconnects.labels(camera=name).inc(),
            display_max_width=EVIDENCE_MAX_WIDTH if display_seconds > 0 else 0,
            display_seconds=display_seconds, decode_threads=decode_threads, mask=cfg.mask,
            **extra)
        return rt

    # ---------------------------------------------------------------- views
    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def ring(self) -> Optional[RingBuffer]:
        """The model-size ring (None until the source first opens)."""
        return self.thread.ring

    @property
    def display_ring(self) -> Optional[RingBuffer]:
        """The evidence ring (None without evidence or before the first frame)."""
        return self.thread.display_ring

    @property
    def fps(self) -> float:
        return self.thread.fps

    @property
    def up(self) -> bool:
        return bool(self.thread.up)

    def last_frame_mono(self) -> Optional[float]:
        """Monotonic time of the last good frame, or None before the first."""
        age = self.thread.last_frame_age()
        return None if math.isinf(age) else time.monotonic() - age

    def state(self) -> dict:
        """{"up", "last_frame_age_s", "reconnects", "fps"} for heartbeats."""
        age = self.thread.last_frame_age()
        return {"up": bool(self.thread.up),
                "last_frame_age_s": None if math.isinf(age) else round(age, 2),
                "reconnects": int(self.thread.reconnects),
                "fps": round(float(self.thread.fps), 2)}

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Create its metric series, then start the capture thread."""
        if self.metrics is not None:
            self.metrics.add_camera(self.name, self.labels)
            self.metrics.track_frame_age(self.name, self.last_frame_mono)
        self.thread.start()
        log.info("camera %s: started (%s)", self.name, self.cfg.masked_url)

    def stop(self, timeout: Optional[float]) -> bool:
        """Ask the capture thread to end; True when it ended within `timeout` (False: stuck in
        native code, abandoned: it is a daemon thread)."""
        return self.thread.stop(timeout)

    def forget_metrics(self) -> None:
        """Drop its metric series (a camera removed for good)."""
        if self.metrics is not None:
            self.metrics.remove_camera(self.name, self.labels)

"""The scheduling policy: which camera windows are due, and when a batch goes to the model.

`Scheduler` (pure, no threads, no clock of its own): given each camera's frame counter, decides
which cameras are due, keeps only each camera's NEWEST due window (an older one that was not
taken in time is superseded and counted as skipped, never queued), and releases a batch when it
is full or the oldest pending window has waited `max_wait_ms`. `streamer.worker.WorkerThread`
polls it.

`BatchPolicy` is the one object holding the batching rules both sides follow: `max_batch` (the
scheduler releases at most that many windows, the worker sizes its host buffer for it),
`max_wait_ms` (the scheduler's) and the out-of-memory split (the worker's: halve the batch, and
send at most that many windows per device call from then on).

The scheduler follows the daemon's camera snapshot: given a callable returning camera name ->
`CameraWindow` (None while the camera has not opened yet), each `update` starts, restarts (a new
`CameraWindow` object) or stops scheduling cameras to match it. Nothing is queued between the
threads; a static mapping plus `add_camera`/`remove_camera` is the unit tests' way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Union

import numpy as np

from .windows import DueTracker, window_seqs, window_span


@dataclass
class BatchPolicy:
    """How windows are batched, for the scheduler and the worker alike.

    Args:
        max_batch: windows per batch at most (the config's `model.max_batch`).
        max_wait_ms: how long the oldest pending window may wait for the batch to fill
            (`model.max_wait_ms`).
    Attributes:
        limit: most windows sent to the device in one call; starts at `max_batch` and is lowered
            by `after_oom` (the scheduler still releases up to `max_batch`; the worker sends them
            in chunks of `limit`).
    """
    max_batch: int = 8
    max_wait_ms: float = 50.0
    limit: int = field(init=False)

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self.max_batch = int(self.max_batch)
        self.limit = self.max_batch

    @property
    def max_wait_s(self) -> float:
        """`max_wait_ms` in seconds (negative = 0)."""
        return max(0.0, float(self.max_wait_ms)) / 1000.0

    def after_oom(self, size: int) -> Optional[int]:
        """The device ran out of memory on a batch of `size`: how many windows the first half
        gets (the rest the second), `limit` lowered to it; None for a single window (dropped)."""
        if size <= 1:
            return None
        half = (size + 1) // 2
        self.limit = min(self.limit, half)
        return half


@dataclass
class CameraWindow:
    """How one camera's windows are taken.

    Attributes:
        fps: the camera's frame rate (the scheduler's `set_fps` updates it once the stream says).
        clip_seconds: time a window spans (the training clips'); None = T consecutive frames.
        frames: T, frames per window.
        stride: frames between two windows.
    """
    fps: float
    clip_seconds: Optional[float]
    frames: int
    stride: int


@dataclass(frozen=True)
class DueWindow:
    """A window the scheduler released for inference.

    Attributes:
        camera: camera name.
        seqs: (T,) int64 frame sequence numbers to gather, ending at `end_seq`.
        end_seq: newest frame of the window (the camera's newest frame when released).
        due_since: scheduler time at which the camera became due for it.
    """
    camera: str
    seqs: np.ndarray
    end_seq: int
    due_since: float


@dataclass
class _Pending:
    due_since: float


class Scheduler:
    """Decides which windows run, newest-only per camera, batched across cameras.

    Args:
        cameras: camera name -> `CameraWindow`, or a callable returning that mapping (the
            daemon's camera snapshot, read at each `update`; a None spec = not scheduled yet).
        policy: the `BatchPolicy` (`max_batch`, `max_wait_ms`).
    Attributes:
        skipped: camera -> due windows superseded before the worker took them (exact).
        released: camera -> windows released for inference.
    """

    def __init__(self, cameras: Union[Mapping[str, CameraWindow],
                                      Callable[[], Mapping[str, Optional[CameraWindow]]]],
                 policy: BatchPolicy) -> None:
        self.policy = policy
        self._follow = cameras if callable(cameras) else None
        self._cams: dict[str, CameraWindow] = {}
        self._due: dict[str, DueTracker] = {}
        self._pending: dict[str, _Pending] = {}
        self._counts: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.released: dict[str, int] = {}
        if self._follow is None:
            for name, spec in cameras.items():
                self.add_camera(name, spec)

    @property
    def max_batch(self) -> int:
        return self.policy.max_batch

    @property
    def max_wait_s(self) -> float:
        return self.policy.max_wait_s

    def sync(self, cameras: Mapping[str, Optional[CameraWindow]]) -> None:
        """Match the scheduled cameras to a snapshot: a camera missing (or None) is removed, one
        whose `CameraWindow` is a new object is (re)started with it, the others are untouched."""
        for name in [n for n in self._cams if cameras.get(n) is None]:
            self.remove_camera(name)
        for name, spec in cameras.items():
            if spec is not None and self._cams.get(name) is not spec:
                self.add_camera(name, spec)

    def add_camera(self, name: str, spec: CameraWindow) -> None:
        """Start scheduling a camera (or reset it with a new spec)."""
        self._cams[name] = spec
        self._due[name] = DueTracker(spec.stride, window_span(spec.fps, spec.clip_seconds,
                                                              spec.frames))
        self._pending.pop(name, None)
        self._counts[name] = 0
        self.skipped.setdefault(name, 0)
        self.released.setdefault(name, 0)

    def remove_camera(self, name: str) -> None:
        """Stop scheduling a camera; a pending window of it is dropped (not counted)."""
        self._cams.pop(name, None)
        self._due.pop(name, None)
        self._pending.pop(name, None)
        self._counts.pop(name, None)

    def set_fps(self, name: str, fps: float) -> None:
        """Update a camera's frame rate (e.g. once the stream reports it)."""
        if fps > 0 and name in self._cams:
            self._cams[name].fps = float(fps)

    def spec(self, name: str) -> Optional[CameraWindow]:
        """The camera's window settings, or None when it is not scheduled."""
        return self._cams.get(name)

    @property
    def pending(self) -> int:
        """Windows due and not yet released (at most one per camera: no backlog)."""
        return len(self._pending)

    def update(self, now: float, counts: Mapping[str, int]) -> None:
        """Account for new frames.

        Args:
            now: current time (any monotonic clock, the same for every call).
            counts: camera -> frames written so far (missing cameras are left as they are).
        """
        if self._follow is not None:
            self.sync(self._follow())
        for name, count in counts.items():
            tracker = self._due.get(name)
            if tracker is None:
                continue
            self._counts[name] = int(count)
            crossed = tracker.poll(int(count))
            if not crossed:
                continue
            superseded = crossed - 1 + (1 if name in self._pending else 0)
            self.skipped[name] += superseded
            # The window's age is measured from the newest due point: the older ones are gone.
            self._pending[name] = _Pending(due_since=now)

    def next_deadline(self) -> Optional[float]:
        """Time at which the oldest pending window must be sent, or None when nothing is pending."""
        if not self._pending:
            return None
        return min(p.due_since for p in self._pending.values()) + self.max_wait_s

    def poll(self, now: float, counts: Mapping[str, int]) -> list[DueWindow]:
        """Update with the cameras' counters and release a batch when it is time.

        A batch is released when `max_batch` windows are pending or the oldest pending one has
        waited `max_wait_ms`; it holds up to `max_batch` windows, oldest first. Each window ends
        at its camera's newest frame at release time (freshest data, lowest latency).

        Args:
            now: current time (same clock as `update`).
            counts: camera -> frames written so far (a camera left out keeps its last count).
        Returns:
            the windows to infer now (possibly empty).
        """
        self.update(now, counts)
        if not self._pending:
            return []
        deadline = self.next_deadline()
        if len(self._pending) < self.max_batch and deadline is not None and now < deadline:
            return []
        order = sorted(self._pending.items(), key=lambda kv: kv[1].due_since)[: self.max_batch]
        batch = []
        for name, pend in order:
            del self._pending[name]
            spec = self._cams[name]
            end_seq = self._counts[name] - 1
            seqs = window_seqs(end_seq, spec.fps, spec.clip_seconds, spec.frames)
            if seqs is None:      # fps changed to a longer span than the frames held: wait
                continue
            self.released[name] += 1
            batch.append(DueWindow(name, seqs, end_seq, pend.due_since))
        return batch



"""The scheduling policy: which camera windows are due, and when a batch goes to the model.

`Scheduler` (pure, no threads, no clock of its own): given each camera's frame counter, decides
which cameras are due, keeps only each camera's NEWEST due window (an older one that was not
taken in time is superseded and counted as skipped, never queued), and releases a batch when it
is full or the oldest pending window has waited `max_wait_ms`. `streamer.worker.WorkerThread`
polls it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from .windows import DueTracker, window_seqs, window_span

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
        cameras: camera name -> `CameraWindow`.
        max_batch: windows per batch at most.
        max_wait_ms: how long the oldest pending window may wait for the batch to fill.
    Attributes:
        skipped: camera -> due windows superseded before the worker took them (exact).
        released: camera -> windows released for inference.
    """

    def __init__(self, cameras: Mapping[str, CameraWindow], max_batch: int,
                 max_wait_ms: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = int(max_batch)
        self.max_wait_s = max(0.0, float(max_wait_ms)) / 1000.0
        self._cams: dict[str, CameraWindow] = {}
        self._due: dict[str, DueTracker] = {}
        self._pending: dict[str, _Pending] = {}
        self._counts: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.released: dict[str, int] = {}
        for name, spec in cameras.items():
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



"""A camera's recent frames in preallocated memory: the capture thread writes, the worker gathers.

One `RingBuffer` per camera (and, optionally, a second one at display resolution for evidence,
see below). Frames are RGB uint8, channels last, already resized to the model's input size, so a
window is a gather of T indices and nothing is decoded or resized twice.

Concurrency (one writer thread, any number of reader threads):
    The writer asks for `write_slot()`, decodes/resizes straight into that view (no per-frame
    allocation), then calls `commit(t_mono, t_wall)`. Internally there is one slot more than
    `capacity`: the slot being written is never one a reader may gather, because the readable
    sequence numbers are the newest `capacity` *committed* frames. `gather` copies the frames while
    holding the same lock `commit` takes, so the writer cannot move on to (and overwrite) the next
    slot during the copy. That costs the writer at most one copy of T frames of waiting (~0.3 ms
    for 16x224x224x3) and makes a torn frame impossible by construction, which a seqlock-style
    "copy then re-check the sequence number" would only detect after the fact (and then have to
    retry). Frames are only ever dropped by being overwritten, never torn.

Evidence resolution:
    The model-size frames are small and squashed to the model's aspect (224x224 for a 16:9
    camera), poor evidence for a person. The capture thread can therefore keep a second, shorter
    `RingBuffer` at a display resolution (at most e.g. 640 px wide, the camera's aspect) with the
    same sequence numbers (`start_seq`), so the daemon takes a snapshot or a pre-roll clip of the
    exact frames a window saw. It costs a second resize per frame and W*H*3 bytes per frame held
    (640x360: 0.7 MB, i.e. ~100 MB for 10 s at 15 fps), which is why it is optional and sized by
    seconds of pre-roll rather than by the model's window.
"""
from __future__ import annotations

import threading
from typing import Optional, Sequence

import numpy as np


class FramesUnavailableError(LookupError):
    """A requested frame was overwritten already, or has not been written yet."""


class RingBuffer:
    """Bounded, preallocated store of the newest `capacity` frames of one camera.

    Args:
        capacity: frames that can be gathered at any time (the newest `capacity` committed).
        height, width: size of every stored frame.
        start_seq: sequence number of the first frame written; a display ring created mid-stream
            starts at the model ring's `count` so both number the same frame alike.
    Attributes:
        frames: (capacity + 1, H, W, 3) uint8 storage (one spare slot is being written).
        t_mono, t_wall: (capacity + 1,) float64 capture times of each slot's frame.
        seqs: (capacity + 1,) int64 absolute frame number held by each slot, -1 when empty.
    """

    def __init__(self, capacity: int, height: int, width: int, start_seq: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be >= 1, got {capacity}")
        if height < 1 or width < 1:
            raise ValueError(f"ring buffer frame size must be positive, got {height}x{width}")
        self.capacity = int(capacity)
        self.height = int(height)
        self.width = int(width)
        slots = self.capacity + 1
        self.frames = np.zeros((slots, self.height, self.width, 3), dtype=np.uint8)
        self.t_mono = np.zeros(slots, dtype=np.float64)
        self.t_wall = np.zeros(slots, dtype=np.float64)
        self.seqs = np.full(slots, -1, dtype=np.int64)
        self._count = int(start_seq)
        self._start = int(start_seq)
        self._lock = threading.Lock()
        # (width, height) of the camera's original frames at the last commit, for alert box_px.
        self.source_size: Optional[tuple[int, int]] = None
        # Normalised (x1, y1, x2, y2) region of the source frame the stored frames show (None: all).
        self.roi: Optional[tuple[float, float, float, float]] = None

    @property
    def count(self) -> int:
        """Sequence number the next frame will get = frames ever written (plus `start_seq`)."""
        return self._count

    @property
    def oldest(self) -> int:
        """Oldest sequence number that can still be gathered (== `count` when empty)."""
        return max(self._start, self._count - self.capacity)

    def write_slot(self) -> np.ndarray:
        """The (H, W, 3) uint8 view the writer fills next. Only the writer thread may call this.

        No reader can gather this slot until `commit`, whatever it held before.
        """
        return self.frames[self._count % (self.capacity + 1)]

    def commit(self, t_mono: float, t_wall: float,
               source_size: Optional[tuple[int, int]] = None) -> int:
        """Publish the frame written into `write_slot()`.

        Args:
            t_mono: `time.monotonic()` when the frame was read.
            t_wall: `time.time()` when the frame was read.
            source_size: (width, height) of the original frame before resizing.
        Returns:
            The sequence number the frame got.
        """
        slot = self._count % (self.capacity + 1)
        with self._lock:
            self.t_mono[slot] = t_mono
            self.t_wall[slot] = t_wall
            self.seqs[slot] = self._count
            if source_size is not None:
                self.source_size = (int(source_size[0]), int(source_size[1]))
            self._count += 1
        return self._count - 1

    def write(self, frame_rgb: np.ndarray, t_mono: float, t_wall: float,
              source_size: Optional[tuple[int, int]] = None) -> int:
        """Copy an already model-sized (H, W, 3) uint8 RGB frame in and commit it.

        Convenience for callers that do not decode into `write_slot()` themselves (tests, tools).
        Returns the frame's sequence number.
        """
        if frame_rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"frame shape {frame_rgb.shape} != ring frame shape "
                             f"{(self.height, self.width, 3)}")
        np.copyto(self.write_slot(), frame_rgb)
        return self.commit(t_mono, t_wall, source_size)

    def gather(self, seqs: Sequence[int] | np.ndarray, out: Optional[np.ndarray] = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copy frames by absolute sequence number.

        Args:
            seqs: (T,) sequence numbers, each in [`oldest`, `count` - 1]; repeats allowed.
            out: optional (T, H, W, 3) uint8 array to copy into (e.g. a batch row).
        Returns:
            frames (T, H, W, 3) uint8 (a copy, or `out`), t_mono (T,) and t_wall (T,) float64.
        Raises:
            FramesUnavailableError: a frame was overwritten already or not written yet.
        """
        idx = np.asarray(seqs, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"seqs must be one-dimensional, got shape {idx.shape}")
        slots = idx % (self.capacity + 1)
        with self._lock:
            lo, hi = self.oldest, self._count - 1
            if idx.size and (idx.min() < lo or idx.max() > hi):
                raise FramesUnavailableError(
                    f"frames {idx.min()}..{idx.max()} requested, ring holds {lo}..{hi}")
            if out is None:
                frames = self.frames[slots]          # fancy indexing copies
            else:
                np.take(self.frames, slots, axis=0, out=out)
                frames = out
            return frames, self.t_mono[slots].copy(), self.t_wall[slots].copy()

    def latest(self) -> Optional[tuple[int, np.ndarray, float, float]]:
        """(seq, frame copy, t_mono, t_wall) of the newest frame, or None when empty."""
        with self._lock:
            if self._count == self._start:
                return None
            seq = self._count - 1
            slot = seq % (self.capacity + 1)
            return seq, self.frames[slot].copy(), float(self.t_mono[slot]), float(self.t_wall[slot])

    def seqs_between(self, t_mono_from: float, t_mono_to: float) -> np.ndarray:
        """Sequence numbers, oldest first, of held frames captured in [t_mono_from, t_mono_to]."""
        with self._lock:
            held = np.arange(self.oldest, self._count, dtype=np.int64)
            times = self.t_mono[held % (self.capacity + 1)]
        return held[(times >= t_mono_from) & (times <= t_mono_to)]

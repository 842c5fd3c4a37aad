"""A `RingBuffer` in shared memory: a capture process writes it, the daemon's threads read it.

Same class, same contract (`streamer/ringbuffer.py`: one writer, many readers, `gather` under the
lock `commit` takes, so a frame is never torn), with its storage in one
`multiprocessing.shared_memory.SharedMemory` block and its lock a `multiprocessing` lock, so the
writer may be another process (`streamer/accel/capture_process.py`). The block holds, in order:
a header of int64 (frames written, first sequence number, source width, source height), the
slots' `t_mono`, `t_wall` (float64) and `seqs` (int64), then the frames (uint8).

The process that creates a ring owns its block (`unlink` on close); another attaches with
`SharedRingBuffer.attach(state, lock)`, `state` being `ring.state()` (picklable: names and
sizes, no memory). The lock cannot travel through a pipe: it is created first and handed to the
other process when that process starts (`multiprocessing`'s rule for locks).
`time.monotonic` is the system-wide CLOCK_MONOTONIC on Linux, so the writer's capture times
compare with the reader's clock.
"""
from __future__ import annotations

import logging
import os
import secrets
from multiprocessing import shared_memory
from typing import Any, Optional

import numpy as np

from ..ringbuffer import RingBuffer

log = logging.getLogger(__name__)

_HEADER = 4          # count, start, source width, source height
SHM_PREFIX = "vigil_"   # + creating pid + "_" + random: /dev/shm/vigil_<pid>_<hex>


def _layout(capacity: int, height: int, width: int) -> tuple[int, int]:
    """(bytes of the header and the three per-slot arrays, total bytes)."""
    slots = capacity + 1
    meta = 8 * (_HEADER + 3 * slots)
    return meta, meta + slots * height * width * 3


class SharedRingBuffer(RingBuffer):
    """A `RingBuffer` whose storage is shared memory (see the module docstring).

    Args:
        capacity, height, width, start_seq: as `RingBuffer`.
        lock: a `multiprocessing` lock (or any lock shared with the other process).
        name: attach to this existing block instead of creating one (`attach` does this).
    Attributes:
        shm: the `SharedMemory` block; `owner`: this object created it (and unlinks it).
    """

    def __init__(self, capacity: int, height: int, width: int, start_seq: int = 0, *,
                 lock: Any, name: Optional[str] = None) -> None:
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be >= 1, got {capacity}")
        if height < 1 or width < 1:
            raise ValueError(f"ring buffer frame size must be positive, got {height}x{width}")
        self.capacity, self.height, self.width = int(capacity), int(height), int(width)
        meta, total = _layout(self.capacity, self.height, self.width)
        self.owner = name is None
        if self.owner:
            # Named after the creating process, so an operator (and a test) can tell Vigil's
            # blocks in /dev/shm from other programs', and whose they are.
            name = f"{SHM_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        self.shm = shared_memory.SharedMemory(name=name, create=self.owner, size=total)
        slots = self.capacity + 1
        buf = self.shm.buf
        self._header = np.ndarray((_HEADER,), np.int64, buf, 0)
        self.t_mono = np.ndarray((slots,), np.float64, buf, 8 * _HEADER)
        self.t_wall = np.ndarray((slots,), np.float64, buf, 8 * (_HEADER + slots))
        self.seqs = np.ndarray((slots,), np.int64, buf, 8 * (_HEADER + 2 * slots))
        self.frames = np.ndarray((slots, self.height, self.width, 3), np.uint8, buf, meta)
        self._lock = lock
        if self.owner:
            self._header[:] = (int(start_seq), int(start_seq), -1, -1)
            self.seqs[:] = -1
        self.roi: Optional[tuple[float, float, float, float]] = None

    # The counters live in the shared header, so both processes see the same ring.
    @property
    def _count(self) -> int:         # type: ignore[override]
        return int(self._header[0])

    @_count.setter
    def _count(self, value: int) -> None:
        self._header[0] = value

    @property
    def _start(self) -> int:         # type: ignore[override]
        return int(self._header[1])

    @property
    def source_size(self) -> Optional[tuple[int, int]]:      # type: ignore[override]
        w, h = int(self._header[2]), int(self._header[3])
        return None if w < 0 else (w, h)

    @source_size.setter
    def source_size(self, size: Optional[tuple[int, int]]) -> None:
        self._header[2:4] = (-1, -1) if size is None else (int(size[0]), int(size[1]))

    def state(self) -> dict[str, Any]:
        """What another process needs to `attach` (picklable; the lock travels separately)."""
        return {"name": self.shm.name, "capacity": self.capacity, "height": self.height,
                "width": self.width}

    @classmethod
    def attach(cls, state: dict[str, Any], lock: Any) -> "SharedRingBuffer":
        """The ring another process created, from its `state()`."""
        return cls(state["capacity"], state["height"], state["width"], lock=lock,
                   name=state["name"])

    def close(self) -> None:
        """The owner removes the block's name (no new process can attach); the memory stays
        mapped while this object lives, so a reader still holding the ring reads on safely."""
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass

    def __del__(self) -> None:
        # The numpy views export the mapping: drop them before closing it.
        for attr in ("_header", "t_mono", "t_wall", "seqs", "frames"):
            self.__dict__.pop(attr, None)
        shm = self.__dict__.get("shm")
        if shm is not None:
            try:
                shm.close()
            except (BufferError, OSError):
                pass

"""Frames cross to the model's device once: a per-camera device ring, windows gathered there.

Today's path (`streamer.worker`) copies each window's T frames from the host ring into a host
batch and sends that batch to the device. With a stride of T/2 every frame is copied and sent
twice (four times at T/4), and the copies run in the worker thread under the GIL. On an H200 that
host-side work, not the GPU, held the daemon to 27 cameras (BENCHMARKS.md).

`DeviceRing` mirrors one camera's model-size `RingBuffer` on the device: same slots (`seq %
(capacity + 1)`), uint8, channels last. `sync` uploads the frames committed since the last sync
(each frame once, in one host->device copy through a pinned staging buffer on CUDA) with their
capture times; `gather(seqs)` indexes the device tensor, so a window costs no host copy at all.
Normalisation runs on the device afterwards (`detector.preprocess.normalize_clips`), on exactly
the same uint8 values as today's path: the model sees an identical tensor
(tests/test_device_ring.py).

`DeviceRings` keeps one `DeviceRing` per camera, keyed by the host ring object, so a camera whose
ring is replaced (reload, reconnect with a new ring) gets a fresh mirror, and drops mirrors of
cameras that are gone. Everything here runs in the worker thread only.

Device memory: (capacity + 1) x H x W x 3 bytes a camera, e.g. 100 frames of 224x224 = 15 MB,
1.5 GB for 100 cameras. Host memory: one pinned staging buffer shared by every camera's uploads
(`Staging`), as large as the largest upload so far, not one per camera: pinned memory is a
scarce resource of the whole machine.
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..ringbuffer import FramesUnavailableError, RingBuffer

log = logging.getLogger(__name__)


class Staging:
    """The host buffer uploads go through: pinned on CUDA (one DMA per upload), reused.

    Args:
        device: where the uploads go.
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self._buffer: Optional[torch.Tensor] = None
        self._copied: Optional[torch.cuda.Event] = None

    def take(self, n: int, height: int, width: int) -> torch.Tensor:
        """A (n, height, width, 3) uint8 host tensor to fill, once the last upload out of the
        buffer has finished (grown when too small)."""
        if self._copied is not None:
            self._copied.synchronize()
            self._copied = None
        size = n * height * width * 3
        if self._buffer is None or self._buffer.numel() < size:
            self._buffer = torch.empty(size, dtype=torch.uint8,
                                       pin_memory=self.device.type == "cuda")
        return self._buffer[:size].view(n, height, width, 3)

    def uploaded(self) -> None:
        """Mark the end of an upload issued from the buffer (CUDA: an event on the stream)."""
        if self.device.type == "cuda":
            self._copied = torch.cuda.Event()
            self._copied.record()


class DeviceRing:
    """One camera's frames on the device, mirroring a host `RingBuffer` slot for slot.

    Args:
        host: the camera's model-size ring (the capture thread writes it).
        device: where the frames live ("cpu" works too: the tests run it there).
        staging: the host buffer uploads go through (default: its own).
    Attributes:
        frames: (capacity + 1, H, W, 3) uint8 tensor on `device`.
        seqs: (capacity + 1,) int64 numpy array: the sequence number each device slot holds
            (-1: none yet).
        t_mono, t_wall: (capacity + 1,) float64 capture times of each device slot's frame.
        synced: the next sequence number `sync` uploads.
        uploaded: frames uploaded so far (each at most once).
    """

    def __init__(self, host: RingBuffer, device: str | torch.device,
                 staging: Optional[Staging] = None) -> None:
        self.host = host
        self.device = torch.device(device)
        slots = host.capacity + 1
        self.slots = slots
        self.frames = torch.zeros((slots, host.height, host.width, 3), dtype=torch.uint8,
                                  device=self.device)
        self.seqs = np.full(slots, -1, dtype=np.int64)
        self.t_mono = np.zeros(slots, dtype=np.float64)
        self.t_wall = np.zeros(slots, dtype=np.float64)
        self.synced = host.oldest
        self.uploaded = 0
        self._staging = staging if staging is not None else Staging(self.device)

    def sync(self) -> int:
        """Upload every frame committed to the host ring since the last sync and still held.

        Returns:
            frames uploaded by this call.
        """
        host = self.host
        for _ in range(3):              # the writer may overwrite the oldest frames meanwhile
            lo, hi = max(self.synced, host.oldest), host.count
            if hi <= lo:
                return 0
            seqs = np.arange(lo, hi, dtype=np.int64)
            staging = self._staging.take(len(seqs), host.height, host.width)
            try:
                _, t_mono, t_wall = host.gather(seqs, out=staging.numpy())
            except FramesUnavailableError:
                continue
            break
        else:
            return 0
        slots = seqs % self.slots
        index = torch.from_numpy(slots).to(self.device, non_blocking=True)
        self.frames.index_copy_(0, index, staging.to(self.device, non_blocking=True))
        self._staging.uploaded()
        self.seqs[slots] = seqs
        self.t_mono[slots] = t_mono
        self.t_wall[slots] = t_wall
        self.synced = hi
        self.uploaded += len(seqs)
        return len(seqs)

    def gather(self, seqs: Sequence[int] | np.ndarray
               ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """A window's frames by absolute sequence number, from the device copy.

        Args:
            seqs: (T,) sequence numbers (repeats allowed), all uploaded by `sync`.
        Returns:
            frames (T, H, W, 3) uint8 on the device (a new tensor), t_mono (T,), t_wall (T,).
        Raises:
            FramesUnavailableError: a frame is not on the device (never synced, or its slot
                holds a newer frame already).
        """
        idx = np.asarray(seqs, dtype=np.int64)
        slots = idx % self.slots
        if idx.size and not np.array_equal(self.seqs[slots], idx):
            raise FramesUnavailableError(
                f"frames {idx.min()}..{idx.max()} requested, not all on the device "
                f"(synced up to {self.synced - 1})")
        index = torch.from_numpy(slots).to(self.device, non_blocking=True)
        return (self.frames.index_select(0, index), self.t_mono[slots].copy(),
                self.t_wall[slots].copy())


class DeviceRings:
    """The device mirrors of every camera's ring (worker thread only).

    Args:
        device: the model's device.
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self._rings: dict[str, DeviceRing] = {}
        self._staging = Staging(self.device)

    def get(self, camera: str, host: RingBuffer) -> DeviceRing:
        """The camera's mirror of `host`, synced; a new one when the host ring was replaced."""
        ring = self._rings.get(camera)
        if ring is None or ring.host is not host:
            ring = DeviceRing(host, self.device, self._staging)
            self._rings[camera] = ring
            log.debug("camera %s: device ring of %d frames on %s", camera, ring.slots,
                      self.device)
        ring.sync()
        return ring

    def prune(self, cameras: Mapping[str, Optional[RingBuffer]]) -> None:
        """Drop the mirrors of cameras no longer in `cameras` or without a ring."""
        for name in [n for n, r in self._rings.items() if cameras.get(n) is not r.host]:
            del self._rings[name]

    def __len__(self) -> int:
        return len(self._rings)

    @property
    def uploaded(self) -> int:
        """Frames uploaded by the current mirrors."""
        return sum(r.uploaded for r in self._rings.values())

"""From due windows to per-window detections: the batched model call and the loop.

* `streamer.scheduler.Scheduler` decides which windows are due and when a batch is released;
* `InferenceWorker`: one batch = one pinned host tensor, ONE host->device copy, normalisation on
  the device, the model under `inference_mode` + autocast, then `detector.postprocess.class_scores`
  into `streamer.types.WindowResult`s. A CUDA out-of-memory error splits the batch in halves and
  retries (and remembers the smaller size); nothing crashes. The `accel:` switches
  (`streamer/accel/settings.py`) fold batch norm, use `channels_last_3d` and compile the model;
  a compiled model runs a fixed set of batch sizes (`batch_sizes`, a batch is padded up to the
  next one), each compiled and run once by `warm_up()` before the first window.
* `WorkerThread`: polls the scheduler, gathers the windows from the rings (or, with
  `accel.device_ring`, from their device mirrors: `streamer/accel/device_ring.py`), runs the
  worker, hands results on, and calls `heartbeat()` once per loop iteration so a hung device
  stops the watchdog pings and systemd restarts the service.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from detector.inference import prepare_for_inference, to_memory_format
from detector.postprocess import class_scores
from detector.precision import PRECISIONS, autocast, autocast_dtype, checkpoint_precision
from detector.preprocess import normalize_clips
from detector.runtime import load_model, resolve_device, torch_threads

from .accel.device_ring import DeviceRings
from .accel.settings import AccelConfig
from .config import ServeModelConfig
from .loop_thread import LoopThread
from .ringbuffer import FramesUnavailableError, RingBuffer
from .scheduler import BatchPolicy, DueWindow, Scheduler
from .types import ClassScore, WindowResult
from .windows import window_span

log = logging.getLogger(__name__)

# torch.compile keeps 8 graphs per function by default (torch._dynamo.config.recompile_limit):
# the fixed batch sizes of a compiled model stay within it.
MAX_BATCH_SIZES = 8


def fixed_batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes a compiled model runs: powers of two below `max_batch`, and `max_batch`
    (at most `MAX_BATCH_SIZES`, the smallest dropped first). A batch is padded up to the next."""
    sizes = sorted({2 ** k for k in range(max_batch.bit_length()) if 2 ** k < max_batch}
                   | {max_batch})
    return sizes[-MAX_BATCH_SIZES:]


# --------------------------------------------------------------------------- the model call
@dataclass(frozen=True)
class WindowMeta:
    """What the worker needs to know about a window besides its frames.

    Attributes:
        end_seq: the camera's sequence number of the window's last frame.
        t_start_wall, t_end_wall: wall-clock capture times of the first and last frame.
        t_end_mono: monotonic capture time of the last frame.
        frame_size: (width, height) of the camera's original frames.
        roi: normalised (x1, y1, x2, y2) region of the original frame the frames show (None: all);
            boxes are mapped back to the whole frame.
    """
    end_seq: int
    t_start_wall: float
    t_end_wall: float
    t_end_mono: float
    frame_size: tuple[int, int]
    roi: Optional[tuple[float, float, float, float]] = None


def _frame_box(box: Sequence[float], roi: Optional[Sequence[float]]
               ) -> tuple[float, float, float, float]:
    """Model box (cxcywh, normalised to what the model saw) -> normalised xyxy of the whole frame."""
    cx, cy, w, h = (float(v) for v in box)
    x1, y1, x2, y2 = (min(1.0, max(0.0, v)) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    if roi is not None:
        rx1, ry1, rx2, ry2 = roi
        x1, x2 = rx1 + x1 * (rx2 - rx1), rx1 + x2 * (rx2 - rx1)
        y1, y2 = ry1 + y1 * (ry2 - ry1), ry1 + y2 * (ry2 - ry1)
    return (x1, y1, x2, y2)


class InferenceWorker:
    """Runs the model on a batch of windows.

    Args:
        model: the detector, mapping (B, 3, T, H, W) float to {"pred_logits", "pred_boxes"}.
        input_cfg: `detector.config.InputConfig` (frames, size, mean, std).
        class_names: foreground class names, in the logits' order.
        device: "cpu", "cuda", "cuda:1", or a `torch.device`.
        precision: "auto" (bf16 on CUDA when supported, else fp16; fp32 on CPU), "fp32",
            "bf16" or "fp16" (fp16 on CPU falls back to fp32).
        policy: the `BatchPolicy` shared with the `Scheduler` (an int n is
            `BatchPolicy(max_batch=n)`): `max_batch` is the largest batch `infer` is given
            (sizes the pinned host buffer), its out-of-memory rule splits batches; how long a
            batch waits is the scheduler's part.
        accel: the `accel:` section's model switches (None: none); `check_device` must have
            passed for `device` (the daemon checks).
    Attributes:
        batch_sizes: the fixed batch sizes of a compiled model (a batch is padded up to the next
            one), or None: any size runs as it is.
        batch_limit: largest batch sent to the device in one call (`policy.limit`); lowered
            after an OOM.
        oom_splits: batches split after CUDA ran out of memory.
        oom_dropped: single windows dropped because even they did not fit.
    """

    def __init__(self, model: torch.nn.Module, input_cfg, class_names: Sequence[str],
                 device: str | torch.device = "cpu", precision: str = "auto",
                 policy: BatchPolicy | int = 8, accel: Optional[AccelConfig] = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        self.accel = accel if accel is not None else AccelConfig()
        self.accel.check_device(str(self.device))
        self.model = prepare_for_inference(model.eval().to(self.device), fold=self.accel.fold_bn,
                                           channels_last=self.accel.channels_last,
                                           compile_mode=self.accel.compile_mode())
        self.input_cfg = input_cfg
        self.class_names = list(class_names)
        self.policy = policy if isinstance(policy, BatchPolicy) else BatchPolicy(max_batch=policy)
        self.max_batch = self.policy.max_batch
        self.oom_splits = 0
        self.oom_dropped = 0
        self.autocast_dtype = autocast_dtype(self.device, precision)
        H, W = input_cfg.size
        shape = (self.max_batch, input_cfg.frames, H, W, 3)
        # One preallocated host staging buffer; pinned on CUDA so the copy is a single async DMA.
        self._host = torch.empty(shape, dtype=torch.uint8,
                                 pin_memory=self.device.type == "cuda")
        # Windows gathered on the device (device rings) are stacked here, on the device.
        self._device_batch: Optional[torch.Tensor] = None
        self.batch_sizes = fixed_batch_sizes(self.max_batch) if self.accel.compiled else None

    @property
    def batch_limit(self) -> int:
        return self.policy.limit

    def _padded(self, n: int) -> int:
        """The batch size `n` windows run as (the next fixed size of a compiled model)."""
        if self.batch_sizes is None:
            return n
        return next((b for b in self.batch_sizes if b >= n), n)

    def warm_up(self) -> float:
        """Run every fixed batch size once (compiling it), so that the first windows do not wait
        for a compile. A no-op for a model that is not compiled. A compile that fails (no C
        compiler, no Triton for this GPU) is logged and the model served uncompiled; running out
        of device memory is raised.

        Returns:
            seconds it took.
        """
        t0 = time.monotonic()
        for b in self.batch_sizes or ():
            self._host[:b].zero_()
            try:
                self._forward(self._host[:b])
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:     # a compiler or backend the machine lacks: serve eagerly
                log.error("inference: torch.compile failed for a batch of %d (%s: %s); serving "
                          "the model uncompiled", b, type(exc).__name__, str(exc)[:500])
                self.model = getattr(self.model, "_orig_mod", self.model)
                self.batch_sizes = None
                break
            log.info("inference: batch of %d compiled and warmed up (%.1f s so far)", b,
                     time.monotonic() - t0)
        return time.monotonic() - t0

    def _forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One device call.

        Args:
            clips: (B, T, H, W, 3) uint8 on the host (pinned on CUDA), or already on the device.
        Returns:
            scores (B, K) and boxes (B, K, 4) cxcywh, float32 on the CPU.
        """
        x = clips.to(self.device, non_blocking=True)       # the one host->device copy
        with torch.inference_mode():
            x = normalize_clips(x, self.input_cfg.mean, self.input_cfg.std)
            x = to_memory_format(x, self.accel.channels_last)
            with autocast(self.device, self.autocast_dtype):
                outputs = self.model(x)
            scores, boxes = class_scores(outputs)
            return scores.float().cpu(), boxes.float().cpu()

    def _stage(self, frames: list) -> torch.Tensor:
        """The batch tensor of `frames` (numpy clips: the pinned host buffer; device tensors from
        the device rings: a device buffer), padded to `_padded(B)` rows (the padding rows hold
        whatever an earlier batch left; their outputs are dropped)."""
        B = len(frames)
        P = self._padded(B)
        if isinstance(frames[0], torch.Tensor):
            if self._device_batch is None:
                self._device_batch = torch.zeros_like(self._host, device=self.device)
            torch.stack(frames, out=self._device_batch[:B])
            return self._device_batch[:P]
        host_np = self._host.numpy()
        for i, clip in enumerate(frames):
            host_np[i] = clip
        return self._host[:P]

    def _run(self, frames: list) -> list[Optional[tuple[np.ndarray, np.ndarray]]]:
        """Infer a list of (T, H, W, 3) clips, splitting on OOM. None for a dropped window."""
        if len(frames) > self.batch_limit:
            out: list = []
            for i in range(0, len(frames), self.batch_limit):
                out += self._run(frames[i:i + self.batch_limit])
            return out
        B = len(frames)
        try:
            scores, boxes = self._forward(self._stage(frames))
        except torch.cuda.OutOfMemoryError:
            # Recover OUTSIDE this block: while it runs, the exception's traceback keeps the
            # failed call's frames and their activations alive, so a retry from here would find
            # the memory still taken. Seen on an H200 under a memory cap: every split ran out
            # again, down to single windows, and all were dropped (PyTorch FAQ, "My out of
            # memory exception handler can't allocate memory").
            scores = None
        if scores is None:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = self.policy.after_oom(B)
            if half is None:
                self.oom_dropped += 1
                log.error("inference: out of device memory on a single window; window dropped")
                return [None]
            self.oom_splits += 1
            log.warning("inference: out of device memory on a batch of %d; splitting into %d + %d "
                        "and limiting batches to %d", B, half, B - half, self.batch_limit)
            return self._run(frames[:half]) + self._run(frames[half:])
        return [(scores[i].numpy(), boxes[i].numpy()) for i in range(B)]

    def infer(self, windows: Sequence[tuple[str, np.ndarray, WindowMeta]]) -> list[WindowResult]:
        """Run one batch.

        Args:
            windows: (camera, frames (T, H, W, 3) uint8 RGB at the model size, meta) per window;
                frames a numpy array, or a uint8 tensor on the model's device (device rings).
        Returns:
            one `WindowResult` per window that was inferred, in order (a window is missing only
            when even alone it did not fit in device memory).
        """
        if not windows:
            return []
        T = self.input_cfg.frames
        H, W = self.input_cfg.size
        for cam, frames, _ in windows:
            uint8 = (frames.dtype == torch.uint8 if isinstance(frames, torch.Tensor)
                     else frames.dtype == np.uint8)
            if tuple(frames.shape) != (T, H, W, 3) or not uint8:
                raise ValueError(f"camera {cam}: window of shape {tuple(frames.shape)} "
                                 f"{frames.dtype}, expected {(T, H, W, 3)} uint8")
        outs = self._run([w[1] for w in windows])
        results = []
        for (cam, _, meta), out in zip(windows, outs):
            if out is None:
                continue
            scores, boxes = out
            per_class = {
                name: ClassScore(name, float(scores[k]), _frame_box(boxes[k], meta.roi))
                for k, name in enumerate(self.class_names)}
            results.append(WindowResult(
                camera=cam, scores=per_class, frame_size=tuple(meta.frame_size),
                t_start_wall=meta.t_start_wall, t_end_wall=meta.t_end_wall,
                t_end_mono=meta.t_end_mono, end_seq=meta.end_seq))
        return results


# --------------------------------------------------------------------------- the loop
@dataclass
class WorkerStats:
    """Counters the daemon turns into metrics (read from any thread; written by the loop only).

    Attributes:
        windows: camera -> windows inferred.
        unavailable: camera -> released windows whose frames were overwritten before the gather.
        gaps: camera -> released windows not inferred because they spanned a reconnect gap.
        batches: batches run; batch_seconds: time of the last batch (gather + inference).
    """
    windows: dict[str, int] = field(default_factory=dict)
    unavailable: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batch_seconds: float = 0.0


@dataclass
class LoadedWorker:
    """The model the `model:` section names, loaded where it runs, and its worker.

    Attributes:
        worker: the `InferenceWorker`.
        model_cfg: the checkpoint's `ModelConfig` (classes, input, clip length).
        meta: the checkpoint's entries and `runtime` (`torch` / `onnxruntime`).
        device: where it runs.
        threads: torch CPU threads set for it.
    """
    worker: "InferenceWorker"
    model_cfg: object
    meta: dict
    device: torch.device
    threads: int


def load_worker(cfg: ServeModelConfig, accel: Optional[AccelConfig] = None) -> LoadedWorker:
    """Load `cfg.checkpoint` as `vigil serve` runs it: on `cfg.device` (an `.onnx` export on the
    CPU), with `cfg.threads` torch threads (set process-wide), in `cfg.precision` (`auto`: the
    checkpoint's own choice where it records one), batched by `cfg.max_batch` / `max_wait_ms`,
    with the `accel:` switches (None: none; compiling is left to `InferenceWorker.warm_up`).

    The daemon and the offline tools that replay its windows (`vigil calibrate`) load their
    model here, so both run the same model the same way.

    Raises:
        ConfigError: a device that is not there, or an `accel` switch it cannot run.
        CheckpointError: the checkpoint cannot be read.
    """
    device = torch.device("cpu") if cfg.is_onnx else resolve_device(cfg.device, "model.device")
    if accel is not None:
        accel.check_device(str(device))      # `auto` resolved: CUDA graphs on a CPU
    threads = torch_threads(cfg.threads, device)
    torch.set_num_threads(threads)
    model, mcfg, meta = load_model(cfg.checkpoint, device, threads)
    precision = checkpoint_precision(meta) if cfg.precision == "auto" else cfg.precision
    worker = InferenceWorker(model, mcfg.input, list(mcfg.class_names), device=device,
                             precision=precision,
                             policy=BatchPolicy(cfg.max_batch, cfg.max_wait_ms), accel=accel)
    return LoadedWorker(worker, mcfg, meta, device, threads)


class WorkerThread(LoopThread):
    """The inference loop: scheduler -> gather -> worker -> `on_results`.

    Args:
        scheduler: the batching policy.
        worker: anything with `infer(windows) -> list[WindowResult]` (an `InferenceWorker`).
        rings: camera -> its model-size `RingBuffer` or None while it has none yet (a live mapping:
            it may gain or lose cameras on reload), or a callable returning that mapping.
        on_results: called with (results, batch_seconds) after each batch, in this thread.
        heartbeat: called once per loop iteration (watchdog pings); a hung batch stops it.
        poll_s: longest sleep between two looks at the counters.
        max_gap_factor: a window whose frames span more than this times the expected duration
            (plus one second) crossed a reconnect gap and is not inferred.
        clock: monotonic clock (injectable for tests).
        device_rings: gather windows from each camera's device mirror (`accel.device_ring`);
            None: from the host rings.
    """

    def __init__(self, scheduler: Scheduler, worker,
                 rings: Mapping[str, Optional[RingBuffer]]
                 | Callable[[], Mapping[str, Optional[RingBuffer]]],
                 on_results: Callable[[list[WindowResult], float], None],
                 heartbeat: Optional[Callable[[], None]] = None, poll_s: float = 0.005,
                 max_gap_factor: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 name: str = "vigil-worker",
                 device_rings: Optional[DeviceRings] = None) -> None:
        super().__init__(name)
        self.scheduler = scheduler
        self.worker = worker
        self.rings = rings
        self.on_results = on_results
        self.heartbeat = heartbeat
        self.poll_s = float(poll_s)
        self.max_gap_factor = float(max_gap_factor)
        self.clock = clock
        self.stats = WorkerStats()
        self.device_rings = device_rings

    def _rings(self) -> Mapping[str, Optional[RingBuffer]]:
        return self.rings() if callable(self.rings) else self.rings

    def _gather(self, due: DueWindow) -> Optional[tuple[str, np.ndarray, WindowMeta]]:
        ring = self._rings().get(due.camera)
        if ring is None:
            return None
        try:
            if self.device_rings is not None:
                frames, t_mono, t_wall = self.device_rings.get(due.camera, ring).gather(due.seqs)
            else:
                frames, t_mono, t_wall = ring.gather(due.seqs)
        except FramesUnavailableError:
            self.stats.unavailable[due.camera] = self.stats.unavailable.get(due.camera, 0) + 1
            log.debug("camera %s: window %d overwritten before it was gathered", due.camera,
                      due.end_seq)
            return None
        spec = self.scheduler.spec(due.camera)
        if spec is not None and len(t_mono) > 1:
            expected = window_span(spec.fps, spec.clip_seconds, spec.frames) / spec.fps
            if t_mono[-1] - t_mono[0] > self.max_gap_factor * expected + 1.0:
                self.stats.gaps[due.camera] = self.stats.gaps.get(due.camera, 0) + 1
                return None
        size = ring.source_size or (ring.width, ring.height)
        meta = WindowMeta(end_seq=due.end_seq, t_start_wall=float(t_wall[0]),
                          t_end_wall=float(t_wall[-1]), t_end_mono=float(t_mono[-1]),
                          frame_size=size, roi=ring.roi)
        return due.camera, frames, meta

    def step(self) -> bool:
        """One loop iteration (also the unit tests' entry point). Returns True when a batch ran."""
        if self.heartbeat is not None:
            self.heartbeat()
        counts = {name: ring.count for name, ring in list(self._rings().items())
                  if ring is not None}
        t0 = self.clock()
        batch = self.scheduler.poll(t0, counts)
        if not batch:
            deadline = self.scheduler.next_deadline()
            wait = self.poll_s if deadline is None else min(self.poll_s, max(0.0, deadline - t0))
            self._stop_event.wait(wait)
            return False
        if self.device_rings is not None:
            self.device_rings.prune(self._rings())
        windows = [w for w in (self._gather(d) for d in batch) if w is not None]
        results = self.worker.infer(windows) if windows else []
        elapsed = self.clock() - t0
        for r in results:
            self.stats.windows[r.camera] = self.stats.windows.get(r.camera, 0) + 1
        self.stats.batches += 1
        self.stats.batch_seconds = elapsed
        self.on_results(results, elapsed)
        return True

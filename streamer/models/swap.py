"""Replace the video model while the cameras keep running (`systemctl reload` = SIGHUP).

A reload whose `model.checkpoint` (or `model.precision`) differs from what serves, or whose
checkpoint file was replaced in place, hands a `SwapRequest` to the `ModelSwapper` thread. There,
beside the running model and without holding up the inference loop, `prepare` loads the new
checkpoint and checks it:

1. it loads (a missing, truncated or corrupt file is refused with the loader's message);
2. it runs where the running model runs (an `.onnx` graph runs on the CPU only);
3. its input is the running model's: the same frames per window and [H, W] (every camera's ring
   holds frames at that size), and the same training clip length when a camera times its windows
   by it (no `window_seconds`);
4. it scores every class the video detector must score for the cameras (`routing.py`: what each
   camera's `events` watches, less what the pose path owns);
5. one forward pass on a test window (mid-grey frames) returns finite scores and boxes.

The new worker runs with the running daemon's `accel:` model switches (batch norm folding,
`channels_last_3d`, compile); a compiled one is warmed up here, in the swapper's thread, so the
switch never makes a window wait for a compile.

A candidate that passes goes back to the event loop, which switches the inference worker to it
between two batches (`WorkerThread.worker` is read once per batch): no camera restarts, no window
is skipped, the event tracker and its open events are untouched. A refused one is one error line
and `vigil_model_reloads_total{result="refused"}`; the old model keeps serving. Requests coalesce:
while one loads, only the newest of the requests that arrive is kept.

The new model lives beside the old one until the switch, so memory (host or device) briefly
holds both.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from detector.config import ModelConfig
from detector.errors import VigilError
from detector.precision import checkpoint_precision
from detector.runtime import is_onnx_model, load_model, model_device

from ..accel.settings import AccelConfig
from ..loop_thread import LoopThread
from ..routing import EventRouting
from ..scheduler import BatchPolicy
from ..worker import InferenceWorker, WindowMeta
from .identity import ServingModel, file_stamp, sha256_of

log = logging.getLogger(__name__)

# The test window's pixel value: mid-grey, the same for every model.
TEST_PIXEL = 128
# How long the idle thread sleeps between looks at its stop flag.
IDLE_WAIT_S = 0.5


class ModelRefused(Exception):
    """The new checkpoint cannot serve; the message says why (one line)."""


@dataclass(frozen=True)
class SwapRequest:
    """A model the config asks for, and what the running cameras need of it.

    Attributes:
        checkpoint: the file (`model.checkpoint`, resolved).
        precision: `model.precision` (`auto` or forced).
        needed: the classes the video detector must score for the enabled cameras.
        frames, size: the running model's input (frames per window, [H, W]).
        clip_seconds: the running model's training clip length (None: unknown).
        clip_seconds_used: whether some camera times its windows by it (no `window_seconds`).
    """
    checkpoint: Path
    precision: str
    needed: frozenset[str]
    frames: int
    size: tuple[int, int]
    clip_seconds: Optional[float]
    clip_seconds_used: bool

    @classmethod
    def for_cameras(cls, checkpoint: Path, precision: str, running: ModelConfig,
                    routing: EventRouting, cameras: Sequence[Any]) -> "SwapRequest":
        """What a model must fit to replace `running` for these cameras.

        Args:
            checkpoint, precision: `model.checkpoint` and `model.precision`.
            running: the running model's `ModelConfig`.
            routing: which path scores which class (`needed` = what the video detector scores
                for these cameras).
            cameras: the enabled `CameraConfig`s.
        """
        inp = running.input
        return cls(checkpoint=Path(checkpoint), precision=precision,
                   needed=frozenset(c for cam in cameras
                                    for c in routing.video_classes(cam.settings.events)),
                   frames=int(inp.frames), size=(int(inp.size[0]), int(inp.size[1])),
                   clip_seconds=inp.clip_seconds,
                   clip_seconds_used=any(c.settings.window_seconds is None for c in cameras))


@dataclass
class Candidate:
    """A loaded and checked model, ready to serve.

    Attributes:
        worker: the `InferenceWorker` that runs it (the daemon hands it to the `WorkerThread`).
        model_cfg: its `ModelConfig`.
        serving: what it is (`loaded_at` is set again when it starts serving).
        seconds: wall time of load and checks.
    """
    worker: InferenceWorker
    model_cfg: ModelConfig
    serving: ServingModel
    seconds: float


@dataclass(frozen=True)
class SwapOutcome:
    """What became of a request: a `candidate`, or the `reason` it was refused."""
    request: SwapRequest
    candidate: Optional[Candidate] = None
    reason: Optional[str] = None


def _one_line(text: str, path: Path) -> str:
    """The message on one line, without a leading `<path>: ` (the log line names the file)."""
    text = " ".join(str(text).split())
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _describe(frames: int, size) -> str:
    return f"{frames} frames of {size[1]}x{size[0]}"


def check_fit(mcfg: ModelConfig, req: SwapRequest) -> None:
    """Whether a model with this config can take over from the running one for these cameras:
    the same input, the same clip length if a camera times its windows by it, every class the
    cameras need from the video detector (checks 3 and 4 of the module docstring).

    Raises:
        ModelRefused: naming what differs.
    """
    inp = mcfg.input
    if inp.frames != req.frames or tuple(inp.size) != tuple(req.size):
        raise ModelRefused(
            f"its input is {_describe(inp.frames, inp.size)}, the running model's "
            f"{_describe(req.frames, req.size)} (the cameras' rings hold frames of that size): "
            "a model with another input needs a restart")
    if req.clip_seconds_used and inp.clip_seconds != req.clip_seconds:
        raise ModelRefused(
            f"its training clips were {inp.clip_seconds} s, the running model's "
            f"{req.clip_seconds} s, and cameras without window_seconds time their windows by it: "
            "set window_seconds on them, or restart")
    classes = list(mcfg.class_names)
    missing = sorted(req.needed - set(classes))
    if missing:
        raise ModelRefused(
            f"it does not detect {', '.join(map(repr, missing))}, which the cameras watch "
            f"(it detects {', '.join(classes)})")


def prepare(req: SwapRequest, device: torch.device, threads: Optional[int], policy: BatchPolicy,
            load: Callable[..., tuple[Any, ModelConfig, dict]] = load_model,
            accel: Optional[AccelConfig] = None) -> Candidate:
    """Load the requested checkpoint and check it can replace the running model (see the module
    docstring for the checks, in order).

    Args:
        req: what to load and what the cameras need.
        device: where the running model runs (the new one goes there too).
        threads: CPU threads for an `.onnx` model (onnxruntime), as at start.
        policy: the running `BatchPolicy` (shared with the scheduler).
        load: `detector.runtime.load_model` (injectable for tests).
        accel: the daemon's `accel:` section (the model switches the new worker runs with).
    Returns:
        The `Candidate`.
    Raises:
        ModelRefused: one line saying why it cannot serve.
    """
    t0 = time.monotonic()
    path = req.checkpoint
    if is_onnx_model(path) and device.type != "cpu":
        raise ModelRefused(f"an .onnx model runs on the CPU and the running model runs on "
                           f"{device}: changing the device needs a restart")
    stamp = file_stamp(path)
    try:
        sha = sha256_of(path)
    except OSError as exc:
        raise ModelRefused(f"cannot read it: {exc.strerror or exc}") from None
    try:
        model, mcfg, meta = load(path, device, threads)
    except VigilError as exc:
        raise ModelRefused(_one_line(str(exc), path)) from None
    except Exception as exc:   # onnxruntime's own errors, a CUDA OOM while loading, ...
        raise ModelRefused(f"cannot be loaded: {type(exc).__name__}: "
                           f"{_one_line(str(exc), path)}") from None

    check_fit(mcfg, req)
    inp = mcfg.input
    classes = list(mcfg.class_names)
    precision = checkpoint_precision(meta) if req.precision == "auto" else req.precision
    runs_on = model_device(meta, device)
    try:
        worker = InferenceWorker(model, inp, classes, device=runs_on, precision=precision,
                                 policy=policy, accel=None if is_onnx_model(path) else accel)
        worker.warm_up()            # a compiled model: every fixed batch size, here, not later
    except Exception as exc:
        raise ModelRefused(f"cannot run: {type(exc).__name__}: {_one_line(str(exc), path)}"
                           ) from None
    smoke_test(worker)
    serving = ServingModel.of(path, req.precision, mcfg, str(meta.get("runtime", "torch")),
                              worker, sha256=sha, stamp=stamp)
    return Candidate(worker, mcfg, serving, time.monotonic() - t0)


def smoke_test(worker: InferenceWorker) -> None:
    """One forward pass on a mid-grey test window through the worker's own path (host buffer,
    normalisation, autocast, post-processing).

    Raises:
        ModelRefused: the pass raised, dropped the window, or gave a score or box that is not
            finite (NaN or inf weights).
    """
    T = worker.input_cfg.frames
    H, W = worker.input_cfg.size
    clip = np.full((T, H, W, 3), TEST_PIXEL, dtype=np.uint8)
    now_wall, now_mono = time.time(), time.monotonic()
    meta = WindowMeta(end_seq=0, t_start_wall=now_wall, t_end_wall=now_wall,
                      t_end_mono=now_mono, frame_size=(W, H))
    try:
        results = worker.infer([("model-check", clip, meta)])
    except Exception as exc:
        raise ModelRefused(f"a forward pass on a test window failed: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())}") from None
    if len(results) != 1:
        raise ModelRefused("a forward pass on a test window dropped it (out of device memory)")
    for name, cs in results[0].scores.items():
        if not (math.isfinite(cs.score) and all(math.isfinite(v) for v in cs.box)):
            raise ModelRefused(f"a forward pass on a test window gave a non-finite {name!r} "
                               "score or box (NaN or inf in the weights?)")


class ModelSwapper(LoopThread):
    """The thread that prepares requested models, one at a time, beside the running one.

    Args:
        prepare: request -> `Candidate`, raising `ModelRefused` (the daemon binds `prepare` to
            its device, threads and batch policy).
    """

    def __init__(self, prepare: Callable[[SwapRequest], Candidate],
                 name: str = "vigil-model-swap") -> None:
        super().__init__(name)
        self._prepare = prepare
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: Optional[SwapRequest] = None
        self._busy: Optional[SwapRequest] = None
        self._cancelled: Optional[SwapRequest] = None
        self._done: list[SwapOutcome] = []

    def request(self, req: SwapRequest) -> bool:
        """Ask for `req` (from the event loop). It replaces a request not yet started; asking
        again for the one being prepared drops the waiting one (and undoes a `cancel`).

        Returns:
            False when the same request is already waiting or being prepared (nothing to load).
        """
        with self._lock:
            if req == self._busy:               # the newest wish is the one in flight
                self._pending = self._cancelled = None
                return False
            if req == self._pending:
                return False
            self._pending = req
        self._wake.set()
        return True

    def cancel(self) -> bool:
        """Forget the waiting request, drop the outcome of the one being prepared and the
        prepared models not yet polled (a later reload went back to the model that serves).
        Refusals already made are still reported. Returns whether anything was dropped."""
        with self._lock:
            ready = [o for o in self._done if o.candidate is not None]
            had = self._pending is not None or self._busy is not None or bool(ready)
            self._pending = None
            self._cancelled = self._busy
            self._done = [o for o in self._done if o.candidate is None]
        return had

    def busy(self) -> bool:
        """Whether a request waits or is being prepared."""
        with self._lock:
            return self._pending is not None or self._busy is not None

    def poll(self) -> list[SwapOutcome]:
        """The outcomes finished since the last call, oldest first (from the event loop)."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def stop(self, timeout: Optional[float] = None) -> bool:
        self._stop_event.set()
        self._wake.set()
        return super().stop(timeout)

    def step(self) -> bool:
        self._wake.wait(IDLE_WAIT_S)
        with self._lock:
            self._wake.clear()
            req, self._pending = self._pending, None
            self._busy = req
        if req is None:
            return False
        try:
            out = SwapOutcome(req, candidate=self._prepare(req))
        except ModelRefused as exc:
            out = SwapOutcome(req, reason=str(exc))
        except Exception as exc:   # whatever went wrong, the running model keeps serving
            log.debug("preparing %s failed", req.checkpoint, exc_info=True)
            out = SwapOutcome(req, reason=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        with self._lock:
            self._busy = None
            cancelled, self._cancelled = self._cancelled is req, None
            if cancelled:
                log.info("model %s: prepared, but a later reload asks for the model that serves; "
                         "dropping it", req.checkpoint.name)
                return True
            if self._pending is not None and out.candidate is not None:
                log.info("model %s: prepared, but a later reload asks for another; dropping it",
                         req.checkpoint.name)
                return True
            self._done.append(out)
        return True

"""The inference side: the batched model call, OOM split, the loop (the batching policy is
tests/test_scheduler.py)."""
import logging
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from detector.config import InputConfig
from detector.model import build_model
from detector.postprocess import class_scores
from detector.preprocess import normalize_clips
from streamer.ringbuffer import RingBuffer
from streamer.types import WindowResult
from streamer.scheduler import BatchPolicy, CameraWindow, Scheduler
from streamer.worker import InferenceWorker, WindowMeta, WorkerThread

T, H, W = 4, 32, 32
CLASSES = ["fight", "collapse"]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model({"backbone": {"name": "small3d", "channels": [4, 8, 8, 8], "pool": [1, 2, 2]},
                        "input": {"frames": T, "size": [H, W]}, "d_model": 16, "nheads": 2,
                        "dim_feedforward": 32, "decoder_layers": 1, "num_queries": 4})


def _input_cfg():
    return InputConfig(frames=T, size=[H, W])


def _meta(i, roi=None):
    return WindowMeta(end_seq=100 + i, t_start_wall=1000.0 + i, t_end_wall=1002.0 + i,
                      t_end_mono=50.0 + i, frame_size=(640, 360), roi=roi)


def _windows(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(f"cam{i}", rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8), _meta(i))
            for i in range(n)]


class FixedOutput(nn.Module):
    """Stand-in detector: the same logits and boxes for every clip."""

    def __init__(self, logits, boxes):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)     # (N, K+1)
        self.boxes = torch.tensor(boxes, dtype=torch.float32)       # (N, 4)

    def forward(self, x):
        B = x.shape[0]
        return {"pred_logits": self.logits.expand(B, -1, -1), "pred_boxes": self.boxes.expand(B, -1, -1)}


# ----------------------------------------------------------------------------- InferenceWorker
def test_batched_results_match_each_window_run_alone(tiny_model):
    worker = InferenceWorker(tiny_model, _input_cfg(), CLASSES, "cpu", "fp32", policy=4)
    windows = _windows(3)
    results = worker.infer(windows)
    assert [r.camera for r in results] == ["cam0", "cam1", "cam2"]
    for (cam, frames, meta), res in zip(windows, results):
        assert isinstance(res, WindowResult)
        assert set(res.scores) == set(CLASSES)
        assert (res.end_seq, res.frame_size, res.t_end_mono) == (meta.end_seq, (640, 360), meta.t_end_mono)
        with torch.inference_mode():
            x = normalize_clips(torch.from_numpy(frames[None]), _input_cfg().mean, _input_cfg().std)
            scores, boxes = class_scores(tiny_model(x))
        for k, name in enumerate(CLASSES):
            assert res.scores[name].score == pytest.approx(float(scores[0, k]), abs=1e-4)
            cx, cy, w, h = boxes[0, k].tolist()
            assert res.scores[name].box == pytest.approx(
                tuple(min(1, max(0, v)) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)), abs=1e-4)


def test_box_becomes_normalised_xyxy_of_the_whole_frame_even_with_roi():
    logits = [[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    model = FixedOutput(logits, [[0.5, 0.5, 0.5, 0.5], [0.2, 0.3, 0.2, 0.2]])
    worker = InferenceWorker(model, _input_cfg(), CLASSES, "cpu", "fp32", policy=2)
    frames = np.zeros((T, H, W, 3), np.uint8)
    full, cropped = worker.infer([("a", frames, _meta(0)), ("b", frames, _meta(1, roi=(0.5, 0.0, 1.0, 0.5)))])
    p = torch.tensor(logits).softmax(-1)
    assert full.scores["fight"].score == pytest.approx(float(p[0, 0]))
    assert full.scores["collapse"].score == pytest.approx(float(p[1, 1]))
    assert full.scores["fight"].box == pytest.approx((0.25, 0.25, 0.75, 0.75))
    assert full.scores["collapse"].box == pytest.approx((0.1, 0.2, 0.3, 0.4))
    # the model saw the top-right quarter: its centre box maps into that quarter
    assert cropped.scores["fight"].box == pytest.approx((0.625, 0.125, 0.875, 0.375))


def test_wrong_window_shape_is_refused(tiny_model):
    worker = InferenceWorker(tiny_model, _input_cfg(), CLASSES, "cpu", "fp32", policy=2)
    with pytest.raises(ValueError, match="cam"):
        worker.infer([("cam", np.zeros((T, H + 1, W, 3), np.uint8), _meta(0))])


def test_cuda_oom_splits_the_batch_and_retries(tiny_model, caplog):
    worker = InferenceWorker(tiny_model, _input_cfg(), CLASSES, "cpu", "fp32", policy=8)
    real_forward = worker._forward
    sizes = []

    def forward_fits_two(clips):
        sizes.append(clips.shape[0])
        if clips.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(clips)

    worker._forward = forward_fits_two
    windows = _windows(5, seed=1)
    expected = InferenceWorker(tiny_model, _input_cfg(), CLASSES, "cpu", "fp32", 8).infer(windows)
    with caplog.at_level(logging.WARNING, logger="streamer.worker"):
        results = worker.infer(windows)
    assert [r.camera for r in results] == [w[0] for w in windows]
    for got, want in zip(results, expected):
        assert got.scores["fight"].score == pytest.approx(want.scores["fight"].score, abs=1e-5)
    assert worker.oom_splits >= 1 and worker.batch_limit <= 2
    assert any("out of device memory" in r.message for r in caplog.records)
    sizes.clear()
    assert len(worker.infer(_windows(4))) == 4          # later batches go out pre-split
    assert max(sizes) <= 2


def test_the_retry_after_oom_runs_once_the_failed_call_is_released(tiny_model):
    """The failed call's activations must be free before the halves run (found on an H200).

    While an `except` block runs, the exception's traceback holds the failed call's frames and
    every tensor in them: retrying from inside it ran out of memory again at every split.
    """
    import gc
    import sys
    import weakref

    worker = InferenceWorker(tiny_model, _input_cfg(), CLASSES, "cpu", "fp32", policy=4)
    real_forward = worker._forward
    failed: list[weakref.ref] = []
    seen_at_retry = []

    def forward(clips):
        if clips.shape[0] > 1:
            activation = torch.ones(1024)           # what the failed call had allocated
            failed.append(weakref.ref(activation))
            raise torch.cuda.OutOfMemoryError("injected")
        gc.collect()
        seen_at_retry.append((sys.exc_info()[0], [r() is not None for r in failed]))
        return real_forward(clips)

    worker._forward = forward
    assert len(worker.infer(_windows(2))) == 2
    assert seen_at_retry and all(exc is None and not any(alive) for exc, alive in seen_at_retry)


def test_oom_on_a_single_window_drops_it_without_crashing(tiny_model):
    worker = InferenceWorker(tiny_model, _input_cfg(), CLASSES, "cpu", "fp32", policy=4)
    real_forward = worker._forward

    def forward(clips):
        # the window whose first pixel is 255 never fits
        if (clips[:, 0, 0, 0, 0] == 255).any():
            raise torch.cuda.OutOfMemoryError("injected")
        return real_forward(clips)

    worker._forward = forward
    windows = _windows(3)
    windows[1][1][0, 0, 0, 0] = 255
    for i in (0, 2):
        windows[i][1][0, 0, 0, 0] = 0
    results = worker.infer(windows)
    assert [r.camera for r in results] == ["cam0", "cam2"]
    assert worker.oom_dropped == 1


# ----------------------------------------------------------------------------- WorkerThread
class SlowFakeWorker:
    """Checks each window's frames are the ones asked for, then takes `delay` seconds."""

    def __init__(self, delay):
        self.delay = delay
        self.bad = 0

    def infer(self, windows):
        results = []
        for cam, frames, meta in windows:
            if int(frames[-1, 0, 0, 0]) != meta.end_seq % 251:
                self.bad += 1
            results.append(WindowResult(cam, {}, meta.frame_size, meta.t_start_wall,
                                        meta.t_end_wall, meta.t_end_mono, meta.end_seq))
        time.sleep(self.delay)
        return results


def test_worker_thread_under_overload_heartbeats_and_keeps_latency_bounded():
    fps, max_wait_ms, delay = 100.0, 20, 0.08
    cams = {f"c{i}": CameraWindow(fps=fps, clip_seconds=0.08, frames=T, stride=2) for i in range(4)}
    rings = {name: RingBuffer(64, 8, 8) for name in cams}
    sched = Scheduler(cams, BatchPolicy(max_batch=2, max_wait_ms=max_wait_ms))
    fake = SlowFakeWorker(delay)
    latencies, pendings, beats = [], [], []

    def on_results(results, seconds):
        now = time.monotonic()
        latencies.extend(now - r.t_end_mono for r in results)
        pendings.append(sched.pending)

    stop = threading.Event()

    def camera_feed():
        frame = np.zeros((8, 8, 3), np.uint8)
        while not stop.is_set():
            for ring in rings.values():
                frame[:] = ring.count % 251
                ring.write(frame, time.monotonic(), time.time(), source_size=(80, 80))
            time.sleep(1 / fps)

    feeder = threading.Thread(target=camera_feed, daemon=True)
    feeder.start()
    wt = WorkerThread(sched, fake, rings, on_results, heartbeat=lambda: beats.append(1))
    wt.start()
    time.sleep(1.5)
    assert wt.stop(timeout=2.0)
    stop.set()
    feeder.join(2)
    assert wt.error is None and fake.bad == 0
    assert wt.stats.batches >= 5 and len(beats) >= wt.stats.batches
    assert max(pendings) <= len(cams)
    assert sum(sched.skipped.values()) > 0                           # overloaded: windows skipped
    assert sum(wt.stats.windows.values()) == sum(sched.released.values()) - sum(wt.stats.unavailable.values())
    # a window's last frame is at most: waiting + one batch ahead of it + its own batch (+ slack
    # for a loaded 2-core test machine)
    assert max(latencies) <= max_wait_ms / 1000 + 2 * delay + 0.3


def test_worker_thread_does_not_infer_a_window_across_a_reconnect_gap():
    cams = {"c0": CameraWindow(fps=10.0, clip_seconds=0.4, frames=T, stride=1)}
    ring = RingBuffer(16, 8, 8)
    frame = np.zeros((8, 8, 3), np.uint8)
    for i in range(4):
        t = i * 0.1 + (30.0 if i == 3 else 0.0)          # the camera was away for 30 s
        ring.write(frame, t, t)
    called = []
    fake = SlowFakeWorker(0.0)
    wt = WorkerThread(Scheduler(cams, BatchPolicy(1, 0)), fake, {"c0": ring}, lambda r, s: called.append(r))
    assert wt.step()
    assert called == [[]] and wt.stats.gaps == {"c0": 1}


def test_cuda_batch_uses_pinned_memory_and_matches_cpu(tiny_model):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    windows = _windows(3, seed=2)
    cpu = InferenceWorker(tiny_model, _input_cfg(), CLASSES, "cpu", "fp32", 4).infer(windows)
    gpu_worker = InferenceWorker(tiny_model, _input_cfg(), CLASSES, "cuda", "auto", 4)
    assert gpu_worker._host.is_pinned() and gpu_worker.autocast_dtype in (torch.bfloat16, torch.float16)
    gpu = gpu_worker.infer(windows)
    tiny_model.cpu()
    for a, b in zip(cpu, gpu):
        for name in CLASSES:
            assert a.scores[name].score == pytest.approx(b.scores[name].score, abs=0.05)

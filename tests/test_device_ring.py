"""Device rings (`streamer/accel/device_ring.py`): windows gathered from a camera's device mirror
are today's windows, bit for bit, after normalisation; each frame is uploaded once; a frame the
host ring overwrote is unavailable on the device too. Run with device=cpu (the code path is the
same on CUDA; tests/test_cuda.py runs it there)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.config import InputConfig
from detector.preprocess import normalize_clips
from streamer.accel.device_ring import DeviceRing, DeviceRings
from streamer.ringbuffer import FramesUnavailableError, RingBuffer
from streamer.windows import window_seqs

MEAN, STD = [0.43, 0.39, 0.37], [0.23, 0.22, 0.22]


def _frame(rng: np.random.Generator, h: int = 12, w: int = 16) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("stride", [8, 16])
def test_windows_from_the_device_ring_equal_todays_windows_across_wrap_around(stride):
    T = 16
    rng = np.random.default_rng(stride)
    host = RingBuffer(capacity=40, height=12, width=16)
    rings = DeviceRings("cpu")
    compared = 0
    for seq in range(200):                       # 200 frames through a 41-slot ring: 4 wraps
        host.write(_frame(rng), t_mono=seq / 25, t_wall=1e9 + seq / 25)
        end = seq
        if end + 1 >= T and (end + 1 - T) % stride == 0:
            seqs = np.arange(end - T + 1, end + 1)
            want, want_mono, want_wall = host.gather(seqs)
            got, got_mono, got_wall = rings.get("a", host).gather(seqs)
            assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8
            np.testing.assert_array_equal(got.numpy(), want)
            np.testing.assert_array_equal(got_mono, want_mono)
            np.testing.assert_array_equal(got_wall, want_wall)
            x_today = normalize_clips(torch.from_numpy(want)[None], MEAN, STD)
            x_ring = normalize_clips(got[None], MEAN, STD)
            assert torch.equal(x_ring, x_today)
            compared += 1
    assert compared == (200 - T) // stride + 1
    # Synced before each window: every frame written up to the last window crossed once.
    assert rings.uploaded == T + (compared - 1) * stride


def test_each_frame_is_uploaded_once_even_when_it_is_in_two_windows():
    rng = np.random.default_rng(0)
    host = RingBuffer(capacity=64, height=4, width=4)
    ring = DeviceRing(host, "cpu")
    for seq in range(48):
        host.write(_frame(rng, 4, 4), seq, seq)
        if seq >= 15 and (seq - 15) % 8 == 0:     # stride 8: each frame in two windows
            ring.sync()
            ring.gather(np.arange(seq - 15, seq + 1))
    ring.sync()
    assert ring.uploaded == 48


def test_a_frame_the_host_ring_overwrote_is_unavailable_on_the_device():
    rng = np.random.default_rng(1)
    host = RingBuffer(capacity=8, height=4, width=4)
    ring = DeviceRing(host, "cpu")
    for seq in range(30):
        host.write(_frame(rng, 4, 4), seq, seq)
    ring.sync()
    assert ring.uploaded == 8                   # only what the host still held
    with pytest.raises(FramesUnavailableError):
        ring.gather([20, 21])                   # overwritten before the first sync
    ring.gather(np.arange(22, 30))
    with pytest.raises(FramesUnavailableError):
        ring.gather([30])                       # not written yet


def test_a_replaced_host_ring_gets_a_fresh_mirror_and_gone_cameras_are_dropped():
    rings = DeviceRings("cpu")
    a1 = RingBuffer(4, 4, 4)
    a1.write(np.zeros((4, 4, 3), np.uint8), 0, 0)
    first = rings.get("a", a1)
    a2 = RingBuffer(4, 4, 4)
    a2.write(np.ones((4, 4, 3), np.uint8), 0, 0)
    second = rings.get("a", a2)
    assert second is not first and second.gather([0])[0].max() == 1
    rings.prune({"a": a2, "b": None})
    assert len(rings) == 1
    rings.prune({})
    assert len(rings) == 0


def test_the_window_helper_agrees_with_the_ring_gather():
    # The scheduler's seqs (window_seqs) gathered either way: identical frames.
    rng = np.random.default_rng(2)
    host = RingBuffer(capacity=100, height=6, width=6)
    for seq in range(90):
        host.write(_frame(rng, 6, 6), seq / 15, seq / 15)
    rings = DeviceRings("cpu")
    seqs = window_seqs(89, 15.0, 2.0, 16)
    np.testing.assert_array_equal(rings.get("a", host).gather(seqs)[0].numpy(),
                                  host.gather(seqs)[0])


def test_worker_thread_with_device_rings_gives_the_same_results(tmp_path):
    from streamer.scheduler import BatchPolicy, CameraWindow, Scheduler
    from streamer.worker import InferenceWorker, WorkerThread
    from vigil_tools.harness import tiny_checkpoint
    from detector.runtime import load_model

    model, cfg, _ = load_model(tiny_checkpoint(tmp_path / "tiny.pt"), torch.device("cpu"))
    H, W = cfg.input.size
    T = cfg.input.frames
    rng = np.random.default_rng(3)
    frames = [_frame(rng, H, W) for _ in range(2 * 60)]

    def run(device_rings):
        hosts = {name: RingBuffer(30, H, W) for name in ("a", "b")}
        worker = InferenceWorker(model, cfg.input, cfg.class_names, policy=BatchPolicy(4, 0))
        specs = {name: CameraWindow(fps=8.0, clip_seconds=1.0, frames=T, stride=4)
                 for name in hosts}
        sched = Scheduler(specs, BatchPolicy(4, 0))
        out = []
        thread = WorkerThread(sched, worker, rings=hosts, on_results=lambda r, s: out.extend(r),
                              clock=lambda: 100.0, device_rings=device_rings)
        for seq in range(60):                  # 60 frames through 31 slots: wraps around
            for k, ring in enumerate(hosts.values()):
                ring.write(frames[2 * seq + k], seq / 8, 1e9 + seq / 8)
            thread.step()
        return sorted((r.camera, r.end_seq, tuple((k, v.score, v.box) for k, v in
                                                 sorted(r.scores.items()))) for r in out)

    today = run(None)
    assert len(today) >= 2 * 10, "the scheduler released windows of both cameras"
    assert run(DeviceRings("cpu")) == today


def test_every_camera_uploads_through_one_staging_buffer():
    # Pinned host memory is scarce: 100 cameras must not pin 100 ring-sized buffers.
    rng = np.random.default_rng(4)
    rings = DeviceRings("cpu")
    hosts = {name: RingBuffer(20, 6, 8) for name in "abc"}
    for seq in range(25):
        for host in hosts.values():
            host.write(_frame(rng, 6, 8), seq, seq)
    for name, host in hosts.items():
        got = rings.get(name, host).gather(np.arange(10, 25))[0]
        np.testing.assert_array_equal(got.numpy(), host.gather(np.arange(10, 25))[0])
    assert rings._staging._buffer.numel() == 20 * 6 * 8 * 3      # one ring's worth, not three

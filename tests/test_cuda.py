"""The CUDA path, on a real GPU: skipped, with the reason printed, where there is none.

`make test` runs these everywhere; on a machine without CUDA every test is skipped ("no CUDA
device", shown by pytest's `-ra` summary). `scripts/gpu-check.sh` runs them on a GPU machine
with `VIGIL_REQUIRE_CUDA=1`, which turns a missing device into failures instead of skips.

* the inference worker's batched call on CUDA (pinned staging buffer, one forward pass, the
  normalisation on the device) against the same windows on the CPU in fp32: scores, class
  agreement and box IoU, in fp32, bf16 and fp16 autocast;
* a real CUDA out-of-memory error (a memory cap set with
  `torch.cuda.set_per_process_memory_fraction`, nothing injected) splits the batch and every
  window still gets its result;
* one training step with AMP (fp16 autocast + GradScaler, as `train.amp: auto` gives on CUDA),
  and one epoch of the trainer itself on CUDA;
* `vigil detect --device cuda` as a subprocess, against the CPU on the same files;
* `vigil serve` with `model.device: cuda` on a file camera, end to end: READY, alerts over
  ZeroMQ, metrics, SIGTERM;
* the `accel:` switches on CUDA (fold_bn, channels_last_3d, compile, CUDA graphs, each warmed up
  before the first window) against the CPU, and device rings on CUDA against the host rings.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from detector.config import BackboneConfig, InputConfig, ModelConfig
from detector.model import build_model
from streamer.worker import InferenceWorker, WindowMeta

REQUIRE_CUDA = os.environ.get("VIGIL_REQUIRE_CUDA") == "1"
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available() and not REQUIRE_CUDA,
                                 reason="no CUDA device")]

CLASSES = ["fight", "collapse"]
# Largest |score difference| against the CPU in fp32, and smallest IoU of a class's box. fp32 on
# CUDA still differs a little: cuDNN runs convolutions in TF32 by default.
SCORE_TOL = {"fp32": 0.01, "bf16": 0.05, "fp16": 0.02}
MIN_IOU = {"fp32": 0.98, "bf16": 0.9, "fp16": 0.95}
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def seed_shaped(frames: int = 16, size: int = 112, queries: int = 1) -> torch.nn.Module:
    """The seed architecture (R(2+1)D-18 + decoder), random weights, at a test's clip size.

    One query by default: each class's box is then that query's, so the comparison with the CPU
    cannot hinge on two queries of a random model scoring a class almost alike.
    """
    cfg = ModelConfig(backbone=BackboneConfig(name="r2plus1d_18", pretrained=None),
                      input=InputConfig(frames=frames, size=[size, size]), num_queries=queries)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def windows_of(clips: torch.Tensor) -> list[tuple[str, np.ndarray, WindowMeta]]:
    """Worker input: one (camera, (T, H, W, 3) uint8, meta) per clip."""
    out = []
    for i, clip in enumerate(clips.numpy()):
        meta = WindowMeta(end_seq=100 + i, t_start_wall=1000.0 + i, t_end_wall=1002.0 + i,
                          t_end_mono=50.0 + i, frame_size=(640, 360))
        out.append((f"cam{i}", np.ascontiguousarray(clip), meta))
    return out


def box_iou(a, b) -> float:
    from torchvision.ops import box_iou as iou

    return float(iou(torch.tensor([a], dtype=torch.float64),
                     torch.tensor([b], dtype=torch.float64))[0, 0])


def best(result) -> str:
    return max(CLASSES, key=lambda n: result.scores[n].score)


# ----------------------------------------------------------------------------- the worker
@pytest.fixture(scope="module")
def cpu_case():
    """The model, six rendered synthetic clips (fight/collapse/none) and the CPU fp32 results."""
    from train.synth import synth_clips

    model = seed_shaped()
    cfg = model.cfg
    clips = synth_clips(6, cfg.input.frames, cfg.input.size)
    windows = windows_of(clips)
    worker = InferenceWorker(copy.deepcopy(model), cfg.input, CLASSES, "cpu", "fp32",
                             policy=len(windows))
    return model, windows, worker.infer(windows)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_worker_batch_on_cuda_agrees_with_the_cpu_in_fp32(cpu_case, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model, windows, reference = cpu_case
    worker = InferenceWorker(copy.deepcopy(model), model.cfg.input, CLASSES, "cuda", precision,
                             policy=len(windows))
    assert worker._host.is_pinned(), "the host staging buffer must be pinned on CUDA"
    assert worker.autocast_dtype == AUTOCAST[precision]
    calls = []
    worker.model.register_forward_pre_hook(
        lambda m, args: calls.append((args[0].device.type, args[0].dtype, args[0].shape[0])))
    results = worker.infer(windows)
    # One forward pass for the whole batch, on normalised float input already on the device.
    assert calls == [("cuda", torch.float32, len(windows))]
    assert [r.camera for r in results] == [w[0] for w in windows]
    tol = SCORE_TOL[precision]
    agree = 0
    for ref, got in zip(reference, results):
        for name in CLASSES:
            assert got.scores[name].score == pytest.approx(ref.scores[name].score, abs=tol), \
                f"{ref.camera} {name} {precision}"
            iou = box_iou(ref.scores[name].box, got.scores[name].box)
            assert iou >= MIN_IOU[precision], f"{ref.camera} {name} {precision}: IoU {iou:.3f}"
        margin = abs(ref.scores["fight"].score - ref.scores["collapse"].score)
        if margin > 2 * tol:       # a clear winner on the CPU must win on the GPU too
            assert best(got) == best(ref), f"{ref.camera} {precision}"
        agree += best(got) == best(ref)
    print(f"{precision}: class agreement {agree}/{len(results)}")



# ----------------------------------------------------------------------------- the accel path
ACCEL = {"fold+channels_last": dict(fold_bn=True, channels_last=True),
         "compile": dict(fold_bn=True, channels_last=True, compile="default"),
         "cuda_graphs": dict(fold_bn=True, channels_last=True, cuda_graphs=True)}


@pytest.mark.parametrize("switches", list(ACCEL))
def test_the_accel_switches_agree_with_the_cpu_on_cuda(cpu_case, switches):
    """`accel:` fold_bn, channels_last_3d, compile and CUDA graphs on the GPU in bf16/fp16
    autocast, warmed up for every fixed batch size first, against the CPU in fp32."""
    from streamer.accel.settings import AccelConfig

    model, windows, reference = cpu_case
    torch._dynamo.reset()
    worker = InferenceWorker(copy.deepcopy(model), model.cfg.input, CLASSES, "cuda", "auto",
                             policy=len(windows), accel=AccelConfig(**ACCEL[switches]))
    if worker.batch_sizes:
        worker.batch_sizes = [len(windows)]      # one compile per switch (the run's time)
    took = worker.warm_up()
    t0 = time.perf_counter()
    results = worker.infer(windows)
    first = time.perf_counter() - t0
    print(f"{switches}: warm-up {took:.1f} s, first batch {first * 1e3:.0f} ms")
    precision = "bf16" if worker.autocast_dtype == torch.bfloat16 else "fp16"
    for ref, got in zip(reference, results):
        for name in CLASSES:
            assert got.scores[name].score == pytest.approx(ref.scores[name].score,
                                                           abs=SCORE_TOL[precision])
    assert first < 5.0, "no compile at the first window: warm_up compiled every batch size"


def test_device_rings_on_cuda_give_the_host_rings_windows():
    from detector.preprocess import normalize_clips
    from streamer.accel.device_ring import DeviceRings
    from streamer.ringbuffer import RingBuffer

    rng = np.random.default_rng(0)
    host = RingBuffer(40, 112, 112)
    rings = DeviceRings("cuda")
    for seq in range(120):
        host.write(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), seq, seq)
        if seq >= 15 and (seq - 15) % 8 == 0:
            seqs = np.arange(seq - 15, seq + 1)
            got = rings.get("a", host).gather(seqs)[0]
            assert got.device.type == "cuda"
            want = torch.from_numpy(host.gather(seqs)[0])
            assert torch.equal(normalize_clips(got[None], [0.5] * 3, [0.25] * 3).cpu(),
                               normalize_clips(want[None], [0.5] * 3, [0.25] * 3))
    assert rings.uploaded == 16 + 13 * 8     # each frame up to the last window, once


def test_a_real_out_of_memory_error_splits_the_batch(caplog):
    """The seed model at 16x224x224 under a memory cap that fits about three windows."""
    model = seed_shaped(size=224, queries=12)
    inp = model.cfg.input
    clips = torch.randint(0, 256, (8, inp.frames, *inp.size, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    windows = windows_of(clips)
    # With an index: set_per_process_memory_fraction refuses a bare "cuda" (seen on the H200).
    device = torch.device("cuda", torch.cuda.current_device())
    uncapped = InferenceWorker(model, inp, CLASSES, device, "fp32", policy=8)
    expected = uncapped.infer(windows)          # also warms up cuDNN and the allocator
    assert uncapped.oom_splits == 0

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    uncapped.infer(windows[:1])
    per_window = torch.cuda.max_memory_allocated(device) - before
    assert per_window > 32 * 2**20, f"one window took only {per_window / 2**20:.0f} MiB"
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    cap = torch.cuda.memory_reserved(device) + 3 * per_window
    worker = InferenceWorker(model, inp, CLASSES, device, "fp32", policy=8)
    try:
        torch.cuda.set_per_process_memory_fraction(cap / total, device)
        with caplog.at_level(logging.WARNING, logger="streamer.worker"):
            results = worker.infer(windows)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    print(f"one window {per_window / 2**20:.0f} MiB, cap {cap / 2**30:.2f} GiB: "
          f"{worker.oom_splits} split(s), batches of {worker.batch_limit} after")
    assert worker.oom_splits >= 1 and worker.batch_limit < 8 and worker.oom_dropped == 0
    assert any("out of device memory" in r.message for r in caplog.records)
    assert [r.camera for r in results] == [r.camera for r in expected]
    for got, want in zip(results, expected):
        for name in CLASSES:
            assert got.scores[name].score == pytest.approx(want.scores[name].score, abs=1e-2)


# ----------------------------------------------------------------------------- training
def test_one_amp_training_step_on_cuda():
    from detector.losses import build_criterion
    from train import engine

    from ._training import tiny_config
    from .test_engine import fake_batches

    cfg = tiny_config()
    device = torch.device("cuda")
    amp = engine.resolve_amp(cfg.train.amp, device)
    assert amp is torch.float16, "train.amp auto on CUDA is fp16 with a GradScaler"
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    criterion = build_criterion(cfg.loss, cfg.model.num_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # A modest initial scale, so that this single step is not one the scaler skips.
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 10)
    before = [p.detach().clone() for p in model.parameters()]
    stats = engine.train_one_epoch(model, criterion, fake_batches(1, 4, cfg), optimizer, None,
                                   device, 1, grad_clip=0.5, amp=amp, scaler=scaler,
                                   progress=False)
    assert stats["steps"] == 1 and math.isfinite(stats["loss"])
    assert scaler.get_scale() == 2.0 ** 10, "the step overflowed and was skipped"
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())


def test_the_trainer_runs_an_epoch_on_cuda_with_its_grad_scaler(tmp_path):
    from train.trainer import fit

    from ._training import tiny_config, tiny_dataset

    data = tiny_dataset(tmp_path / "data")
    cfg = tiny_config(epochs=1, **{"train.device": "cuda"})
    result = fit(cfg, data, tmp_path / "run", resume=False, progress=False)
    assert math.isfinite(result["history"][0]["train"]["loss"])
    last = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert last.get("scaler") is not None, "fp16 AMP on CUDA keeps a GradScaler in the checkpoint"


# ----------------------------------------------------------------------------- the commands
@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A small random-weight detector (one query, 1 s clips) and two short videos."""
    from detector.checkpoint import save_checkpoint
    from train.synth import Scene, write_video

    root = tmp_path_factory.mktemp("cuda-cmd")
    cfg = ModelConfig(backbone=BackboneConfig(name="small3d", channels=[8, 16, 16, 32],
                                              pool=[1, 2, 2]),
                      input=InputConfig(frames=8, size=[64, 64], clip_seconds=1.0),
                      d_model=32, num_queries=1, decoder_layers=1, nheads=2, dim_feedforward=64)
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "small.pt", build_model(cfg), cfg)
    (root / "videos").mkdir()
    write_video(root / "videos" / "a.mp4", Scene("fight", 1, 96, 72, 15, 45))
    write_video(root / "videos" / "b.mp4", Scene("collapse", 2, 96, 72, 15, 45))
    return root, ckpt


def _detect(root, ckpt, *args: str) -> list[dict]:
    from vigil_tools.harness import REPO

    out = root / f"rows{'_'.join(a.strip('-') for a in args)}.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "detect", str(root / "videos"), "--checkpoint",
         str(ckpt), "--out", str(out), "--threshold", "0", "--workers", "1", *args],
        cwd=REPO, env={**os.environ, "VIGIL_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted((json.loads(line) for line in out.read_text().splitlines()),
                  key=lambda r: r["video"])


def test_vigil_detect_on_cuda_agrees_with_the_cpu(small_checkpoint):
    root, ckpt = small_checkpoint
    cpu = _detect(root, ckpt, "--device", "cpu")
    for precision in ("fp32", "auto"):      # auto: bf16 (or fp16) autocast on CUDA
        cuda = _detect(root, ckpt, "--device", "cuda", "--precision", precision)
        assert [r["video"] for r in cuda] == [r["video"] for r in cpu]
        tol = SCORE_TOL["fp32" if precision == "fp32" else "bf16"]
        for a, b in zip(cpu, cuda):
            assert b["class"] in CLASSES and "error" not in b
            if a["class"] == b["class"]:
                assert b["score"] == pytest.approx(a["score"], abs=tol)
                assert box_iou(a["box"], b["box"]) >= 0.9
            else:       # only a near-tie may flip: then both winners score about the same
                assert b["score"] == pytest.approx(a["score"], abs=tol), (a, b)


@pytest.mark.parametrize("accel", [None, {"device_ring": True, "capture": "processes",
                                           "fold_bn": True, "channels_last": True}],
                         ids=["today", "accel"])
def test_the_daemon_serves_a_file_camera_on_cuda(small_checkpoint, tmp_path, accel):
    pytest.importorskip("zmq")
    from vigil_tools.harness import DaemonProcess, base_config

    from .conftest import recv_json, subscriber

    root, ckpt = small_checkpoint
    cfg = base_config(tmp_path / "data", ckpt, {"filecam": str(root / "videos" / "a.mp4")},
                      stride=4)
    cfg["model"].update(device="cuda", precision="auto", threads=None)
    if accel is not None:
        cfg["accel"] = accel
    d = DaemonProcess(tmp_path, cfg)
    sub = subscriber(cfg["alerts"]["endpoint"], b"alert.filecam.")
    d.start()
    try:
        d.wait_ready(timeout=120)
        starts = {}
        deadline = time.monotonic() + 60
        while len(starts) < len(CLASSES) and time.monotonic() < deadline:
            got = recv_json(sub, timeout=0.5)
            if got and got[1]["type"] == "start":
                starts[got[1]["label"]] = got[1]
        assert set(starts) == set(CLASSES), f"no start per class; log:\n{d.log()[-4000:]}"
        scrape = d.metrics()
        assert d.value(scrape, "vigil_windows_total", camera="filecam") > 0
        build = [dict(labels) for (name, labels), v in scrape.items()
                 if name == "vigil_build_info" and v == 1]
        assert build and build[0]["device"].startswith("cuda"), build
        d.signal(signal.SIGTERM)
        assert d.proc.wait(timeout=30) == 0
        ends = []
        while (got := recv_json(sub, timeout=1.0)) is not None:
            if got[1]["type"] == "end":
                ends.append(got[1])
        assert {m["label"] for m in ends} == set(CLASSES)
        assert all(m["reason"] == "shutdown" for m in ends)
        assert "Traceback" not in d.log()
    finally:
        sub.close()
        d.close()

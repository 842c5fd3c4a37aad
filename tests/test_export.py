"""ONNX export round-trips: onnxruntime's outputs match PyTorch's for any batch size.

onnx, onnxscript and onnxruntime are optional: without them every test here is skipped, with
the reason printed.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from torch import nn

from detector.config import BackboneConfig, InputConfig, ModelConfig
from detector.export import AdaptivePool3dAsMatmul

MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(
    bool(MISSING), reason=f"optional ONNX packages not installed: {', '.join(MISSING)} "
                          "(pip install onnx onnxscript onnxruntime)")
if MISSING:
    print(f"skipping ONNX round-trip tests: {', '.join(MISSING)} not installed")


def tiny_config(pool=(1, 3, 3), size=(40, 40)) -> ModelConfig:
    # 40x40 gives a 3x3 feature map... pooled to pool: an uneven adaptive pool when pool is 2x2.
    return ModelConfig(backbone=BackboneConfig(name="small3d", channels=[4, 8, 8, 16],
                                               pool=list(pool)),
                       input=InputConfig(frames=8, size=list(size)), d_model=16, num_queries=4,
                       decoder_layers=1, nheads=2, dim_feedforward=32)


@pytest.mark.parametrize("in_size,out_size", [((2, 7, 7), (2, 7, 7)), ((4, 14, 14), (2, 7, 7)),
                                              ((3, 5, 9), (2, 3, 4)), ((1, 3, 3), (1, 2, 2))])
def test_matmul_pool_equals_adaptive_avg_pool(in_size, out_size):
    x = torch.randn(2, 5, *in_size)
    expected = nn.AdaptiveAvgPool3d(out_size)(x)
    assert torch.allclose(AdaptivePool3dAsMatmul(in_size, out_size)(x), expected, atol=1e-6)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if MISSING:
        pytest.skip(f"optional ONNX packages not installed: {', '.join(MISSING)}")
    from detector.export import export_onnx
    from detector.model import build_model

    torch.manual_seed(0)
    cfg = tiny_config(pool=(1, 2, 2))
    model = build_model(cfg).eval()
    path = export_onnx(model, cfg, tmp_path_factory.mktemp("onnx") / "tiny.onnx", opset=17)
    return model, cfg, path


@needs_onnx
@pytest.mark.parametrize("batch", [1, 3, 5])
def test_onnx_outputs_match_pytorch_for_any_batch(exported, batch):
    from detector.export import OnnxModel, check_against_torch

    model, cfg, path = exported
    runner = OnnxModel(path, threads=1)
    x = torch.randn(batch, 3, 8, 40, 40)
    out = runner(x)
    assert out["pred_logits"].shape == (batch, 4, 3) and out["pred_boxes"].shape == (batch, 4, 4)
    assert out["pred_logits"].dtype == torch.float32
    diff = check_against_torch(model, runner, x)
    assert diff["pred_logits"] < 1e-4 and diff["pred_boxes"] < 1e-4


@needs_onnx
def test_onnx_file_carries_the_model_config(exported):
    from detector.export import OnnxModel

    model, cfg, path = exported
    runner = OnnxModel(path, threads=1)
    assert runner.cfg == cfg
    assert runner.eval() is runner and runner.to("cpu") is runner


@needs_onnx
def test_onnx_runner_feeds_the_postprocessing_like_the_model(exported):
    from detector.export import OnnxModel
    from detector.postprocess import class_scores

    model, cfg, path = exported
    x = torch.randn(2, 3, 8, 40, 40)
    with torch.inference_mode():
        ref_scores, ref_boxes = class_scores(model(x))
    scores, boxes = class_scores(OnnxModel(path, threads=1)(x))
    assert torch.allclose(scores, ref_scores, atol=1e-4)
    assert torch.allclose(boxes, ref_boxes, atol=1e-4)


@needs_onnx
def test_export_leaves_the_pytorch_model_untouched(exported):
    model, cfg, path = exported
    assert isinstance(model.backbone.pool, nn.AdaptiveAvgPool3d)


@needs_onnx
def test_export_command_prints_the_max_abs_diff(tmp_path, capsys):
    import argparse

    from detector.checkpoint import save_checkpoint
    from detector.model import build_model
    from train import cli as train_cli

    cfg = tiny_config()
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model(cfg), cfg)
    parser = argparse.ArgumentParser(prog="vigil")
    train_cli.register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["export", "--checkpoint", str(ckpt), "--format", "onnx",
                              "--check-batch", "2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "m.onnx").is_file()
    assert "max abs diff vs PyTorch on 2 clips: pred_logits" in out


def test_onnx_runner_without_onnxruntime_or_file_is_a_clear_error(tmp_path):
    from detector.errors import CheckpointError, ConfigError
    from detector.export import OnnxModel

    with pytest.raises((ConfigError, CheckpointError), match="onnx"):
        OnnxModel(tmp_path / "missing.onnx")


# ----------------------------------------------------------------------- the daemon runs it
@needs_onnx
def test_the_daemons_worker_scores_windows_the_same_from_the_exported_model(exported):
    import numpy as np

    from detector.runtime import load_model
    from streamer.worker import InferenceWorker, WindowMeta

    model, cfg, path = exported
    onnx_model, onnx_cfg, meta = load_model(path, torch.device("cpu"), threads=1)
    assert meta["runtime"] == "onnxruntime" and onnx_cfg == cfg
    rng = np.random.default_rng(0)
    windows = [(f"cam{i}", rng.integers(0, 256, (8, 40, 40, 3), dtype=np.uint8),
                WindowMeta(end_seq=i, t_start_wall=0.0, t_end_wall=1.0, t_end_mono=1.0,
                           frame_size=(640, 360))) for i in range(3)]
    by_torch = InferenceWorker(model, cfg.input, cfg.class_names, policy=4).infer(windows)
    by_onnx = InferenceWorker(onnx_model, onnx_cfg.input, onnx_cfg.class_names,
                              policy=4).infer(windows)
    assert len(by_onnx) == 3
    for a, b in zip(by_torch, by_onnx):
        for name in cfg.class_names:
            assert b.scores[name].score == pytest.approx(a.scores[name].score, abs=1e-4)
            assert b.scores[name].box == pytest.approx(a.scores[name].box, abs=1e-4)


@pytest.mark.parametrize("section,key", [({"device": "cuda"}, "model.device"),
                                         ({"precision": "bf16"}, "model.precision")])
def test_serve_config_refuses_an_onnx_model_on_a_gpu_or_in_reduced_precision(section, key):
    from detector.errors import ConfigError
    from streamer.config import parse_config

    raw = {"data_dir": "/tmp/unused", "model": {"checkpoint": "model.onnx", **section},
           "cameras": [{"name": "cam", "url": "synth://fight"}]}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*onnx"):
        parse_config(raw, check_paths=False)


@needs_onnx
@pytest.mark.integration
def test_vigil_serve_runs_an_exported_model_end_to_end(exported, tmp_path):
    """The real daemon process, an .onnx checkpoint, a file camera: events open and are
    published; `serve --check` names the runtime."""
    import subprocess
    import sys

    zmq = pytest.importorskip("zmq")
    import yaml

    from vigil_tools.harness import DaemonProcess, base_config, wait_until

    _, _, path = exported
    cfg = base_config(tmp_path / "data", path, {"cam": "synth://fight?seed=1&width=96&height=72"
                                                       "&fps=15&frames=45"})
    (tmp_path / "vigil.yaml").write_text(yaml.safe_dump(cfg))
    check = subprocess.run([sys.executable, "-m", "streamer.cli", "serve", "--check", "--config",
                            str(tmp_path / "vigil.yaml")], capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stderr
    assert "onnxruntime" in check.stdout
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"alert.")
    sub.connect(cfg["alerts"]["endpoint"])
    d = DaemonProcess(tmp_path / "work", cfg).start()
    try:
        d.wait_ready(90)
        got: list[dict] = []

        def started() -> bool:
            while sub.poll(100):
                got.append(json.loads(sub.recv_multipart()[1]))
            return any(m["type"] == "start" for m in got)

        assert wait_until(started, timeout=30), d.log()[-2000:]
        assert "via onnxruntime" in d.log()
        assert d.total(d.metrics(), "vigil_windows_total") > 0
    finally:
        sub.close(0)
        d.close()


@needs_onnx
def test_a_frame_backbone_model_exports_too(tmp_path):
    """The 2D ImageNet backbone with its temporal stage (`mobilenet_v2`) goes through the same
    export, its adaptive pool replaced as the 3D backbones' is."""
    from detector.export import OnnxModel, export_onnx
    from detector.model import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(name="mobilenet_v2", freeze="all", pool=[1, 2, 2],
                                              motion="rgb+diff+dev", temporal_width=16,
                                              temporal_layers=1),
                      input=InputConfig(frames=4, size=[64, 64]), d_model=16, num_queries=2,
                      decoder_layers=1, nheads=2, dim_feedforward=32)
    model = build_model(cfg).eval()
    runner = OnnxModel(export_onnx(model, cfg, tmp_path / "mnv2.onnx"))
    x = torch.randn(3, 3, 4, 64, 64)
    with torch.no_grad():
        want = model(x)
    got = runner(x)
    assert torch.allclose(got["pred_logits"], want["pred_logits"], atol=1e-4)
    assert torch.allclose(got["pred_boxes"], want["pred_boxes"], atol=1e-4)

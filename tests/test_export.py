"""ONNX export round-trips: onnxruntime's outputs match PyTorch's for any batch size.

onnx, onnxscript and onnxruntime are optional: without them every test here is skipped, with
the reason printed.
"""
from __future__ import annotations

import importlib.util

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
    from streamer import bench_cli

    cfg = tiny_config()
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model(cfg), cfg)
    parser = argparse.ArgumentParser(prog="vigil")
    bench_cli.register(parser.add_subparsers(dest="verb"))
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

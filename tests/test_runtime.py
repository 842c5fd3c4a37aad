"""`detector.runtime`: the one place that decides the device, the threads and torch-or-ONNX, for
the daemon, `vigil detect`, `vigil eval`, training and the benchmarks."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from detector.errors import ConfigError
from detector.runtime import is_onnx_model, load_model, resolve_device, torch_threads

from ._training import tiny_config, tiny_dataset

MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"optional ONNX packages not installed: "
                                                      f"{', '.join(MISSING)}")


def test_resolve_device_auto_picks_cuda_only_when_available():
    dev = resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("key", ["model.device", "train.device", "--device"])
def test_resolve_device_refuses_cuda_without_a_gpu_naming_the_key(key):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match=key):
        resolve_device("cuda", key)


def test_resolve_device_refuses_an_unknown_device_naming_the_key():
    with pytest.raises(ConfigError, match="--device: unknown device 'tpu'"):
        resolve_device("tpu")


def test_torch_threads_leave_a_core_for_decoding_on_cpu():
    cpu = torch.device("cpu")
    assert torch_threads(None, cpu, cpus=2) == 1
    assert torch_threads(None, cpu, cpus=8) == 7
    assert torch_threads(None, cpu, cpus=1) == 1
    assert torch_threads(3, cpu, cpus=8) == 3
    assert torch_threads(None, torch.device("cuda"), cpus=16) <= 4


def test_an_onnx_model_is_known_by_its_suffix():
    assert is_onnx_model("m.onnx") and is_onnx_model(Path("x/M.ONNX"))
    assert not is_onnx_model("best.pt") and not is_onnx_model("best_model.pth")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random-weight checkpoint (1 s clips) and its ONNX export."""
    import dataclasses

    from detector.checkpoint import save_checkpoint
    from detector.export import export_onnx
    from detector.model import build_model

    root = tmp_path_factory.mktemp("runtime")
    cfg = tiny_config(None).model
    cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, clip_seconds=1.0))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ckpt = save_checkpoint(root / "tiny.pt", model, cfg)
    export_onnx(model, cfg, root / "tiny.onnx")
    return root, ckpt, root / "tiny.onnx"


@needs_onnx
def test_load_model_runs_either_runtime_with_the_same_config(exported):
    _, ckpt, onnx_path = exported
    torch_model, torch_cfg, torch_meta = load_model(ckpt, torch.device("cpu"))
    onnx_model, onnx_cfg, onnx_meta = load_model(onnx_path, torch.device("cpu"), threads=1)
    assert (torch_meta["runtime"], onnx_meta["runtime"]) == ("torch", "onnxruntime")
    assert onnx_cfg == torch_cfg


@needs_onnx
def test_vigil_detect_takes_an_onnx_model_and_agrees_with_the_checkpoint(exported, tmp_path):
    from streamer.cli import main as vigil
    from train.synth import Scene, write_video

    root, ckpt, onnx_path = exported
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", Scene("fight", 1, 64, 48, 10, 20))
    rows = {}
    for model in (ckpt, onnx_path):
        out = tmp_path / f"{model.suffix[1:]}.jsonl"
        assert vigil(["detect", str(videos), "--checkpoint", str(model), "--out", str(out),
                      "--threshold", "0.0", "--workers", "0", "--device", "cpu"]) == 0
        rows[model.suffix] = [json.loads(line) for line in out.read_text().splitlines()]
    (pt,), (ox,) = rows[".pt"], rows[".onnx"]
    assert pt["class"] == ox["class"] and abs(pt["score"] - ox["score"]) < 1e-3


@needs_onnx
def test_vigil_eval_takes_an_onnx_model(exported, tmp_path, capsys):
    from streamer.cli import main as vigil

    _, _, onnx_path = exported
    data = tiny_dataset(tmp_path / "data", videos=6)
    assert vigil(["eval", "--checkpoint", str(onnx_path), "--data", str(data), "--split", "all",
                  "--workers", "0", "--device", "cpu"]) == 0
    assert "video accuracy" in capsys.readouterr().out

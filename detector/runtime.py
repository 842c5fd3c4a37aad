"""Where and how the model runs, decided once for everyone: the daemon's worker, `vigil detect`,
`vigil eval`, training and the benchmarks.

* device: `resolve_device("auto" | "cpu" | "cuda" | "cuda:N", key)`, errors naming the setting;
* threads: `torch_threads(requested, device)` (on the CPU every core but one, kept for decoding);
* precision: `detector.precision` (`autocast_dtype`, `autocast`), the one autocast wrapper;
* torch or ONNX: `load_model(path, device, threads)` loads a Vigil checkpoint with PyTorch or an
  exported `.onnx` graph with onnxruntime (on the CPU), behind the same call.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

from .checkpoint import load_checkpoint
from .config import ModelConfig
from .errors import CheckpointError, ConfigError


def resolve_device(requested: str, key: str = "--device") -> torch.device:
    """`auto` -> the first CUDA GPU when one is usable, else the CPU; else the device named.

    Args:
        requested: `auto`, `cpu`, `cuda`, `cuda:N`.
        key: the setting it came from (`model.device`, `train.device`, `--device`), for errors.
    Raises:
        ConfigError: an unknown device, or a CUDA device asked for and not present.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"{key}: unknown device {requested!r} (auto, cpu, cuda, "
                          "cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {requested!r} requested but no CUDA device is available "
                          "(use auto or cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{key}: {requested!r}: only {torch.cuda.device_count()} CUDA "
                          "device(s) present")
    return dev


def torch_threads(requested: Optional[int], device: torch.device, cpus: Optional[int] = None) -> int:
    """Intra-op threads for torch.

    On the CPU the model gets every core but one, which is left for the capture threads' decoding
    (OpenCV releases the GIL while decoding, so that core is really used). On a GPU the CPU only
    gathers and copies batches: a few threads are plenty.
    """
    if requested is not None:
        return requested
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(4, cpus // 2))
    return max(1, cpus - 1)


def is_onnx_model(path: str | Path) -> bool:
    """Whether `path` names an exported ONNX graph (by its `.onnx` suffix)."""
    return Path(path).suffix.lower() == ".onnx"


def load_model(path: str | Path, device: torch.device, threads: Optional[int] = None
               ) -> tuple[Any, ModelConfig, dict[str, Any]]:
    """The model to run: a PyTorch checkpoint, or an exported `.onnx` graph.

    Args:
        path: a Vigil checkpoint (or reference `best_model.pth`), or an `.onnx` export.
        device: where a PyTorch model goes (an ONNX model stays on the CPU, and its `.to()`
            refuses any other device).
        threads: CPU threads for an ONNX model (onnxruntime's intra-op pool; None: its default).
    Returns:
        (model in eval mode, its `ModelConfig`, meta: the checkpoint's entries and `runtime`,
        `torch` or `onnxruntime`).
    Raises:
        CheckpointError: unreadable file, or an ONNX file without Vigil's config metadata.
        ConfigError: onnxruntime missing.
    """
    if not is_onnx_model(path):
        model, mcfg, meta = load_checkpoint(path, device=device)
        return model, mcfg, {**meta, "runtime": "torch"}
    from .export import METADATA_KEY, OnnxModel

    model = OnnxModel(path, threads=threads)
    if model.cfg is None:
        raise CheckpointError(f"{path}: no {METADATA_KEY} metadata (classes, clip size): "
                              "export it with `vigil export --format onnx`")
    return model, model.cfg, {"runtime": "onnxruntime"}


def architecture_name(cfg: ModelConfig, meta: dict[str, Any]) -> str:
    """What a loaded model is, for logs: its backbone's name, or an ensemble's members
    (`meta["architecture"]`, e.g. `mean of small3d 64x64 + mobilenet_v2 112x112`)."""
    return str(meta.get("architecture") or cfg.backbone.name)


def model_device(meta: dict[str, Any], device: torch.device) -> torch.device:
    """Where a loaded model's inputs go: the CPU for onnxruntime, else `device`."""
    return torch.device("cpu") if meta.get("runtime") == "onnxruntime" else device

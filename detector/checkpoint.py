"""Checkpoint files: what a trained detector is, on disk.

A Vigil checkpoint is a `torch.save`d dict of primitives and tensors only, so it loads with
`torch.load(weights_only=True)`, which refuses any pickle that would construct other objects
(and so run code) instead of trusting the file:

    {"format": "vigil.checkpoint/1", "model_config": {...}, "state_dict": {...},
     "class_names": [...], "input": {...}, "num_parameters": int, **meta}

`load_checkpoint` also takes the reference implementation's `best_model.pth` (a plain state_dict)
and converts it, so a user of that code can bring their model unchanged.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .config import ModelConfig
from .errors import CheckpointError, ConfigError
from .model import VideoDETR, build_model, count_parameters
from .reference import convert_reference_state_dict, is_reference_state_dict
from .schema import from_dict, to_dict

log = logging.getLogger(__name__)

FORMAT = "vigil.checkpoint/1"
_RESERVED = ("format", "model_config", "state_dict", "class_names", "input", "num_parameters")


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside `torch.compile` / DataParallel / DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def _plain(value: Any, key: str) -> Any:
    """`value` as something `weights_only` loading accepts (paths and numpy become plain)."""
    if type(value).__module__ == "numpy":   # before the float test: np.float64 is a float
        return value.item() if getattr(value, "ndim", 1) == 0 else torch.from_numpy(value)
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return _plain(to_dict(value), key)
    raise TypeError(f"checkpoint meta {key}: {type(value).__name__} cannot be stored; "
                    "use numbers, strings, lists, dicts or tensors")


def save_checkpoint(path: str | Path, model: nn.Module, cfg: ModelConfig, **meta: Any) -> Path:
    """Write `model` and its config to `path` atomically (temporary file, then `os.replace`).

    Args:
        path: destination file; its folder is created.
        model: the detector (a compiled or DataParallel wrapper is unwrapped).
        cfg: the config `model` was built from.
        **meta: extra primitives to store (epoch, metrics, ...); reserved names are refused.
    Returns:
        The path written.
    """
    path = Path(path)
    clash = sorted(set(meta) & set(_RESERVED))
    if clash:
        raise TypeError(f"checkpoint meta may not set {clash[0]!r}")
    model = _unwrap(model)
    payload = {
        "format": FORMAT,
        "model_config": to_dict(cfg),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "class_names": list(cfg.class_names),
        "input": to_dict(cfg.input),
        "num_parameters": count_parameters(model),
        **{k: _plain(v, k) for k, v in meta.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _load_weights(model: nn.Module, sd: Mapping[str, Any], source: str) -> None:
    """`load_state_dict(strict=True)` with an error that names the first key that does not fit."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in sd:
            raise CheckpointError(f"{source}: state_dict lacks key {key!r} that the model "
                                  "config needs")
        if not isinstance(sd[key], torch.Tensor) or sd[key].shape != value.shape:
            got = tuple(sd[key].shape) if isinstance(sd[key], torch.Tensor) else type(sd[key])
            raise CheckpointError(f"{source}: state_dict key {key!r} is {got}, the model "
                                  f"config needs {tuple(value.shape)}")
    extra = [k for k in sd if k not in expected]
    if extra:
        raise CheckpointError(f"{source}: state_dict has key {extra[0]!r} that the model "
                              "config does not")
    model.load_state_dict(sd, strict=True)


def _load_error_reason(exc: Exception) -> str:
    """The informative part of a `torch.load` error, without its paragraphs of general advice."""
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue",
              "(1) ", "(2) ")
    parts = [" ".join(p.split()) for p in str(exc).split("\n\n")]
    parts = [p for p in parts if p and not p.startswith(advice)] or [" ".join(str(exc).split())]
    text = " ".join(parts).replace("WeightsUnpickler error: ", "")
    return text[:300]


def _build_for_loading(cfg: ModelConfig) -> VideoDETR:
    """The architecture only: the checkpoint holds every weight, so no Kinetics file is read."""
    bare = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, pretrained=None))
    model = build_model(bare)
    model.cfg = cfg
    return model


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[VideoDETR, ModelConfig, dict[str, Any]]:
    """Read a Vigil checkpoint (or a reference `best_model.pth`) without running its pickle.

    Args:
        path: the file.
        device: where to put the model.
    Returns:
        (model in eval mode on `device`, its `ModelConfig`, meta: every stored entry except
        the state_dict; `meta["format"]` is "reference" for a converted reference checkpoint).
    Raises:
        CheckpointError: missing or unreadable file, a pickle that is not plain data, an unknown
            format, or weights that do not fit the config; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError (refused object), zip/EOF errors, ...
        raise CheckpointError(f"{path}: not a loadable checkpoint (only plain tensors and "
                              f"data are accepted): {_load_error_reason(exc)}") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")

    if is_reference_state_dict(data):
        sd, cfg = convert_reference_state_dict(data, source=str(path))
        log.info("%s: reference implementation state_dict detected, converted to Vigil's "
                 "layout (%s)", path, ", ".join(cfg.class_names))
        meta: dict[str, Any] = {"format": "reference", "source": str(path),
                                "class_names": list(cfg.class_names), "input": to_dict(cfg.input)}
    elif data.get("format") == FORMAT:
        try:
            cfg = from_dict(ModelConfig, data.get("model_config"), "model_config")
        except ConfigError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        sd = data.get("state_dict")
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{path}: 'state_dict' is missing or not a mapping")
        meta = {k: v for k, v in data.items() if k != "state_dict"}
    else:
        fmt = data.get("format")
        raise CheckpointError(f"{path}: unknown checkpoint format {fmt!r} (expected {FORMAT!r} "
                              "or a reference implementation state_dict)")

    model = _build_for_loading(cfg)
    _load_weights(model, sd, str(path))
    meta["num_parameters"] = count_parameters(model)
    return model.to(device).eval(), cfg, meta

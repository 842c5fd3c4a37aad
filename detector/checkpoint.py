"""Checkpoint files: what a trained detector is, on disk.

A Vigil checkpoint is a `torch.save`d dict of primitives and tensors only, so it loads with
`torch.load(weights_only=True)`, which refuses any pickle that would construct other objects
(and so run code) instead of trusting the file:

    {"format": "vigil.checkpoint/1", "model_config": {...}, "state_dict": {...},
     "class_names": [...], "input": {...}, "num_parameters": int, **meta}

`load_checkpoint` also takes the reference implementation's `best_model.pth` (a plain state_dict)
and converts it, so a user of that code can bring their model unchanged, and an ensemble file
(`save_ensemble`: several checkpoints' payloads in one file, served as the mean of their scores,
`detector.ensemble`):

    {"format": "vigil.ensemble/1", "combine": "mean", "members": [checkpoint payload, ...],
     "class_names": [...], "input": {...}, **meta}
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from .config import ModelConfig
from .ensemble import ScoreEnsemble, ensemble_input, ensemble_meta
from .errors import CheckpointError, ConfigError
from .model import VideoDETR, build_model, count_parameters
from .reference import convert_reference_state_dict, is_reference_state_dict
from .schema import from_dict, to_dict

log = logging.getLogger(__name__)

FORMAT = "vigil.checkpoint/1"
ENSEMBLE_FORMAT = "vigil.ensemble/1"
# What `last.pt` carries only to resume training (train.trainer): an ensemble leaves it out.
RESUME_STATE = ("optimizer", "scheduler", "scaler", "rng", "best_key", "best_epoch")
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
    return _write(path, payload)


def _write(path: str | Path, payload: dict[str, Any]) -> Path:
    """`torch.save` `payload` to `path` atomically (temporary file, fsync, `os.replace`)."""
    path = Path(path)
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


def _read(path: Path, device: str | torch.device) -> Mapping[str, Any]:
    """The file's dict, loaded with `weights_only=True`.

    Raises:
        CheckpointError: missing, unreadable, refused pickle, or not a dict.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError (refused object), zip/EOF errors, ...
        raise CheckpointError(f"{path}: not a loadable checkpoint (only plain tensors and "
                              f"data are accepted): {_load_error_reason(exc)}") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")
    return data


def _from_payload(data: Mapping[str, Any], source: str
                  ) -> tuple[VideoDETR, ModelConfig, dict[str, Any]]:
    """One detector from a checkpoint payload (Vigil's format or a reference state_dict), on
    the CPU in eval mode; see `load_checkpoint`."""
    if is_reference_state_dict(data):
        sd, cfg = convert_reference_state_dict(data, source=source)
        log.info("%s: reference implementation state_dict detected, converted to Vigil's "
                 "layout (%s)", source, ", ".join(cfg.class_names))
        meta: dict[str, Any] = {"format": "reference", "source": source,
                                "class_names": list(cfg.class_names), "input": to_dict(cfg.input)}
    elif data.get("format") == FORMAT:
        cfg = payload_config(data, source)
        sd = data.get("state_dict")
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{source}: 'state_dict' is missing or not a mapping")
        meta = {k: v for k, v in data.items() if k != "state_dict"}
    else:
        fmt = data.get("format")
        raise CheckpointError(f"{source}: unknown checkpoint format {fmt!r} (expected {FORMAT!r}, "
                              f"{ENSEMBLE_FORMAT!r} or a reference implementation state_dict)")
    model = _build_for_loading(cfg)
    _load_weights(model, sd, source)
    meta["num_parameters"] = count_parameters(model)
    return model.eval(), cfg, meta


def _members(data: Mapping[str, Any], source: str) -> list[Mapping[str, Any]]:
    """An ensemble payload's `members`, checked to be a list of mappings.

    Raises:
        CheckpointError: missing or of another shape, naming `source`.
    """
    members = data.get("members")
    if not isinstance(members, list) or not all(isinstance(m, Mapping) for m in members):
        raise CheckpointError(f"{source}: 'members' is missing or not a list of checkpoints")
    return members


def _ensemble_from_payload(data: Mapping[str, Any], source: str
                           ) -> tuple[ScoreEnsemble, ModelConfig, dict[str, Any]]:
    """A `ScoreEnsemble` from an ensemble file's payload; see `load_checkpoint`."""
    models = []
    for i, payload in enumerate(_members(data, source), start=1):
        if payload.get("format") == ENSEMBLE_FORMAT:
            raise CheckpointError(f"{source}: member {i} is itself an ensemble")
        models.append(_from_payload(payload, f"{source} member {i}")[0])
    box_from = data.get("box_from")
    try:
        model = ScoreEnsemble(models, str(data.get("combine", "mean")),
                              None if box_from is None else int(box_from))
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    meta = {k: v for k, v in data.items() if k != "members"}
    meta.update(ensemble_meta(model.member_cfgs, model.combine))
    meta["num_parameters"] = count_parameters(model)
    return model, model.cfg, meta


def is_ensemble(model: nn.Module) -> bool:
    """Whether a loaded model is an ensemble (`detector.ensemble.ScoreEnsemble`)."""
    return isinstance(_unwrap(model), ScoreEnsemble)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[VideoDETR | ScoreEnsemble, ModelConfig, dict[str, Any]]:
    """Read a Vigil checkpoint, an ensemble file or a reference `best_model.pth`, without
    running its pickle.

    Args:
        path: the file.
        device: where to put the model.
    Returns:
        (model in eval mode on `device`, its `ModelConfig`, meta: every stored entry except
        the weights; `meta["format"]` is "reference" for a converted reference checkpoint,
        `ENSEMBLE_FORMAT` for an ensemble, whose config is `detector.ensemble.ensemble_config`).
    Raises:
        CheckpointError: missing or unreadable file, a pickle that is not plain data, an unknown
            format, weights that do not fit the config, or ensemble members that cannot share a
            clip; the message names the file.
    """
    path = Path(path)
    data = _read(path, device)
    if data.get("format") == ENSEMBLE_FORMAT:
        model, cfg, meta = _ensemble_from_payload(data, str(path))
    else:
        model, cfg, meta = _from_payload(data, str(path))
    return model.to(device).eval(), cfg, meta


def _compact(sd: Mapping[str, Any]) -> dict[str, Any]:
    """`sd` with every float32 tensor that float16 holds exactly stored as float16: lossless
    (loading casts back to the parameter's float32), and it halves a frozen ImageNet backbone,
    whose weights Vigil ships as float16 (`detector.pretrained`)."""
    out = {}
    for key, value in sd.items():
        if (isinstance(value, torch.Tensor) and value.dtype == torch.float32
                and torch.equal(value.half().float(), value)):
            value = value.half()
        out[key] = value
    return out


def member_payloads(path: str | Path) -> list[dict[str, Any]]:
    """What a file gives an ensemble: a Vigil checkpoint's payload, or an ensemble's members'
    payloads, without training state (`RESUME_STATE`) and with float32 tensors that float16
    holds exactly stored as float16 (`_compact`).

    Raises:
        CheckpointError: an unreadable file, or a reference state_dict (import it first with
            `vigil import-reference`).
    """
    data = _read(Path(path), "cpu")
    if data.get("format") == ENSEMBLE_FORMAT:
        found = _members(data, str(path))
    elif data.get("format") == FORMAT:
        found = [data]
    else:
        raise CheckpointError(f"{path}: an ensemble member must be a Vigil checkpoint ({FORMAT}) "
                              f"or an ensemble, found {data.get('format') or 'a reference state_dict'!r}")
    return [{**{k: v for k, v in m.items() if k not in RESUME_STATE},
             "state_dict": _compact(m.get("state_dict") or {})} for m in found]


def ensemble_settings(path: str | Path) -> dict[str, Any]:
    """An ensemble file's `combine` and `box_from` ({} for a plain checkpoint), so a rebuilt
    ensemble (`vigil ensemble ENS --swap ...`) keeps them."""
    data = _read(Path(path), "cpu")
    if data.get("format") != ENSEMBLE_FORMAT:
        return {}
    return {"combine": data.get("combine", "mean"), "box_from": data.get("box_from")}


def payload_config(payload: Mapping[str, Any], source: str = "checkpoint") -> ModelConfig:
    """The `ModelConfig` of a checkpoint payload.

    Raises:
        CheckpointError: a config that does not parse.
    """
    try:
        return from_dict(ModelConfig, payload.get("model_config"), "model_config")
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def save_ensemble(path: str | Path, members: list[str | Path | Mapping[str, Any]],
                  combine: str = "mean", box_from: Optional[int] = None, **meta: Any) -> Path:
    """Write an ensemble file: the members' checkpoints, whole, in one file.

    Args:
        path: destination (written atomically).
        members: two or more Vigil checkpoint files (an ensemble file gives all its members;
            `member_payloads`), or payloads `member_payloads` returned; each is loaded and
            checked first.
        combine: `detector.ensemble.COMBINE_RULES`.
        box_from: the member (0-based) whose boxes the ensemble gives; None: the surest's.
        **meta: extra primitives to store (provenance, ...).
    Returns:
        The path written.
    Raises:
        CheckpointError: a member that cannot be read or is a reference state_dict, fewer than
            two members, or members that cannot share a clip (other classes, frames or span).
    """
    clash = sorted(set(meta) & {"format", "combine", "box_from", "members", "class_names",
                                "input", "num_parameters"})
    if clash:
        raise TypeError(f"ensemble meta may not set {clash[0]!r}")
    payloads: list[dict[str, Any]] = []
    names: list[str] = []
    for member in members:
        found = [dict(member)] if isinstance(member, Mapping) else member_payloads(member)
        payloads += found
        names += [str(member) if not isinstance(member, Mapping) else "payload"] * len(found)
    models = [_from_payload(p, f"{n} member" if n == "payload" else n)[0]
              for p, n in zip(payloads, names)]
    ensemble = ScoreEnsemble(models, combine, box_from)  # checks the members fit together
    # `vigil eval --split val` holds out what training held out: the members' split, when they
    # share one (the same data.val_fraction and data.split_seed).
    splits = {repr([((p.get("train_config") or {}).get("data") or {}).get(k)
                    for k in ("val_fraction", "split_seed")]) for p in payloads}
    shared = {"train_config": payloads[0]["train_config"]} if (
        len(splits) == 1 and payloads[0].get("train_config")) else {}
    payload = {
        **shared,
        "format": ENSEMBLE_FORMAT,
        "combine": combine,
        "box_from": box_from,
        "members": payloads,
        "class_names": list(ensemble.cfg.class_names),
        "input": to_dict(ensemble_input(ensemble.member_cfgs)),
        "num_parameters": count_parameters(ensemble),
        **{k: _plain(v, k) for k, v in meta.items()},
    }
    return _write(path, payload)

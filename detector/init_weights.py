"""Starting a training run from weights that already exist: Vigil's own pretrained detector,
or any checkpoint.

Kinetics weights cannot be downloaded on many of the machines Vigil runs on, and a few dozen of a
user's videos teach a detector from scratch little. So Vigil ships weights of its own, trained
on real footage and synthetic scenes (`detector/weights/<name>.pt`, each with a model card in
`docs/models/<name>.md`), and a training recipe can start from them (`train.init`):

- `scratch`: random initialisation (and the backbone's `pretrained` weights, if any);
- `vigil`: the shipped weights whose architecture matches the recipe's model;
- the name of shipped weights, e.g. `synth-cpu-v2` (pretrained on synthetic scenes only, the
  start of the real-footage recipe) or `real-cpu-v2`;
- a path: any Vigil checkpoint (or a reference `best_model.pth`), or an ensemble
  (`detector.ensemble`), whose member of the recipe's architecture is the start.

Weights are copied by name where the shapes agree; everything else keeps its fresh
initialisation and is listed in the log (a model with other classes keeps the backbone and
decoder but not the class head, for example). Architecture must otherwise match: a checkpoint
that fits no tensor at all is refused.
"""
from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path

from torch import nn

from .checkpoint import is_ensemble, load_checkpoint
from .config import ModelConfig
from .errors import CheckpointError
from .schema import to_dict

log = logging.getLogger(__name__)

# Package data (setup.cfg), so an installed Vigil has them too.
WEIGHTS_DIR = Path(str(files("detector") / "weights"))
# The model `model.checkpoint: vigil` serves and `vigil demo` shows: the newest shipped weights
# trained on real footage (and synthetic scenes, so that its boxes are trained too).
DEFAULT_MODEL = "real-cpu-v4"
# The name a config gives for it.
DEFAULT_MODEL_ALIAS = "vigil"
# Below this share of the model's values copied, a checkpoint is refused as another architecture.
MIN_FIT = 0.1


def shipped_weights() -> list[Path]:
    """The weight files shipped with Vigil, sorted by name."""
    return sorted(WEIGHTS_DIR.glob("*.pt"))


def default_weights() -> Path:
    """The shipped default model's file (`DEFAULT_MODEL`).

    Raises:
        CheckpointError: it is missing (a broken install).
    """
    path = WEIGHTS_DIR / f"{DEFAULT_MODEL}.pt"
    if not path.is_file():
        raise CheckpointError(f"Vigil's default model {path} is missing: reinstall Vigil, or set "
                              f"model.checkpoint to a file")
    return path


def resolve_model_path(value: str | Path) -> Path:
    """`vigil` (`DEFAULT_MODEL_ALIAS`) -> the shipped default model; the bare name of other
    shipped weights (e.g. `real-cpu-v2`: no folder, no suffix) -> that file; any other value
    unchanged."""
    if str(value) == DEFAULT_MODEL_ALIAS:
        return default_weights()
    text = str(value)
    if "/" not in text and "." not in text:
        shipped = shipped_by_name(text)
        if shipped is not None:
            return shipped
    return Path(value)


def architecture(cfg: ModelConfig) -> dict:
    """The parts of a model config that decide the tensors' shapes and meaning."""
    d = to_dict(cfg)
    d.pop("class_names", None)
    d["backbone"] = {k: v for k, v in d["backbone"].items() if k not in ("pretrained", "freeze")}
    d["input"] = {k: v for k, v in d["input"].items() if k in ("frames", "size")}
    d.pop("dropout", None)
    return d


def _configs(model: nn.Module, cfg: ModelConfig) -> list[ModelConfig]:
    """The configs of the detectors in a loaded model: its own, or an ensemble's members'."""
    return list(model.member_cfgs) if is_ensemble(model) else [cfg]


def find_shipped(cfg: ModelConfig) -> Path:
    """The shipped weights whose architecture is `cfg`'s (a shipped ensemble fits when one of its
    members does; `initialise` then starts from that member).

    Raises:
        CheckpointError: none fits; the message lists what is shipped.
    """
    want = architecture(cfg)
    # The default model first, then newest version first: a later version of the same
    # architecture supersedes an earlier one (sorted() is stable).
    candidates = sorted(shipped_weights(), reverse=True)
    for path in sorted(candidates, key=lambda p: p.stem != DEFAULT_MODEL):
        try:
            model, other, _ = load_checkpoint(path)
        except CheckpointError as exc:
            log.warning("shipped weights %s cannot be read: %s", path, exc)
            continue
        if any(architecture(c) == want for c in _configs(model, other)):
            return path
    names = ", ".join(p.stem for p in shipped_weights()) or "none"
    raise CheckpointError(f"train.init=vigil: no shipped weights fit this model's architecture "
                          f"(shipped: {names}; see docs/models/); use a recipe built on one of "
                          f"them, train.init=scratch, or a checkpoint path")


def shipped_by_name(name: str) -> Path | None:
    """The shipped weights called `name` (`detector/weights/<name>.pt`), or None."""
    return next((p for p in shipped_weights() if p.stem == name), None)


def initialise(model: nn.Module, cfg: ModelConfig, init: str) -> str | None:
    """Copy starting weights into `model` as `init` says.

    Args:
        model: a freshly built detector of config `cfg`.
        cfg: its config.
        init: `scratch`, `vigil`, the name of shipped weights, or a checkpoint path.
    Returns:
        The path the weights came from, or None for `scratch`.
    Raises:
        CheckpointError: no such file, an unreadable one, or one that fits no tensor.
    """
    if init == "scratch":
        return None
    path = (find_shipped(cfg) if init == "vigil"
            else shipped_by_name(init) or Path(init).expanduser())
    source, _, _ = load_checkpoint(path)
    if is_ensemble(source):
        # An ensemble starts the run from its member of this architecture.
        want = architecture(cfg)
        fits = [m for m, c in zip(source.members, source.member_cfgs) if architecture(c) == want]
        if not fits:
            names = ", ".join(f"{c.backbone.name} ({c.backbone.motion})"
                              for c in source.member_cfgs)
            raise CheckpointError(f"{path} is an ensemble, and none of its members ({names}) "
                                  f"has this recipe's architecture: start from one that has")
        log.info("train.init: %s is an ensemble; starting from its member of this "
                 "architecture (%s)", path, cfg.backbone.name)
        source = fits[0]
    theirs = source.state_dict()
    ours = model.state_dict()
    copied, skipped = [], []
    for key, value in ours.items():
        other = theirs.get(key)
        if other is not None and other.shape == value.shape:
            ours[key] = other.to(value.dtype)
            copied.append(key)
        else:
            skipped.append(key)
    n = sum(ours[k].numel() for k in copied)
    total = sum(v.numel() for v in ours.values())
    if n < MIN_FIT * total:
        # A few small tensors (biases of the heads, BatchNorm counters) fit almost any model;
        # starting from those alone is a fresh model under another name.
        raise CheckpointError(f"{path}: almost no tensor of it fits this model ({n:,} of "
                              f"{total:,} values); train.init needs a checkpoint of the same "
                              f"architecture")
    model.load_state_dict(ours)
    log.info("train.init: %d of %d tensors (%s values) from %s%s", len(copied), len(ours),
             f"{n:,}", path, f"; kept fresh: {', '.join(skipped)}" if skipped else "")
    return str(path)


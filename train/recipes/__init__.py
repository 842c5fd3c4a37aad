"""The shipped training recipes: package data (`train/recipes/*.yaml`), found with
`importlib.resources`, so an installed `vigil` has them as a source checkout does (where
`configs/train/*.yaml` are links to them, the paths the docs use).

Light on purpose (no torch, no OpenCV): `vigil train --help` names the default recipe's path.
"""
from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path

log = logging.getLogger(__name__)

# The technical report's recipe: what `TrainConfig()`'s defaults are and `seed.yaml` restates.
DEFAULT_RECIPE = "seed"
# The small CPU model `vigil demo`, `vigil bench model` and the quick-start train.
CPU_RECIPE = "cpu-small"


def recipe_path(name: str) -> Path:
    """A shipped training recipe by name (`cpu-small`, `cpu-small.yaml`).

    Returns:
        The path of the packaged `train/recipes/<name>.yaml` (present in a source checkout and in
        an installed wheel alike; it may not exist when `name` names no recipe).
    """
    stem = name[:-len(".yaml")] if name.endswith(".yaml") else name
    return Path(str(files("train") / "recipes" / f"{stem}.yaml"))


def resolve_recipe(path: str | Path) -> Path:
    """The recipe file `--config PATH` means.

    An existing file is itself. A missing one written as a shipped recipe's README path
    (`configs/train/cpu-small.yaml`) or bare name (`cpu-small`, `cpu-small.yaml`) is that packaged
    recipe, so README commands work outside a source checkout. Anything else stays as given (the
    loader then names the missing file).
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.parent.parts[-2:] == ("configs", "train") or path.parent == Path("."):
        shipped = recipe_path(path.name)
        if shipped.is_file():
            log.info("%s: using the shipped recipe %s", path, shipped)
            return shipped
    return path

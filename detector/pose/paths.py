"""Where the shipped pose collapse model lives, and what `vigil` means for it (no torch here:
the daemon's config module resolves the path before any model is loaded)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..errors import CheckpointError

# The shipped pose collapse model (package data): what `model.pose.checkpoint: vigil` serves.
DEFAULT_POSE_MODEL = "pose-collapse-v1"
# Beside, not among, the video detector's weights (`detector/weights/*.pt`, which
# `init_weights.shipped_weights` lists as starting points for video recipes).
POSE_WEIGHTS_DIR = Path(str(files("detector") / "weights" / "pose"))
ALIAS = "vigil"


def resolve_pose_path(value: str | Path) -> Path:
    """`vigil` -> the shipped pose collapse model's file; any other value unchanged.

    Raises:
        CheckpointError: `vigil` was asked for and the file is missing (a broken install).
    """
    if str(value) != ALIAS:
        return Path(value)
    path = POSE_WEIGHTS_DIR / f"{DEFAULT_POSE_MODEL}.pt"
    if not path.is_file():
        raise CheckpointError(f"Vigil's pose collapse model {path} is missing: reinstall Vigil, "
                              f"or set model.pose.checkpoint to a file (or model.pose to null)")
    return path

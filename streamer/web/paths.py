"""Which files the review page may serve: evidence under `data_dir`, nothing else.

A relative path from an alert (`events/<camera>/<day>/<event>/start.jpg`) or from a URL is
served only when every part is a plain name (no `..`, no absolute path, no NUL, no backslash;
percent-encoding is decoded once by the WSGI server, and a part still holding `%` is refused, so
`%2e%2e` and `%252e%252e` both fail), it lies under one of `SERVED` folders, and its real path,
symlinks followed, stays inside `data_dir` (a symlink pointing out is refused, never opened).
The journal, the keys and everything else in `data_dir` are never served.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Optional

# The folders of data_dir the page serves files from: evidence and the review dataset's clips.
SERVED = ("events", "review/clips")


class PathRefused(ValueError):
    """A path the page does not serve (outside the served folders, traversal, symlink escape)."""


def evidence_path(data_dir: Path, rel: str) -> Path:
    """The file `rel` (relative to `data_dir`) points at, after the checks above.

    Returns:
        The real path (may not exist: the caller says "missing").
    Raises:
        PathRefused: with the reason.
    """
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel or "%" in rel:
        raise PathRefused("not a plain relative path")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or any(part in ("", ".", "..") for part in rel.split("/")):
        raise PathRefused("not a plain relative path")
    if not any(pure.parts[:len(PurePosixPath(s).parts)] == PurePosixPath(s).parts
               for s in SERVED):
        raise PathRefused(f"only files under {', '.join(SERVED)} are served")
    root = Path(os.path.realpath(data_dir))
    real = Path(os.path.realpath(root / pure))
    if real != root and root not in real.parents:
        raise PathRefused("the path leads outside data_dir")
    return real


def existing_evidence(data_dir: Path, rel: Optional[str]) -> tuple[Optional[Path], Optional[str]]:
    """(path, None) for a served file that exists; (None, why) otherwise (for the page)."""
    if not rel:
        return None, "none was written for this event"
    try:
        path = evidence_path(data_dir, rel)
    except PathRefused as exc:
        return None, f"refused: {exc}"
    if not path.is_file():
        return None, "the file is missing (deleted by retention or by hand)"
    return path, None

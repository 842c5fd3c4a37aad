"""On-disk cache of decoded, resized clips, so that only the first epoch decodes video.

Each entry is one `.npy` file holding a uint8 (N, H, W, 3) RGB array. Its key is a SHA-1 over
  * the video's content fingerprint: the SHA-1 of the whole file when it is at most
    `full_hash_limit` bytes (64 MiB by default: a training clip of a few seconds is far
    smaller), otherwise of its size plus its first and last MiB (reading a multi-GB file every
    epoch would defeat the cache; a file edited only in its middle with the same size would be
    missed, which is documented and accepted). Renaming or touching a file keeps its entries.
  * the preprocessing: the frame indices decoded and the output size, plus a format version.

The fingerprint of a file is remembered per (path, size, mtime) by the instance, so later epochs
read no video bytes at all. Writes go to a temporary file in the same directory and are moved
into place with `os.replace`, which is atomic: DataLoader workers (or two runs) filling the same
cache never see a half-written entry. An unreadable entry is decoded again and overwritten.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import video_io

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_MIB = 1 << 20


def file_fingerprint(path: str | Path, full_hash_limit: int = 64 * _MIB) -> str:
    """Content fingerprint of a file (see the module docstring for what is hashed).

    Args:
        path: the file.
        full_hash_limit: files up to this many bytes are hashed whole.
    Returns:
        40 hex digits.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha1()
    with path.open("rb") as f:
        if size <= full_hash_limit:
            h.update(b"full:")
            for chunk in iter(lambda: f.read(_MIB), b""):
                h.update(chunk)
        else:
            h.update(f"partial:{size}:".encode())
            h.update(f.read(_MIB))
            f.seek(max(size - _MIB, 0))
            h.update(f.read(_MIB))
    return h.hexdigest()


class ClipCache:
    """Decoded clips on disk, keyed by video content and preprocessing.

    Args:
        dir: cache directory (created if missing).
        full_hash_limit: see `file_fingerprint`.
    Attributes:
        hits, misses: lookups served from disk / decoded, for logging and tests.
    """

    def __init__(self, dir: str | Path, full_hash_limit: int = 64 * _MIB) -> None:
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.full_hash_limit = full_hash_limit
        self.hits = 0
        self.misses = 0
        self._fingerprints: dict[tuple[str, int, int], str] = {}

    def fingerprint(self, video: str | Path) -> str:
        """The video's content fingerprint, hashed once per (path, size, mtime)."""
        video = Path(video)
        st = video.stat()
        memo_key = (str(video.resolve()), st.st_size, st.st_mtime_ns)
        fp = self._fingerprints.get(memo_key)
        if fp is None:
            fp = file_fingerprint(video, self.full_hash_limit)
            self._fingerprints[memo_key] = fp
        return fp

    def key(self, video: str | Path, indices: Sequence[int] | np.ndarray,
            size: Optional[Sequence[int]]) -> str:
        """Cache key (40 hex digits) of a video decoded at `indices` and resized to `size`."""
        prep = json.dumps({"v": _FORMAT_VERSION,
                           "indices": [int(i) for i in np.asarray(indices).reshape(-1)],
                           "size": None if size is None else [int(s) for s in size]},
                          separators=(",", ":"))
        return hashlib.sha1(f"{self.fingerprint(video)}|{prep}".encode()).hexdigest()

    def path_for(self, key: str) -> Path:
        """Where the entry of `key` lives (two-level fan-out keeps directories small)."""
        return self.dir / key[:2] / f"{key}.npy"

    def get_or_decode(self, video: str | Path, indices: Sequence[int] | np.ndarray,
                      size: Optional[Sequence[int]]) -> np.ndarray:
        """The clip from the cache, or decoded with `video_io.read_frames` and stored.

        Args:
            video: the video file.
            indices: frame numbers to decode (output order).
            size: (H, W) to resize to, or None for the file's size.
        Returns:
            (len(indices), H, W, 3) uint8 RGB array.
        """
        entry = self.path_for(self.key(video, indices, size))
        clip = load_npy(entry, np.uint8, len(indices), "decoding")
        if clip is not None:
            self.hits += 1
            return clip
        self.misses += 1
        clip = video_io.read_frames(video, indices, size)
        try:
            self._store(entry, clip)
        except OSError as exc:
            # A full or read-only disk slows training down; it must not stop it.
            log.warning("%s: cannot write cache entry (%s); continuing without it", entry, exc)
        return clip

    def _store(self, entry: Path, clip: np.ndarray) -> None:
        store_npy(entry, clip)


def load_npy(entry: Path, dtype, frames: int, redo: str, mmap: bool = False
             ) -> Optional[np.ndarray]:
    """A cache entry written by `store_npy`, or None when it is absent or unusable (not of
    `dtype`, not 4-D with `frames` frames, unreadable: each logged once here, so the caller
    computes it again, `redo` naming how: "decoding", "computing").

    Args:
        entry: the `.npy` file.
        dtype: the numpy dtype the entry must have.
        frames: its first dimension.
        redo: what the caller does instead, for the warning.
        mmap: memory-map it (read-only) instead of reading it whole.
    """
    if not entry.exists():
        return None
    try:
        arr = np.load(entry, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable cache entry (%s); %s again", entry, exc, redo)
        return None
    if arr.dtype == dtype and arr.ndim == 4 and arr.shape[0] == frames:
        return arr
    log.warning("%s: cache entry has an unexpected shape %s; %s again", entry, arr.shape, redo)
    return None


def store_npy(entry: Path, array: np.ndarray) -> None:
    """Write `array` to `entry` (.npy) atomically: a temporary file in the same directory, then
    `os.replace`, so a concurrent reader never sees half an entry."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, entry)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

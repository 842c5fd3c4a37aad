"""Which video model serves: its file, a content hash, when it was loaded.

`ServingModel` is what the daemon shows about its model (`Daemon.serving_model()`, the heartbeat's
`model` entry, `vigil_model_info`); `FileStamp` is how a reload notices that the checkpoint file
was replaced in place (same path, new weights) without hashing it on every SIGHUP.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

# A short hash is enough to tell models apart on a page or in a label (git's abbreviation).
SHORT_SHA = 12
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileStamp:
    """What `os.stat` says about a file: a different stamp means a different file or content."""
    size: int
    mtime_ns: int
    inode: int


def file_stamp(path: str | Path) -> Optional[FileStamp]:
    """The file's stamp, or None when it cannot be read (missing, no permission)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStamp(st.st_size, st.st_mtime_ns, st.st_ino)


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (a 160 MB reference model: ~0.3 s).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ServingModel:
    """The video model the inference worker runs now. Replaced, never mutated.

    Attributes:
        checkpoint: the file's absolute path (as configured, `vigil` resolved).
        sha256: hex SHA-256 of the file when it was loaded.
        stamp: the file's `FileStamp` when it was loaded (None: unreadable since).
        loaded_at: wall-clock time (epoch seconds) it started serving.
        classes: the classes it scores, in its order.
        frames, size: its input: frames per window and [H, W].
        precision: the `model.precision` setting it was loaded with (`auto` or forced).
        autocast: the autocast dtype it runs under (`bfloat16`, `float16`) or `none`.
        runtime: `torch` or `onnxruntime`.
        device: where it runs (`cpu`, `cuda:0`).
    """
    checkpoint: Path
    sha256: str
    stamp: Optional[FileStamp]
    loaded_at: float
    classes: tuple[str, ...]
    frames: int
    size: tuple[int, int]
    precision: str
    autocast: str
    runtime: str
    device: str

    @classmethod
    def of(cls, checkpoint: Path, precision: str, model_cfg: Any, runtime: str, worker: Any,
           sha256: Optional[str] = None, stamp: Optional[FileStamp] = None) -> "ServingModel":
        """Describe a loaded model.

        Args:
            checkpoint: its file; precision: the `model.precision` setting it was loaded with.
            model_cfg: its `detector.config.ModelConfig`; runtime: `torch` or `onnxruntime`.
            worker: the `InferenceWorker` that runs it (`device`, `autocast_dtype`).
            sha256, stamp: the file's hash and stamp when it was read (None: taken now).
        Raises:
            OSError: the file cannot be read for its hash.
        """
        inp = model_cfg.input
        dtype = worker.autocast_dtype
        return cls(checkpoint=Path(checkpoint),
                   sha256=sha256 if sha256 is not None else sha256_of(checkpoint),
                   stamp=stamp if stamp is not None else file_stamp(checkpoint),
                   loaded_at=time.time(), classes=tuple(model_cfg.class_names),
                   frames=int(inp.frames), size=(int(inp.size[0]), int(inp.size[1])),
                   precision=precision,
                   autocast=str(dtype).replace("torch.", "") if dtype is not None else "none",
                   runtime=runtime, device=str(worker.device))

    @property
    def name(self) -> str:
        """The file name (what logs and metric labels show; never the whole path)."""
        return self.checkpoint.name

    @property
    def short_sha(self) -> str:
        return self.sha256[:SHORT_SHA]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the heartbeat's `model` entry and what a status page shows."""
        return {"checkpoint": str(self.checkpoint), "name": self.name, "sha256": self.sha256,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
                "classes": list(self.classes), "frames": self.frames, "size": list(self.size),
                "precision": self.precision, "autocast": self.autocast,
                "runtime": self.runtime, "device": self.device}

    def same_file(self, path: Path, precision: str) -> bool:
        """Whether `model.checkpoint: path` with `model.precision: precision` is what serves:
        same path, same setting, and the file not replaced since it was loaded."""
        return (Path(path) == self.checkpoint and precision == self.precision
                and self.stamp is not None and file_stamp(path) == self.stamp)

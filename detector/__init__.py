"""The detector: model, matcher, losses, post-processing and checkpoint I/O.

`build_model`, `load_checkpoint` and `save_checkpoint` are exported lazily (PEP 562) so that
`import detector.errors`, which the `vigil` command does at start-up, does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_model", "load_checkpoint", "save_checkpoint"]

_EXPORTS = {"build_model": "model", "load_checkpoint": "checkpoint",
            "save_checkpoint": "checkpoint"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

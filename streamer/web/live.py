"""What the running daemon tells the review page: its cameras, their newest frame, its model.

The page reads the journal and the evidence itself (`store.py`, `paths.py`); only what lives in
the daemon's memory comes through a `LiveView`, built by the daemon from three read-only
callables, so the web package knows nothing of the daemon's insides. Every call is made from a
web request thread: the callables must only read state the daemon replaces rather than mutates
(its camera snapshot) or guards with a lock (ring buffers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass
class LiveView:
    """Read-only access to a running daemon.

    Args:
        cameras: () -> [{"name", "url" (masked), "enabled", "up", "fps", "last_frame_age_s",
            "reconnects"}] for every configured camera (`up` None: not running).
        frame: (camera) -> the newest frame, RGB uint8 (H, W, 3), or None.
        model: () -> {"checkpoint": path as configured, "name": file name, "classes": [...],
            "device": str} of the model that serves now.
        recent: (camera) -> (every frame its display ring holds, RGB uint8 (N, H, W, 3), oldest
            first; fps) or None: the last seconds a "missed" mark on a camera saves.
    """
    cameras: Callable[[], list[dict]] = field(default=lambda: [])
    frame: Callable[[str], Optional[np.ndarray]] = field(default=lambda name: None)
    model: Callable[[], dict] = field(default=lambda: {})
    recent: Callable[[str], Optional[tuple[np.ndarray, float]]] = field(
        default=lambda name: None)

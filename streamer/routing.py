"""Which model path scores which event class for which camera.

Two paths can score a window of a camera: the video detector (every class it was trained on)
and the pose path (one class, collapse by default). When both can score a class, the pose path
owns it: out of fold on real footage its collapse alarms on ordinary scenes and daily
activities were a small fraction of the video model's (docs/models/pose-collapse-v1.md,
"Pose, video or both"). Each camera watches the classes its `events` setting names (all the
detectable ones when it names none), so a camera that watches only collapse never runs the
video detector, and one that watches only fights never runs BlazePose.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from detector.errors import ConfigError

from .types import WindowResult


@dataclass(frozen=True)
class EventRouting:
    """The classes each path provides.

    Attributes:
        video: the video detector's classes (in its order).
        pose: the pose path's class, or None when the pose path is off.
    """
    video: tuple[str, ...]
    pose: Optional[str] = None

    @property
    def classes(self) -> list[str]:
        """Every class some path detects: the video classes, then the pose class if new."""
        return list(self.video) + ([self.pose] if self.pose and self.pose not in self.video
                                   else [])

    def watched(self, events: Optional[Sequence[str]]) -> list[str]:
        """The classes a camera with this `events` setting watches (None: all), in order."""
        return self.classes if events is None else [c for c in self.classes if c in events]

    def video_classes(self, events: Optional[Sequence[str]]) -> set[str]:
        """The watched classes the video detector scores for this camera."""
        return {c for c in self.watched(events) if c in self.video and c != self.pose}

    def needs_video(self, events: Optional[Sequence[str]]) -> bool:
        return bool(self.video_classes(events))

    def needs_pose(self, events: Optional[Sequence[str]]) -> bool:
        return self.pose is not None and self.pose in self.watched(events)

    def check(self, cameras: Iterable) -> None:
        """Refuse a camera that watches a class no path detects.

        Args:
            cameras: `CameraConfig`s in config order (their index names the key).
        Raises:
            ConfigError: `cameras[i].events: ...` naming the class and what is detectable.
        """
        for i, cam in enumerate(cameras):
            events = cam.settings.events
            missing = [e for e in events or () if e not in self.classes]
            if missing:
                pose_hint = ("" if self.pose is not None or missing[0] != "collapse"
                             else "; model.pose is off, turn it on for collapse")
                raise ConfigError(
                    f"cameras[{i}].events: {cam.name} watches {missing[0]!r}, which no model "
                    f"here detects (the models detect {', '.join(self.classes)}){pose_hint}")

    def video_result(self, result: WindowResult, events: Optional[Sequence[str]]
                     ) -> Optional[WindowResult]:
        """The video detector's result with only the classes it owns for this camera (None
        when that leaves none)."""
        keep = self.video_classes(events)
        scores = {k: v for k, v in result.scores.items() if k in keep}
        if not scores:
            return None
        return result if len(scores) == len(result.scores) else dataclasses.replace(
            result, scores=scores)

"""The event state machine: smoothed window scores -> `vigil.alert/1` start/update/end messages.

Per (camera, label) there is one `ScoreSmoother` and at most one open event:

* start: when the smoother becomes active (on for `min_windows` consecutive windows);
* update: at most once per `update_interval_s` of capture time, and only when material (the
  smoothed score moved by >= `min_score_delta` since the last published message, or the box's IoU
  with the last published box fell below `min_box_iou`);
* end, reason `cleared`: once the smoother was an off-candidate for `cooldown_s` of capture time;
  `close_camera` (`camera_lost`) and `close_all` (`shutdown`, `reload`) end open events at once;
  `end_message` builds the end of an event orphaned by an unclean stop (`restart`).

Gating (zones, schedules). `observe(result, gate)` asks `gate(camera, label, box)` before an
event starts; a reason (`"zone"`, `"schedule"`) keeps it from starting. Such an event is tracked
SILENTLY: counted once in `vigil_events_suppressed_total{camera,label,reason}`, ended by the same
cooldown as a real one (no message), and promoted to a real `start` if the gate opens while its
evidence is still on (the action moved into a zone, the schedule began). An event that started
is never gated: it runs to its end.

Per-camera smoothing: `resolver(camera, label)` gives each (camera, class) its settings (the
daemon passes `ServeConfig.smoothing_for`: defaults < classes < the camera's overrides).

Durations of the state machine (cooldown, update interval) are measured between window capture
times on the MONOTONIC clock (`WindowResult.t_end_mono`), so a backlog of windows processed late
behaves as it would have live, and a step of the wall clock (NTP, a manual change, a box booting
with an old clock) neither delays an `end`, nor mutes updates, nor keeps an event open. Wall time
(`t_start_wall`, `t_end_wall`, the injected `clock`) is only shown: the message's `window` and
the event id.

Messages come back WITHOUT `seq`, `published_at` and `latency_s`: `Journal.append` assigns them.
They carry internal fields the journal strips: `_t_end_mono` (capture time of the window's last
frame, for the latency), `_t_end_wall`, `_end_seq` (the camera's frame counter at that frame, for
the evidence clip). The evidence writer fills `snapshot` (start) and `clip` (end).

Not thread-safe: one tracker, used from the thread that consumes the worker's results.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

from .config import SmoothingConfig
from .protocol import ALERT_SCHEMA_V1, END_REASONS, iso_utc
from .smoother import ScoreSmoother
from .types import WindowResult

log = logging.getLogger(__name__)

def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes (plain floats: one pair per window, no tensors needed)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def end_message(last: dict, reason: str) -> dict:
    """The `end` of an event whose last journalled message is `last` (orphans after a crash).

    Args:
        last: a message of the event (e.g. from `Journal.open_events()`).
        reason: one of END_REASONS, usually `restart`.
    Returns:
        A message for `Journal.append` (seq, published_at, latency_s removed).
    """
    if reason not in END_REASONS:
        raise ValueError(f"unknown end reason {reason!r}")
    msg = {k: v for k, v in last.items()
           if k not in ("seq", "published_at", "latency_s") and not k.startswith("_")}
    msg.update(type="end", reason=reason, snapshot=None, clip=None)
    return msg


# gate(camera, label, smoothed box xyxy) -> None (may start) or why it may not.
StartGate = Callable[[str, str, Sequence[float]], Optional[str]]


@dataclass
class _Silent:
    """An event kept from starting by the gate: tracked without messages."""
    reason: str
    below_since: Optional[float] = None


@dataclass
class _Open:
    """An open event and what was last published for it."""
    event_id: str
    pub_t: float                 # monotonic capture time of the last start/update's window
    pub_score: float
    pub_box: tuple[float, ...]
    below_since: Optional[float] = None    # monotonic capture time, like pub_t


class EventTracker:
    """Turns a stream of `WindowResult`s into alert messages.

    Args:
        smoothing_cfg: the `smoothing:` section; its `classes` overrides apply to their class.
        class_names: the model's classes, e.g. ["fight", "collapse"]; others are ignored.
        clock: wall clock (epoch seconds), used for event ids.
        metrics: optional `VigilMetrics`; `vigil_events_active` and
            `vigil_events_suppressed_total` are kept in step.
        counter_start: first per-daemon event counter value.
        resolver: (camera, label) -> that camera's `SmoothingConfig` for the class; None = the
            section's class overrides only.
    """

    def __init__(self, smoothing_cfg: SmoothingConfig, class_names: Iterable[str],
                 clock: Callable[[], float] = time.time, metrics: Any = None,
                 counter_start: int = 1,
                 resolver: Optional[Callable[[str, str], SmoothingConfig]] = None) -> None:
        smoothing_cfg.validate("smoothing")
        self.cfg = smoothing_cfg
        self.class_names = list(class_names)
        for label in sorted(set(smoothing_cfg.classes) - set(self.class_names)):
            log.warning("smoothing.classes.%s: the model has no class %r (its classes: %s); "
                        "those settings are unused", label, label, ", ".join(self.class_names))
        # One section per class: `smoothing.classes` overrides apply to that class only.
        self._class_cfg = {label: smoothing_cfg.for_class(label) for label in self.class_names}
        self._resolver = resolver
        self.clock = clock
        self.metrics = metrics
        self._counter = counter_start
        self._smoothers: dict[tuple[str, str], ScoreSmoother] = {}
        self._open: dict[tuple[str, str], _Open] = {}
        self._silent: dict[tuple[str, str], _Silent] = {}
        self._last: dict[str, WindowResult] = {}
        self._last_score: dict[tuple[str, str], tuple[float, tuple[float, ...]]] = {}

    # ---- queries -------------------------------------------------------------------------------
    def open_events(self) -> dict[tuple[str, str], str]:
        """(camera, label) -> event_id of every open event."""
        return {key: ev.event_id for key, ev in self._open.items()}

    def silent_events(self) -> dict[tuple[str, str], str]:
        """(camera, label) -> reason, for every event the gate keeps from starting."""
        return {key: sil.reason for key, sil in self._silent.items()}

    def settings(self, camera: str, label: str) -> SmoothingConfig:
        """The smoothing of (camera, label): the resolver's, else the class's."""
        if self._resolver is not None:
            return self._resolver(camera, label)
        return self._class_cfg.get(label, self.cfg)

    def smoother(self, camera: str, label: str) -> ScoreSmoother:
        """The (camera, label) smoother (created on first use)."""
        key = (camera, label)
        if key not in self._smoothers:
            self._smoothers[key] = ScoreSmoother(self.settings(camera, label))
        return self._smoothers[key]

    # ---- input ---------------------------------------------------------------------------------
    def observe(self, result: WindowResult, gate: Optional[StartGate] = None) -> list[dict]:
        """Feed one window; returns the messages it caused (possibly none), in order.

        Args:
            result: the worker's verdict on one camera window.
            gate: asked before an event starts (see the module docstring); None = always.
        Returns:
            `vigil.alert/1` messages without seq/published_at/latency_s.
        """
        t = result.t_end_mono       # durations on the monotonic clock; wall time is only shown
        self._last[result.camera] = result
        out: list[dict] = []
        for label in self.class_names:
            cs = result.scores.get(label)
            if cs is None:
                continue
            key = (result.camera, label)
            sm = self.smoother(*key)
            cfg = sm.cfg
            score = sm.update(cs.score, cs.box)
            box = sm.box if sm.box is not None else tuple(cs.box)
            self._last_score[key] = (score, box)
            ev = self._open.get(key)
            if ev is None:
                if sm.active:
                    msg = self._start_or_hold(key, result, score, box, gate, t)
                    if msg is not None:
                        out.append(msg)
                continue
            if sm.off_candidate:
                if ev.below_since is None:
                    ev.below_since = t
                if t - ev.below_since >= cfg.cooldown_s:
                    out.append(self._end(key, result, "cleared"))
                continue
            ev.below_since = None
            if t - ev.pub_t >= cfg.update_interval_s and (
                    abs(score - ev.pub_score) >= cfg.min_score_delta
                    or box_iou(box, ev.pub_box) < cfg.min_box_iou):
                out.append(self._message("update", ev.event_id, result, label, score, box))
                ev.pub_t, ev.pub_score, ev.pub_box = t, score, box
        return out

    def _start_or_hold(self, key: tuple[str, str], result: WindowResult, score: float,
                       box: tuple[float, ...], gate: Optional[StartGate], t: float
                       ) -> Optional[dict]:
        """An active smoother without an open event: start it, or track it silently."""
        sm = self._smoothers[key]
        silent = self._silent.get(key)
        reason = gate(key[0], key[1], box) if gate is not None else None
        if reason is None and (silent is None or sm.on_condition):
            self._silent.pop(key, None)
            return self._start(result, key[1], score, box)
        if silent is None:
            silent = self._silent[key] = _Silent(reason or "gate")
            if self.metrics is not None:
                self.metrics.events_suppressed.labels(camera=key[0], label=key[1],
                                                      reason=silent.reason).inc()
            log.info("%s on %s (score %.2f) not alerted: %s", key[1], key[0], score,
                     "outside the required zones" if silent.reason == "zone" else
                     "outside the camera's schedule" if silent.reason == "schedule"
                     else silent.reason)
        if sm.off_candidate:
            if silent.below_since is None:
                silent.below_since = t
            if t - silent.below_since >= sm.cfg.cooldown_s:
                sm.deactivate()
                del self._silent[key]
        else:
            silent.below_since = None
        return None

    def close_camera(self, camera: str, reason: str = "camera_lost") -> list[dict]:
        """End the camera's open events (it stopped delivering frames) and forget its history.

        Returns:
            One `end` message per open event of the camera.
        """
        out = [self._end(key, self._last[camera], reason)
               for key in sorted(self._open) if key[0] == camera]
        for key in [k for k in self._smoothers if k[0] == camera]:
            del self._smoothers[key]
            self._last_score.pop(key, None)
            self._silent.pop(key, None)
        return out

    def forget(self, camera: str) -> None:
        """Drop the smoothing history of the camera's classes that have no open event (it stops
        being analysed for a while: hours-old scores must not carry over)."""
        for key in [k for k in self._smoothers if k[0] == camera and k not in self._open]:
            del self._smoothers[key]
            self._last_score.pop(key, None)
            self._silent.pop(key, None)

    def close_all(self, reason: str = "shutdown") -> list[dict]:
        """End every open event (`shutdown`, `reload`) and forget all history."""
        out: list[dict] = []
        for camera in sorted({cam for cam, _ in self._open} | {cam for cam, _ in self._smoothers}):
            out.extend(self.close_camera(camera, reason))
        return out

    # ---- messages ------------------------------------------------------------------------------
    def _start(self, result: WindowResult, label: str, score: float,
               box: tuple[float, ...]) -> dict:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        event_id = f"{result.camera}-{stamp}-{self._counter:04d}"
        self._counter += 1
        self._open[(result.camera, label)] = _Open(event_id, result.t_end_mono, score, box)
        self._gauge(result.camera, label, 1)
        log.info("event %s started: %s on %s (score %.2f)", event_id, label, result.camera, score)
        return self._message("start", event_id, result, label, score, box)

    def _end(self, key: tuple[str, str], result: WindowResult, reason: str) -> dict:
        if reason not in END_REASONS:
            raise ValueError(f"unknown end reason {reason!r}")
        ev = self._open.pop(key)
        score, box = self._last_score.get(key, (ev.pub_score, ev.pub_box))
        sm = self._smoothers.get(key)
        if sm is not None:
            sm.deactivate()
        self._gauge(key[0], key[1], 0)
        log.info("event %s ended (%s)", ev.event_id, reason)
        msg = self._message("end", ev.event_id, result, key[1], score, box)
        msg["reason"] = reason
        if reason != "cleared":
            # Closed by the daemon, not by a window: no capture time to measure latency from.
            msg.pop("_t_end_mono")
        return msg

    def _gauge(self, camera: str, label: str, value: int) -> None:
        if self.metrics is not None:
            self.metrics.events_active.labels(camera=camera, label=label).set(value)

    @staticmethod
    def _message(kind: str, event_id: str, result: WindowResult, label: str, score: float,
                 box: Sequence[float]) -> dict:
        w, h = result.frame_size
        nbox = [min(max(float(v), 0.0), 1.0) for v in box]
        box_px = [int(round(nbox[0] * w)), int(round(nbox[1] * h)),
                  int(round(nbox[2] * w)), int(round(nbox[3] * h))]
        score = float(score) if math.isfinite(score) else 0.0
        return {
            "schema": ALERT_SCHEMA_V1,
            "type": kind,
            "event_id": event_id,
            "camera": result.camera,
            "label": label,
            "score": round(score, 4),
            "box": [round(v, 4) for v in nbox],
            "box_px": box_px,
            "frame_size": [int(w), int(h)],
            "window": {"start": iso_utc(result.t_start_wall), "end": iso_utc(result.t_end_wall)},
            "snapshot": None,
            "clip": None,
            "reason": None,
            "_t_end_mono": result.t_end_mono,
            "_t_end_wall": result.t_end_wall,
            "_end_seq": result.end_seq,
        }

"""`vigil serve --check --explain CAMERA`: every effective setting of one camera, and where it
comes from.

The precedence is `streamer/precedence.py`'s: each section below names its layers, least
specific first, and each key the layer it was taken from. A key a future issue adds to
`CameraSettings` (or another layer list) shows up here with no change.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

from detector.schema import to_dict

from .comms.discovery import Topics
from .comms.settings import masked_notify_url
from .config import CameraConfig, CameraSettings, ServeConfig
from .precedence import DEFAULT_SOURCE, Layer, resolve
from .regions.polygons import coverage
from .schedule import compile_schedule, describe_schedule


def capture_layers(cfg: ServeConfig, cam: CameraConfig) -> list[Layer]:
    """built-in default < `defaults` < `cameras[i]` for the `CameraSettings` keys."""
    default = to_dict(CameraSettings())
    section = set(cfg.explicit.get("defaults", frozenset()))
    own = set(cam.own) & set(default)
    effective = to_dict(cam.settings)
    defaults = to_dict(cfg.defaults)
    return [Layer(DEFAULT_SOURCE, default),
            Layer("defaults", {k: defaults[k] for k in default if k in section}),
            Layer(cam.where, {k: effective[k] for k in default if k in own})]


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(layers: Sequence[Layer], keys: Optional[Sequence[str]] = None) -> list[str]:
    resolved = resolve(layers)
    keys = list(keys) if keys is not None else list(resolved)
    width = max((len(k) for k in keys), default=0)
    vwidth = max((len(_fmt(resolved[k][0])) for k in keys), default=0)
    return [f"    {k:<{width}}  {_fmt(resolved[k][0]):<{vwidth}}  {resolved[k][1]}" for k in keys]


def explain_camera(cfg: ServeConfig, name: str, class_names: Sequence[str],
                   now: Optional[float] = None) -> list[str]:
    """The lines `--explain` prints for one camera.

    Args:
        cfg: the validated config.
        name: the camera.
        class_names: the model's event classes (smoothing is shown per class).
        now: epoch seconds for "inside its schedule now" (default: the clock).
    Raises:
        KeyError: no camera of that name.
    """
    cam = cfg.camera(name)
    now = time.time() if now is None else now
    out = [f"camera {cam.name} ({cam.where}), {'enabled' if cam.enabled else 'disabled'}, "
           f"{cam.masked_url}",
           "  capture settings (built-in default < defaults < "
           f"{cam.where}; the last one that sets a key wins):"]
    out += _table(capture_layers(cfg, cam))
    for label in class_names:
        layers = cfg.smoothing.layers(label, cam.smoothing, cam.where,
                                      explicit=cfg.explicit.get("smoothing"))
        out.append(f"  smoothing of {label} ({' < '.join(layer.source for layer in layers)}):")
        out += _table(layers, [k for k in to_dict(cfg.smoothing) if k != "classes"])
    if cam.mask:
        out.append(f"  mask: {len(cam.mask)} polygon(s), {100 * coverage(cam.mask):.0f}% of the "
                   "frame blanked before the model")
    else:
        out.append("  mask: none")
    if cam.zones:
        needed = list(cam.zones) if cam.required_zones is None else cam.required_zones
        zones = ", ".join(f"{z}{' (required)' if z in needed else ''} "
                          f"{100 * coverage([p]):.0f}%" for z, p in cam.zones.items())
        rule = (f"an event counts when at least {cam.settings.zone_min_overlap:g} of its box "
                f"area lies in {' or '.join(needed)}" if needed else "no zone is required")
        out.append(f"  zones: {zones}; {rule}")
    else:
        out.append("  zones: none (an event counts anywhere)")
    if cam.schedule is not None:
        sched = compile_schedule(cam.schedule, f"{cam.where}.schedule")
        inside = sched.active(now)
        what = {"skip": "not analysed", "mute": "analysed, no event starts"}[cam.schedule.outside]
        out.append(f"  schedule: {describe_schedule(sched)}; outside: {cam.schedule.outside} "
                   f"({what}); now ({sched.local_time(now):%a %H:%M %Z}): "
                   f"{'inside' if inside else 'outside'}")
    else:
        out.append("  schedule: always")
    rules = [r for r in cfg.notify.rules if r.cameras is None or cam.name in r.cameras]
    for r in rules:
        labels = ", ".join(r.labels) if r.labels else "every class"
        when = "always" if r.schedule is None else describe_schedule(
            compile_schedule(r.schedule, f"notify.rules[{cfg.notify.rules.index(r)}].schedule"))
        out.append(f"  notify {r.name}: {labels}, {'/'.join(r.types)}, {when}, to "
                   f"{', '.join(masked_notify_url(u) for u in r.urls)}")
    if not rules:
        out.append("  notify: no rule")
    if cfg.mqtt is not None:
        topics = Topics(cfg.mqtt.topic_prefix, cfg.instance)
        out.append(f"  mqtt: {topics.state(cam.name, '<label>')} (ON/OFF), "
                   f"{topics.camera_available(cam.name)}, {topics.snapshot(cam.name)}")
    return out


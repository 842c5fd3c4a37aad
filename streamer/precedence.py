"""Where a camera's effective setting comes from: layers of overrides, most specific last.

A setting of a camera is resolved through an ordered list of `Layer`s, each the keys one place
of the config sets (its dotted key is the layer's `source`). The last layer that sets a key
wins. `resolve` gives every key's value together with the layer it came from, which is what
`vigil serve --check --explain CAMERA` prints, so the order a user reads is the order applied.

The orders (`streamer/config.py` builds the layers; `streamer/explain.py` prints them):

* capture settings (`CameraSettings`: stride, roi, zone_min_overlap, ...):
  built-in default < `defaults` < `cameras[i]`;
* smoothing, per event class L:
  built-in default < `smoothing` < `smoothing.classes.L` < `cameras[i].smoothing`
  < `cameras[i].smoothing.classes.L`.

A new per-camera key joins by adding its layers here and there: nothing else changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

DEFAULT_SOURCE = "built-in default"


@dataclass(frozen=True)
class Layer:
    """The keys one place of the config sets.

    Attributes:
        source: that place's dotted key, e.g. `cameras[2].smoothing.classes.collapse`.
        values: key -> value it sets (only keys it sets).
    """
    source: str
    values: Mapping[str, Any]


def resolve(layers: Sequence[Layer]) -> dict[str, tuple[Any, str]]:
    """Every key any layer sets -> (value of the last layer setting it, that layer's source).

    Args:
        layers: least specific first.
    Returns:
        key -> (value, source), keys in the order they first appear.
    """
    out: dict[str, tuple[Any, str]] = {}
    for layer in layers:
        for key, value in layer.values.items():
            out[key] = (value, layer.source)
    return out


def values(layers: Sequence[Layer]) -> dict[str, Any]:
    """`resolve` without the sources: key -> effective value."""
    return {key: value for key, (value, _) in resolve(layers).items()}

"""docs/configuration.md's table of `vigil serve` config keys (the README links it) is the
schema's: every key of a section is listed, every default the table states is the dataclass
default, and every description is the one the field declares (`setting(..., doc=...)` in
`streamer.config`)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

from detector.schema import field_doc
from streamer.accel.settings import AccelConfig
from streamer.comms.settings import (DiscoveryConfig, MqttConfig, MqttTlsConfig, NotifyConfig,
                                     NotifyRule)
from streamer.config import (AlertsConfig, CameraConfig, CameraSettings, CurveConfig,
                             EvidenceConfig, LoggingConfig, MetricsConfig, PoseServeConfig,
                             ServeConfig, ServeModelConfig, SmoothingConfig)
from streamer.schedule import CameraScheduleConfig, ScheduleConfig
from streamer.web.settings import WebConfig

TABLE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
SECTIONS = {"defaults": CameraSettings, "model": ServeModelConfig,
            "model.pose": PoseServeConfig, "smoothing": SmoothingConfig,
            "alerts": AlertsConfig, "alerts.curve": CurveConfig, "evidence": EvidenceConfig,
            "metrics": MetricsConfig, "logging": LoggingConfig, "mqtt": MqttConfig,
            "mqtt.tls": MqttTlsConfig, "mqtt.discovery": DiscoveryConfig, "notify": NotifyConfig,
            "notify.rules[]": NotifyRule, "notify.rules[].schedule": ScheduleConfig,
            "cameras[].schedule": CameraScheduleConfig, "web": WebConfig,
            "accel": AccelConfig}
# Fields of the camera entries a user writes (settings come from `defaults`, secrets, `own` and
# `index` are derived).
CAMERA_KEYS = {"name", "url", "enabled", "mask", "zones", "required_zones", "smoothing",
               "schedule"}
# Fields that are sections of their own (their keys are listed, not the field).
NESTED = {"curve", "tls", "discovery", "pose"}


def table_keys() -> dict[str, str]:
    """`| \\`key\\` | default | meaning |` rows of docs/configuration.md: key -> default cell."""
    return {m.group(1): m.group(2).strip() for m in
            re.finditer(r"^\| `([a-z_.\[\]]+)` \| ([^|]+) \|", TABLE.read_text(), re.M)}


def table_descriptions() -> dict[str, str]:
    """`| \\`key\\` | default | meaning |` rows of docs/configuration.md: key -> meaning cell."""
    return {m.group(1): m.group(2).strip() for m in
            re.finditer(r"^\| `([a-z_.\[\]]+)` \| [^|]+ \| (.*) \|$", TABLE.read_text(), re.M)}


def _field_of(key: str) -> tuple[type, str]:
    """Table key -> (dataclass, field name)."""
    section, _, name = key.rpartition(".")
    if section == "cameras[]":
        return CameraConfig, name
    return (SECTIONS[section], name) if section else (ServeConfig, name)


def _default(cls, name: str):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "required"


def _schema_keys() -> dict[str, object]:
    keys = {f"{section}.{f.name}": _default(cls, f.name) for section, cls in SECTIONS.items()
            for f in dataclasses.fields(cls) if f.init and not dataclasses.is_dataclass(f.type)
            and f.name not in NESTED}
    keys.update({f"cameras[].{name}": _default(CameraConfig, name) for name in CAMERA_KEYS})
    keys["data_dir"] = "required"
    keys["instance"] = None           # top level: None = the host name (config.default_instance)
    return keys


def test_every_config_key_is_in_the_key_table_and_nothing_else():
    assert set(table_keys()) == set(_schema_keys())


def test_the_key_table_states_the_schemas_defaults():
    schema = _schema_keys()
    wrong = []
    for key, cell in table_keys().items():
        expected = schema[key]
        if cell.startswith("required"):
            ok = expected in ("required", None)
        else:
            stated = yaml.safe_load(cell.strip("`"))
            ok = stated == expected or (isinstance(expected, Path) and Path(stated) == expected)
        if not ok:
            wrong.append(f"{key}: docs/configuration.md {cell}, schema {expected!r}")
    assert not wrong, "\n".join(wrong)


def test_the_key_table_states_the_schemas_descriptions():
    described = table_descriptions()
    assert set(described) == set(table_keys())
    wrong = []
    for key, cell in described.items():
        doc = field_doc(*_field_of(key))
        if cell != doc:
            wrong.append(f"{key}:\n  docs/configuration.md {cell!r}\n  schema {doc!r}")
    assert not wrong, "\n".join(wrong)

"""Home Assistant MQTT discovery: the entities Vigil announces, and the topics they read.

Home Assistant's MQTT integration creates an entity for each retained JSON config it finds on
`<discovery_prefix>/<component>/<node_id>/<object_id>/config` (its "MQTT Discovery"
documentation); an empty retained payload on the same topic removes the entity. Per camera,
Vigil announces one device (`identifiers: vigil_<instance>_<camera>`, named after the camera)
with:

* a `binary_sensor` per event class, ON while an event of that class is open on the camera
  (state topic `<prefix>/<instance>/<camera>/<label>`, `ON`/`OFF`, retained), device class from
  `mqtt.discovery.device_classes` (`fight: safety`, `collapse: problem`; others `problem`);
* an `image` entity showing the last event's snapshot (JPEG bytes, retained, on
  `<prefix>/<instance>/<camera>/snapshot`);
* a `sensor` "Last event": the class of the last event that started, with the whole alert as
  its attributes (`<prefix>/<instance>/<camera>/last_event`, retained JSON).

Every entity is available only while BOTH the daemon (`<prefix>/<instance>/available`, retained,
`offline` as the last will) and its camera (`<prefix>/<instance>/<camera>/available`: `online`
while frames arrive) are online (`availability_mode: all`).

Node and object ids use only `[A-Za-z0-9_-]` (instance, camera and class names are validated to
that), as the discovery topic requires.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

ONLINE, OFFLINE = "online", "offline"
ON, OFF = "ON", "OFF"
DEFAULT_DEVICE_CLASS = "problem"


@dataclass(frozen=True)
class Topics:
    """Vigil's MQTT topics for one daemon: `<prefix>/<instance>/...`."""
    prefix: str
    instance: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.instance}"

    @property
    def available(self) -> str:
        """The daemon's availability (`online`/`offline`, retained; the last will)."""
        return f"{self.base}/available"

    @property
    def events(self) -> str:
        """Every alert, as the alert JSON (`vigil.alert/2` plus `instance`), not retained."""
        return f"{self.base}/events"

    def state(self, camera: str, label: str) -> str:
        """`ON` while an event of `label` is open on `camera`, else `OFF` (retained)."""
        return f"{self.base}/{camera}/{label}"

    def camera_available(self, camera: str) -> str:
        """`online` while the camera delivers frames (retained)."""
        return f"{self.base}/{camera}/available"

    def snapshot(self, camera: str) -> str:
        """The last start's snapshot, JPEG bytes (retained)."""
        return f"{self.base}/{camera}/snapshot"

    def last_event(self, camera: str) -> str:
        """The last start's alert JSON (retained)."""
        return f"{self.base}/{camera}/last_event"


def _device(instance: str, camera: str, version: str) -> dict:
    """The camera's Home Assistant device block."""
    return {"identifiers": [f"vigil_{instance}_{camera}"], "name": camera,
            "manufacturer": "Vigil", "model": f"Vigil camera ({instance})",
            "sw_version": version}


def camera_configs(topics: Topics, discovery_prefix: str, camera: str, labels: Iterable[str],
                   device_classes: Mapping[str, str], version: str,
                   qos: int = 1) -> list[tuple[str, Optional[str]]]:
    """The discovery configs of one camera's entities.

    Args:
        topics: the daemon's topics.
        discovery_prefix: Home Assistant's discovery prefix (`homeassistant`).
        camera: the camera name.
        labels: the model's event classes.
        device_classes: class -> binary_sensor device class.
        version: Vigil's version (the device's `sw_version`).
        qos: QoS Home Assistant subscribes with.
    Returns:
        (config topic, JSON payload) pairs, to publish retained.
    """
    inst = topics.instance
    node = f"vigil_{inst}"
    common = {
        "availability": [{"topic": topics.available},
                         {"topic": topics.camera_available(camera)}],
        "availability_mode": "all",
        "device": _device(inst, camera, version),
        "origin": {"name": "Vigil", "sw_version": version},
        "qos": qos,
    }
    out: list[tuple[str, Optional[str]]] = []
    for label in labels:
        cfg = {"name": label.replace("_", " ").capitalize(),
               "unique_id": f"vigil_{inst}_{camera}_{label}",
               "state_topic": topics.state(camera, label),
               "payload_on": ON, "payload_off": OFF,
               "device_class": device_classes.get(label, DEFAULT_DEVICE_CLASS), **common}
        out.append((f"{discovery_prefix}/binary_sensor/{node}/{camera}_{label}/config",
                    json.dumps(cfg)))
    image = {"name": "Snapshot", "unique_id": f"vigil_{inst}_{camera}_snapshot",
             "image_topic": topics.snapshot(camera), "content_type": "image/jpeg", **common}
    out.append((f"{discovery_prefix}/image/{node}/{camera}_snapshot/config", json.dumps(image)))
    sensor = {"name": "Last event", "unique_id": f"vigil_{inst}_{camera}_last_event",
              "state_topic": topics.last_event(camera),
              "value_template": "{{ value_json.label }}",
              "json_attributes_topic": topics.last_event(camera),
              "icon": "mdi:cctv", **common}
    out.append((f"{discovery_prefix}/sensor/{node}/{camera}_last_event/config",
                json.dumps(sensor)))
    return out


def camera_removals(topics: Topics, discovery_prefix: str, camera: str,
                    labels: Iterable[str], whole: bool = True) -> list[tuple[str, Optional[str]]]:
    """Empty retained payloads on config topics: Home Assistant removes those entities.

    Args:
        labels: the classes whose binary sensors go.
        whole: the camera itself is gone (its image and sensor go too).
    """
    labels = list(labels)
    out = [(topic, "") for topic, _ in
           camera_configs(topics, discovery_prefix, camera, labels, {}, "", 0)]
    return out if whole else out[:len(labels)]

"""The `mqtt:` and `notify:` sections of the daemon config (`streamer/config.py` builds them).

Dataclasses in the config idiom of `detector/schema.py`: ranges and descriptions on the fields,
rules between keys in `_check_cross_fields`. Nothing heavy is imported here (paho-mqtt and
apprise load when the daemon starts them), so `vigil serve --check` stays fast.

Secrets: `mqtt.password` and every notification URL (`notify.rules[].urls`: apprise URLs hold
tokens in their host and path, `tgram://BOTTOKEN/CHATID`) are secrets. `notify_url_secrets`
lists the pieces of a notification URL to mask as literals wherever they would be logged, and
`masked_notify_url` is how such a URL is ever shown: its scheme only (`tgram://***`).
"""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from detector.errors import ConfigError
from detector.schema import Validated, setting

from ..masking import MASK, url_secrets
from ..schedule import ScheduleConfig

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Home Assistant's binary_sensor device classes (its MQTT discovery documentation).
HA_BINARY_DEVICE_CLASSES = frozenset({
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window"})
ALERT_TYPES = ("start", "update", "end")
# Placeholders the notification title and body may use.
TEMPLATE_FIELDS = ("camera", "label", "type", "score", "event_id", "time", "zones", "instance",
                   "reason", "seq")
# Notification URL pieces shorter than this are not masked as literals (they would mangle
# every log line); they are never shown anyway (`masked_notify_url`).
MIN_SECRET_PIECE = 6


def _masked_repr(obj: object, masked: dict[str, object]) -> str:
    """The dataclass repr with some fields replaced (a `log.debug("%s", cfg)` must not print a
    password or a token)."""
    import dataclasses

    parts = [f"{f.name}={masked.get(f.name, getattr(obj, f.name))!r}"
             for f in dataclasses.fields(obj) if f.repr]
    return f"{type(obj).__name__}({', '.join(parts)})"


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def check_topic_prefix(value: str, key: str) -> None:
    """An MQTT topic prefix Vigil can publish under: no wildcard (`#`, `+`), no `$` start, no
    empty level, no NUL.

    Raises:
        ConfigError: `<key>: ...`.
    """
    _check(isinstance(value, str) and value != "", key, "must be a non-empty topic, e.g. vigil")
    _check("#" not in value and "+" not in value, key,
           f"{value!r} holds an MQTT wildcard (# or +): a topic to publish on cannot")
    _check(not value.startswith("$"), key, f"{value!r}: topics starting with $ are the broker's")
    _check("\x00" not in value, key, "holds a NUL character")
    _check(not value.startswith("/") and not value.endswith("/") and "//" not in value, key,
           f"{value!r}: no leading or trailing '/' and no empty level")
    _check(len(value.encode()) <= 512, key, "is longer than 512 bytes")


@dataclass
class MqttTlsConfig:
    """TLS to the broker (present = on): the CA to trust and an optional client certificate."""
    ca_file: Optional[Path] = setting(None,
        doc="CA certificate(s) to trust (PEM); null = the system's")
    cert_file: Optional[Path] = setting(None, doc="client certificate (PEM), for brokers that ask")
    key_file: Optional[Path] = setting(None, doc="... and its private key")
    insecure: bool = setting(False,
        doc="skip the broker's host name check (a self-signed test broker only)")


@dataclass
class DiscoveryConfig(Validated):
    """Home Assistant MQTT discovery."""
    enabled: bool = setting(True, doc="announce the entities to Home Assistant")
    prefix: str = setting("homeassistant",
        doc="Home Assistant's discovery prefix (its MQTT integration's setting)")
    device_classes: dict[str, str] = setting(
        default_factory=lambda: {"fight": "safety", "collapse": "problem"},
        doc="binary_sensor device class per event class (others: `problem`)")

    SECTION = "mqtt.discovery"

    def _check_cross_fields(self, where: str) -> None:
        check_topic_prefix(self.prefix, f"{where}.prefix")
        for label, dc in self.device_classes.items():
            _check(dc in HA_BINARY_DEVICE_CLASSES, f"{where}.device_classes.{label}",
                   f"{dc!r} is not a Home Assistant binary_sensor device class (e.g. safety, "
                   "problem)")


@dataclass
class MqttConfig(Validated):
    """Alerts, states and availability on an MQTT broker (`streamer/comms/mqtt.py`)."""
    host: str = setting(doc="broker host name or address")
    port: int = setting(1883, ge=1, le=65535, doc="broker port (8883 is the usual TLS port)")
    username: Optional[str] = setting(None, doc="user name, if the broker asks for one")
    password: Optional[str] = setting(None,
        doc="password (use `${VAR}` from the environment file); masked in every log line")
    client_id: Optional[str] = setting(None,
        doc="MQTT client id; null = `vigil-<instance>` (one per daemon)")
    topic_prefix: str = setting("vigil", doc="topics are `<topic_prefix>/<instance>/...`")
    qos: int = setting(1, ge=0, le=2, doc="QoS of alerts and states (1: at least once)")
    keepalive_s: int = setting(30, ge=5, le=3600,
        doc="keepalive; the broker sends the last will after 1.5x this of silence")
    reconnect_min_s: float = setting(1.0, gt=0, doc="first reconnect delay, doubling ...")
    reconnect_max_s: float = setting(60.0, gt=0, doc="... up to this, forever")
    queue_size: int = setting(1000, ge=1,
        doc="alerts waiting for the broker in memory; beyond, dropped (counted) and caught up "
            "from the journal")
    max_inflight: int = setting(20, ge=1, doc="alerts sent and not yet acknowledged at once")
    snapshot: bool = setting(True,
        doc="publish each start's snapshot JPEG (retained) for Home Assistant's image entity")
    tls: Optional[MqttTlsConfig] = None
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)

    SECTION = "mqtt"

    def __repr__(self) -> str:
        return _masked_repr(self, {"password": None if self.password is None else MASK})

    def _check_cross_fields(self, where: str) -> None:
        _check(isinstance(self.host, str) and self.host.strip() != ""
               and not any(c.isspace() for c in self.host) and "/" not in self.host,
               f"{where}.host", "expected a host name or address, e.g. 127.0.0.1 or "
               "broker.lan (no scheme, no port)")
        check_topic_prefix(self.topic_prefix, f"{where}.topic_prefix")
        _check(self.password is None or self.username is not None, f"{where}.password",
               "a password needs a username")
        if self.client_id is not None:
            _check(0 < len(self.client_id) <= 128 and self.client_id.isprintable()
                   and "#" not in self.client_id and "+" not in self.client_id,
                   f"{where}.client_id", "expected 1 to 128 printable characters")
        _check(self.reconnect_min_s <= self.reconnect_max_s, f"{where}.reconnect_min_s",
               f"must be <= reconnect_max_s ({self.reconnect_max_s})")
        self.discovery.validate(f"{where}.discovery")


@dataclass
class NotifyRule(Validated):
    """One notification rule: which alerts go to which apprise URLs."""
    name: str = setting(doc="`[A-Za-z0-9_-]{1,64}`: in logs and the `rule` metric label")
    urls: list[str] = setting(
        doc="apprise URLs (`tgram://`, `mailto://`, `ntfys://`, `slack://`, `json://`, ...); "
            "secrets, never logged")
    cameras: Optional[list[str]] = setting(None, doc="only these cameras; null = all")
    labels: Optional[list[str]] = setting(None, doc="only these event classes; null = all")
    types: list[str] = setting(default_factory=lambda: ["start"],
        doc="alert types that notify: `start`, `update`, `end`")
    schedule: Optional[ScheduleConfig] = setting(None,
        doc="notify only inside this schedule (`timezone`, `when`); null = always")
    attach_snapshot: bool = setting(True,
        doc="attach the start's snapshot where the service takes attachments")
    min_interval_s: float = setting(60.0, ge=0,
        doc="at most one notification per camera and class per interval (the rest counted "
            "as rate-limited)")
    title: str = setting("Vigil: {label} on {camera}",
        doc="title template; placeholders `{camera}` `{label}` `{type}` `{score}` "
            "`{event_id}` `{time}` `{zones}` `{instance}` `{reason}` `{seq}`")
    body: str = setting("{label} {type} on camera {camera} at {time}, score {score}",
        doc="body template (the same placeholders)")

    SECTION = "notify.rules[]"

    def __repr__(self) -> str:
        return _masked_repr(self, {"urls": [masked_notify_url(u) for u in self.urls]})

    def _check_cross_fields(self, where: str) -> None:
        _check(NAME.fullmatch(self.name) is not None, f"{where}.name",
               f"invalid rule name {self.name!r}: use 1 to 64 of A-Z a-z 0-9 _ -")
        _check(len(self.urls) >= 1, f"{where}.urls", "give at least one apprise URL")
        for i, url in enumerate(self.urls):
            _check(isinstance(url, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://\S", url)
                   is not None, f"{where}.urls[{i}]",
                   "expected an apprise URL such as tgram://TOKEN/CHAT or json://host/path "
                   f"(got {masked_notify_url(url)})")
        for t in self.types:
            _check(t in ALERT_TYPES, f"{where}.types", f"{t!r}: use start, update or end")
        _check(len(self.types) >= 1, f"{where}.types", "give at least one of start, update, end")
        for key in ("title", "body"):
            check_template(getattr(self, key), f"{where}.{key}")
        if self.schedule is not None:
            self.schedule.validate(f"{where}.schedule")


@dataclass
class NotifyConfig(Validated):
    """Notifications through apprise (`streamer/comms/notifications.py`)."""
    rules: list[NotifyRule] = setting(default_factory=list,
        doc="notification rules; each alert goes to every rule that matches it")
    retries: int = setting(3, ge=0, doc="attempts after a failed send, per URL ...")
    retry_delay_s: float = setting(2.0, gt=0, doc="... waiting this, doubling, between them")
    timeout_s: float = setting(10.0, gt=0, doc="connect and read timeout of one send")
    queue_size: int = setting(20, ge=1,
        doc="notifications waiting per rule; beyond, dropped (counted)")
    snapshot_wait_s: float = setting(3.0, ge=0,
        doc="how long a notification waits for its snapshot to be written")

    SECTION = "notify"

    def _check_cross_fields(self, where: str) -> None:
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            rule.validate(f"{where}.rules[{i}]")
            _check(rule.name not in seen, f"{where}.rules[{i}].name",
                   f"duplicate rule name {rule.name!r} (also rules[{seen.get(rule.name)}])")
            seen[rule.name] = i


def check_template(text: str, key: str) -> None:
    """A title/body template uses only `TEMPLATE_FIELDS` placeholders (`{camera}`, ...)."""
    import string

    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc} (write {{{{ and }}}} for literal braces)") from None
    for name in names:
        _check(name in TEMPLATE_FIELDS, key,
               f"unknown placeholder {{{name}}} (known: "
               f"{', '.join('{%s}' % f for f in TEMPLATE_FIELDS)})")


def masked_notify_url(url: object) -> str:
    """How a notification URL is shown: its scheme only, e.g. `tgram://***`."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", str(url))
    return f"{m.group(1)}://{MASK}" if m else MASK


def notify_url_secrets(url: str) -> set[str]:
    """The pieces of an apprise URL to mask as literals in every log line.

    Apprise URLs keep tokens where web URLs keep host names and paths (`tgram://BOT:TOKEN/CHAT`,
    `slack://A/B/C`), so besides what `masking.url_secrets` finds (userinfo, query values) every
    host and path piece of at least `MIN_SECRET_PIECE` characters counts, except `localhost`
    and pieces with a dot (DNS names, IPv4 addresses: no secret, and masking them would mangle
    every line that names the host).

    Returns:
        The whole URL and those pieces.
    """
    found = {url} | url_secrets(url)
    m = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://(?P<rest>.*)", url)
    if not m:
        return found
    rest = m.group("rest").split("?", 1)[0].split("#", 1)[0]
    rest = rest.rsplit("@", 1)[-1]
    for piece in re.split(r"[/:,]", rest):
        piece = urllib.parse.unquote(piece)
        if len(piece) >= MIN_SECRET_PIECE and piece != "localhost" and "." not in piece:
            found.add(piece)
    return {s for s in found if s}

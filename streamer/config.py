"""The daemon's configuration (`vigil serve --config vigil.yaml`), validated once at the door.

The YAML is read with safe tags only (no python tags), `${NAME}` is replaced by the environment
variable NAME (camera passwords live in systemd's environment file, not in the YAML), and the
result is built into the dataclasses below with `detector.schema.from_dict`, which rejects
unknown keys and wrong types. Cameras take the global `defaults:` and override any of them per
camera (Frigate's model), resolved here into one `CameraConfig.settings` per camera.

Relative paths (`data_dir`, `model.checkpoint`, `alerts.curve.*`) are resolved against the
directory of the config file, so a config works the same whatever the service's working directory.

One validation idiom (`detector/schema.py`): each key declares its range and description on its
field (`setting(default, ge=/gt=/le=, doc=...)`; docs/configuration.md's table of keys states
the same defaults and descriptions, `tests/test_config_docs.py`), and each section's rules
between keys sit in its one `_check_cross_fields`; `validate(where)` runs both.

Per camera, beyond the `defaults` keys: `mask` and `zones` (polygons, `streamer/regions/`),
`smoothing` overrides (the precedence is `SmoothingConfig.layers`, `streamer/precedence.py`) and
a `schedule` (`streamer/schedule.py`). The `mqtt:` and `notify:` sections are
`streamer/comms/settings.py`'s; the MQTT password and the notification URLs' pieces join the
secrets the log filter masks. The `web:` section (the review page) is
`streamer/web/settings.py`'s.

Every error is a `ConfigError` whose message starts with the file and the dotted key, e.g.
`vigil.yaml: cameras[1].name: duplicate camera name 'lobby'`. Camera URLs carry credentials, so
every message leaving this module goes through `mask_secrets` (`streamer/masking.py`) with the
config's known secrets: no part of a password is ever printed. `ServeConfig.secrets` hands those
secrets on to the log filter. A key given twice in the YAML is refused (`detector/yaml_loader.py`);
an empty `${NAME}` is a warning naming the key.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from detector.errors import CheckpointError, ConfigError
from detector.init_weights import resolve_model_path
from detector.pose.paths import resolve_pose_path
from detector.runtime import is_onnx_model
from detector.schema import Validated, expand_env, from_dict, load_yaml, setting, to_dict
from detector.yaml_loader import safe_load_unique

# mask_url and mask_secrets are re-exported: callers import them from here too.
from .accel.settings import AccelConfig
from .comms.settings import MqttConfig, NotifyConfig, notify_url_secrets
from .web.settings import WebConfig, check_web_files
from .masking import mask_secrets, mask_url, url_secrets  # noqa: F401
from .precedence import DEFAULT_SOURCE, Layer, values
from .regions.polygons import WHOLE_FRAME, Polygon, coverage, parse_polygon, union
from .schedule import CameraScheduleConfig
from .sources import parse_source

log = logging.getLogger(__name__)

CAMERA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
EVENT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")   # what `expand_env` substitutes



def _url_secrets(value: Any) -> set[str]:
    """Every credential appearing in URLs anywhere in a YAML tree (to scrub error messages)."""
    found: set[str] = set()
    if isinstance(value, str):
        found |= url_secrets(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            found |= _url_secrets(k) | _url_secrets(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found |= _url_secrets(v)
    return found


def _substituted_secrets(value: Any, environ: Mapping[str, str], where: str = "") -> set[str]:
    """The values `${NAME}` puts into camera URLs (masked as literal strings wherever they would
    appear); a warning naming the key for each `${NAME}` that is empty.

    A value counts when it goes into a `url` or `password` key (`mqtt.password`) or into any
    string holding `scheme://` (a password may be the whole URL, a notification URL holds
    tokens); a camera's name or other settings from `${NAME}` are not masked (names are in every
    log line).

    Args:
        value: the YAML tree before expansion.
        environ: the environment `expand_env` uses.
        where: dotted key of `value`.
    Returns:
        The substituted values (unset variables are left to `expand_env` to report).
    """
    found: set[str] = set()
    if isinstance(value, str):
        for m in _ENV_REF.finditer(value):
            name = m.group(1)
            if name not in environ:
                continue
            if environ[name] == "":
                log.warning("%s: environment variable ${%s} is empty", where or "config", name)
            elif where.endswith(("url", "password")) or "://" in value:
                found.add(environ[name])
    elif isinstance(value, Mapping):
        for k, v in value.items():
            found |= _substituted_secrets(v, environ, f"{where}.{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found |= _substituted_secrets(v, environ, f"{where}[{i}]")
    return found


def _integration_secrets(data: Any) -> set[str]:
    """`mqtt.password` and every notification URL's secret pieces (`notify.rules[].urls`),
    whatever shape the tree has (a malformed one is reported by `_build`)."""
    found: set[str] = set()
    if not isinstance(data, Mapping):
        return found
    mqtt = data.get("mqtt")
    if isinstance(mqtt, Mapping) and isinstance(mqtt.get("password"), str) and mqtt["password"]:
        found.add(mqtt["password"])
    notify = data.get("notify")
    rules = notify.get("rules") if isinstance(notify, Mapping) else None
    for rule in rules if isinstance(rules, list) else []:
        urls = rule.get("urls") if isinstance(rule, Mapping) else None
        for url in urls if isinstance(urls, list) else []:
            if isinstance(url, str):
                found |= notify_url_secrets(url)
    return found


def _scrub(message: str, secrets: set[str]) -> str:
    """Mask URL credentials and every known secret (`streamer/masking.py`)."""
    return mask_secrets(message, secrets)


def _check(ok: bool, key: str, message: str) -> None:
    """Raise `ConfigError("<key>: <message>")` unless `ok`: the cross-field rules' one helper
    (ranges are declared on the fields, `detector.schema.setting`)."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


@dataclass
class CameraSettings(Validated):
    """Per-camera capture settings; `defaults:` holds them for all, a camera may override any.

    Args:
        stride: run the model every `stride` new frames.
        window_seconds: time a window spans; null = the checkpoint's `input.clip_seconds`.
        fps: frame rate to assume for sources that report none (null = trust the source).
        roi: normalised [x1, y1, x2, y2] region of interest, or null for the whole frame.
        loop: file sources restart at the end (a demo runs forever).
        open_timeout_s, read_timeout_s: OpenCV open/read timeouts for network sources.
        stall_timeout_s: no frame for this long = the camera is down, reconnect.
        backoff_initial_s, backoff_max_s: reconnect delay, doubling with jitter up to the max.
        events: the event classes the camera watches (`[collapse]` for a care room, `[fight]`
            for a street); null = every class the models detect. A class the models cannot
            detect is refused when the models are loaded (`vigil serve --check` says so).
        zone_min_overlap: fraction of an event's box area inside the camera's required zones
            for the event to count (`streamer/regions/zones.py`).
    """
    stride: int = setting(8, ge=1, doc="run the model every this many new frames of a camera")
    window_seconds: Optional[float] = setting(None, gt=0, or_null=True,
        doc="time a window spans; null = the checkpoint's training clip length")
    fps: Optional[float] = setting(None, gt=0, or_null=True,
        doc="frame rate to assume when a source reports none")
    roi: Optional[list[float]] = setting(None,
        doc="`[x1, y1, x2, y2]` normalised region the model looks at")
    loop: bool = setting(True, doc="video files start again at the end")
    open_timeout_s: float = setting(10, gt=0,
        doc="give up opening a network stream after this long")
    read_timeout_s: float = setting(5, gt=0,
        doc="give up a read after this long (must exceed the frame interval)")
    stall_timeout_s: float = setting(10, gt=0,
        doc="no frame for this long = camera down, reconnect")
    backoff_initial_s: float = setting(0.5, gt=0,
        doc="first reconnect delay, doubling with jitter ...")
    backoff_max_s: float = setting(30, gt=0, doc="... up to this, forever")
    events: Optional[list[str]] = setting(None,
        doc="event classes watched, e.g. `[collapse]`; null = all the models detect")
    zone_min_overlap: float = setting(0.25, gt=0, le=1,
        doc="share of an event's box area that must lie inside the required zones for it "
            "to count")

    SECTION = "defaults"

    def _check_cross_fields(self, where: str) -> None:
        """The rules beyond each field's range: roi's shape, backoff_initial_s <= backoff_max_s."""
        if self.roi is not None:
            r = self.roi
            _check(len(r) == 4, f"{where}.roi", f"must be [x1, y1, x2, y2], got {len(r)} values")
            _check(all(0.0 <= v <= 1.0 for v in r), f"{where}.roi",
                   f"values are normalised to [0, 1], got {r}")
            _check(r[0] < r[2] and r[1] < r[3], f"{where}.roi",
                   f"needs x1 < x2 and y1 < y2, got {r}")
        _check(self.backoff_initial_s <= self.backoff_max_s, f"{where}.backoff_initial_s",
               f"must be <= backoff_max_s ({self.backoff_max_s}), got {self.backoff_initial_s}")
        if self.events is not None:
            _check(len(self.events) >= 1, f"{where}.events",
                   "name at least one event class (or null for all the models detect)")
            for name in self.events:
                _check(isinstance(name, str) and EVENT_NAME.fullmatch(name) is not None,
                       f"{where}.events", f"invalid event class {name!r}")
            dup = sorted({e for e in self.events if self.events.count(e) > 1})
            _check(not dup, f"{where}.events", f"{dup[0] if dup else ''!r} is listed twice")


@dataclass
class CameraConfig:
    """One camera with its effective settings (defaults overridden by the camera's own keys).

    Args:
        name: `[A-Za-z0-9_-]{1,64}`; used in topics, file names and metric labels.
        url: rtsp://, http(s)://, a file path, `webcam:N`/an integer string, or `synthetic:...`.
            May hold credentials: log it only through `mask_url`.
        mask: polygons blanked before the model (`streamer/regions/mask.py`).
        zones, required_zones: named polygons and those an event must overlap
            (`streamer/regions/zones.py`).
        smoothing: raw overrides of the `smoothing:` keys (validated); `smoothing_for(label)`
            resolves them (`streamer/precedence.py` gives the order).
        schedule: when the camera is analysed and alerts (`streamer/schedule.py`).
    """
    name: str = setting(doc="`[A-Za-z0-9_-]{1,64}`: used in topics, file names, metric labels")
    url: str = setting(
        doc="`rtsp://`, `rtsps://`, `http(s)://`, `/dev/videoN`, `webcam:N`, a file, "
            "`synth://fight`")
    enabled: bool = setting(True, doc="a disabled camera is validated but not opened")
    settings: CameraSettings = field(default_factory=CameraSettings)
    mask: list[Polygon] = setting(default_factory=list,
        doc="polygons `[[x, y], ...]` (normalised, whole frame) the model never sees: blanked "
            "before it")
    zones: dict[str, Polygon] = setting(default_factory=dict,
        doc="named polygons `{name: [[x, y], ...]}`; alerts name the zones their box overlaps")
    required_zones: Optional[list[str]] = setting(None,
        doc="zones an event's box must overlap (by `zone_min_overlap`) for it to count; null "
            "= any zone, `[]` = none")
    smoothing: dict[str, Any] = setting(default_factory=dict,
        doc="this camera's overrides of any `smoothing` key, `classes` too, above the global "
            "ones")
    schedule: Optional[CameraScheduleConfig] = setting(None,
        doc="when the camera is analysed and alerts (`timezone`, `when`, `outside`); null = "
            "always")
    # Credentials of the whole config (URL userinfo, query values, `${VAR}` values), masked
    # wherever this camera is shown.
    secrets: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    # Keys this camera's entry sets itself (`vigil serve --check --explain`); its index.
    own: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    index: int = field(default=0, repr=False, compare=False)

    @property
    def masked_url(self) -> str:
        return mask_url(self.url, self.secrets)

    def __repr__(self) -> str:
        # The dataclass repr would print the password with the URL (e.g. `log.debug("%s", cfg)`).
        return (f"CameraConfig(name={self.name!r}, url={self.masked_url!r}, "
                f"enabled={self.enabled!r}, settings={self.settings!r})")

    @property
    def where(self) -> str:
        """This camera's dotted key, `cameras[i]`."""
        return f"cameras[{self.index}]"


@dataclass
class PoseServeConfig(Validated):
    """The `model.pose:` section: the pose path that scores collapse (issue 24).

    BlazePose (MediaPipe's models, run offline) tracks one person per camera at about 8 frames
    a second; every `stride_s` the pose collapse model scores the last window of their landmarks,
    and that score, with the person's box, is the camera's collapse score. It runs only for
    cameras that watch collapse (`events`).

    Args:
        checkpoint: `vigil` (the shipped pose collapse model, `docs/models/pose-collapse-v1.md`)
            or a file from `vigil train --config configs/train/pose-collapse.yaml`.
        workers: pose threads; the cameras are shared among them (each thread is about one
            core at its busiest: ~20 ms a frame, 8 frames a second a camera).
        threads: CPU threads of each BlazePose model call.
        stride_s: seconds between a camera's pose windows.
    """
    checkpoint: Path = setting(Path("vigil"),
        doc="`vigil` (the shipped pose collapse model) or a file from `vigil train --config "
            "configs/train/pose-collapse.yaml`; a change needs a restart")
    workers: int = setting(1, ge=1, doc="pose threads, sharing the cameras")
    threads: int = setting(1, ge=1, doc="CPU threads of each BlazePose model call")
    stride_s: float = setting(0.5, gt=0, le=10, doc="seconds between a camera's pose windows")

    SECTION = "model.pose"


@dataclass
class ServeModelConfig(Validated):
    """The `model:` section of the daemon config (which checkpoint, where it runs, batching).

    Args:
        checkpoint: `vigil` (Vigil's shipped model, `docs/models/`), a Vigil checkpoint
            (`vigil train`/`vigil import-reference`), a reference `best_model.pth`, or an
            `.onnx` file from `vigil export` (run by onnxruntime on the CPU, in fp32); must
            exist.
        device: `auto` (first CUDA GPU, else CPU), `cpu`, `cuda` or `cuda:N`.
        precision: `auto` (bf16/fp16 autocast on GPU, fp32 on CPU), or forced.
        max_batch: most windows per forward pass.
        max_wait_ms: how long the worker waits for more due windows to fill a batch.
        threads: torch CPU threads (null = every core but one, kept for decoding).
        pose: the pose path for collapse (`PoseServeConfig`); null = collapse from the video
            model alone.
    """
    checkpoint: Path = setting(
        doc="`vigil` (the shipped default model, `docs/models/real-cpu-v4.md`), the bare name of "
            "other shipped weights (`real-cpu-v2`: cheaper, more false fights), or a file "
            "from `vigil train` or `vigil import-reference` (or a reference "
            "`best_model.pth`), or an `.onnx` file from `vigil export --format onnx`, run by "
            "onnxruntime on the CPU in fp32; a reload swaps in a new one (or new weights in the "
            "same file) without a restart")
    device: str = setting("auto", doc="`auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting("auto",
        doc="`auto` (the checkpoint's own choice where it records one, fp16 for a reference "
            "model; else bf16/fp16 on GPU, fp32 on CPU), `fp32`, `bf16`, `fp16`")
    max_batch: int = setting(8, ge=1, doc="windows per forward pass, across cameras")
    max_wait_ms: float = setting(50, ge=0, doc="how long a due window may wait for a batch to fill")
    threads: Optional[int] = setting(None, ge=1,
        doc="torch CPU threads; null = all cores but one (kept for decoding)")
    pose: Optional[PoseServeConfig] = setting(default_factory=PoseServeConfig,
        doc="the pose path that scores collapse (BlazePose + a pose model); null = collapse "
            "from the video model")

    SECTION = "model"

    def _check_cross_fields(self, where: str) -> None:
        """The device's spelling, and what an .onnx checkpoint allows."""
        _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None, f"{where}.device",
               f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.is_onnx:
            # onnxruntime runs the exported fp32 graph on the CPU; autocast does not reach it.
            _check(self.device in ("auto", "cpu"), f"{where}.device",
                   f"an .onnx model runs on the CPU (onnxruntime): use auto or cpu, "
                   f"got {self.device!r}")
            _check(self.precision in ("auto", "fp32"), f"{where}.precision",
                   f"an .onnx model runs in fp32: use auto or fp32, got {self.precision!r}")

    @property
    def is_onnx(self) -> bool:
        """Whether the checkpoint is an exported ONNX graph rather than a PyTorch checkpoint."""
        return is_onnx_model(self.checkpoint)


@dataclass
class SmoothingConfig(Validated):
    """Temporal smoothing and the event state machine (see `streamer/smoother.py`).

    Args:
        method: `ema` (score = alpha*x + (1-alpha)*score) or `kofn` (k of the last n windows).
        alpha: EMA weight of the newest window.
        k, n: k-of-n: on when >= k of the last n windows score >= on_threshold.
        on_threshold, off_threshold: hysteresis; off must be below on.
        min_windows: consecutive "on" windows before an event starts.
        cooldown_s: the score must stay below off_threshold this long before the event ends.
        update_interval_s: at most one `update` message per event per interval...
        min_score_delta, min_box_iou: ...and only when material: the score moved by >= delta or
            the box's IoU with the last published box fell below min_box_iou.
        box_alpha: EMA weight of the newest box.
        classes: per-class overrides of any key above, e.g. `{"collapse": {"on_threshold": 0.5,
            "min_windows": 1}}`: a fall lasts a window or two, a fight goes on, so one setting
            rarely suits both (`scripts/alert-check.py --sweep` measures each class's trade-off).
            `for_class(label)` gives one class's settings.
    """
    method: Literal["ema", "kofn"] = setting("ema",
        doc="`ema` or `kofn` (EMA measured 4.6x fewer false starts, see "
            "`streamer/smoother.py`)")
    alpha: float = setting(0.5, gt=0, le=1, doc="EMA weight of the newest window")
    k: int = setting(2, doc="k-of-n: on when k ...")
    n: int = setting(3, ge=1, doc="... of the last n windows reach `on_threshold`")
    on_threshold: float = setting(0.6, gt=0, le=1, doc="an event starts above this ...")
    off_threshold: float = setting(0.4, doc="... and may end below this")
    min_windows: int = setting(2, ge=1,
        doc="consecutive windows above `on_threshold` before a start")
    cooldown_s: float = setting(3.0, ge=0, doc="below `off_threshold` this long before the end")
    update_interval_s: float = setting(2.0, ge=0,
        doc="at most one `update` per event per interval ...")
    min_score_delta: float = setting(0.1, ge=0,
        doc="... and only when the score moved this much ...")
    min_box_iou: float = setting(0.7, ge=0, le=1,
        doc="... or the box moved (IoU with the last published box below this)")
    box_alpha: float = setting(0.5, gt=0, le=1, doc="EMA weight of the newest box")
    classes: dict[str, dict[str, Any]] = setting(default_factory=dict,
        doc="per-class overrides of the keys above, e.g. `collapse: {on_threshold: 0.5, "
            "min_windows: 1}`")

    SECTION = "smoothing"

    def for_class(self, label: str, where: Optional[str] = None) -> "SmoothingConfig":
        """This section with `classes[label]`'s overrides applied (itself when it has none).

        Args:
            label: a class name, e.g. "collapse".
            where: dotted key for messages (default `smoothing.classes.<label>`).
        Returns:
            A `SmoothingConfig` without `classes`; not validated (`validate` does that).
        Raises:
            ConfigError: `<where>.<key>` for an unknown key or a wrong type in the overrides.
        """
        overrides = self.classes.get(label)
        if not overrides:
            return self
        where = where or f"{self.SECTION}.classes.{label}"
        _check("classes" not in overrides, f"{where}.classes", "overrides do not nest")
        base = {k: v for k, v in to_dict(self).items() if k != "classes"}
        return from_dict(SmoothingConfig, {**base, **overrides}, where)

    def layers(self, label: Optional[str], camera: Optional[Mapping[str, Any]] = None,
               camera_where: str = "cameras[i]", explicit: Optional[frozenset] = None
               ) -> list[Layer]:
        """The precedence of one camera's smoothing for one class, least specific first:
        built-in default < `smoothing` < `smoothing.classes.<label>` < `cameras[i].smoothing`
        < `cameras[i].smoothing.classes.<label>` (`streamer/precedence.py`).

        Args:
            label: the event class (None: no class overrides).
            camera: the camera's raw `smoothing:` overrides (None: none).
            camera_where: the camera's dotted key, for the sources.
            explicit: the keys the `smoothing:` section set itself (None: all its values count
                as set there); the others are shown as built-in defaults.
        """
        own = {k: v for k, v in to_dict(self).items() if k != "classes"}
        default = {k: v for k, v in to_dict(SmoothingConfig()).items() if k != "classes"}
        set_here = set(own) if explicit is None else set(explicit) - {"classes"}
        layers = [Layer(DEFAULT_SOURCE, {k: v for k, v in default.items() if k not in set_here}),
                  Layer(self.SECTION, {k: own[k] for k in own if k in set_here})]
        if label is not None:
            layers.append(Layer(f"{self.SECTION}.classes.{label}", self.classes.get(label) or {}))
        camera = camera or {}
        layers.append(Layer(f"{camera_where}.smoothing",
                            {k: v for k, v in camera.items() if k != "classes"}))
        if label is not None:
            layers.append(Layer(f"{camera_where}.smoothing.classes.{label}",
                                (camera.get("classes") or {}).get(label) or {}))
        return layers

    def resolve(self, label: Optional[str], camera: Optional[Mapping[str, Any]] = None,
                camera_where: str = "cameras[i]") -> "SmoothingConfig":
        """One camera's effective settings for one class (`layers`, applied in order).

        Returns:
            A validated `SmoothingConfig` without `classes`.
        Raises:
            ConfigError: `<camera_where>.smoothing...: ...` for an unknown key, a wrong type or a
                rule broken by the combination.
        """
        if not camera and not (label is not None and self.classes.get(label)):
            return self
        where = f"{camera_where}.smoothing" if camera else f"{self.SECTION}.classes.{label}"
        if camera and label is not None and (camera.get("classes") or {}).get(label):
            where = f"{camera_where}.smoothing.classes.{label}"
        cfg = from_dict(SmoothingConfig, values(self.layers(label, camera, camera_where)), where)
        cfg.validate(where)
        return cfg

    def _check_cross_fields(self, where: str) -> None:
        """k within [1, n]; off_threshold below on_threshold (hysteresis); each class's
        overrides give a valid section too."""
        _check(1 <= self.k <= self.n, f"{where}.k", f"must be in [1, n={self.n}], got {self.k}")
        _check(0.0 <= self.off_threshold < self.on_threshold, f"{where}.off_threshold",
               f"must be >= 0 and below on_threshold ({self.on_threshold}), "
               f"got {self.off_threshold}")
        for label in self.classes:
            self.for_class(label, f"{where}.classes.{label}").validate(
                f"{where}.classes.{label}")


@dataclass
class CurveConfig:
    """ZeroMQ CURVE: the server's secret key file and a directory of authorised client public
    keys (`vigil keys generate` writes both)."""
    server_secret_key: Path = setting(doc="from `vigil keys generate`")
    authorized_clients: Path = setting(doc="directory of client public keys")


@dataclass
class AlertsConfig(Validated):
    """Where alerts go. `endpoint` is the PUB socket, `replay_endpoint` the journal's replay
    ROUTER. Both default to loopback: expose them deliberately, with CURVE."""
    endpoint: str = setting("tcp://127.0.0.1:5557", doc="ZeroMQ PUB socket")
    replay_endpoint: str = setting("tcp://127.0.0.1:5558",
        doc='replay socket: "everything since seq N"')
    sndhwm: int = setting(1000, ge=1,
        doc="messages queued per subscriber before sends are refused (counted)")
    heartbeat_s: float = setting(5.0, gt=0, doc="heartbeat interval")
    journal_retention_days: float = setting(30, gt=0, doc="journal rows older than this are pruned")
    curve: Optional[CurveConfig] = None

    SECTION = "alerts"

    def _check_cross_fields(self, where: str) -> None:
        _check(self.endpoint != self.replay_endpoint, f"{where}.replay_endpoint",
               "must differ from alerts.endpoint")


@dataclass
class EvidenceConfig(Validated):
    """Snapshots (JPEG at start) and clips (MP4 at end, with pre-roll), and their retention.

    `min_free_bytes`: free space evidence leaves on the file system it shares with `data_dir`
    (the journal): a write that would go below it is refused like a full disk (0: no reserve).
    """
    enabled: bool = setting(True, doc="write evidence at all")
    snapshot: bool = setting(True, doc="JPEG with the box at `start`")
    clip: bool = setting(True, doc="MP4 of the event at `end`")
    pre_roll_s: float = setting(2.0, ge=0, doc="seconds of video before the start in the clip")
    max_age_days: float = setting(14, gt=0,
        doc="evidence older than this is deleted, oldest first ...")
    max_bytes: int = setting(2_000_000_000, gt=0, doc="... and beyond this total size")
    min_free_bytes: int = setting(256 * 1024 ** 2, ge=0,
        doc="free space (256 MiB) evidence leaves on the file system it shares with "
            "`data_dir`, so it cannot starve the journal; a write that would go below it is "
            "refused like a full disk (0: no reserve)")

    SECTION = "evidence"


@dataclass
class MetricsConfig(Validated):
    """The Prometheus exporter. Loopback by default: metrics name cameras."""
    host: str = setting("127.0.0.1", doc="Prometheus exporter bind address")
    port: int = setting(9108, ge=0, le=65535, doc="... and port")
    enabled: bool = setting(True, doc="serve `/metrics`")

    SECTION = "metrics"


@dataclass
class LoggingConfig:
    format: Literal["text", "json"] = setting("text",
        doc="`text` for journald, `json` for machines")
    level: Literal["debug", "info", "warning", "error"] = setting("info",
        doc="`debug`, `info`, `warning`, `error`")


@dataclass
class ServeConfig:
    """The whole daemon config. Build it with `load_config` (or `parse_config` for a dict)."""
    data_dir: Path = setting(
        doc="journal (`journal.sqlite3`) and evidence (`events/<camera>/<day>/<event>/`)")
    model: ServeModelConfig
    cameras: list[CameraConfig]
    defaults: CameraSettings = field(default_factory=CameraSettings)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    mqtt: Optional[MqttConfig] = None
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    web: WebConfig = field(default_factory=WebConfig)
    accel: AccelConfig = field(default_factory=AccelConfig)
    # Resolved at load: `default_instance()` when the YAML leaves it null.
    instance: str = setting("", doc=(
        "this daemon's name in a fleet, `[A-Za-z0-9_-]{1,64}`, on every alert, heartbeat and "
        "replay reply (`seq` counts per instance); `null`: the host name up to its first dot, "
        "other characters replaced by `-`"))
    # Every credential in the config (see `CameraConfig.secrets`): the log filter masks them.
    secrets: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    # Section -> the keys the YAML set itself (`defaults`, `smoothing`), for `--explain`.
    explicit: dict[str, frozenset] = field(default_factory=dict, repr=False, compare=False)

    def camera(self, name: str) -> CameraConfig:
        """The camera called `name` (KeyError if none)."""
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)

    def smoothing_for(self, camera: str, label: str) -> SmoothingConfig:
        """The smoothing a camera's events of one class run with (`SmoothingConfig.layers`
        gives the order: the camera's own class overrides win)."""
        cam = self.camera(camera)
        return self.smoothing.resolve(label, cam.smoothing, cam.where)

    @property
    def enabled_cameras(self) -> list[CameraConfig]:
        return [c for c in self.cameras if c.enabled]

    @property
    def journal_path(self) -> Path:
        """Where the alert journal lives: `<data_dir>/journal.sqlite3`."""
        return self.data_dir / "journal.sqlite3"


@dataclass
class _RawServe:
    """The top level as written: `cameras` stays raw until merged with `defaults`."""
    data_dir: Path
    model: ServeModelConfig
    cameras: list[Any]
    defaults: CameraSettings = field(default_factory=CameraSettings)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    instance: Optional[str] = None
    mqtt: Optional[MqttConfig] = None
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    web: WebConfig = field(default_factory=WebConfig)
    accel: AccelConfig = field(default_factory=AccelConfig)


def default_instance(hostname: str | None = None) -> str:
    """The instance name when the config gives none: the host name, cut at the first dot, with
    every character outside A-Z a-z 0-9 _ - replaced by `-` (at most 64; `vigil` if empty)."""
    import socket

    host = (socket.gethostname() if hostname is None else hostname).split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_-]", "-", host)[:64]
    return name or "vigil"


# Keys only a camera entry takes; the others override `defaults` (CameraSettings).
_CAMERA_KEYS = ("name", "url", "enabled", "mask", "zones", "required_zones", "smoothing",
                "schedule")


def _resolve_camera(raw: Any, index: int, defaults: CameraSettings,
                    smoothing: "SmoothingConfig") -> CameraConfig:
    """One `cameras[i]` entry -> CameraConfig with the defaults overridden by its own keys."""
    where = f"cameras[{index}]"
    # Never echo the entry itself: it usually holds a URL with a password.
    _check(isinstance(raw, Mapping), where,
           f"expected a mapping with name and url, got {type(raw).__name__}")
    setting_names = [f.name for f in dataclasses.fields(CameraSettings)]
    unknown = sorted(set(map(str, raw)) - set(_CAMERA_KEYS) - set(setting_names))
    _check(not unknown, f"{where}.{unknown[0] if unknown else ''}",
           f"unknown key (known: {', '.join(sorted([*_CAMERA_KEYS, *setting_names]))})")
    _check("name" in raw, f"{where}.name", "required key is missing")
    _check("url" in raw, f"{where}.url", "required key is missing")
    name, url, enabled = raw["name"], raw["url"], raw.get("enabled", True)
    _check(isinstance(name, str), f"{where}.name",
           f"expected a string, got {type(name).__name__}")
    _check(CAMERA_NAME.fullmatch(name) is not None, f"{where}.name",
           f"invalid camera name {name!r}: use 1 to 64 of A-Z a-z 0-9 _ - "
           "(it goes into topics, file names and metric labels)")
    if isinstance(url, int) and not isinstance(url, bool):
        url = str(url)  # `url: 0` is the first webcam
    _check(isinstance(url, str) and url.strip() != "", f"{where}.url",
           f"expected a non-empty string, got {type(url).__name__}"
           + (f" {mask_url(str(url))!r}" if isinstance(url, (list, tuple)) else ""))
    _check(isinstance(enabled, bool), f"{where}.enabled",
           f"expected bool, got {type(enabled).__name__}")
    # The URL is refused here, at the door, rather than by the capture thread at start-up or on
    # a SIGHUP reload (where it would take the running daemon down).
    try:
        parse_source(url)
    except ConfigError as exc:
        raise ConfigError(f"{where}.url: {exc}") from None
    overrides = {k: v for k, v in raw.items() if k not in _CAMERA_KEYS}
    merged = {**to_dict(defaults), **overrides}
    settings = from_dict(CameraSettings, merged, where)
    settings.validate(where)
    mask, zones, required = _regions(raw, where)
    cam_smoothing = _camera_smoothing(raw.get("smoothing"), where, smoothing)
    schedule = None
    if raw.get("schedule") is not None:
        schedule = from_dict(CameraScheduleConfig, raw["schedule"], f"{where}.schedule")
        schedule.validate(f"{where}.schedule")
    cam = CameraConfig(name=name, url=url, enabled=enabled, settings=settings, mask=mask,
                       zones=zones, required_zones=required, smoothing=cam_smoothing,
                       schedule=schedule, own=frozenset(map(str, raw)), index=index)
    _warn_regions(cam)
    return cam


def _regions(raw: Mapping[str, Any], where: str
             ) -> tuple[list[Polygon], dict[str, Polygon], Optional[list[str]]]:
    """A camera's `mask`, `zones` and `required_zones`, validated (`streamer/regions/`)."""
    mask_raw = raw.get("mask") or []
    _check(isinstance(mask_raw, list), f"{where}.mask",
           "expected a list of polygons, each a list of [x, y] points")
    if mask_raw and all(isinstance(p, (list, tuple)) and len(p) == 2
                        and all(isinstance(v, (int, float)) for v in p) for p in mask_raw):
        mask_raw = [mask_raw]          # one polygon given without the outer list
    mask = [parse_polygon(p, f"{where}.mask[{i}]") for i, p in enumerate(mask_raw)]
    zones_raw = raw.get("zones") or {}
    _check(isinstance(zones_raw, Mapping), f"{where}.zones",
           "expected a mapping {name: [[x, y], ...]}")
    zones: dict[str, Polygon] = {}
    for zname, poly in zones_raw.items():
        _check(isinstance(zname, str) and CAMERA_NAME.fullmatch(zname) is not None,
               f"{where}.zones", f"invalid zone name {zname!r}: use 1 to 64 of A-Z a-z 0-9 _ -")
        zones[zname] = parse_polygon(poly, f"{where}.zones.{zname}")
    required = raw.get("required_zones")
    if required is not None:
        _check(isinstance(required, list) and all(isinstance(z, str) for z in required),
               f"{where}.required_zones", "expected a list of zone names, [] or null")
        for z in required:
            _check(z in zones, f"{where}.required_zones",
                   f"unknown zone {z!r} (zones of this camera: {', '.join(zones) or 'none'})")
    return mask, zones, required


def _warn_regions(cam: CameraConfig) -> None:
    """Warnings (not errors) for polygons that are valid but almost certainly not meant."""
    where = cam.where
    if cam.mask and coverage(cam.mask) >= WHOLE_FRAME:
        log.warning("%s.mask covers %.0f%% of the frame: the model sees (almost) nothing of "
                    "camera %s", where, 100 * coverage(cam.mask), cam.name)
    needed = list(cam.zones) if cam.required_zones is None else cam.required_zones
    if needed:
        covered = coverage(cam.zones[z] for z in needed)
        if covered >= WHOLE_FRAME:
            log.warning("%s.zones: the required zones cover %.0f%% of the frame, so they filter "
                        "nothing on camera %s", where, 100 * covered, cam.name)
        if cam.mask:
            open_area = union(cam.zones[z] for z in needed).difference(union(cam.mask)).area
            if open_area <= 1e-4:
                log.warning("%s.zones: the required zones lie under the mask: no event can "
                            "start on camera %s", where, cam.name)


def _camera_smoothing(raw: Any, where: str, smoothing: "SmoothingConfig") -> dict[str, Any]:
    """A camera's `smoothing:` overrides, checked by resolving them for every class named
    anywhere (and for none): an unknown key, a wrong type or a broken rule is refused here."""
    if raw is None:
        return {}
    key = f"{where}.smoothing"
    _check(isinstance(raw, Mapping), key, "expected a mapping of smoothing keys")
    raw = {str(k): v for k, v in raw.items()}
    classes = raw.get("classes") or {}
    _check(isinstance(classes, Mapping), f"{key}.classes",
           "expected a mapping {class: {key: value}}")
    for label, over in classes.items():
        _check(isinstance(over, Mapping), f"{key}.classes.{label}",
               "expected a mapping of smoothing keys")
        _check("classes" not in over, f"{key}.classes.{label}.classes", "overrides do not nest")
    # Types and unknown keys, named where they are written.
    from_dict(SmoothingConfig, {k: v for k, v in raw.items() if k != "classes"}, key)
    for label, over in classes.items():
        from_dict(SmoothingConfig, dict(over), f"{key}.classes.{label}")
    for label in [None, *sorted(set(smoothing.classes) | set(map(str, classes)))]:
        smoothing.resolve(label, raw, where)
    return raw


def _resolve_path(path: Path, base_dir: Path | None) -> Path:
    path = path.expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def _build(data: Mapping[str, Any], base_dir: Path | None, check_paths: bool,
           secrets: frozenset[str] = frozenset()) -> ServeConfig:
    raw = from_dict(_RawServe, data)
    raw.defaults.validate("defaults")
    raw.model.validate("model")
    if raw.model.pose is not None:
        raw.model.pose.validate("model.pose")
    raw.smoothing.validate("smoothing")
    raw.alerts.validate("alerts")
    raw.evidence.validate("evidence")
    raw.metrics.validate("metrics")
    if raw.mqtt is not None:
        raw.mqtt.validate("mqtt")
    raw.notify.validate("notify")
    raw.web.validate("web")
    raw.accel.validate("accel")
    raw.accel.check_device(raw.model.device)
    _check(not (raw.model.is_onnx and (raw.accel.fold_bn or raw.accel.channels_last
                                       or raw.accel.compiled)), "accel",
           "fold_bn, channels_last, compile and cuda_graphs rewrite a PyTorch model; an .onnx "
           "model runs as exported (onnxruntime): turn them off")
    instance = default_instance() if raw.instance is None else raw.instance
    _check(isinstance(instance, str) and CAMERA_NAME.fullmatch(instance) is not None, "instance",
           f"invalid instance name {instance!r}: use 1 to 64 of A-Z a-z 0-9 _ - (it names this "
           "daemon in alerts, heartbeats and metrics)")

    _check(len(raw.cameras) >= 1, "cameras", "at least one camera is required")
    cameras: list[CameraConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw.cameras):
        cam = dataclasses.replace(_resolve_camera(entry, i, raw.defaults, raw.smoothing),
                                  secrets=secrets)
        _check(cam.name not in seen, f"cameras[{i}].name",
               f"duplicate camera name {cam.name!r} (also cameras[{seen.get(cam.name)}])")
        seen[cam.name] = i
        cameras.append(cam)
    if not any(c.enabled for c in cameras):
        log.warning("every camera is disabled: the daemon will run but watch nothing")
    for i, rule in enumerate(raw.notify.rules):
        for name in rule.cameras or []:
            _check(name in seen, f"notify.rules[{i}].cameras",
                   f"unknown camera {name!r} (cameras: {', '.join(seen)})")

    raw.data_dir = _resolve_path(raw.data_dir, base_dir)
    try:
        raw.model.checkpoint = resolve_model_path(raw.model.checkpoint)   # `vigil` -> the file
    except CheckpointError as exc:
        raise ConfigError(f"model.checkpoint: {exc}") from None
    raw.model.checkpoint = _resolve_path(raw.model.checkpoint, base_dir)
    if raw.model.pose is not None:
        try:
            pose_path = resolve_pose_path(raw.model.pose.checkpoint)   # `vigil` -> the file
        except CheckpointError as exc:
            raise ConfigError(f"model.pose.checkpoint: {exc}") from None
        raw.model.pose.checkpoint = _resolve_path(pose_path, base_dir)
    if raw.alerts.curve is not None:
        curve = raw.alerts.curve
        curve.server_secret_key = _resolve_path(curve.server_secret_key, base_dir)
        curve.authorized_clients = _resolve_path(curve.authorized_clients, base_dir)
    tls = raw.mqtt.tls if raw.mqtt is not None else None
    if tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(tls, key) is not None:
                setattr(tls, key, _resolve_path(getattr(tls, key), base_dir))
        _check((tls.cert_file is None) == (tls.key_file is None), "mqtt.tls.key_file",
               "cert_file and key_file go together")
    for key in ("token_file", "users_file"):
        if getattr(raw.web, key) is not None:
            setattr(raw.web, key, _resolve_path(getattr(raw.web, key), base_dir))
    if check_paths:
        if raw.web.enabled:
            check_web_files(raw.web)
        ckpt = raw.model.checkpoint
        _check(ckpt.is_file(), "model.checkpoint", f"checkpoint file not found: {ckpt}")
        if raw.model.pose is not None:
            _check(raw.model.pose.checkpoint.is_file(), "model.pose.checkpoint",
                   f"pose model file not found: {raw.model.pose.checkpoint}")
        problem = data_dir_problem(raw.data_dir)
        _check(problem is None, "data_dir", problem or "")
        if raw.alerts.curve is not None:
            curve = raw.alerts.curve
            _check(curve.server_secret_key.is_file(), "alerts.curve.server_secret_key",
                   f"key file not found: {curve.server_secret_key} (see `vigil keys generate`)")
            _check(curve.authorized_clients.is_dir(), "alerts.curve.authorized_clients",
                   f"directory not found: {curve.authorized_clients}")
        if tls is not None:
            for key in ("ca_file", "cert_file", "key_file"):
                path = getattr(tls, key)
                _check(path is None or path.is_file(), f"mqtt.tls.{key}",
                       f"file not found: {path}")
    explicit = {section: frozenset(map(str, data.get(section) or {}))
                for section in ("defaults", "smoothing")
                if isinstance(data.get(section) or {}, Mapping)}
    return ServeConfig(data_dir=raw.data_dir, model=raw.model, cameras=cameras,
                       defaults=raw.defaults, smoothing=raw.smoothing, alerts=raw.alerts,
                       evidence=raw.evidence, metrics=raw.metrics, logging=raw.logging,
                       instance=instance, secrets=secrets, mqtt=raw.mqtt, notify=raw.notify,
                       web=raw.web, accel=raw.accel, explicit=explicit)


def data_dir_problem(path: Path) -> Optional[str]:
    """Why the daemon could not create or write `data_dir`, or None when it can.

    Checks without creating anything (`--check` changes nothing): an existing path must be a
    writable directory; otherwise its nearest existing ancestor must be one (`os.access`, which
    also reports a read-only file system to root).
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"cannot create {path}: no existing parent directory"
        probe = probe.parent
    if not probe.is_dir():
        return (f"exists and is not a directory: {path}" if probe == path
                else f"cannot create {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        return (f"not writable: {path}" if probe == path
                else f"cannot create {path}: {probe} is not writable")
    return None


def parse_config(data: Mapping[str, Any], source: str = "config", base_dir: Path | None = None,
                 environ: Mapping[str, str] | None = None, check_paths: bool = True) -> ServeConfig:
    """Build a ServeConfig from an already-loaded YAML mapping.

    Args:
        data: the YAML tree; `${NAME}` is expanded from `environ`.
        source: name used as the message prefix (the file name).
        base_dir: directory relative paths are resolved against (None = as written).
        environ: environment for `${NAME}` (default: os.environ).
        check_paths: check that the checkpoint (and CURVE keys) exist.
    Raises:
        ConfigError: `<source>: <dotted.key>: <problem>`, credentials masked.
    """
    env = os.environ if environ is None else environ
    secrets: set[str] = set()
    try:
        # Before expansion too (an unset variable stops it), but never `${NAME}` itself: the
        # message that names the variable must stay readable.
        secrets = {v for v in _url_secrets(data) if "${" not in v}
        secrets |= _substituted_secrets(data, env)
        expanded = expand_env(data, environ=env)
        secrets |= _url_secrets(expanded)
        secrets |= _integration_secrets(expanded)
        return _build(expanded, base_dir, check_paths, frozenset(secrets))
    except ConfigError as exc:
        raise ConfigError(_scrub(f"{source}: {exc}", secrets)) from None


def _yaml_error_without_snippet(path: Path) -> str | None:
    """`<file>: invalid YAML: <problem> at line L, column C`, without the quoted source line."""
    import yaml

    try:
        safe_load_unique(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        return f"{path}: invalid YAML: {what}{where}"
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    return None


def load_config(path: str | Path, environ: Mapping[str, str] | None = None,
                check_paths: bool = True) -> ServeConfig:
    """Read and validate the daemon's YAML config.

    Args:
        path: the YAML file.
        environ: environment used for `${NAME}` (default: os.environ).
        check_paths: check that the checkpoint (and CURVE keys) exist.
    Returns:
        The ServeConfig, every camera's settings resolved, paths absolute.
    Raises:
        ConfigError: naming the file and the dotted key; never containing a password.
    """
    path = Path(path)
    return parse_config(_read_yaml(path), source=str(path), base_dir=path.resolve().parent,
                        environ=environ, check_paths=check_paths)


def load_smoothing(path: str | Path) -> SmoothingConfig:
    """Only the `smoothing:` section of a daemon config file, validated as `load_config`
    validates it. Nothing else in the file is read, so an offline tool
    (`scripts/alert-check.py --config`) can replay a config's alert settings without its
    cameras' `${VARIABLES}` set.

    Raises:
        ConfigError: `<file>: smoothing.<key>: <problem>`, or the file is not a YAML mapping.
    """
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        smoothing = from_dict(SmoothingConfig, data.get("smoothing"), "smoothing")
        smoothing.validate("smoothing")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return smoothing


def _read_yaml(path: Path) -> Any:
    """The YAML tree of `path` (`load_yaml`: duplicate keys refused).

    Raises:
        ConfigError: unreadable or invalid YAML, without quoting the offending line.
    """
    try:
        return load_yaml(path)
    except ConfigError as exc:
        # A YAML syntax error quotes the offending line, which may hold a URL with a password
        # (cut anywhere, so masking cannot be trusted): report the problem and position only.
        raise ConfigError(_yaml_error_without_snippet(path) or mask_secrets(str(exc))) from None

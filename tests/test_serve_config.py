"""The daemon config: validation at the door, per-camera overrides, and no password ever shown."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from detector.errors import ConfigError
from streamer.config import (CameraSettings, ServeConfig, SmoothingConfig, load_config,
                             load_smoothing, mask_url, parse_config)

PASSWORD = "hunter2-Secret"


def write(tmp_path: Path, body: str, checkpoint: bool = True) -> Path:
    """A vigil.yaml in tmp_path (with model.pt beside it unless told otherwise)."""
    if checkpoint:
        (tmp_path / "model.pt").write_bytes(b"not really a checkpoint")
    path = tmp_path / "vigil.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


MINIMAL = """
    data_dir: data
    model:
      checkpoint: model.pt
    cameras:
      - name: lobby
        url: rtsp://admin:${CAM_PASS}@10.0.0.5/stream1
"""


def errors_of(tmp_path: Path, body: str, environ=None, checkpoint: bool = True) -> str:
    path = write(tmp_path, body, checkpoint)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ if environ is not None else {"CAM_PASS": PASSWORD})
    return str(info.value)


def test_minimal_config_gets_defaults_and_absolute_paths(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL), environ={"CAM_PASS": PASSWORD})
    assert isinstance(cfg, ServeConfig)
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.model.checkpoint == tmp_path / "model.pt"
    assert cfg.model.device == "auto" and cfg.model.max_batch == 8
    assert cfg.smoothing == SmoothingConfig()
    assert cfg.alerts.endpoint == "tcp://127.0.0.1:5557" and cfg.alerts.curve is None
    assert cfg.metrics.host == "127.0.0.1" and cfg.metrics.port == 9108
    cam = cfg.camera("lobby")
    assert cam.enabled and cam.settings == CameraSettings()
    # ${CAM_PASS} expanded from the given environment.
    assert cam.url == f"rtsp://admin:{PASSWORD}@10.0.0.5/stream1"
    assert PASSWORD not in cam.masked_url
    # Printing the config (a debug log line, a traceback) shows no password either.
    assert PASSWORD not in repr(cfg) and PASSWORD not in str(cam)


def test_camera_overrides_only_the_keys_it_names(tmp_path):
    cfg = load_config(write(tmp_path, """
        data_dir: /var/lib/vigil
        model: {checkpoint: model.pt}
        defaults:
          stride: 4
          fps: 25
          stall_timeout_s: 20
        cameras:
          - {name: lobby, url: "file:lobby.mp4"}
          - {name: yard, url: "rtsp://cam2/s", stride: 16, roi: [0.1, 0.2, 0.9, 1.0],
             enabled: false}
    """))
    lobby, yard = cfg.cameras
    assert (lobby.settings.stride, lobby.settings.fps, lobby.settings.roi) == (4, 25.0, None)
    assert (yard.settings.stride, yard.settings.fps, yard.settings.roi) == (16, 25.0,
                                                                          [0.1, 0.2, 0.9, 1.0])
    assert yard.settings.stall_timeout_s == 20.0
    assert not yard.enabled and [c.name for c in cfg.enabled_cameras] == ["lobby"]
    assert cfg.data_dir == Path("/var/lib/vigil")


def test_duplicate_camera_name_names_file_and_key(tmp_path):
    message = errors_of(tmp_path, """
        data_dir: d
        model: {checkpoint: model.pt}
        cameras:
          - {name: lobby, url: a.mp4}
          - {name: lobby, url: b.mp4}
    """)
    assert message.startswith(f"{tmp_path / 'vigil.yaml'}: cameras[1].name: "
                              "duplicate camera name 'lobby'")


@pytest.mark.parametrize("name", ["lob by", "", "x" * 65, "cam/1", "caméra", "a.b"])
def test_camera_names_outside_the_safe_alphabet_are_refused(tmp_path, name):
    message = errors_of(tmp_path, f"""
        data_dir: d
        model: {{checkpoint: model.pt}}
        cameras:
          - {{name: "{name}", url: a.mp4}}
    """)
    assert "cameras[0].name: invalid camera name" in message


@pytest.mark.parametrize("body, key", [
    ("smoothing: {alpha: 0.5, colour: red}", "smoothing.colour: unknown key"),
    ("smoothing: {alpha: high}", "smoothing.alpha: expected float"),
    ("smoothing: {on_threshold: 0.5, off_threshold: 0.5}", "smoothing.off_threshold"),
    ("smoothing: {on_threshold: 0.5, off_threshold: 0.7}", "smoothing.off_threshold"),
    ("smoothing: {method: median}", "smoothing.method: must be one of"),
    ("smoothing: {classes: {collapse: {on_threshld: 0.5}}}",
     "smoothing.classes.collapse.on_threshld: unknown key"),
    ("smoothing: {classes: {collapse: {min_windows: 0}}}",
     "smoothing.classes.collapse.min_windows: must be >= 1"),
    ("smoothing: {classes: {collapse: {on_threshold: 0.3}}}",   # below the global off 0.4
     "smoothing.classes.collapse.off_threshold: must be >= 0 and below on_threshold (0.3)"),
    ("smoothing: {classes: {collapse: 0.5}}", "smoothing.classes.collapse: expected a mapping"),
    ("smoothing: {classes: {collapse: {classes: {}}}}",
     "smoothing.classes.collapse.classes: overrides do not nest"),
    ("metrics: {port: 70000}", "metrics.port"),
    ("model_typo: {}", "model_typo: unknown key"),
    ("defaults: {stride: 0}", "defaults.stride"),
    ("defaults: {roi: [0.5, 0.1, 0.2, 0.9]}", "defaults.roi"),
    ("logging: {format: xml}", "logging.format"),
    ("alerts: {sndhwm: many}", "alerts.sndhwm: expected int"),
])
def test_bad_values_name_the_dotted_key(tmp_path, body, key):
    message = errors_of(tmp_path, MINIMAL + "    " + body + "\n")
    assert message.startswith(str(tmp_path / "vigil.yaml") + ": ")
    assert key in message


def test_a_class_overrides_only_the_smoothing_keys_it_names(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + """\
    smoothing:
      on_threshold: 0.7
      classes:
        collapse: {on_threshold: 0.5, min_windows: 1}
    """), environ={"CAM_PASS": PASSWORD})
    collapse, fight = cfg.smoothing.for_class("collapse"), cfg.smoothing.for_class("fight")
    assert (collapse.on_threshold, collapse.min_windows, collapse.off_threshold) == (0.5, 1, 0.4)
    assert collapse.classes == {}
    assert fight is cfg.smoothing and (fight.on_threshold, fight.min_windows) == (0.7, 2)


def test_the_smoothing_section_alone_loads_without_the_cameras_secrets(tmp_path):
    """Offline tools replay a config's alert settings; the cameras' ${VARIABLES} need not be set
    and the checkpoint need not exist, but the section is validated as the daemon validates it."""
    path = write(tmp_path, MINIMAL + """    smoothing:
      classes:
        collapse: {on_threshold: 0.9, min_windows: 1}
    """, checkpoint=False)
    smoothing = load_smoothing(path)
    assert smoothing.for_class("collapse").on_threshold == 0.9
    assert smoothing.for_class("fight") == SmoothingConfig(classes=smoothing.classes)
    with pytest.raises(ConfigError, match="CAM_PASS"):
        load_config(path, environ={})
    bad = write(tmp_path, "smoothing:\n  classes:\n    collapse: {on_treshold: 0.9}\n")
    with pytest.raises(ConfigError, match=r"vigil.yaml: smoothing.classes.collapse.on_treshold: "
                                          r"unknown key"):
        load_smoothing(bad)
    assert load_smoothing(write(tmp_path, "data_dir: d\n")) == SmoothingConfig()


def test_unknown_camera_key_and_bad_override_are_refused(tmp_path):
    message = errors_of(tmp_path, MINIMAL + "        strid: 4\n")
    assert "cameras[0].strid: unknown key" in message
    message = errors_of(tmp_path, MINIMAL + "        stride: fast\n")
    assert "cameras[0].stride: expected int" in message


def test_missing_checkpoint_names_model_checkpoint(tmp_path):
    message = errors_of(tmp_path, MINIMAL, checkpoint=False)
    assert "model.checkpoint: checkpoint file not found" in message


def test_missing_curve_keys_are_refused(tmp_path):
    message = errors_of(tmp_path, MINIMAL + """
    alerts:
      curve: {server_secret_key: keys/server.key_secret, authorized_clients: keys/clients}
    """)
    assert "alerts.curve.server_secret_key: key file not found" in message


def test_at_least_one_camera(tmp_path):
    message = errors_of(tmp_path, """
        data_dir: d
        model: {checkpoint: model.pt}
        cameras: []
    """)
    assert "cameras: at least one camera" in message


def test_missing_environment_variable_names_the_key(tmp_path):
    message = errors_of(tmp_path, MINIMAL, environ={})
    assert "cameras[0].url: environment variable ${CAM_PASS} is not set" in message


def test_python_tags_are_refused_by_safe_load(tmp_path):
    marker = tmp_path / "pwned"
    message = errors_of(tmp_path, f"""
        data_dir: !!python/object/apply:os.system ["touch {marker}"]
        model: {{checkpoint: model.pt}}
        cameras: [{{name: a, url: a.mp4}}]
    """)
    assert "invalid YAML" in message
    assert not marker.exists()


@pytest.mark.parametrize("url, masked", [
    ("rtsp://admin:secret@10.0.0.5:554/stream1", "rtsp://*:*@10.0.0.5:554/stream1"),
    ("rtsp://admin@cam.local/live", "rtsp://*:*@cam.local/live"),
    ("rtsp://user:p%40ss@[fe80::1]:554/s", "rtsp://*:*@[fe80::1]:554/s"),
    ("http://cam/snap.cgi?user=admin&password=secret&res=hd",
     "http://cam/snap.cgi?user=*&password=*&res=hd"),
    ("http://a:b@cam/x?pwd=secret", "http://*:*@cam/x?pwd=*"),
    ("rtsp://10.0.0.5/stream1", "rtsp://10.0.0.5/stream1"),
    ("/videos/lobby.mp4", "/videos/lobby.mp4"),
    ("0", "0"),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


# Configs that are wrong in a place holding a credential: the message must not show it.
LEAKY = {
    "camera entry is a string": f"""
        cameras:
          - rtsp://admin:{PASSWORD}@10.0.0.5/stream1
    """,
    "url is a list": f"""
        cameras:
          - name: lobby
            url: [rtsp://admin:{PASSWORD}@10.0.0.5/stream1]
    """,
    "url is a mapping": f"""
        cameras:
          - name: lobby
            url: {{rtsp://admin:{PASSWORD}@10.0.0.5/stream1: 1}}
    """,
    "password from the environment, bad name": """
        cameras:
          - name: "lob by"
            url: rtsp://admin:${CAM_PASS}@10.0.0.5/stream1
    """,
    "password in a query string, duplicate": f"""
        cameras:
          - {{name: a, url: "http://cam/v?user=admin&password={PASSWORD}"}}
          - {{name: a, url: "http://cam/v?user=admin&password={PASSWORD}"}}
    """,
    "url used where a number belongs": f"""
        cameras:
          - name: lobby
            url: rtsp://cam/s
            fps: rtsp://admin:{PASSWORD}@10.0.0.5/stream1
    """,
    "long user name pushes the password past the truncation": f"""
        cameras:
          - name: lobby
            url: rtsp://cam/s
            stride: rtsp://administrator:{PASSWORD}@10.0.0.5/stream1
    """,
    "yaml syntax error on the url line": f"""
        cameras:
          - name: lobby
            url: rtsp://admin:{PASSWORD}@10.0.0.5/stream1: [
    """,
}


@pytest.mark.parametrize("case", sorted(LEAKY))
def test_no_password_in_any_config_error(tmp_path, case):
    body = "data_dir: d\nmodel: {checkpoint: model.pt}\n" + textwrap.dedent(LEAKY[case])
    message = errors_of(tmp_path, body)
    for fragment in (PASSWORD, PASSWORD[:6], PASSWORD[-6:]):
        assert fragment not in message, message


def test_parse_config_from_a_mapping_without_path_checks():
    cfg = parse_config({"data_dir": "/tmp/v", "model": {"checkpoint": "nowhere.pt"},
                        "cameras": [{"name": "a", "url": "synthetic:fight"}]},
                       source="inline", check_paths=False)
    assert cfg.model.checkpoint == Path("nowhere.pt")
    with pytest.raises(ConfigError, match=r"^inline: cameras\[0\]\.name: required key"):
        parse_config({"data_dir": "/tmp/v", "model": {"checkpoint": "x"},
                      "cameras": [{"url": "a.mp4"}]}, source="inline", check_paths=False)


# ----------------------------------------------------------------------------- field faults
def test_a_section_given_twice_is_refused_with_both_lines(tmp_path):
    message = errors_of(tmp_path, """
        data_dir: data
        model:
          checkpoint: model.pt
        cameras:
          - name: lobby
            url: rtsp://10.0.0.5/stream1
        model:
          checkpoint: other.pt
    """)
    assert message.startswith(str(tmp_path / "vigil.yaml"))
    assert "duplicate key 'model' (first given at line 3) at line 8" in message


def test_a_camera_with_two_urls_is_refused_without_showing_either(tmp_path):
    message = errors_of(tmp_path, f"""
        data_dir: data
        model: {{checkpoint: model.pt}}
        cameras:
          - name: lobby
            url: rtsp://admin:{PASSWORD}@10.0.0.5/stream1
            url: rtsp://admin:${{CAM_PASS}}@10.0.0.6/stream1
    """)
    assert "duplicate key 'url' (first given at line 6) at line 7" in message
    assert PASSWORD not in message


def test_a_duplicate_url_key_is_not_quoted(tmp_path):
    message = errors_of(tmp_path, f"""
        data_dir: data
        model: {{checkpoint: model.pt}}
        cameras:
          - name: lobby
            url: {{"rtsp://admin:{PASSWORD}@h/s": 1, "rtsp://admin:{PASSWORD}@h/s": 2}}
    """)
    assert "found a duplicate key (first given at line 6)" in message
    assert PASSWORD not in message


def test_an_empty_environment_variable_is_a_warning_naming_the_key(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="streamer.config"):
        load_config(write(tmp_path, MINIMAL), environ={"CAM_PASS": ""})
    assert "cameras[0].url: environment variable ${CAM_PASS} is empty" in caplog.text


def test_values_from_the_environment_are_secrets_of_the_config(tmp_path):
    env_pw = "Pw#h@sh:colon/slash"
    cfg = load_config(write(tmp_path, MINIMAL), environ={"CAM_PASS": env_pw})
    assert env_pw in cfg.secrets and env_pw in cfg.cameras[0].secrets
    assert cfg.cameras[0].masked_url == "rtsp://*:*@10.0.0.5/stream1"
    assert "slash" not in repr(cfg) and "slash" not in repr(cfg.cameras[0])


def test_a_data_dir_that_cannot_be_created_is_refused_at_check(tmp_path):
    (tmp_path / "file").write_text("x")
    for data_dir in ("file/data", "file"):
        message = errors_of(tmp_path, MINIMAL.replace("data_dir: data", f"data_dir: {data_dir}"))
        assert "data_dir:" in message


def test_every_config_key_is_in_the_key_table():
    import dataclasses as dc
    import re

    from streamer import config as sc

    table = (Path(__file__).resolve().parents[1] / "docs/configuration.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, re.M))
    from streamer.accel.settings import AccelConfig
    from streamer.comms import settings as cs
    from streamer.web.settings import WebConfig

    sections = {"defaults": sc.CameraSettings, "model": sc.ServeModelConfig,
                "smoothing": sc.SmoothingConfig, "alerts": sc.AlertsConfig,
                "evidence": sc.EvidenceConfig, "metrics": sc.MetricsConfig,
                "logging": sc.LoggingConfig, "alerts.curve": sc.CurveConfig,
                "model.pose": sc.PoseServeConfig,
                "mqtt": cs.MqttConfig, "mqtt.tls": cs.MqttTlsConfig,
                "mqtt.discovery": cs.DiscoveryConfig, "notify": cs.NotifyConfig,
                "notify.rules[]": cs.NotifyRule, "web": WebConfig, "accel": AccelConfig}
    wanted = {"data_dir", "instance", "cameras[].name", "cameras[].url", "cameras[].enabled",
              "cameras[].mask", "cameras[].zones", "cameras[].required_zones",
              "cameras[].smoothing", "cameras[].schedule"}
    for section, cls in sections.items():
        wanted |= {f"{section}.{f.name}" for f in dc.fields(cls)
                   if f.name not in ("curve", "tls", "discovery", "pose")}
    assert {f.name for f in dc.fields(ServeConfig)} - {"cameras", "data_dir", "instance", "secrets",
                                                      "explicit"} == \
        {s for s in sections if "." not in s}
    missing = sorted(wanted - documented)
    assert not missing, f"docs/configuration.md's key table lacks {missing}"


def test_a_camera_name_from_the_environment_is_not_treated_as_a_secret(tmp_path):
    body = MINIMAL.replace("- name: lobby", "- name: ${CAM_NAME}")
    cfg = load_config(write(tmp_path, body), environ={"CAM_PASS": "Pw/x-long", "CAM_NAME": "lobby"})
    assert "lobby" not in cfg.secrets and "Pw/x-long" in cfg.secrets


def test_checkpoint_vigil_is_the_shipped_default_model(tmp_path):
    from detector.init_weights import DEFAULT_MODEL, WEIGHTS_DIR

    path = write(tmp_path, MINIMAL.replace("checkpoint: model.pt", "checkpoint: vigil"),
                 checkpoint=False)
    cfg = load_config(path, environ={"CAM_PASS": PASSWORD})
    assert cfg.model.checkpoint == WEIGHTS_DIR / f"{DEFAULT_MODEL}.pt"
    assert cfg.model.checkpoint.is_file()


def test_checkpoint_may_name_other_shipped_weights_by_their_bare_name(tmp_path):
    from detector.init_weights import WEIGHTS_DIR

    path = write(tmp_path, MINIMAL.replace("checkpoint: model.pt", "checkpoint: real-cpu-v2"),
                 checkpoint=False)
    cfg = load_config(path, environ={"CAM_PASS": PASSWORD})
    assert cfg.model.checkpoint == WEIGHTS_DIR / "real-cpu-v2.pt"
    # A name that is no shipped file stays a path (beside the config), and is refused as one.
    path = write(tmp_path, MINIMAL.replace("checkpoint: model.pt", "checkpoint: real-cpu-v9"),
                 checkpoint=False)
    with pytest.raises(ConfigError, match="real-cpu-v9"):
        load_config(path, environ={"CAM_PASS": PASSWORD})


def test_a_missing_default_model_is_a_config_error_naming_the_key(tmp_path, monkeypatch):
    from detector import init_weights

    monkeypatch.setattr(init_weights, "WEIGHTS_DIR", tmp_path / "no-weights")
    message = errors_of(tmp_path, MINIMAL.replace("checkpoint: model.pt", "checkpoint: vigil"),
                        checkpoint=False)
    assert "model.checkpoint: Vigil's default model" in message and "missing" in message


def test_instance_defaults_to_the_sanitised_host_name_and_is_validated(tmp_path):
    from streamer.config import CAMERA_NAME, default_instance

    cfg = load_config(write(tmp_path, MINIMAL), environ={"CAM_PASS": PASSWORD})
    assert cfg.instance == default_instance() and CAMERA_NAME.fullmatch(cfg.instance)
    assert default_instance("gpu node#3.site.example") == "gpu-node-3"
    assert default_instance("") == "vigil"
    cfg = load_config(write(tmp_path, "instance: gpu1\n" + textwrap.dedent(MINIMAL)),
                      environ={"CAM_PASS": PASSWORD})
    assert cfg.instance == "gpu1"
    for bad in ("'gpu 1'", "a.b", "''"):
        message = errors_of(tmp_path, f"instance: {bad}\n" + textwrap.dedent(MINIMAL))
        assert "instance:" in message, message

"""Per-camera settings and the integrations' config: the smoothing precedence (built-in default
< `smoothing` < `smoothing.classes.L` < `cameras[i].smoothing` < `cameras[i].smoothing.classes.L`),
what `vigil serve --check --explain CAMERA` prints, `vigil snapshot --draw-zones`, and the
`mqtt:`/`notify:` sections refused at load with the key named and their secrets masked.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detector.errors import ConfigError
from streamer.config import load_config, parse_config
from streamer.events import EventTracker
from streamer.types import ClassScore, WindowResult

REPO = Path(__file__).resolve().parents[1]


def cfg_of(cameras, **top):
    return parse_config({"data_dir": "/tmp/vigil-test", "model": {"checkpoint": "x.pt"},
                         "cameras": cameras, **top}, check_paths=False)


TWO = [{"name": "bar", "url": "synth://fight",
        "smoothing": {"on_threshold": 0.7, "classes": {"collapse": {"cooldown_s": 9}}}},
       {"name": "hall", "url": "synth://collapse"}]
GLOBAL = {"cooldown_s": 4, "classes": {"collapse": {"on_threshold": 0.9, "min_windows": 1}}}


def test_the_camera_smoothing_precedence():
    cfg = cfg_of(TWO, smoothing=GLOBAL)
    bar_c, bar_f = cfg.smoothing_for("bar", "collapse"), cfg.smoothing_for("bar", "fight")
    hall_c = cfg.smoothing_for("hall", "collapse")
    # The camera's own keys win over the global class overrides, its class overrides over all.
    assert (bar_c.on_threshold, bar_c.min_windows, bar_c.cooldown_s) == (0.7, 1, 9)
    assert (bar_f.on_threshold, bar_f.min_windows, bar_f.cooldown_s) == (0.7, 2, 4)
    # A camera without overrides gets the global section with its class overrides.
    assert (hall_c.on_threshold, hall_c.min_windows, hall_c.cooldown_s) == (0.9, 1, 4)
    sources = {layer.source for layer in cfg.smoothing.layers("collapse", cfg.cameras[0].smoothing,
                                                                 "cameras[0]")}
    assert sources == {"built-in default", "smoothing", "smoothing.classes.collapse",
                       "cameras[0].smoothing", "cameras[0].smoothing.classes.collapse"}


@pytest.mark.parametrize("smoothing, key", [
    ({"on_treshold": 0.7}, r"cameras\[0\]\.smoothing\.on_treshold: unknown key"),
    ({"on_threshold": "high"}, r"cameras\[0\]\.smoothing\.on_threshold: expected float"),
    ({"off_threshold": 0.8}, r"cameras\[0\]\.smoothing\.off_threshold: must be >= 0 and below"),
    ({"classes": {"fight": {"k": 9}}}, r"cameras\[0\]\.smoothing\.classes\.fight\.k: must be in"),
    ({"classes": {"fight": {"classes": {}}}}, r"\.classes\.fight\.classes: overrides do not nest"),
    ({"on_threshold": 0.3}, r"cameras\[0\]\.smoothing.*off_threshold"),   # below global off 0.4
])
def test_bad_camera_smoothing_is_refused_at_load_naming_the_key(smoothing, key):
    with pytest.raises(ConfigError, match=key):
        cfg_of([{"name": "bar", "url": "synth://fight", "smoothing": smoothing}])


def test_two_cameras_with_different_thresholds_see_the_same_scores_differently():
    cfg = cfg_of([{"name": "strict", "url": "synth://fight", "smoothing": {"on_threshold": 0.9}},
                  {"name": "loose", "url": "synth://fight"}],
                 smoothing={"min_windows": 1, "alpha": 1.0})
    tracker = EventTracker(cfg.smoothing, ["fight"], resolver=cfg.smoothing_for)
    starts = []
    for t in range(3):
        for cam in ("strict", "loose"):
            r = WindowResult(cam, {"fight": ClassScore("fight", 0.75, (0.1, 0.1, 0.4, 0.4))},
                             (320, 240), t, t + 1, t + 1, t)
            starts += [m["camera"] for m in tracker.observe(r) if m["type"] == "start"]
    assert starts == ["loose"]


def write_config(tmp_path: Path, extra: dict) -> Path:
    from vigil_tools.harness import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = {"data_dir": str(tmp_path / "data"), "model": {"checkpoint": str(ckpt), "device": "cpu"},
           "smoothing": GLOBAL, "defaults": {"stride": 6},
           "cameras": [{**TWO[0], "url": "synth://fight?width=160&height=120&fps=10",
                        "stride": 4, "mask": [[[0, 0], [0.3, 0], [0.3, 0.2], [0, 0.2]]],
                        "zones": {"floor": [[0.1, 0.4], [0.9, 0.4], [0.9, 1], [0.1, 1]],
                                  "door": [[0.85, 0], [1, 0], [1, 0.4]]},
                        "required_zones": ["floor"],
                        "schedule": {"timezone": "Europe/London", "outside": "mute",
                                     "when": ["fri,sat 20:00-04:00"]}},
                       TWO[1]],
           **extra}
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def vigil(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)


def test_check_explain_shows_every_setting_and_where_it_comes_from(tmp_path):
    path = write_config(tmp_path, {"notify": {"rules": [{
        "name": "bar-night", "urls": ["tgram://123456789:AAbbCCddEEff/987654321"],
        "cameras": ["bar"], "labels": ["fight"]}]}})
    got = vigil("serve", "--config", str(path), "--check", "--explain", "bar")
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()

    def row(key_prefix: str, section: str) -> str:
        start = next(i for i, line in enumerate(lines) if line.startswith(section))
        return next(line for line in lines[start + 1:] if line.split()[:1] == [key_prefix])

    assert row("stride", "  capture settings").split() == ["stride", "4", "cameras[0]"]
    assert row("on_threshold", "  smoothing of collapse").split() == \
        ["on_threshold", "0.7", "cameras[0].smoothing"]
    assert row("min_windows", "  smoothing of collapse").split() == \
        ["min_windows", "1", "smoothing.classes.collapse"]
    assert row("cooldown_s", "  smoothing of collapse").split() == \
        ["cooldown_s", "9", "cameras[0].smoothing.classes.collapse"]
    assert row("cooldown_s", "  smoothing of fight").split() == ["cooldown_s", "4", "smoothing"]
    assert row("alpha", "  smoothing of fight").split()[1:] == ["0.5", "built-in", "default"]
    text = got.stdout
    assert "smoothing of collapse (built-in default < smoothing < smoothing.classes.collapse " \
           "< cameras[0].smoothing < cameras[0].smoothing.classes.collapse)" in text
    assert "zones: floor (required)" in text and "0.25 of its box area lies in floor" in text
    assert "mask: 1 polygon(s), 6% of the frame" in text
    assert "schedule: fri,sat 20:00-04:00 (Europe/London); outside: mute" in text
    assert "notify bar-night: fight, start, always, to tgram://***" in text
    assert "AAbbCCddEEff" not in text + got.stderr


def test_explain_needs_check_and_a_known_camera(tmp_path):
    path = write_config(tmp_path, {})
    got = vigil("serve", "--config", str(path), "--check", "--explain", "nope")
    assert got.returncode == 2 and "--explain: no camera 'nope'" in got.stderr
    got = vigil("serve", "--config", str(path), "--explain", "bar")
    assert got.returncode == 2 and "--explain goes with --check" in got.stderr


def test_snapshot_draw_zones_writes_a_jpeg_with_the_polygons(tmp_path):
    import cv2

    path = write_config(tmp_path, {})
    out = tmp_path / "bar.jpg"
    got = vigil("snapshot", "--config", str(path), "--camera", "bar", "--draw-zones", "--out",
                str(out))
    assert got.returncode == 0, got.stderr
    assert "1 mask polygon(s) and 2 zone(s) drawn" in got.stdout
    drawn = cv2.imread(str(out))
    assert drawn.shape == (120, 160, 3)
    plain = tmp_path / "plain.jpg"
    assert vigil("snapshot", "--config", str(path), "--camera", "bar", "--out",
                 str(plain)).returncode == 0
    # The mask's corner is shaded dark on the drawn frame only.
    assert drawn[5:15, 5:40].mean() < cv2.imread(str(plain))[5:15, 5:40].mean() - 30
    got = vigil("snapshot", "--config", str(path), "--camera", "nope")
    assert got.returncode == 2 and "--camera: no camera 'nope'" in got.stderr


# ----------------------------------------------------------------------------- mqtt / notify
CAM = [{"name": "bar", "url": "synth://fight"}]


@pytest.mark.parametrize("mqtt, key", [
    ({"host": "b", "topic_prefix": "vigil/#"}, r"mqtt\.topic_prefix: 'vigil/#' holds an MQTT "
                                               r"wildcard"),
    ({"host": "b", "topic_prefix": "site/+/x"}, r"mqtt\.topic_prefix: .* wildcard"),
    ({"host": "b", "topic_prefix": "/vigil"}, r"mqtt\.topic_prefix: .* no leading"),
    ({"host": "b", "topic_prefix": "$SYS"}, r"mqtt\.topic_prefix: .* broker's"),
    ({"host": "b", "discovery": {"prefix": "home#"}}, r"mqtt\.discovery\.prefix: .* wildcard"),
    ({"host": "b", "discovery": {"device_classes": {"fight": "danger"}}},
     r"mqtt\.discovery\.device_classes\.fight: 'danger' is not"),
    ({"host": "mqtt://b:1883"}, r"mqtt\.host: expected a host name"),
    ({"host": "b", "password": "x"}, r"mqtt\.password: a password needs a username"),
    ({"host": "b", "qos": 3}, r"mqtt\.qos: must be in"),
    ({"host": "b", "port": 0}, r"mqtt\.port: must be in"),
    ({"port": 1883}, r"mqtt\.host: required key is missing"),
    ({"host": "b", "tls": {"cert_file": "c.pem"}}, r"mqtt\.tls\.key_file: cert_file and key_file"),
])
def test_bad_mqtt_settings_are_refused_naming_the_key(mqtt, key):
    with pytest.raises(ConfigError, match=key):
        cfg_of(CAM, mqtt=mqtt)


@pytest.mark.parametrize("rule, key", [
    ({"name": "a b", "urls": ["json://h/x"]}, r"notify\.rules\[0\]\.name: invalid rule name"),
    ({"name": "a", "urls": []}, r"notify\.rules\[0\]\.urls: give at least one"),
    ({"name": "a", "urls": ["not a url"]}, r"notify\.rules\[0\]\.urls\[0\]: expected an apprise"),
    ({"name": "a", "urls": ["json://h/x"], "types": ["begin"]}, r"\.types: 'begin'"),
    ({"name": "a", "urls": ["json://h/x"], "cameras": ["lobby"]},
     r"notify\.rules\[0\]\.cameras: unknown camera 'lobby'"),
    ({"name": "a", "urls": ["json://h/x"], "title": "{where}"}, r"\.title: unknown placeholder"),
    ({"name": "a", "urls": ["json://h/x"], "schedule": {"timezone": "Nowhere/City",
                                                        "when": ["daily 00:00-01:00"]}},
     r"notify\.rules\[0\]\.schedule\.timezone: unknown time zone"),
    ({"name": "a", "urls": ["json://h/x"], "schedule": {"timezone": "UTC", "outside": "mute",
                                                        "when": ["daily 00:00-01:00"]}},
     r"notify\.rules\[0\]\.schedule\.outside: unknown key"),
])
def test_bad_notification_rules_are_refused_naming_the_key(rule, key):
    with pytest.raises(ConfigError, match=key):
        cfg_of(CAM, notify={"rules": [rule]})


def test_a_duplicate_rule_name_is_refused():
    rule = {"name": "a", "urls": ["json://h/x"]}
    with pytest.raises(ConfigError, match=r"notify\.rules\[1\]\.name: duplicate rule name 'a'"):
        cfg_of(CAM, notify={"rules": [rule, rule]})


def test_the_mqtt_password_and_notification_urls_are_secrets_masked_everywhere(tmp_path, caplog):
    from streamer.masking import install_log_filter

    env = {"MQTT_PASSWORD": "Mq77-pass-word", "TG_TOKEN": "123456789:AAHsecretTokenXYZ"}
    body = {"data_dir": str(tmp_path), "model": {"checkpoint": "x.pt"}, "cameras": CAM,
            "mqtt": {"host": "broker.lan", "username": "vigil-ha",
                     "password": "${MQTT_PASSWORD}"},
            "notify": {"rules": [{"name": "tg", "urls": ["tgram://${TG_TOKEN}/-1001234567"]},
                                 {"name": "hook", "urls": ["json://hooks.example.org/"
                                                           "Hk9sEcReT77"]}]}}
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(body))
    cfg = load_config(path, environ=env, check_paths=False)
    for secret in ("Mq77-pass-word", "AAHsecretTokenXYZ", "-1001234567", "Hk9sEcReT77"):
        assert secret in cfg.secrets
    assert "hooks.example.org" not in cfg.secrets and "broker.lan" not in cfg.secrets
    assert "Mq77-pass-word" not in repr(cfg)
    # Every log line passes the filter the daemon installs with the config's secrets.
    logger = logging.getLogger("test.secrets")
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    logger.addHandler(handler)
    try:
        install_log_filter(cfg.secrets, logger=logger)
        logger.error("connect mqtt://vigil-ha:Mq77-pass-word@broker.lan failed; posting to "
                     "https://api.telegram.org/bot123456789:AAHsecretTokenXYZ/sendMessage "
                     "chat -1001234567 and json://hooks.example.org/Hk9sEcReT77")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    for secret in ("Mq77-pass-word", "AAHsecretTokenXYZ", "-1001234567", "Hk9sEcReT77"):
        assert secret not in text
    # A config error that quotes them masks them too.
    body["notify"]["rules"][1]["types"] = ["Hk9sEcReT77"]
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=env, check_paths=False)
    assert "Hk9sEcReT77" not in str(err.value) and "types" in str(err.value)

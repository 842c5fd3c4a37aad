"""The serve-side verbs: argument parsing, `serve` refusing bad configs fast, `alerts` against a
real publisher on loopback (replay, de-duplication, gap report), `keys generate`."""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vigil_tools.harness import free_port

from detector.errors import ConfigError
from streamer import commands

ROOT = Path(__file__).resolve().parents[1]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vigil")
    sub = p.add_subparsers(dest="verb")
    commands.register(sub)
    return p




# ----------------------------------------------------------------------------- parsing
def test_serve_requires_a_config_file():
    with pytest.raises(SystemExit):
        parser().parse_args(["serve"])
    args = parser().parse_args(["serve", "--config", "x.yaml"])
    assert args.func is commands.cmd_serve and args.config == Path("x.yaml")


def test_alerts_arguments_and_defaults():
    args = parser().parse_args(["alerts", "tcp://127.0.0.1:5557"])
    assert args.func is commands.cmd_alerts
    assert (args.endpoint, args.replay, args.since, args.count, args.timeout, args.json) == (
        ["tcp://127.0.0.1:5557"], None, None, None, None, False)
    args = parser().parse_args(["alerts", "tcp://h:1", "--replay", "tcp://h:2", "--since", "7",
                                "--count", "3", "--timeout", "1.5", "--json"])
    assert (args.replay, args.since, args.count, args.timeout, args.json) == (
        ["tcp://h:2"], 7, 3, 1.5, True)
    args = parser().parse_args(["alerts", "tcp://a:1", "tcp://b:1", "--replay", "tcp://a:2",
                                "--replay", "tcp://b:2"])
    assert (args.endpoint, args.replay) == (["tcp://a:1", "tcp://b:1"], ["tcp://a:2", "tcp://b:2"])


def test_relay_arguments():
    args = parser().parse_args(["relay", "--daemon", "tcp://a:5557", "--daemon", "tcp://b:5557",
                                "--replay", "a=tcp://a:5558", "--replay", "b=tcp://b:5558"])
    assert args.func is commands.cmd_relay
    assert args.daemon == ["tcp://a:5557", "tcp://b:5557"]
    assert (args.endpoint, args.replay_endpoint) == ("tcp://127.0.0.1:5567",
                                                     "tcp://127.0.0.1:5568")
    from streamer.relay import parse_replay_map

    assert parse_replay_map(args.replay) == {"a": "tcp://a:5558", "b": "tcp://b:5558"}
    for bad in (["a"], ["a=x", "a=y"]):
        with pytest.raises(ConfigError):
            parse_replay_map(bad)


def test_keys_generate_arguments():
    args = parser().parse_args(["keys", "generate", "--out", "k", "--clients", "a", "b"])
    assert args.func is commands.cmd_keys_generate
    assert args.out == Path("k") and args.clients == ["a", "b"] and not args.force
    with pytest.raises(SystemExit):
        parser().parse_args(["keys"])


def test_default_replay_endpoint_is_the_next_port_on_the_same_host():
    assert commands.default_replay_endpoint("tcp://127.0.0.1:5557") == "tcp://127.0.0.1:5558"
    with pytest.raises(ConfigError, match="--replay"):
        commands.default_replay_endpoint("ipc:///run/vigil.sock")


def test_the_module_imports_nothing_heavy():
    code = ("import sys, streamer.commands; "
            "heavy = [m for m in ('torch', 'cv2', 'zmq') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# ----------------------------------------------------------------------------- serve
def test_serve_with_an_invalid_config_raises_naming_the_key(tmp_path):
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("data_dir: d\nmodel: {checkpoint: missing.pt}\n"
                   "cameras: [{name: a, url: 'synth://fight', strde: 2}]\n")
    args = parser().parse_args(["serve", "--config", str(cfg)])
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.strde"):
        commands.cmd_serve(args)


def test_vigil_serve_exits_2_with_the_message_on_an_invalid_config(tmp_path):
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("data_dir: d\nmodel: {checkpoint: missing.pt}\n"
                   "cameras: [{name: a, url: 'synth://fight'}]\n")
    out = subprocess.run([sys.executable, "-m", "streamer.cli", "serve", "--config", str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "model.checkpoint" in out.stderr and "missing.pt" in out.stderr


# ----------------------------------------------------------------------------- alerts
def _message(camera: str, kind: str, event_id: str, reason=None) -> dict:
    return {"schema": "vigil.alert/1", "type": kind, "event_id": event_id, "camera": camera,
            "label": "fight", "score": 0.9, "box": [0.1, 0.2, 0.5, 0.8],
            "box_px": [10, 20, 50, 80], "frame_size": [100, 100],
            "window": {"start": "2026-11-24T10:15:01.12Z", "end": "2026-11-24T10:15:01.76Z"},
            "snapshot": None, "clip": None, "reason": reason}


@pytest.fixture
def publisher(tmp_path):
    from streamer.publisher import AlertPublisher

    pub = AlertPublisher(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}",
                         tmp_path / "journal.sqlite3")
    yield pub
    pub.close()


def _alerts_args(pub, *extra: str) -> argparse.Namespace:
    return parser().parse_args(["alerts", pub.endpoint, "--replay", pub.replay_endpoint,
                                "--json", *extra])


def _run_alerts(publisher, args, live: list[dict] = (), seconds: float = 10.0) -> int:
    """Run `cmd_alerts` in a thread while this thread (the PUB socket's owner) publishes `live`
    after half a second and sends heartbeats, as the daemon would."""
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("code", commands.cmd_alerts(args)))
    t.start()
    start = time.monotonic()
    pending = list(live)
    while t.is_alive() and time.monotonic() - start < seconds:
        if pending and time.monotonic() - start > 0.5:
            publisher.emit(pending.pop(0))
        publisher.heartbeat()
        time.sleep(0.1)
    t.join(5)
    assert not t.is_alive(), "vigil alerts did not return"
    return result["code"]


def test_alerts_replays_since_seq_then_prints_live_ones_once_in_seq_order(publisher, capsys):
    for i in range(3):
        publisher.emit(_message("lobby", "start", f"e{i}"))          # seq 1, 2, 3
    args = _alerts_args(publisher, "--since", "1", "--count", "3", "--timeout", "10")
    code = _run_alerts(publisher, args, live=[_message("lobby", "end", "e0", reason="cleared")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = [json.loads(line) for line in captured.out.splitlines()]
    assert [m["seq"] for m in printed] == [2, 3, 4]
    assert printed[-1]["type"] == "end" and printed[-1]["reason"] == "cleared"


def test_alerts_reports_a_gap_the_journal_cannot_fill(publisher, tmp_path, capsys):
    for i in range(3):
        publisher.emit(_message("lobby", "start", f"e{i}"))          # seq 1, 2, 3
    db = sqlite3.connect(str(tmp_path / "journal.sqlite3"))
    db.execute("DELETE FROM alerts WHERE seq = 2")                   # lost for good
    db.commit()
    db.close()
    args = _alerts_args(publisher, "--since", "0", "--count", "2", "--timeout", "10")
    code = _run_alerts(publisher, args)
    captured = capsys.readouterr()
    assert code == 0
    assert [json.loads(line)["seq"] for line in captured.out.splitlines()] == [1, 3]
    assert "gap: alerts 2..2" in captured.err


def test_alerts_exits_1_when_count_is_not_reached_before_the_timeout(publisher, capsys):
    args = _alerts_args(publisher, "--count", "1", "--timeout", "0.5")
    assert _run_alerts(publisher, args) == 1
    assert "received 0 of 1" in capsys.readouterr().err


def test_alerts_prints_a_readable_line_without_json(publisher, capsys):
    publisher.emit(_message("lobby", "start", "e0"))
    args = parser().parse_args(["alerts", publisher.endpoint, "--replay",
                                publisher.replay_endpoint, "--since", "0", "--count", "1",
                                "--timeout", "5"])
    assert _run_alerts(publisher, args) == 0
    line = capsys.readouterr().out.strip()
    assert "#1" in line and "lobby" in line and "START" in line and "fight" in line


# ----------------------------------------------------------------------------- keys
def test_a_heartbeat_line_names_the_serving_model_and_nothing_that_drives_a_terminal():
    from streamer.commands import format_heartbeat

    hb = {"seq": 7, "uptime_s": 3.0, "cameras": {"a": {"up": True}},
          "model": {"name": "next\x1b[2J.pt", "sha256": "a36952be6f38" + "0" * 52}}
    line = format_heartbeat(hb)
    assert line.endswith("cameras=a:up model=next?[2J.pt@a36952be6f38")
    assert "model=" not in format_heartbeat({"seq": 1, "uptime_s": 1.0})   # an older daemon


def test_keys_generate_writes_loadable_curve_keys_and_refuses_to_overwrite(tmp_path, capsys):
    import zmq.auth

    out = tmp_path / "keys"
    args = parser().parse_args(["keys", "generate", "--out", str(out), "--clients", "ops",
                                "grafana"])
    assert commands.cmd_keys_generate(args) == 0
    public, secret = zmq.auth.load_certificate(str(out / "server.key_secret"))
    assert public and secret
    for name in ("ops", "grafana"):
        assert (out / "authorized_clients" / f"{name}.key").is_file()
        assert zmq.auth.load_certificate(str(out / "clients" / f"{name}.key_secret"))[1]
    assert "server.key" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="already exists"):
        commands.cmd_keys_generate(args)
    forced = parser().parse_args(["keys", "generate", "--out", str(out), "--force"])
    assert commands.cmd_keys_generate(forced) == 0
    assert zmq.auth.load_certificate(str(out / "server.key_secret"))[0] != public


def test_alerts_with_curve_keys_from_keys_generate_receives_from_a_curve_daemon(tmp_path, capsys):
    from streamer.publisher import AlertPublisher, generate_keys

    keys = generate_keys(tmp_path / "keys", ["ops"])
    curve = {"server_secret_key": keys["server_secret_key"],
             "authorized_clients": keys["authorized_clients"]}
    pub = AlertPublisher(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}",
                         tmp_path / "journal.sqlite3", curve=curve)
    try:
        pub.emit(_message("lobby", "start", "e0"))
        args = _alerts_args(pub, "--since", "0", "--count", "1", "--timeout", "8",
                            "--curve-keys", str(tmp_path / "keys"))
        assert _run_alerts(pub, args) == 0
        assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [1]
    finally:
        pub.close()


def test_alerts_curve_keys_without_a_client_choice_names_the_candidates(tmp_path):
    from streamer.publisher import generate_keys

    generate_keys(tmp_path / "keys", ["ops", "grafana"])
    args = parser().parse_args(["alerts", "tcp://127.0.0.1:1", "--curve-keys",
                                str(tmp_path / "keys")])
    with pytest.raises(ConfigError, match="--client: choose one of grafana, ops"):
        commands.cmd_alerts(args)

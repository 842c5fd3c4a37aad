"""The systemd unit and its environment file: the directives the daemon relies on, checked by
systemd's own tools where they are installed."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "vigil.service"
ENV_EXAMPLE = ROOT / "systemd" / "vigil.env.example"
CONFIG_EXAMPLE = ROOT / "configs" / "vigil.yaml"


def _directives(path: Path) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file, every value kept (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _testable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here, so verify judges the rest."""
    text = re.sub(r"(?m)^ExecStart=/opt/vigil/\.venv/bin/vigil", "ExecStart=/bin/true", UNIT.read_text())
    assert "ExecStart=/bin/true" in text
    copy = tmp_path / "vigil.service"
    copy.write_text(text)
    return copy


def test_unit_is_a_notify_service_with_watchdog_reload_and_restart():
    d = _directives(UNIT)
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["WatchdogSec"] == ["30"]
    assert d["ExecStart"] == ["/opt/vigil/.venv/bin/vigil serve --config /etc/vigil/vigil.yaml"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["EnvironmentFile"] == ["-/etc/vigil/vigil.env"]
    assert d["Restart"] == ["on-failure"]
    assert d["RestartSec"] == ["5"]
    assert d["TimeoutStopSec"] == ["20"]


def test_unit_is_hardened_but_keeps_video_and_nvidia_devices():
    d = _directives(UNIT)
    for key, value in {"DynamicUser": "yes", "StateDirectory": "vigil", "NoNewPrivileges": "yes",
                       "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "DevicePolicy": "closed", "SupplementaryGroups": "video",
                       "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
                       "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
                       "RestrictNamespaces": "yes", "LockPersonality": "yes",
                       "RestrictRealtime": "yes", "SystemCallArchitectures": "native",
                       "CapabilityBoundingSet": ""}.items():
        assert d.get(key) == [value], key
    allowed = set(d["DeviceAllow"])
    assert {"char-video4linux rw", "/dev/nvidiactl rw", "/dev/nvidia0 rw",
            "/dev/nvidia-uvm rw"} <= allowed
    # PyTorch's JIT and CUDA's PTX JIT need writable+executable memory.
    assert "MemoryDenyWriteExecute" not in d
    # PrivateDevices would hide the cameras and GPUs that DeviceAllow lets through.
    assert "PrivateDevices" not in d


def test_systemd_analyze_verify_finds_nothing_wrong(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`)")
    unit = _testable_copy(tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if "vigil.service" in line or str(tmp_path) in line]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr


def test_systemd_analyze_security_rates_the_unit_ok_or_better(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`)")
    unit = _testable_copy(tmp_path)
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60)
    text = proc.stdout + proc.stderr
    if "--offline" in text and "unrecognized" in text:
        pytest.skip("this systemd-analyze has no --offline (needs systemd >= 250)")
    m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", text)
    assert m, text
    assert m.group(2) in {"SAFE", "OK"}, m.group(0)
    assert float(m.group(1)) < 4.0


def _env_example() -> dict[str, str]:
    """NAME=value lines of the environment file example (comments skipped)."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def test_env_example_sets_every_variable_the_example_config_uses():
    import yaml

    values = _strings(yaml.safe_load(CONFIG_EXAMPLE.read_text()))
    used = {m for v in values for m in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", v)}
    assert used, "the example config should show a credential from the environment"
    assert used <= set(_env_example()), f"not in {ENV_EXAMPLE.name}: {sorted(used - set(_env_example()))}"


def test_example_config_loads_and_its_credentials_never_show_when_masked():
    from streamer.config import load_config, mask_url

    env = _env_example()
    cfg = load_config(CONFIG_EXAMPLE, environ=env, check_paths=False)
    assert str(cfg.data_dir) == "/var/lib/vigil"          # the unit's StateDirectory
    assert cfg.metrics.host == "127.0.0.1"
    assert cfg.alerts.endpoint.startswith("tcp://127.0.0.1:")
    assert len(cfg.cameras) >= 2
    lobby = cfg.camera("lobby")
    assert env["CAM_LOBBY_PASSWORD"] in lobby.url
    assert env["CAM_LOBBY_PASSWORD"] not in mask_url(lobby.url)


# ---- the fleet: vigil@.service (one shard per instance name) and vigil-relay.service --------
TEMPLATE = ROOT / "systemd" / "vigil@.service"
RELAY_UNIT = ROOT / "systemd" / "vigil-relay.service"
SHARD_EXAMPLE = ROOT / "configs" / "fleet" / "shard.yaml"


def test_template_unit_runs_one_shard_per_instance_name():
    d = _directives(TEMPLATE)
    assert d["ExecStart"] == ["/opt/vigil/.venv/bin/vigil serve --config /etc/vigil/%i.yaml"]
    assert d["EnvironmentFile"] == ["-/etc/vigil/vigil.env", "-/etc/vigil/%i.env"]
    assert "VIGIL_INSTANCE=%i" in d["Environment"]
    assert d["StateDirectory"] == ["vigil/%i"] and d["CacheDirectory"] == ["vigil/%i"]
    # Everything else is the single-instance unit's: watchdog, restart, hardening.
    single = _directives(UNIT)
    for key in ("Type", "WatchdogSec", "Restart", "ExecReload", "DynamicUser", "ProtectSystem",
                "SystemCallFilter", "CapabilityBoundingSet", "RestrictAddressFamilies"):
        assert d[key] == single[key], key
    assert set(single["DeviceAllow"]) <= set(d["DeviceAllow"])


def test_shard_example_names_itself_after_the_unit_instance():
    from streamer.config import load_config

    env = {"VIGIL_INSTANCE": "gpu1", "CAM_DOCK_PASSWORD": "x"}
    cfg = load_config(SHARD_EXAMPLE, environ=env, check_paths=False)
    assert cfg.instance == "gpu1" and str(cfg.data_dir) == "/var/lib/vigil/gpu1"


def test_relay_unit_runs_vigil_relay_with_arguments_from_its_environment_file():
    d = _directives(RELAY_UNIT)
    assert d["ExecStart"] == ["/opt/vigil/.venv/bin/vigil relay $VIGIL_RELAY_ARGS"]
    assert d["EnvironmentFile"] == ["/etc/vigil/relay.env"]
    assert d["DynamicUser"] == ["yes"] and d["Restart"] == ["always"]


@pytest.mark.parametrize("unit,name", [(TEMPLATE, "vigil@gpu1.service"),
                                       (RELAY_UNIT, "vigil-relay.service")])
def test_systemd_analyze_verify_finds_nothing_wrong_in_the_fleet_units(tmp_path, unit, name):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`)")
    text = re.sub(r"(?m)^ExecStart=/opt/vigil/\.venv/bin/vigil.*$", "ExecStart=/bin/true",
                  unit.read_text())
    (tmp_path / "vigil@.service").write_text(text)
    copy = tmp_path / name
    if name != "vigil@.service":
        copy.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if "vigil" in line or str(tmp_path) in line]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr

"""A real Prometheus server scrapes a running daemon and answers a query about it.

Debian's `prometheus` (installed by `make test` as root) runs on loopback with our alert rules
loaded, scrapes `vigil serve` every second, and its HTTP API must return `vigil_camera_up` for
the daemon's camera; the rules must load in the real server, not only in promtool.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from vigil_tools.harness import DaemonProcess, base_config, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "configs/prometheus/vigil-rules.yml"

pytestmark = pytest.mark.integration


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.load(resp)


def test_prometheus_scrapes_the_daemon_and_answers_vigil_camera_up(tiny_checkpoint, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package 'prometheus'; `make test` installs "
                    "it as root)")
    cfg = base_config(tmp_path / "data", tiny_checkpoint,
                      {"gate": "synth://none?seed=1&width=64&height=48&fps=10&frames=20"},
                      always_on=False)
    daemon = DaemonProcess(tmp_path / "daemon", cfg)
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{RULES}]\n"
        "scrape_configs:\n"
        "  - job_name: vigil\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{cfg['metrics']['port']}']}}]\n")
    prom = None
    try:
        daemon.start()
        daemon.wait_ready(timeout=90)
        prom = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"))

        def camera_up():
            try:
                return query(prom_port, 'vigil_camera_up{job="vigil"}')
            except OSError:       # Prometheus still starting
                return None

        result = wait_until(camera_up, timeout=60, interval=0.5)
        assert result, ("no vigil_camera_up through Prometheus within 60 s; its log:\n"
                        + (tmp_path / "prometheus.log").read_text()[-3000:])
        assert result[0]["metric"]["camera"] == "gate"
        assert wait_until(lambda: query(prom_port, 'vigil_camera_up{camera="gate"} == 1'), 30)
        # The real server loaded every alerting rule of ours.
        groups = get(prom_port, "/api/v1/rules")["data"]["groups"]
        names = {r["name"] for g in groups for r in g["rules"]}
        assert {"VigilCameraDown", "VigilWindowsSkipped", "VigilAlertLatencyHigh",
                "VigilDown"} <= names
        # The target is healthy: up == 1 for the vigil job.
        assert query(prom_port, 'up{job="vigil"} == 1')
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                prom.kill()
        daemon.stop()
        daemon.close()

"""`vigil demo` as `make demo` runs it: the real daemon, three synthetic cameras, a self-check.

By default it serves the shipped model (trained on real footage and synthetic scenes); with
`--model quick` the quick-start model, which is the one the session's `trained_checkpoint`
fixture trained (the same recipe, `train/quickstart.py`), so the demo finds it in its cache and
does not train again.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def run_demo(tmp_path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "demo", "--duration", "25", "--no-status",
         "--workdir", str(tmp_path / "demo"), "--metrics-port", "0", *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=240)
    print(out.stdout[-3000:])
    return out


def test_the_shipped_model_sees_the_fight_and_the_collapse_and_nothing_on_the_quiet_camera(
        tmp_path):
    from detector.init_weights import DEFAULT_MODEL

    out = run_demo(tmp_path)
    assert f"{DEFAULT_MODEL}.pt (shipped)" in out.stdout
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "demo PASSED" in out.stdout
    for cam in ("yard-fight", "hall-collapse", "lobby-quiet"):
        assert re.search(rf"check {cam}\s+PASS", out.stdout), cam


def test_the_demo_serves_the_shipped_model_with_the_alert_settings_of_the_example_config(
        tmp_path):
    """The demo of the shipped model runs as a user's `vigil serve --config configs/vigil.yaml`
    would: the same per-class smoothing; other models get the daemon's defaults."""
    import yaml

    from detector.init_weights import default_weights
    from vigil_tools.demo import SHIPPED_SMOOTHING_CLASSES, DemoPorts, demo_config

    example = yaml.safe_load((ROOT / "configs" / "vigil.yaml").read_text())
    assert example["model"]["checkpoint"] == "vigil"
    assert example["smoothing"]["classes"] == SHIPPED_SMOOTHING_CLASSES
    cfg = demo_config(tmp_path, default_weights(), DemoPorts(1, 2, 3), SHIPPED_SMOOTHING_CLASSES)
    assert cfg["smoothing"]["classes"] == SHIPPED_SMOOTHING_CLASSES
    assert demo_config(tmp_path, default_weights(), DemoPorts(1, 2, 3))["smoothing"] == \
        {"classes": {}}


def test_a_missing_model_file_is_one_line_not_a_traceback(tmp_path):
    out = run_demo(tmp_path, "--model", str(tmp_path / "nope.pt"))
    assert out.returncode != 0 and "no such checkpoint file" in out.stderr
    assert "Traceback" not in out.stderr


def test_demo_sees_the_fight_and_the_collapse_and_nothing_on_the_quiet_camera(
        trained_checkpoint, tmp_path):
    out = run_demo(tmp_path, "--model", "quick", "--cache-dir", str(trained_checkpoint.cache_dir))
    assert "(cached)" in out.stdout, "the demo retrained instead of using the cached model"
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "demo PASSED" in out.stdout
    for cam in ("yard-fight", "hall-collapse", "lobby-quiet"):
        assert re.search(rf"check {cam}\s+PASS", out.stdout), cam
    # The status block scraped /metrics, and the shutdown closed the open events.
    assert "reason=shutdown" in out.stdout

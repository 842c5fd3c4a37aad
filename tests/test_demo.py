"""`vigil demo` as `make demo` runs it: the real daemon, three synthetic cameras, a self-check.

The quick-start model is the one the session's `trained_checkpoint` fixture trained (the same
recipe, `train/quickstart.py`), so the demo finds it in its cache and does not train again.
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


def test_demo_sees_the_fight_and_the_collapse_and_nothing_on_the_quiet_camera(
        trained_checkpoint, tmp_path):
    cache_dir = trained_checkpoint.cache_dir
    out = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "demo", "--duration", "25", "--no-status",
         "--cache-dir", str(cache_dir), "--workdir", str(tmp_path / "demo"),
         "--metrics-port", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=240)
    print(out.stdout[-3000:])
    assert "(cached)" in out.stdout, "the demo retrained instead of using the cached model"
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "demo PASSED" in out.stdout
    for cam in ("yard-fight", "hall-collapse", "lobby-quiet"):
        assert re.search(rf"check {cam}\s+PASS", out.stdout), cam
    # The status block scraped /metrics, and the shutdown closed the open events.
    assert "reason=shutdown" in out.stdout

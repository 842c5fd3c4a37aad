"""Faults from the field (issue 12: configuration and data), injected into the real `vigil serve`.

* `data_dir` on a read-only file system: `--check` must report it, and a start that gets past
  the check anyway (the check patched out by a prelude: the file system turned read-only between
  check and start) must fail with one clear line and exit code 2, not a traceback.
* `events/<camera>` a symlink to a folder outside `data_dir` (where retention never looks): the
  daemon writes nothing there.
* the evidence free-space reserve (`evidence.min_free_bytes`): evidence that would eat into it is
  refused like a full disk, with one error line, while alerts keep being journalled.

Each test prints one `FAULT <name>: ...` line (`pytest -s`); RELIABILITY.md quotes them.
Secrets in `--check` output and the daemon's log: `tests/test_security.py`. Wall-clock steps:
`tests/test_events.py`, `tests/test_retention.py` (unit level, injected clocks).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vigil_tools.harness import DaemonProcess, base_config, wait_until
from tests.test_faults import journal_rows

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SYNTH = "synth://fight?seed=1&width=96&height=72&fps=15&frames=45"


def report(name: str, **values) -> None:
    """One greppable line per measurement (`pytest -s ... | grep FAULT`)."""
    print(f"FAULT {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


def vigil(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "VIGIL_OFFLINE": "1"})


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs (root's permissions do not override a read-only mount)."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        yield path
        os.chmod(path, 0o755)
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_a_data_dir_that_cannot_be_created_fails_check_and_start_in_one_line(
        tiny_checkpoint, tmp_path, read_only_dir):
    cfg = base_config(read_only_dir / "data", tiny_checkpoint, {"a": SYNTH})
    d = DaemonProcess(tmp_path / "work", cfg)
    check = vigil("serve", "--config", str(d.config_path), "--check")
    assert check.returncode == 2, check.stdout + check.stderr
    assert f"data_dir: cannot create {read_only_dir / 'data'}" in check.stderr
    assert "Traceback" not in check.stderr

    start = vigil("serve", "--config", str(d.config_path))
    assert start.returncode == 2 and "Traceback" not in start.stderr
    assert "data_dir: cannot create" in start.stderr

    # The check passed (patched out, as if the disk turned read-only after it): the daemon's own
    # start-up must still fail in one line.
    d.prelude = "import streamer.config as c\nc.data_dir_problem = lambda path: None"
    t0 = time.monotonic()
    d.start()
    try:
        code = d.proc.wait(120)
    finally:
        d.close()
    errors = [ln for ln in d.log().splitlines() if " ERROR " in ln]
    report("data_dir read-only", check_exit=check.returncode, start_exit=code,
           error_lines=len(errors), traceback="Traceback" in d.log(),
           exit_after_s=round(time.monotonic() - t0, 1))
    assert code == 2, d.log()[-3000:]
    assert "Traceback" not in d.log()
    assert len(errors) == 1 and "data_dir: cannot create or write" in errors[0], errors


def test_a_symlinked_camera_events_folder_sends_nothing_outside_data_dir(tiny_checkpoint,
                                                                          tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "events").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, data / "events" / "a")
    cfg = base_config(data, tiny_checkpoint, {"a": SYNTH})
    cfg["evidence"]["min_free_bytes"] = 0
    d = DaemonProcess(tmp_path / "work", cfg)
    try:
        d.start()
        d.wait_ready(90)
        snap = wait_until(lambda: list((data / "events" / "a").glob("*/*/start.jpg"))
                          or list(outside.rglob("*.jpg")), timeout=30)
        assert d.stop(timeout=20) == 0
    finally:
        d.close()
    inside = list((data / "events" / "a").glob("*/*/start.jpg"))
    escaped = list(outside.rglob("*"))
    report("events/<camera> symlinked outside data_dir", snapshots_inside=len(inside),
           files_outside=len(escaped), link_replaced=not (data / "events" / "a").is_symlink())
    assert snap and inside and not escaped
    assert "was a symlink" in d.log()


def test_evidence_keeps_the_free_space_reserve_and_alerts_keep_flowing(tiny_checkpoint,
                                                                        tmp_path):
    data = tmp_path / "data"
    cfg = base_config(data, tiny_checkpoint, {"a": SYNTH})
    cfg["evidence"]["min_free_bytes"] = 2 ** 60           # more than any disk has: always short
    d = DaemonProcess(tmp_path / "work", cfg)
    try:
        d.start()
        d.wait_ready(90)
        assert wait_until(lambda: "for the journal" in d.log(), timeout=30), d.log()[-3000:]
        rows_at_error = len(journal_rows(data))
        time.sleep(2)
        assert d.stop(timeout=20) == 0
    finally:
        d.close()
    rows = journal_rows(data)
    starts = [r for r in rows if r["type"] == "start"]
    errors = [ln for ln in d.log().splitlines() if "evidence: cannot write" in ln]
    files = [p for p in (data / "events").rglob("*") if p.is_file()] \
        if (data / "events").exists() else []
    report("evidence free-space reserve", journal_rows=len(rows), starts=len(starts),
           snapshots_named=sum(1 for r in starts if r["snapshot"]), evidence_files=len(files),
           error_lines=len(errors), rows_when_refused=rows_at_error)
    assert starts and not any(r["snapshot"] for r in starts)
    assert not files
    assert len(errors) == 1

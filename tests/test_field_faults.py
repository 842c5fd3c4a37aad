"""Faults from the field (issue 12: configuration and data), injected into the real `vigil serve`.

* `events/<camera>` a symlink to a folder outside `data_dir` (where retention never looks): the
  daemon writes nothing there.
* the evidence free-space reserve (`evidence.min_free_bytes`): evidence that would eat into it is
  refused like a full disk, with one error line, while alerts keep being journalled.

Each test prints one `FAULT <name>: ...` line (`pytest -s`); RELIABILITY.md quotes them.
Secrets in `--check` output and the daemon's log: `tests/test_security.py`. Wall-clock steps:
`tests/test_events.py`, `tests/test_retention.py` (unit level, injected clocks).
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from streamer.harness import DaemonProcess, base_config, wait_until

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


def journal_rows(data_dir: Path) -> list[dict]:
    db = sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        return [json.loads(b) for (b,) in db.execute("SELECT body FROM alerts ORDER BY seq")]
    finally:
        db.close()


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

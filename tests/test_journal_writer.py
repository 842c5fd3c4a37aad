"""JournalWriter: a full disk degrades (alerts held, numbering continues, written back when space
returns), a lost or emptied journal is said loudly and numbered as a new journal id.

The disk-full cases mount a small tmpfs (root only; skipped otherwise), as tests/test_faults.py
does for the evidence disk."""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from streamer.journal import Journal
from streamer.journal_writer import JournalWriter
from streamer.metrics import VigilMetrics
from tests.test_journal import alert


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs at tmp_path/fs, and a function that fills it (returns the filler path)."""
    path = tmp_path / "fs"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"mount failed: {proc.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the file system holding `directory`; the filler file (unlink it to free space)."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
        try:
            f.close()
        except OSError:
            pass
    return filler


def rows(path: Path) -> list[int]:
    with Journal(path) as j:
        return [m["seq"] for m in j.since(0, 100_000)]


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_full_disk_holds_alerts_keeps_numbering_and_writes_them_when_space_returns(
        small_fs, caplog):
    caplog.set_level(logging.INFO)
    metrics = VigilMetrics()
    path = small_fs / "journal.sqlite3"
    w = JournalWriter(path, metrics=metrics, retry_s=0.0).open()
    assert [w.append(alert())["seq"] for _ in range(3)] == [1, 2, 3]
    filler = fill(small_fs)
    held = [w.append(alert(kind="update")) for _ in range(20)]
    assert [m["seq"] for m in held] == list(range(4, 24))
    assert {m["journal_id"] for m in held} == {w.journal_id}
    assert not w.writable and w.held == 20 and w.state()["writable"] is False
    assert "disk full" in w.state()["error"]
    sample = metrics.registry.get_sample_value
    assert sample("vigil_journal_writable") == 0 and sample("vigil_journal_held_alerts") == 20
    w.retry()                                          # still full: stays quiet
    assert len([e for e in errors(caplog) if "journal" in e]) == 1, errors(caplog)
    filler.unlink()
    assert w.retry() and w.writable and w.held == 0
    assert w.append(alert())["seq"] == 24
    w.close()
    assert rows(path) == list(range(1, 25))
    assert sample("vigil_journal_writable") == 1 and sample("vigil_journal_write_errors_total") >= 2
    assert any("writing again" in r.getMessage() for r in caplog.records)


def test_start_up_on_a_full_disk_reads_the_journal_and_starts_degraded(small_fs):
    path = small_fs / "journal.sqlite3"
    with Journal(path) as j:
        j.append(alert())                              # an event left open
        jid = j.journal_id
        filler = fill(small_fs)
        w = JournalWriter(path).open()                 # was: a crash before READY
    assert (w.journal_id, w.last_seq) == (jid, 1)
    assert [m["seq"] for m in w.open_events()] == [1]
    assert w.append(alert(kind="end"))["seq"] == 2
    filler.unlink()
    w.tick()
    w.close()
    assert rows(path) == [1, 2]


def test_a_journal_deleted_while_running_is_said_loudly_and_numbering_continues(tmp_path,
                                                                               caplog):
    metrics = VigilMetrics()
    path = tmp_path / "journal.sqlite3"
    w = JournalWriter(path, metrics=metrics).open()
    old_id = w.journal_id
    for _ in range(3):
        w.append(alert())
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert w.check()
    assert any("was deleted while running" in e for e in errors(caplog))
    after = w.append(alert())
    assert after["seq"] == 4 and after["journal_id"] != old_id
    w.close()
    with Journal(path) as j:
        assert (j.journal_id, j.last_seq()) == (after["journal_id"], 4)
    assert metrics.registry.get_sample_value("vigil_journal_lost_total") == 1


def test_a_journal_emptied_while_stopped_is_said_loudly_with_a_new_id(tmp_path, caplog):
    path = tmp_path / "journal.sqlite3"
    w = JournalWriter(path).open()
    w.append(alert())
    old_id = w.journal_id
    w.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"")
    w = JournalWriter(path).open()
    assert w.journal_id != old_id and w.last_seq == 0
    assert any("EMPTY" in e for e in errors(caplog))
    w.close()

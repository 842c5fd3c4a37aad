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
    first = JournalWriter(path).open()                 # the daemon's journal, with its seq mark
    first.append(alert())                              # an event left open
    jid = first.journal_id
    first.close()
    filler = fill(small_fs)
    w = JournalWriter(path).open()                     # was: a crash before READY
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


# ----------------------------------------------------------------------------- no seq reused
# Issue 26: alerts held while the journal's disk is full are published with the next seqs. A stop
# before they are written (SIGTERM, or SIGKILL) must not let the next start number other alerts
# with those seqs under the same journal id. The writer runs in a child process so that SIGKILL
# is real; the parent frees the space and opens the journal again.
HOLDER = r"""
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from streamer import journal_writer
from streamer.journal_writer import JournalWriter
from tests.test_journal import alert
from tests.test_journal_writer import fill

path, stop, full_at_start, mark_fails = (sys.argv[2], sys.argv[3], sys.argv[4] == "1",
                                          sys.argv[5] == "1")
if mark_fails:
    journal_writer.SeqMark.write = lambda self, state: False
from pathlib import Path
fs = Path(path).parent
if full_at_start:
    fill(fs)
w = JournalWriter(path, retry_s=3600).open()
out = {"journal_id": w.journal_id, "journalled": [], "held": []}
if not full_at_start:
    out["journalled"] = [w.append(alert(event_id="e-journal"))["seq"],      # open in the journal
                         w.append(alert(event_id="e-ends-held"))["seq"]]
    fill(fs)
# Held: an event that only the held alerts know (start, updates), and the end of one the
# journal has open.
out["held"] = [w.append(alert(event_id="e-held"))["seq"],
               w.append(alert(event_id="e-held", kind="update"))["seq"],
               w.append(alert(event_id="e-ends-held", kind="end"))["seq"],
               w.append(alert(event_id="e-held", kind="update"))["seq"]]
assert not w.writable, "the disk was not full"
print(json.dumps(out), flush=True)
if stop == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
w.close()                    # SIGTERM's path: one last try, the disk is still full
"""


def run_holder(fs: Path, stop: str, full_at_start: bool = False, mark_fails: bool = False):
    import json
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", HOLDER, str(root), str(fs / "journal.sqlite3"),
                           stop, "1" if full_at_start else "0", "1" if mark_fails else "0"],
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip(), proc.stderr
    assert (proc.returncode == -9) == (stop == "kill"), proc.stderr
    (fs / "filler").unlink()
    return json.loads(proc.stdout.splitlines()[0])


@pytest.mark.parametrize("stop", ["kill", "term"])
def test_seqs_held_while_the_disk_was_full_are_never_numbered_again(small_fs, stop, caplog):
    out = run_holder(small_fs, stop)
    published = out["held"]
    assert published == [3, 4, 5, 6] and rows(small_fs / "journal.sqlite3") == [1, 2]
    w = JournalWriter(small_fs / "journal.sqlite3").open()
    assert w.journal_id == out["journal_id"]           # same journal: the seq jumps instead
    assert w.last_seq == max(published)
    assert any("alerts 3..6 were published" in e for e in errors(caplog)), errors(caplog)
    # The events those lost alerts left open are ended at start-up; the one whose end was
    # published is not ended twice.
    assert sorted(m["event_id"] for m in w.open_events()) == ["e-held", "e-journal"]
    nxt = w.append(alert(event_id="e-new"))
    assert nxt["seq"] == max(published) + 1 and nxt["journal_id"] == out["journal_id"]
    w.close()


def test_a_start_on_a_full_disk_then_a_kill_never_reuses_seqs_either(small_fs):
    path = small_fs / "journal.sqlite3"
    w = JournalWriter(path).open()                     # a journal (and its mark) from before
    w.append(alert(event_id="e0", kind="end"))
    w.close()
    out = run_holder(small_fs, "kill", full_at_start=True)
    assert out["held"] == [2, 3, 4, 5]
    w = JournalWriter(path).open()
    assert (w.journal_id, w.last_seq) == (out["journal_id"], 5)
    assert w.append(alert(event_id="e-new"))["seq"] == 6
    w.close()


def test_without_a_mark_held_alerts_go_out_under_a_new_journal_id(small_fs, caplog):
    """The mark cannot be written at all: the first held alert starts a new journal id (the old
    journal moved aside), so a stop can never let its seqs be numbered again."""
    out = run_holder(small_fs, "kill", mark_fails=True)
    path = small_fs / "journal.sqlite3"
    assert out["held"] == [3, 4, 5, 6]
    assert list(small_fs.glob(f"journal.sqlite3.{out['journal_id']}.unproven"))
    w = JournalWriter(path).open()
    assert w.journal_id != out["journal_id"]            # a reset every client sees
    w.close()


def test_a_mark_that_fails_mid_episode_is_removed_and_the_next_start_resets(small_fs, caplog):
    path = small_fs / "journal.sqlite3"
    w = JournalWriter(path, retry_s=3600).open()
    jid = w.journal_id
    w.append(alert(event_id="a"))
    filler = fill(small_fs)
    assert w.append(alert(event_id="b"))["journal_id"] == jid      # covered by the mark
    w._mark.write = lambda state: False                          # the mark breaks (CoW fs)
    late = w.append(alert(event_id="c"))
    assert late["journal_id"] == jid and not Path(f"{path}.seqmark").exists()
    assert any("seq mark cannot be written" in e for e in errors(caplog))
    w._journal.close()                                            # as SIGKILL leaves it
    filler.unlink()
    w2 = JournalWriter(path).open()
    assert w2.journal_id != jid and any("nothing proves" in e for e in errors(caplog))
    assert w2.append(alert(event_id="d"))["journal_id"] == w2.journal_id
    w2.close()

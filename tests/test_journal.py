"""Journal: seq assignment that survives restarts and crashes, WAL, open events, pruning."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from streamer.protocol import iso_utc, parse_iso_utc
from streamer.journal import Journal, JournalError

REPO = Path(__file__).resolve().parents[1]


def alert(event_id: str = "lobby-20261124T101502Z-0001", kind: str = "start", **kw) -> dict:
    msg = {"schema": "vigil.alert/1", "type": kind, "event_id": event_id, "camera": "lobby",
           "label": "fight", "score": 0.9, "box": [0.1, 0.2, 0.3, 0.4],
           "box_px": [1, 2, 3, 4], "frame_size": [10, 10],
           "window": {"start": "2026-11-24T10:15:01.12Z", "end": "2026-11-24T10:15:01.76Z"},
           "snapshot": None, "clip": None, "reason": "cleared" if kind == "end" else None}
    msg.update(kw)
    return msg


def test_append_assigns_seq_time_latency_and_strips_internal_fields(tmp_path):
    with Journal(tmp_path / "j.db") as j:
        before = time.time()
        first = j.append(alert(_t_end_mono=time.monotonic() - 0.25, _end_seq=42))
        ended = time.time() - 100.0
        second = j.append(alert(kind="update", window={"start": iso_utc(ended - 0.6),
                                                       "end": iso_utc(ended)}))
    assert (first["seq"], second["seq"]) == (1, 2)
    assert not any(k.startswith("_") for k in first)
    assert 0.25 <= first["latency_s"] < 5.0
    assert parse_iso_utc(first["published_at"]) >= before - 0.01
    # Without a monotonic stamp the latency is measured from the window's end wall time.
    assert 100.0 - 0.02 <= second["latency_s"] < 105.0
    assert list(first)[:2] == ["schema", "seq"]


def test_seq_continues_after_reopen_and_is_never_reused_after_prune(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as j:
        for _ in range(3):
            j.append(alert(kind="end"))
    with Journal(path) as j:
        assert j.last_seq() == 3
        assert j.append(alert(kind="end"))["seq"] == 4
        assert j.prune(max_age_days=-1) == 4          # everything is older than "tomorrow"
        assert j.since(0) == [] and j.last_seq() == 4
    with Journal(path) as j:
        assert j.append(alert())["seq"] == 5


def test_since_returns_messages_after_seq_in_order_with_a_limit(tmp_path):
    with Journal(tmp_path / "j.db") as j:
        for _ in range(10):
            j.append(alert(kind="update"))
        assert [m["seq"] for m in j.since(4, limit=3)] == [5, 6, 7]
        assert [m["seq"] for m in j.since(8)] == [9, 10]
        assert j.since(10) == [] and j.since(0, limit=0) == []


def test_wal_mode_and_full_sync_are_on(tmp_path):
    with Journal(tmp_path / "j.db") as j:
        assert j.journal_mode() == "wal"
        assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 2   # FULL
    # WAL is a property of the file: another connection sees it too.
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_open_events_after_a_kill_are_the_last_message_of_unfinished_events(tmp_path):
    path = tmp_path / "j.db"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_journal import alert
        from streamer.journal import Journal
        j = Journal({str(path)!r})
        j.append(alert("a-1"))
        j.append(alert("a-1", kind="update", score=0.95))
        j.append(alert("b-2"))
        j.append(alert("b-2", kind="end"))
        j.append(alert("c-3", camera="yard"))
        os.kill(os.getpid(), signal.SIGKILL)      # no close, no checkpoint
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=30, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with Journal(path) as j:
        assert j.last_seq() == 5
        orphans = j.open_events()
    assert [(m["event_id"], m["type"], m["seq"]) for m in orphans] == [("a-1", "update", 2),
                                                                       ("c-3", "start", 5)]
    assert orphans[0]["score"] == 0.95


def test_prune_keeps_open_events_and_recent_messages(tmp_path):
    with Journal(tmp_path / "j.db") as j:
        j.append(alert("old-open"))
        j.append(alert("old-closed"))
        j.append(alert("old-closed", kind="end"))
        j._db.execute("UPDATE alerts SET published_at = published_at - 100 * 86400")
        j.append(alert("new"))
        assert j.prune(max_age_days=30) == 2
        assert [m["event_id"] for m in j.since(0)] == ["old-open", "new"]


def test_a_reader_in_another_thread_sees_committed_alerts(tmp_path):
    path = tmp_path / "j.db"
    writer = Journal(path)
    seen: list[int] = []

    def read() -> None:
        with Journal(path) as reader:
            seen.extend(m["seq"] for m in reader.since(0))

    writer.append(alert())
    writer.append(alert(kind="update"))
    t = threading.Thread(target=read)
    t.start()
    t.join(5)
    writer.close()
    assert seen == [1, 2]


def test_a_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "j.db"
    bad.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(JournalError, match="not a usable alert journal"):
        Journal(bad)


def test_another_programs_database_is_refused(tmp_path):
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE stuff (x)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="another program"):
        Journal(other)


def test_append_rejects_a_message_without_identity(tmp_path):
    with Journal(tmp_path / "j.db") as j:
        with pytest.raises(ValueError):
            j.append({"type": "start"})
        assert j.last_seq() == 0


# ---- journal id, damage, disk full (issue 12: faults from the field) ---------------------------
def test_every_journal_has_its_own_id_kept_across_reopens_and_stamped_on_alerts(tmp_path):
    with Journal(tmp_path / "a.db") as a:
        first = a.append(alert())
        a_id = a.journal_id
        assert a.created and not a.was_empty
    with Journal(tmp_path / "a.db") as again, Journal(tmp_path / "b.db") as b:
        assert again.journal_id == a_id and not again.created
        assert b.journal_id != a_id and len(b.journal_id) == 16
    assert (first["schema"], first["journal_id"]) == ("vigil.alert/2", a_id)
    assert list(first)[:3] == ["schema", "seq", "journal_id"]


def test_a_schema_1_journal_gets_an_id_and_keeps_its_seq(tmp_path):
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript("""
        CREATE TABLE alerts (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, type TEXT NOT NULL,
            camera TEXT NOT NULL, published_at REAL NOT NULL, body TEXT NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('last_seq', 7);
        PRAGMA application_id=1447512396; PRAGMA user_version=1;""")
    db.close()
    with Journal(path) as j:
        assert j.last_seq() == 7 and len(j.journal_id) == 16 and not j.created
        assert j.append(alert())["seq"] == 8
        jid = j.journal_id
    with Journal(path) as j:
        assert j.journal_id == jid


def test_a_file_truncated_to_zero_bytes_is_flagged_as_a_new_journal(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as j:
        j.append(alert())
        old = j.journal_id
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"")
    with Journal(path) as j:
        assert j.was_empty and j.created and j.journal_id != old and j.last_seq() == 0


def test_file_problem_tells_deleted_and_replaced(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as j:
        assert j.file_problem() is None
        path.unlink()
        assert j.file_problem() == "deleted"
        Journal(path).close()
        assert j.file_problem() == "replaced by another file"


def test_a_new_journal_can_continue_the_seq(tmp_path):
    with Journal(tmp_path / "j.db", journal_id="00000000000000aa", start_seq=41) as j:
        assert (j.journal_id, j.append(alert())["seq"]) == ("00000000000000aa", 42)


def _damage_pages(path: Path, rows: int = 300) -> None:
    """A journal of `rows` alerts whose middle pages are overwritten (header intact)."""
    with Journal(path) as j:
        for _ in range(rows):
            j.append(alert(snapshot="x" * 500))
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2 - (size // 2) % 4096)
        f.write(b"\xa5" * 3 * 4096)


def test_damage_inside_the_pages_is_the_same_clear_error_as_header_damage(tmp_path):
    from streamer.journal import JournalCorruptError
    from streamer.journal_writer import JournalWriter

    path = tmp_path / "j.db"
    _damage_pages(path)
    with pytest.raises(JournalCorruptError, match="not a usable alert journal"):
        JournalWriter(path).open()
    with Journal(path) as j, pytest.raises(JournalCorruptError, match="not a usable"):
        j.check()


def test_peek_reads_without_writing(tmp_path):
    from streamer.journal import peek

    path = tmp_path / "j.db"
    assert peek(path) is None
    with Journal(path) as j:
        j.append(alert())
        jid = j.journal_id
    info = peek(path)
    assert (info["journal_id"], info["last_seq"]) == (jid, 1)
    assert [m["seq"] for m in info["open_events"]] == [1]

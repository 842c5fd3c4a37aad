"""Retention that a wall-clock step cannot turn against fresh data (`streamer/retention.py`),
applied to evidence (`EvidenceWriter.prune`) and the journal (`Journal.prune`); evidence never
written outside `data_dir`; the evidence free-space reserve.

The field fault: a box boots with an old clock (2020), writes alerts and evidence, then NTP steps
the clock to today; the next retention pass deleted what had been written minutes earlier.
"""
from __future__ import annotations

import calendar
import logging
import os
import shutil

import numpy as np
import pytest

from streamer.evidence import EvidenceWriter
from streamer.journal import Journal
from streamer.retention import RetentionClock, retention_cutoff

DAY = 86400.0
OLD_BOOT = float(calendar.timegm((2020, 1, 1, 0, 0, 0, 0, 0, 0)))   # the RTC's idea of "now"
SYNCED = float(calendar.timegm((2026, 11, 24, 10, 0, 0, 0, 0, 0)))  # after NTP


class SteppingClocks:
    """A wall clock and a monotonic clock; `step()` moves the wall clock only (as NTP does)."""

    def __init__(self, wall: float) -> None:
        self.mono_t = 1000.0
        self.offset = wall - self.mono_t

    def wall(self) -> float:
        return self.mono_t + self.offset

    def mono(self) -> float:
        return self.mono_t

    def advance(self, seconds: float) -> None:
        self.mono_t += seconds

    def step(self, seconds: float) -> None:
        self.offset += seconds


def test_a_forward_step_does_not_move_the_cutoff():
    c = SteppingClocks(OLD_BOOT)
    rc = RetentionClock(wall=c.wall, mono=c.mono)
    c.advance(60)
    c.step(SYNCED - OLD_BOOT)
    assert retention_cutoff(30 * DAY, rc) == pytest.approx(OLD_BOOT + 60 - 30 * DAY)


def test_a_backward_step_lowers_the_cutoff_at_once():
    c = SteppingClocks(SYNCED)
    rc = RetentionClock(wall=c.wall, mono=c.mono)
    c.advance(10)
    c.step(-3600)
    assert retention_cutoff(DAY, rc) == pytest.approx(SYNCED + 10 - 3600 - DAY)


def _event_dir(root, name: str, mtime: float):
    d = root / "events" / "cam" / "20200101" / name
    d.mkdir(parents=True)
    f = d / "start.jpg"
    f.write_bytes(b"x" * 10)
    os.utime(f, (mtime, mtime))
    os.utime(d, (mtime, mtime))
    return d


def test_evidence_written_before_an_ntp_step_survives_the_next_retention_pass(tmp_path):
    c = SteppingClocks(OLD_BOOT)
    w = EvidenceWriter(tmp_path, max_age_days=14, max_bytes=0, clock=c.wall,
                       retention=RetentionClock(wall=c.wall, mono=c.mono))
    fresh = _event_dir(tmp_path, "fresh", OLD_BOOT + 60)         # written a minute after boot
    stale = _event_dir(tmp_path, "stale", OLD_BOOT - 20 * DAY)   # really old: still deleted
    c.advance(300)
    c.step(SYNCED - OLD_BOOT)                                     # NTP syncs: +6 years
    assert w.prune() == 1
    assert fresh.exists() and not stale.exists()


def test_journal_rows_written_before_an_ntp_step_survive_pruning(tmp_path, monkeypatch):
    import streamer.journal as journal_module

    c = SteppingClocks(OLD_BOOT)
    monkeypatch.setattr(journal_module.time, "time", c.wall)     # published_at from the old clock
    rc = RetentionClock(wall=c.wall, mono=c.mono)
    j = Journal(tmp_path / "journal.sqlite3")
    try:
        for i, kind in enumerate(("start", "end")):
            j.append({"schema": "vigil.alert/1", "type": kind, "event_id": "cam-e1",
                      "camera": "cam", "label": "fight", "reason": "cleared" if i else None})
        c.advance(300)
        c.step(SYNCED - OLD_BOOT)
        assert j.prune(30, rc) == 0
        assert [m["type"] for m in j.since(0)] == ["start", "end"]
        # Without the rule (cutoff from the stepped wall clock) both rows would have gone.
        assert max(m["seq"] for m in j.since(0)) == 2
    finally:
        j.close()


# ----------------------------------------------------------------------------- never outside
FRAME = np.zeros((48, 64, 3), np.uint8)


def test_a_symlinked_camera_folder_is_replaced_and_nothing_is_written_outside(tmp_path, caplog):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "events").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, data / "events" / "lobby")
    w = EvidenceWriter(data, min_free_bytes=0).start()
    try:
        with caplog.at_level(logging.WARNING, logger="streamer.evidence"):
            rel = w.snapshot("lobby", "lobby-e1", FRAME, None, "fight", 0.9, when=SYNCED)
            assert w.flush(10)
    finally:
        w.close()
    assert rel is not None and (data / rel).is_file()
    assert not (data / "events" / "lobby").is_symlink()
    assert list(outside.rglob("*")) == []
    assert "was a symlink" in caplog.text


# ----------------------------------------------------------------------------- reserve
def test_evidence_keeps_the_free_space_reserve_for_the_journal(tmp_path, caplog):
    free = shutil.disk_usage(tmp_path).free
    w = EvidenceWriter(tmp_path, min_free_bytes=free + 2 ** 30).start()   # more than is free
    try:
        with caplog.at_level(logging.ERROR, logger="streamer.evidence"):
            assert w.snapshot("a", "a-e1", FRAME, None, "fight", 0.9, when=SYNCED) is None
            assert w.flush(10)
        assert w.write_errors == 1 and w.written == 0
        assert "for the journal" in caplog.text
        assert not list(tmp_path.rglob("*.jpg"))
        w.min_free_bytes = 0                                            # space "returns"
        w.snapshot("a", "a-e2", FRAME, None, "fight", 0.9, when=SYNCED)  # queued: a probe
        assert w.flush(10) and w.written == 1
        assert w.snapshot("a", "a-e3", FRAME, None, "fight", 0.9, when=SYNCED) is not None
    finally:
        w.close()


def test_the_reserve_does_not_apply_to_a_separate_evidence_file_system(tmp_path, monkeypatch):
    w = EvidenceWriter(tmp_path, min_free_bytes=10 ** 15)
    (tmp_path / "events").mkdir()
    real_stat = os.stat

    class Other:
        def __init__(self, st):
            self.st_dev = st.st_dev + 1

    monkeypatch.setattr(os, "stat", lambda p, *a, **k: Other(real_stat(p)) if str(p).endswith(
        "events") else real_stat(p, *a, **k))
    assert w._reserve(str(tmp_path / "events")) == 0      # the same-disk case: the test above

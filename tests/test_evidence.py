"""Evidence files: snapshot with the box, MP4 clip, off the hot path, disk-full episodes, retention."""
import errno
import logging
import os
import time

import cv2
import numpy as np
import pytest

from streamer.evidence import EvidenceWriter

DAY = 86400.0
WHEN = 1_795_000_000.0          # 2026-11-18 UTC


def _frame(h=120, w=160, value=40):
    return np.full((h, w, 3), value, np.uint8)


@pytest.fixture
def writer(tmp_path):
    w = EvidenceWriter(tmp_path, max_age_days=30, max_bytes=10**9, queue_size=8).start()
    yield w
    w.close()


def test_snapshot_is_a_jpeg_with_the_box_drawn(writer, tmp_path):
    rel = writer.snapshot("lobby", "lobby-20261118T000000Z-0001", _frame(), (0.25, 0.25, 0.75, 0.75),
                          "fight", 0.91, when=WHEN)
    day = time.strftime("%Y%m%d", time.gmtime(WHEN))
    assert rel == os.path.join("events", "lobby", day, "lobby-20261118T000000Z-0001", "start.jpg")
    assert writer.flush(10)
    img = cv2.imread(str(tmp_path / rel))               # BGR
    assert img.shape == (120, 160, 3)
    x1, y_mid = round(0.25 * 159), round(0.5 * 119)
    b, g, r = (int(v) for v in img[y_mid, x1])
    assert r > 150 and g < 100 and b < 100               # the box edge is red
    assert abs(int(img[5, 5].mean()) - 40) < 10          # the rest is the frame
    assert writer.written == 1 and writer.write_errors == 0


def test_clip_is_an_mp4_with_every_frame(writer, tmp_path):
    frames = np.stack([_frame(value=10 * i) for i in range(12)])
    rel = writer.clip("lobby", "ev1", frames, fps=15, when=WHEN)
    assert rel.endswith(os.path.join("ev1", "clip.mp4"))
    assert writer.flush(20)
    cap = cv2.VideoCapture(str(tmp_path / rel))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 12 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15)
    assert not [p for p in (tmp_path / rel).parent.iterdir() if p.name != "clip.mp4"]


def test_snapshot_and_clip_of_one_event_share_its_directory_across_midnight(writer):
    snap = writer.snapshot("cam", "ev2", _frame(), None, "collapse", 0.5, when=WHEN)
    clip = writer.clip("cam", "ev2", np.stack([_frame()] * 2), 10, when=WHEN + DAY)
    assert os.path.dirname(snap) == os.path.dirname(clip)


def test_paths_hold_only_sanitised_camera_and_event_names(writer, tmp_path):
    rel = writer.snapshot("../../etc", "rtsp://admin:pw@host/ev", _frame(), None, "fight", 0.9)
    assert writer.flush(10)
    full = (tmp_path / rel).resolve()
    assert str(full).startswith(str((tmp_path / "events").resolve()))
    for bad in (":", "@", "//", ".."):
        assert bad not in rel


def test_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    w = EvidenceWriter(tmp_path, queue_size=2)           # not started: nothing drains the queue
    results = [w.snapshot("cam", f"ev{i}", _frame(), None, "fight", 0.9) for i in range(5)]
    assert all(results[:2]) and results[2:] == [None] * 3
    assert w.dropped == 3


def test_disk_full_is_logged_once_per_episode_and_recovers(tmp_path, caplog):
    w = EvidenceWriter(tmp_path, queue_size=16)
    real_write = w._write_bytes
    full = {"on": True}

    def write_bytes(path, data):
        if full["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_write(path, data)

    w._write_bytes = write_bytes
    w.start()
    with caplog.at_level(logging.INFO, logger="streamer.evidence"):
        first = w.snapshot("cam", "full0", _frame(), None, "fight", 0.9)
        assert w.flush(10)
        # Once a write has failed, alerts stop naming files that will not be there.
        later = [w.snapshot("cam", f"full{i}", _frame(), None, "fight", 0.9) for i in (1, 2)]
        assert w.flush(10)
        assert first is not None and later == [None, None]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "disk full" in errors[0].getMessage()
        assert w.write_errors == 3 and w.written == 0
        full["on"] = False
        # Still failing as far as the writer knows: written, but not promised to the alert.
        assert w.snapshot("cam", "probe", _frame(), None, "fight", 0.9) is None
        assert w.flush(10)
        assert list(tmp_path.glob("events/cam/*/probe/start.jpg")) and w.written == 1
        rel = w.snapshot("cam", "ok", _frame(), None, "fight", 0.9)
        assert w.flush(10)
    assert (tmp_path / rel).is_file() and w.written == 2
    assert any("writing again" in r.getMessage() for r in caplog.records)
    w.close()


def test_no_path_is_named_when_the_disk_has_no_room_for_the_file(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    w = EvidenceWriter(tmp_path, queue_size=8)          # not started: only what the caller sees
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    assert w.snapshot("cam", "ev", _frame(), None, "fight", 0.9) is None
    assert w.clip("cam", "ev", np.stack([_frame()] * 3), 10) is None
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))
    assert w.snapshot("cam", "ev2", _frame(), None, "fight", 0.9) is not None


def _event(root, cam, day, ev, size, mtime):
    d = root / "events" / cam / day / ev
    d.mkdir(parents=True)
    f = d / "start.jpg"
    f.write_bytes(b"x" * size)
    os.utime(f, (mtime, mtime))
    os.utime(d, (mtime, mtime))
    return d


def test_retention_deletes_events_older_than_max_age(tmp_path):
    now = WHEN
    old = _event(tmp_path, "a", "20261001", "old", 10, now - 40 * DAY)
    new = _event(tmp_path, "a", "20261117", "new", 10, now - 1 * DAY)
    w = EvidenceWriter(tmp_path, max_age_days=30, max_bytes=0, clock=lambda: now)
    assert w.prune() == 1
    assert not old.exists() and new.exists()
    assert not old.parent.exists()                       # empty day directory removed too


def test_retention_deletes_oldest_events_beyond_max_bytes(tmp_path):
    now = WHEN
    dirs = [_event(tmp_path, cam, "20261118", f"e{i}", 1000, now - 100 + i)
            for i, cam in enumerate(["a", "b", "a", "b", "a"])]
    w = EvidenceWriter(tmp_path, max_age_days=0, max_bytes=2500, clock=lambda: now)
    assert w.prune() == 3
    assert [d.exists() for d in dirs] == [False, False, False, True, True]


def test_retention_never_deletes_the_newest_event_for_size(tmp_path):
    d = _event(tmp_path, "a", "20261118", "big", 5000, WHEN)
    assert EvidenceWriter(tmp_path, max_age_days=0, max_bytes=100).prune(now=WHEN) == 0
    assert d.exists()

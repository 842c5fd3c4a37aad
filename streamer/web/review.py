"""Marks become training clips: the review dataset in `data_dir/review/`.

Layout (a CSV manifest, one of the layouts `vigil data check` and `vigil train` read as is,
`train/layouts.py`):

    review/clips/<event_id>.mp4   the event's evidence clip (copied: retention may delete the
                                  evidence, the dataset keeps it)
    review/labels.csv             file,label,start_s,end_s,group   (group = the camera, so
                                  clips of one camera stay on one side of every split)
    review/marks.sqlite3          every mark ever made: event, verdict or missed range, who, when

A mark is one of:
  * `real`: the event's class over the part of the clip after the event started
    (`start_s` = the triggering window's start, measured from the clip's first frame);
  * `false_alarm`: the clip as `none`, a hard negative (the model alarmed on it);
  * `missed`: a class over `[start_s, end_s]` of the clip that should have raised an event;
    or, on a camera, its last seconds (what the daemon's display ring holds, about 10 s) kept
    as a clip of their own, `clips/<camera>-<UTC time>-missed.mp4`, the class over all of it.
Two operators marking the same event: every mark is kept in `marks.sqlite3`, the last verdict
wins in `labels.csv`. `labels.csv` is rebuilt from `marks.sqlite3` after each mark, under a
lock and written atomically (temporary file, then rename), so a reader never sees half a file.
The rebuild keeps the manifest consistent: an event with a missed range has no `none` row (the
range is an action), and of two overlapping ranges of one class the first kept.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..evidence import safe_name
from ..protocol import parse_iso_utc
from .media import clip_info
from .paths import existing_evidence
from .store import EventDetail

log = logging.getLogger(__name__)

REVIEW_DIR = "review"
VERDICTS = ("real", "false_alarm")
HEADER = ("file", "label", "start_s", "end_s", "group")

_DDL = """
CREATE TABLE IF NOT EXISTS marks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    kind TEXT NOT NULL,          -- 'verdict' or 'missed'
    label TEXT NOT NULL,         -- the event's class (verdict) or the missed class
    verdict TEXT,                -- 'real' / 'false_alarm' (verdict marks)
    start_s REAL,                -- missed: the range; verdict: where the event starts in the clip
    end_s REAL,
    by TEXT NOT NULL,
    at REAL NOT NULL,
    clip TEXT,                   -- relative to review/, NULL when no clip could be kept
    clip_s REAL                  -- the clip's duration in seconds
);
CREATE INDEX IF NOT EXISTS marks_event ON marks(event_id);
"""


class MarkRefused(ValueError):
    """A mark that cannot be recorded (bad range, unknown class); the message says why."""


@dataclass
class MarkResult:
    """What happened to a mark, in words for the page."""
    message: str
    clip: Optional[str]           # relative to review/, None: recorded without a clip


@dataclass
class Mark:
    id: int
    event_id: str
    camera: str
    kind: str
    label: str
    verdict: Optional[str]
    start_s: Optional[float]
    end_s: Optional[float]
    by: str
    at: float
    clip: Optional[str]
    clip_s: Optional[float] = None


class ReviewDataset:
    """The review dataset of one `data_dir`.

    Args:
        data_dir: the daemon's data_dir (`review/` is made inside it).
        class_names: the classes a missed range may name (the serving model's).
    """

    def __init__(self, data_dir: Path, class_names: tuple[str, ...] = ("fight", "collapse")):
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / REVIEW_DIR
        self.class_names = tuple(class_names)

    # ---- storage --------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.root / "marks.sqlite3"), timeout=10.0, isolation_level=None)
        # Two requests opening a new file at once: switching it to WAL needs a lock that the
        # busy timeout does not wait for ("database is locked"), so wait here, for 5 s at most.
        for attempt in range(50):
            try:
                db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)
        db.executescript(_DDL)
        return db

    def _read_db(self) -> Optional[sqlite3.Connection]:
        path = self.root / "marks.sqlite3"
        if not path.is_file():
            return None
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)

    def verdicts(self) -> dict[str, str]:
        """event id -> its latest verdict (`real` / `false_alarm`)."""
        db = self._read_db()
        if db is None:
            return {}
        try:
            return dict(db.execute(
                "SELECT event_id, verdict FROM marks WHERE id IN "
                "(SELECT MAX(id) FROM marks WHERE kind = 'verdict' GROUP BY event_id)"))
        finally:
            db.close()

    def marks(self, event_id: str) -> list[Mark]:
        """Every mark of an event, oldest first."""
        db = self._read_db()
        if db is None:
            return []
        try:
            rows = db.execute("SELECT id, event_id, camera, kind, label, verdict, start_s, end_s,"
                              " by, at, clip, clip_s FROM marks WHERE event_id = ? ORDER BY id",
                              (event_id,)).fetchall()
        finally:
            db.close()
        return [Mark(*r) for r in rows]

    # ---- marking --------------------------------------------------------------------------
    def mark(self, event: EventDetail, verdict: str, by: str,
             cameras: Optional[set[str]] = None) -> MarkResult:
        """Record `real` or `false_alarm` for an event and rebuild the manifest.

        Args:
            event: the event's alerts (`store.JournalView.event`).
            verdict: `real` or `false_alarm`. by: who marked (the login, or `local`).
            cameras: the cameras the daemon runs now (None: unknown); a mark on a camera that
                is gone is still recorded (its evidence is still footage), and the message says so.
        Raises:
            MarkRefused: an unknown verdict.
        """
        if verdict not in VERDICTS:
            raise MarkRefused(f"unknown verdict {verdict!r} (real or false_alarm)")
        first = event.first
        label = str(first.get("label"))
        return self._record(event, "verdict", label, verdict, None, None, by, cameras)

    def missed(self, event: EventDetail, label: str, start_s: float, end_s: float, by: str,
               cameras: Optional[set[str]] = None) -> MarkResult:
        """Record a range of the event's clip that should have raised an event of `label`.

        Raises:
            MarkRefused: an unknown class, or a range outside the clip or empty.
        """
        if label not in self.class_names:
            raise MarkRefused(f"unknown class {label!r} (the model's: "
                              f"{', '.join(self.class_names)})")
        if not (0 <= start_s < end_s):
            raise MarkRefused(f"the range {start_s:g}-{end_s:g} s is empty or negative")
        return self._record(event, "missed", label, None, start_s, end_s, by, cameras)

    def missed_live(self, camera: str, label: str, frames: np.ndarray, fps: float, by: str,
                    now: Optional[float] = None) -> MarkResult:
        """Record that the last seconds of a camera (its display ring: `frames` RGB uint8
        (N, H, W, 3), oldest first, at `fps`) held `label` and raised no event: the frames are
        written as a clip of their own (`clips/<camera>-<UTC time>-missed.mp4`), labelled
        `label` over the whole clip.

        Raises:
            MarkRefused: an unknown class, or no frames.
        """
        if label not in self.class_names:
            raise MarkRefused(f"unknown class {label!r} (the model's: "
                              f"{', '.join(self.class_names)})")
        if frames is None or len(frames) < 2 or not fps > 0:
            raise MarkRefused(f"camera {camera!r} has no recent frames to keep")
        now = time.time() if now is None else now
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        mark_id = f"{safe_name(camera)}-{stamp}-missed"
        rel = f"clips/{mark_id}.mp4"
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp.mp4")
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        try:
            if not writer.isOpened():
                raise MarkRefused("cannot open a video writer for the clip")
            for frame in frames:
                writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        os.replace(tmp, dst)
        duration = len(frames) / fps
        self._insert(mark_id, camera, "missed", label, None, 0.0, round(duration, 2), by, rel,
                     duration)
        log.info("review: %s marked the last %.1f s of %s as missed %s", by, duration, camera,
                 label)
        return MarkResult(f"the last {duration:.1f} s of {camera} kept as missed {label}", rel)

    def _insert(self, event_id: str, camera: str, kind: str, label: str,
                verdict: Optional[str], start_s: Optional[float], end_s: Optional[float],
                by: str, clip: Optional[str], clip_s: Optional[float]) -> None:
        """One mark, and the manifest rebuilt, in one write transaction."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO marks(event_id, camera, kind, label, verdict, start_s, "
                       "end_s, by, at, clip, clip_s) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (event_id, camera, kind, label, verdict, start_s, end_s, by,
                        time.time(), clip, clip_s))
            # Rebuilt inside the write transaction: SQLite's lock orders the writers (threads
            # and processes alike), so the last file written holds the last mark.
            self._write_manifest(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _record(self, event: EventDetail, kind: str, label: str, verdict: Optional[str],
                start_s: Optional[float], end_s: Optional[float], by: str,
                cameras: Optional[set[str]]) -> MarkResult:
        camera = str(event.first.get("camera"))
        notes = []
        if cameras is not None and camera not in cameras:
            notes.append(f"camera {camera!r} is no longer configured; the mark is kept with "
                         "its evidence, grouped under that name")
        clip, why = self._keep_clip(event)
        clip_s = None
        if clip is None:
            notes.append(f"no clip could be kept ({why}): the mark is recorded but adds "
                         "nothing to the training set")
        else:
            info = clip_info(self.root / clip)
            clip_s = info.duration_s if info is not None else None
            if kind == "verdict" and info is not None:
                start_s = event_start_in_clip(event, info.duration_s)
            if kind == "missed" and info is not None and info.duration_s > 0 \
                    and start_s is not None and start_s >= info.duration_s:
                raise MarkRefused(f"the range starts at {start_s:g} s, after the clip's end "
                                  f"({info.duration_s:.1f} s)")
        self._insert(event.event_id, camera, kind, label, verdict, start_s, end_s, by, clip,
                     clip_s)
        what = (f"missed {label} {start_s:g}-{end_s:g} s" if kind == "missed"
                else verdict.replace("_", " ") if verdict else kind)
        log.info("review: %s marked %s as %s", by, event.event_id, what)
        message = f"{event.event_id} marked {what}" + "".join(f"; {n}" for n in notes)
        return MarkResult(message, clip)

    def _keep_clip(self, event: EventDetail) -> tuple[Optional[str], Optional[str]]:
        """Copy the event's evidence clip into `review/clips/` once; (relative path, None) or
        (None, why)."""
        rel = f"clips/{safe_name(event.event_id)}.mp4"
        dst = self.root / rel
        if dst.is_file():
            return rel, None
        end = event.end
        if end is None:
            return None, "the event has not ended yet, so its clip is not written"
        src, why = existing_evidence(self.data_dir, end.get("clip"))
        if src is None:
            return None, f"evidence clip: {why}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return rel, None

    # ---- the manifest ---------------------------------------------------------------------
    def _write_manifest(self, db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT id, event_id, camera, kind, label, verdict, start_s, end_s, by,"
                          " at, clip, clip_s FROM marks WHERE clip IS NOT NULL ORDER BY id"
                          ).fetchall()
        events: dict[str, list[Mark]] = {}
        for r in rows:
            events.setdefault(r[1], []).append(Mark(*r))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        for event_id, marks in events.items():
            for row in self._event_rows(event_id, marks):
                writer.writerow(row)
        path = self.root / "labels.csv"
        tmp = path.with_name(".labels.csv.tmp")
        tmp.write_text(out.getvalue(), encoding="utf-8")
        os.replace(tmp, path)

    def _event_rows(self, event_id: str, marks: list[Mark]) -> list[tuple]:
        clip = marks[-1].clip
        camera = marks[-1].camera
        duration = max((m.clip_s or 0.0) for m in marks)
        verdicts = [m for m in marks if m.kind == "verdict"]
        verdict = verdicts[-1] if verdicts else None
        actions: list[tuple[str, float, float]] = []
        if verdict is not None and verdict.verdict == "real":
            start = min(verdict.start_s or 0.0, max(duration - 0.1, 0.0))
            actions.append((verdict.label, start, duration))
        for m in marks:
            if m.kind != "missed" or m.start_s is None or m.end_s is None:
                continue
            end = min(m.end_s, duration) if duration > 0 else m.end_s
            if end <= m.start_s:
                continue
            if any(lab == m.label and s < end and m.start_s < e for lab, s, e in actions):
                continue          # overlaps a range of the same class already kept
            actions.append((m.label, m.start_s, end))
        if actions:
            return [(clip, lab, f"{s:.2f}", f"{e:.2f}", camera) for lab, s, e in actions]
        if verdict is not None and verdict.verdict == "false_alarm":
            return [(clip, "none", "", "", camera)]
        return []


def event_start_in_clip(event: EventDetail, duration_s: float) -> Optional[float]:
    """Seconds from the clip's first frame to the triggering window's start, or None.

    The clip ends at the end alert's window end (frames up to the end) and lasts `duration_s`.
    """
    start, end = event.start, event.end
    try:
        t_start = parse_iso_utc(start["window"]["start"])  # type: ignore[index]
        t_end = parse_iso_utc(end["window"]["end"])        # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None
    return max(t_start - (t_end - duration_s), 0.0)

"""The alert journal: every alert is committed to SQLite before it goes on the wire.

SQLite in WAL mode with `synchronous=FULL`: a commit is on disk when `append` returns, so an alert
a subscriber may have seen survives a SIGKILL or a power cut, and the replay socket can always
serve it. `seq` is assigned here, from a counter stored in the same transaction, so it continues
across restarts and is never reused, even after `prune` deleted the newest rows.

sqlite3 connections belong to the thread that opened them: open one `Journal` per thread (the
daemon's event thread writes, the publisher's replay thread reads with its own). WAL lets the
reader run while the writer commits.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Optional

from detector.errors import VigilError

from .events import iso_utc, parse_iso_utc
from .retention import RetentionClock, retention_cutoff

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Identifies the file as a Vigil journal (SQLite's application_id; "VGIL").
APPLICATION_ID = 0x5647494C

_DDL = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    camera TEXT NOT NULL,
    published_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_event ON alerts(event_id);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(published_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('last_seq', 0);
"""

# The last message of every event that started and never ended.
_OPEN_EVENTS = """
SELECT body FROM alerts WHERE seq IN (
    SELECT MAX(seq) FROM alerts GROUP BY event_id
    HAVING SUM(type = 'end') = 0 AND SUM(type = 'start') > 0)
ORDER BY seq
"""


class JournalError(VigilError):
    """The journal file cannot be opened or is not a Vigil journal."""


class Journal:
    """One connection to the journal; use it only from the thread that created it.

    Args:
        path: the SQLite file (created with its directory if missing).
    Raises:
        JournalError: the file is not a SQLite database, is corrupt or is another program's.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in append).
            self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"{self.path}: cannot open the alert journal: {exc}") from None
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise JournalError(
                f"{self.path}: not a usable alert journal ({exc}); move it aside and restart "
                "(a new journal will be created, sequence numbers restart at 1)") from None

    def _setup(self) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL mode (got {mode})")
        # FULL: the WAL is fsynced at every commit, so a committed alert survives power loss.
        db.execute("PRAGMA synchronous=FULL")
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
            raise sqlite3.DatabaseError("the file is another program's SQLite database")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"journal schema {version} is newer than this Vigil's ({SCHEMA_VERSION})")
        db.executescript(_DDL)
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # ---- writing -------------------------------------------------------------------------------
    def append(self, msg: dict) -> dict:
        """Assign seq, published_at and latency_s; commit; return the message to publish.

        Args:
            msg: an alert from `EventTracker` (may carry internal `_` fields, which are dropped;
                `_t_end_mono` is the monotonic capture time used for latency_s).
        Returns:
            The final `vigil.alert/1` message, as stored.
        """
        for key in ("event_id", "type", "camera"):
            if key not in msg:
                raise ValueError(f"alert message lacks {key!r}")
        now = time.time()
        latency = self._latency(msg, now)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0] + 1
            final = self._final(msg, seq, now, latency)
            db.execute("INSERT INTO alerts(seq, event_id, type, camera, published_at, body) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (seq, final["event_id"], final["type"], final["camera"], now,
                        json.dumps(final, separators=(",", ":"), ensure_ascii=False)))
            db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (seq,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return final

    @staticmethod
    def _latency(msg: dict, now: float) -> float | None:
        """Capture of the window's last frame -> now (monotonic when known, else wall time)."""
        if msg.get("_t_end_mono") is not None:
            return round(max(time.monotonic() - float(msg["_t_end_mono"]), 0.0), 3)
        end = msg.get("_t_end_wall")
        if end is None:
            try:
                end = parse_iso_utc(msg["window"]["end"])
            except (KeyError, TypeError, ValueError):
                return None
        return round(max(now - float(end), 0.0), 3)

    @staticmethod
    def _final(msg: dict, seq: int, now: float, latency: float | None) -> dict:
        final: dict[str, Any] = {"schema": msg.get("schema", "vigil.alert/1"), "seq": seq}
        for key, value in msg.items():
            if not key.startswith("_") and key not in ("schema", "seq", "published_at",
                                                         "latency_s"):
                final[key] = value
        final["published_at"] = iso_utc(now)
        final["latency_s"] = latency
        return final

    def prune(self, max_age_days: float, clock: Optional[RetentionClock] = None) -> int:
        """Delete messages older than `max_age_days`, keeping every message of open events.

        Age is judged by `retention_cutoff` on `clock` (the daemon's `RetentionClock`), so a
        wall-clock step forward cannot delete what was written minutes earlier.

        Returns:
            How many messages were deleted. `last_seq` is unaffected (seq is never reused).
        """
        cutoff = retention_cutoff(max_age_days * 86400.0, clock)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute(
                "DELETE FROM alerts WHERE published_at < ? AND event_id NOT IN ("
                " SELECT event_id FROM alerts GROUP BY event_id"
                " HAVING SUM(type = 'end') = 0 AND SUM(type = 'start') > 0)", (cutoff,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if cur.rowcount:
            log.info("journal: pruned %d messages older than %g days", cur.rowcount, max_age_days)
        return cur.rowcount

    # ---- reading -------------------------------------------------------------------------------
    def since(self, seq: int, limit: int = 1000) -> list[dict]:
        """Messages with seq > `seq`, oldest first, at most `limit`."""
        rows = self._db.execute("SELECT body FROM alerts WHERE seq > ? ORDER BY seq LIMIT ?",
                                (int(seq), max(int(limit), 0))).fetchall()
        return [json.loads(r[0]) for r in rows]

    def last_seq(self) -> int:
        """The highest seq ever assigned (0 for a new journal)."""
        return int(self._db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0])

    def open_events(self) -> list[dict]:
        """The last message of every event with a start and no end (to close after a crash)."""
        return [json.loads(r[0]) for r in self._db.execute(_OPEN_EVENTS).fetchall()]

    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

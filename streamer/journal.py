"""The alert journal: every alert is committed to SQLite before it goes on the wire.

SQLite in WAL mode with `synchronous=FULL`: a commit is on disk when `append` returns, so an alert
a subscriber may have seen survives a SIGKILL or a power cut, and the replay socket can always
serve it. `seq` is assigned here, from a counter stored in the same transaction, so it continues
across restarts and is never reused, even after `prune` deleted the newest rows.

sqlite3 connections belong to the thread that opened them: open one `Journal` per thread (the
daemon's event thread writes, the publisher's replay thread reads with its own). WAL lets the
reader run while the writer commits.

Journal id. Every journal file holds a random id (`journal_id`, 16 hex digits) made when the file
is created and stamped on every alert (`vigil.alert/2`), heartbeat and replay reply. A sequence
of seqs is only meaningful within one journal id: when the file is lost, emptied or replaced, the
new journal has a new id, so every client can tell a reset (seq starting again) from old news.
The file's identity (device, inode) is kept at open so `file_problem()` can tell, while running,
that the file was deleted or replaced under the open connection.

Errors are typed: `JournalCorruptError` (damaged file: header or pages), `JournalWriteError`
(a commit failed; `.disk_full` when the file system is full), both `JournalError`s. A failed
commit is rolled back quietly, so the real error is the one raised.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from detector.errors import VigilError

from .protocol import ALERT_SCHEMA, iso_utc, parse_iso_utc
from .retention import RetentionClock, retention_cutoff

log = logging.getLogger(__name__)

# 2: the `info` table holds the journal id (a v1 file gets one when first opened).
SCHEMA_VERSION = 2
# Below this many free bytes in the journal's file system a failed commit is "disk full".
DISK_FULL_BYTES = 1 << 20
# SQLite result codes (primary) that mean the file is damaged, or the disk is full.
_CORRUPT_CODES = (11, 26)      # SQLITE_CORRUPT, SQLITE_NOTADB
_FULL_CODES = (13,)            # SQLITE_FULL
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
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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


class JournalCorruptError(JournalError):
    """The journal file is damaged (its header or its pages) or is not a Vigil journal."""


class JournalWriteError(JournalError):
    """A commit failed (rolled back). `disk_full`: the journal's file system has no room."""

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


def new_journal_id() -> str:
    """A random journal id: 16 lowercase hex digits (64 bits)."""
    return secrets.token_hex(8)


def free_bytes(path: Path) -> Optional[int]:
    """Bytes free for unprivileged writers in the file system holding `path` (None: unknown)."""
    try:
        return shutil.disk_usage(path if path.is_dir() else path.parent).free
    except OSError:
        return None


def _code(exc: BaseException) -> Optional[int]:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _is_corrupt(exc: BaseException) -> bool:
    return _code(exc) in _CORRUPT_CODES or "malformed" in str(exc)


def _is_disk_full(exc: BaseException, path: Path) -> bool:
    """SQLITE_FULL, ENOSPC, or an I/O error while the file system has (almost) no room."""
    if _code(exc) in _FULL_CODES or getattr(exc, "errno", None) == 28:
        return True
    free = free_bytes(path)
    return free is not None and free < DISK_FULL_BYTES


def _corrupt_message(path: Path, exc: BaseException) -> str:
    return (f"{path}: not a usable alert journal ({exc}); move it aside and restart "
            "(a new journal will be created, with a new journal id; sequence numbers restart at 1)")


class Journal:
    """One connection to the journal; use it only from the thread that created it.

    Args:
        path: the SQLite file (created with its directory if missing).
        journal_id: the id a NEW file gets (None: a random one); an existing file keeps its own.
        start_seq: a new (or older) file's seq counter is raised to at least this, so a journal
            recreated while the daemon runs continues the sequence instead of reusing seqs.
    Attributes:
        journal_id: this file's id. created: the file was new (or empty) when opened.
        was_empty: the file existed with 0 bytes (truncated) and was made a new journal.
    Raises:
        JournalCorruptError: the file is not a SQLite database, is damaged or is another
            program's. JournalWriteError: it cannot be set up for writing (`disk_full` when the
            file system is full). JournalError: it cannot be opened at all.
    """

    def __init__(self, path: str | Path, journal_id: Optional[str] = None,
                 start_seq: int = 0) -> None:
        self.path = Path(path)
        self.created = False
        self.was_empty = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.was_empty = self.path.is_file() and self.path.stat().st_size == 0
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in append).
            self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"{self.path}: cannot open the alert journal: {exc}") from None
        try:
            self.journal_id = self._setup(journal_id, max(int(start_seq), 0))
            st = os.stat(self.path)
        except (sqlite3.Error, OSError) as exc:
            self._db.close()
            raise self._error(exc, "cannot set up the alert journal") from None
        self._identity = (st.st_dev, st.st_ino)

    def _setup(self, journal_id: Optional[str], start_seq: int) -> str:
        """WAL, FULL sync, checks, tables; returns the journal id (made when the file is new)."""
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL mode (got {mode})")
        # FULL: the WAL is fsynced at every commit, so a committed alert survives power loss.
        db.execute("PRAGMA synchronous=FULL")
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
            raise JournalCorruptError(f"{self.path}: the file is another program's SQLite "
                                      "database; move it aside or point data_dir elsewhere")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalCorruptError(f"{self.path}: journal schema {version} is newer than this "
                                      f"Vigil's ({SCHEMA_VERSION})")
        self.created = "alerts" not in tables
        if version == SCHEMA_VERSION and "info" in tables:
            row = db.execute("SELECT value FROM info WHERE key='journal_id'").fetchone()
            if row is not None:
                self._raise_seq(start_seq)
                return str(row[0])
        # New file, or an upgrade from schema 1: one transaction makes the tables and the id.
        jid = journal_id or new_journal_id()
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _DDL.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute("INSERT OR IGNORE INTO info(key, value) VALUES ('journal_id', ?)", (jid,))
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("UPDATE meta SET value=MAX(value, ?) WHERE key='last_seq'", (start_seq,))
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return str(db.execute("SELECT value FROM info WHERE key='journal_id'").fetchone()[0])

    def _raise_seq(self, start_seq: int) -> None:
        if start_seq > 0 and self.last_seq() < start_seq:
            with self._transaction("cannot write the alert journal"):
                self._db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (start_seq,))

    def raise_seq(self, seq: int) -> None:
        """Make the next seq at least `seq` + 1 (seqs published but never journalled are never
        given again). Raises JournalWriteError."""
        self._raise_seq(max(int(seq), 0))

    def info(self, key: str) -> Optional[str]:
        """A value of the file's `info` table (the journal id is `journal_id`), or None."""
        with self._reading() as db:
            row = db.execute("SELECT value FROM info WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_info(self, key: str, value: str) -> None:
        """Store a value in the `info` table. Raises JournalWriteError."""
        with self._transaction("cannot write the alert journal") as db:
            db.execute("INSERT OR REPLACE INTO info(key, value) VALUES (?, ?)", (key, str(value)))

    # ---- errors --------------------------------------------------------------------------------
    def _error(self, exc: BaseException, what: str) -> JournalError:
        """The typed error for a sqlite3/OS error (JournalErrors pass through)."""
        if isinstance(exc, JournalError):
            return exc
        if _is_corrupt(exc):
            return JournalCorruptError(_corrupt_message(self.path, exc))
        if _is_disk_full(exc, self.path):
            return JournalWriteError(f"{self.path}: {what}: {exc} (disk full: "
                                     f"{free_bytes(self.path)} bytes free)", disk_full=True)
        if isinstance(exc, sqlite3.OperationalError) or isinstance(exc, OSError):
            return JournalWriteError(f"{self.path}: {what}: {exc}")
        return JournalCorruptError(_corrupt_message(self.path, exc))

    def _rollback(self) -> None:
        """Roll back an open transaction; its own failure must not hide the error that caused it."""
        if not self._db.in_transaction:
            return          # SQLite already rolled back (e.g. SQLITE_FULL during COMMIT)
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.debug("journal: rollback failed too: %s", exc)

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; on failure roll back and raise the typed error."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            raise self._error(exc, what) from None
        except BaseException:
            self._rollback()
            raise

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._db
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc, "cannot read the alert journal") from None

    # ---- writing -------------------------------------------------------------------------------
    def append(self, msg: dict) -> dict:
        """Assign seq, published_at and latency_s; commit; return the message to publish.

        Args:
            msg: an alert from `EventTracker` (may carry internal `_` fields, which are dropped;
                `_t_end_mono` is the monotonic capture time used for latency_s).
        Returns:
            The final `vigil.alert/2` message, as stored.
        Raises:
            JournalWriteError: the commit failed (nothing was stored). JournalCorruptError.
        """
        for key in ("event_id", "type", "camera"):
            if key not in msg:
                raise ValueError(f"alert message lacks {key!r}")
        with self._transaction("cannot write the alert journal") as db:
            seq = db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0] + 1
            final = self.finalize(msg, seq, self.journal_id)
            self._insert(db, final)
        return final

    def write(self, final: dict) -> None:
        """Store a message finalised earlier (`finalize`) with its own seq (held alerts).

        Raises:
            JournalWriteError, JournalCorruptError: as `append`.
        """
        with self._transaction("cannot write the alert journal") as db:
            self._insert(db, final)

    @staticmethod
    def _insert(db: sqlite3.Connection, final: dict) -> None:
        seq = int(final["seq"])
        db.execute("INSERT OR IGNORE INTO alerts(seq, event_id, type, camera, published_at, body)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   (seq, final["event_id"], final["type"], final["camera"],
                    parse_iso_utc(final["published_at"]),
                    json.dumps(final, separators=(",", ":"), ensure_ascii=False)))
        db.execute("UPDATE meta SET value=MAX(value, ?) WHERE key='last_seq'", (seq,))

    @classmethod
    def finalize(cls, msg: dict, seq: int, journal_id: str, now: Optional[float] = None) -> dict:
        """The final `vigil.alert/2` form of a tracker message, without storing it.

        Args:
            msg: an alert from `EventTracker`. seq: its seq. journal_id: the journal it belongs to.
            now: publication time (epoch seconds); None = now.
        """
        now = time.time() if now is None else now
        latency = cls._latency(msg, now)
        final: dict[str, Any] = {"schema": ALERT_SCHEMA, "seq": int(seq), "journal_id": journal_id}
        for key, value in msg.items():
            if not key.startswith("_") and key not in ("schema", "seq", "journal_id",
                                                         "published_at", "latency_s"):
                final[key] = value
        final["published_at"] = iso_utc(now)
        final["latency_s"] = latency
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

    def prune(self, max_age_days: float, clock: Optional[RetentionClock] = None) -> int:
        """Delete messages older than `max_age_days`, keeping every message of open events.

        Age is judged by `retention_cutoff` on `clock` (the daemon's `RetentionClock`), so a
        wall-clock step forward cannot delete what was written minutes earlier.

        Returns:
            How many messages were deleted. `last_seq` is unaffected (seq is never reused).
        Raises:
            JournalWriteError, JournalCorruptError.
        """
        cutoff = retention_cutoff(max_age_days * 86400.0, clock)
        with self._transaction("cannot prune the alert journal") as db:
            cur = db.execute(
                "DELETE FROM alerts WHERE published_at < ? AND event_id NOT IN ("
                " SELECT event_id FROM alerts GROUP BY event_id"
                " HAVING SUM(type = 'end') = 0 AND SUM(type = 'start') > 0)", (cutoff,))
        if cur.rowcount:
            log.info("journal: pruned %d messages older than %g days", cur.rowcount, max_age_days)
        return cur.rowcount

    # ---- reading -------------------------------------------------------------------------------
    def since(self, seq: int, limit: int = 1000) -> list[dict]:
        """Messages with seq > `seq`, oldest first, at most `limit`.

        Raises:
            OverflowError: `seq` or `limit` does not fit SQLite's 64-bit integers.
            JournalError: the file cannot be read (JournalCorruptError: it is damaged).
        """
        with self._reading() as db:
            rows = db.execute("SELECT body FROM alerts WHERE seq > ? ORDER BY seq LIMIT ?",
                              (int(seq), max(int(limit), 0))).fetchall()
        return [json.loads(r[0]) for r in rows]

    def last_seq(self) -> int:
        """The highest seq ever assigned (0 for a new journal)."""
        with self._reading() as db:
            return int(db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0])

    def open_events(self) -> list[dict]:
        """The last message of every event with a start and no end (to close after a crash)."""
        with self._reading() as db:
            return [json.loads(r[0]) for r in db.execute(_OPEN_EVENTS).fetchall()]

    def check(self) -> None:
        """Read every page (`PRAGMA quick_check`): damage inside the file is found at start-up.

        Raises:
            JournalCorruptError: the check found damage.
        """
        with self._reading() as db:
            rows = db.execute("PRAGMA quick_check(5)").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            raise JournalCorruptError(_corrupt_message(
                self.path, "; ".join(str(r[0]) for r in rows)[:300]))

    def file_problem(self) -> Optional[str]:
        """None while `path` is still the file this connection opened; else what happened to it
        (`deleted`, or `replaced by another file`)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
        if (st.st_dev, st.st_ino) != self._identity:
            return "replaced by another file"
        return None

    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def peek(path: str | Path) -> Optional[dict]:
    """Read a journal without writing anything (start-up on a full disk).

    Returns:
        None if there is no file (or it is empty); else {"journal_id": str or None,
        "last_seq": int, "open_events": [last message of each open event], "seq_mark": bool
        (the file has a seq mark beside it: `streamer.journal_writer.SeqMark`)}.
    Raises:
        JournalCorruptError: the file is damaged. JournalError: it cannot be read at all.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    errors = []
    # Read-only first (sees the WAL when its -shm exists); `immutable` needs no -shm at all.
    for uri in (f"file:{path}?mode=ro", f"file:{path}?mode=ro&immutable=1"):
        try:
            db = sqlite3.connect(uri, uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            errors.append(exc)
            continue
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            jid = None
            if "info" in tables:
                row = db.execute("SELECT value FROM info WHERE key='journal_id'").fetchone()
                jid = None if row is None else str(row[0])
            last = int(db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0])
            opened = [json.loads(r[0]) for r in db.execute(_OPEN_EVENTS).fetchall()]
            marked = "info" in tables and db.execute(
                "SELECT 1 FROM info WHERE key='seq_mark'").fetchone() is not None
            return {"journal_id": jid, "last_seq": last, "open_events": opened,
                    "seq_mark": marked}
        except sqlite3.Error as exc:
            if _is_corrupt(exc):
                raise JournalCorruptError(_corrupt_message(path, exc)) from None
            errors.append(exc)
        finally:
            db.close()
    raise JournalError(f"{path}: cannot read the alert journal: {errors[-1]}")

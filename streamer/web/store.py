"""The review page's read-only view of the alert journal (`streamer/journal.py`).

The journal is one SQLite table `alerts(seq PRIMARY KEY, event_id, type, camera, published_at,
body JSON)` with indexes on `event_id` and `published_at`. An event is its `start` alert plus
the `update`s and the `end` that share its `event_id`. The page never writes the journal: each
call opens its own connection with `mode=ro` (the daemon's event thread is the only writer; WAL
lets both run).

Paging is by seq (keyset): a page is the newest `start` alerts with `seq < before`, so a page
costs the same on a journal of 100,000 alerts as on one of 100 (docs/review.md gives the
measured time); there is no OFFSET to walk and no total count. Filters: camera (column), label
(`json_extract` on the body), time (`published_at`, indexed) and review state (the review
dataset's event ids, `streamer/web/review.py`).
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..protocol import parse_iso_utc

# The most alerts of one event the event page reads (an event that updated for hours).
MAX_EVENT_ALERTS = 2000


@dataclass
class EventFilter:
    """What the event list shows. `state`: `unreviewed`, `real`, `false_alarm` or None (all)."""
    camera: Optional[str] = None
    label: Optional[str] = None
    since: Optional[float] = None       # epoch s, published_at >= since
    until: Optional[float] = None       # epoch s, published_at < until
    state: Optional[str] = None


@dataclass
class EventRow:
    """One event in the list: its start alert and, when it ended, its end alert."""
    event_id: str
    seq: int
    camera: str
    label: str
    score: float
    started: str
    snapshot: Optional[str]
    end: Optional[dict] = None
    max_score: float = 0.0
    verdict: Optional[str] = None

    @property
    def clip(self) -> Optional[str]:
        return self.end.get("clip") if self.end else None


@dataclass
class EventDetail:
    """Every alert of one event, oldest first (at most `MAX_EVENT_ALERTS`)."""
    event_id: str
    alerts: list[dict] = field(default_factory=list)

    @property
    def start(self) -> Optional[dict]:
        return next((a for a in self.alerts if a.get("type") == "start"), None)

    @property
    def end(self) -> Optional[dict]:
        return next((a for a in reversed(self.alerts) if a.get("type") == "end"), None)

    @property
    def first(self) -> dict:
        return self.alerts[0]

    def scores(self) -> list[tuple[float, float]]:
        """(seconds since the first alert's window end, score) per alert, for the plot."""
        out = []
        t0 = None
        for a in self.alerts:
            try:
                t = parse_iso_utc(a["window"]["end"])
            except (KeyError, TypeError, ValueError):
                continue
            t0 = t if t0 is None else t0
            out.append((t - t0, float(a.get("score") or 0.0)))
        return out


class JournalView:
    """Read-only queries on `data_dir/journal.sqlite3`.

    Args:
        path: the journal file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _connect(self) -> Optional[sqlite3.Connection]:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return None
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)

    def events(self, flt: EventFilter, before: Optional[int], limit: int,
               reviewed: Optional[dict[str, str]] = None) -> tuple[list[EventRow], Optional[int]]:
        """A page of events, newest first.

        Args:
            flt: the filters. before: only events whose start seq is below (None: the newest).
            limit: events per page. reviewed: event id -> latest verdict (the review state).
        Returns:
            (rows, the `before` of the next page or None when this is the last page).
        """
        reviewed = reviewed or {}
        where = ["type = 'start'"]
        args: list = []
        if before is not None:
            where.append("seq < ?")
            args.append(int(before))
        if flt.camera:
            where.append("camera = ?")
            args.append(flt.camera)
        if flt.label:
            where.append("json_extract(body, '$.label') = ?")
            args.append(flt.label)
        if flt.since is not None:
            where.append("published_at >= ?")
            args.append(float(flt.since))
        if flt.until is not None:
            where.append("published_at < ?")
            args.append(float(flt.until))
        if flt.state in ("real", "false_alarm"):
            ids = [e for e, v in reviewed.items() if v == flt.state]
            if not ids:
                return [], None
            where.append(f"event_id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        elif flt.state == "unreviewed" and reviewed:
            where.append(f"event_id NOT IN ({','.join('?' * len(reviewed))})")
            args.extend(reviewed)
        db = self._connect()
        if db is None:
            return [], None
        try:
            rows = db.execute(
                f"SELECT seq, body FROM alerts WHERE {' AND '.join(where)} "
                "ORDER BY seq DESC LIMIT ?", (*args, int(limit) + 1)).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            out = [self._row(json.loads(body), seq) for seq, body in rows]
            self._complete(db, out)
        finally:
            db.close()
        for row in out:
            row.verdict = reviewed.get(row.event_id)
        return out, (out[-1].seq if more and out else None)

    @staticmethod
    def _row(start: dict, seq: int) -> EventRow:
        score = float(start.get("score") or 0.0)
        return EventRow(event_id=str(start.get("event_id")), seq=int(seq),
                        camera=str(start.get("camera")), label=str(start.get("label")),
                        score=score, started=str(start.get("published_at", "")),
                        snapshot=start.get("snapshot"), max_score=score)

    @staticmethod
    def _complete(db: sqlite3.Connection, rows: list[EventRow]) -> None:
        """Each event's end alert and highest score (through the event_id index)."""
        by_id = {r.event_id: r for r in rows}
        if not by_id:
            return
        marks = ",".join("?" * len(by_id))
        for event_id, kind, score, body in db.execute(
                f"SELECT event_id, type, json_extract(body, '$.score'), "
                f"CASE WHEN type = 'end' THEN body END FROM alerts "
                f"WHERE event_id IN ({marks})", list(by_id)):
            row = by_id[event_id]
            row.max_score = max(row.max_score, float(score or 0.0))
            if kind == "end":
                row.end = json.loads(body)

    def event(self, event_id: str) -> Optional[EventDetail]:
        """Every alert of an event, oldest first, or None when the journal has none."""
        db = self._connect()
        if db is None:
            return None
        try:
            rows = db.execute("SELECT body FROM alerts WHERE event_id = ? ORDER BY seq LIMIT ?",
                              (event_id, MAX_EVENT_ALERTS)).fetchall()
        finally:
            db.close()
        if not rows:
            return None
        return EventDetail(event_id, [json.loads(r[0]) for r in rows])

    def open_events(self, recent: int = 20000) -> dict[str, list[str]]:
        """camera -> labels of its open events (a start and no end yet) among the newest
        `recent` alerts (an event open longer than that many alerts ago is not listed)."""
        db = self._connect()
        if db is None:
            return {}
        try:
            last = db.execute("SELECT MAX(seq) FROM alerts").fetchone()[0] or 0
            rows = db.execute(
                "SELECT camera, json_extract(body, '$.label') FROM alerts WHERE seq > ? "
                "AND type = 'start' AND event_id NOT IN (SELECT event_id FROM alerts "
                "WHERE seq > ? AND type = 'end')", (last - recent, last - recent)).fetchall()
        finally:
            db.close()
        out: dict[str, list[str]] = {}
        for camera, label in rows:
            out.setdefault(camera, []).append(label)
        return out

    def labels(self) -> list[str]:
        """Labels seen in the newest alerts (for the filter's choices)."""
        return self._recent_values("json_extract(body, '$.label')")

    def cameras(self) -> list[str]:
        """Cameras seen in the newest alerts (for the filter's choices)."""
        return self._recent_values("camera")

    def _recent_values(self, column: str, recent: int = 2000) -> list[str]:
        """The distinct values of a column expression among the newest `recent` alerts."""
        db = self._connect()
        if db is None:
            return []
        try:
            rows = db.execute(f"SELECT DISTINCT {column} FROM (SELECT camera, body FROM alerts "
                              "ORDER BY seq DESC LIMIT ?)", (recent,)).fetchall()
        finally:
            db.close()
        return sorted(str(r[0]) for r in rows if r[0])

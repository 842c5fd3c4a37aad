"""The daemon's side of the journal: commit every alert, and degrade instead of blinding.

`JournalWriter` wraps the event thread's `Journal` connection with two behaviours the daemon
needs to keep detecting and publishing whatever happens to the journal's disk:

* **Disk full (or any failed commit).** The alert still gets the next seq (kept here, continuing
  the journal's), is published live, and is *held* in memory (at most `max_held`; beyond that
  the oldest held alerts are dropped and counted). `retry()` (called by the event loop every
  `retry_s`) writes the held alerts, in seq order and with their seqs, once the journal accepts
  writes again. Start-up on a full disk reads the journal without writing (`journal.peek`) and
  starts degraded: the daemon still reaches READY. One ERROR line per episode, one INFO line when
  it ends; the state is in `state()` (heartbeats) and in the `vigil_journal_*` metrics.
* **Journal lost or replaced while running.** `check()` notices that the file was deleted or
  replaced under the open connection (inode), says so at ERROR, and opens (creates) the journal
  at the path again: a new file gets a new journal id and continues the seq, so clients see the
  reset (new `journal_id`) and nothing is numbered twice. At start-up a journal file found empty
  (truncated to 0 bytes) is reported the same way.

* **No seq is ever reused (issue 26).** A held alert is published before it is journalled; if
  the daemon stops (SIGTERM or SIGKILL) before it is written, the journal's last seq is behind
  what went on the wire. So before a held alert is published, its seq (and the events its held
  alerts leave open or end) is written durably to the journal's **seq mark** (`SeqMark`, a small
  preallocated file beside the journal, `journal.sqlite3.seqmark`, rewritten in place and
  fsynced: no new disk space needed). At the next start, a mark above the journal's last seq
  means alerts were published and lost: the seq continues after the mark (clients see a gap
  they cannot fill, never an old seq meaning a new alert), and the events those alerts left open
  are ended with reason `restart`. When the mark cannot be written (or is missing while the
  journal says it had one), nothing can prove the journal's last seq is the last published:
  the mark is removed, and the next start moves that journal aside and begins a new journal id
  (a reset every client sees).

Errors: a damaged journal (`JournalCorruptError`) found at start-up is raised (the daemon refuses
to start with a clear message); later write errors of any kind degrade.

Use from one thread (the daemon's event thread): sqlite3 connections belong to their thread.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

from .journal import Journal, JournalCorruptError, JournalError, new_journal_id, peek
from .protocol import MAX_SEQ_AHEAD
from .retention import RetentionClock

log = logging.getLogger(__name__)

MAX_HELD = MAX_SEQ_AHEAD    # alerts held in memory while the journal cannot be written (~1 kB each)
RETRY_S = 1.0               # seconds between attempts to write held alerts
CHECK_S = 1.0               # seconds between checks that the journal file is still ours


SEQ_MARK_SUFFIX = ".seqmark"
MARK_SLOT_BYTES = 256 * 1024      # one copy of the mark: ~500 open events' last messages
_MARK_HEADER = struct.Struct("<4sQII")       # magic, generation, length, crc32
_MARK_MAGIC = b"VGSM"


class SeqMark:
    """The highest seq published ahead of the journal, kept durably beside it (issue 26).

    The file (`<journal>.seqmark`) holds two slots of `MARK_SLOT_BYTES`, preallocated while the
    disk has room (`prepare`); `write` puts the new state into the slot not holding the newest
    one (`[magic][generation][length][crc32][JSON]`), in place, and fsyncs, so a write needs no
    new blocks on a full disk, and a write cut short (power loss) spoils only the slot it was
    writing: the other one still holds the previous state, and the seq being written was not
    published (publishing waits for the fsync). `read` returns the newest valid slot.

    State: {"journal_id", "hwm": highest seq published, "open": {event_id: last held message of
    an event its held alerts leave open}, "ended": [event ids open in the journal whose end is
    held]}.
    """

    def __init__(self, journal_path: str | Path) -> None:
        self.path = Path(str(journal_path) + SEQ_MARK_SUFFIX)
        self._generation = 0

    def read(self) -> Optional[dict]:
        """The newest valid state, or None (no file, or no valid slot)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(2 * MARK_SLOT_BYTES)
        except OSError:
            return None
        best: Optional[tuple[int, dict]] = None
        for slot in range(2):
            chunk = data[slot * MARK_SLOT_BYTES:(slot + 1) * MARK_SLOT_BYTES]
            if len(chunk) < _MARK_HEADER.size:
                continue
            magic, gen, length, crc = _MARK_HEADER.unpack_from(chunk)
            body = chunk[_MARK_HEADER.size:_MARK_HEADER.size + length]
            if magic != _MARK_MAGIC or len(body) != length or zlib.crc32(body) != crc:
                continue
            try:
                state = json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(state, dict) and (best is None or gen > best[0]):
                best = (gen, state)
        if best is None:
            return None
        self._generation = best[0]
        return best[1]

    def prepare(self, state: dict) -> bool:
        """Make the file full size (while the disk has room) and write `state`.

        Returns:
            True when the mark can be written from now on.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size < 2 * MARK_SLOT_BYTES:
                    # Real zeros, not a sparse hole: later writes in place need no new blocks.
                    os.pwrite(fd, bytes(2 * MARK_SLOT_BYTES - size), size)
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("journal: cannot prepare the seq mark %s: %s", self.path, exc)
            return False
        return self.write(state)

    def write(self, state: dict) -> bool:
        """Durably store `state` (False: it could not be written, or is too large)."""
        body = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if _MARK_HEADER.size + len(body) > MARK_SLOT_BYTES:
            log.error("journal: the seq mark (%d bytes) does not fit its slot", len(body))
            return False
        gen = self._generation + 1
        record = _MARK_HEADER.pack(_MARK_MAGIC, gen, len(body), zlib.crc32(body)) + body
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                if os.fstat(fd).st_size < 2 * MARK_SLOT_BYTES:
                    return False                  # never grow it on a full disk
                os.pwrite(fd, record, (gen % 2) * MARK_SLOT_BYTES)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("journal: seq mark not written: %s", exc)
            return False
        self._generation = gen
        return True

    def remove(self) -> bool:
        """Delete the mark (needs no disk space): the next start cannot prove the journal's
        last seq and starts a new journal id. True when it is gone."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.critical("journal: cannot remove the seq mark %s: %s", self.path, exc)
            return False
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
        return True


def _move_aside(path: Path, journal_id: str) -> Path:
    """Rename a journal (and its WAL files) to `<name>.<journal_id>.unproven`; no space needed."""
    target = path.with_name(f"{path.name}.{journal_id}.unproven")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(target) + suffix))
    return target


class JournalWriter:
    """The event thread's journal, degrading to memory when it cannot be written.

    Args:
        path: the journal file.
        metrics: optional `VigilMetrics` (journal_writable, journal_held_alerts,
            journal_write_errors, journal_lost).
        max_held: most alerts held while the journal cannot be written.
        retry_s: seconds between write attempts while degraded.
        check_s: seconds between file identity checks.
        clock: monotonic clock (tests).
    Attributes:
        journal_id: the id of the journal alerts are numbered in.
        last_seq: the last seq assigned (journalled or held).
        held_dropped: held alerts dropped because more than `max_held` were waiting.
    """

    def __init__(self, path: str | Path, metrics: Any = None, max_held: int = MAX_HELD,
                 retry_s: float = RETRY_S, check_s: float = CHECK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.metrics = metrics
        self.max_held = max(int(max_held), 1)
        self.retry_s, self.check_s = retry_s, check_s
        self._clock = clock
        self._journal: Optional[Journal] = None
        self._held: deque[dict] = deque()
        self.held_dropped = 0
        self.journal_id = ""
        self.last_seq = 0
        self._orphans: list[dict] = []
        self._mark = SeqMark(self.path)
        self._mark_ok = False                      # the mark covers this journal id
        self._mark_failed = False
        self._journal_open: set[str] = set()       # events open in the journal
        self._held_open: dict[str, dict] = {}      # events its held alerts leave open
        self._held_ended: set[str] = set()         # journal-open events whose end is held
        self._journal_lost = False                 # the next journal must get a new id
        self._problem: Optional[str] = None        # why writes fail now (None: writing)
        self._since = 0.0                          # monotonic start of the episode
        self._next_retry = 0.0
        self._next_check = 0.0

    # ---- start-up ------------------------------------------------------------------------------
    def open(self, check_pages: bool = True) -> "JournalWriter":
        """Open the journal; on a full disk, read it without writing and start degraded.

        Args:
            check_pages: read every page first (`Journal.check`), so damage is found now.
        Returns:
            self.
        Raises:
            JournalCorruptError: the file is damaged. JournalError: it cannot be read at all.
        """
        try:
            journal = Journal(self.path)
            if check_pages:
                journal.check()
            self._orphans = journal.open_events()
            self.last_seq = journal.last_seq()
            if not journal.created:
                journal = self._settle_seq(journal)
        except JournalCorruptError:
            raise
        except JournalError as exc:
            self._open_read_only(exc)
            return self
        self._journal_open = {m["event_id"] for m in self._orphans}
        self._adopt(journal, at_start=True)
        self._prepare_mark()
        return self

    def _settle_seq(self, journal: Journal) -> Journal:
        """Start-up: make sure no seq published by the last run is numbered again (see the
        module docstring): continue after the seq mark, or start a new journal id when the
        journal's last seq cannot be proven to be the last published."""
        mark = self._mark.read()
        if mark is not None and mark.get("journal_id") == journal.journal_id:
            hwm = int(mark.get("hwm", 0))
            if hwm > self.last_seq:
                self._lost_held(hwm, mark)
                journal.raise_seq(hwm)
            return journal
        if journal.info("seq_mark") is None:
            return journal                        # a journal from before seq marks
        old_id, last = journal.journal_id, self.last_seq
        journal.close()
        aside = _move_aside(self.path, old_id)
        new = Journal(self.path, start_seq=last)
        log.error("journal %s: its seq mark is missing or unreadable, so nothing proves that seq "
                  "%d was the last one published (alerts held while the disk was full may have "
                  "gone out with later seqs): journal %s is kept as %s and a new journal %s "
                  "starts at seq %d; clients see the new journal_id", self.path, last, old_id,
                  aside, new.journal_id, last + 1)
        self._count_lost()
        self._journal_lost = False
        return new

    def _lost_held(self, hwm: int, mark: dict) -> None:
        """The last run published seqs up to `hwm` that never reached the journal: numbering
        continues after them, and the events they leave open are ended at start-up."""
        log.error("journal %s: alerts %d..%d were published while the journal could not be "
                  "written and were never written (the daemon stopped first): they cannot be "
                  "replayed; numbering continues at %d so no seq is used twice", self.path,
                  self.last_seq + 1, hwm, hwm + 1)
        orphans = {m["event_id"]: m for m in self._orphans}
        for event_id in mark.get("ended") or []:
            orphans.pop(event_id, None)
        for event_id, last in (mark.get("open") or {}).items():
            if isinstance(last, dict) and {"event_id", "camera", "label"} <= last.keys():
                orphans[event_id] = last
        self._orphans = sorted(orphans.values(), key=lambda m: int(m.get("seq", 0)))
        self.last_seq = hwm

    def _open_read_only(self, exc: JournalError) -> None:
        """Start-up when the journal cannot be written: numbering continues from a read (and
        from the seq mark: see `_settle_seq`)."""
        seen = peek(self.path)
        mark = self._mark.read()
        if seen is not None and (mark is None or mark.get("journal_id") != seen["journal_id"]):
            # Held alerts could not be covered by a mark: this journal's numbering stops here.
            aside = _move_aside(self.path, seen["journal_id"] or "unknown")
            log.error("journal %s: its seq mark is missing or unreadable, so nothing proves "
                      "that seq %d was the last one published: the journal is kept as %s and a "
                      "new journal starts at seq %d", self.path, seen["last_seq"], aside,
                      seen["last_seq"] + 1)
            self._count_lost()
            self._journal_lost = False
            self.journal_id, self.last_seq = new_journal_id(), seen["last_seq"]
            self._orphans = seen["open_events"]
        elif seen is None:
            self.journal_id, self.last_seq, self._orphans = new_journal_id(), 0, []
        else:
            self.journal_id = seen["journal_id"] or new_journal_id()
            self.last_seq, self._orphans = seen["last_seq"], seen["open_events"]
            if mark is not None and mark.get("journal_id") == self.journal_id:
                if int(mark.get("hwm", 0)) > self.last_seq:
                    self._lost_held(int(mark["hwm"]), mark)
                self._mark_ok = self._mark.write(self._mark_state())
        self._journal_open = {m["event_id"] for m in self._orphans}
        self._degrade(exc)

    def _mark_state(self) -> dict:
        return {"journal_id": self.journal_id, "hwm": int(self.last_seq),
                "open": self._held_open, "ended": sorted(self._held_ended)}

    def _prepare_mark(self) -> None:
        """A seq mark for the journal now written (its id, the last seq given, held events)."""
        assert self._journal is not None
        self._mark_ok = self._mark.prepare(self._mark_state())
        self._mark_failed = False
        if not self._mark_ok:
            log.error("journal: the seq mark %s cannot be written: if alerts are ever held (disk "
                      "full) and the daemon stops before they are written, the next start "
                      "begins a new journal id", self._mark.path)
        # From now on a missing or unreadable mark means "cannot prove" (see `_settle_seq`).
        if self._journal.info("seq_mark") is None:
            try:
                self._journal.set_info("seq_mark", "1")
            except JournalError as exc:
                log.debug("journal: seq mark flag not written: %s", exc)

    def _adopt(self, journal: Journal, at_start: bool = False) -> None:
        """Make `journal` the one written; say loudly when it is a new sequence."""
        old_id = self.journal_id
        self._journal = journal
        self.journal_id = journal.journal_id
        if journal.was_empty:
            log.error("journal %s: the file was EMPTY (truncated?): its alerts are lost; a new "
                      "journal %s starts at seq %d (clients see the new journal_id)", self.path,
                      journal.journal_id, journal.last_seq() + 1)
            self._count_lost()
        elif journal.created and at_start:
            log.info("journal %s: new journal %s", self.path, journal.journal_id)
        elif old_id and old_id != journal.journal_id:
            log.error("journal %s: now journal %s (was %s), seq continues at %d", self.path,
                      journal.journal_id, old_id, self.last_seq + 1)

    def open_events(self) -> list[dict]:
        """The last message of every event left open in the journal at start-up."""
        return list(self._orphans)

    # ---- writing -------------------------------------------------------------------------------
    def append(self, msg: dict) -> dict:
        """Journal a tracker message (or hold it when the journal cannot be written).

        Returns:
            The final `vigil.alert/2` message (seq assigned): publish it either way.
        """
        if self._journal is not None and not self._held:
            try:
                final = self._journal.append(msg)
                self.last_seq = max(self.last_seq, int(final["seq"]))
                self._journalled(final)
                return final
            except JournalError as exc:
                self._degrade(exc)
        final = Journal.finalize(msg, self.last_seq + 1, self.journal_id)
        if not self._cover(final) and not self._held:
            # Nothing can record this seq, and nothing is held under this journal id yet: the
            # held alerts go out under a new journal id (a reset clients see), never reusable.
            self._new_journal_now()
            final = Journal.finalize(msg, self.last_seq + 1, self.journal_id)
        self.last_seq = final["seq"]
        self._hold(final)
        return final

    def _new_journal_now(self) -> None:
        """Move the journal aside (a rename needs no disk space) and number from here on under
        a new journal id; its file is created when the disk has room (`retry`)."""
        old_id = self.journal_id
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        aside = _move_aside(self.path, old_id)
        self.journal_id = new_journal_id()
        self._held_open, self._held_ended = {}, set()
        self._journal_open.clear()
        self._count_lost()
        self._journal_lost = False          # `_reopen` creates the file with this new id
        log.error("journal %s: alerts must be held (the journal cannot be written) and the seq "
                  "mark cannot record them: journal %s is kept as %s and alerts are numbered "
                  "from seq %d under a new journal %s (clients see the new journal_id)",
                  self.path, old_id, aside, self.last_seq + 1, self.journal_id)

    def _journalled(self, final: dict) -> None:
        if final["type"] == "end":
            self._journal_open.discard(final["event_id"])
        else:
            self._journal_open.add(final["event_id"])

    def _note_held(self, final: dict) -> None:
        event_id = final["event_id"]
        if final["type"] == "end":
            self._held_open.pop(event_id, None)
            if event_id in self._journal_open:
                self._held_ended.add(event_id)
        else:
            self._held_open[event_id] = final

    def _cover(self, final: dict) -> bool:
        """Write the seq mark up to a held alert's seq (and its event), durably, before it is
        published. When it cannot be written: False; and when alerts are held under this
        journal id already, the mark is removed (see the module docstring) and that said once."""
        open_, ended = dict(self._held_open), set(self._held_ended)
        self._note_held(final)
        if self._mark_ok:
            self._mark_ok = self._mark.write({**self._mark_state(), "hwm": int(final["seq"])})
            if self._mark_ok:
                return True
        self._held_open, self._held_ended = open_, ended      # not published under this id
        if not self._held:
            return False
        if not self._mark_failed:
            self._mark_failed = True
            self._mark.remove()
            log.error("journal: the seq mark cannot be written, so nothing will prove which seqs "
                      "went out while the journal cannot be written: if the daemon stops before "
                      "they are, the next start begins a new journal id")
        return False

    def _hold(self, final: dict) -> None:
        self._held.append(final)
        if len(self._held) > self.max_held:
            self._held.popleft()
            self.held_dropped += 1
            if self.held_dropped == 1:
                log.error("journal: more than %d alerts waiting for the journal: the oldest are "
                          "dropped from memory (they were published, but cannot be replayed)",
                          self.max_held)
        self._gauge()

    def prune(self, max_age_days: float, clock: Optional[RetentionClock] = None) -> int:
        """`Journal.prune` (age judged on `clock`, see `streamer.retention`) while writing; 0
        while degraded (pruning needs room too)."""
        if self._journal is None or self._problem is not None:
            return 0
        try:
            return self._journal.prune(max_age_days, clock)
        except JournalError as exc:
            self._degrade(exc)
            return 0

    # ---- periodic ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Event loop, often: check the file is still ours, retry held writes when due."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.check_s
            self.check()
        if self._problem is not None and now >= self._next_retry:
            self._next_retry = now + self.retry_s
            self.retry()

    def check(self) -> bool:
        """If the journal file was deleted or replaced under us, say so and open it again.

        Returns:
            True if the journal was lost or replaced (and reopened, or degraded).
        """
        journal = self._journal
        if journal is None:
            return False
        problem = journal.file_problem()
        if problem is None:
            return False
        log.error("journal %s was %s while running (journal %s, last seq %d): alerts up to seq "
                  "%d can no longer be replayed; opening a new journal that continues the seq",
                  self.path, problem, self.journal_id, self.last_seq, self.last_seq)
        self._count_lost()
        journal.close()
        self._journal = None
        self._reopen()
        return True

    def retry(self) -> bool:
        """Write the held alerts if the journal accepts writes again.

        Returns:
            True when nothing is held any more (writing normally).
        """
        if self._journal is None and not self._reopen():
            return False
        assert self._journal is not None
        written = 0
        try:
            while self._held:
                self._journal.write(self._held[0])
                self._journalled(self._held.popleft())
                written += 1
            self._held_open.clear()
            self._held_ended.clear()
        except JournalError as exc:
            self._degrade(exc)
            return False
        finally:
            self._gauge()
        if self._problem is not None:
            log.info("journal: writing again after %.1f s; %d held alert(s) written%s",
                     self._clock() - self._since, written,
                     f", {self.held_dropped} dropped" if self.held_dropped else "")
            self._problem = None
            self.held_dropped = 0
            if self.metrics is not None:
                self.metrics.journal_writable.set(1)
        return True

    def _reopen(self) -> bool:
        """Open (or create) the journal at the path, continuing our seq and journal id."""
        try:
            journal = Journal(self.path, journal_id=None if self._journal_lost else
                              self.journal_id, start_seq=self.last_seq)
        except JournalError as exc:
            self._degrade(exc)
            return False
        self._journal_lost = False
        self._adopt(journal)
        if not self._mark_ok or journal.created:
            self._prepare_mark()
        return True

    def _count_lost(self) -> None:
        self._journal_lost = True
        if self.metrics is not None:
            self.metrics.journal_lost.inc()

    def _degrade(self, exc: JournalError) -> None:
        """Enter (or stay in) the degraded state; one ERROR line per episode."""
        if self.metrics is not None:
            self.metrics.journal_write_errors.inc()
        if self._problem is None:
            self._problem = str(exc)
            self._since = self._clock()
            self._next_retry = self._since + self.retry_s
            log.error("journal: %s; alerts are still published live and held in memory (up to "
                      "%d) until the journal can be written again", exc, self.max_held)
            if self.metrics is not None:
                self.metrics.journal_writable.set(0)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.journal_held_alerts.set(len(self._held))

    # ---- state ---------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """True while alerts are committed before they are published."""
        return self._problem is None

    @property
    def held(self) -> int:
        """Alerts published but not yet in the journal."""
        return len(self._held)

    def state(self) -> dict:
        """For heartbeats: {"id", "writable", "held", "error"} (error: None while writable)."""
        return {"id": self.journal_id, "writable": self.writable, "held": self.held,
                "error": None if self._problem is None else self._problem[:200]}

    def close(self) -> None:
        """Try once more to write held alerts, then close (held alerts left are logged)."""
        if self._held:
            self.retry()
        if self._held:
            log.error("journal: stopping with %d published alert(s) never journalled (seq %d..%d)",
                      len(self._held), self._held[0]["seq"], self._held[-1]["seq"])
        if self._journal is not None:
            self._journal.close()
            self._journal = None

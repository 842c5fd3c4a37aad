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

Errors: a damaged journal (`JournalCorruptError`) found at start-up is raised (the daemon refuses
to start with a clear message); later write errors of any kind degrade.

Use from one thread (the daemon's event thread): sqlite3 connections belong to their thread.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

from .journal import Journal, JournalCorruptError, JournalError, new_journal_id, peek
from .retention import RetentionClock

log = logging.getLogger(__name__)

MAX_HELD = 100_000          # alerts held in memory while the journal cannot be written (~1 kB each)
RETRY_S = 1.0               # seconds between attempts to write held alerts
CHECK_S = 1.0               # seconds between checks that the journal file is still ours


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
        except JournalCorruptError:
            raise
        except JournalError as exc:
            self._open_read_only(exc)
            return self
        self._adopt(journal, at_start=True)
        return self

    def _open_read_only(self, exc: JournalError) -> None:
        """Start-up when the journal cannot be written: numbering continues from a read."""
        seen = peek(self.path)
        if seen is None:
            self.journal_id, self.last_seq, self._orphans = new_journal_id(), 0, []
        else:
            self.journal_id = seen["journal_id"] or new_journal_id()
            self.last_seq, self._orphans = seen["last_seq"], seen["open_events"]
        self._degrade(exc)

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
                return final
            except JournalError as exc:
                self._degrade(exc)
        final = Journal.finalize(msg, self.last_seq + 1, self.journal_id)
        self.last_seq = final["seq"]
        self._hold(final)
        return final

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
                self._held.popleft()
                written += 1
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

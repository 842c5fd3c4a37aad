"""When may retention delete something: a cutoff that a wall-clock step cannot move forward.

Evidence directories (by file mtime) and journal rows (by `published_at`) carry wall-clock times,
and "older than N days" compares them with the wall clock. A box that boots with an old clock
(no RTC battery, NTP not yet synced) writes files dated, say, 2020; when NTP then steps the clock
to today, those files look years old and the next retention pass deletes alerts and evidence
written minutes earlier.

The rule (`retention_cutoff`): delete only what is older than `max_age_s` before the EARLIEST
"now" this process can vouch for. `RetentionClock` keeps the smallest offset `wall - monotonic`
it has observed (at construction and at every reading); `mono_now + that offset` is the wall time
as it would read had the clock never stepped forward since then. A forward step therefore moves
no cutoff; a backward step lowers it at once (keeping more, never less). The price: after a
forward step, data older than the age limit by the step's size is kept until the next restart,
which re-anchors on the corrected clock (the size limit of evidence still applies meanwhile).
"""
from __future__ import annotations

import time
from typing import Callable, Optional


class RetentionClock:
    """The wall time retention may use: never ahead of what this process observed.

    Args:
        wall: wall clock, epoch seconds (injectable for tests).
        mono: monotonic clock, seconds (injectable for tests).
    Not locked: a torn update can only lower the offset, which is the safe direction.
    """

    def __init__(self, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._mono = mono
        self._offset = wall() - mono()

    def now(self) -> float:
        """min(wall now, monotonic now + the smallest wall-monotonic offset seen), epoch s."""
        wall, mono = self._wall(), self._mono()
        self._offset = min(self._offset, wall - mono)
        return min(wall, mono + self._offset)


def retention_cutoff(max_age_s: float, clock: Optional[RetentionClock] = None) -> float:
    """The wall time (epoch seconds) before which retention may delete data.

    Args:
        max_age_s: the age limit in seconds.
        clock: the process's `RetentionClock` (None: one made now, i.e. plain `time.time()`,
            which protects nothing from a step that happened before this call).
    Returns:
        `clock.now() - max_age_s`: data with a time below it is old enough to delete.
    """
    return (clock or RetentionClock()).now() - float(max_age_s)

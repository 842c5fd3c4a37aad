"""Schedules: weekly time ranges in a named time zone, for cameras and notification rules.

    schedule:
      timezone: Europe/London            # an IANA name (zoneinfo); required
      when: ["mon-thu 20:00-02:00", "fri,sat 18:00-04:00", "sun 00:00-24:00"]
      outside: skip                      # cameras only: skip (not analysed) or mute

Each `when` entry is `DAYS START-END`: DAYS is `daily`, `weekdays` (mon-fri), `weekends`
(sat,sun), or a comma list of days and day ranges (`mon-fri,sun`; a range may wrap: `fri-mon`);
START and END are local `HH:MM` (END may be `24:00`). An END at or before START runs past
midnight into the next day (`mon 22:00-06:00` is Monday 22:00 to Tuesday 06:00). A schedule is
active while any of its entries is.

Times are local WALL-CLOCK times of the zone, evaluated by converting each instant with
`zoneinfo`, so daylight-saving changes need no special case and behave as a clock on the wall
does: on the night the clocks go forward the skipped hour is simply not lived (Europe/London jumps
from 01:00 GMT to 02:00 BST, so a range `00:30-01:30` lasts 30 minutes that night); on the night
they go back the repeated hour is lived twice (`01:00-02:00` is active for two real hours).
Resolution is one minute.

`Schedule.active(t)` takes epoch seconds, so a test moves a fake clock across a change of
offset and checks the answer; nothing here reads the clock itself.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Optional

from detector.errors import ConfigError
from detector.schema import Validated, setting

log = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SETS = {"daily": tuple(range(7)), "weekdays": tuple(range(5)), "weekends": (5, 6)}
MINUTES_PER_WEEK = 7 * 24 * 60
_ENTRY = re.compile(r"\s*(?P<days>\S+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*")


@dataclass
class ScheduleConfig(Validated):
    """When something is on: weekly local time ranges in a named time zone."""
    timezone: str = setting(doc="IANA time zone of the ranges, e.g. `Europe/London` (zoneinfo)")
    when: list[str] = setting(
        doc='weekly ranges `DAYS HH:MM-HH:MM`, e.g. `"mon-fri 18:00-02:00"` (past midnight when '
            "the end is earlier); DAYS: `daily`, `weekdays`, `weekends`, `mon,wed`, `fri-sun`")

    SECTION = "schedule"

    def _check_cross_fields(self, where: str) -> None:
        compile_schedule(self, where)    # raises naming the key


@dataclass
class CameraScheduleConfig(ScheduleConfig):
    """A camera's schedule: outside it the camera is not analysed, or analysed but muted."""
    outside: Literal["skip", "mute"] = setting("skip",
        doc="outside the schedule: `skip` (not analysed: no inference) or `mute` (analysed, "
            "no event starts)")


@dataclass(frozen=True)
class Schedule:
    """A compiled schedule: one bit per minute of the week, in its zone's wall-clock time.

    Attributes:
        zone: the `zoneinfo.ZoneInfo`.
        minutes: bytes of length 7*24*60, index weekday*1440 + hour*60 + minute (Monday = 0);
            1 where active.
        text: the entries as given (for messages).
    """
    zone: dt.tzinfo
    minutes: bytes = field(repr=False)
    text: tuple[str, ...] = ()

    def active(self, t: float) -> bool:
        """Whether the schedule is on at epoch time `t` (seconds)."""
        local = dt.datetime.fromtimestamp(t, self.zone)
        return self.minutes[local.weekday() * 1440 + local.hour * 60 + local.minute] == 1

    def local_time(self, t: float) -> dt.datetime:
        """Epoch seconds as an aware datetime in the schedule's zone."""
        return dt.datetime.fromtimestamp(t, self.zone)


def load_zone(name: str, where: str) -> dt.tzinfo:
    """`zoneinfo.ZoneInfo(name)`, or ConfigError naming the key (with close names suggested)."""
    import difflib
    import zoneinfo

    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: expected an IANA time zone name such as Europe/London")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else \
            " (an IANA name such as Europe/London or America/New_York)"
        raise ConfigError(f"{where}: unknown time zone {name!r}{hint}") from None


def _days(text: str, where: str) -> list[int]:
    text = text.lower()
    if text in DAY_SETS:
        return list(DAY_SETS[text])
    out: list[int] = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if first not in DAYS or (dash and last not in DAYS):
            raise ConfigError(f"{where}: unknown day {part!r}: use mon tue wed thu fri sat sun, "
                              "ranges such as mon-fri, or daily, weekdays, weekends")
        a = DAYS.index(first)
        b = DAYS.index(last) if dash else a
        out.extend((a + k) % 7 for k in range((b - a) % 7 + 1))
    return out


def _minute(text: str, where: str, end: bool) -> int:
    hh, mm = (int(v) for v in text.split(":"))
    if mm > 59 or hh > 24 or (hh == 24 and (mm != 0 or not end)):
        raise ConfigError(f"{where}: {text!r} is not a time of day (00:00 to 23:59"
                          f"{', or 24:00 as an end' if end else ''})")
    return hh * 60 + mm


def compile_schedule(cfg: ScheduleConfig, where: str) -> Schedule:
    """Validate and compile a schedule.

    Raises:
        ConfigError: `<where>.timezone: unknown time zone ...`, `<where>.when[i]: ...` for an
            entry that does not parse, an unknown day, a time out of range, an empty range, or
            `<where>.when: ...` when there is no entry.
    """
    zone = load_zone(cfg.timezone, f"{where}.timezone")
    if not cfg.when:
        raise ConfigError(f"{where}.when: give at least one range, e.g. \"daily 00:00-24:00\"")
    minutes = bytearray(MINUTES_PER_WEEK)
    for i, entry in enumerate(cfg.when):
        key = f"{where}.when[{i}]"
        m = _ENTRY.fullmatch(entry) if isinstance(entry, str) else None
        if m is None:
            raise ConfigError(f"{key}: expected \"DAYS HH:MM-HH:MM\", e.g. \"mon-fri 18:00-02:00\","
                              f" got {entry!r:.60}")
        days = _days(m["days"], key)
        start = _minute(m["start"], key, end=False)
        stop = _minute(m["end"], key, end=True)
        if start == stop:
            raise ConfigError(f"{key}: the range is empty ({m['start']}-{m['end']}); for a whole "
                              "day write 00:00-24:00")
        length = stop - start if stop > start else stop + 1440 - start
        for day in days:
            first = day * 1440 + start
            for k in range(length):
                minutes[(first + k) % MINUTES_PER_WEEK] = 1
    return Schedule(zone, bytes(minutes), tuple(cfg.when))


def describe_schedule(s: Optional[Schedule]) -> str:
    """One line for `--check --explain` and logs: the entries and the zone, or `always`."""
    if s is None:
        return "always"
    return f"{'; '.join(s.text)} ({getattr(s.zone, 'key', s.zone)})"


# What a camera does now: `on` (inside its schedule, or it has none), `skip` (outside; not
# analysed) or `mute` (outside; analysed, no event starts).
ON, SKIP, MUTE = "on", "skip", "mute"


class CameraSchedules:
    """The cameras' schedules, evaluated by the daemon's event loop on an injected clock.

    Args:
        cameras: objects with `name` and `schedule` (a `CameraScheduleConfig` or None), e.g. the
            config's `CameraConfig`s (already validated).
        clock: epoch seconds (tests pass a fake one).
    """

    def __init__(self, cameras: Iterable[Any], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._compiled: dict[str, tuple[Schedule, str]] = {}
        self._state: dict[str, str] = {}
        self.set_cameras(cameras)

    def set_cameras(self, cameras: Iterable[Any]) -> None:
        """(Re)load the cameras' schedules (a reload); states are evaluated again at `tick`."""
        self._compiled = {}
        for cam in cameras:
            if cam.schedule is not None:
                self._compiled[cam.name] = (compile_schedule(cam.schedule, cam.where),
                                            cam.schedule.outside)
        self._state = {n: s for n, s in self._state.items() if n in self._compiled}

    def state(self, camera: str) -> str:
        """`on`, `skip` or `mute` as of the last `tick` (a camera without a schedule: `on`)."""
        return self._state.get(camera, ON)

    def tick(self, now: Optional[float] = None) -> dict[str, str]:
        """Evaluate every schedule at `now` (default: the clock).

        Returns:
            camera -> new state, for the cameras whose state changed (each change is logged).
        """
        t = self.clock() if now is None else now
        changed: dict[str, str] = {}
        for name, (sched, outside) in self._compiled.items():
            state = ON if sched.active(t) else outside
            if self._state.get(name) != state:
                changed[name] = state
                self._state[name] = state
        for name, state in changed.items():
            local = self._compiled[name][0].local_time(t).strftime("%a %H:%M %Z")
            log.info("camera %s: %s (schedule, %s)", name,
                     {ON: "inside its schedule: analysed and alerting",
                      SKIP: "outside its schedule: not analysed",
                      MUTE: "outside its schedule: analysed, not alerting"}[state], local)
        return changed

"""Schedules (`streamer/schedule.py`) on a fake clock, across daylight-saving changes: the
ranges' parsing and validation, wall-clock semantics on the nights the clocks change, the
cameras' states, and the daemon's gating (not analysed / analysed but muted) with its metrics.
"""
from __future__ import annotations

import calendar
import time

import pytest

from detector.errors import ConfigError
from streamer.schedule import (MUTE, ON, SKIP, CameraScheduleConfig, CameraSchedules,
                               ScheduleConfig, compile_schedule)


def utc(text: str) -> float:
    """`YYYY-MM-DD HH:MM` UTC -> epoch seconds."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))


def sched(*when: str, tz: str = "Europe/London"):
    return compile_schedule(ScheduleConfig(timezone=tz, when=list(when)), "cameras[0].schedule")


def test_a_range_past_midnight_belongs_to_the_day_it_starts():
    s = sched("fri 22:00-02:00")
    assert s.active(utc("2026-01-09 22:00"))          # Friday 22:00 GMT
    assert s.active(utc("2026-01-10 01:59"))          # Saturday 01:59
    assert not s.active(utc("2026-01-10 02:00"))
    assert not s.active(utc("2026-01-10 22:30"))      # Saturday night is not Friday's
    assert not s.active(utc("2026-01-09 21:59"))


def test_day_sets_ranges_that_wrap_and_whole_days():
    weekend = sched("weekends 00:00-24:00")
    assert weekend.active(utc("2026-01-10 12:00")) and weekend.active(utc("2026-01-11 23:59"))
    assert not weekend.active(utc("2026-01-12 00:00"))
    wrap = sched("sun-mon 23:00-01:00")                # Sunday into Monday, Monday into Tuesday
    assert wrap.active(utc("2026-01-12 00:30")) and wrap.active(utc("2026-01-13 00:30"))
    assert not wrap.active(utc("2026-01-14 00:30"))
    assert sched("daily 00:00-24:00").active(utc("2026-05-05 05:05"))


def test_spring_forward_the_skipped_hour_is_not_lived():
    # Europe/London, 2026-03-29: 01:00 GMT becomes 02:00 BST.
    s = sched("sun 00:30-01:30")
    assert s.active(utc("2026-03-29 00:30"))           # 00:30 GMT
    assert s.active(utc("2026-03-29 00:59"))
    assert not s.active(utc("2026-03-29 01:00"))       # = 02:00 BST: past 01:30 local
    # A range across the jump keeps its wall-clock end: 22:00-06:00 ends at 06:00 BST = 05:00 UTC.
    night = sched("sat 22:00-06:00")
    assert night.active(utc("2026-03-29 04:59")) and not night.active(utc("2026-03-29 05:00"))


def test_fall_back_the_repeated_hour_is_lived_twice():
    # Europe/London, 2026-10-25: 02:00 BST (01:00 UTC) goes back to 01:00 GMT.
    s = sched("sun 01:00-02:00")
    assert s.active(utc("2026-10-25 00:00"))           # 01:00 BST, first time
    assert s.active(utc("2026-10-25 00:59"))
    assert s.active(utc("2026-10-25 01:00"))           # 01:00 GMT, second time
    assert s.active(utc("2026-10-25 01:59"))
    assert not s.active(utc("2026-10-25 02:00"))
    assert not s.active(utc("2026-10-24 23:59"))       # 00:59 BST


def test_a_zone_west_of_utc_across_its_own_change():
    # America/New_York, 2026-03-08: 02:00 EST (07:00 UTC) becomes 03:00 EDT.
    s = sched("daily 08:00-09:00", tz="America/New_York")
    assert s.active(utc("2026-03-07 13:30"))           # 08:30 EST = 13:30 UTC
    assert not s.active(utc("2026-03-08 13:30"))       # 09:30 EDT
    assert s.active(utc("2026-03-08 12:30"))           # 08:30 EDT = 12:30 UTC


@pytest.mark.parametrize("cfg, key, problem", [
    ({"timezone": "Europe/Londn", "when": ["daily 00:00-24:00"]}, "timezone",
     r"unknown time zone 'Europe/Londn' \(did you mean Europe/London"),
    ({"timezone": "Mars/Olympus", "when": ["daily 00:00-24:00"]}, "timezone",
     "unknown time zone 'Mars/Olympus'"),
    ({"timezone": "UTC", "when": []}, "when", "give at least one range"),
    ({"timezone": "UTC", "when": ["monday 10:00-11:00"]}, r"when\[0\]", "unknown day 'monday'"),
    ({"timezone": "UTC", "when": ["mon 25:00-26:00"]}, r"when\[0\]", "is not a time of day"),
    ({"timezone": "UTC", "when": ["mon 10:60-11:00"]}, r"when\[0\]", "is not a time of day"),
    ({"timezone": "UTC", "when": ["mon 24:00-01:00"]}, r"when\[0\]", "is not a time of day"),
    ({"timezone": "UTC", "when": ["mon 10:00-10:00"]}, r"when\[0\]", "the range is empty"),
    ({"timezone": "UTC", "when": ["mon 10-11"]}, r"when\[0\]", "expected \"DAYS HH:MM-HH:MM\""),
    ({"timezone": "UTC", "when": ["mon,fri 10:00-11:00", "xyz 10:00-11:00"]}, r"when\[1\]",
     "unknown day"),
])
def test_bad_schedules_are_refused_naming_the_key(cfg, key, problem):
    with pytest.raises(ConfigError, match=rf"^cameras\[0\]\.schedule\.{key}: .*{problem}"):
        compile_schedule(ScheduleConfig(**cfg), "cameras[0].schedule")


def test_an_unknown_time_zone_is_refused_when_the_config_loads():
    from streamer.config import parse_config

    with pytest.raises(ConfigError, match=r"cameras\[0\]\.schedule\.timezone: unknown time "
                                          r"zone 'Europe/Pariss'"):
        parse_config({"data_dir": "/tmp/x", "model": {"checkpoint": "x.pt"},
                      "cameras": [{"name": "bar", "url": "synth://fight",
                                   "schedule": {"timezone": "Europe/Pariss",
                                                "when": ["daily 20:00-02:00"]}}]},
                     check_paths=False)


class Cam:
    def __init__(self, name, schedule=None, index=0):
        self.name, self.schedule, self.where = name, schedule, f"cameras[{index}]"


def test_camera_states_follow_a_fake_clock_across_the_spring_change():
    now = {"t": utc("2026-03-28 21:00")}               # Saturday 21:00 GMT
    cams = [Cam("bar", CameraScheduleConfig(timezone="Europe/London", outside="skip",
                                            when=["sat 22:00-02:00"])),
            Cam("hall", CameraScheduleConfig(timezone="Europe/London", outside="mute",
                                             when=["daily 00:30-01:30"]), 1),
            Cam("lobby")]
    s = CameraSchedules(cams, clock=lambda: now["t"])
    seen = []
    for when in ("2026-03-28 21:00", "2026-03-28 22:00", "2026-03-29 00:30", "2026-03-29 00:59",
                 "2026-03-29 01:00", "2026-03-29 02:00"):
        now["t"] = utc(when)
        s.tick()
        seen.append((s.state("bar"), s.state("hall"), s.state("lobby")))
    assert seen == [
        (SKIP, MUTE, ON),    # 21:00 GMT
        (ON, MUTE, ON),      # 22:00 GMT: the bar opens
        (ON, ON, ON),        # 00:30 GMT
        (ON, ON, ON),        # 00:59 GMT
        (SKIP, MUTE, ON),    # 01:00 UTC = 02:00 BST: both ranges are over by the wall clock
        (SKIP, MUTE, ON),    # 02:00 UTC = 03:00 BST
    ]


# ----------------------------------------------------------------------------- the daemon
class FakeCapture:
    def __init__(self) -> None:
        self.up, self.read_timeout_s, self.open_timeout_s = True, 1.0, 1.0
        self.reconnects, self.fps, self.display_ring, self.ring = 0, 15.0, None, None

    def stuck(self, now=None) -> bool:
        return False

    def last_frame_age(self, now=None) -> float:
        return 0.1


def test_the_daemon_skips_or_mutes_cameras_outside_their_schedule_across_dst(tmp_path):
    """The daemon's own gating on a fake clock: a `skip` camera leaves the scheduler (after its
    open event ended), a `mute` one stays analysed but starts nothing; metrics say which."""
    from streamer.camera_runtime import CameraRuntime
    from streamer.config import parse_config
    from streamer.daemon import Daemon
    from streamer.events import EventTracker
    from streamer.routing import EventRouting
    from streamer.scheduler import CameraWindow
    from streamer.types import ClassScore, WindowResult

    night = {"timezone": "Europe/London", "when": ["sat 22:00-02:00"]}
    cfg = parse_config({"data_dir": str(tmp_path), "model": {"checkpoint": "x.pt"},
                        "smoothing": {"min_windows": 1, "cooldown_s": 1, "alpha": 1.0},
                        "cameras": [{"name": "bar", "url": "synth://fight",
                                     "schedule": {**night, "outside": "skip"}},
                                    {"name": "hall", "url": "synth://fight",
                                     "schedule": {**night, "outside": "mute"}}]},
                       check_paths=False)
    d = Daemon(cfg)
    d.class_names = ["fight"]
    d.routing = EventRouting(("fight",))
    d._tracker = EventTracker(cfg.smoothing, ["fight"], metrics=d.metrics,
                              resolver=lambda c, label: cfg.smoothing_for(c, label))
    now = {"t": utc("2026-03-28 21:00")}
    d._schedules = CameraSchedules(cfg.cameras, clock=lambda: now["t"])
    d._cams = {c.name: CameraRuntime(c, FakeCapture(), 1.0, window=CameraWindow(15, 1.0, 8, 4))
               for c in cfg.cameras}
    emitted = []
    d._emit = emitted.extend

    def window(camera, score, t):
        return WindowResult(camera, {"fight": ClassScore("fight", score, (0.1, 0.1, 0.5, 0.5))},
                            (320, 240), t, t + 1, t + 1, int(t))

    def gauges(name):
        return (d.metrics.camera_analysed.labels(camera=name)._value.get(),
                d.metrics.camera_alerting.labels(camera=name)._value.get())

    d._apply_schedules()                                # Saturday 21:00 GMT: outside
    assert d._windows()["bar"] is None and d._windows()["hall"] is not None
    assert gauges("bar") == (0, 0) and gauges("hall") == (1, 0)
    d._handle([window("hall", 0.95, 0)])
    assert emitted == []                                # muted: nothing starts...
    assert d.metrics.events_suppressed.labels(camera="hall", label="fight",
                                              reason="schedule")._value.get() == 1

    now["t"] = utc("2026-03-28 22:00")                 # the schedule opens
    d._apply_schedules()
    assert d._windows()["bar"] is not None and gauges("bar") == (1, 1) == gauges("hall")
    d._handle([window("hall", 0.95, 1), window("bar", 0.95, 1)])
    # ...and the action still going on in the muted camera starts at once.
    assert sorted((m["camera"], m["type"]) for m in emitted) == [("bar", "start"),
                                                                ("hall", "start")]

    now["t"] = utc("2026-03-29 01:00")                 # = 02:00 BST: the range is over
    d._apply_schedules()
    # An open event keeps its camera analysed until it ends...
    assert d._windows()["bar"] is not None and gauges("bar") == (1, 0)
    emitted.clear()
    d._handle([window("bar", 0.0, 2), window("bar", 0.0, 4)])
    assert [(m["camera"], m["type"]) for m in emitted] == [("bar", "end")]
    d._apply_schedules()
    assert d._windows()["bar"] is None and gauges("bar") == (0, 0)    # ...then it is skipped
    assert d._windows()["hall"] is not None and gauges("hall") == (1, 0)

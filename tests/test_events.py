"""EventTracker: start/update/end messages of `vigil.alert/1`, ids, cooldown, closing; plus
hypothesis properties over random score sequences and interleavings of cameras."""
from __future__ import annotations

import calendar
import dataclasses
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.config import SmoothingConfig
from streamer.events import EventTracker, box_iou, end_message
from streamer.protocol import END_REASONS, iso_utc, parse_iso_utc
from streamer.metrics import VigilMetrics
from streamer.types import ClassScore, WindowResult

T0 = float(calendar.timegm((2026, 11, 24, 10, 15, 2, 0, 0, 0)))   # design.md's example time
BOX = (0.25, 0.5, 0.75, 1.0)
CLASSES = ["fight", "collapse"]


def cfg(**kw) -> SmoothingConfig:
    return dataclasses.replace(SmoothingConfig(), **kw)


def window(camera: str, t: float, fight: float, collapse: float = 0.0,
           box=BOX, size=(1920, 1080)) -> WindowResult:
    """One window of `camera` ending at T0 + t (0.6 s long)."""
    return WindowResult(camera, {"fight": ClassScore("fight", fight, box),
                                 "collapse": ClassScore("collapse", collapse, box)},
                        size, T0 + t - 0.6, T0 + t, 1000.0 + t, int(t * 25))


def feed(tracker: EventTracker, camera: str, scores, t0: float = 0.0, dt: float = 1.0, **kw):
    out = []
    for i, x in enumerate(scores):
        out += tracker.observe(window(camera, t0 + i * dt, x, **kw))
    return out


def tracker(**kw) -> EventTracker:
    return EventTracker(cfg(**kw), CLASSES, clock=lambda: T0)


def test_start_message_follows_the_alert_schema():
    tr = EventTracker(cfg(alpha=1.0, min_windows=2), CLASSES, clock=lambda: T0 + 0.9,
                      counter_start=7)
    msgs = feed(tr, "lobby", [0.1, 0.9, 0.9])
    assert [m["type"] for m in msgs] == ["start"]
    m = msgs[0]
    assert re.fullmatch(r"lobby-\d{8}T\d{6}Z-\d{4}", m["event_id"])
    assert m["event_id"] == "lobby-20261124T101502Z-0007"   # camera, UTC start, counter
    assert (m["schema"], m["camera"], m["label"], m["reason"]) == ("vigil.alert/1", "lobby",
                                                                     "fight", None)
    assert m["score"] == pytest.approx(0.9)
    assert m["box"] == list(BOX) and m["box_px"] == [480, 540, 1440, 1080]
    assert m["frame_size"] == [1920, 1080]
    assert m["window"] == {"start": iso_utc(T0 + 1.4), "end": iso_utc(T0 + 2.0)}
    assert m["snapshot"] is None and m["clip"] is None
    # The journal assigns these; the tracker hands it the capture time for the latency.
    assert not {"seq", "published_at", "latency_s"} & set(m)
    assert m["_t_end_mono"] == pytest.approx(1002.0)


def test_each_class_starts_by_its_own_smoothing_settings():
    # A fall is over in a window or two; a fight goes on: collapse starts on one window.
    tr = EventTracker(cfg(alpha=1.0, min_windows=2,
                          classes={"collapse": {"min_windows": 1, "on_threshold": 0.5}}),
                      CLASSES, clock=lambda: T0)
    first = tr.observe(window("a", 0.0, fight=0.9, collapse=0.55))
    assert [(m["type"], m["label"]) for m in first] == [("start", "collapse")]
    second = tr.observe(window("a", 1.0, fight=0.9, collapse=0.55))
    assert [(m["type"], m["label"]) for m in second] == [("start", "fight")]
    assert tr.smoother("a", "collapse").cfg.min_windows == 1
    assert tr.smoother("a", "fight").cfg.min_windows == 2


def test_overrides_for_a_class_the_model_lacks_are_reported(caplog):
    EventTracker(cfg(classes={"falling": {"min_windows": 1}}), CLASSES)
    assert "smoothing.classes.falling: the model has no class 'falling'" in caplog.text


def test_iso_utc_has_two_decimals_and_round_trips():
    assert iso_utc(0.0) == "1970-01-01T00:00:00.00Z"
    assert iso_utc(59.999) == "1970-01-01T00:01:00.00Z"
    assert iso_utc(T0 + 0.126) == "2026-11-24T10:15:02.13Z"
    assert parse_iso_utc(iso_utc(T0 + 0.25)) == pytest.approx(T0 + 0.25)


def test_updates_wait_for_the_interval_and_a_material_change():
    tr = tracker(alpha=1.0, min_windows=1, update_interval_s=2.0, min_score_delta=0.1)
    assert [m["type"] for m in feed(tr, "a", [0.7])] == ["start"]
    # Material at once, but the interval has not passed: nothing.
    assert feed(tr, "a", [0.95], t0=1.0) == []
    # Interval passed and the score moved by >= 0.1 since the start: one update.
    up = feed(tr, "a", [0.95], t0=2.0)
    assert [m["type"] for m in up] == ["update"] and up[0]["score"] == pytest.approx(0.95)
    # Interval passed but nothing material (score within delta, same box): nothing.
    assert feed(tr, "a", [0.9, 0.92, 0.9], t0=4.0) == []


def test_a_moved_box_is_material():
    tr = tracker(alpha=1.0, box_alpha=1.0, min_windows=1, update_interval_s=0.0)
    feed(tr, "a", [0.8])
    moved = feed(tr, "a", [0.8], t0=1.0, box=(0.0, 0.0, 0.2, 0.2))
    assert [m["type"] for m in moved] == ["update"] and moved[0]["box"] == [0.0, 0.0, 0.2, 0.2]


def test_end_after_the_score_stayed_low_for_the_cooldown():
    tr = tracker(alpha=1.0, min_windows=1, cooldown_s=3.0, update_interval_s=100.0)
    start = feed(tr, "a", [0.9])[0]
    # Low at t=1,2,3: 2 s below so far; a brief recovery resets the cooldown.
    assert feed(tr, "a", [0.1, 0.1, 0.1, 0.5, 0.1, 0.1, 0.1], t0=1.0) == []
    end = feed(tr, "a", [0.1], t0=8.0)
    assert [m["type"] for m in end] == ["end"]
    assert end[0]["event_id"] == start["event_id"] and end[0]["reason"] == "cleared"
    # A new event gets a new id.
    again = feed(tr, "a", [0.9], t0=9.0)
    assert again[0]["type"] == "start" and again[0]["event_id"] != start["event_id"]


def test_classes_and_cameras_have_independent_events():
    tr = tracker(alpha=1.0, min_windows=1)
    msgs = tr.observe(window("a", 0, 0.9, 0.9)) + tr.observe(window("b", 0, 0.9))
    assert sorted((m["camera"], m["label"]) for m in msgs) == [("a", "collapse"), ("a", "fight"),
                                                               ("b", "fight")]
    assert len({m["event_id"] for m in msgs}) == 3
    assert set(tr.open_events()) == {("a", "collapse"), ("a", "fight"), ("b", "fight")}


def test_close_camera_ends_only_that_cameras_events():
    tr = tracker(alpha=1.0, min_windows=1)
    tr.observe(window("a", 0, 0.9))
    tr.observe(window("b", 0, 0.9))
    ends = tr.close_camera("a")
    assert [(m["camera"], m["type"], m["reason"]) for m in ends] == [("a", "end", "camera_lost")]
    assert "_t_end_mono" not in ends[0]     # no capture behind a daemon-made end
    assert set(tr.open_events()) == {("b", "fight")}
    # When the camera comes back, its next event is a new one.
    back = tr.observe(window("a", 5, 0.9))
    assert [m["type"] for m in back] == ["start"] and back[0]["event_id"] != ends[0]["event_id"]


@pytest.mark.parametrize("reason", ["shutdown", "reload"])
def test_close_all_ends_every_open_event(reason):
    tr = tracker(alpha=1.0, min_windows=1)
    tr.observe(window("a", 0, 0.9, 0.9))
    tr.observe(window("b", 0, 0.9))
    ends = tr.close_all(reason)
    assert len(ends) == 3 and {m["reason"] for m in ends} == {reason}
    assert tr.open_events() == {} and tr.close_all(reason) == []


def test_unknown_reason_is_a_programming_error():
    tr = tracker(alpha=1.0, min_windows=1)
    tr.observe(window("a", 0, 0.9))
    with pytest.raises(ValueError):
        tr.close_camera("a", "bored")


def test_end_message_closes_an_orphan_from_the_journal():
    journalled = {**feed(tracker(alpha=1.0, min_windows=1), "a", [0.9])[0], "seq": 7,
                  "published_at": iso_utc(T0), "latency_s": 0.2, "snapshot": "x.jpg"}
    end = end_message(journalled, "restart")
    assert (end["type"], end["reason"], end["event_id"]) == ("end", "restart",
                                                             journalled["event_id"])
    assert not {"seq", "published_at", "latency_s"} & set(end) and end["snapshot"] is None


def test_events_active_gauge_follows_open_events():
    metrics = VigilMetrics()
    tr = EventTracker(cfg(alpha=1.0, min_windows=1), CLASSES, clock=lambda: T0, metrics=metrics)
    tr.observe(window("a", 0, 0.9))
    value = lambda: metrics.registry.get_sample_value(  # noqa: E731
        "vigil_events_active", {"camera": "a", "label": "fight"})
    assert value() == 1
    tr.close_all("shutdown")
    assert value() == 0


def test_box_iou():
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == pytest.approx(1.0)
    assert box_iou((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == pytest.approx(0.0)
    assert box_iou((0, 0, 0.5, 0.5), (0.25, 0, 0.75, 0.5)) == pytest.approx(1 / 3)


# ---- properties -------------------------------------------------------------------------------
CAMERAS = ["a", "b", "c"]
step = st.one_of(
    st.tuples(st.just("window"), st.sampled_from(CAMERAS),
              st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.05, 3.0)),
    st.tuples(st.just("close_camera"), st.sampled_from(CAMERAS)),
    st.tuples(st.just("close_all"), st.sampled_from(["shutdown", "reload"])),
)
smoothing = st.builds(
    SmoothingConfig, method=st.sampled_from(["ema", "kofn"]), alpha=st.floats(0.1, 1.0),
    k=st.just(2), n=st.just(3), on_threshold=st.floats(0.5, 0.9), off_threshold=st.floats(0.0, 0.45),
    min_windows=st.integers(1, 3), cooldown_s=st.floats(0.0, 5.0),
    update_interval_s=st.floats(0.0, 3.0), min_score_delta=st.floats(0.0, 0.3),
    min_box_iou=st.floats(0.0, 1.0), box_alpha=st.floats(0.1, 1.0))


def check_stream(messages: list[dict]) -> None:
    """No update/end without a start, one open event per (camera, label), ids never reused."""
    open_by_key: dict[tuple[str, str], str] = {}
    started, ended = set(), set()
    for m in messages:
        key, eid = (m["camera"], m["label"]), m["event_id"]
        if m["type"] == "start":
            assert eid not in started, "event id reused"
            assert key not in open_by_key, "two open events for one (camera, label)"
            started.add(eid)
            open_by_key[key] = eid
        else:
            assert open_by_key.get(key) == eid, f"{m['type']} without an open start"
            if m["type"] == "end":
                assert m["reason"] in END_REASONS
                ended.add(eid)
                del open_by_key[key]
            else:
                assert m["reason"] is None
        assert 0.0 <= m["score"] <= 1.0 and all(0.0 <= v <= 1.0 for v in m["box"])
    assert started == ended, "an event was never ended"


@settings(max_examples=60, deadline=None)
@given(smoothing, st.lists(step, max_size=80))
def test_random_interleavings_keep_the_event_invariants(scfg, steps):
    tr = EventTracker(scfg, CLASSES, clock=lambda: T0)
    clock = {cam: 0.0 for cam in CAMERAS}
    messages: list[dict] = []
    for s in steps:
        if s[0] == "window":
            _, cam, fight, collapse, dt = s
            clock[cam] += dt
            messages += tr.observe(window(cam, clock[cam], fight, collapse))
        elif s[0] == "close_camera":
            messages += tr.close_camera(s[1])
        else:
            messages += tr.close_all(s[1])
    messages += tr.close_all("shutdown")
    assert tr.open_events() == {}
    check_stream(messages)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=120))
def test_a_single_stream_never_updates_faster_than_the_interval(scores):
    scfg = cfg(update_interval_s=2.0)
    tr = EventTracker(scfg, ["fight"], clock=lambda: T0)
    last_pub: dict[str, float] = {}
    for i, x in enumerate(scores):
        for m in tr.observe(window("a", i * 0.5, x)):
            t = parse_iso_utc(m["window"]["end"])
            if m["type"] == "update":
                assert t - last_pub[m["event_id"]] >= scfg.update_interval_s - 0.01
            last_pub[m["event_id"]] = t
    check_stream_all = tr.close_all("shutdown")
    assert all(m["type"] == "end" for m in check_stream_all)


class JumpingWallClock:
    """A wall clock that steps: `jumps` maps a monotonic time to a step (seconds, signed) applied
    from then on, as NTP or an operator would. The monotonic clock runs on undisturbed."""

    def __init__(self, jumps: dict[float, float]) -> None:
        self.jumps = jumps

    def wall(self, mono: float) -> float:
        return T0 + mono + sum(step for at, step in self.jumps.items() if mono >= at)


def wall_window(clock: JumpingWallClock, camera: str, mono: float, fight: float) -> WindowResult:
    """A window ending at monotonic time `mono`, stamped by the (jumping) wall clock."""
    return WindowResult(camera, {"fight": ClassScore("fight", fight, BOX),
                                 "collapse": ClassScore("collapse", 0.0, BOX)},
                        (1920, 1080), clock.wall(mono) - 0.6, clock.wall(mono), 5000.0 + mono,
                        int(mono * 25))


@pytest.mark.parametrize("step_s", [-3600.0, 3600.0])
def test_a_wall_clock_step_during_an_event_changes_no_duration(step_s):
    """Back by an hour (or forward) in the middle of an event: updates keep their interval, the
    event ends one cooldown after the scene cleared, and a new fight starts at once."""
    tr = EventTracker(cfg(alpha=1.0, min_windows=1, cooldown_s=3.0, update_interval_s=2.0,
                          min_score_delta=0.0), CLASSES, clock=lambda: T0)
    clock = JumpingWallClock({5.0: step_s, 12.0: -step_s / 2})   # and a second step later
    scores = [0.9] * 10 + [0.1] * 6 + [0.9] * 3      # fight 0-9 s, clear 10-15 s, fight again
    msgs = []
    for mono, x in enumerate(scores):
        for m in tr.observe(wall_window(clock, "lobby", float(mono), x)):
            msgs.append((mono, m["type"], m.get("reason")))
    starts = [t for t, kind, _ in msgs if kind == "start"]
    updates = [t for t, kind, _ in msgs if kind == "update"]
    ends = [(t, reason) for t, kind, reason in msgs if kind == "end"]
    assert starts == [0, 16]                    # the new fight is not muted by the step
    assert updates == [2, 4, 6, 8, 18]          # every 2 s of capture time, across the steps
    assert ends == [(13, "cleared")]            # off since 10 s: cooldown 3 s, step ignored


def test_the_alert_window_still_shows_wall_time_after_a_step():
    tr = EventTracker(cfg(alpha=1.0, min_windows=1), CLASSES, clock=lambda: T0)
    clock = JumpingWallClock({0.0: -3600.0})
    (m,) = tr.observe(wall_window(clock, "lobby", 1.0, 0.9))
    assert m["window"]["end"] == iso_utc(T0 + 1.0 - 3600.0)

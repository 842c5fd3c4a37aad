"""`vigil serve` as a real subprocess on loopback: READY/STOPPING over a notify socket the test
binds, /metrics parsed with prometheus_client's parser, heartbeats and alerts on a real ZeroMQ SUB,
SIGHUP reloads, SIGTERM shutdown, and config errors refused before any camera opens.

The checkpoint is a tiny random-weight `small3d` model: it cannot be expected to find fights, so
the smoothing thresholds are set so low that every camera/class opens an event at its first window
and keeps it open. That makes the lifecycle (start, then `end` reason `shutdown` on SIGTERM)
deterministic without depending on what the model sees. The daemon process, its notify socket
and the config come from `vigil_tools.harness`.
"""
from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

zmq = pytest.importorskip("zmq")

from streamer.config import default_instance  # noqa: E402
from vigil_tools.harness import (DaemonProcess, NotifyListener, base_config,  # noqa: E402
                                    free_port, wait_until)
from tests.conftest import recv_json, subscriber  # noqa: E402

SYNTH = "synth://{kind}?seed={seed}&width=96&height=72&fps=15&frames=45"
# The daemon's own stride and camera timeouts (what a deployment runs), not the fault tests'.
DEPLOYED = {"stride": 8, "fast_timeouts": False}

pytestmark = pytest.mark.integration


# ----------------------------------------------------------------------------- unit checks
class FakeCapture:
    """Stands in for a CaptureThread in the daemon's bookkeeping (no camera, no thread)."""

    def __init__(self, up: bool = True, stuck: bool = False) -> None:
        self.up, self._stuck = up, stuck
        self.read_timeout_s, self.open_timeout_s = 1.0, 1.0
        self.reconnects, self.fps, self.display_ring, self.ring = 0, 15.0, None, None

    def stuck(self, now=None) -> bool:
        return self._stuck

    def last_frame_age(self, now=None) -> float:
        return 0.1 if self.up else float("inf")


def _bare_daemon(tmp_path, notifier=None):
    from streamer.config import parse_config
    from streamer.daemon import Daemon

    cfg = parse_config({"data_dir": str(tmp_path / "data"), "model": {"checkpoint": "x.pt"},
                        "cameras": [{"name": "cam", "url": "synth://fight"}]},
                       check_paths=False)
    return Daemon(cfg, notifier=notifier)


def test_watchdog_pings_stop_while_a_capture_thread_is_stuck_and_resume_after(tmp_path, caplog):
    from streamer.camera_runtime import CameraRuntime
    from streamer.notify import Notifier

    ns = NotifyListener()
    try:
        d = _bare_daemon(tmp_path, Notifier(ns.path, watchdog_usec="20000"))   # ping every 10 ms
        d._wd_interval = d.notifier.watchdog_interval()
        fake = FakeCapture(stuck=True)
        d._cams = {"cam": CameraRuntime(d.cfg.cameras[0], fake, None)}
        with caplog.at_level("ERROR", logger="streamer.daemon"):
            for _ in range(3):
                time.sleep(0.015)
                d._worker_heartbeat()
        assert not ns.wait_for(b"WATCHDOG=1", timeout=0.2)
        assert sum("stuck in native code" in r.getMessage() for r in caplog.records) == 1
        fake._stuck = False
        time.sleep(0.015)
        d._worker_heartbeat()
        assert ns.wait_for(b"WATCHDOG=1", timeout=1)
    finally:
        ns.close()


def test_watchdog_pings_stop_when_the_event_loop_is_wedged(tmp_path):
    from streamer.notify import Notifier

    ns = NotifyListener()
    try:
        d = _bare_daemon(tmp_path, Notifier(ns.path, watchdog_usec="20000"))
        d._wd_interval = d.notifier.watchdog_interval()
        d._loop_beat = time.monotonic() - 60
        time.sleep(0.015)
        d._worker_heartbeat()
        assert not ns.wait_for(b"WATCHDOG=1", timeout=0.2)
        d._loop_beat = time.monotonic()
        time.sleep(0.015)
        d._worker_heartbeat()
        assert ns.wait_for(b"WATCHDOG=1", timeout=1)
    finally:
        ns.close()


def test_a_camera_going_down_ends_its_open_events_with_reason_camera_lost(tmp_path):
    from streamer.camera_runtime import CameraRuntime
    from streamer.events import EventTracker
    from streamer.journal import Journal
    from streamer.journal_writer import JournalWriter
    from streamer.publisher import AlertPublisher
    from streamer.types import ClassScore, WindowResult

    d = _bare_daemon(tmp_path)
    d.class_names = ["fight", "collapse"]
    d.cfg.smoothing.on_threshold, d.cfg.smoothing.min_windows = 0.5, 1
    d._tracker = EventTracker(d.cfg.smoothing, d.class_names, metrics=d.metrics)
    d._journal = JournalWriter(tmp_path / "j.sqlite3").open()

    def since0() -> list[dict]:
        with Journal(tmp_path / "j.sqlite3") as reader:
            return reader.since(0)

    d._publisher = AlertPublisher(f"tcp://127.0.0.1:{free_port()}",
                                  f"tcp://127.0.0.1:{free_port()}", tmp_path / "j.sqlite3")
    fake = FakeCapture(up=True)
    d._cams = {"cam": CameraRuntime(d.cfg.cameras[0], fake, None)}
    try:
        now = time.time()
        d._handle([WindowResult("cam", {"fight": ClassScore("fight", 0.9, (0.1, 0.1, 0.4, 0.4)),
                                        "collapse": ClassScore("collapse", 0.0, (0, 0, 1, 1))},
                                (96, 72), now - 1, now, time.monotonic(), 20)])
        assert [m["type"] for m in since0()] == ["start"]
        d._refresh_cameras()                      # still up: nothing happens
        assert len(since0()) == 1
        fake.up = False
        d._refresh_cameras()
        msgs = since0()
        assert [(m["type"], m["reason"]) for m in msgs] == [("start", None),
                                                            ("end", "camera_lost")]
        assert msgs[0]["event_id"] == msgs[1]["event_id"]
        sample = d.metrics.registry.get_sample_value("vigil_events_active",
                                                     {"camera": "cam", "label": "fight"})
        assert sample == 0
    finally:
        d._publisher.close()
        d._journal.close()


# ----------------------------------------------------------------------------- one daemon, several checks
@pytest.fixture(scope="module")
def daemon(tiny_checkpoint, tmp_path_factory):
    """A running daemon with two synthetic cameras (a fight scene and an empty one)."""
    work = tmp_path_factory.mktemp("daemon")
    cfg = base_config(work / "data", tiny_checkpoint,
                      {"fightcam": SYNTH.format(kind="fight", seed=1),
                       "emptycam": SYNTH.format(kind="none", seed=2)}, **DEPLOYED)
    d = DaemonProcess(work, cfg, watchdog_usec=1_000_000).start()   # ping every 0.5 s
    try:
        d.wait_ready()
        yield d
    finally:
        d.close()


def test_daemon_sends_ready_with_a_status(daemon):
    ready = [d for d in daemon.notify.datagrams() if b"READY=1" in d.split(b"\n")]
    assert ready and b"STATUS=" in ready[0]
    assert daemon.proc.poll() is None


def test_daemon_pings_the_watchdog_at_half_its_interval(daemon):
    before = daemon.notify.count(b"WATCHDOG=1")
    assert daemon.notify.wait_for(b"WATCHDOG=1", timeout=5, at_least=before + 3)


def test_metrics_counters_move_between_two_scrapes(daemon):
    first = daemon.metrics()
    for cam in ("fightcam", "emptycam"):
        assert daemon.value(first, "vigil_frames_total", camera=cam) is not None
        assert daemon.value(first, "vigil_windows_total", camera=cam) is not None

    def moved():
        second = daemon.metrics()
        ok = all(daemon.value(second, name, camera=cam) > daemon.value(first, name, camera=cam)
                 for name in ("vigil_frames_total", "vigil_windows_total")
                 for cam in ("fightcam", "emptycam"))
        return second if ok else None

    second = wait_until(moved, timeout=15, interval=0.5)
    assert second is not None, "frames/windows counters did not increase within 15 s"
    assert daemon.value(second, "vigil_camera_up", camera="fightcam") == 1.0
    age = daemon.value(second, "vigil_camera_last_frame_age_seconds", camera="fightcam")
    assert age is not None and 0.0 <= age < 5.0
    build = [dict(labels) for name, labels in second if name == "vigil_build_info"]
    assert len(build) == 1 and build[0]["model"] == "tiny.pt" and build[0]["device"] == "cpu"
    # No label anywhere carries a URL.
    assert not any("synth://" in v for _, labels in second for _, v in labels)


def test_heartbeats_arrive_on_a_zmq_subscriber(daemon):
    sub = subscriber(daemon.config["alerts"]["endpoint"], b"heartbeat")
    try:
        got = recv_json(sub, timeout=10)
        assert got is not None, "no heartbeat within 10 s"
        topic, hb = got
        assert topic == b"heartbeat"
        assert isinstance(hb["seq"], int) and hb["seq"] >= 0
        assert hb["uptime_s"] > 0
        from streamer.config import default_instance

        assert hb["instance"] == default_instance()   # no `instance:` in its config: host name
        assert set(hb["cameras"]) == {"fightcam", "emptycam"}
        assert all(isinstance(st["up"], bool) for st in hb["cameras"].values())
    finally:
        sub.close()


def test_sighup_with_a_bad_config_keeps_running_the_old_one(daemon):
    bad = json.loads(json.dumps(daemon.config))
    bad["cameras"][0]["strdie"] = 4
    daemon.write_config(bad)
    try:
        daemon.signal(signal.SIGHUP)
        assert wait_until(lambda: "cameras[0].strdie" in daemon.log(), timeout=10), daemon.log()
        before = daemon.metrics()
        assert daemon.proc.poll() is None
        assert wait_until(lambda: daemon.value(daemon.metrics(), "vigil_frames_total",
                                               camera="fightcam")
                          > daemon.value(before, "vigil_frames_total", camera="fightcam"),
                          timeout=10, interval=0.3)
        assert "camera fightcam: stopped" not in daemon.log()
    finally:
        daemon.write_config(daemon.config)


def test_sighup_adding_a_camera_starts_it_without_touching_the_others(daemon):
    before = daemon.metrics()
    frames_before = daemon.value(before, "vigil_frames_total", camera="fightcam")
    grown = json.loads(json.dumps(daemon.config))
    grown["cameras"].append({"name": "newcam", "url": SYNTH.format(kind="collapse", seed=3)})
    daemon.write_config(grown)
    daemon.signal(signal.SIGHUP)

    def started():
        v = daemon.value(daemon.metrics(), "vigil_frames_total", camera="newcam")
        return v is not None and v > 0

    assert wait_until(started, timeout=15, interval=0.3), daemon.log()
    after = daemon.metrics()
    # The old camera's counter kept counting from where it was: neither it nor the process
    # restarted (a restarted series would start again from 0).
    assert daemon.value(after, "vigil_frames_total", camera="fightcam") >= frames_before
    log = daemon.log()
    assert "1 camera(s) added, 0 removed, 0 changed, 2 unchanged" in log
    assert "camera fightcam: stopped" not in log and "camera emptycam: stopped" not in log
    assert daemon.proc.poll() is None


def test_sighup_removing_a_camera_ends_its_events_with_reason_reload(daemon):
    sub = subscriber(daemon.config["alerts"]["endpoint"], b"alert.tempcam.")
    try:
        with_temp = json.loads(json.dumps(daemon.config))
        with_temp["cameras"].append({"name": "tempcam", "url": SYNTH.format(kind="none", seed=7)})
        daemon.write_config(with_temp)
        daemon.signal(signal.SIGHUP)
        starts = set()
        deadline = time.monotonic() + 15
        while len(starts) < 2 and time.monotonic() < deadline:
            got = recv_json(sub, 0.5)
            if got and got[1]["type"] == "start":
                starts.add(got[1]["event_id"])
        assert len(starts) == 2, daemon.log()[-3000:]

        daemon.write_config(daemon.config)
        daemon.signal(signal.SIGHUP)
        ends = {}
        deadline = time.monotonic() + 10
        while set(ends) != starts and time.monotonic() < deadline:
            got = recv_json(sub, 0.5)
            if got and got[1]["type"] == "end":
                ends[got[1]["event_id"]] = got[1]["reason"]
        assert ends == {e: "reload" for e in starts}
        assert wait_until(lambda: daemon.value(daemon.metrics(), "vigil_frames_total",
                                               camera="tempcam") is None, timeout=5)
        assert daemon.proc.poll() is None
    finally:
        sub.close()


# ----------------------------------------------------------------------------- stop
@pytest.fixture(scope="module")
def stopped_daemon(tiny_checkpoint, tmp_path_factory) -> dict:
    """One daemon life, recorded: started on a journal that an unclean stop left with an open
    event, run until it has opened an event per class, then stopped with SIGTERM."""
    from streamer.config import SmoothingConfig
    from streamer.events import EventTracker
    from streamer.journal import Journal
    from streamer.types import ClassScore, WindowResult

    work = tmp_path_factory.mktemp("stopped")
    db_path = work / "data" / "journal.sqlite3"
    # What a SIGKILL mid-event leaves behind: a start without an end in the journal.
    tracker = EventTracker(SmoothingConfig(on_threshold=0.5, off_threshold=0.2, min_windows=1),
                           ["fight", "collapse"])
    now = time.time()
    window = WindowResult("cam1", {"fight": ClassScore("fight", 0.9, (0.1, 0.1, 0.5, 0.5)),
                                   "collapse": ClassScore("collapse", 0.0, (0, 0, 1, 1))},
                          (96, 72), now - 1, now, time.monotonic(), 100)
    with Journal(db_path) as journal:
        orphan = journal.append(tracker.observe(window)[0])

    cfg = base_config(work / "data", tiny_checkpoint,
                      {"cam1": SYNTH.format(kind="fight", seed=4)}, **DEPLOYED)
    d = DaemonProcess(work, cfg)
    sub = subscriber(cfg["alerts"]["endpoint"], b"alert.")   # connects once the daemon binds
    d.start()
    run: dict = {"orphan": orphan, "starts": {}, "ends": {}}
    try:
        d.wait_ready()
        run["rows_at_ready"] = _journal_rows(db_path)        # orphans are closed before READY
        deadline = time.monotonic() + 15
        while len(run["starts"]) < 2 and time.monotonic() < deadline:   # one per class
            got = recv_json(sub, timeout=0.5)
            if got and got[1]["type"] == "start":
                run["starts"][got[1]["event_id"]] = got[1]
        assert len(run["starts"]) == 2, f"expected a start per class; log:\n{d.log()}"
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        run["code"] = d.proc.wait(timeout=10)
        run["stop_s"] = time.monotonic() - t0
        run["stopping"] = d.notify.wait_for(b"STOPPING=1", timeout=1)
        while True:
            got = recv_json(sub, timeout=0.5)
            if got is None:
                break
            if got[1]["type"] == "end":
                run["ends"][got[1]["event_id"]] = got[1]
        run["rows"] = _journal_rows(db_path)
        run["log"] = d.log()
        yield run
    finally:
        sub.close()
        d.close()


def _journal_rows(db_path: Path) -> list[dict]:
    db = sqlite3.connect(str(db_path))
    try:
        return [json.loads(b) for (b,) in db.execute("SELECT body FROM alerts ORDER BY seq")]
    finally:
        db.close()


def test_restart_ends_events_an_unclean_stop_left_open_with_reason_restart(stopped_daemon):
    orphan = stopped_daemon["orphan"]
    rows = stopped_daemon["rows_at_ready"]
    assert [(m["type"], m["event_id"]) for m in rows] == [
        ("start", orphan["event_id"]), ("end", orphan["event_id"])]
    assert rows[1]["reason"] == "restart" and rows[1]["seq"] == orphan["seq"] + 1
    # seq resumes from the journal: the new life's messages come after, never repeating.
    seqs = [m["seq"] for m in stopped_daemon["rows"]]
    assert seqs == sorted(set(seqs)) and seqs[:2] == [orphan["seq"], orphan["seq"] + 1]
    assert orphan["event_id"] not in stopped_daemon["starts"]


def test_sigterm_ends_open_events_with_reason_shutdown_and_exits_zero(stopped_daemon):
    run = stopped_daemon
    assert run["code"] == 0, run["log"]
    assert run["stop_s"] < 5.0, f"took {run['stop_s']:.1f} s to stop"
    assert run["stopping"], "no STOPPING=1"
    assert set(run["ends"]) == set(run["starts"])
    assert {m["reason"] for m in run["ends"].values()} == {"shutdown"}
    assert min(m["seq"] for m in run["ends"].values()) > max(m["seq"] for m in run["starts"].values())
    # Every message on the wire is in the journal (committed before it was published); the
    # publisher stamps the daemon's instance name on the way out, the journal stays as written.
    journal = {m["seq"]: m for m in run["rows"]}
    for m in [*run["starts"].values(), *run["ends"].values()]:
        assert m["instance"] == default_instance()
        assert journal[m["seq"]] == {k: v for k, v in m.items() if k != "instance"}
    # One log line per event start and end, no URL credentials anywhere.
    for event_id in run["starts"]:
        assert sum(event_id in line and ("started" in line or "ended" in line)
                   for line in run["log"].splitlines()) == 2


# ----------------------------------------------------------------------------- refused configs
@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["cameras"].append(dict(c["cameras"][0])), "cameras[1].name"),
    (lambda c: c["model"].update(max_batch="eight"), "model.max_batch"),
    (lambda c: c["model"].update(checkpoint="/nonexistent/best.pt"), "model.checkpoint"),
    (lambda c: c["cameras"][0].update(url="rtsp://admin:hunter2@192.0.2.1/x", stridee=3),
     "cameras[0].stridee"),
])
def test_invalid_config_exits_nonzero_naming_the_key_before_any_camera_opens(
        tiny_checkpoint, tmp_path, mutate, key):
    cfg = base_config(tmp_path / "data", tiny_checkpoint,
                      {"cam1": SYNTH.format(kind="fight", seed=1)}, **DEPLOYED)
    mutate(cfg)
    d = DaemonProcess(tmp_path, cfg).start()
    try:
        code = d.proc.wait(timeout=20)
        log = d.log()
        assert code != 0
        assert key in log, log
        assert "hunter2" not in log
        assert "started" not in log and "receiving frames" not in log
        assert not d.notify.wait_for(b"READY=1", timeout=0.1)
        assert not (tmp_path / "data").exists()   # nothing was created either
    finally:
        d.close()

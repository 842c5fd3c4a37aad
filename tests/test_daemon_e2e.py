"""End to end: `vigil serve` with a checkpoint trained in this test session on synthetic data, and
with a real RTSP server that is killed and restarted.

* A video of a fight followed by calm, streamed by a real GStreamer RTSP server
  (scripts/rtsp_test_server.py): the daemon must publish a fight `start`, then an `end` with
  reason `cleared`, received on a real ZeroMQ subscriber, with the evidence files on disk.
* A live synthetic fight camera: SIGTERM while its event is open gives an `end` with reason
  `shutdown`, and exit code 0.
* A real GStreamer RTSP server (scripts/rtsp_test_server.py) killed and restarted:
  `vigil_camera_up` goes to 0 and back to 1, the open events of that camera end with
  `camera_lost`, and the other camera keeps delivering frames throughout.
"""
from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("zmq")

from vigil_tools.harness import (DaemonProcess, RtspServer, base_config,  # noqa: E402
                                    free_port, rtsp_server_missing, wait_until)
from tests.conftest import recv_json, subscriber  # noqa: E402

pytestmark = pytest.mark.integration

FPS = 25
SIZE = (160, 120)        # what the trained run's synthetic videos use
FIGHT_S, CALM_S = 6.0, 10.0


def calm_scene(frames: int):
    """A scene that is clearly not a fight: the "none" variant with a person lying still.

    The other "none" variants are hard negatives on purpose (a pair standing as close as fighters,
    walkers): a model trained for a few minutes on a CPU confuses them with fights, and this test
    is about the daemon, not about how well the session's model learned (the learning test is).
    """
    from train.synth import Scene

    for seed in range(100, 300):
        scene = Scene("none", seed, *SIZE, FPS, frames)
        if scene.variant == "lying":
            return scene
    raise AssertionError("no 'lying' scene among 200 seeds")


def write_fight_then_calm(path: Path) -> Path:
    """An MJPG AVI (what this GStreamer's RTSP server can stream without libav): FIGHT_S seconds
    of a synthetic fight, then CALM_S seconds of a calm scene."""
    import cv2

    from train.synth import Scene

    fight = Scene("fight", 101, *SIZE, FPS, int(FIGHT_S * FPS))
    calm = calm_scene(int(CALM_S * FPS))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    try:
        for scene in (fight, calm):
            for i in range(scene.frames):
                writer.write(scene.render(i))
    finally:
        writer.release()
    return path


@pytest.fixture(scope="module")
def trained_run(trained_checkpoint, tmp_path_factory) -> dict:
    """One daemon life with the trained model: collect alerts until the scripted camera's fight
    started and was cleared and the live camera's fight started, then SIGTERM."""
    missing = rtsp_server_missing()
    if missing:
        pytest.skip(f"GStreamer RTSP server unavailable: {missing}")
    work = tmp_path_factory.mktemp("e2e")
    video = write_fight_then_calm(work / "fight_then_calm.avi")
    server = RtspServer(free_port(), "scripted", str(video)).start()
    w, h = SIZE
    cfg = base_config(work / "data", trained_checkpoint.checkpoint, {
        "scripted": server.url,
        "live": f"synth://fight?seed=3&width={w}&height={h}&fps={FPS}&frames=48",
    }, stride=8, fast_timeouts=False)
    cfg["smoothing"] = {"on_threshold": 0.6, "off_threshold": 0.35, "min_windows": 2,
                        "cooldown_s": 2.0}
    cfg["model"]["threads"] = None
    cfg["evidence"]["pre_roll_s"] = 1.0
    d = DaemonProcess(work, cfg)
    sub = subscriber(cfg["alerts"]["endpoint"], b"alert.")
    d.start()
    run: dict = {"messages": [], "data_dir": work / "data"}

    def have(camera: str, kind: str, reason=None) -> bool:
        return any(m["camera"] == camera and m["label"] == "fight" and m["type"] == kind
                   and (reason is None or m["reason"] == reason) for m in run["messages"])

    try:
        d.wait_ready(timeout=40)
        deadline = time.monotonic() + 2 * (FIGHT_S + CALM_S) + 10
        while time.monotonic() < deadline and not (
                have("scripted", "end", "cleared") and have("live", "start")):
            got = recv_json(sub, timeout=0.5)
            if got:
                run["messages"].append(got[1])
        run["metrics"] = d.metrics()
        d.signal(signal.SIGTERM)
        run["code"] = d.proc.wait(timeout=15)
        while (got := recv_json(sub, timeout=0.5)) is not None:
            run["messages"].append(got[1])
        run["log"] = d.log()
        yield run
    finally:
        sub.close()
        d.close()
        server.stop()


def _events(messages: list[dict], camera: str, label: str = "fight") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in messages:
        if m["camera"] == camera and m["label"] == label:
            out.setdefault(m["event_id"], []).append(m)
    return out


def test_trained_daemon_publishes_a_fight_start_then_a_cleared_end(trained_run):
    events = _events(trained_run["messages"], "scripted")
    cleared = [msgs for msgs in events.values()
               if msgs[0]["type"] == "start" and msgs[-1]["type"] == "end"
               and msgs[-1]["reason"] == "cleared"]
    assert cleared, (f"no fight start + cleared end on the scripted camera; got "
                     f"{[(m['camera'], m['label'], m['type'], m['reason']) for m in trained_run['messages']]}"
                     f"\nlog:\n{trained_run['log'][-4000:]}")
    msgs = cleared[0]
    start, end = msgs[0], msgs[-1]
    assert [m["seq"] for m in msgs] == sorted(m["seq"] for m in msgs)
    assert all(m["type"] == "update" for m in msgs[1:-1])
    assert start["score"] >= 0.6 and 0 <= start["box"][0] < start["box"][2] <= 1
    assert start["frame_size"] == list(SIZE)
    # Evidence: the snapshot at the start, the clip at the end, both written under data_dir.
    data_dir = trained_run["data_dir"]
    assert start["snapshot"] and (data_dir / start["snapshot"]).stat().st_size > 0
    assert end["clip"] and (data_dir / end["clip"]).stat().st_size > 0


def test_alert_latency_is_measured_and_within_a_few_seconds(trained_run):
    starts = [m for m in trained_run["messages"] if m["type"] == "start"]
    assert starts and all(m["latency_s"] is not None for m in starts)
    # The promise is "a second or two"; a loaded 2-core CI machine gets some slack.
    assert max(m["latency_s"] for m in starts) < 5.0
    count = trained_run["metrics"].get(("vigil_alert_latency_seconds_count", ()))
    assert count is not None and count >= 1


def test_sigterm_mid_event_ends_it_with_reason_shutdown_and_exits_zero(trained_run):
    assert trained_run["code"] == 0, trained_run["log"][-4000:]
    live = _events(trained_run["messages"], "live")
    started = [msgs for msgs in live.values() if msgs[0]["type"] == "start"]
    assert started, "the live fight camera never started an event"
    for msgs in started:
        assert msgs[-1]["type"] == "end"
    assert any(msgs[-1]["reason"] == "shutdown" for msgs in started)
    # Every event of the run, on every camera, was ended.
    for camera in ("scripted", "live"):
        for label in ("fight", "collapse"):
            for msgs in _events(trained_run["messages"], camera, label).values():
                assert msgs[-1]["type"] == "end", msgs


# ----------------------------------------------------------------------------- RTSP
def test_rtsp_server_killed_and_restarted_takes_only_its_camera_down_and_up(
        rtsp_server, tiny_checkpoint, tmp_path):
    server = rtsp_server()
    cfg = base_config(tmp_path / "data", tiny_checkpoint, {
        "rtspcam": server.url,
        "synthcam": "synth://none?seed=2&width=96&height=72&fps=15&frames=45",
    }, stride=8, fast_timeouts=False)
    cfg["defaults"].update(open_timeout_s=3, read_timeout_s=2, stall_timeout_s=2,
                           backoff_initial_s=0.2, backoff_max_s=1)
    d = DaemonProcess(tmp_path, cfg).start()
    try:
        d.wait_ready()

        def value(name: str, camera: str):
            return d.value(d.metrics(), name, camera=camera)

        def up(camera: str) -> bool:
            return value("vigil_camera_up", camera) == 1.0

        assert wait_until(lambda: up("rtspcam") and up("synthcam"), timeout=20), d.log()
        # Events open on the RTSP camera (thresholds are low) so its loss must end them.
        db_path = tmp_path / "data" / "journal.sqlite3"

        def rows() -> list[dict]:
            db = sqlite3.connect(str(db_path))
            try:
                return [json.loads(b) for (b,) in db.execute("SELECT body FROM alerts")]
            finally:
                db.close()

        assert wait_until(lambda: any(m["camera"] == "rtspcam" and m["type"] == "start"
                                      for m in rows()), timeout=15), d.log()
        synth_frames = value("vigil_frames_total", "synthcam")
        reconnects = value("vigil_camera_reconnects_total", "rtspcam")

        server.stop()                                   # SIGKILL, as a crash would
        assert wait_until(lambda: value("vigil_camera_up", "rtspcam") == 0.0, timeout=15), d.log()
        assert up("synthcam")
        assert value("vigil_frames_total", "synthcam") > synth_frames
        assert wait_until(lambda: any(m["camera"] == "rtspcam" and m["type"] == "end"
                                      and m["reason"] == "camera_lost" for m in rows()),
                          timeout=5), d.log()

        server.start()                                  # same port, same path
        assert wait_until(lambda: up("rtspcam"), timeout=30), d.log()
        assert value("vigil_camera_reconnects_total", "rtspcam") > reconnects
        assert up("synthcam")

        d.signal(signal.SIGTERM)
        assert d.proc.wait(timeout=10) == 0
    finally:
        d.close()

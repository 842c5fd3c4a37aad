"""Fault injection against the real daemon (`vigil serve` as a child process) on loopback.

Every fault of the reliability issue is injected with real parts: GStreamer's RTSP server
(killed, frozen with SIGSTOP), plain TCP servers that accept and say nothing or send garbage, an
HTTP MJPEG stream whose resolution changes, truncated and corrupt video files, a missing webcam,
ZeroMQ subscribers that are absent or stop reading, SIGKILL of the daemon, a full evidence
filesystem (a 256 KiB tmpfs), a hung or out-of-memory model call (patched into the daemon process
by a prelude: no test hook in the product), and bad configs on SIGHUP. Issue 12's replay and
journal faults follow at the end: hostile and oversized replay requests, a failing or dead
replay thread, the journal's own disk full (a tmpfs on `data_dir`), the journal deleted while
running, emptied while stopped, or damaged inside its pages.

The model is a tiny random-weight checkpoint and the smoothing thresholds are so low that every
camera opens an event at its first window and keeps it open: that makes "an open event on the
camera that fails" deterministic (the trained checkpoint would need a fight video over RTSP and
minutes of training for the same effect). Each test prints what it measured (`-s` shows it);
RELIABILITY.md quotes those numbers.

Timeouts in the configs are short (open 2 s, read 1.5 s, stall 3 s, backoff 0.3..2 s) so faults
play out in seconds.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

zmq = pytest.importorskip("zmq")

from vigil_tools.harness import (DaemonProcess, RtspServer, base_config,  # noqa: E402
                                    free_port, wait_until)
from tests.conftest import subscriber  # noqa: E402
from tests.test_journal_writer import fill  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SYNTH = "synth://{kind}?seed={seed}&width=96&height=72&fps=15&frames=45"
STRIDE = 4
STALL_S = 3.0
READ_S = 1.5
OPEN_S = 2.0
BACKOFF_MAX_S = 2.0


def report(name: str, **values) -> None:
    """One greppable line per measurement (`pytest -s tests/test_faults.py | grep FAULT`)."""
    print(f"FAULT {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


# ----------------------------------------------------------------------------- fake servers
def loopback_listener(backlog: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (a free port) whose accept() times out after 0.2 s,
    so the fake servers' loops notice a stop request."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    sock.settimeout(0.2)
    return sock


class TcpServer(threading.Thread):
    """A loopback TCP server: `silent` accepts and never answers; `garbage` answers every
    connection with random bytes, then keeps sending more."""

    def __init__(self, mode: str) -> None:
        super().__init__(daemon=True, name=f"fake-{mode}")
        self.mode = mode
        self.sock = loopback_listener(backlog=16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._conns: list[socket.socket] = []
        self._halt = threading.Event()
        self._rng = random.Random(0)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.setblocking(False)
                self.connections += 1
                self._conns.append(conn)
            except socket.timeout:
                pass
            except OSError:
                return
            if self.mode == "garbage":
                for conn in list(self._conns):
                    try:
                        conn.send(self._rng.randbytes(512))
                    except OSError:
                        self._conns.remove(conn)
                        conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(2)
        for conn in self._conns:
            conn.close()
        self.sock.close()


class MjpegServer(threading.Thread):
    """HTTP multipart MJPEG at 15 fps whose frames shrink from 160x120 to 96x72 after
    `switch_after_s` (per connection): a stream whose resolution changes mid-way."""

    def __init__(self, switch_after_s: float = 4.0) -> None:
        super().__init__(daemon=True, name="fake-mjpeg")
        import cv2
        import numpy as np

        self.sock = loopback_listener(backlog=8)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/video.mjpg"
        self.switch_after_s = switch_after_s
        frames = []
        for w, h in ((160, 120), (96, 72)):
            img = np.zeros((h, w, 3), np.uint8)
            cv2.circle(img, (w // 2, h // 2), h // 3, (0, 200, 255), -1)
            frames.append(cv2.imencode(".jpg", img)[1].tobytes())
        self.frames = frames
        self._halt = threading.Event()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(2)
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; "
                         b"boundary=frame\r\n\r\n")
            t0 = time.monotonic()
            while not self._halt.is_set():
                jpg = self.frames[0 if time.monotonic() - t0 < self.switch_after_s else 1]
                conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                             + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n")
                time.sleep(1 / 15)
        except OSError:
            pass
        finally:
            conn.close()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        self._halt.set()
        self.join(2)
        self.sock.close()


def drain(sock, into: list, timeout: float = 0.0) -> list:
    """Append every JSON message waiting on `sock` (waiting up to `timeout` for the first)."""
    if sock.poll(int(timeout * 1000)):
        while True:
            try:
                _, body = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            into.append(json.loads(body))
    return into


def journal_rows(data_dir: Path) -> list[dict]:
    db = sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        return [json.loads(b) for (b,) in db.execute("SELECT body FROM alerts ORDER BY seq")]
    finally:
        db.close()


class Counters:
    """A camera's counters between two scrapes."""

    def __init__(self, d: DaemonProcess, camera: str) -> None:
        self.d, self.camera = d, camera
        self.t0 = time.monotonic()
        self.first = self._read()

    def _read(self) -> dict[str, float]:
        s = self.d.metrics()
        return {k: self.d.value(s, f"vigil_{k}", camera=self.camera) or 0.0
                for k in ("frames_total", "windows_total", "windows_skipped_total")}

    def delta(self) -> dict[str, float]:
        now = self._read()
        out = {k: now[k] - self.first[k] for k in now}
        out["seconds"] = time.monotonic() - self.t0
        out["windows_per_s"] = out["windows_total"] / out["seconds"]
        # Windows a camera should have had: one per STRIDE frames (+-1 at the scrape edges).
        out["missed"] = max(0.0, out["frames_total"] // STRIDE - out["windows_total"] - 1)
        return out


def up(d: DaemonProcess, camera: str) -> Optional[float]:
    return d.value(d.metrics(), "vigil_camera_up", camera=camera)


def log_lines(d: DaemonProcess, camera: str, levels=("WARNING", "ERROR")) -> list[str]:
    return [line for line in d.log().splitlines()
            if f"camera {camera}:" in line and any(f" {lv} " in line for lv in levels)]


# ============================================================================ camera faults
@pytest.fixture(scope="class")
def fleet(tiny_checkpoint, tmp_path_factory, _rtsp_available):
    """One daemon watching a reference synthetic camera beside every kind of broken camera."""
    work = tmp_path_factory.mktemp("fleet")
    from train.synth import Scene, write_video
    good = work / "good.avi"
    write_video(good, Scene("fight", 5, width=96, height=72, fps=15, frames=60))
    truncated = work / "truncated.avi"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    corrupt = work / "corrupt.mp4"
    corrupt.write_bytes(random.Random(1).randbytes(40_000))

    servers = {"kill": RtspServer(free_port(), "kill").start(),
               "freeze": RtspServer(free_port(), "freeze").start()}
    silent, garbage, mjpeg = TcpServer("silent"), TcpServer("garbage"), MjpegServer()
    for t in (silent, garbage, mjpeg):
        t.start()
    cams = {"ref": SYNTH.format(kind="none", seed=1),
            "rtspkill": servers["kill"].url, "rtspfreeze": servers["freeze"].url,
            "silent": f"rtsp://127.0.0.1:{silent.port}/x",
            "garbage": f"rtsp://127.0.0.1:{garbage.port}/x",
            "mjpeg": mjpeg.url, "truncated": str(truncated), "corrupt": str(corrupt),
            "webcam": "/dev/video99"}
    cfg = base_config(work / "data", tiny_checkpoint, cams)
    cfg["defaults"]["stride"] = STRIDE
    d = DaemonProcess(work, cfg, watchdog_usec=2_000_000).start()   # pings every 1 s
    sub = None
    try:
        d.wait_ready(90)
        sub = subscriber(cfg["alerts"]["endpoint"], b"alert.")
        d.servers, d.silent, d.garbage, d.mjpeg, d.sub = servers, silent, garbage, mjpeg, sub
        d.started_at = time.monotonic()
        yield d
    finally:
        if sub is not None:
            sub.close()
        code = d.stop(timeout=20)
        report("fleet-shutdown", exit_code=code)
        d.close()
        for s in servers.values():
            s.stop()
        for t in (silent, garbage, mjpeg):
            t.stop()


class TestCameraFaults:
    def test_broken_sources_are_marked_down_retried_and_logged_once_per_episode(self, fleet):
        d = fleet
        broken = ("silent", "garbage", "corrupt", "webcam")
        # Long enough for several reconnect attempts of each (open 2 s + backoff <= 2 s).
        wait_until(lambda: all((d.value(d.metrics(), "vigil_camera_reconnects_total",
                                        camera=c) or 0) >= 3 for c in broken), timeout=40,
                   interval=1)
        scrape = d.metrics()
        assert d.alive()
        for cam in broken:
            attempts = d.value(scrape, "vigil_camera_reconnects_total", camera=cam)
            lines = log_lines(d, cam)
            report(f"broken-source-{cam}", camera_up=d.value(scrape, "vigil_camera_up",
                                                             camera=cam),
                   reconnects=attempts, warning_lines=len(lines))
            assert d.value(scrape, "vigil_camera_up", camera=cam) == 0.0
            assert attempts >= 3, d.log()[-3000:]
            # One line for the episode, however many attempts failed.
            assert 1 <= len(lines) <= 2, lines
            assert "Traceback" not in d.log()
        assert d.silent.connections >= 2 and d.garbage.connections >= 2

    def test_a_silent_server_times_out_within_the_open_bound_and_no_thread_blocks(self, fleet):
        d = fleet
        first = d.silent.connections
        t0 = time.monotonic()
        assert wait_until(lambda: d.silent.connections >= first + 2, timeout=4 * (OPEN_S + BACKOFF_MAX_S))
        per_attempt = (time.monotonic() - t0) / 2
        report("silent-server", seconds_per_attempt=round(per_attempt, 2),
               bound=OPEN_S + BACKOFF_MAX_S)
        assert per_attempt <= OPEN_S + BACKOFF_MAX_S + 1.0
        # Every capture thread keeps returning from native code: the watchdog pings go on.
        pings = d.notify.times(b"WATCHDOG=1")
        assert pings and time.monotonic() - pings[-1] < 3.0
        assert "stuck in native code" not in d.log()

    def test_truncated_file_loops_without_error_lines(self, fleet):
        d = fleet
        c = Counters(d, "truncated")
        time.sleep(3)
        delta = c.delta()
        # Each loop reopens the file, and FFmpeg opens queue behind the dead cameras' open
        # timeouts (one process-wide lock in OpenCV): a reopen that waits past the stall timeout
        # shows as "lost" for a moment. Reported, not asserted (see RELIABILITY.md).
        lost = d.log().count("camera truncated lost with open events")
        report("truncated-file", frames=delta["frames_total"], windows=delta["windows_total"],
               warning_lines=len(log_lines(d, "truncated")), lost_at_loop_reopen=lost)
        assert delta["frames_total"] > 0 and delta["windows_total"] > 0
        assert len(log_lines(d, "truncated")) <= 1

    def test_resolution_change_mid_stream_keeps_frames_flowing_without_error_lines(self, fleet):
        """The MJPEG stream shrinks from 160x120 to 96x72 after 4 s. OpenCV's FFmpeg backend
        keeps converting to the size the stream opened with (measured: every frame stays
        160x120), so the daemon sees no change: frames must simply keep coming, with no error.
        A change the daemon does see (at a reconnect) is in the RTSP kill/restart test."""
        d = fleet
        assert wait_until(lambda: up(d, "mjpeg") == 1.0, timeout=20), d.log()[-3000:]
        time.sleep(max(0.0, d.started_at + d.mjpeg.switch_after_s + 2 - time.monotonic()))
        c = Counters(d, "mjpeg")
        time.sleep(3)
        delta = c.delta()
        report("resolution-change-mjpeg", frames_after_switch=delta["frames_total"],
               windows_after_switch=delta["windows_total"],
               warning_lines=len(log_lines(d, "mjpeg")), up=up(d, "mjpeg"))
        assert delta["frames_total"] >= 20 and delta["windows_total"] >= 3
        assert log_lines(d, "mjpeg") == []
        assert d.alive()

    def test_rtsp_server_killed_and_restarted_ends_the_event_and_recovers(self, fleet):
        d = fleet
        cam, server = "rtspkill", d.servers["kill"]
        msgs: list[dict] = []
        assert wait_until(lambda: any(m["camera"] == cam and m["type"] == "start"
                                      for m in drain(d.sub, msgs, 0.2)), timeout=20), \
            "no event opened on the RTSP camera"
        ref = Counters(d, "ref")
        t_kill = time.monotonic()
        server.stop()
        assert wait_until(lambda: up(d, cam) == 0.0, timeout=STALL_S + 5, interval=0.1)
        t_down = time.monotonic() - t_kill
        assert wait_until(lambda: any(m["camera"] == cam and m["type"] == "end"
                                      for m in drain(d.sub, msgs, 0.2)), timeout=5)
        ends = [m for m in msgs if m["camera"] == cam and m["type"] == "end"]
        time.sleep(max(0.0, 10.0 - (time.monotonic() - t_kill)))
        t_restart = time.monotonic()
        # Back at a quarter of the pixels: the reconnect also brings a resolution change.
        server.width, server.height = 160, 120
        server.start()
        assert wait_until(lambda: up(d, cam) == 1.0, timeout=20, interval=0.2), d.log()[-3000:]
        t_up = time.monotonic() - t_restart
        frames = Counters(d, cam)
        assert wait_until(lambda: frames.delta()["frames_total"] > 5, timeout=5)
        refd = ref.delta()
        changed = [ln for ln in d.log().splitlines()
                   if f"camera {cam}: resolution changed from 320x240 to 160x120" in ln]
        report("rtsp-kill-restart", marked_down_s=round(t_down, 2),
               resolution_change_lines=len(changed),
               reconnected_after_restart_s=round(t_up, 2),
               end_reasons=sorted({m["reason"] for m in ends}),
               ref_windows_per_s=round(refd["windows_per_s"], 2),
               ref_skipped=refd["windows_skipped_total"], ref_missed=refd["missed"])
        assert t_down <= STALL_S + 0.6
        assert ends and {m["reason"] for m in ends} == {"camera_lost"}
        assert t_up <= BACKOFF_MAX_S + OPEN_S + 3.0
        assert len(changed) == 1
        assert refd["windows_skipped_total"] == 0 and refd["missed"] == 0

    def test_rtsp_server_frozen_then_resumed_times_out_and_recovers(self, fleet):
        d = fleet
        cam, server = "rtspfreeze", d.servers["freeze"]
        assert wait_until(lambda: up(d, cam) == 1.0, timeout=15)
        ref = Counters(d, "ref")
        t_stop = time.monotonic()
        server.pause()
        try:
            # A read blocks at most 3 read timeouts (OpenCV's retries); stalls show after STALL_S.
            bound = STALL_S + 3 * READ_S + 1.0
            assert wait_until(lambda: up(d, cam) == 0.0, timeout=bound + 5, interval=0.1)
            t_down = time.monotonic() - t_stop
            time.sleep(max(0.0, 8.0 - t_down))
            pings = d.notify.times(b"WATCHDOG=1")
        finally:
            server.resume()
        t_cont = time.monotonic()
        assert wait_until(lambda: up(d, cam) == 1.0, timeout=25, interval=0.2), d.log()[-3000:]
        t_up = time.monotonic() - t_cont
        refd = ref.delta()
        report("rtsp-sigstop-sigcont", marked_down_s=round(t_down, 2), bound_s=bound,
               recovered_after_sigcont_s=round(t_up, 2),
               watchdog_pings_while_frozen=sum(1 for t in pings if t > t_stop),
               ref_skipped=refd["windows_skipped_total"], ref_missed=refd["missed"])
        assert t_down <= bound
        assert sum(1 for t in pings if t > t_stop) >= 3      # no thread blocked forever
        assert refd["windows_skipped_total"] == 0 and refd["missed"] == 0

    def test_the_reference_camera_never_missed_a_window_and_the_daemon_never_crashed(self,
                                                                                     fleet):
        d = fleet
        scrape = d.metrics()
        frames = d.value(scrape, "vigil_frames_total", camera="ref")
        windows = d.value(scrape, "vigil_windows_total", camera="ref")
        skipped = d.value(scrape, "vigil_windows_skipped_total", camera="ref")
        report("fleet-reference", frames=frames, windows=windows, skipped=skipped,
               uptime_s=round(time.monotonic() - d.started_at, 1))
        assert d.alive() and skipped == 0
        assert "Traceback" not in d.log()


# ============================================================================ subscribers
@pytest.fixture(scope="class")
def stream(tiny_checkpoint, tmp_path_factory):
    """A daemon publishing an `update` per window per class: a steady stream of alerts."""
    work = tmp_path_factory.mktemp("stream")
    cfg = base_config(work / "data", tiny_checkpoint,
                      {"a": SYNTH.format(kind="fight", seed=1),
                       "b": SYNTH.format(kind="collapse", seed=2),
                       "c": SYNTH.format(kind="none", seed=3)}, updates=True)
    cfg["defaults"]["stride"] = 2
    cfg["alerts"]["sndhwm"] = 4
    cfg["evidence"]["enabled"] = False
    d = DaemonProcess(work, cfg, prelude=SMALL_SNDBUF).start()
    try:
        d.wait_ready(90)
        d.data_dir = work / "data"
        yield d
    finally:
        report("stream-shutdown", exit_code=d.stop(timeout=20))
        d.close()


# Loopback TCP autotunes its send buffer up to 4 MiB: a stuck subscriber would take minutes of
# alerts to reach the high-water mark. A 4 KiB kernel send buffer on the PUB socket (what a slow
# WAN link amounts to) makes it seconds; everything else is the product as shipped.
SMALL_SNDBUF = r'''
import zmq
import streamer.publisher as _p

_orig_socket = _p.AlertPublisher._socket

def _socket(self, kind, keys, heartbeat_ivl_s):
    sock = _orig_socket(self, kind, keys, heartbeat_ivl_s)
    if kind == zmq.XPUB:
        sock.setsockopt(zmq.SNDBUF, 4096)
    return sock

_p.AlertPublisher._socket = _socket
'''


def _windows_rate(d: DaemonProcess, seconds: float) -> tuple[float, float]:
    s0 = d.metrics()
    t0 = time.monotonic()
    time.sleep(seconds)
    s1 = d.metrics()
    dt = time.monotonic() - t0
    rate = (d.total(s1, "vigil_windows_total") - d.total(s0, "vigil_windows_total")) / dt
    skipped = (d.total(s1, "vigil_windows_skipped_total")
               - d.total(s0, "vigil_windows_skipped_total"))
    return rate, skipped


class TestSubscribers:
    def test_no_subscriber_and_a_stuck_subscriber_do_not_slow_the_pipeline(self, stream):
        d = stream
        time.sleep(2)                                          # past the start-up transient
        rate_none, skipped_none = _windows_rate(d, 6)
        stuck = zmq.Context.instance().socket(zmq.SUB)
        stuck.setsockopt(zmq.LINGER, 0)
        stuck.setsockopt(zmq.RCVHWM, 1)
        stuck.setsockopt(zmq.RCVBUF, 2048)
        stuck.setsockopt(zmq.SUBSCRIBE, b"")
        stuck.connect(d.config["alerts"]["endpoint"])         # ...and never reads
        try:
            dropped0 = d.total(d.metrics(), "vigil_publish_dropped_total")
            wait_until(lambda: d.total(d.metrics(), "vigil_publish_dropped_total") > dropped0,
                       timeout=30, interval=1)
            rate_stuck, skipped_stuck = _windows_rate(d, 6)
            dropped = d.total(d.metrics(), "vigil_publish_dropped_total") - dropped0
        finally:
            stuck.close()
        full_lines = d.log().count("alert socket full")
        report("slow-subscriber", windows_per_s_no_subscriber=round(rate_none, 2),
               windows_per_s_stuck_subscriber=round(rate_stuck, 2), publish_dropped=dropped,
               skipped=skipped_none + skipped_stuck, socket_full_log_lines=full_lines)
        assert dropped > 0, "the stuck subscriber never filled the high-water mark"
        assert rate_stuck >= 0.85 * rate_none
        assert skipped_none == 0 and skipped_stuck == 0
        # One line per episode of refusals, not one per refused message.
        assert full_lines <= 3, f"{full_lines} 'alert socket full' lines for {dropped} refusals"

    def test_journal_holds_every_alert_and_a_late_subscriber_replays_with_no_gap(self, stream):
        d = stream
        rows = journal_rows(d.data_dir)
        seqs = [m["seq"] for m in rows]
        assert seqs == list(range(1, len(seqs) + 1))
        scrape = d.metrics()
        sent = d.total(scrape, "vigil_alerts_total")
        assert len(rows) >= sent                      # sent or refused, every one journalled
        n = len(rows)
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "streamer.cli", "alerts", d.config["alerts"]["endpoint"],
             "--replay", d.config["alerts"]["replay_endpoint"], "--since", "0", "--count",
             str(n), "--timeout", "30", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = [json.loads(line)["seq"] for line in proc.stdout.splitlines()]
        report("late-subscriber", journal_rows=n, published=sent, replayed=len(got),
               gaps=proc.stderr.count("gap:"), seconds=round(took, 2))
        assert got == list(range(1, n + 1))
        assert "gap:" not in proc.stderr

    def test_bad_configs_on_sighup_keep_the_running_config_and_drop_nothing(self, stream):
        d = stream
        good = d.config
        sub_msgs: list[dict] = []
        sub = subscriber(good["alerts"]["endpoint"], b"alert.")
        bad_unknown = json.loads(json.dumps(good))
        bad_unknown["cameras"][0]["stridee"] = 3
        bad_dup = json.loads(json.dumps(good))
        bad_dup["cameras"].append(dict(bad_dup["cameras"][0]))
        variants = {
            "unknown key": bad_unknown,
            "duplicate camera": bad_dup,
            "invalid YAML": "cameras: [\n",
            "python tag": "data_dir: !!python/object/apply:os.system ['true']\n",
            "empty file": "",
        }
        try:
            time.sleep(1)
            c = Counters(d, "a")
            kept = d.log().count("keeping the running config")
            for name, cfg in variants.items():
                d.write_config(cfg)
                d.signal(signal.SIGHUP)
                assert wait_until(lambda: d.log().count("keeping the running config") > kept,
                                  timeout=10), (name, d.log()[-2000:])
                kept += 1
                assert d.alive(), name
            delta = c.delta()
            drain(sub, sub_msgs, 0.5)
        finally:
            d.write_config(good)
            sub.close()
        reload_ends = [m for m in sub_msgs if m["type"] == "end"]
        report("sighup-bad-config", variants=len(variants), windows_during=delta["windows_total"],
               skipped=delta["windows_skipped_total"], ends_published=len(reload_ends))
        assert delta["windows_total"] > 0 and delta["windows_skipped_total"] == 0
        assert reload_ends == []
        assert "camera a: stopped" not in d.log()

    def test_a_camera_url_the_sources_refuse_on_sighup_keeps_the_running_config(self, stream):
        """`synth://bogus` passes the config schema but not `parse_source`: a reload must treat
        it like any other bad config, not crash the daemon."""
        d = stream
        bad = json.loads(json.dumps(d.config))
        bad["cameras"].append({"name": "bogus", "url": "synth://bogus"})
        kept = d.log().count("keeping the running config")
        try:
            d.write_config(bad)
            d.signal(signal.SIGHUP)
            wait_until(lambda: d.log().count("keeping the running config") > kept
                       or not d.alive(), timeout=10)
            alive = d.alive()
            report("sighup-bad-camera-url", daemon_alive=alive,
                   exit_code=None if alive else d.proc.returncode)
            assert alive, d.log()[-2000:]
            assert d.log().count("keeping the running config") > kept
        finally:
            d.write_config(d.config)


# ============================================================================ SIGKILL
def test_sigkill_mid_event_then_restart_keeps_the_journal_and_fills_the_gap(tiny_checkpoint,
                                                                              tmp_path):
    from streamer.subscriber import AlertSubscriber

    cfg = base_config(tmp_path / "data", tiny_checkpoint,
                      {"a": SYNTH.format(kind="fight", seed=1),
                       "b": SYNTH.format(kind="none", seed=2)}, updates=True)
    cfg["smoothing"]["update_interval_s"] = 0.5
    cfg["evidence"]["enabled"] = False
    d = DaemonProcess(tmp_path, cfg).start()
    sub = None
    try:
        d.wait_ready(90)
        sub = AlertSubscriber(cfg["alerts"]["endpoint"], cfg["alerts"]["replay_endpoint"],
                              since=0, heartbeat_timeout_s=3.0)
        got: list[dict] = []
        assert wait_until(lambda: (got.append(m) if (m := sub.poll(0.2)) else None,
                                   sum(x["type"] == "start" for x in got) >= 4)[1], timeout=20)
        before = journal_rows(tmp_path / "data")
        t_kill = time.monotonic()
        d.kill()                                              # mid-event: 4 events open
        rows_at_kill = journal_rows(tmp_path / "data")
        open_at_kill = {m["event_id"] for m in rows_at_kill if m["type"] == "start"} - \
                       {m["event_id"] for m in rows_at_kill if m["type"] == "end"}
        for _ in range(10):                                   # the subscriber stays connected
            if (m := sub.poll(0.1)) is not None:
                got.append(m)
        t_start = time.monotonic()
        d.start()
        d.wait_ready(90, after=t_start)
        t_ready = time.monotonic()
        restarted_s = t_ready - t_kill
        # Let the restarted daemon publish a while, then read everything it journalled.
        deadline = time.monotonic() + 30
        target = None
        while time.monotonic() < deadline:
            m = sub.poll(0.2)
            if m is not None:
                got.append(m)
            if target is None and time.monotonic() - t_ready > 3:
                target = journal_rows(tmp_path / "data")[-1]["seq"]
            if target is not None and got and got[-1]["seq"] >= target:
                break
        rows = journal_rows(tmp_path / "data")
        seqs = [m["seq"] for m in rows]
        restart_ends = [m for m in rows if m.get("reason") == "restart"]
        got_seqs = [m["seq"] for m in got]
        report("sigkill-restart", restart_to_ready_s=round(restarted_s, 2),
               seq_at_kill=rows_at_kill[-1]["seq"], open_at_kill=len(open_at_kill),
               restart_ends=len(restart_ends), journal_rows=len(rows),
               subscriber_received=len(got), subscriber_gaps=len(sub.gaps))
        assert seqs == list(range(1, len(seqs) + 1)), "lost or duplicated seq"
        assert rows[:len(rows_at_kill)] == rows_at_kill          # nothing rewritten
        assert len(before) <= len(rows_at_kill)
        assert {m["event_id"] for m in restart_ends} == open_at_kill
        assert min(m["seq"] for m in restart_ends) == rows_at_kill[-1]["seq"] + 1
        assert got_seqs == list(range(1, got_seqs[-1] + 1)) and target is not None
        assert got_seqs[-1] >= target and sub.gaps == []
        assert target > rows_at_kill[-1]["seq"] + len(restart_ends)   # new alerts after restart
    finally:
        if sub is not None:
            sub.close()
        d.close()


# ============================================================================ disk full
def _mount_tmpfs(path: Path, size: str) -> Optional[str]:
    """Mount a tmpfs of `size` at `path`; the reason it failed, or None."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return None if proc.returncode == 0 else f"mount failed: {proc.stderr.strip()}"


def test_evidence_disk_full_keeps_alerts_flowing_logs_once_and_recovers(tiny_checkpoint, tmp_path):
    data = tmp_path / "data"
    events = data / "events"
    why = _mount_tmpfs(events, "256k")
    if why:
        pytest.skip(f"evidence disk-full test: {why}")
    d = None
    try:
        filler = fill(events)                          # fill it up
        cfg = base_config(data, tiny_checkpoint, {"a": SYNTH.format(kind="fight", seed=1)})
        d = DaemonProcess(tmp_path / "work", cfg).start()
        d.wait_ready(90)
        sub = subscriber(cfg["alerts"]["endpoint"], b"alert.")
        msgs: list[dict] = []
        try:
            def add(name: str, seed: int) -> None:
                grown = json.loads(json.dumps(d.config if isinstance(d.config, dict) else cfg))
                grown["cameras"].append({"name": name, "url": SYNTH.format(kind="fight",
                                                                           seed=seed)})
                d.config = grown
                d.write_config(grown)
                d.signal(signal.SIGHUP)

            # Events already opened on camera a (2 classes): their snapshots failed.
            assert wait_until(lambda: "evidence: cannot write" in d.log(), timeout=20), \
                d.log()[-2000:]
            add("b", 2)                                 # more events, more failed writes
            assert wait_until(lambda: any(m["camera"] == "b" and m["type"] == "start"
                                          for m in drain(sub, msgs, 0.2)), timeout=20)
            time.sleep(1)
            scrape = d.metrics()
            failures = [ln for ln in d.log().splitlines() if "evidence: cannot write" in ln]
            errors_metric = d.total(scrape, "vigil_evidence_write_errors_total")
            rows = journal_rows(data)
            t_free = time.monotonic()
            filler.unlink()                             # space returns
            add("c", 3)
            assert wait_until(lambda: list(events.glob("c/*/*/start.jpg")), timeout=20), \
                d.log()[-2000:]
            recovered_s = time.monotonic() - t_free
            assert wait_until(lambda: any(m["camera"] == "c" and m["type"] == "start"
                                          for m in drain(sub, msgs, 0.2)), timeout=10)
        finally:
            sub.close()
        report("evidence-disk-full", failure_log_lines=len(failures),
               write_errors_metric=errors_metric, journal_rows=len(rows),
               starts_published=sum(m["type"] == "start" for m in msgs),
               recovered_s=round(recovered_s, 2), writing_again="writing again" in d.log())
        assert len(failures) == 1                       # one clear line for the episode
        # No alert names a snapshot that was never written (the disk was full for a and b).
        assert all(m["snapshot"] is None for m in msgs
                   if m["type"] == "start" and m["camera"] in ("a", "b"))
        named = [m["snapshot"] for m in msgs if m["type"] == "start" and m["snapshot"]]
        assert wait_until(lambda: all((data / rel).is_file() for rel in named), timeout=10), named
        assert "disk full" in failures[0] or "No space" in failures[0]
        assert {m["camera"] for m in msgs if m["type"] == "start"} >= {"b", "c"}
        assert "evidence: writing again" in d.log()
        assert d.alive()
        assert errors_metric >= 1, "no metric counts evidence write failures"
    finally:
        if d is not None:
            d.close()
        subprocess.run(["umount", "-l", str(events)], capture_output=True)


# ============================================================================ worker faults
INJECT = r'''
import logging, os, threading, time
import torch
import streamer.worker as _w

_orig = _w.InferenceWorker._forward
_state = {"t0": None, "ooms": 0}
_log = logging.getLogger("inject")

def _forward(self, clips):
    if _state["t0"] is None:
        _state["t0"] = time.monotonic()
    if time.monotonic() - _state["t0"] > float(os.environ.get("INJECT_HANG_AFTER_S", "inf")):
        _log.error("INJECTED HANG: the model call blocks forever")
        threading.Event().wait()          # a wedged device call: never returns
    if clips.shape[0] > 1 and _state["ooms"] < int(os.environ.get("INJECT_OOMS", "0")):
        _state["ooms"] += 1
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    return _orig(self, clips)

_w.InferenceWorker._forward = _forward
'''


def test_oom_splits_batches_and_a_hung_worker_stops_the_watchdog_pings(tiny_checkpoint, tmp_path):
    cams = {f"c{i}": SYNTH.format(kind="fight", seed=i) for i in range(4)}
    cfg = base_config(tmp_path / "data", tiny_checkpoint, cams)
    cfg["model"].update(max_batch=4, max_wait_ms=150)
    cfg["evidence"]["enabled"] = False
    d = DaemonProcess(tmp_path, cfg, watchdog_usec=1_000_000, prelude=INJECT,   # ping 0.5 s
                      env={"INJECT_OOMS": "2", "INJECT_HANG_AFTER_S": "12"}).start()
    try:
        d.wait_ready(90)
        assert wait_until(lambda: "out of device memory on a batch" in d.log(), timeout=15), \
            d.log()[-3000:]
        w0 = d.total(d.metrics(), "vigil_windows_total")
        assert wait_until(lambda: d.total(d.metrics(), "vigil_windows_total") > w0 + 8,
                          timeout=10)
        oom_lines = [ln for ln in d.log().splitlines() if "out of device memory" in ln]
        report("oom-injected", oom_log_lines=len(oom_lines), alive=d.alive())
        assert d.alive()

        assert wait_until(lambda: "INJECTED HANG" in d.log(), timeout=30)
        t_hang = time.monotonic()
        time.sleep(4.0)
        pings = d.notify.times(b"WATCHDOG=1")
        last_before = max(t for t in pings if t <= t_hang + 1.0)
        after = [t for t in pings if t > t_hang + 1.0]
        report("worker-hang", pings_before=len(pings) - len(after),
               pings_in_4s_after_hang=len(after), last_ping_after_hang_s=round(last_before - t_hang, 2),
               watchdog_interval_s=0.5)
        assert len(pings) - len(after) >= 4        # it was pinging before
        assert after == []                         # ... and stopped: systemd would restart it
        t_term = time.monotonic()
        code = d.stop(timeout=20)
        report("worker-hang-sigterm", exit_code=code, seconds=round(time.monotonic() - t_term, 2))
        assert code is not None and time.monotonic() - t_term < 15
    finally:
        d.close()


# ============================================================================ replay and journal
# Issue 12 ("Faults from the field"): hostile replay requests, the journal's own disk full, the
# journal lost, emptied or damaged. Each injected into the real `vigil serve`.
def replay(endpoint: str, body, timeout: float = 3.0) -> Optional[dict]:
    """One replay request on a fresh DEALER; the reply, or None if none came in `timeout`."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        data = body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()
        sock.send(data, copy=False)
        if not sock.poll(int(timeout * 1000)):
            return None
        return json.loads(sock.recv_multipart()[-1])
    finally:
        sock.close(linger=0)


def _journal_files(data_dir: Path) -> list[Path]:
    return [data_dir / f"journal.sqlite3{s}" for s in ("", "-wal", "-shm")]


def test_hostile_replay_requests_are_answered_and_a_huge_one_is_refused_unread(tiny_checkpoint,
                                                                               tmp_path):
    from vigil_tools.harness import sample_process

    cfg = base_config(tmp_path / "data", tiny_checkpoint, {"a": SYNTH.format(kind="fight",
                                                                                seed=1)})
    cfg["evidence"]["enabled"] = False
    d = DaemonProcess(tmp_path, cfg).start()
    ep = cfg["alerts"]["replay_endpoint"]
    try:
        d.wait_ready(90)
        assert wait_until(lambda: (replay(ep, {"since": 0}) or {}).get("alerts"), timeout=20)
        hostile = {"since 2**63": {"since": 2 ** 63}, "since 2**64+1": {"since": 2 ** 64 + 1},
                   "limit 2**63": {"since": 0, "limit": 2 ** 63},
                   "nested 2000 deep": b"[" * 2000 + b"]" * 2000,
                   "nested in an object": b'{"since": 0, "x": ' + b"[" * 1900 + b"]" * 1900 + b"}"}
        answers = {}
        for name, body in hostile.items():
            reply = replay(ep, body)
            answers[name] = reply.get("error") if reply else None
            after = replay(ep, {"since": 0, "limit": 1})        # still serving
            assert after is not None and after["alerts"], (name, d.log()[-2000:])
        rss0 = sample_process(d.pid).rss_bytes
        big = bytearray(150 * 1024 * 1024)                       # 150 MB, one frame
        big[0:1] = b"{"
        peak = [rss0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], sample_process(d.pid).rss_bytes)
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        big_reply = replay(ep, big, timeout=4.0)
        stop.set()
        watcher.join(2)
        del big
        growth_mib = (peak[0] - rss0) / 2 ** 20
        normal = replay(ep, {"since": 0, "limit": 1})
        report("replay-hostile", **{k.replace(" ", "_"): bool(v) for k, v in answers.items()},
               huge_request_reply=big_reply, huge_request_rss_growth_mib=round(growth_mib, 1),
               huge_request_s=round(time.monotonic() - t0, 2),
               answers_after=normal is not None, alive=d.alive())
        assert all(v and "bad replay request" in v for v in answers.values()), answers
        assert big_reply is None              # connection dropped by ZMQ_MAXMSGSIZE, unread
        assert growth_mib < 32, growth_mib    # before: +300 MiB (read whole, then parsed)
        assert normal is not None and normal["alerts"] and d.alive()
        assert "Traceback" not in d.log()
    finally:
        d.close()


INJECT_REPLAY = r'''
import streamer.publisher as _p

_real = _p.AlertPublisher._receive_request

def _receive(router):
    frames = _real(router)
    if frames and frames[-1] == b"INJECT-RAISE":
        raise RuntimeError("INJECTED: replay loop failure")
    if frames and frames[-1] == b"INJECT-EXIT":
        raise SystemExit("INJECTED: replay thread killed")
    return frames

_p.AlertPublisher._receive_request = staticmethod(_receive)
'''


def test_a_replay_server_failure_is_restarted_and_a_dead_one_withholds_the_watchdog(
        tiny_checkpoint, tmp_path):
    cfg = base_config(tmp_path / "data", tiny_checkpoint, {"a": SYNTH.format(kind="fight",
                                                                                seed=1)})
    cfg["evidence"]["enabled"] = False
    d = DaemonProcess(tmp_path, cfg, watchdog_usec=1_000_000, prelude=INJECT_REPLAY).start()
    ep = cfg["alerts"]["replay_endpoint"]
    try:
        d.wait_ready(90)
        assert replay(ep, {"since": 0}) is not None
        assert replay(ep, b"INJECT-RAISE", timeout=0.5) is None
        t0 = time.monotonic()
        assert wait_until(lambda: replay(ep, {"since": 0}, timeout=0.5) is not None, timeout=10)
        restarted_s = time.monotonic() - t0
        restarts = d.total(d.metrics(), "vigil_replay_restarts_total")
        assert "replay server failed; restarting" in d.log()
        time.sleep(2.5)                       # healthy: the watchdog pings go on meanwhile

        t_kill = time.monotonic()
        assert replay(ep, b"INJECT-EXIT", timeout=0.5) is None
        assert wait_until(lambda: "replay server thread ended" in d.log(), timeout=5)
        time.sleep(3.0)
        pings = d.notify.times(b"WATCHDOG=1")
        after = [t for t in pings if t > t_kill + 1.0]
        scrape = d.metrics()
        unhealthy = [ln for ln in d.log().splitlines() if "watchdog pings stop" in ln
                     and "replay" in ln]
        report("replay-dies", restarted_after_s=round(restarted_s, 2), restarts_metric=restarts,
               pings_before=len(pings) - len(after), pings_in_3s_after_death=len(after),
               replay_up=d.value(scrape, "vigil_replay_up"), unhealthy_log_lines=len(unhealthy),
               windows_still_counted=d.total(scrape, "vigil_windows_total") > 0)
        assert restarts == 1
        assert after == [] and len(pings) - len(after) >= 4
        assert d.value(scrape, "vigil_replay_up") == 0 and len(unhealthy) == 1
        assert d.alive()
    finally:
        d.close()


def _collect(sub, got: list[dict], seconds: float) -> None:
    """Append what `sub` delivers for `seconds` to `got`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if (m := sub.poll(0.1)) is not None:
            got.append(m)


def _daemon_on_a_small_journal_disk(tiny_checkpoint, tmp_path) -> tuple:
    """(data dir on a 4 MiB tmpfs, config, started DaemonProcess): two always-on cameras with an
    update every 0.5 s, no evidence. Skips when no tmpfs can be mounted (root only)."""
    data = tmp_path / "data"
    why = _mount_tmpfs(data, "4m")
    if why:
        pytest.skip(f"journal disk-full test: {why}")
    cfg = base_config(data, tiny_checkpoint, {"a": SYNTH.format(kind="fight", seed=1),
                                              "b": SYNTH.format(kind="fight", seed=2)},
                      updates=True)
    cfg["smoothing"]["update_interval_s"] = 0.5
    cfg["evidence"]["enabled"] = False
    return data, cfg, DaemonProcess(tmp_path / "work", cfg).start()


def test_journal_disk_full_degrades_never_blinds_and_start_up_on_it_reaches_ready(
        tiny_checkpoint, tmp_path):
    from streamer.subscriber import AlertSubscriber

    data, cfg, d = _daemon_on_a_small_journal_disk(tiny_checkpoint, tmp_path)
    sub = None
    got: list[dict] = []

    def pump(seconds: float) -> None:
        _collect(sub, got, seconds)

    def journal_errors() -> list[str]:
        return [ln for ln in d.log().splitlines() if " ERROR " in ln and "journal:" in ln]

    try:
        d.wait_ready(90)
        sub = AlertSubscriber(cfg["alerts"]["endpoint"], cfg["alerts"]["replay_endpoint"],
                              since=0, heartbeat_timeout_s=3.0)
        pump(3)
        filler = fill(data)
        t_full = time.monotonic()
        assert wait_until(lambda: journal_errors(), timeout=15), d.log()[-3000:]
        seq_at_full = journal_rows(data)[-1]["seq"]
        pump(4)
        scrape = d.metrics()
        held = d.value(scrape, "vigil_journal_held_alerts")
        writable = d.value(scrape, "vigil_journal_writable")
        hb = sub.last_heartbeat or {}
        live_while_full = [m["seq"] for m in got if m["seq"] > seq_at_full]
        t_free = time.monotonic()
        filler.unlink()
        assert wait_until(lambda: d.value(d.metrics(), "vigil_journal_held_alerts") == 0,
                          timeout=15), d.log()[-3000:]
        caught_up_s = time.monotonic() - t_free
        pump(2)
        rows = journal_rows(data)
        seqs = [m["seq"] for m in rows]
        report("journal-disk-full", error_lines=len(journal_errors()), journal_writable=writable,
               held_alerts=held, heartbeat_journal=hb.get("journal"),
               published_live_while_full=len(live_while_full), caught_up_s=round(caught_up_s, 2),
               journal_rows=len(rows), subscriber_received=len(got), subscriber_gaps=sub.gaps,
               full_for_s=round(t_free - t_full, 1))
        assert d.alive() and len(journal_errors()) == 1
        assert writable == 0 and held and held > 0 and len(live_while_full) >= 2
        assert hb.get("journal", {}).get("writable") is False or hb.get("journal") is None
        assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] >= live_while_full[-1]
        assert "journal: writing again" in d.log()
        got_seqs = [m["seq"] for m in got]
        assert got_seqs == list(range(1, got_seqs[-1] + 1)) and sub.gaps == []

        # Start-up on a full disk: before, every restart crashed before READY.
        code = d.stop(timeout=20)
        last_before = journal_rows(data)[-1]["seq"]
        filler = fill(data)
        t_start = time.monotonic()
        d.start()
        ready_s = d.wait_ready(90, after=t_start)
        pump(4)
        new = [m for m in got if m["seq"] > last_before]
        filler.unlink()
        assert wait_until(lambda: d.value(d.metrics(), "vigil_journal_held_alerts") == 0,
                          timeout=15)
        report("journal-disk-full-at-start", stop_exit_code=code, ready_s=round(ready_s, 2),
               alerts_after_restart=len(new),
               restart_ends=sum(m.get("reason") == "restart" for m in new))
        assert code == 0 and len(new) >= 2 and new[0]["seq"] == last_before + 1
        seqs = [m["seq"] for m in journal_rows(data)]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        if sub is not None:
            sub.close()
        d.close()
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_a_stop_while_alerts_are_held_never_lets_their_seqs_mean_other_alerts(
        tiny_checkpoint, tmp_path):
    """Issue 26, kind 4: the journal's disk fills, alerts are held (published, not written),
    the daemon is stopped (SIGKILL, then SIGTERM) before they are written, the space comes back
    and it starts again. Before: the next start numbered new alerts from the journal's old last
    seq under the same journal id, and a connected subscriber dropped them as duplicates."""
    from streamer.subscriber import AlertSubscriber

    data, cfg, d = _daemon_on_a_small_journal_disk(tiny_checkpoint, tmp_path)
    sub = None
    got: list[dict] = []

    def pump(seconds: float) -> None:
        _collect(sub, got, seconds)

    try:
        d.wait_ready(90)
        sub = AlertSubscriber(cfg["alerts"]["endpoint"], cfg["alerts"]["replay_endpoint"],
                              since=0, heartbeat_timeout_s=3.0)
        pump(3)
        episodes = []
        for stop in ("kill", "term"):
            errors_before = d.log().count("ERROR")
            filler = fill(data)
            assert wait_until(lambda: d.log().count("journal:") and
                              "held in memory" in d.log()[-20000:], timeout=15)
            pump(3)
            journal_last = journal_rows(data)[-1]["seq"]
            held = [m["seq"] for m in got if m["seq"] > journal_last]
            assert held, "no alert went out while the journal was full"
            if stop == "kill":
                d.kill()
            else:
                assert d.stop(timeout=20) == 0
            filler.unlink()
            t_start = time.monotonic()
            d.start()
            d.wait_ready(90, after=t_start)
            pump(4)
            after = [m for m in got if m["seq"] > max(held)]
            episodes.append(dict(stop=stop, journal_last=journal_last, held=len(held),
                                 max_held=max(held), after=len(after),
                                 first_after=after[0]["seq"] if after else None,
                                 errors=d.log().count("ERROR") - errors_before))
            assert after, f"nothing received after the restart ({stop}): {episodes[-1]}"
        rows = journal_rows(data)
        received = {(m["journal_id"], m["seq"]): m for m in got}
        report("held-alerts-then-stop", episodes=episodes, subscriber_received=len(got),
               gaps=sub.gaps, resets=sub.resets, journal_rows=len(rows))
        # A seq means one alert per journal id: on the wire (what the subscriber got) and in
        # the journal, never two.
        assert len(received) == len(got), "an alert delivered twice"
        for row in rows:
            key = (row["journal_id"], row["seq"])
            if key in received:
                assert (received[key]["event_id"], received[key]["type"]) == (
                    row["event_id"], row["type"]), f"seq {key} means two alerts"
        # Nothing lost: every alert the journal holds reached the subscriber (live or replayed),
        # the ones after each restart included (they used to be dropped as duplicates).
        missing = [(r["journal_id"], r["seq"]) for r in rows
                   if (r["journal_id"], r["seq"]) not in received]
        assert not missing, f"{len(missing)} journalled alert(s) never delivered: {missing[:5]}"
        for ep in episodes:
            assert ep["first_after"] == ep["max_held"] + 1 or sub.resets
        restart_ends = [m for m in got if m.get("reason") == "restart"]
        assert restart_ends, "events left open by the lost alerts were never ended"
    finally:
        if sub is not None:
            sub.close()
        d.close()
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_a_lost_or_emptied_journal_is_said_loudly_and_subscribers_follow_the_reset(
        tiny_checkpoint, tmp_path):
    from streamer.subscriber import AlertSubscriber

    data = tmp_path / "data"
    cfg = base_config(data, tiny_checkpoint, {"a": SYNTH.format(kind="fight", seed=1)},
                      updates=True)
    cfg["smoothing"]["update_interval_s"] = 0.5
    cfg["evidence"]["enabled"] = False
    d = DaemonProcess(tmp_path / "work", cfg).start()
    sub = None
    got: list[dict] = []

    def pump_until(pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (m := sub.poll(0.1)) is not None:
                got.append(m)
                if pred():
                    return True
        return False

    try:
        d.wait_ready(90)
        sub = AlertSubscriber(cfg["alerts"]["endpoint"], cfg["alerts"]["replay_endpoint"],
                              since=0, heartbeat_timeout_s=3.0)
        assert pump_until(lambda: len(got) >= 4, 20)
        first_id = got[0]["journal_id"]
        # Deleted while running.
        for p in _journal_files(data):
            p.unlink(missing_ok=True)
        t_del = time.monotonic()
        assert wait_until(lambda: "was deleted while running" in d.log(), timeout=10)
        detected_s = time.monotonic() - t_del
        assert pump_until(lambda: sum(m["journal_id"] != first_id for m in got) >= 3, 20)
        # Alerts committed to the deleted file before the check noticed are still delivered.
        last_old = max(m["seq"] for m in got if m["journal_id"] == first_id)
        second = [m for m in got if m["journal_id"] != first_id]
        second_id = second[0]["journal_id"]
        reply = replay(cfg["alerts"]["replay_endpoint"], {"since": 0})
        report("journal-deleted-while-running", detected_s=round(detected_s, 2),
               new_journal_id=second_id != first_id, seq_continued_at=second[0]["seq"],
               last_old_seq=last_old, subscriber_resets=sub.resets,
               replay_journal_id_is_new=reply["journal_id"] == second_id)
        assert second[0]["seq"] == last_old + 1 and sub.resets == 1 and sub.gaps == []
        assert reply["journal_id"] == second_id
        assert (sub.last_heartbeat or {}).get("journal_id") == second_id

        # Emptied (truncated to 0 bytes) while stopped: the subscriber stays connected.
        assert d.stop(timeout=20) == 0
        last_second = max(m["seq"] for m in got)
        for p in _journal_files(data)[1:]:
            p.unlink(missing_ok=True)
        _journal_files(data)[0].write_bytes(b"")
        t_start = time.monotonic()
        d.start()
        d.wait_ready(90, after=t_start)
        assert pump_until(lambda: sum(m["journal_id"] not in (first_id, second_id)
                                      for m in got) >= 3, 30), d.log()[-2000:]
        third = [m for m in got if m["journal_id"] not in (first_id, second_id)]
        empty_lines = [ln for ln in d.log().splitlines() if "was EMPTY" in ln]
        report("journal-emptied-while-stopped", error_lines=len(empty_lines),
               new_seq_starts_at=third[0]["seq"], last_seq_held_before=last_second,
               delivered_after_reset=len(third), subscriber_resets=sub.resets,
               gaps=sub.gaps)
        assert len(empty_lines) == 1 and " ERROR " in empty_lines[0]
        assert [m["seq"] for m in third[:3]] == [1, 2, 3]   # before: dropped as duplicates
        assert sub.resets == 2 and sub.gaps == []
    finally:
        if sub is not None:
            sub.close()
        d.close()


def test_damage_inside_the_journal_pages_is_a_clear_error_not_a_traceback(tiny_checkpoint,
                                                                         tmp_path):
    from tests.test_journal import _damage_pages

    data = tmp_path / "data"
    data.mkdir()
    _damage_pages(data / "journal.sqlite3")
    cfg = base_config(data, tiny_checkpoint, {"a": SYNTH.format(kind="none", seed=1)})
    d = DaemonProcess(tmp_path / "work", cfg).start()
    try:
        assert d.proc is not None
        code = d.proc.wait(90)
        log_text = d.log()
        report("journal-page-damage", exit_code=code,
               clear_error="not a usable alert journal" in log_text,
               traceback="Traceback" in log_text)
        assert code == 2 and "not a usable alert journal" in log_text
        assert "Traceback" not in log_text
    finally:
        d.close()

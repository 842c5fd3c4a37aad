"""`vigil serve` with every `accel:` switch that runs on a CPU turned on: capture in processes
(shared-memory rings), windows gathered from device rings (device=cpu), batch norm folded and
`channels_last_3d`. The daemon must serve as it does today: frames and windows counted per camera,
cameras up, events opened, and a SIGTERM that leaves no capture process or shared memory behind."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

zmq = pytest.importorskip("zmq")

from vigil_tools.harness import DaemonProcess, base_config, wait_until  # noqa: E402
from tests.conftest import recv_json, subscriber  # noqa: E402

SYNTH = "synth://{kind}?seed={seed}&width=96&height=72&fps=15&frames=45"

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    """Every descendant of `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        out |= kids
        todo += list(kids)
    return out


def _shm(pid: int) -> set[str]:
    """The shared-memory blocks the daemon `pid` created (`SHM_PREFIX<pid>_...`): other
    programs' blocks, or another test's daemon, are not counted."""
    from streamer.accel.shared_ring import SHM_PREFIX

    return {n for n in os.listdir("/dev/shm") if n.startswith(f"{SHM_PREFIX}{pid}_")}


def test_daemon_serves_with_capture_processes_and_device_rings(tiny_checkpoint, tmp_path):
    cfg = base_config(tmp_path / "data", tiny_checkpoint,
                      {"fightcam": SYNTH.format(kind="fight", seed=1),
                       "emptycam": SYNTH.format(kind="none", seed=2)}, stride=8,
                      fast_timeouts=False)
    cfg["accel"] = {"capture": "processes", "device_ring": True, "fold_bn": True,
                    "channels_last": True}
    d = DaemonProcess(tmp_path, cfg).start()
    try:
        sub = subscriber(cfg["alerts"]["endpoint"], b"alert")
        d.wait_ready()
        first = d.metrics()

        def moved():
            m = d.metrics()
            ok = all(d.value(m, name, camera=cam) > (d.value(first, name, camera=cam) or 0)
                     for name in ("vigil_frames_total", "vigil_windows_total")
                     for cam in ("fightcam", "emptycam"))
            return m if ok else None

        second = wait_until(moved, timeout=30, interval=0.5)
        assert second is not None, "frames and windows are counted for both cameras\n" + d.log()
        assert d.value(second, "vigil_camera_up", camera="fightcam") == 1.0
        got = recv_json(sub, timeout=30)
        assert got is not None and got[1]["type"] == "start", d.log()
        sub.close()
        captures = _children(d.pid)
        assert len(captures) >= 3, "a fork server and one capture process per camera"
        pid = d.pid
        assert len(_shm(pid)) >= 2, "each camera's ring lives in the daemon's shared memory"
        assert "capture process" in d.log()
        assert d.stop() == 0, d.log()
    finally:
        d.close()
    assert wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in captures) or None,
                      timeout=10, interval=0.2), "no capture process outlives the daemon"
    assert _shm(pid) == set(), "the shared rings were unlinked"


def test_a_compiled_model_is_warmed_up_before_ready(tiny_checkpoint, tmp_path):
    """`accel.compile` on the CPU: every fixed batch size (here one: max_batch 1) is compiled
    before READY=1, with systemd's start timeout extended, so no window waits for a compile."""
    cfg = base_config(tmp_path / "data", tiny_checkpoint,
                      {"cam": SYNTH.format(kind="fight", seed=1)}, stride=8)
    cfg["model"]["max_batch"] = 1
    cfg["accel"] = {"compile": "default", "fold_bn": True}
    d = DaemonProcess(tmp_path, cfg).start()
    try:
        d.wait_ready(timeout=300)
        grams = d.notify.datagrams()
        ready = next(i for i, g in enumerate(grams) if b"READY=1" in g.split(b"\n"))
        before = b"\n".join(grams[:ready])
        assert b"EXTEND_TIMEOUT_USEC=" in before and b"compiling the model" in before
        # READY=1 goes out just before the "ready:" log line: wait for the line to be written.
        def logged_ready():
            text = d.log()
            return text if "ready:" in text else None

        log = wait_until(logged_ready, timeout=30, interval=0.2) or d.log()
        assert "compiled and warmed up for batches [1]" in log, log[-3000:]
        assert "ready:" in log, log[-3000:]
        assert log.index("compiled and warmed up") < log.index("ready:")
        first = d.metrics()
        assert wait_until(lambda: d.value(d.metrics(), "vigil_windows_total", camera="cam")
                          > (d.value(first, "vigil_windows_total", camera="cam") or 0),
                          timeout=30, interval=0.5), log[-3000:]
        assert d.stop() == 0
    finally:
        d.close()

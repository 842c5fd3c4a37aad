"""A camera's capture in its own process (`accel.capture: processes`).

With one capture thread per camera, every decode, resize and colour conversion returns to Python
between native calls and takes the GIL the inference worker needs: on an H200 the worker, not the
GPU or decoding, held the daemon to 27 cameras (BENCHMARKS.md). Here each camera runs today's
`CaptureThread`, unchanged, in a process of its own, writing `SharedRingBuffer`s the daemon's
threads read as they read today's rings.

`CaptureProcess` is the daemon's side and has the capture thread's interface (`up`, `fps`,
`ring`, `display_ring`, `reconnects`, `last_frame_age()`, `stuck()`, `start()`, `stop()`), so
`CameraRuntime` and the health check use either alike. Its monitor thread (in the daemon; it
blocks on a pipe, so it costs no GIL time per frame):
  * answers the child's two requests, `("ring", fps)` when the source first opens and
    `("display", width, height, capacity, start_seq)` when the frame size is known, by creating
    the shared rings in the daemon (which owns and unlinks them) with the locks created before
    the child started (a lock can only be inherited);
  * reads the child's counters from a shared array every `POLL_S` and calls the daemon's hooks
    (`on_state`, `on_frame` per new frame, `on_drop`, `on_reconnect`);
  * restarts a child that died (a decoder crash takes only its camera down), with backoff.

The children are forked from a fork server (`multiprocessing`'s `forkserver`) that imported
Vigil's capture code once: starting one costs a fork, not an interpreter and an import of torch,
and its pages are shared with the server's. A child exits when asked (a shared event), when its
capture thread ends (a file that does not loop), or when its parent is gone. Measured on the
2-core CPU (2026-12-07, three 640x360 synthetic cameras): each child holds about 37 MB of its own
memory (RSS 419 MB, the rest shared with the fork server, which holds 690 MB once).
As with any `multiprocessing` start method but fork, a child imports the daemon's main module
(`vigil`, `python -m streamer.cli`); a main read from stdin cannot start capture processes.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import threading
import time
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ..capture import CaptureThread, _display_size
from ..config import CameraSettings
from ..regions.polygons import Polygon
from .shared_ring import SharedRingBuffer

log = logging.getLogger(__name__)

# The monitor reads the child's counters this often (seconds).
POLL_S = 0.1
# How long a child waits for the daemon to create a ring before giving up (seconds).
REPLY_TIMEOUT_S = 10.0
# Restarts of a child that died: first delay and cap (seconds), doubling.
RESTART_INITIAL_S, RESTART_MAX_S = 1.0, 30.0

# The counters a child publishes, by index into the shared array.
_FIELDS = ("frames", "dropped", "reconnects", "fps_measured", "stream_fps", "last_frame_mono",
           "beat", "up", "ended", "width", "height")
_I = {name: i for i, name in enumerate(_FIELDS)}


def _context() -> Any:
    """The fork-server context, preloading this module (and through it the capture code)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


# ------------------------------------------------------------------------------------ the child
class _ChildCapture(CaptureThread):
    """Today's capture thread, asking the daemon for its display ring instead of making one."""

    def __init__(self, *args: Any, request: Callable[..., Any], display_lock: Any,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request = request
        self._display_lock = display_lock

    def _new_display_ring(self, w: int, h: int, start_seq: int) -> None:
        if self.display_max_width <= 0 or self.display_seconds <= 0:
            return
        dw, dh = _display_size(w, h, self.display_max_width)
        capacity = max(1, int(math.ceil(self.display_seconds * self.fps)))
        state = self._request("display", dw, dh, capacity, start_seq)
        self._display_scratch = np.empty((dh, dw, 3), np.uint8)
        self.display_ring = SharedRingBuffer.attach(state, self._display_lock)


def _child_main(camera: str, url: Union[str, int], settings: CameraSettings, conn: Any,
                status: Any, stop: Any, ring_lock: Any, display_lock: Any,
                options: dict[str, Any]) -> None:
    """The capture process: run a `_ChildCapture` until stopped, publishing its counters."""
    import signal

    from ..logs import setup_logging
    from ..masking import install_log_filter

    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the daemon decides when we stop
    # The daemon's log format and level, and its secrets masked in every line.
    setup_logging(options.get("log_format", "text"), options.get("log_level", "info"))
    install_log_filter(options.get("secrets", ()))
    parent = os.getppid()
    lock = threading.Lock()

    def request(*msg: Any) -> Any:
        with lock:
            conn.send(msg)
            deadline = time.monotonic() + REPLY_TIMEOUT_S
            while not conn.poll(0.1):
                if stop.is_set() or time.monotonic() > deadline:
                    raise OSError(f"the daemon did not answer {msg[0]!r}")
            return conn.recv()

    def ring_factory(fps: float) -> SharedRingBuffer:
        return SharedRingBuffer.attach(request("ring", fps), ring_lock)

    thread = _ChildCapture(camera, url, settings=settings, ring_factory=ring_factory,
                           request=request, display_lock=display_lock,
                           display_max_width=options.get("display_max_width", 0),
                           display_seconds=options.get("display_seconds", 0.0),
                           decode_threads=options.get("decode_threads", 0),
                           mask=options.get("mask", ()), seed=options.get("seed"))
    thread.start()

    def publish() -> None:
        size = thread.frame_size or (0, 0)
        values = {"frames": thread.frames, "dropped": thread.dropped,
                  "reconnects": thread.reconnects, "fps_measured": thread.fps_measured,
                  "stream_fps": thread.stream_fps or 0.0,
                  "last_frame_mono": (-1.0 if thread._last_frame_mono is None
                                      else thread._last_frame_mono),
                  "beat": thread._beat, "up": float(thread._up), "ended": float(thread.ended),
                  "width": size[0], "height": size[1]}
        for name, value in values.items():
            status[_I[name]] = float(value)

    while thread.is_alive() and not stop.is_set() and os.getppid() == parent:
        publish()
        time.sleep(POLL_S / 2)
    thread.stop(2.0)
    publish()


# ----------------------------------------------------------------------------- the daemon's side
class CaptureProcess:
    """The daemon's handle on a camera captured in a child process (see the module docstring).

    Args: as `streamer.capture.CaptureThread` (`name`, `url`, `settings`, `ring_factory`,
        `on_state`, `on_frame`, `on_drop`, `on_reconnect`, `display_max_width`,
        `display_seconds`, `seed`, `decode_threads`, `mask`), except that `ring_factory` must
        return a `SharedRingBuffer` built with the `lock` it is given:
        `ring_factory(fps, lock)`.
        secrets: credentials the child's log lines mask (the config's; the child logs in the
            daemon's format and level, read from the root logger here).
    """

    def __init__(self, name: str, url: Union[str, int], *,
                 ring_factory: Callable[[float, Any], SharedRingBuffer],
                 settings: Optional[CameraSettings] = None,
                 on_state: Optional[Callable[[str, bool], None]] = None,
                 on_frame: Optional[Callable[[str], None]] = None,
                 on_drop: Optional[Callable[[str], None]] = None,
                 on_reconnect: Optional[Callable[[str], None]] = None,
                 display_max_width: int = 0, display_seconds: float = 0.0,
                 seed: Optional[int] = None, decode_threads: int = 0,
                 mask: Sequence[Polygon] = (), secrets: Sequence[str] = ()) -> None:
        from ..logs import JsonFormatter

        self.camera = name
        self.url = url
        self.settings = settings if settings is not None else CameraSettings()
        self._ring_factory = ring_factory
        self._hooks = (on_state, on_frame, on_drop, on_reconnect)
        self._options = {"display_max_width": int(display_max_width),
                         "display_seconds": float(display_seconds), "seed": seed,
                         "decode_threads": int(decode_threads), "mask": tuple(mask),
                         "secrets": tuple(secrets), "log_format": "json" if any(
                             isinstance(h.formatter, JsonFormatter)
                             for h in logging.getLogger().handlers) else "text",
                         "log_level": logging.getLevelName(
                             logging.getLogger().getEffectiveLevel()).lower()}
        self._ctx = _context()
        self._ring_lock: Any = None          # new ones for each child (see `_spawn`)
        self._display_lock: Any = None
        self._status = self._ctx.Array("d", len(_FIELDS), lock=False)
        self._stop = self._ctx.Event()
        self.ring: Optional[SharedRingBuffer] = None
        self.display_ring: Optional[SharedRingBuffer] = None
        self._rings: list[SharedRingBuffer] = []
        self._proc: Any = None
        self._conn: Any = None
        self._monitor = threading.Thread(target=self._watch, name=f"capture-proc-{name}",
                                         daemon=True)
        self._seen = {"frames": 0, "dropped": 0, "reconnects": 0}
        self._up = False
        self.restarts = 0
        self._callback_failed = False

    # ------------------------------------------------------------ the capture thread's interface
    def _value(self, name: str) -> float:
        return float(self._status[_I[name]])

    @property
    def frames(self) -> int:
        return int(self._value("frames"))

    @property
    def dropped(self) -> int:
        return int(self._value("dropped"))

    @property
    def reconnects(self) -> int:
        return int(self._value("reconnects")) + self.restarts

    @property
    def ended(self) -> bool:
        return bool(self._value("ended"))

    @property
    def stream_fps(self) -> Optional[float]:
        return self._value("stream_fps") or None

    @property
    def frame_size(self) -> Optional[tuple[int, int]]:
        w, h = int(self._value("width")), int(self._value("height"))
        return (w, h) if w > 0 else None

    @property
    def fps(self) -> float:
        """As `CaptureThread.fps`: the source's own, else the hint, else measured, else 15."""
        return (self.stream_fps or self.settings.fps or self._value("fps_measured") or 15.0)

    @property
    def pid(self) -> Optional[int]:
        """The capture process's id (None before start)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def up(self) -> bool:
        return bool(self._value("up")) and self.last_frame_age() <= self.settings.stall_timeout_s

    def last_frame_age(self, now: Optional[float] = None) -> float:
        t = self._value("last_frame_mono")
        if t < 0:
            return math.inf
        return (time.monotonic() if now is None else now) - t

    def stuck(self, now: Optional[float] = None) -> bool:
        """As `CaptureThread.stuck`: the child's capture thread inside one native call far longer
        than its timeouts allow (a dead child is restarted by the monitor, not stuck)."""
        if self._proc is None or not self._proc.is_alive() or self.ended:
            return False
        beat = self._value("beat")
        if beat <= 0:
            return False
        now = time.monotonic() if now is None else now
        s = self.settings
        return now - beat > 3 * s.read_timeout_s + s.open_timeout_s

    def is_alive(self) -> bool:
        return self._monitor.is_alive()

    def start(self) -> None:
        self._spawn()
        self._monitor.start()

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Ask the child to end and wait up to `timeout`; a child still running then is killed
        (unlike a thread, a process can be). True when it ended by itself."""
        self._stop.set()
        ended = True
        if self._proc is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                ended = False
                log.warning("camera %s: capture process %d did not stop; killing it",
                            self.camera, self._proc.pid)
                self._proc.kill()
                self._proc.join(1.0)
        if self._monitor.is_alive() and threading.current_thread() is not self._monitor:
            self._monitor.join(max(1.0, 2 * POLL_S))
        for ring in self._rings:
            ring.close()
        return ended

    # ------------------------------------------------------------ internals
    def _spawn(self) -> None:
        # Fresh locks per child: one killed inside `commit` would hold its lock for ever.
        self._ring_lock, self._display_lock = self._ctx.Lock(), self._ctx.Lock()
        parent, child = self._ctx.Pipe()
        self._conn = parent
        self._proc = self._ctx.Process(
            target=_child_main, name=f"vigil-capture-{self.camera}", daemon=True,
            args=(self.camera, self.url, self.settings, child, self._status, self._stop,
                  self._ring_lock, self._display_lock, self._options))
        self._proc.start()
        child.close()
        log.info("camera %s: capture process %d started", self.camera, self._proc.pid)

    def _call(self, index: int, *args: Any) -> None:
        fn = self._hooks[index]
        if fn is None:
            return
        try:
            fn(self.camera, *args)
        except Exception:
            if not self._callback_failed:
                self._callback_failed = True
                log.exception("camera %s: state callback failed (logged once)", self.camera)

    def _answer(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ring":
            ring = self._ring_factory(float(msg[1]), self._ring_lock)
            ring.roi = self.settings.roi
            self._rings.append(ring)
            self.ring = ring
            self._conn.send(ring.state())
        elif kind == "display":
            _, w, h, capacity, start_seq = msg
            ring = SharedRingBuffer(capacity, h, w, start_seq, lock=self._display_lock)
            self._rings.append(ring)
            self.display_ring = ring
            self._conn.send(ring.state())
        else:
            log.error("camera %s: unknown request %r from the capture process", self.camera, kind)

    def _report(self) -> None:
        """The child's counters -> the daemon's hooks."""
        for name, hook in (("frames", 1), ("dropped", 2), ("reconnects", 3)):
            now = int(self._value(name))
            for _ in range(max(0, now - self._seen[name])):
                self._call(hook)
            self._seen[name] = now
        up = self.up
        if up != self._up:
            self._up = up
            self._call(0, up)

    def _watch(self) -> None:
        delay = RESTART_INITIAL_S
        while not self._stop.is_set():
            try:
                if self._conn.poll(POLL_S):
                    self._answer(self._conn.recv())
            except (EOFError, OSError):
                pass                    # the child is gone: seen below
            except Exception:
                log.exception("camera %s: capture process request failed", self.camera)
            self._report()
            if self._proc.is_alive() or self._stop.is_set():
                continue
            if self.ended:
                log.info("camera %s: capture process ended (end of video file)", self.camera)
                return
            log.error("camera %s: capture process %d died (exit code %s); restarting in %.0f s",
                      self.camera, self._proc.pid, self._proc.exitcode, delay)
            if self._stop.wait(delay):
                break
            delay = min(RESTART_MAX_S, delay * 2)
            # Its rings die with it (their lock may be held for ever): the worker sees no ring
            # until the new child opens the source and asks for one.
            self.ring = self.display_ring = None
            for ring in self._rings:
                ring.close()
            self.restarts += 1
            self._call(3)
            self._seen = {"frames": 0, "dropped": 0, "reconnects": 0}
            for i in range(len(_FIELDS)):
                self._status[i] = 0.0
            self._spawn()
        self._report()

"""Camera sources and the capture thread that keeps a camera's ring buffer fed, forever.

Sources (`parse_source`):
    rtsp://, rtsps://, http(s)://  network stream, OpenCV's FFmpeg backend, TCP transport;
    /dev/videoN, webcam:N, N       a V4L2 device;
    path, file://path              a video file, paced in real time at its own fps, looping or once;
    synth://fight?seed=1&...       a live `train.synth.Scene` (kinds fight, collapse, none), looping.

FFmpeg options: OpenCV reads `OPENCV_FFMPEG_CAPTURE_OPTIONS` when a capture opens. Setting it
*replaces* OpenCV's own default (`rtsp_transport;tcp`-like `prefer_tcp`), so the value must name
the transport itself. It is set once, when this module is imported (before any capture thread
exists): `setenv` while another thread reads the environment inside FFmpeg is a data race in glibc,
so it must never be set per thread or per open. A value the user exported is left alone.

`CaptureThread` is one daemon thread per camera owning its `cv2.VideoCapture`: it reads, stamps
(monotonic and wall clock), resizes once to the model size straight into the ring's slot, and on
failure or stall closes and reopens with exponential backoff and jitter, for ever. A thread stuck
inside native code cannot be killed from Python; `stuck()` says so, so the daemon can stop its
watchdog pings and let systemd restart the service.
"""
from __future__ import annotations

import logging
import math
import os
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

from detector.errors import ConfigError

from .masking import mask_secrets, mask_url
from .ringbuffer import RingBuffer

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
FFMPEG_OPTIONS = "rtsp_transport;tcp"
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
SYNTH_KINDS = ("fight", "collapse", "none")
SYNTH_PARAMS = {"seed": 1, "width": 640, "height": 360, "fps": 15, "frames": 96}
# Frames a stream may fail to deliver in a row before the connection is considered lost.
MAX_READ_FAILURES = 3
# OpenCV's FFmpeg backend holds one process-wide mutex for the whole of `VideoCapture.open`,
# timeouts included: measured (OpenCV 4.14), three unreachable RTSP servers with a 2 s open
# timeout, opened from three threads, return after 2, 4 and 6 s. A thread waiting there is not
# stuck in native code, but looked like it (no beat for longer than the stuck bound), so a few
# offline cameras stopped the watchdog pings and made systemd restart the service. Capture
# threads queue for this lock in Python instead, beating while they wait (tests/test_faults.py),
# first come first served: with `threading.Lock` an offline camera retrying every backoff could
# win it again and again while a live camera waited (measured: 20 s to reconnect instead of 5).


class _FifoLock:
    """A lock handed out in the order it was asked for, waiting in short slices."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._held = False

    def acquire(self, keep_waiting: Callable[[], bool], slice_s: float = 0.25) -> bool:
        """Wait for our turn, calling `keep_waiting()` every `slice_s`; False when it says stop."""
        me = object()
        with self._cond:
            self._queue.append(me)
            while self._held or self._queue[0] is not me:
                if not keep_waiting():
                    self._queue.remove(me)
                    self._cond.notify_all()
                    return False
                self._cond.wait(slice_s)
            self._queue.popleft()
            self._held = True
            return True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()


_FFMPEG_OPEN_LOCK = _FifoLock()


def configure_ffmpeg_capture() -> None:
    """Ask OpenCV's FFmpeg backend for RTSP over TCP (no UDP loss, passes NAT and firewalls).

    Idempotent; call before starting capture threads (this module does it on import).
    """
    if FFMPEG_OPTIONS_ENV not in os.environ:
        os.environ[FFMPEG_OPTIONS_ENV] = FFMPEG_OPTIONS
    # OpenCV prints a [WARN] line on every failed open (tens a minute for one dead camera); the
    # capture thread logs one line per episode with the reason, so keep only OpenCV's errors.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


configure_ffmpeg_capture()


# --------------------------------------------------------------------------- source parsing
@dataclass(frozen=True)
class SourceSpec:
    """Where frames come from.

    Attributes:
        kind: "stream" (FFmpeg network URL), "device" (V4L2), "file" or "synth".
        target: the URL, the device index or path, the file path, or the synthetic scene kind.
        params: synth scene parameters (seed, width, height, fps, frames); empty otherwise.
        url: the text it was parsed from (may hold credentials: never log it unmasked).
    """
    kind: str
    target: Union[str, int]
    params: dict[str, int] = field(default_factory=dict)
    url: str = ""

    @property
    def live(self) -> bool:
        """True when frames arrive at the source's own pace (streams and devices)."""
        return self.kind in ("stream", "device")


def _split(text: str):
    """`urlsplit`, whose ValueError (e.g. "Invalid IPv6 URL" for `synth://[`) becomes ConfigError."""
    try:
        return urlsplit(text)
    except ValueError as exc:
        raise ConfigError(f"camera url {mask_url(text)!r}: {exc}") from None


def parse_source(url: Union[str, int]) -> SourceSpec:
    """Parse a camera's `url` setting.

    Args:
        url: see the module docstring; an int is a V4L2 device index.
    Returns:
        the `SourceSpec`.
    Raises:
        ConfigError: empty URL, unknown scheme, unknown synth kind or parameter.
    """
    if isinstance(url, bool):
        raise ConfigError(f"camera url: expected a string or device index, got {url!r}")
    if isinstance(url, int):
        return SourceSpec("device", url, url=str(url))
    text = str(url).strip()
    if not text:
        raise ConfigError("camera url: empty")
    if text.isdigit():
        return SourceSpec("device", int(text), url=text)
    m = re.fullmatch(r"webcam:(\d+)", text)
    if m:
        return SourceSpec("device", int(m.group(1)), url=text)
    m = re.fullmatch(r"/dev/video(\d+)", text)
    if m:
        return SourceSpec("device", int(m.group(1)), url=text)
    if text.startswith("/dev/"):
        return SourceSpec("device", text, url=text)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in STREAM_SCHEMES:
        return SourceSpec("stream", text, url=text)
    if scheme == "file":
        path = _split(text).path
        if not path:
            raise ConfigError(f"camera url {mask_url(text)!r}: file:// needs a path")
        return SourceSpec("file", path, url=text)
    if scheme == "synth":
        parts = _split(text)
        kind = parts.netloc or parts.path.lstrip("/")
        if kind not in SYNTH_KINDS:
            raise ConfigError(f"camera url {mask_url(text)!r}: synthetic kind must be one of "
                              f"{', '.join(SYNTH_KINDS)}, got {kind!r}")
        params = dict(SYNTH_PARAMS)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in SYNTH_PARAMS:
                raise ConfigError(f"camera url {mask_url(text)!r}: unknown parameter {key!r} "
                                  f"(known: {', '.join(SYNTH_PARAMS)})")
            try:
                params[key] = int(value)
            except ValueError:
                raise ConfigError(f"camera url {mask_url(text)!r}: parameter {key!r} must be an "
                                  f"integer, got {value!r}") from None
            low = {"seed": 0, "width": 16, "height": 16}.get(key, 1)
            if params[key] < low:
                raise ConfigError(f"camera url {mask_url(text)!r}: parameter {key!r} must be "
                                  f">= {low}")
        return SourceSpec("synth", kind, params, url=text)
    if scheme:
        raise ConfigError(f"camera url {mask_url(text)!r}: unsupported scheme {scheme!r} "
                          f"(use rtsp://, rtsps://, http(s)://, file://, synth://, /dev/videoN)")
    return SourceSpec("file", text, url=text)


# --------------------------------------------------------------------------- readers
class _CvReader:
    """A `cv2.VideoCapture` with the little the capture loop needs."""

    def __init__(self, cap: "cv2.VideoCapture") -> None:
        self.cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 1.0 <= fps <= 240.0 else None   # streams often report 0 or 90000

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        return self.cap.read()

    def rewind(self) -> bool:
        """Back to the first frame of a file; False when the container cannot seek."""
        return bool(self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def release(self) -> None:
        self.cap.release()


class _SynthReader:
    """Renders a synthetic scene frame after frame, looping over its length."""

    def __init__(self, params: dict[str, int], kind: str) -> None:
        from train.synth import Scene   # heavy-ish and optional: only synthetic cameras need it
        self.scene = Scene(kind, params["seed"], params["width"], params["height"],
                           params["fps"], params["frames"])
        self.frames = params["frames"]
        self.fps: Optional[float] = float(params["fps"])
        self.i = 0

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        frame = self.scene.render(self.i % self.frames)
        self.i += 1
        return True, frame

    def release(self) -> None:
        pass


def open_source(spec: Union[SourceSpec, str, int], open_timeout_s: float = 10.0,
                read_timeout_s: float = 10.0, decode_threads: int = 0) -> Any:
    """Open a source for reading.

    Args:
        spec: a `SourceSpec` or a URL for `parse_source`.
        open_timeout_s, read_timeout_s: FFmpeg network timeouts (streams only).
        decode_threads: FFmpeg decoding threads for this capture (`CAP_PROP_N_THREADS`);
            0 = OpenCV's default, one per CPU. With many cameras that default oversubscribes the
            CPU (cameras x CPUs threads): see `decode_threads_per_camera`.
    Returns:
        a reader with `read() -> (ok, BGR uint8 frame (H, W, 3) or None)`, `fps` (float or None
        when unknown) and `release()`.
    Raises:
        OSError: the source could not be opened (message without credentials).
    """
    if not isinstance(spec, SourceSpec):
        spec = parse_source(spec)
    if spec.kind == "synth":
        return _SynthReader(spec.params, str(spec.target))
    threads = [cv2.CAP_PROP_N_THREADS, int(decode_threads)] if decode_threads > 0 else []
    if spec.kind == "stream":
        cap = cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000), *threads])
    elif spec.kind == "device":
        cap = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
    else:
        if not os.path.isfile(str(spec.target)):
            raise OSError(f"no such video file: {spec.target}")
        cap = cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, threads)
    if not cap.isOpened():
        cap.release()
        what = {"stream": "stream", "device": "device", "file": "video file"}[spec.kind]
        raise OSError(f"cannot open {what} {mask_url(str(spec.target))}")
    return _CvReader(cap)


def decode_threads_per_camera(cameras: int, cpus: Optional[int] = None) -> int:
    """FFmpeg decoding threads for each of `cameras` captures: the CPUs shared out, at least 1.

    OpenCV gives every capture one decoding thread per CPU, so N cameras run N x CPUs threads.
    Measured on a 2-core machine, 8 captures of 640x360 MPEG-4 cost 1.42 ms of CPU per frame
    with the default and 1.13 ms with one thread each (20% less); on the 16-core GPU machine
    128 captures at the default held a fraction of real time (BENCHMARKS.md, GPU section).
    """
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, cpus // max(1, cameras))


# --------------------------------------------------------------------------- capture thread
def _display_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """(w, h) at most `max_width` wide, the source's aspect, even sizes (video encoders like them)."""
    w = min(max_width, width)
    h = max(2, int(round(height * w / width)))
    return max(2, w - w % 2), h - h % 2


class CaptureThread(threading.Thread):
    """One camera: open, read, stamp, resize once into the ring; reconnect for ever.

    Args:
        name: camera name (also the thread's name, logs, metrics).
        url: the camera's source (see `parse_source`); may hold credentials, never logged raw.
        ring: the model-size `RingBuffer` to fill, or
        ring_factory: called once with the source's fps when it first opens, returning the ring
            (so its capacity can follow the real frame rate). Exactly one of the two.
        fps_hint: frame rate to use when the source does not report one (and to pace files that
            do not); the daemon's configured fps.
        open_timeout_s, read_timeout_s: FFmpeg timeouts for network streams.
        stall_timeout_s: no good frame for this long = the stream is lost, reconnect.
        backoff_initial_s, backoff_max_s: reopen delays double from initial up to max (jittered).
        loop: file sources start again at the end (True) or end the thread (False).
        on_state: called (name, up) in this thread when the camera comes up or goes down.
        on_frame, on_drop, on_reconnect: called (name) per frame, dropped frame, reopen attempt
            (metrics hooks; keep them cheap).
        roi: normalised (x1, y1, x2, y2) region of the frame the model sees (cropped before the
            resize, so a small region keeps its detail); None = the whole frame. Recorded as
            `ring.roi` so the worker maps boxes back to the whole frame.
        display_max_width, display_seconds: when both > 0, also keep `display_ring`, the last
            `display_seconds` of WHOLE frames at most `display_max_width` px wide, same sequence
            numbers as `ring` (evidence at a readable resolution).
        seed: seed of the backoff jitter (tests).
        decode_threads: FFmpeg decoding threads (see `open_source`); 0 = OpenCV's default.
    """

    def __init__(self, name: str, url: Union[str, int], ring: Optional[RingBuffer] = None, *,
                 ring_factory: Optional[Callable[[float], RingBuffer]] = None,
                 fps_hint: Optional[float] = None, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 10.0, stall_timeout_s: float = 10.0,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 30.0, loop: bool = True,
                 on_state: Optional[Callable[[str, bool], None]] = None,
                 on_frame: Optional[Callable[[str], None]] = None,
                 on_drop: Optional[Callable[[str], None]] = None,
                 on_reconnect: Optional[Callable[[str], None]] = None,
                 roi: Optional[tuple[float, float, float, float]] = None,
                 display_max_width: int = 0, display_seconds: float = 0.0,
                 seed: Optional[int] = None, decode_threads: int = 0) -> None:
        super().__init__(name=f"capture-{name}", daemon=True)
        if (ring is None) == (ring_factory is None):
            raise ValueError("give exactly one of ring and ring_factory")
        self.camera = name
        self.spec = parse_source(url)
        self.masked_url = mask_url(self.spec.url)
        self.ring = ring
        self._ring_factory = ring_factory
        self.fps_hint = fps_hint
        self.open_timeout_s = float(open_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = max(float(backoff_max_s), self.backoff_initial_s)
        self.loop = loop
        self.decode_threads = int(decode_threads)
        self._on_state, self._on_frame = on_state, on_frame
        self._on_drop, self._on_reconnect = on_drop, on_reconnect
        if roi is not None:
            x1, y1, x2, y2 = (float(v) for v in roi)
            if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
                raise ValueError(f"camera {name}: roi must be normalised x1 < x2, y1 < y2, got {roi}")
            roi = (x1, y1, x2, y2)
        self.roi = roi
        if ring is not None:
            ring.roi = roi
        self.display_max_width = int(display_max_width)
        self.display_seconds = float(display_seconds)
        self.display_ring: Optional[RingBuffer] = None
        self._rng = random.Random(seed)
        self._stop_event = threading.Event()

        # State, written by this thread only; ints and floats are read atomically by others.
        self.frames = 0
        self.dropped = 0
        self.reconnects = 0
        self.fps_measured = 0.0
        self.stream_fps: Optional[float] = None
        self.frame_size: Optional[tuple[int, int]] = None
        self.ended = False
        self._up = False
        self._last_frame_mono: Optional[float] = None
        self._beat = time.monotonic()
        self._fps_mark: tuple[float, int] = (self._beat, 0)
        self._scratch: Optional[np.ndarray] = None
        self._display_scratch: Optional[np.ndarray] = None
        self._episode_logged = False
        self._callback_failed = False

    # ----------------------------------------------------------------- state for other threads
    @property
    def up(self) -> bool:
        """True while frames arrive (a good frame within the stall timeout)."""
        return self._up and self.last_frame_age() <= self.stall_timeout_s

    @property
    def fps(self) -> float:
        """Frame rate for windows: the source's own, else the hint, else measured, else 15."""
        return self.stream_fps or self.fps_hint or self.fps_measured or 15.0

    def last_frame_age(self, now: Optional[float] = None) -> float:
        """Seconds since the last good frame (infinity before the first)."""
        if self._last_frame_mono is None:
            return math.inf
        return (time.monotonic() if now is None else now) - self._last_frame_mono

    def stuck(self, now: Optional[float] = None) -> bool:
        """True when the thread has been inside one native call far longer than its timeouts allow.

        A healthy thread returns from `open` within `open_timeout_s` and from `read` within
        `read_timeout_s`, and beats while it backs off; silence for 3 x read + open timeout means
        FFmpeg or a driver hangs, which only a process restart can cure.
        """
        if not self.is_alive() or self.ended:
            return False
        now = time.monotonic() if now is None else now
        return now - self._beat > 3 * self.read_timeout_s + self.open_timeout_s

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Ask the thread to end; True when it has ended within `timeout` (False: stuck in native code)."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        return not self.is_alive()

    # ----------------------------------------------------------------- internals
    def _call(self, fn: Optional[Callable], *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(self.camera, *args)
        except Exception:   # a metrics hook must never take the camera down
            if not self._callback_failed:
                self._callback_failed = True
                log.exception("camera %s: state callback failed (logged once)", self.camera)

    def _set_up(self, up: bool) -> None:
        if up != self._up:
            self._up = up
            self._call(self._on_state, up)

    def _lost(self, reason: str) -> None:
        """Mark the camera down and log the episode's first problem once."""
        self._set_up(False)
        if not self._episode_logged:
            self._episode_logged = True
            log.warning("camera %s: %s (%s); reconnecting with backoff up to %.0f s",
                        self.camera, reason, self.masked_url, self.backoff_max_s)
        else:
            log.debug("camera %s: %s", self.camera, reason)

    def _wait(self, seconds: float) -> bool:
        """Sleep `seconds` unless stopped, beating; True when stopped."""
        end = time.monotonic() + seconds
        while True:
            self._beat = time.monotonic()
            left = end - self._beat
            if left <= 0:
                return self._stop_event.is_set()
            if self._stop_event.wait(min(left, 0.5)):
                return True

    def _backoff_delay(self, attempt: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** min(attempt, 30)))
        return base * (0.5 + 0.5 * self._rng.random())    # "equal jitter": never zero, spreads

    def _open(self) -> Optional[Any]:
        self._beat = time.monotonic()
        ffmpeg = self.spec.kind in ("stream", "file")
        if ffmpeg:
            # Queue for OpenCV's FFmpeg open lock here, beating while waiting (see
            # _FFMPEG_OPEN_LOCK): only the open itself counts towards `stuck()`.
            def keep_waiting() -> bool:
                self._beat = time.monotonic()
                return not self._stop_event.is_set()

            if not _FFMPEG_OPEN_LOCK.acquire(keep_waiting):
                return None
        try:
            self._beat = time.monotonic()
            reader = open_source(self.spec, self.open_timeout_s, self.read_timeout_s,
                                 decode_threads=self.decode_threads)
        except Exception as exc:   # OSError, cv2.error, a missing synth module: same episode
            self._beat = time.monotonic()
            self._lost(f"cannot open source: {mask_secrets(str(exc))}")
            return None
        finally:
            if ffmpeg:
                _FFMPEG_OPEN_LOCK.release()
        self._beat = time.monotonic()
        self.stream_fps = reader.fps
        if self.ring is None:
            self.ring = self._ring_factory(self.fps)   # type: ignore[misc]
            self.ring.roi = self.roi
        return reader

    def _store(self, frame: np.ndarray, t_mono: float, t_wall: float) -> None:
        ring = self.ring
        assert ring is not None
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        h, w = frame.shape[:2]
        if self.frame_size != (w, h):
            if self.frame_size is not None:
                log.info("camera %s: resolution changed from %dx%d to %dx%d", self.camera,
                         *self.frame_size, w, h)
            self.frame_size = (w, h)
            self._new_display_ring(w, h, ring.count)
        if self._scratch is None:
            self._scratch = np.empty((ring.height, ring.width, 3), np.uint8)
        disp = self.display_ring
        if disp is not None:
            cv2.resize(frame, (disp.width, disp.height), dst=self._display_scratch,
                       interpolation=cv2.INTER_AREA if w >= disp.width else cv2.INTER_LINEAR)
            cv2.cvtColor(self._display_scratch, cv2.COLOR_BGR2RGB, dst=disp.write_slot())
            disp.commit(t_mono, t_wall, (w, h))
        # INTER_AREA averages when shrinking (no aliasing); it would blur nothing when enlarging.
        interp = cv2.INTER_AREA if w >= ring.width else cv2.INTER_LINEAR   # (roi: close enough)
        src = frame
        if self.roi is not None:      # a view: cropping copies nothing
            x1, y1, x2, y2 = self.roi
            src = frame[int(y1 * h):max(int(y1 * h) + 1, int(round(y2 * h))),
                        int(x1 * w):max(int(x1 * w) + 1, int(round(x2 * w)))]
        cv2.resize(src, (ring.width, ring.height), dst=self._scratch, interpolation=interp)
        cv2.cvtColor(self._scratch, cv2.COLOR_BGR2RGB, dst=ring.write_slot())
        ring.commit(t_mono, t_wall, (w, h))

    def _new_display_ring(self, w: int, h: int, start_seq: int) -> None:
        if self.display_max_width <= 0 or self.display_seconds <= 0:
            return
        dw, dh = _display_size(w, h, self.display_max_width)
        capacity = max(1, int(math.ceil(self.display_seconds * self.fps)))
        self._display_scratch = np.empty((dh, dw, 3), np.uint8)
        self.display_ring = RingBuffer(capacity, dh, dw, start_seq=start_seq)

    def _good_frame(self, frame: np.ndarray, t_mono: float, t_wall: float) -> None:
        self._store(frame, t_mono, t_wall)
        self._last_frame_mono = t_mono
        self.frames += 1
        self._call(self._on_frame)
        mark_t, mark_n = self._fps_mark
        if t_mono - mark_t >= 2.0:
            self.fps_measured = (self.frames - mark_n) / (t_mono - mark_t)
            self._fps_mark = (t_mono, self.frames)
        if not self._up:
            if self._episode_logged:
                log.info("camera %s: receiving frames again (%dx%d)", self.camera,
                         *(self.frame_size or (0, 0)))
            else:
                log.info("camera %s: receiving frames (%dx%d)", self.camera,
                         *(self.frame_size or (0, 0)))
            self._episode_logged = False
            self._set_up(True)

    def _read_loop(self, reader: Any) -> str:
        """Read until stopped or the source fails. Returns "stopped", "eof", "failed" or "stalled"."""
        paced = not self.spec.live
        period = 1.0 / (reader.fps or self.fps_hint or 25.0)
        opened = time.monotonic()
        next_due = opened
        failures = 0
        frames_at_rewind = -1
        while not self._stop_event.is_set():
            if paced:
                delay = next_due - time.monotonic()
                if delay > 0 and self._wait(delay):
                    return "stopped"
            self._beat = time.monotonic()
            try:
                ok, frame = reader.read()
            except cv2.error as exc:
                ok, frame = False, None
                log.debug("camera %s: read error: %s", self.camera, exc)
            t_mono, t_wall = time.monotonic(), time.time()
            if (ok and self.spec.kind == "stream"
                    and t_mono - self._beat >= 0.9 * self.read_timeout_s):
                # FFmpeg's read timeout fired: OpenCV then flushes the decoder and returns True
                # with a frame left in it, which is stale, not a sign of life. Measured with a
                # frozen (SIGSTOPped) RTSP server; without this the camera would never stall.
                ok = False
            self._beat = t_mono
            if ok and frame is not None and frame.size:
                failures = 0
                self._good_frame(frame, t_mono, t_wall)
                if paced:
                    # Keep the file's own cadence; after a hiccup restart from now, no burst.
                    next_due = max(next_due + period, t_mono - period)
                continue
            if self.spec.kind == "file":
                # Loop by seeking rather than reopening: a reopen waits for OpenCV's process-wide
                # FFmpeg open lock, behind every unreachable camera's open timeout, and the file
                # would look lost meanwhile. Only after frames were read, so an unreadable file
                # cannot spin here.
                if (self.loop and self.frames > frames_at_rewind and
                        getattr(reader, "rewind", None) is not None and reader.rewind()):
                    frames_at_rewind = self.frames
                    continue
                return "eof"
            failures += 1
            if self._up:
                self.dropped += 1
                self._call(self._on_drop)
            last_good = max(self._last_frame_mono or opened, opened)
            if failures >= MAX_READ_FAILURES:
                return "failed"
            if t_mono - last_good > self.stall_timeout_s:
                return "stalled"
            if self._wait(0.01):
                return "stopped"
        return "stopped"

    def run(self) -> None:
        attempt = 0            # consecutive failed episodes (drives the backoff)
        opened_once = False    # any open attempt made: later ones are reconnects
        reopen_now = False     # a looping file restarts without counting a reconnect
        while not self._stop_event.is_set():
            if opened_once and not reopen_now:
                self.reconnects += 1
                self._call(self._on_reconnect)
            opened_once, reopen_now = True, False
            reader = self._open()
            if reader is None:
                if self._wait(self._backoff_delay(attempt)):
                    break
                attempt += 1
                continue
            frames_before = self.frames
            try:
                reason = self._read_loop(reader)
            except Exception as exc:   # a bad frame or a library bug: this camera's problem only
                if not self._episode_logged:   # once per episode, like every other failure
                    log.exception("camera %s: capture error: %s", self.camera,
                                  mask_secrets(str(exc)))
                reason = "failed"
            finally:
                try:
                    reader.release()
                except Exception as exc:
                    log.debug("camera %s: release failed: %s", self.camera, exc)
            if reason == "stopped":
                break
            if self.frames > frames_before:
                attempt = 0
            if reason == "eof":
                if self.frames == frames_before:
                    self._lost("video file has no readable frames")
                elif self.loop:
                    reopen_now = True
                    continue
                else:
                    log.info("camera %s: end of video file", self.camera)
                    self.ended = True
                    self._set_up(False)
                    return
            else:
                self._lost("stream lost" if reason == "failed" else
                           f"no frame for {self.stall_timeout_s:.1f} s")
            if self._wait(self._backoff_delay(attempt)):
                break
            attempt += 1
        self._set_up(False)

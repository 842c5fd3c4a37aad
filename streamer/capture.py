"""The capture thread that keeps a camera's ring buffer fed, forever.

`CaptureThread` is one daemon thread per camera owning its `cv2.VideoCapture` (opened by
`streamer.sources.open_source`): it reads, stamps (monotonic and wall clock), resizes once to the
model size, blanks the camera's masked areas (`streamer/regions/mask.py`, precomputed once) and
writes into the ring's slot, and on failure or stall closes and reopens with
exponential backoff and jitter, for ever. Its timeouts, backoff, fps hint, looping and region of
interest come from the camera's `CameraSettings` (`streamer/config.py`). A thread stuck inside
native code cannot be killed from Python; `stuck()` says so, so the daemon can stop its watchdog
pings and let systemd restart the service.
"""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from typing import Any, Callable, Optional, Sequence, Union

import cv2
import numpy as np

from .config import CameraSettings
from .masking import mask_secrets, mask_url
from .regions.mask import FrameMask, frame_mask
from .regions.polygons import Polygon
from .ringbuffer import RingBuffer
from .sources import _FFMPEG_OPEN_LOCK, open_source, parse_source

log = logging.getLogger(__name__)

# Frames a stream may fail to deliver in a row before the connection is considered lost.
MAX_READ_FAILURES = 3


def model_frame(frame: np.ndarray, size: tuple[int, int],
                roi: Optional[tuple[float, float, float, float]] = None,
                scratch: Optional[np.ndarray] = None, out: Optional[np.ndarray] = None,
                mask=None) -> np.ndarray:
    """A decoded BGR frame as the model's ring holds it: cropped to `roi`, resized, RGB.

    What every capture thread does to every frame, and what the offline tools that replay the
    daemon's windows do (`streamer.tuning.offline`), so both see the same pixels.

    Args:
        frame: BGR uint8 (h, w, 3) as OpenCV decodes it.
        size: (width, height) of the model's input.
        roi: normalised (x1, y1, x2, y2) region to keep, or None for the whole frame.
        scratch: optional preallocated BGR (height, width, 3) buffer for the resize.
        out: optional preallocated RGB (height, width, 3) destination (a ring slot).
        mask: optional `streamer.regions` camera mask (`.apply(bgr)` blanks it in place) at
            `size`: the model never sees the masked pixels.
    Returns:
        RGB uint8 (height, width, 3) (`out` when given).
    """
    h, w = frame.shape[:2]
    # INTER_AREA averages when shrinking (no aliasing); it would blur nothing when enlarging.
    interp = cv2.INTER_AREA if w >= size[0] else cv2.INTER_LINEAR   # (roi: close enough)
    src = frame
    if roi is not None:      # a view: cropping copies nothing
        x1, y1, x2, y2 = roi
        src = frame[int(y1 * h):max(int(y1 * h) + 1, int(round(y2 * h))),
                    int(x1 * w):max(int(x1 * w) + 1, int(round(x2 * w)))]
    small = cv2.resize(src, size, dst=scratch, interpolation=interp)
    if mask is not None:
        mask.apply(small)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=out)


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
        settings: the camera's `CameraSettings` (default: the config's defaults): `fps` is the
            frame rate to use when the source does not report one (and to pace files that do
            not); `open_timeout_s`, `read_timeout_s` the FFmpeg timeouts for network streams;
            `stall_timeout_s` no good frame for this long = the stream is lost, reconnect;
            `backoff_initial_s`, `backoff_max_s` reopen delays doubling from initial up to max
            (jittered); `loop` file sources start again at the end (True) or end the thread;
            `roi` the normalised (x1, y1, x2, y2) region of the frame the model sees (cropped
            before the resize, so a small region keeps its detail; None = the whole frame),
            recorded as `ring.roi` so the worker maps boxes back to the whole frame.
        on_state: called (name, up) in this thread when the camera comes up or goes down.
        on_frame, on_drop, on_reconnect: called (name) per frame, dropped frame, reopen attempt
            (metrics hooks; keep them cheap).
        display_max_width, display_seconds: when both > 0, also keep `display_ring`, the last
            `display_seconds` of WHOLE frames at most `display_max_width` px wide, same sequence
            numbers as `ring` (evidence at a readable resolution).
        seed: seed of the backoff jitter (tests).
        decode_threads: FFmpeg decoding threads (see `open_source`); 0 = OpenCV's default.
        mask: polygons (normalised, whole frame) blanked in every model-size frame before it
            enters the ring; the display ring (evidence) keeps the whole picture.
    """

    def __init__(self, name: str, url: Union[str, int], ring: Optional[RingBuffer] = None, *,
                 settings: Optional[CameraSettings] = None,
                 ring_factory: Optional[Callable[[float], RingBuffer]] = None,
                 on_state: Optional[Callable[[str, bool], None]] = None,
                 on_frame: Optional[Callable[[str], None]] = None,
                 on_drop: Optional[Callable[[str], None]] = None,
                 on_reconnect: Optional[Callable[[str], None]] = None,
                 display_max_width: int = 0, display_seconds: float = 0.0,
                 seed: Optional[int] = None, decode_threads: int = 0,
                 mask: Sequence[Polygon] = ()) -> None:
        super().__init__(name=f"capture-{name}", daemon=True)
        if (ring is None) == (ring_factory is None):
            raise ValueError("give exactly one of ring and ring_factory")
        self.camera = name
        self.spec = parse_source(url)
        self.masked_url = mask_url(self.spec.url)
        self.ring = ring
        self._ring_factory = ring_factory
        s = settings if settings is not None else CameraSettings()
        self.settings = s
        self.fps_hint = s.fps
        self.open_timeout_s = float(s.open_timeout_s)
        self.read_timeout_s = float(s.read_timeout_s)
        self.stall_timeout_s = float(s.stall_timeout_s)
        self.backoff_initial_s = float(s.backoff_initial_s)
        self.backoff_max_s = max(float(s.backoff_max_s), self.backoff_initial_s)
        self.loop = s.loop
        roi = s.roi
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
        self.mask_polygons = tuple(mask)
        self._mask: Optional[FrameMask] = None     # built at model size with the first frame
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
            self._mask = frame_mask(self.mask_polygons, ring.height, ring.width, self.roi)
        disp = self.display_ring
        if disp is not None:
            cv2.resize(frame, (disp.width, disp.height), dst=self._display_scratch,
                       interpolation=cv2.INTER_AREA if w >= disp.width else cv2.INTER_LINEAR)
            cv2.cvtColor(self._display_scratch, cv2.COLOR_BGR2RGB, dst=disp.write_slot())
            disp.commit(t_mono, t_wall, (w, h))
        model_frame(frame, (ring.width, ring.height), self.roi, scratch=self._scratch,
                    out=ring.write_slot(), mask=self._mask)
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

"""Camera sources: URL kinds, opening a source, FFmpeg's process-wide settings and open lock.

Sources (`parse_source`):
    rtsp://, rtsps://, http(s)://  network stream, OpenCV's FFmpeg backend, TCP transport;
    /dev/videoN, webcam:N, N       a V4L2 device;
    path, file://path              a video file, paced in real time at its own fps, looping or once;
    synth://fight?seed=1&...       a live `train.synth.Scene` (kinds fight, collapse, none), looping;
                                   `photo=1`: a photographed person instead (`train.synth_photo`,
                                   collapse and none), which the pose path can see.

FFmpeg options: OpenCV reads `OPENCV_FFMPEG_CAPTURE_OPTIONS` when a capture opens. Setting it
*replaces* OpenCV's own default (`rtsp_transport;tcp`-like `prefer_tcp`), so the value must name
the transport itself. It is set once, when this module is imported (before any capture thread
exists): `setenv` while another thread reads the environment inside FFmpeg is a data race in glibc,
so it must never be set per thread or per open. A value the user exported is left alone.

The capture thread that reads a source into a camera's ring is `streamer/capture.py`.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

from detector.errors import ConfigError

from .masking import mask_url

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
FFMPEG_OPTIONS = "rtsp_transport;tcp"
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
SYNTH_KINDS = ("fight", "collapse", "none")
SYNTH_PARAMS = {"seed": 1, "width": 640, "height": 360, "fps": 15, "frames": 96, "photo": 0}
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
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:       # lone surrogates ("\\udce9" in YAML): OpenCV would crash
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
        raise ConfigError(f"camera url {mask_url(shown)!r}: not valid UTF-8 text") from None
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
            low = {"seed": 0, "width": 16, "height": 16, "photo": 0}.get(key, 1)
            if params[key] < low:
                raise ConfigError(f"camera url {mask_url(text)!r}: parameter {key!r} must be "
                                  f">= {low}")
        if params["photo"] not in (0, 1) or (params["photo"] and kind == "fight"):
            raise ConfigError(f"camera url {mask_url(text)!r}: photo must be 0 or 1, and photo "
                              f"scenes are collapse or none")
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
        # heavy-ish and optional: only synthetic cameras need it
        from train.synth_dataset import make_scene
        self.scene = make_scene(kind, params["seed"], params["width"], params["height"],
                                params["fps"], params["frames"],
                                style="photo" if params["photo"] else "stick")
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

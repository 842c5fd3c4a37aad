"""`vigil bench pipeline`: how many cameras the real daemon holds in real time, how fast it alerts.

For each number of cameras N (and each resolution), the benchmark:

1. writes camera videos with `train.synth.Scene` (640x360 and 1280x720 at 25 fps by default), as
   H.264 when it can (OpenCV's own `avc1`/`H264` writer, else GStreamer's x264enc through the
   system Python's `gi`, else MPEG-4 Part 2 `mp4v`; the table says which);
2. builds a `ServeConfig` with `streamer.config.parse_config` (N file cameras, looping, paced in
   real time by the capture threads; loopback ZeroMQ ports; Prometheus exporter off, the
   daemon's `VigilMetrics` registry is read directly) and runs `streamer.daemon.Daemon` in this
   process, in a thread, with everything it normally runs: capture threads, ring buffers,
   scheduler + batching worker, smoothing and events, journal, publisher, evidence snapshots;
3. after a warm-up, measures for a fixed duration: windows/s against the N * fps / stride due,
   skipped windows and dropped frames (metric deltas), frames captured per camera, CPU time
   (whole process from `getrusage`, and each capture/worker thread from
   `/proc/self/task/<tid>/stat`), and latencies: the `latency_s` of every alert received by a
   real `AlertSubscriber` (capture of the window's last frame -> alert published) and, for every
   window, capture of its last frame -> its result reaching the event loop;
4. finds the largest N that holds real time (`holds_real_time`) by bisection
   (`find_max_cameras`), reusing every point measured.

The pose path (`pose`): `off` (the default here, `model.pose: null`: what the rows before issue
24 measured), `both` (the daemon's default: every camera watches fight and collapse, so the
video detector and BlazePose both run) or `only` (every camera watches collapse only, as a care
room: BlazePose alone). With the pose path on, the camera files show a photographed person
(`train.synth_photo`), so BlazePose tracks someone in every frame it looks at (the costly case:
an empty room is looked at half as often), and a point holds real time only if every camera's
pose path also got at least 95% of the frames a second it samples from the camera
(`streamer.pose.worker.sampled_fps`: 8 at 8 fps, 7.5 at 15 fps, 8.3 at 25 fps).

Alert load: the weights are random, so no real event would ever start. With `alerts=
"every-window"` (default) the smoothing thresholds are set so that each camera/class opens an
event at its first window and every later window publishes an `update` (update interval 0, no
minimum change): every window's result goes through journal commit and publish, which is what
gives the latency distribution (and is a worst case for the journal: 2 commits per window).
`alerts="events"` keeps the production smoothing (and so measures only the window latency).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from detector.errors import ConfigError, VigilError
from detector.runtime import resolve_device
from detector.timing import median, percentile, ratio

from detector.pose.sequence import POSE_FPS
from streamer.pose.worker import sampled_fps

from .harness import SYSTEM_PYTHON, free_port, system_python_env
from .kit import BenchReport, Section, bench_env

log = logging.getLogger(__name__)

RESOLUTIONS = ((640, 360), (1280, 720))
# The GStreamer encoder run by the system Python (python3-gi is built for it, not for a venv):
# raw BGR frames on stdin -> H.264 (x264, no B-frames, a key frame every 2 s, as IP cameras do).
_GST_ENCODE = r"""
import sys, gi
gi.require_version('Gst', '1.0')
from gi.repository import Gst
Gst.init(None)
w, h, fps, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
location = out.replace('\\', '\\\\').replace('"', '\\"')
p = Gst.parse_launch(
    f'fdsrc fd=0 blocksize={w * h * 3} ! rawvideoparse width={w} height={h} format=bgr '
    f'framerate={fps}/1 ! videoconvert ! x264enc speed-preset=veryfast key-int-max={2 * fps} '
    f'bframes=0 ! h264parse ! mp4mux ! filesink location="{location}"')
p.set_state(Gst.State.PLAYING)
msg = p.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE,
                                     Gst.MessageType.EOS | Gst.MessageType.ERROR)
ok = msg is not None and msg.type == Gst.MessageType.EOS
if not ok and msg is not None:
    err, dbg = msg.parse_error()
    print(err.message, dbg, file=sys.stderr)
p.set_state(Gst.State.NULL)
sys.exit(0 if ok else 1)
"""


# =============================================================================== bisection
def find_max_cameras(holds: Callable[[int], bool], lo: int, hi: int) -> int:
    """The largest n in [lo, hi] for which `holds(n)` is true, by bisection.

    Assumes `holds` is monotone (true up to some limit, false beyond). Probes `lo` first, then
    `hi`, then halves the interval: at most 2 + ceil(log2(hi - lo)) calls, each n at most once.

    Args:
        holds: whether the system keeps up with n (e.g. n cameras in real time).
        lo, hi: the search range, 1 <= lo <= hi.
    Returns:
        The limit, or lo - 1 when even `lo` does not hold.
    """
    if lo < 0 or hi < lo:
        raise ValueError(f"need 0 <= lo <= hi, got lo={lo}, hi={hi}")
    if not holds(lo):
        return lo - 1
    if hi == lo or holds(hi):
        return hi
    good, bad = lo, hi                  # invariant: holds(good), not holds(bad)
    while bad - good > 1:
        mid = (good + bad) // 2
        if holds(mid):
            good = mid
        else:
            bad = mid
    return good


# =============================================================================== measurements
@dataclass
class PointStats:
    """What was measured for N cameras at one resolution (raw counts; rates are derived).

    Attributes:
        cameras, width, height, fps, stride: the workload.
        codec: how the camera files are encoded.
        duration_s: measured wall time (warm-up excluded).
        frames: frames captured per camera during the measurement.
        windows: windows inferred (all cameras).
        skipped: due windows skipped (overload) or overwritten before their gather.
        dropped: frames lost before the ring buffers.
        cpu_s: process CPU seconds (user + system).
        capture_cpu_s: CPU seconds of each capture thread.
        worker_cpu_s: CPU seconds of the inference worker thread (torch's own pool excluded).
        batches, batch_windows, batch_seconds: batches run, windows in them, their total time.
        alert_latencies: `latency_s` of the alerts received (capture -> published).
        window_latencies: capture of a window's last frame -> its result at the event loop.
        pose: the pose path's mode (`off`, `both`, `only`).
        pose_frames: frames the pose path tracked per camera; pose_cpu_s: CPU seconds of the
            pose threads.
        error: why the point could not be measured (counts as not holding).
    """
    cameras: int
    width: int
    height: int
    fps: float
    stride: int
    codec: str = ""
    duration_s: float = 0.0
    frames: list[int] = field(default_factory=list)
    windows: int = 0
    skipped: int = 0
    dropped: int = 0
    cpu_s: float = 0.0
    capture_cpu_s: list[float] = field(default_factory=list)
    worker_cpu_s: float = 0.0
    batches: int = 0
    batch_windows: int = 0
    batch_seconds: float = 0.0
    alert_latencies: list[float] = field(default_factory=list)
    window_latencies: list[float] = field(default_factory=list)
    pose: str = "off"
    pose_frames: list[int] = field(default_factory=list)
    pose_cpu_s: float = 0.0
    error: str = ""

    @property
    def expected_windows_per_s(self) -> float:
        return 0.0 if self.pose == "only" else self.cameras * self.fps / self.stride

    def pose_fps(self) -> list[float]:
        return [f / self.duration_s for f in self.pose_frames] if self.duration_s > 0 else []

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.duration_s if self.duration_s > 0 else 0.0

    def capture_fps(self) -> list[float]:
        return [f / self.duration_s for f in self.frames] if self.duration_s > 0 else []


def holds_real_time(p: PointStats, tolerance: float = 0.95) -> tuple[bool, str]:
    """Whether a measured point kept up with real time.

    Holds when: no skipped window, no dropped frame, every camera captured at least
    `tolerance` of its frame rate (a starved capture thread falls behind instead of dropping),
    the windows inferred reached `tolerance` of those due (minus one per camera for the
    measurement's edges), and, with the pose path on, every camera's pose path tracked at least
    `tolerance` of the frames a second it samples from the camera (`sampled_fps`).

    Returns:
        (holds, the first reason it does not, or "").
    """
    if p.error:
        return False, p.error
    if p.skipped:
        return False, f"{p.skipped} skipped windows"
    if p.dropped:
        return False, f"{p.dropped} dropped frames"
    rates = p.capture_fps()
    if not rates or min(rates) < tolerance * p.fps:
        low = min(rates) if rates else 0.0
        return False, f"capture behind: slowest camera {low:.1f} of {p.fps:g} fps"
    due = p.expected_windows_per_s * p.duration_s
    if p.windows < tolerance * due - p.cameras:
        return False, f"{p.windows} windows inferred of {due:.0f} due"
    if p.pose != "off":
        want = sampled_fps(p.fps, POSE_FPS)
        pose = p.pose_fps()
        if not pose or min(pose) < tolerance * want:
            return False, (f"pose path behind: slowest camera {min(pose) if pose else 0.0:.1f} "
                           f"of {want:g} frames/s")
    return True, ""


def latency_summary(samples: Sequence[float]) -> dict[str, Optional[float]]:
    """p50/p95/p99 of latencies in seconds (None without samples)."""
    if not samples:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{q}": percentile(samples, q) for q in (50, 95, 99)}


def point_row(p: PointStats) -> dict[str, Any]:
    """One table row, every rate derived from the point's raw counts."""
    ok, why = holds_real_time(p)
    rates = p.capture_fps()
    alert = latency_summary(p.alert_latencies)
    win = latency_summary(p.window_latencies)
    cpu_pct = 100.0 * p.cpu_s / p.duration_s if p.duration_s > 0 else None
    return {
        "cameras": p.cameras, "resolution": f"{p.width}x{p.height}", "codec": p.codec,
        "fps": int(p.fps) if float(p.fps).is_integer() else p.fps, "stride": p.stride,
        "seconds": p.duration_s,
        "windows/s": p.windows_per_s, "due/s": p.expected_windows_per_s,
        "skipped": p.skipped, "dropped": p.dropped,
        "capture fps (min)": min(rates) if rates else None,
        "CPU % per camera": (cpu_pct / p.cameras) if cpu_pct is not None else None,
        "capture CPU % per camera": (100.0 * median(p.capture_cpu_s) / p.duration_s
                                     if p.capture_cpu_s and p.duration_s > 0 else None),
        "worker CPU %": 100.0 * p.worker_cpu_s / p.duration_s if p.duration_s > 0 else None,
        "pose": p.pose,
        "pose fps (min)": min(p.pose_fps()) if p.pose_frames else None,
        "pose CPU % per camera": (100.0 * p.pose_cpu_s / p.duration_s / p.cameras
                                  if p.pose != "off" and p.duration_s > 0 else None),
        "batch (mean)": ratio(p.batch_windows, p.batches),
        "ms/batch": (1e3 * p.batch_seconds / p.batches) if p.batches else None,
        "alerts": len(p.alert_latencies),
        "alert p50 s": alert["p50"], "alert p95 s": alert["p95"], "alert p99 s": alert["p99"],
        "window p50 s": win["p50"], "window p95 s": win["p95"], "window p99 s": win["p99"],
        "holds": "yes" if ok else f"no: {why}",
    }


POINT_COLUMNS = ["cameras", "resolution", "codec", "fps", "stride", "seconds", "windows/s",
                 "due/s", "skipped", "dropped", "capture fps (min)", "CPU % per camera",
                 "capture CPU % per camera", "worker CPU %", "pose", "pose fps (min)",
                 "pose CPU % per camera", "batch (mean)", "ms/batch", "alerts",
                 "alert p50 s", "alert p95 s", "alert p99 s", "window p50 s", "window p95 s",
                 "window p99 s", "holds"]


# =============================================================================== CPU time
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def pid_cpu_seconds(pid: Optional[int]) -> float:
    """User + system CPU seconds of another process (a capture process; 0.0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def thread_cpu_seconds(native_id: Optional[int]) -> float:
    """User + system CPU seconds of one thread of this process (0.0 when unknown)."""
    if native_id is None:
        return 0.0
    try:
        text = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the command name (which may hold spaces, hence the last ')'): state is
    # field 3, utime and stime are fields 14 and 15 (proc(5)).
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# =============================================================================== camera files
@dataclass(frozen=True)
class Encoder:
    """How camera files are written: `kind` opencv/gstreamer, the fourcc for OpenCV, a label."""
    kind: str
    fourcc: str
    label: str


def _opencv_writes(fourcc: str, directory: Path) -> bool:
    """Whether this OpenCV build writes `fourcc` to MP4 and reads it back."""
    import cv2
    import numpy as np

    path = directory / f"probe-{fourcc}.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (64, 48))
    try:
        if not writer.isOpened():
            return False
        for _ in range(3):
            writer.write(np.zeros((48, 64, 3), np.uint8))
    finally:
        writer.release()
    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()
        path.unlink(missing_ok=True)


def _gstreamer_h264_available() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = ("import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; "
             "Gst.init(None); import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
             "('rawvideoparse', 'x264enc', 'h264parse', 'mp4mux')) else 1)")
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], env=system_python_env(),
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_encoder(directory: str | Path) -> Encoder:
    """H.264 when possible: OpenCV `avc1`/`H264`, else GStreamer x264enc, else `mp4v`."""
    import cv2

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for fourcc in ("avc1", "H264"):
        if _opencv_writes(fourcc, directory):
            return Encoder("opencv", fourcc, f"H.264 (OpenCV {fourcc})")
    log.info("this OpenCV build (%s) cannot write H.264", cv2.__version__)
    if _gstreamer_h264_available():
        return Encoder("gstreamer", "", "H.264 (GStreamer x264enc)")
    log.warning("no H.264 encoder (OpenCV or GStreamer x264enc): camera files are MPEG-4 Part 2 "
                "(mp4v), which decodes faster than the H.264 real cameras send")
    return Encoder("opencv", "mp4v", "MPEG-4 Part 2 (OpenCV mp4v)")


def write_camera_video(path: str | Path, width: int, height: int, fps: int, frames: int,
                       kind: str, seed: int, encoder: Encoder, style: str = "stick") -> Path:
    """Render a synthetic scene (`train.synth_dataset.make_scene` of `style`) to a camera file.

    Raises:
        VigilError: the encoder failed.
    """
    import cv2

    from train.synth_dataset import make_scene

    path = Path(path)
    scene = make_scene(kind, seed, width, height, fps, frames, style=style)
    if encoder.kind == "gstreamer":
        # stderr to a file, not a pipe: a chatty encoder must not block while we feed stdin.
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([SYSTEM_PYTHON, "-c", _GST_ENCODE, str(width), str(height),
                                     str(int(fps)), str(path)], stdin=subprocess.PIPE,
                                    stderr=err, env=system_python_env())
            assert proc.stdin is not None
            try:
                for i in range(frames):
                    proc.stdin.write(scene.render(i).tobytes())
                proc.stdin.close()
                proc.wait(timeout=300)
            except (BrokenPipeError, subprocess.TimeoutExpired) as exc:
                proc.kill()
                proc.wait()
                raise VigilError(f"{path}: GStreamer H.264 encoder failed: {exc}") from None
            if proc.returncode != 0:
                err.seek(0)
                tail = err.read().decode(errors="replace").strip()[-300:]
                raise VigilError(f"{path}: GStreamer H.264 encoder failed: {tail}")
        return path
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*encoder.fourcc), fps,
                             (width, height))
    if not writer.isOpened():
        raise VigilError(f"{path}: cannot open a video writer (fourcc {encoder.fourcc})")
    try:
        for i in range(frames):
            writer.write(scene.render(i))
    finally:
        writer.release()
    return path


def make_camera_videos(directory: str | Path, width: int, height: int, fps: int, seconds: float,
                       variants: int, encoder: Encoder, person: bool = False) -> list[Path]:
    """`variants` different scenes (fight/collapse/none in turn; with `person`, a photographed
    person falling or standing, whom the pose path tracks); cameras cycle through them."""
    from train.synth import KINDS
    from train.synth_photo import PHOTO_KINDS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    frames = max(16, int(round(seconds * fps)))
    kinds, style = (PHOTO_KINDS, "photo") if person else (KINDS, "stick")
    out = []
    for v in range(variants):
        path = directory / f"cam{v}_{width}x{height}_{fps}fps{'_person' if person else ''}.mp4"
        if not path.exists():
            write_camera_video(path, width, height, fps, frames, kinds[v % len(kinds)], 100 + v,
                               encoder, style=style)
        out.append(path)
    return out


# =============================================================================== the daemon
def bench_checkpoint(directory: str | Path, model: str, clip_seconds: float = 2.0) -> Path:
    """A random-init checkpoint of the seed model (`ModelConfig()`) or the CPU model.

    Throughput does not depend on the weights; `clip_seconds` makes windows span 2 s as a
    trained checkpoint's would (16 of the last 50 frames at 25 fps).
    """
    import torch

    from .bench_model import load_cpu_model_config
    from detector.checkpoint import save_checkpoint
    from detector.config import ModelConfig
    from detector.model import build_model

    if model == "seed":
        cfg = ModelConfig()
    elif model == "cpu":
        cfg = load_cpu_model_config()
    else:
        raise ConfigError(f"--model: unknown model {model!r} (seed, cpu)")
    cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, clip_seconds=clip_seconds),
                              backbone=dataclasses.replace(cfg.backbone, pretrained=None))
    torch.manual_seed(0)
    path = Path(directory) / f"bench-{model}.pt"
    return save_checkpoint(path, build_model(cfg), cfg)


def pipeline_config(data_dir: Path, checkpoint: Path, videos: Sequence[Path], cameras: int,
                    stride: int, device: str, precision: str, max_batch: int, max_wait_ms: float,
                    threads: Optional[int], alerts: str, pose: str = "off",
                    pose_workers: int = 1,
                    accel: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The daemon config of one measurement, as the YAML mapping `parse_config` takes
    (`accel`: the daemon's `accel:` section, e.g. `{"device_ring": True}`)."""
    data: dict[str, Any] = {
        "data_dir": str(data_dir),
        "defaults": {"stride": stride, "loop": True},
        "cameras": [{"name": f"cam{i:03d}", "url": str(videos[i % len(videos)])}
                    for i in range(cameras)],
        "model": {"checkpoint": str(checkpoint), "device": device, "precision": precision,
                  "max_batch": max_batch, "max_wait_ms": max_wait_ms, "threads": threads},
        "alerts": {"endpoint": f"tcp://127.0.0.1:{free_port()}",
                   "replay_endpoint": f"tcp://127.0.0.1:{free_port()}", "heartbeat_s": 1.0},
        # Snapshots keep the per-frame display ring (production cost); clips would only add
        # N x classes MP4 encodes at shutdown, after the measurement.
        "evidence": {"enabled": True, "snapshot": True, "clip": False},
        "metrics": {"enabled": False},
        "accel": dict(accel or {}),
    }
    if pose == "off":
        data["model"]["pose"] = None
    elif pose in ("both", "only"):
        data["model"]["pose"] = {"checkpoint": "vigil", "workers": pose_workers}
        if pose == "only":
            data["defaults"]["events"] = ["collapse"]
    else:
        raise ConfigError(f"--pose: {pose!r} (off, both, only)")
    if alerts == "every-window":
        data["smoothing"] = {"on_threshold": 0.001, "off_threshold": 0.0, "min_windows": 1,
                             "cooldown_s": 3600.0, "update_interval_s": 0.0,
                             "min_score_delta": 0.0}
    elif alerts != "events":
        raise ConfigError(f"--alerts: {alerts!r} (every-window, events)")
    return data


def _bench_daemon_class() -> type:
    """`Daemon` plus two hooks: a ready event, and each window's capture -> event loop latency."""
    from streamer.daemon import Daemon
    from streamer.notify import Notifier

    class ReadyNotifier(Notifier):
        def __init__(self) -> None:
            super().__init__(None)
            self.ready_event = threading.Event()

        def ready(self, status: Optional[str] = None) -> bool:
            self.ready_event.set()
            return super().ready(status)

    class BenchDaemon(Daemon):
        def __init__(self, cfg: Any) -> None:
            self.ready_notifier = ReadyNotifier()
            super().__init__(cfg, notifier=self.ready_notifier)
            self.window_latency: list[tuple[float, float]] = []   # (arrival, latency)

        def _handle(self, results: list) -> None:       # the event loop's thread
            now = time.monotonic()
            self.window_latency.extend((now, now - r.t_end_mono) for r in results)
            super()._handle(results)

    return BenchDaemon


class _AlertCollector(threading.Thread):
    """Receives every alert with a real `AlertSubscriber` (its sockets live in this thread)."""

    def __init__(self, endpoint: str, replay_endpoint: str) -> None:
        super().__init__(name="bench-alerts", daemon=True)
        self.endpoint, self.replay_endpoint = endpoint, replay_endpoint
        self.received: list[tuple[float, dict]] = []    # (monotonic arrival, alert)
        self.ready = threading.Event()
        self.error: Optional[BaseException] = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        from streamer.subscriber import AlertSubscriber

        try:
            with AlertSubscriber(self.endpoint, self.replay_endpoint) as sub:
                self.ready.set()
                while not self._stop_event.is_set():
                    msg = sub.poll(timeout=0.2)
                    if msg is not None:
                        self.received.append((time.monotonic(), msg))
        except BaseException as exc:   # reported by the benchmark, not raised in a thread
            self.error = exc
            self.ready.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout)


def _sample(registry: Any, name: str, labels: Optional[dict[str, str]] = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return float(value) if value is not None else 0.0


@dataclass
class _Snapshot:
    t: float
    cpu: float
    frames: dict[str, float]
    pose_frames: dict[str, float]
    dropped: float
    windows: float
    skipped: float
    thread_cpu: dict[str, float]
    batches: float
    batch_windows: float
    batch_seconds: float


def _snapshot(daemon: Any, names: Sequence[str]) -> _Snapshot:
    from streamer.capture import CaptureThread
    from streamer.pose.worker import PoseWorker
    from streamer.worker import WorkerThread

    reg = daemon.metrics.registry
    threads = {}
    # Capture processes (accel.capture: processes): their own CPU time, read from /proc, is
    # the capture's and counts in the whole daemon's.
    children = 0.0
    for name, cam in dict(getattr(daemon, "_cams", {})).items():
        pid = getattr(cam.thread, "pid", None)
        if pid is not None:
            threads[f"capture:{name}"] = pid_cpu_seconds(pid)
            children += threads[f"capture:{name}"]
    for t in threading.enumerate():
        if isinstance(t, CaptureThread):
            threads[f"capture:{t.camera}"] = thread_cpu_seconds(t.native_id)
        elif isinstance(t, WorkerThread):
            threads["worker"] = thread_cpu_seconds(t.native_id)
        elif isinstance(t, PoseWorker):
            threads[f"pose:{t.name}"] = thread_cpu_seconds(t.native_id)
    return _Snapshot(
        t=time.monotonic(), cpu=process_cpu_seconds() + children,
        frames={n: _sample(reg, "vigil_frames_total", {"camera": n}) for n in names},
        pose_frames={n: _sample(reg, "vigil_pose_frames_total", {"camera": n}) for n in names},
        dropped=sum(_sample(reg, "vigil_frames_dropped_total", {"camera": n}) for n in names),
        windows=sum(_sample(reg, "vigil_windows_total", {"camera": n}) for n in names),
        skipped=sum(_sample(reg, "vigil_windows_skipped_total", {"camera": n}) for n in names),
        thread_cpu=threads,
        batches=_sample(reg, "vigil_batch_size_count"),
        batch_windows=_sample(reg, "vigil_batch_size_sum"),
        batch_seconds=_sample(reg, "vigil_inference_seconds_sum"))


def measure_point(cfg_data: dict[str, Any], point: PointStats, warmup_s: float,
                  duration_s: float, start_timeout_s: float = 120.0) -> PointStats:
    """Run the daemon on `cfg_data` and fill `point` with what was measured.

    Args:
        cfg_data: from `pipeline_config`.
        point: the workload description; its measured fields are filled in.
        warmup_s: seconds after READY that are not measured (first batches, ring fill).
        duration_s: measured seconds.
        start_timeout_s: longest wait for the daemon's READY.
    Returns:
        `point` (with `error` set when the daemon failed).
    """
    from streamer.config import parse_config

    cfg = parse_config(cfg_data, source="bench")
    names = [c.name for c in cfg.enabled_cameras]
    daemon = _bench_daemon_class()(cfg)
    outcome: dict[str, Any] = {}

    def serve() -> None:
        try:
            outcome["code"] = daemon.run()
        except BaseException as exc:   # reported below
            outcome["error"] = exc

    runner = threading.Thread(target=serve, name="bench-daemon", daemon=True)
    runner.start()
    collector: Optional[_AlertCollector] = None
    try:
        deadline = time.monotonic() + start_timeout_s
        while not daemon.ready_notifier.ready_event.wait(0.1):
            if not runner.is_alive() or time.monotonic() > deadline:
                point.error = str(outcome.get("error") or "daemon did not become ready")
                return point
        collector = _AlertCollector(cfg.alerts.endpoint, cfg.alerts.replay_endpoint)
        collector.start()
        collector.ready.wait(10.0)
        # A camera's first window comes only once its ring spans a whole window (2 s with the
        # bench checkpoint): the warm-up starts when every camera has had one.
        reg = daemon.metrics.registry
        waiting = list(names)
        first = "vigil_pose_windows_total" if point.pose == "only" else "vigil_windows_total"
        while waiting and runner.is_alive() and time.monotonic() < deadline:
            waiting = [n for n in waiting if _sample(reg, first, {"camera": n}) < 1]
            time.sleep(0.1)
        if waiting:
            point.error = (f"{len(waiting)} camera(s) had no window within "
                           f"{start_timeout_s:.0f} s of start (first: {waiting[0]})")
            return point
        time.sleep(warmup_s)
        a = _snapshot(daemon, names)
        time.sleep(duration_s)
        b = _snapshot(daemon, names)
        if not runner.is_alive():
            point.error = str(outcome.get("error") or f"daemon exited ({outcome.get('code')})")
        point.duration_s = b.t - a.t
        point.frames = [int(b.frames[n] - a.frames[n]) for n in names]
        point.windows = int(b.windows - a.windows)
        point.skipped = int(b.skipped - a.skipped)
        point.dropped = int(b.dropped - a.dropped)
        point.cpu_s = b.cpu - a.cpu
        point.capture_cpu_s = [b.thread_cpu[k] - a.thread_cpu.get(k, 0.0)
                               for k in b.thread_cpu if k.startswith("capture:")]
        point.worker_cpu_s = b.thread_cpu.get("worker", 0.0) - a.thread_cpu.get("worker", 0.0)
        point.pose_frames = [int(b.pose_frames[n] - a.pose_frames[n]) for n in names]
        point.pose_cpu_s = sum(b.thread_cpu[k] - a.thread_cpu.get(k, 0.0)
                               for k in b.thread_cpu if k.startswith("pose:"))
        point.batches = int(b.batches - a.batches)
        point.batch_windows = int(b.batch_windows - a.batch_windows)
        point.batch_seconds = b.batch_seconds - a.batch_seconds
        point.window_latencies = [lat for t, lat in list(daemon.window_latency) if a.t <= t <= b.t]
        point.alert_latencies = [float(m["latency_s"]) for t, m in list(collector.received)
                                 if a.t <= t <= b.t and m.get("type") in ("start", "update")
                                 and m.get("latency_s") is not None]
        if collector.error is not None:
            log.warning("alert subscriber failed: %s", collector.error)
    finally:
        daemon.request_stop()
        runner.join(60.0)
        if collector is not None:
            collector.stop()
        if runner.is_alive():
            log.error("the daemon did not stop within 60 s")
    return point


# =============================================================================== the benchmark
@dataclass
class PipelineBenchOptions:
    """What `vigil bench pipeline` measures.

    Args:
        device: "auto", "cpu", "cuda", "cuda:N".
        quick: short points (3 s warm-up, 6 s measured), bisection up to 4 cameras.
        cameras: numbers of cameras to measure in any case.
        bisect: search the largest N that holds real time.
        max_cameras: the bisection's upper bound (default: 4 --quick, 16 on CPU, 128 on CUDA).
        min_cameras: the bisection's lower bound (a limit below it is reported as min - 1).
        resolutions: (width, height) of the camera files.
        fps, stride: camera frame rate and the daemon's stride.
        duration_s, warmup_s: measured and unmeasured seconds per point.
        model: "cpu" (cpu-small.yaml) or "seed", random-init; or `checkpoint`.
        precision, max_batch, max_wait_ms, threads: the daemon's `model:` settings.
        alerts: "every-window" or "events" (see the module docstring).
        video_seconds: length of each camera file (it loops).
        start_timeout_s: a point whose cameras have not all delivered a window this long after
            the daemon starts does not hold real time (far above the limit, a point would
            otherwise spend minutes starting up).
        workdir: where files, checkpoint and journal go (default: a temporary folder, removed).
        pose, pose_workers: the pose path (`off`, `both`, `only`; module docstring) and its
            threads (`model.pose.workers`).
        accel: the daemon's `accel:` section (`--accel KEY=VALUE`), e.g. device rings and
            capture processes; their CPU time counts in the process's.
    """
    device: str = "auto"
    quick: bool = False
    cameras: Sequence[int] = ()
    bisect: bool = True
    max_cameras: Optional[int] = None
    min_cameras: int = 1
    resolutions: Sequence[tuple[int, int]] = RESOLUTIONS
    fps: int = 25
    stride: int = 8
    duration_s: Optional[float] = None
    warmup_s: Optional[float] = None
    model: Optional[str] = None
    checkpoint: Optional[str] = None
    precision: str = "auto"
    max_batch: Optional[int] = None
    max_wait_ms: float = 50.0
    threads: Optional[int] = None
    alerts: str = "every-window"
    video_seconds: float = 8.0
    start_timeout_s: float = 120.0
    workdir: Optional[str] = None
    command: Optional[str] = None
    pose: str = "off"
    pose_workers: int = 1
    accel: Optional[dict[str, Any]] = None


def run_pipeline_bench(opts: PipelineBenchOptions) -> BenchReport:
    """Measure the daemon; see the module docstring."""
    device = resolve_device(opts.device)
    cuda = device.type == "cuda"
    env = bench_env(device, opts.command)
    duration = opts.duration_s or (6.0 if opts.quick else 30.0)
    warmup = opts.warmup_s if opts.warmup_s is not None else (3.0 if opts.quick else 5.0)
    hi = opts.max_cameras or (4 if opts.quick else (128 if cuda else 16))
    lo = max(1, int(opts.min_cameras))
    if opts.bisect and lo > hi:
        raise ConfigError(f"--min-cameras {lo} is above --max-cameras {hi}")
    model = opts.model or ("seed" if cuda else "cpu")
    max_batch = opts.max_batch or (32 if cuda else 8)
    own_dir = opts.workdir is None
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="vigil-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report = BenchReport("vigil bench pipeline", env)
    try:
        encoder = choose_encoder(work / "videos")
        ckpt = Path(opts.checkpoint) if opts.checkpoint else bench_checkpoint(work, model)
        largest = max([hi if opts.bisect else 1, *map(int, opts.cameras)])
        variants = max(1, min(4, largest))      # distinct scenes; cameras cycle through them
        limits, rows = [], []
        for width, height in opts.resolutions:
            videos = make_camera_videos(work / "videos", width, height, opts.fps,
                                        opts.video_seconds, variants, encoder,
                                        person=opts.pose != "off")
            measured: dict[int, PointStats] = {}

            def point(n: int, width: int = width, height: int = height,
                      videos: list[Path] = videos, measured: dict = measured) -> PointStats:
                if n not in measured:
                    data_dir = work / f"data-{width}x{height}-{n}"
                    shutil.rmtree(data_dir, ignore_errors=True)
                    cfg = pipeline_config(data_dir, ckpt, videos, n, opts.stride, str(device),
                                          opts.precision, max_batch, opts.max_wait_ms,
                                          opts.threads, opts.alerts, opts.pose,
                                          opts.pose_workers, opts.accel)
                    p = PointStats(n, width, height, float(opts.fps), opts.stride,
                                   codec=encoder.label, pose=opts.pose)
                    log.info("pipeline: %d camera(s) at %dx%d for %.0f s", n, width, height,
                             duration)
                    measured[n] = measure_point(cfg, p, warmup, duration,
                                                start_timeout_s=opts.start_timeout_s)
                    ok, why = holds_real_time(measured[n])
                    log.info("pipeline: %d camera(s) at %dx%d: %.1f windows/s, %s", n, width,
                             height, measured[n].windows_per_s, "holds" if ok else why)
                return measured[n]

            for n in opts.cameras:
                point(int(n))
            if opts.bisect:
                best = find_max_cameras(lambda n: holds_real_time(point(n))[0], lo, hi)
                limits.append({"resolution": f"{width}x{height}", "codec": encoder.label,
                               "fps": opts.fps, "stride": opts.stride,
                               "max cameras in real time": best,
                               "searched": f"{lo}..{hi}",
                               "points measured": ", ".join(map(str, sorted(measured))),
                               "note": (f"upper bound {hi} held: raise --max-cameras"
                                        if best == hi else
                                        f"lower bound {lo} did not hold: lower --min-cameras"
                                        if best < lo else "")})
            rows += [point_row(measured[n]) for n in sorted(measured)]
        report.sections.append(Section(
            "Pipeline: the real daemon on file cameras paced in real time", POINT_COLUMNS, rows,
            [f"model: {ckpt.name} ({model if not opts.checkpoint else 'given checkpoint'}), "
             f"device {device}, precision {opts.precision}, max_batch {max_batch}, "
             f"max_wait_ms {opts.max_wait_ms:g}, alerts {opts.alerts}, pose path "
             f"{opts.pose}" + (f" ({opts.pose_workers} thread(s), cameras show a photographed "
                               "person)" if opts.pose != "off" else "")
             + (", accel " + ", ".join(f"{k}={v}" for k, v in opts.accel.items())
                if opts.accel else ", accel: none (today's path)"),
             f"{warmup:g} s warm-up, then {duration:g} s measured per point; windows/s and CPU "
             "from metric and /proc deltas over that interval",
             "alert latency: `latency_s` of the start/update alerts received over ZeroMQ "
             "(capture of the window's last frame -> journalled and published); window "
             "latency: the same capture -> result at the event loop",
             "CPU % per camera: the whole process (decode, resize, inference, events) / N; "
             "capture CPU: median capture thread (decode + resize)",
             "holds: no skipped window, no dropped frame, every camera captured >= 95% of its "
             "fps, >= 95% of the due windows inferred, and (pose path on) >= 95% of the pose "
             "frames/s per camera"]))
        if limits:
            report.sections.append(Section(
                "Largest number of cameras in real time (bisection)",
                ["resolution", "codec", "fps", "stride", "max cameras in real time",
                 "searched", "points measured", "note"], limits))
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    return report

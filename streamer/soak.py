"""`vigil soak`: run the real daemon for a while under churn and check that nothing grows.

The soak starts `vigil serve` as a child process on loopback with several cameras:

* file-backed cameras: synthetic videos (`train.synth`) written once, read as looping files;
* RTSP cameras: GStreamer's RTSP server (`tests/rtsp_server.py`, run with the system Python
  that has python3-gi) killed and restarted every `restart_every_s`, so the daemon goes through
  camera-lost / reconnect cycles, events ending with `camera_lost`, evidence clips;
* a flapping subscriber: an `AlertSubscriber` connected for `flap_every_s`, then gone for as
  long, again and again (replay on every reconnect);

and samples the daemon's resident memory, thread count, open file descriptors (`/proc/<pid>`)
and its windows per second (`/metrics`) every `sample_every_s`. It writes `soak.csv` and
`soak.png` into the output folder.

Pass/fail ("grows without bound"): for RSS, threads and fds a least-squares line is fitted over
the SECOND half of the run (the first half holds the warm-up: allocator arenas, model caches,
the journal's page cache) and its growth over that half, slope x duration, must stay under a
budget: RSS `RSS_BUDGET_MIB` MiB, threads `THREAD_BUDGET`, fds `FD_BUDGET`. A leak of one fd or
thread per RTSP reconnect, or ~0.1 MiB per second, exceeds these within a 5-minute soak. The
windows rate must not decay: the mean windows/s of the last quarter must be at least
`MIN_RATE_RATIO` of the second quarter's. The daemon must also still be alive at the end and
stop cleanly on SIGTERM.

The first part of this module, `DaemonProcess` and `NotifyListener`, is the harness the fault
injection tests (`tests/test_faults.py`, `tests/test_security.py`) use as well: the daemon as a
real process with a notify socket standing in for systemd, its logs kept, `/metrics` parsed with
prometheus-client's own parser.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RTSP_SCRIPT = REPO / "tests" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"

RSS_BUDGET_MIB = 24.0
THREAD_BUDGET = 3.0
FD_BUDGET = 12.0
MIN_RATE_RATIO = 0.7


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --------------------------------------------------------------------------- the harness
class NotifyListener:
    """The sd_notify end systemd would hold: an AF_UNIX datagram socket on a short path, read by a
    background thread so every datagram is timestamped when it arrives (and the daemon's sends
    never find the queue full).

    Attributes:
        path: what to put in the child's `NOTIFY_SOCKET`.
        received: (monotonic arrival time, datagram) in arrival order.
    """

    def __init__(self) -> None:
        # AF_UNIX paths are limited to 108 bytes: a test's tmp_path can be longer.
        self.dir = tempfile.mkdtemp(prefix="vn")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.received.append((time.monotonic(), data))

    def times(self, line: bytes) -> list[float]:
        """Arrival times of the datagrams holding the `line` assignment (e.g. b"WATCHDOG=1")."""
        with self._lock:
            return [t for t, d in self.received if line in d.split(b"\n")]

    def wait_for(self, line: bytes, timeout: float, after: float = -math.inf) -> bool:
        """True once a datagram holding `line` arrived at or after monotonic time `after`."""
        return bool(wait_until(lambda: any(t >= after for t in self.times(line)), timeout,
                               interval=0.05))

    def close(self) -> None:
        self._closed.set()
        self._thread.join(1.0)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class DaemonProcess:
    """`vigil serve` as a child process, its stderr in `workdir/daemon.log`.

    Args:
        workdir: where the config and the log are written.
        config: the daemon config (a dict, written as YAML), or YAML text.
        log_format: `text` or `json` (the command line's `--log-format`).
        env: extra environment variables for the child.
        watchdog_usec: sets `WATCHDOG_USEC` (the daemon then pings at half this interval).
        prelude: Python code run in the child before `vigil` starts (fault injection in tests).
        preexec_fn: run in the child before exec (e.g. `resource.setrlimit`).
    """

    def __init__(self, workdir: Path, config: dict | str, log_format: str = "text",
                 env: Optional[dict[str, str]] = None, watchdog_usec: Optional[int] = None,
                 prelude: Optional[str] = None,
                 preexec_fn: Optional[Callable[[], None]] = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = self.workdir / "vigil.yaml"
        self.log_path = self.workdir / "daemon.log"
        self.log_format = log_format
        self.env = dict(env or {})
        self.watchdog_usec = watchdog_usec
        self.prelude = prelude
        self.preexec_fn = preexec_fn
        self.notify = NotifyListener()
        self.proc: Optional[subprocess.Popen] = None
        self._log_file: Any = None
        self.write_config(config)

    # ---- config
    def write_config(self, config: dict | str) -> None:
        """Write the config atomically (a reload never reads half a file)."""
        import yaml

        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    @property
    def metrics_port(self) -> int:
        assert isinstance(self.config, dict)
        return int(self.config["metrics"]["port"])

    # ---- lifecycle
    def command(self) -> list[str]:
        args = ["--log-format", self.log_format, "serve", "--config", str(self.config_path)]
        if self.prelude is None:
            return [sys.executable, "-m", "streamer.cli", *args]
        code = (f"{self.prelude}\nimport sys\nfrom streamer.cli import main\n"
                "sys.exit(main(sys.argv[1:]))")
        return [sys.executable, "-c", code, *args]

    def start(self) -> "DaemonProcess":
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.path, "PYTHONUNBUFFERED": "1",
               "VIGIL_OFFLINE": "1", **self.env}
        for key in ("WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(key, None)
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=REPO, env=env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0, after: float = -math.inf) -> float:
        """Wait for READY=1; returns the seconds it took from now. AssertionError with the log."""
        t0 = time.monotonic()
        if not self.notify.wait_for(b"READY=1", timeout, after=after):
            raise AssertionError(f"no READY=1 within {timeout} s (exit code "
                                 f"{self.proc.poll() if self.proc else None}); log:\n"
                                 f"{self.log()[-4000:]}")
        return time.monotonic() - t0

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (a crash, or the OOM killer) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        """Kill if still running, close the log and the notify socket."""
        self.kill()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.notify.close()

    # ---- observation
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """One scrape: (sample name, sorted label items) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(self.metrics_text())
                for s in fam.samples}

    @staticmethod
    def value(scrape: dict, name: str, **labels: str) -> Optional[float]:
        return scrape.get((name, tuple(sorted(labels.items()))))

    @staticmethod
    def total(scrape: dict, name: str) -> float:
        """Sum of a metric over all its label sets."""
        return sum(v for (n, _), v in scrape.items() if n == name)


@dataclass
class ProcStats:
    """One sample of a process: resident memory, threads, open file descriptors."""
    rss_bytes: int
    threads: int
    fds: int


def sample_process(pid: int) -> ProcStats:
    """Read RSS and thread count from `/proc/<pid>/status`, fds from `/proc/<pid>/fd`.

    Raises:
        OSError: the process is gone.
    """
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return ProcStats(rss, threads, len(os.listdir(f"/proc/{pid}/fd")))


# --------------------------------------------------------------------------- fixtures of a run
def tiny_checkpoint(path: Path) -> Path:
    """A random-weight `small3d` detector (8 frames of 32x32, 1 s clips): cheap to run, enough to
    exercise every part of the daemon (a soak measures the service, not the model)."""
    import torch

    from detector.checkpoint import save_checkpoint
    from detector.config import BackboneConfig, InputConfig, ModelConfig
    from detector.model import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(name="small3d", channels=[4, 8, 8, 16],
                                              pool=[1, 2, 2]),
                      input=InputConfig(frames=8, size=[32, 32], clip_seconds=1.0),
                      d_model=16, num_queries=4, decoder_layers=1, nheads=2, dim_feedforward=32)
    return save_checkpoint(path, build_model(cfg), cfg)


def base_config(data_dir: Path, checkpoint: Path, cameras: dict[str, str],
                always_on: bool = True, updates: bool = False) -> dict:
    """A daemon config on free loopback ports with short timeouts (fault tests, soak).

    Args:
        cameras: name -> url.
        always_on: thresholds so low that every camera/class opens an event at its first window
            and keeps it open (lifecycle without depending on what a random model sees).
        updates: publish an `update` for every window (a steady stream of alerts).
    """
    smoothing: dict[str, Any] = {"on_threshold": 0.02, "off_threshold": 0.01, "min_windows": 1,
                                 "cooldown_s": 600} if always_on else {
        "on_threshold": 0.999, "off_threshold": 0.5}
    if updates:
        smoothing.update(update_interval_s=0.0, min_score_delta=0.0)
    return {
        "data_dir": str(data_dir),
        "defaults": {"stride": 4, "open_timeout_s": 2, "read_timeout_s": 1.5,
                     "stall_timeout_s": 3, "backoff_initial_s": 0.3, "backoff_max_s": 2},
        "cameras": [{"name": n, "url": u} for n, u in cameras.items()],
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "threads": 1, "max_batch": 4,
                  "max_wait_ms": 20},
        "smoothing": smoothing,
        "alerts": {"endpoint": f"tcp://127.0.0.1:{free_port()}",
                   "replay_endpoint": f"tcp://127.0.0.1:{free_port()}", "heartbeat_s": 0.5},
        "evidence": {"enabled": True, "pre_roll_s": 0.5},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
    }


class RtspProcess:
    """`tests/rtsp_server.py` (ball test pattern, or a file) on a fixed port; restartable."""

    def __init__(self, port: int, path: str = "cam", file: Optional[Path] = None,
                 width: Optional[int] = None, height: Optional[int] = None) -> None:
        self.port, self.path, self.file = port, path, file
        self.width, self.height = width, height
        self.url = f"rtsp://127.0.0.1:{port}/{path}"
        self.proc: Optional[subprocess.Popen] = None

    @staticmethod
    def unavailable() -> Optional[str]:
        """Why the RTSP server cannot run here, or None."""
        if not RTSP_SCRIPT.is_file():
            return f"{RTSP_SCRIPT} not found (a source checkout is needed)"
        if not os.path.exists(SYSTEM_PYTHON):
            return f"{SYSTEM_PYTHON} not found"
        probe = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer"], capture_output=True, timeout=30)
        return None if probe.returncode == 0 else "python3-gi / gir1.2-gst-rtsp-server-1.0 missing"

    def start(self, timeout: float = 15.0) -> "RtspProcess":
        cmd = [SYSTEM_PYTHON, str(RTSP_SCRIPT), "--port", str(self.port), "--path", self.path]
        if self.file is not None:
            cmd += ["--file", str(self.file)]
        if self.width and self.height:
            cmd += ["--width", str(self.width), "--height", str(self.height)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        import select
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtsp_server.py exited with {self.proc.returncode}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready and self.proc.stdout.readline().startswith("READY"):
                return self
        self.stop()
        raise RuntimeError(f"rtsp_server.py not ready within {timeout} s")

    def stop(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


class FlappingSubscriber(threading.Thread):
    """An `AlertSubscriber` that connects for `period_s`, disconnects for `period_s`, repeat.

    Each reconnect asks for everything since the last seq it holds, so `gaps` must stay empty.
    """

    def __init__(self, endpoint: str, replay_endpoint: str, period_s: float) -> None:
        super().__init__(name="soak-subscriber", daemon=True)
        self.endpoint, self.replay_endpoint, self.period_s = endpoint, replay_endpoint, period_s
        self.received = 0
        self.connects = 0
        self.gaps: list[tuple[int, int]] = []
        self.out_of_order = 0
        self.last_seq: Optional[int] = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        from .subscriber import AlertSubscriber

        while not self._stop_event.is_set():
            sub = AlertSubscriber(self.endpoint, self.replay_endpoint, since=self.last_seq)
            self.connects += 1
            try:
                end = time.monotonic() + self.period_s
                while time.monotonic() < end and not self._stop_event.is_set():
                    msg = sub.poll(0.5)
                    if msg is None:
                        continue
                    if self.last_seq is not None and msg["seq"] != self.last_seq + 1:
                        self.out_of_order += 1
                    self.last_seq = msg["seq"]
                    self.received += 1
                self.gaps += sub.gaps
            finally:
                sub.close()
            self._stop_event.wait(self.period_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(self.period_s + 5)


# --------------------------------------------------------------------------- the soak
@dataclass
class Sample:
    """One row of `soak.csv`."""
    t_s: float
    rss_mib: float
    threads: int
    fds: int
    windows_total: float
    windows_per_s: float
    frames_total: float
    windows_skipped: float
    cameras_up: int
    alerts_total: float


@dataclass
class SoakReport:
    """What a soak measured and concluded.

    Attributes:
        growth: metric -> growth over the second half predicted by the fitted line.
        budgets: metric -> allowed growth.
        rate_ratio: windows/s of the last quarter / of the second quarter.
        failures: human-readable reasons; empty when the soak passed.
    """
    minutes: float
    samples: list[Sample]
    growth: dict[str, float]
    budgets: dict[str, float]
    slopes_per_hour: dict[str, float]
    rate_ratio: float
    rtsp_restarts: int
    subscriber_connects: int
    subscriber_received: int
    subscriber_gaps: list[tuple[int, int]]
    exit_code: Optional[int]
    csv_path: Path
    png_path: Optional[Path]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        first, last = self.samples[0], self.samples[-1]
        lines = [f"soak: {self.minutes:.1f} min, {len(self.samples)} samples, "
                 f"{self.rtsp_restarts} RTSP restarts, subscriber {self.subscriber_connects} "
                 f"connects / {self.subscriber_received} alerts / {len(self.subscriber_gaps)} gaps, "
                 f"exit code {self.exit_code}"]
        for name, unit in (("rss_mib", "MiB"), ("threads", ""), ("fds", "")):
            lines.append(
                f"  {name}: first {getattr(first, name):.1f}, last {getattr(last, name):.1f}, "
                f"second-half growth {self.growth[name]:+.2f}{unit} (budget {self.budgets[name]}"
                f"{unit}), slope {self.slopes_per_hour[name]:+.2f}{unit}/h")
        rates = [s.windows_per_s for s in self.samples[1:]]
        lines.append(f"  windows/s: mean {sum(rates) / max(1, len(rates)):.2f}, last/second "
                     f"quarter ratio {self.rate_ratio:.2f} (min {MIN_RATE_RATIO})")
        lines.append("  PASS" if self.passed else "  FAIL: " + "; ".join(self.failures))
        return "\n".join(lines)


def fit_growth(ts: list[float], values: list[float]) -> tuple[float, float]:
    """A robust line (Theil-Sen: the median of pairwise slopes) over the second half of the samples.

    Theil-Sen rather than least squares because RSS jumps for a few seconds around each RTSP
    reconnect (FFmpeg's buffers, an evidence clip being encoded) and falls back: a least-squares
    fit over a short run would read one such spike near the end as growth.

    Returns:
        (growth over the second half = slope x its duration, slope per hour).
    """
    import numpy as np
    from scipy.stats import theilslopes

    n = len(ts)
    half = n // 2
    t = np.asarray(ts[half:], dtype=float)
    v = np.asarray(values[half:], dtype=float)
    if len(t) < 2 or t[-1] <= t[0]:
        return 0.0, 0.0
    slope = float(theilslopes(v, t)[0])        # per second
    return slope * (t[-1] - t[0]), slope * 3600.0


def analyse(samples: list[Sample]) -> tuple[dict, dict, dict, float, list[str]]:
    """Growth, budgets, hourly slopes, rate ratio and failure reasons of a run's samples."""
    budgets = {"rss_mib": RSS_BUDGET_MIB, "threads": THREAD_BUDGET, "fds": FD_BUDGET}
    growth, slopes, failures = {}, {}, []
    ts = [s.t_s for s in samples]
    for name, budget in budgets.items():
        growth[name], slopes[name] = fit_growth(ts, [getattr(s, name) for s in samples])
        if growth[name] > budget:
            failures.append(f"{name} grew {growth[name]:.2f} over the second half "
                            f"(budget {budget})")
    rates = [s.windows_per_s for s in samples[1:]]
    q = len(rates) // 4
    ratio = 1.0
    if q >= 1:
        second = sum(rates[q:2 * q]) / q
        last = sum(rates[-q:]) / q
        ratio = last / second if second > 0 else (1.0 if last == 0 else math.inf)
        if ratio < MIN_RATE_RATIO:
            failures.append(f"windows/s fell to {ratio:.2f} of the second quarter's")
    if rates and max(rates) == 0:
        failures.append("no window was inferred")
    return growth, budgets, slopes, ratio, failures


def write_csv(path: Path, samples: list[Sample]) -> None:
    names = list(Sample.__dataclass_fields__)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for s in samples:
            w.writerow([getattr(s, n) if not isinstance(getattr(s, n), float)
                        else f"{getattr(s, n):.3f}" for n in names])


def plot(path: Path, samples: list[Sample], title: str) -> None:
    """Four panels (RSS, threads, fds, windows/s) against minutes, second-half fits dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.array([s.t_s for s in samples]) / 60.0
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    for ax, (name, label) in zip(axes, (("rss_mib", "RSS (MiB)"), ("threads", "threads"),
                                        ("fds", "open fds"), ("windows_per_s", "windows/s"))):
        v = np.array([getattr(s, name) for s in samples], dtype=float)
        ax.plot(t, v, lw=1.2)
        if name != "windows_per_s" and len(t) >= 4:
            from scipy.stats import theilslopes

            h = len(t) // 2
            k, b = theilslopes(v[h:], t[h:])[:2]
            ax.plot(t[h:], k * t[h:] + b, "--", lw=1, label=f"fit {k * 60:+.2f}/h")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_soak(minutes: float, out_dir: Path, file_cameras: int = 3, rtsp_cameras: int = 2,
             restart_every_s: float = 30.0, restart_down_s: float = 3.0,
             flap_every_s: float = 10.0, sample_every_s: float = 5.0,
             checkpoint: Optional[Path] = None, ready_timeout_s: float = 90.0) -> SoakReport:
    """Run the soak and write `soak.csv`, `soak.png` (and the daemon's log) into `out_dir`.

    Args:
        minutes: how long to sample after the daemon is ready.
        file_cameras: looping synthetic video files.
        rtsp_cameras: RTSP test-pattern servers, restarted in turn every `restart_every_s`
            (down `restart_down_s` each time); 0 or no GStreamer: none.
        flap_every_s: the subscriber's connected/disconnected period.
        sample_every_s: sampling period.
        checkpoint: the model to serve (default: a tiny random one).
    Returns:
        The `SoakReport` (`.passed`, `.summary()`).
    """
    from train.synth import Scene, write_video

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Path(checkpoint) if checkpoint else tiny_checkpoint(out_dir / "tiny.pt")
    cameras: dict[str, str] = {}
    kinds = ("fight", "collapse", "none")
    for i in range(file_cameras):
        video = out_dir / "videos" / f"file{i}.avi"
        video.parent.mkdir(exist_ok=True)
        if not video.exists():
            write_video(video, Scene(kinds[i % 3], i + 1, width=160, height=120, fps=15,
                                     frames=90))
        cameras[f"file{i}"] = str(video)
    servers: list[RtspProcess] = []
    if rtsp_cameras > 0:
        why = RtspProcess.unavailable()
        if why:
            log.warning("soak: no RTSP cameras: %s", why)
        else:
            for i in range(rtsp_cameras):
                srv = RtspProcess(free_port(), f"cam{i}").start()
                servers.append(srv)
                cameras[f"rtsp{i}"] = srv.url
    data_dir = out_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    cfg = base_config(data_dir, ckpt, cameras, always_on=True, updates=False)
    # One `update` a second per open event keeps the journal and the PUB socket busy.
    cfg["smoothing"].update(update_interval_s=1.0, min_score_delta=0.0)
    daemon = DaemonProcess(out_dir / "daemon", cfg)
    sub: Optional[FlappingSubscriber] = None
    samples: list[Sample] = []
    restarts = 0
    exit_code: Optional[int] = None
    try:
        daemon.start()
        daemon.wait_ready(ready_timeout_s)
        sub = FlappingSubscriber(cfg["alerts"]["endpoint"], cfg["alerts"]["replay_endpoint"],
                                 flap_every_s)
        sub.start()
        t0 = time.monotonic()
        end = t0 + minutes * 60.0
        next_sample = t0
        next_restart = t0 + restart_every_s
        which = 0
        prev: Optional[tuple[float, float]] = None
        while time.monotonic() < end:
            now = time.monotonic()
            if servers and now >= next_restart:
                srv = servers[which % len(servers)]
                which += 1
                srv.stop()
                time.sleep(restart_down_s)
                srv.start()
                restarts += 1
                next_restart = time.monotonic() + restart_every_s
                continue
            if now >= next_sample:
                if not daemon.alive():
                    raise RuntimeError(f"the daemon died (exit code {daemon.proc.poll()})")
                proc = sample_process(daemon.pid)
                scrape = daemon.metrics()
                windows = daemon.total(scrape, "vigil_windows_total")
                t = now - t0
                rate = 0.0 if prev is None else (windows - prev[1]) / max(1e-6, t - prev[0])
                prev = (t, windows)
                samples.append(Sample(
                    t_s=t, rss_mib=proc.rss_bytes / 2 ** 20, threads=proc.threads, fds=proc.fds,
                    windows_total=windows, windows_per_s=rate,
                    frames_total=daemon.total(scrape, "vigil_frames_total"),
                    windows_skipped=daemon.total(scrape, "vigil_windows_skipped_total"),
                    cameras_up=int(daemon.total(scrape, "vigil_camera_up")),
                    alerts_total=daemon.total(scrape, "vigil_alerts_total")))
                log.info("soak %5.0fs rss %.1f MiB threads %d fds %d windows/s %.2f", t,
                         samples[-1].rss_mib, proc.threads, proc.fds, rate)
                next_sample += sample_every_s
            time.sleep(min(0.2, max(0.0, min(next_sample, next_restart) - time.monotonic())))
    finally:
        if sub is not None:
            sub.stop()
        exit_code = daemon.stop(timeout=20)
        daemon.close()
        for srv in servers:
            srv.stop()
    csv_path = out_dir / "soak.csv"
    write_csv(csv_path, samples)
    if len(samples) < 4:
        raise RuntimeError(f"only {len(samples)} samples: run the soak longer")
    growth, budgets, slopes, ratio, failures = analyse(samples)
    if exit_code != 0:
        failures.append(f"the daemon exited with {exit_code} on SIGTERM")
    if sub is not None and sub.gaps:
        failures.append(f"the subscriber saw unfilled gaps {sub.gaps[:3]}")
    if sub is not None and sub.out_of_order:
        failures.append(f"the subscriber saw {sub.out_of_order} alerts out of seq order")
    png_path: Optional[Path] = out_dir / "soak.png"
    try:
        plot(png_path, samples, f"vigil soak: {minutes:g} min, {len(cameras)} cameras, "
                                f"{restarts} RTSP restarts")
    except Exception as exc:     # the numbers are in the CSV; a plot failure is not a leak
        log.warning("soak: cannot draw %s: %s", png_path, exc)
        png_path = None
    return SoakReport(minutes=minutes, samples=samples, growth=growth, budgets=budgets,
                      slopes_per_hour=slopes, rate_ratio=ratio, rtsp_restarts=restarts,
                      subscriber_connects=sub.connects if sub else 0,
                      subscriber_received=sub.received if sub else 0,
                      subscriber_gaps=list(sub.gaps) if sub else [], exit_code=exit_code,
                      csv_path=csv_path, png_path=png_path, failures=failures)

"""Run the real daemon, and the cameras it watches, as child processes on loopback.

`vigil soak`, `vigil demo` and the integration tests (the daemon, fault injection, security,
Prometheus tests) all need the same things, so they live here once (`vigil bench pipeline`,
which runs the daemon in-process, takes only the small pieces):

* `DaemonProcess`: `vigil serve` as a child process, started the way systemd starts it: its
  config written atomically (SIGHUP reloads never read half a file), its stderr kept in a log
  file, a `NotifyListener` standing in for systemd's notify socket (READY=1, STOPPING=1,
  WATCHDOG=1 arrive timestamped), `/metrics` scraped and parsed with prometheus-client's own
  parser;
* `RtspServer`: GStreamer's RTSP server (`scripts/rtsp_test_server.py` of a source checkout,
  run with Debian's `/usr/bin/python3`, which has python3-gi) on a fixed loopback port, so it can be
  killed (SIGKILL, as a crash would), restarted on the same URL, or frozen (SIGSTOP/SIGCONT);
  `rtsp_server_missing()` says why it cannot run here;
* `tiny_checkpoint` and `base_config`: a random-weight model and a config on free loopback
  ports whose thresholds open an event at every camera's first window (a lifecycle that does not
  depend on what a random model sees);
* `Mosquitto`: Debian's MQTT broker on a loopback port with a generated config (users with
  passwords, persistence in its own folder), started, stopped (SIGTERM: it saves its sessions),
  killed, frozen (SIGSTOP) or restarted on the same port, as the MQTT tests need; no root and no
  system service; `mosquitto_missing()` says why it cannot run here;
* `free_port`, `wait_until`, `sample_process`, `system_python_env`: small pieces the above and
  their callers share.

Nothing here is imported by `vigil serve` itself: it is the outside view of the service.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Optional

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]  # the checkout: vigil_tools/harness.py
# A test helper outside the package: an installed `vigil soak` runs without RTSP cameras.
RTSP_SCRIPT = REPO / "scripts" / "rtsp_test_server.py"
# python3-gi is built for Debian's Python, not for the project's virtualenv.
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_READY_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now.

    Returns:
        The port number (another process may still take it before the caller binds it).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy or `timeout` seconds pass.

    Args:
        predicate: called once at once, then every `interval` seconds.
        timeout: seconds to keep trying.
        interval: seconds between calls.
    Returns:
        The first truthy value, or None on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --------------------------------------------------------------------------- systemd's side
class NotifyListener:
    """The sd_notify end systemd would hold: an AF_UNIX datagram socket on a short path.

    A background thread reads it continuously, as systemd does, so every datagram is timestamped
    when it arrives and the daemon's sends never find the queue full.

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
        # The timeout only bounds how long `close` waits for the reader to notice.
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, bytes]] = []
        self._cond = threading.Condition()
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
            with self._cond:
                self.received.append((time.monotonic(), data))
                self._cond.notify_all()

    def _times(self, line: bytes) -> list[float]:
        # Caller holds self._cond. A datagram holds newline-separated assignments.
        return [t for t, d in self.received if line in d.split(b"\n")]

    def datagrams(self) -> list[bytes]:
        """Every datagram received so far, oldest first."""
        with self._cond:
            return [d for _, d in self.received]

    def times(self, line: bytes) -> list[float]:
        """Arrival times of the datagrams holding the `line` assignment.

        Args:
            line: one assignment, e.g. b"WATCHDOG=1".
        Returns:
            Monotonic arrival times, oldest first.
        """
        with self._cond:
            return self._times(line)

    def count(self, line: bytes) -> int:
        """How many datagrams holding the `line` assignment arrived so far."""
        return len(self.times(line))

    def wait_for(self, line: bytes, timeout: float, after: float = -math.inf,
                 at_least: int = 1) -> bool:
        """Wait until `at_least` datagrams holding `line` arrived at or after `after`.

        Args:
            line: one assignment, e.g. b"READY=1".
            timeout: seconds to wait.
            after: monotonic time; earlier datagrams do not count (default: all count).
            at_least: how many are needed.
        Returns:
            True when they arrived within `timeout`.
        """
        with self._cond:
            # A condition rather than polling: a test timing the watchdog sees each ping at once.
            return self._cond.wait_for(
                lambda: sum(t >= after for t in self._times(line)) >= at_least, timeout)

    def close(self) -> None:
        """Stop the reader, close the socket and remove its folder."""
        self._closed.set()
        self._thread.join(1.0)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- the daemon
class DaemonProcess:
    """`vigil serve` as a child process, its stdout and stderr in `workdir/daemon.log`.

    Args:
        workdir: where the config and the log are written.
        config: the daemon config (a dict, written as YAML), or YAML text.
        log_format: `text` or `json` (the command line's `--log-format`).
        env: extra environment variables for the child.
        watchdog_usec: sets `WATCHDOG_USEC` (the daemon then pings at half this interval).
        prelude: Python code run in the child before `vigil` starts (fault injection in tests:
            the product has no test hooks).
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
        self._log_file: Optional[IO[bytes]] = None
        self.write_config(config)

    # ---- config
    def write_config(self, config: dict | str) -> None:
        """Write the config atomically (a SIGHUP reload never reads half a file).

        Args:
            config: a dict (dumped as YAML) or YAML text. `self.config` is left as it was, so a
                test can write a bad config and then restore the good one.
        """
        import yaml

        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    @property
    def metrics_port(self) -> int:
        """The `/metrics` port of `self.config` (which must be a dict)."""
        assert isinstance(self.config, dict)
        return int(self.config["metrics"]["port"])

    # ---- lifecycle
    def command(self) -> list[str]:
        """The child's argv: `python -m streamer.cli ... serve`, or `python -c` with the prelude."""
        args = ["--log-format", self.log_format, "serve", "--config", str(self.config_path)]
        if self.prelude is None:
            return [sys.executable, "-m", "streamer.cli", *args]
        code = (f"{self.prelude}\nimport sys\nfrom streamer.cli import main\n"
                "sys.exit(main(sys.argv[1:]))")
        return [sys.executable, "-c", code, *args]

    def start(self) -> "DaemonProcess":
        """Start the child (again, after a stop or kill: the log is appended to).

        Returns:
            self, for `DaemonProcess(...).start()`.
        """
        # VIGIL_OFFLINE: a run must never depend on the network (no backbone weights download).
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.path, "PYTHONUNBUFFERED": "1",
               "VIGIL_OFFLINE": "1", **self.env}
        # The caller may itself run under systemd: its watchdog is not the child's.
        for key in ("WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(key, None)
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        if self._log_file is None:
            self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=REPO, env=env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn)
        return self

    @property
    def pid(self) -> int:
        """The child's process id (started)."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0, after: float = -math.inf) -> float:
        """Wait for READY=1.

        Args:
            timeout: seconds to wait.
            after: monotonic time; an earlier READY=1 (a previous life's) does not count.
        Returns:
            The seconds it took from now.
        Raises:
            AssertionError: no READY=1 in time; the message holds the exit code and the log.
        """
        t0 = time.monotonic()
        if not self.notify.wait_for(b"READY=1", timeout, after=after):
            raise AssertionError(f"no READY=1 within {timeout} s (exit code "
                                 f"{self.proc.poll() if self.proc else None}); log:\n"
                                 f"{self.log()[-4000:]}")
        return time.monotonic() - t0

    def signal(self, sig: int) -> None:
        """Send `sig` (SIGHUP reloads, SIGTERM stops) to the child."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, wait up to `timeout`, then SIGKILL.

        Returns:
            The exit code, or None if never started.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("vigil serve (pid %d) ignored SIGTERM for %.0f s: SIGKILL",
                            self.proc.pid, timeout)
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
        """Everything the child wrote so far (all its lives)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def metrics_text(self) -> str:
        """One `/metrics` scrape, as text."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """One scrape, parsed by prometheus-client (what Prometheus would accept).

        Returns:
            (sample name, sorted label items) -> value.
        """
        from prometheus_client.parser import text_string_to_metric_families

        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(self.metrics_text())
                for s in fam.samples}

    @staticmethod
    def value(scrape: dict, name: str, **labels: str) -> Optional[float]:
        """The sample `name` with exactly these labels in a `metrics()` scrape, or None."""
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

    Args:
        pid: the process to sample.
    Returns:
        Its `ProcStats` now.
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


# --------------------------------------------------------------------------- what a run serves
def tiny_checkpoint(path: Path) -> Path:
    """A random-weight `small3d` detector (8 frames of 32x32, 1 s clips).

    Cheap to run, and enough to exercise every part of the daemon: the tests and the soak measure
    the service, not the model.

    Args:
        path: where to save it.
    Returns:
        The saved checkpoint's path.
    """
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
                always_on: bool = True, updates: bool = False, stride: int = 4,
                fast_timeouts: bool = True, pose: bool = False) -> dict:
    """A daemon config on free loopback ports (fault tests, daemon tests, soak).

    Args:
        data_dir: the daemon's `data_dir` (journal, evidence).
        checkpoint: the model to serve.
        cameras: name -> url.
        always_on: thresholds so low that every camera/class opens an event at its first window
            and keeps it open (lifecycle without depending on what a random model sees);
            False: thresholds a random model never reaches.
        updates: publish an `update` for every window (a steady stream of alerts).
        stride: run the model every `stride` frames.
        fast_timeouts: open 2 s, read 1.5 s, stall 3 s, backoff 0.3..2 s, so that camera faults
            play out in seconds; False keeps the daemon's own defaults (what a deployment gets).
        pose: keep the pose path (the daemon's default); False (`model.pose: null`): every
            class comes from the checkpoint, so `always_on` opens an event for each of them
            and no BlazePose thread shares the CPU with what is measured.
    Returns:
        The config as the YAML mapping `DaemonProcess` writes.
    """
    smoothing: dict[str, Any] = {"on_threshold": 0.02, "off_threshold": 0.01, "min_windows": 1,
                                 "cooldown_s": 600} if always_on else {
        "on_threshold": 0.999, "off_threshold": 0.5}
    if updates:
        smoothing.update(update_interval_s=0.0, min_score_delta=0.0)
    defaults: dict[str, Any] = {"stride": stride}
    if fast_timeouts:
        defaults.update(open_timeout_s=2, read_timeout_s=1.5, stall_timeout_s=3,
                        backoff_initial_s=0.3, backoff_max_s=2)
    return {
        "data_dir": str(data_dir),
        "defaults": defaults,
        "cameras": [{"name": n, "url": u} for n, u in cameras.items()],
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "threads": 1, "max_batch": 4,
                  "max_wait_ms": 20, **({} if pose else {"pose": None})},
        "smoothing": smoothing,
        "alerts": {"endpoint": f"tcp://127.0.0.1:{free_port()}",
                   "replay_endpoint": f"tcp://127.0.0.1:{free_port()}", "heartbeat_s": 0.5},
        "evidence": {"enabled": True, "pre_roll_s": 0.5},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
    }


# --------------------------------------------------------------------------- RTSP cameras
def system_python_env() -> dict[str, str]:
    """This process's environment without `PYTHON*` variables, for running `SYSTEM_PYTHON`.

    Returns:
        A copy of `os.environ`: the virtualenv's PYTHONPATH/PYTHONHOME would point Debian's
        Python at the wrong packages.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


@functools.lru_cache(maxsize=1)
def rtsp_server_missing() -> Optional[str]:
    """Why `RtspServer` cannot run here, or None when it can.

    It probes, in Debian's Python, for GstRtspServer and the x264 encoder the server streams
    with (a few seconds: the answer is cached for the process).

    Returns:
        A reason naming the Debian packages to install, or None.
    """
    if not RTSP_SCRIPT.is_file():
        return f"{RTSP_SCRIPT} not found"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
         "gi.require_version('Gst', '1.0'); from gi.repository import Gst, GstRtspServer; "
         "Gst.init(None); assert Gst.ElementFactory.find('x264enc'), 'x264enc missing'"],
        capture_output=True, text=True, timeout=30, env=system_python_env())
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines() or ["unknown error"]
        return ("GStreamer RTSP server unavailable (apt: python3-gi gir1.2-gst-rtsp-server-1.0 "
                f"gstreamer1.0-plugins-ugly): {lines[-1]}")
    return None


class _Freezable:
    """`pause()`/`resume()` for a server run as the child process `self.proc`."""
    proc: Optional[subprocess.Popen]

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open but nothing flows or is answered."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause` (SIGCONT)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)


class RtspServer(_Freezable):
    """`rtsp_test_server.py` on a fixed loopback port: a moving-ball test pattern, or a file.

    The port and path stay the same across `stop`/`start`, so a daemon's camera URL points at
    the restarted server: a reconnect, not a new camera.

    Args:
        port: the TCP port to listen on (e.g. `free_port()`).
        path: the mount point, without the leading slash.
        file: a video to serve instead of the test pattern (played once, in real time).
        width, height: frame size (default: 320x240 for the pattern, the file's own); may be
            changed between `stop` and `start` to bring a resolution change with the reconnect.
    Attributes:
        url: `rtsp://127.0.0.1:<port>/<path>`.
    """

    def __init__(self, port: int, path: str = "test", file: Optional[str | Path] = None,
                 width: Optional[int] = None, height: Optional[int] = None) -> None:
        self.port = port
        self.path = path.lstrip("/")
        self.file = file
        self.width, self.height = width, height
        self.url = f"rtsp://127.0.0.1:{port}/{self.path}"
        self.proc: Optional[subprocess.Popen] = None
        self._stderr: Optional[IO[bytes]] = None

    def command(self) -> list[str]:
        """The server's argv (Debian's Python)."""
        # -I (isolated): the script's folder is not put first on sys.path, where this package's
        # `types.py` would shadow the standard library's `types` and the server fail on import.
        cmd = [SYSTEM_PYTHON, "-I", str(RTSP_SCRIPT), "--port", str(self.port),
               "--path", self.path]
        if self.file:
            cmd += ["--file", str(self.file)]
        if self.width and self.height:
            cmd += ["--width", str(self.width), "--height", str(self.height)]
        return cmd

    def start(self, timeout: float = RTSP_READY_TIMEOUT_S) -> "RtspServer":
        """Start (or restart, on the same port) and wait until it listens.

        Args:
            timeout: seconds to wait for its `READY` line.
        Returns:
            self (already running: unchanged).
        Raises:
            RuntimeError: it exited (its stderr in the message) or was not ready in time.
        """
        if self.proc is not None and self.proc.poll() is None:
            return self
        # stderr goes to a file, not a pipe: GStreamer warns on every client that goes away, and
        # a pipe nobody reads would fill during a long soak and freeze the server mid-stream.
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=system_python_env(), text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                err = self._stderr_tail()
                self.stop()
                raise RuntimeError(f"{RTSP_SCRIPT.name} exited with {code}: {err}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready and self.proc.stdout.readline().startswith("READY"):
                log.debug("RTSP server ready at %s (pid %d)", self.url, self.proc.pid)
                return self
        self.stop()
        raise RuntimeError(f"{RTSP_SCRIPT.name} not ready within {timeout} s")

    def _stderr_tail(self, chars: int = 2000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-chars:]

    def stop(self) -> None:
        """Kill the server as a crash would (SIGKILL) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()              # a stopped process cannot act on signals until resumed
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None
            self.proc = None



# --------------------------------------------------------------------------- MQTT broker
MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def mosquitto_missing() -> Optional[str]:
    """Why `Mosquitto` cannot run here (apt: mosquitto), or None when it can."""
    for path in (MOSQUITTO, MOSQUITTO_PASSWD):
        if not os.path.exists(path):
            return f"{path} not found (apt: mosquitto; scripts/system-packages.sh installs it)"
    return None


class Mosquitto(_Freezable):
    """Debian's mosquitto on 127.0.0.1:`port`, configured in `workdir` (nothing system-wide).

    Args:
        workdir: its config, password file, persistence database and log live here.
        port: the port (default: a free one); kept across `stop`/`start`.
        users: user -> password; None = anonymous clients allowed.
        persistence: keep retained messages and persistent sessions across a restart (saved
            when it stops on SIGTERM).
        tls: (CA file, certificate file, key file) PEMs: the listener speaks TLS only.
    Attributes:
        port, log_path.
    """

    def __init__(self, workdir: Path, port: Optional[int] = None,
                 users: Optional[dict[str, str]] = None, persistence: bool = True,
                 tls: Optional[tuple[Path, Path, Path]] = None) -> None:
        import getpass

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: Optional[subprocess.Popen] = None
        lines = [f"user {getpass.getuser()}",          # as root it would switch to `mosquitto`
                 f"listener {self.port} 127.0.0.1",
                 f"log_dest file {self.log_path}", "log_type error", "log_type warning",
                 "log_type notice", "log_type information", "connection_messages true"]
        if tls is not None:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if users:
            pw = self.workdir / "passwords"
            pw.write_text("")
            os.chmod(pw, 0o600)
            for user, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True,
                               capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines += ["allow_anonymous true"]
        if persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        self.config_path = self.workdir / "mosquitto.conf"
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        """Start (or restart, same port and state) and wait until it accepts connections.

        Raises:
            RuntimeError: it exited (its log in the message) or did not listen in time.
        """
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: "
                                   f"{self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto not listening on {self.port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (it saves its database) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(10)


    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def self_signed_tls(workdir: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for `host` (an IP SAN), made with the openssl command.

    Returns:
        (CA certificate, server certificate, server key) PEM paths in `workdir`.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (workdir / n for n in ("ca.key", "ca.pem", "server.key",
                                                        "server.csr", "server.pem"))
    ext = workdir / "san.ext"
    ext.write_text(f"subjectAltName=IP:{host}\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=vigil-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={host}")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key

"""`vigil soak`: run the real daemon for a while under churn and check that nothing grows.

The soak starts `vigil serve` as a child process on loopback with several cameras:

* file-backed cameras: synthetic videos (`train.synth`) written once, read as looping files;
* RTSP cameras: GStreamer's RTSP server (`scripts/rtsp_test_server.py`, run with the system
  Python that has python3-gi) killed and restarted every `restart_every_s`, so the daemon goes
  through camera-lost / reconnect cycles, events ending with `camera_lost`, evidence clips;
* a flapping subscriber: an `AlertSubscriber` connected for `flap_every_s`, then gone for as
  long, again and again (replay on every reconnect);

and samples the daemon's resident memory, thread count, open file descriptors (`/proc/<pid>`)
and its windows per second (`/metrics`) every `sample_every_s`. It writes `soak.csv` and
`soak.png` into the output folder.

Pass/fail ("grows without bound"): for RSS, threads and fds a robust line (Theil-Sen, see
`fit_growth`) is fitted over the SECOND half of the run (the first half holds the warm-up:
allocator arenas, model caches, the journal's page cache) and its growth over that half,
slope x duration, must stay under a budget: RSS `RSS_BUDGET_MIB` MiB, threads `THREAD_BUDGET`,
fds `FD_BUDGET`. A leak of one fd or thread per RTSP reconnect, or ~0.1 MiB per second, exceeds
these within a 5-minute soak. The windows rate must not decay: the mean windows/s of the last
quarter must be at least `MIN_RATE_RATIO` of the second quarter's. The daemon must also still be
alive at the end and stop cleanly on SIGTERM.

The daemon, the RTSP servers and the process sampling come from `vigil_tools.harness`, the same
harness the daemon, fault injection and security tests drive the daemon with.
"""
from __future__ import annotations

import csv
import logging
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .harness import (DaemonProcess, RtspServer, base_config, free_port, rtsp_server_missing,
                      sample_process, tiny_checkpoint)

log = logging.getLogger(__name__)

RSS_BUDGET_MIB = 24.0
THREAD_BUDGET = 3.0
FD_BUDGET = 12.0
MIN_RATE_RATIO = 0.7


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
        from streamer.subscriber import AlertSubscriber

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
    servers: list[RtspServer] = []
    if rtsp_cameras > 0:
        why = rtsp_server_missing()
        if why:
            log.warning("soak: no RTSP cameras: %s", why)
        else:
            for i in range(rtsp_cameras):
                srv = RtspServer(free_port(), f"cam{i}").start()
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

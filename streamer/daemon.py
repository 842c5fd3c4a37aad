"""The daemon's lifecycle: start every part, run the event loop, reload, stop cleanly.

Threads (design.md's data flow):

* one `CaptureThread` per enabled camera, filling that camera's `RingBuffer` (model size) and, when
  evidence is on, a display-size ring with the same frame numbers (snapshots and clips);
* the `WorkerThread`: scheduler -> gather -> model -> `WindowResult`s into a bounded queue. Its
  per-iteration `heartbeat` sends systemd's WATCHDOG=1, so a hung model call stops the pings;
* `model.pose.workers` `PoseWorker`s (the pose path, `streamer/pose/worker.py`): BlazePose on the
  display ring of each camera that watches collapse, the pose collapse model every `stride_s`,
  their `WindowResult`s into the same queue. Which path scores which class for which camera is
  `routing.EventRouting`'s decision (a camera's `events`);
* the main thread: the event loop. It owns the `EventTracker`, the journal connection and the PUB
  socket (ZeroMQ sockets and sqlite3 connections belong to one thread), so every message is
  committed then published from here, in order. It also refreshes camera metrics, sends
  heartbeats, closes the events of cameras that went down, and handles the signal flags;
* the publisher's replay thread, the evidence writer and the metrics HTTP server (their own);
* integrations (`streamer/comms/`), each with its own threads: the MQTT bridge (paho's network
  thread and its publishing thread) and one worker per notification rule. The event loop only
  hands them journalled alerts through bounded queues (`offer`), so a slow or dead broker or
  notification service never holds up the pipeline, the event loop or the journal.

Gating (`streamer/regions/zones.py`, `streamer/schedule.py`): the event loop evaluates the
cameras' schedules every `REFRESH_S`; a camera outside its schedule with `outside: skip` is left
out of the scheduler's snapshot (not analysed) once its open events have ended, one with `mute`
is analysed but no event starts (`vigil_camera_analysed`, `vigil_camera_alerting`). Before an
event starts the tracker asks `_gate`: outside the schedule, or a box outside the camera's
required zones, keeps it from starting (`vigil_events_suppressed_total{reason}`). Masks are
applied by the capture thread, before the ring.

Signals only set flags; the event loop acts on them within its poll interval:
SIGTERM/SIGINT stop (capture first, then the batch in flight, then `end` reason `shutdown` for
every open event, journal flushed, exit 0); SIGHUP reloads the camera list from the config file
(cameras added, removed or changed are started or stopped, the others keep running untouched; a
bad config is logged and the running one kept) and, when `model.checkpoint` or `model.precision`
changed or the checkpoint file was replaced, swaps the video model without touching the cameras:
`streamer/models/swap.py` loads and checks it beside the running one in its own thread, and the
event loop switches the worker to it between two batches (a bad one is refused with one line and
the old model keeps serving). The other model keys (`device`, `max_batch`, `max_wait_ms`,
`threads`, `pose`), alerts and metrics settings need a restart.

Watchdog escalation: a capture thread stuck inside native code (FFmpeg, a V4L2 driver) cannot be
stopped from Python. When one is `stuck()`, the worker heartbeat logs why (once) and stops the
WATCHDOG pings, so systemd restarts the whole service: the only cure.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from detector.errors import ConfigError, VigilError
from detector.pose.collapse import load_pose_checkpoint
from detector.runtime import architecture_name

from .camera_runtime import CameraRuntime
from .comms.mqtt import MqttBridge
from .comms.notifications import Notifications
from .config import CameraConfig, ServeConfig, ServeModelConfig, load_config
from .events import EventTracker, end_message
from .event_evidence import EventEvidence
from .evidence import EvidenceWriter
from .health import health_problem
from .journal_writer import JournalWriter
from .masking import install_log_filter
from .metrics import VigilMetrics
from .models.identity import ServingModel
from .models.swap import (ModelRefused, ModelSwapper, SwapOutcome, SwapRequest, check_fit,
                          prepare)
from .notify import Notifier
from .publisher import AlertPublisher
from .pose.worker import PoseWorker, worker_of
from .regions.zones import CameraZones
from .retention import RetentionClock
from .ringbuffer import FramesUnavailableError, RingBuffer
from .routing import EventRouting
from .schedule import ON, SKIP, CameraSchedules
from .scheduler import BatchPolicy, CameraWindow, Scheduler
from .sources import decode_threads_per_camera
from .types import WindowResult
from .accel.device_ring import DeviceRings
from .worker import WorkerThread, load_worker

log = logging.getLogger(__name__)

# How often camera metrics/state are refreshed and lost cameras' events closed.
REFRESH_S = 0.5
# The event loop's longest sleep; bounds how long a signal waits to be acted on.
LOOP_POLL_S = 0.1
# Results waiting for the event loop at most (batches); the worker waits when it is full.
RESULT_QUEUE = 32
# Journal retention runs this often.
PRUNE_EVERY_S = 3600.0
# `model` keys a reload applies by swapping the model; the others need a restart.
SWAPPABLE_MODEL_KEYS = ("checkpoint", "precision")
# A stopping daemon waits this long for each part.
STOP_CAPTURE_S = 2.0
STOP_WORKER_S = 5.0
STOP_INTEGRATIONS_S = 5.0
# How long systemd waits for start-up while a compiled model warms up (`accel.compile`).
WARM_UP_TIMEOUT_S = 900


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("vigil")
    except Exception:  # running from a source checkout without package metadata
        return "0.0.0+source"


def unknown_clip_length_message(frames: int) -> str:
    """What the daemon logs (and `vigil serve --check` prints) for a checkpoint without
    `input.clip_seconds`, e.g. one imported from the reference implementation."""
    return ("the checkpoint does not say how long its training clips were (input.clip_seconds): "
            f"windows are {frames} consecutive frames unless a camera sets window_seconds")


def _names_key(message: str, key: str) -> bool:
    """Whether a config error's message (`<file>: <key>: <problem>`) is about `key`."""
    return f": {key}: " in message or message.startswith(f"{key}: ")


def _make_data_dir(cfg: ServeConfig) -> None:
    """Create `data_dir` (journal and evidence live there).

    Raises:
        ConfigError: `data_dir: cannot create or write <path>: <reason>` (a read-only parent, a
            full disk, a permission): one line for the command line, not a traceback.
    """
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data_dir: cannot create or write {cfg.data_dir}: "
                          f"{exc.strerror or exc}") from None


@dataclass
class _Flags:
    stop: threading.Event = field(default_factory=threading.Event)
    reload: bool = False
    signal_name: str = ""


class Daemon:
    """`vigil serve`: cameras in, alerts out, until a signal says stop.

    Args:
        cfg: the validated config (`load_config`).
        config_path: the file to re-read on SIGHUP (None: SIGHUP only logs).
        notifier: sd_notify sender; default `Notifier.from_env()` (a no-op outside systemd).
    """

    def __init__(self, cfg: ServeConfig, config_path: Optional[str | Path] = None,
                 notifier: Optional[Notifier] = None) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path is not None else None
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.flags = _Flags()
        self.metrics = VigilMetrics()
        self.device: Optional[torch.device] = None
        self.model_cfg = None
        self.class_names: list[str] = []
        # name -> CameraRuntime. Replaced, never mutated, so other threads (the worker's ring
        # lookup, the scheduler) read it without a lock.
        self._cams: dict[str, CameraRuntime] = {}
        self._results: queue.Queue[list[WindowResult]] = queue.Queue(maxsize=RESULT_QUEUE)
        self._metrics_server = None
        self._web = None                    # the review page (streamer/web/), when enabled
        self._publisher: Optional[AlertPublisher] = None
        self._journal: Optional[JournalWriter] = None
        self._evidence: Optional[EvidenceWriter] = None
        self._event_evidence: Optional[EventEvidence] = None
        self._evidence_reported = (0, 0)    # write errors, drops already counted in metrics
        # Retention (journal and evidence) judges age on this: a wall-clock step forward after
        # start cannot make what this process wrote look old (`streamer/retention.py`).
        self._retention = RetentionClock()
        self._tracker: Optional[EventTracker] = None
        self._scheduler: Optional[Scheduler] = None
        self._mqtt: Optional[MqttBridge] = None
        self._notifications: Optional[Notifications] = None
        self._schedules = CameraSchedules([])
        self._zones: dict[str, CameraZones] = {}
        # Cameras left out of the scheduler (outside a `skip` schedule). Replaced, never mutated:
        # the worker thread reads it through `_windows`.
        self._not_analysed: frozenset[str] = frozenset()
        self._worker: Optional[WorkerThread] = None
        # The video model that serves, replaced (never mutated) when a reload swaps it, and the
        # thread that loads and checks a new one beside it.
        self._serving: Optional[ServingModel] = None
        self._last_model_reload: Optional[dict] = None
        self._swapper: Optional[ModelSwapper] = None
        # (model.checkpoint, model.precision) of the last config read: only a prepared model
        # that is still what the config asks for is switched to.
        self._wanted_model: Optional[tuple[Path, str]] = None
        self._threads: Optional[int] = None
        self._batching: Optional[BatchPolicy] = None
        self._pose_workers: list[PoseWorker] = []
        self.routing: Optional[EventRouting] = None
        self._stopping = threading.Event()
        # Watchdog state (worker thread).
        self._wd_interval: Optional[float] = None
        self._wd_last = 0.0
        self._wd_withheld: Optional[str] = None
        self._loop_beat = time.monotonic()
        self._last_status = ""

    # ================================================================== public
    def run(self) -> int:
        """Start everything, serve until SIGTERM/SIGINT, stop cleanly.

        Returns:
            0 after a requested stop; 1 when the inference worker died (systemd restarts us).
        Raises:
            VigilError: start-up failed (checkpoint, journal, a port in use); nothing is left
                running.
        """
        previous = self._install_signals()
        try:
            try:
                self._start()
            except BaseException:
                self._shutdown(close_events=False)
                raise
            try:
                code = self._loop()
            except Exception:   # a bug in the loop: still end the open events and stop cleanly
                log.exception("event loop failed: stopping (open events end with reason "
                              "shutdown) so systemd restarts the service")
                code = 1
            self._shutdown(close_events=True)
            return code
        finally:
            self._restore_signals(previous)

    def request_stop(self) -> None:
        """Ask the event loop to stop (what SIGTERM does); callable from any thread."""
        self.flags.stop.set()

    def request_reload(self) -> None:
        """Ask the event loop to reload the config (what SIGHUP does)."""
        self.flags.reload = True

    def serving_model(self) -> Optional[ServingModel]:
        """The video model that serves now (its file, SHA-256, load time, classes, input), or
        None before start-up loaded it. Read-only, callable from any thread: a swap replaces it."""
        return self._serving

    def last_model_reload(self) -> Optional[dict]:
        """The last reload that asked for another video model, or None: `{"result": "ok" |
        "refused", "checkpoint": path, "reason": why refused or None, "at": ISO time}`."""
        return self._last_model_reload

    # ================================================================== signals
    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}   # embedded in a test thread: use request_stop()/request_reload()

        def on_stop(signum: int, frame: Any) -> None:
            self.flags.signal_name = signal.Signals(signum).name
            self.flags.stop.set()

        def on_hup(signum: int, frame: Any) -> None:
            self.flags.reload = True

        previous = {}
        for sig, handler in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop),
                             (signal.SIGHUP, on_hup)):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # ================================================================== start-up
    def _start(self) -> None:
        cfg = self.cfg
        _make_data_dir(cfg)      # before the model load: a bad data_dir fails in a second
        self.notifier.status("loading the model")
        # An exported graph runs on onnxruntime's CPU provider even where a GPU is present;
        # `auto` precision follows the checkpoint (fp16 for a reference model).
        loaded = load_worker(cfg.model, cfg.accel)
        worker, mcfg, meta, threads = loaded.worker, loaded.model_cfg, loaded.meta, loaded.threads
        self.device = loaded.device
        self._threads = threads
        batching = worker.policy
        self._batching = batching
        self.model_cfg = mcfg
        self.class_names = list(mcfg.class_names)
        if worker.batch_sizes:
            # Compile every fixed batch size now, not at the first alert; a compile can take
            # minutes, past systemd's default start timeout (90 s), which this extends.
            self.notifier.status(f"compiling the model for batches {worker.batch_sizes}")
            self.notifier.notify(f"EXTEND_TIMEOUT_USEC={WARM_UP_TIMEOUT_S * 1_000_000}")
            took = worker.warm_up()
            if worker.batch_sizes:          # else the compile failed, logged, serving eagerly
                log.info("model compiled and warmed up for batches %s in %.1f s",
                         worker.batch_sizes, took)
        # What serves, for the page, heartbeats and /metrics, and for a reload to compare with.
        self._serving = ServingModel.of(cfg.model.checkpoint, cfg.model.precision, mcfg,
                                        str(meta["runtime"]), worker)
        log.info("model %s (%s, %d frames of %dx%d, classes %s) on %s via %s, %s autocast, "
                 "%d threads", cfg.model.checkpoint.name, architecture_name(mcfg, meta), mcfg.input.frames,
                 mcfg.input.size[1], mcfg.input.size[0], ", ".join(self.class_names), self.device,
                 meta["runtime"], worker.autocast_dtype or "no", threads)
        if mcfg.input.clip_seconds is None:
            log.warning("%s", unknown_clip_length_message(mcfg.input.frames))
        pose_model = None
        if cfg.model.pose is not None:
            pose_model, _ = load_pose_checkpoint(cfg.model.pose.checkpoint)
            log.info("pose path: %s (%s, %g s windows every %g s), %d thread(s)",
                     cfg.model.pose.checkpoint.name, pose_model.cfg.label,
                     pose_model.cfg.window_s, cfg.model.pose.stride_s, cfg.model.pose.workers)
        self.routing = EventRouting(tuple(mcfg.class_names),
                                    pose_model.cfg.label if pose_model is not None else None)
        self.routing.check(cfg.cameras)          # a camera watching what nothing detects
        self.class_names = self.routing.classes

        # Journal first: seq continues from it, and events an unclean stop left open are ended.
        # A full disk does not stop the start (the writer reads the journal and holds new
        # alerts in memory); a damaged journal does, with a clear JournalCorruptError.
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self._journal = JournalWriter(cfg.journal_path, metrics=self.metrics).open()
        self._journal.prune(cfg.alerts.journal_retention_days, self._retention)
        journal_before = (self._journal.journal_id, self._journal.last_seq)
        orphans = [self._journal.append(end_message(last, "restart"))
                   for last in self._journal.open_events()]
        if orphans:
            log.warning("closed %d event(s) left open by an unclean stop (reason restart): %s",
                        len(orphans), ", ".join(m["event_id"] for m in orphans))

        self.metrics.set_build_info(_version(), cfg.model.checkpoint.name, str(self.device))
        self.metrics.set_model_info(self._serving.name, self._serving.sha256,
                                    self._serving.loaded_at)
        if cfg.metrics.enabled:
            try:
                self._metrics_server = self.metrics.start_http_server(cfg.metrics.host,
                                                                      cfg.metrics.port)
            except OSError as exc:
                raise ConfigError(f"metrics.port: cannot serve metrics on "
                                  f"{cfg.metrics.host}:{cfg.metrics.port}: {exc.strerror or exc}"
                                  ) from None
        if cfg.web.enabled:
            self._start_web()
        self._publisher = AlertPublisher(
            cfg.alerts.endpoint, cfg.alerts.replay_endpoint, cfg.journal_path,
            metrics=self.metrics, sndhwm=cfg.alerts.sndhwm, curve=cfg.alerts.curve,
            last_seq=self._journal.last_seq, journal_id=self._journal.journal_id,
            instance=cfg.instance)
        # Integrations before any camera: a notification URL apprise does not know stops the
        # start here, with the key named; the broker is connected to in the background.
        if cfg.notify.rules:
            self._notifications = Notifications(cfg.notify, cfg.instance, cfg.data_dir,
                                                metrics=self.metrics).start()
        if cfg.mqtt is not None:
            self._mqtt = MqttBridge(
                cfg.mqtt, cfg.instance, cfg.journal_path, cfg.data_dir, self.class_names,
                self._watched(cfg.enabled_cameras), start_seq=journal_before[1],
                journal_id=journal_before[0], metrics=self.metrics, version=_version()).start()
        for msg in orphans:
            self._publisher.publish(msg)
            self._offer(msg)
        if cfg.evidence.enabled and (cfg.evidence.snapshot or cfg.evidence.clip):
            self._evidence = EvidenceWriter(cfg.data_dir, max_age_days=cfg.evidence.max_age_days,
                                            max_bytes=cfg.evidence.max_bytes,
                                            min_free_bytes=cfg.evidence.min_free_bytes,
                                            retention=self._retention).start()
            self._event_evidence = EventEvidence(self._evidence)
        # Event ids end in a per-daemon counter; starting above every seq ever assigned keeps
        # them unique across restarts (each run assigns at least one seq per event).
        self._tracker = EventTracker(cfg.smoothing, self.class_names, metrics=self.metrics,
                                     counter_start=self._journal.last_seq + 1,
                                     resolver=lambda cam, label: self.cfg.smoothing_for(cam, label))
        self._set_gating(cfg.enabled_cameras)
        self._scheduler = Scheduler(self._windows, batching)

        if pose_model is not None:
            # Built before any camera opens: a missing or damaged BlazePose file stops the
            # start with one line naming it.
            n = cfg.model.pose.workers
            self._pose_workers = [
                PoseWorker(copy.deepcopy(pose_model), cameras=functools.partial(self._pose_rings, i),
                           on_results=self._on_pose_results, stride_s=cfg.model.pose.stride_s,
                           threads=cfg.model.pose.threads, on_frame=self._on_pose_frame,
                           name=f"vigil-pose-{i}", mask_of=self._mask_of)
                for i in range(n)]

        self._wd_interval = self.notifier.watchdog_interval()
        self._cams = {}
        for cam in cfg.enabled_cameras:
            self._start_camera(cam)
        self._apply_schedules()
        self._worker = WorkerThread(self._scheduler, worker, rings=self._rings,
                                    on_results=self._on_results, heartbeat=self._worker_heartbeat,
                                    device_rings=(DeviceRings(self.device)
                                                  if cfg.accel.device_ring else None))
        self._worker.start()
        for w in self._pose_workers:
            w.start()
        self._swapper = ModelSwapper(self._prepare_model)
        self._swapper.start()
        status = (f"serving {len(self._cams)} camera(s) on {self.device}; alerts on "
                  f"{self._publisher.endpoint}")
        self.notifier.ready(status=status)
        log.info("ready: %s", status)

    def _rings(self) -> dict[str, Optional[RingBuffer]]:
        return {name: cam.ring for name, cam in self._cams.items()}

    def _windows(self) -> dict[str, Optional[CameraWindow]]:
        """The scheduler's view of the camera snapshot (None: the source has not opened yet, or
        the camera watches nothing the video detector scores, or its schedule says it is not
        analysed now)."""
        assert self.routing is not None
        skip = self._not_analysed
        return {name: None if name in skip else cam.window for name, cam in self._cams.items()
                if self.routing.needs_video(cam.cfg.settings.events)}

    def _pose_rings(self, worker: int) -> dict[str, Optional[RingBuffer]]:
        """Pose thread `worker`'s cameras (those watching the pose class, and analysed now) and
        their display rings."""
        assert self.routing is not None
        n = len(self._pose_workers)
        skip = self._not_analysed
        return {name: cam.display_ring for name, cam in self._cams.items()
                if self.routing.needs_pose(cam.cfg.settings.events)
                and worker_of(name, n) == worker and name not in skip}

    def _clip_seconds(self, cam: CameraConfig) -> Optional[float]:
        assert self.model_cfg is not None
        return cam.settings.window_seconds or self.model_cfg.input.clip_seconds

    def _start_camera(self, cam: CameraConfig) -> None:
        """Create the camera's runtime (capture thread, its ring follows the source's real fps)
        and start it."""
        assert self.model_cfg is not None
        inp = self.model_cfg.input
        assert self.routing is not None
        events = cam.settings.events
        rt = CameraRuntime.create(
            cam, frames=inp.frames, size=tuple(inp.size), clip_seconds=self._clip_seconds(cam),
            metrics=self.metrics, labels=tuple(self.routing.watched(events)),
            evidence=self.cfg.evidence, keep_evidence=self._evidence is not None,
            decode_threads=decode_threads_per_camera(len(self.cfg.enabled_cameras)),
            pose=self.routing.needs_pose(events), capture=self.cfg.accel.capture)
        self._cams = {**self._cams, cam.name: rt}
        rt.start()

    def _stop_camera(self, name: str, reason: str) -> None:
        """End the camera's open events with `reason`, stop its thread, drop its metrics."""
        cam = self._cams.get(name)
        if cam is None:
            return
        assert self._tracker is not None
        self._emit(self._tracker.close_camera(name, reason))
        self._cams = {k: v for k, v in self._cams.items() if k != name}   # unscheduled with it
        if not cam.stop(STOP_CAPTURE_S):
            log.error("camera %s: capture thread did not stop within %.0f s (stuck in native "
                      "code); abandoning it", name, STOP_CAPTURE_S)
        cam.forget_metrics()
        log.info("camera %s: stopped (%s)", name, reason)

    # ================================================================== worker thread side
    def _worker_heartbeat(self) -> None:
        """Called by the worker loop once per iteration: the watchdog."""
        now = time.monotonic()
        if self._wd_interval is None:
            # No systemd watchdog: still say (once) when a capture thread hangs.
            if now - self._wd_last >= 1.0:
                self._wd_last = now
                self._health_problem(now)
            return
        if now - self._wd_last < self._wd_interval:
            return
        self._wd_last = now
        if self._health_problem(now) is None:
            self.notifier.watchdog()

    def _health_problem(self, now: float) -> Optional[str]:
        """Why the service must not tell systemd it is healthy, or None. Logs each reason once."""
        problem = health_problem(
            now, self._publisher.replay_problem() if self._publisher is not None else None,
            {name: cam.thread for name, cam in self._cams.items()}, self._wd_interval,
            self._loop_beat, beats={w.name: w.beat for w in self._pose_workers})
        if problem != self._wd_withheld:
            if problem is not None:
                log.error("%s", problem)
            elif self._wd_withheld is not None:
                log.info("health restored; watchdog pings resume")
            self._wd_withheld = problem
        return problem

    def _on_results(self, results: list[WindowResult], elapsed: float) -> None:
        """Worker thread: metrics, then the classes the video detector owns for each camera,
        then hand the batch to the event loop (waiting if it is behind)."""
        m = self.metrics
        m.inference_seconds.observe(elapsed)
        m.batch_size.observe(len(results))
        for r in results:
            m.windows.labels(camera=r.camera).inc()
        assert self.routing is not None
        cams = self._cams
        results = [v for v in (self.routing.video_result(r, cams[r.camera].cfg.settings.events)
                               for r in results if r.camera in cams) if v is not None]
        self._queue_results(results)

    def _on_pose_frame(self, camera: str, seconds: float, person: bool) -> None:
        """Pose thread: one frame tracked."""
        m = self.metrics
        m.pose_seconds.observe(seconds)
        m.pose_frames.labels(camera=camera).inc()
        m.pose_person.labels(camera=camera).set(1 if person else 0)

    def _on_pose_results(self, results: list[WindowResult], elapsed: float) -> None:
        """Pose thread: its windows go to the event loop like the video worker's."""
        for r in results:
            self.metrics.pose_windows.labels(camera=r.camera).inc()
        self._queue_results(results)

    def _queue_results(self, results: list[WindowResult]) -> None:
        """Hand a batch to the event loop, waiting while it is behind (never dropping)."""
        if not results:
            return
        while True:
            try:
                self._results.put(results, timeout=0.5)
                return
            except queue.Full:
                if self._stopping.is_set():
                    log.warning("stopping: %d window result(s) dropped, event loop is behind",
                                len(results))
                    return
                # Keep waiting: dropping results would corrupt events. A wedged event loop
                # stops the watchdog pings (we do not beat while waiting here).

    # ================================================================== event loop
    def _loop(self) -> int:
        next_refresh = next_heartbeat = time.monotonic()
        next_prune = time.monotonic() + PRUNE_EVERY_S
        while not self.flags.stop.is_set():
            self._loop_beat = time.monotonic()
            if self.flags.reload:
                self.flags.reload = False
                self.reload()
            if self._swapper is not None:
                for outcome in self._swapper.poll():
                    self._apply_model(outcome)
            try:
                batch = self._results.get(timeout=LOOP_POLL_S)
            except queue.Empty:
                batch = None
            if batch:
                self._handle(batch)
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh = now + REFRESH_S
                self._refresh_cameras()
                self._apply_schedules()
            assert self._journal is not None
            self._journal.tick()          # lost/replaced file; held alerts once space returns
            self._publisher.tick()        # subscriptions read as they come (bounded)
            if now >= next_heartbeat:
                next_heartbeat = now + self.cfg.alerts.heartbeat_s
                self._heartbeat()
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY_S
                self._journal.prune(self.cfg.alerts.journal_retention_days, self._retention)
            if self._worker is not None and not self._worker.is_alive():
                log.error("inference worker died (%s): stopping so systemd restarts the service",
                          self._worker.error)
                return 1
            dead = [w for w in self._pose_workers if not w.is_alive()]
            if dead:
                log.error("pose worker %s died (%s): stopping so systemd restarts the service",
                          dead[0].name, dead[0].error)
                return 1
        log.info("stopping (%s)", self.flags.signal_name or "requested")
        return 0

    def _handle(self, results: list[WindowResult]) -> None:
        assert self._tracker is not None
        cams = self._cams
        for r in results:
            if r.camera not in cams:
                continue   # removed by a reload while the window was in flight
            self._emit(self._tracker.observe(r, gate=self._gate))

    def _gate(self, camera: str, label: str, box) -> Optional[str]:
        """Why an event of `label` on `camera` with this box may not start now, or None."""
        if self._schedules.state(camera) != ON:
            return "schedule"
        zones = self._zones.get(camera)
        if zones is not None and not zones.allows(box):
            return "zone"
        return None

    def _emit(self, messages: list[dict]) -> None:
        """Evidence, then commit to the journal, then publish: nothing is on the wire unjournalled.
        Then the integrations' queues (MQTT, notifications): they never wait."""
        assert self._journal is not None and self._publisher is not None
        for msg in messages:
            zones = self._zones.get(msg["camera"])
            if zones is not None:
                msg["zones"] = zones.names(msg["box"])
            self._attach_evidence(msg)
            final = self._journal.append(msg)
            self._publisher.publish(final)
            self._offer(final)
            if final["type"] != "update":
                # The event's own log line comes from the tracker; this one adds seq and evidence.
                log.debug("alert seq %d: %s %s on %s (%s, score %.2f)%s", final["seq"],
                         final["label"], final["type"], final["camera"], final["event_id"],
                         final["score"], f", reason {final['reason']}" if final.get("reason") else "")

    def _mask_of(self, camera: str) -> list:
        """A camera's `mask` polygons (pose threads blank them as the capture thread does for
        the video model)."""
        cam = self._cams.get(camera)
        return cam.cfg.mask if cam is not None else []

    def _watched(self, cameras: list[CameraConfig]) -> dict[str, list[str]]:
        """camera -> the classes it watches (`cameras[].events`), for the MQTT entities."""
        assert self.routing is not None
        return {c.name: self.routing.watched(c.settings.events) for c in cameras}

    def _offer(self, final: dict) -> None:
        """Hand a journalled alert to the integrations (bounded queues, never blocking)."""
        if self._mqtt is not None:
            self._mqtt.offer(final)
        if self._notifications is not None:
            self._notifications.offer(final)

    # ---- gating: zones and schedules
    def _set_gating(self, cameras: list[CameraConfig]) -> None:
        """The cameras' zones and schedules (at start and after a reload)."""
        self._zones = {cam.name: CameraZones(cam.zones, cam.required_zones,
                                             cam.settings.zone_min_overlap)
                       for cam in cameras if cam.zones}
        self._schedules.set_cameras(cameras)

    def _apply_schedules(self) -> None:
        """Evaluate the schedules; leave out of the scheduler the cameras a `skip` schedule
        stops analysing (once their open events have ended), and set the gauges."""
        self._schedules.tick()
        assert self._tracker is not None
        busy = {cam for cam, _ in self._tracker.open_events()}
        skipped = frozenset(name for name in self._cams
                            if self._schedules.state(name) == SKIP and name not in busy)
        for name in skipped - self._not_analysed:
            self._tracker.forget(name)     # no stale smoothing when analysis resumes
        self._not_analysed = skipped
        m = self.metrics
        for name in self._cams:
            m.camera_analysed.labels(camera=name).set(0 if name in skipped else 1)
            m.camera_alerting.labels(camera=name).set(
                1 if self._schedules.state(name) == ON else 0)

    # ---- evidence
    def _display_ring(self, camera: str) -> Optional[RingBuffer]:
        cam = self._cams.get(camera)
        return cam.display_ring if cam is not None else None

    def _attach_evidence(self, msg: dict) -> None:
        if self._event_evidence is None:
            return
        cam = self._cams.get(msg["camera"])
        self._event_evidence.attach(msg, self._display_ring(msg["camera"]),
                                    cam.fps if cam is not None else None, self.cfg.evidence)

    # ---- periodic
    def _refresh_cameras(self) -> None:
        """Camera metrics from the threads' state; end the events of cameras that went down."""
        assert self._tracker is not None
        m = self.metrics
        open_cams = {cam for cam, _ in self._tracker.open_events()}
        worker = self._worker
        unavailable = worker.stats.unavailable if worker is not None else {}
        skipped = self._scheduler.skipped if self._scheduler is not None else {}
        up = 0
        for name, cam in self._cams.items():
            is_up = cam.up
            up += is_up
            m.camera_up.labels(camera=name).set(1 if is_up else 0)
            total = skipped.get(name, 0) + unavailable.get(name, 0)
            if total > cam.reported_skipped:
                m.windows_skipped.labels(camera=name).inc(total - cam.reported_skipped)
                cam.reported_skipped = total
            if not is_up and name in open_cams:
                log.warning("camera %s lost with open events: ending them (camera_lost)", name)
                self._emit(self._tracker.close_camera(name, "camera_lost"))
        if self._mqtt is not None:
            self._mqtt.camera_states({name: cam.up for name, cam in self._cams.items()})
        ev = self._evidence
        if ev is not None:
            errors, dropped = ev.write_errors, ev.dropped
            m.evidence_write_errors.inc(max(errors - self._evidence_reported[0], 0))
            m.evidence_dropped.inc(max(dropped - self._evidence_reported[1], 0))
            self._evidence_reported = (errors, dropped)
        journal = self._journal
        serving = self._serving
        status = (f"{up}/{len(self._cams)} cameras up, {len(self._tracker.open_events())} "
                  "event(s) open"
                  + (f"; model {serving.name} ({serving.short_sha})" if serving is not None
                     else "")
                  + (f"; JOURNAL NOT WRITABLE: {journal.held} alert(s) held in memory"
                     if journal is not None and not journal.writable else "")
                  + (f"; UNHEALTHY: {self._wd_withheld}" if self._wd_withheld else ""))
        if status != self._last_status:
            self._last_status = status
            self.notifier.status(status)

    def camera_states(self) -> dict[str, dict]:
        """name -> {"up", "last_frame_age_s", "reconnects", "fps"} for heartbeats."""
        return {name: cam.state() for name, cam in self._cams.items()}

    # ---- the review page (streamer/web/): read-only views, called from its request threads
    def _start_web(self) -> None:
        from .web.live import LiveView
        from .web.server import WebServer

        live = LiveView(cameras=self.web_cameras, frame=self.latest_frame,
                        model=self._serving_view, recent=self.recent_frames)
        self._web = WebServer(self.cfg.web, self.cfg.data_dir, live).start()

    def _serving_view(self) -> dict:
        """`ServingModel.as_dict()` of the model that serves now (a swap shows at once), or {}."""
        serving = self._serving
        return serving.as_dict() if serving is not None else {}

    def latest_frame(self, camera: str):
        """The camera's newest frame, RGB uint8 (H, W, 3) (display ring, else the model
        ring), or None."""
        cam = self._cams.get(camera)
        if cam is None:
            return None
        for ring in (cam.display_ring, cam.ring):
            latest = ring.latest() if ring is not None else None
            if latest is not None:
                return latest[1]
        return None

    def recent_frames(self, camera: str):
        """(every frame the camera's display ring holds, RGB uint8 (N, H, W, 3), oldest first;
        its fps) or None: the few seconds (`CLIP_TAIL_S` + pre-roll + a window) a "missed"
        mark saves."""
        cam = self._cams.get(camera)
        ring = cam.display_ring if cam is not None else None
        if ring is None or not cam.fps > 0:
            return None
        try:
            frames, _, _ = ring.gather(np.arange(ring.oldest, ring.count))
        except FramesUnavailableError:      # overwritten meanwhile: the newest half
            try:
                frames, _, _ = ring.gather(np.arange((ring.oldest + ring.count) // 2, ring.count))
            except FramesUnavailableError:
                return None
        return (frames, float(cam.fps)) if len(frames) else None

    def web_cameras(self) -> list[dict]:
        """Every configured camera, URL masked, with its state when it runs (`up` None: not
        running)."""
        running = self._cams
        out = []
        for cfg in self.cfg.cameras:
            cam = running.get(cfg.name)
            state = cam.state() if cam is not None else {"up": None}
            out.append({"name": cfg.name, "url": cfg.masked_url, "enabled": cfg.enabled,
                        **state})
        return out

    def _heartbeat(self) -> None:
        assert self._publisher is not None and self._journal is not None
        self._publisher.follow_journal(self._journal.journal_id, self._journal.last_seq)
        payload = {"cameras": self.camera_states(), "journal": self._journal.state()}
        if self._serving is not None:
            payload["model"] = self._serving.as_dict()
        if self._last_model_reload is not None:
            payload["model_reload"] = self._last_model_reload
        self._publisher.heartbeat(payload)

    # ================================================================== reload
    def reload(self) -> bool:
        """Re-read the config file and apply its camera list.

        Cameras added are started, removed ones stopped (their open events end with reason
        `reload`), changed ones restarted; unchanged ones keep running untouched. Returns False
        (and keeps the running config) when the file is invalid.
        """
        if self.config_path is None:
            log.warning("reload requested but the daemon was not started from a config file")
            return False
        self.notifier.reloading()
        try:
            try:
                new = load_config(self.config_path)
            except VigilError as exc:
                log.error("reload: %s; keeping the running config", exc)
                if _names_key(str(exc), "model.checkpoint"):   # e.g. the new file is missing
                    self._model_reload_done("refused", None, str(exc))
                return False
            install_log_filter(new.secrets)
            assert self.routing is not None
            try:
                self.routing.check(new.cameras)
            except ConfigError as exc:
                log.error("reload: %s; keeping the running config", exc)
                return False
            restart_only = [f"model.{f.name}" for f in dataclasses.fields(ServeModelConfig)
                            if f.name not in SWAPPABLE_MODEL_KEYS
                            and getattr(new.model, f.name) != getattr(self.cfg.model, f.name)]
            restart_only += [section for section in ("alerts", "metrics", "data_dir",
                                                     "smoothing", "evidence", "mqtt", "notify",
                                                     "web")
                             if getattr(new, section) != getattr(self.cfg, section)]
            for key in restart_only:
                log.warning("reload: %s changed; this takes effect at the next restart "
                            "(a reload applies the camera list, model.checkpoint and "
                            "model.precision)", key)
            wanted = {c.name: c for c in new.enabled_cameras}
            running = dict(self._cams)
            removed = [n for n in running if n not in wanted]
            changed = [n for n in running if n in wanted and wanted[n] != running[n].cfg]
            added = [n for n in wanted if n not in running]
            for name in removed:
                self._stop_camera(name, "reload")
            for name in changed:
                self._stop_camera(name, "reload")
                self._start_camera(wanted[name])
            for name in added:
                self._start_camera(wanted[name])
            self.cfg = dataclasses.replace(self.cfg, cameras=new.cameras, defaults=new.defaults)
            self._set_gating(new.enabled_cameras)
            self._apply_schedules()
            if self._mqtt is not None:
                self._mqtt.set_cameras(self._watched(new.enabled_cameras))
            log.info("reload: %d camera(s) added, %d removed, %d changed, %d unchanged",
                     len(added), len(removed), len(changed),
                     len(running) - len(removed) - len(changed))
            self._request_model(new)
            return True
        finally:
            self.notifier.ready()

    # ================================================================== model swap
    def _swap_request(self, checkpoint: Path, precision: str,
                      cameras: list[CameraConfig]) -> SwapRequest:
        assert self.model_cfg is not None and self.routing is not None
        return SwapRequest.for_cameras(checkpoint, precision, self.model_cfg, self.routing,
                                       cameras)

    def _request_model(self, new: ServeConfig) -> None:
        """Ask the swapper for `new`'s model unless it is the one serving (same path, same
        precision, the file not replaced since)."""
        assert self._serving is not None and self.model_cfg is not None
        if self._swapper is None:
            return
        want = new.model
        self._wanted_model = (want.checkpoint, want.precision)
        if self._serving.same_file(want.checkpoint, want.precision):
            if self._swapper.cancel():
                log.info("reload: model.checkpoint is back to the serving %s; the model being "
                         "loaded will not be used", self._serving.name)
            return
        if not self._swapper.is_alive():        # a bug ended it (logged with its traceback)
            self._refuse_model(want.checkpoint, f"the model swap thread ended "
                               f"({self._swapper.error!r}): restart to change the model")
            return
        req = self._swap_request(want.checkpoint, want.precision, new.enabled_cameras)
        if self._swapper.request(req):
            log.info("reload: loading model %s beside the running %s (sha256 %s); the cameras "
                     "keep running", want.checkpoint, self._serving.name, self._serving.short_sha)

    def _prepare_model(self, req: SwapRequest):
        """Swapper thread: load and check `req` for this daemon's device, threads and batching."""
        assert self.device is not None and self._batching is not None
        try:
            return prepare(req, self.device, self._threads, self._batching,
                           accel=self.cfg.accel)
        except ModelRefused as exc:
            reason = str(exc)
        # Outside the except block, so the traceback no longer holds the refused model's
        # tensors: give the GPU memory they took back (PyTorch FAQ, out-of-memory handlers).
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        raise ModelRefused(reason)

    def _apply_model(self, outcome: SwapOutcome) -> None:
        """Event loop: switch to a checked model (the worker takes it at its next batch), or
        report why it was refused. One log line either way."""
        assert self._serving is not None and self._tracker is not None
        old = self._serving
        cand = outcome.candidate
        reason = outcome.reason
        path = outcome.request.checkpoint
        if (path, outcome.request.precision) != self._wanted_model:
            log.info("reload: model %s %s, but the config now asks for another; dropped", path,
                     "refused" if cand is None else "prepared")
            return
        if cand is not None:
            # The cameras may have changed while it loaded: check again against the current ones.
            try:
                check_fit(cand.model_cfg, self._swap_request(
                    path, outcome.request.precision, self.cfg.enabled_cameras))
            except ModelRefused as exc:
                reason = str(exc)
        if cand is None or reason is not None:
            self._refuse_model(path, reason or "refused")
            return
        serving = dataclasses.replace(cand.serving, loaded_at=time.time())
        known = self._tracker.class_names
        unscored = [c for c in serving.classes if c not in known]
        self.routing = EventRouting(tuple(c for c in serving.classes if c in known),
                                    self.routing.pose if self.routing is not None else None)
        self.model_cfg = cand.model_cfg
        self.class_names = self.routing.classes
        assert self._worker is not None
        self._worker.worker = cand.worker       # read once per batch: the next batch runs it
        self._serving = serving
        self.cfg = dataclasses.replace(self.cfg, model=dataclasses.replace(
            self.cfg.model, checkpoint=path, precision=outcome.request.precision))
        self.metrics.set_build_info(_version(), serving.name, str(self.device))
        self.metrics.set_model_info(serving.name, serving.sha256, serving.loaded_at)
        if self._mqtt is not None:
            self._mqtt.set_cameras(self._watched(self.cfg.enabled_cameras))
        log.info("reload: now serving model %s (sha256 %s, classes %s, %s autocast; loaded and "
                 "checked beside the running one in %.1f s), was %s (sha256 %s)%s", serving.name,
                 serving.short_sha, ", ".join(serving.classes), serving.autocast, cand.seconds,
                 old.name, old.short_sha,
                 f"; class(es) {', '.join(unscored)} not scored until a restart" if unscored
                 else "")
        self._model_reload_done("ok", path, None)

    def _refuse_model(self, path: Path, reason: str) -> None:
        """The one line (and the metric) of a refused model; the running one keeps serving."""
        assert self._serving is not None
        log.error("reload: model %s refused: %s; still serving %s (sha256 %s)", path, reason,
                  self._serving.name, self._serving.short_sha)
        self._model_reload_done("refused", path, reason)

    def _model_reload_done(self, result: str, path: Optional[Path], reason: Optional[str]) -> None:
        self.metrics.model_reloads.labels(result=result).inc()
        self._last_model_reload = {
            "result": result, "checkpoint": str(path) if path is not None else None,
            "reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    # ================================================================== shutdown
    def _shutdown(self, close_events: bool) -> None:
        """Stop capture, finish the batch in flight, end open events (`shutdown`), close all.

        Each step is bounded; a part that does not stop in time is logged and abandoned (all
        threads are daemon threads, so the process still exits).
        """
        self._stopping.set()
        self.notifier.stopping(status="stopping")
        if self._swapper is not None:
            self._swapper.stop(timeout=0)      # a model loading now is not waited for
        cams = list(self._cams.values())
        for cam in cams:                       # ask all at once, then wait for each
            cam.stop(timeout=0)
        for cam in cams:
            if not cam.stop(STOP_CAPTURE_S):
                log.error("camera %s: capture thread did not stop within %.0f s", cam.cfg.name,
                          STOP_CAPTURE_S)
        for pw in self._pose_workers:
            pw.stop(timeout=0)
        for pw in self._pose_workers:
            if not pw.stop(STOP_WORKER_S):
                log.error("pose worker %s did not stop within %.0f s", pw.name, STOP_WORKER_S)
        worker = self._worker
        if worker is not None and worker.is_alive():
            worker.stop(timeout=0)             # ends after the batch in flight
            deadline = time.monotonic() + STOP_WORKER_S
            # Keep draining so the batch in flight can be handed over, then take what is left.
            while worker.is_alive() and time.monotonic() < deadline:
                try:
                    batch = self._results.get(timeout=0.05)
                except queue.Empty:
                    continue
                if close_events:
                    self._handle(batch)
            if worker.is_alive():
                log.error("inference worker did not finish its batch within %.0f s", STOP_WORKER_S)
        while close_events:
            try:
                self._handle(self._results.get_nowait())
            except queue.Empty:
                break
        if close_events and self._tracker is not None and self._journal is not None \
                and self._publisher is not None:
            ended = self._tracker.close_all("shutdown")
            self._emit(ended)
            if ended:
                log.info("closed %d open event(s) (shutdown)", len(ended))
        if self._notifications is not None:
            self._notifications.close(timeout=STOP_INTEGRATIONS_S)
        if self._mqtt is not None:
            self._mqtt.close(timeout=STOP_INTEGRATIONS_S)
        if self._evidence is not None:
            if not self._evidence.close(timeout=5.0):
                log.warning("evidence writer did not finish within 5 s")
        if self._publisher is not None:
            self._publisher.close()
        if self._journal is not None:
            self._journal.close()    # committed at each append; held ones are tried once more
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._web is not None:
            self._web.stop()
        self.notifier.close()
        log.info("stopped")

"""The daemon's Prometheus metrics (design.md's table), on a registry of their own.

`VigilMetrics` owns a fresh `CollectorRegistry`, so two daemons (or two tests) in one process
never share counters, and nothing registers on prometheus_client's global registry. Labels are
only `camera`, `label` and `type` (plus `version`, `model`, `device` on `vigil_build_info`,
`reason` from a fixed set on `vigil_events_suppressed_total`, a notification rule's validated
`name` as `rule`, `result` from a fixed set on `vigil_model_reloads_total`, and the checkpoint's
file name and short hash on `vigil_model_info`): never a URL, a credential or free text.

Thread-safety: prometheus_client metrics are safe to update from any thread.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server as _prom_start_http_server

log = logging.getLogger(__name__)

# One batch's forward pass, device sync included: a few ms on a GPU, seconds on a small CPU.
INFERENCE_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
# Windows per batch: powers of two up to 64 (max_batch is usually 8).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Last frame captured -> start published: the service promises "a second or two".
# One frame through BlazePose: ~20 ms on one core (35-50 ms when re-detecting).
POSE_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

# design.md's metric names, as they appear in the exposition.
METRIC_NAMES = (
    "vigil_frames_total", "vigil_frames_dropped_total", "vigil_camera_up",
    "vigil_camera_reconnects_total", "vigil_camera_last_frame_age_seconds",
    "vigil_windows_total", "vigil_windows_skipped_total", "vigil_inference_seconds",
    "vigil_batch_size", "vigil_alert_latency_seconds", "vigil_alerts_total",
    "vigil_events_active", "vigil_publish_dropped_total", "vigil_build_info",
    "vigil_evidence_write_errors_total", "vigil_evidence_dropped_total",
    "vigil_journal_writable", "vigil_journal_held_alerts", "vigil_journal_write_errors_total",
    "vigil_journal_lost_total", "vigil_replay_restarts_total", "vigil_replay_up",
    # Integrations (issue 28): gating, schedules, MQTT, notifications.
    "vigil_events_suppressed_total", "vigil_camera_analysed", "vigil_camera_alerting",
    "vigil_mqtt_connected", "vigil_mqtt_messages_total", "vigil_mqtt_dropped_total",
    "vigil_mqtt_caught_up_total", "vigil_mqtt_pending_alerts", "vigil_mqtt_connect_errors_total",
    "vigil_mqtt_lost_total", "vigil_notifications_sent_total", "vigil_notifications_failed_total",
    "vigil_notifications_dropped_total", "vigil_notifications_rate_limited_total",
    "vigil_notification_retries_total",
    # The serving video model and its hot swaps (issue 27, `streamer/models/`).
    "vigil_model_info", "vigil_model_loaded_timestamp_seconds", "vigil_model_reloads_total",
)
# `result` of vigil_model_reloads_total: the new model serves, or it was refused.
MODEL_RELOAD_RESULTS = ("ok", "refused")


class MetricsServer:
    """The running HTTP exporter; `shutdown()` stops it and frees the port."""

    def __init__(self, httpd, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = httpd.server_address[:2]

    def shutdown(self, timeout: float = 2.0) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)


class VigilMetrics:
    """Every metric of the design, as attributes (see design.md for their meaning).

    Args:
        registry: where to register; None = a new private `CollectorRegistry`.
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        cam = ["camera"]
        self.frames = Counter("vigil_frames_total", "Frames decoded.", cam, registry=r)
        self.frames_dropped = Counter(
            "vigil_frames_dropped_total",
            "Frames lost before the ring buffer (decode errors, overrun).", cam, registry=r)
        self.camera_up = Gauge("vigil_camera_up",
                               "1 while frames arrive, 0 while reconnecting.", cam, registry=r)
        self.camera_reconnects = Counter("vigil_camera_reconnects_total",
                                         "Camera reopen attempts.", cam, registry=r)
        self.camera_last_frame_age = Gauge(
            "vigil_camera_last_frame_age_seconds",
            "Seconds since the camera's last decoded frame.", cam, registry=r)
        self.windows = Counter("vigil_windows_total", "Windows inferred.", cam, registry=r)
        self.windows_skipped = Counter(
            "vigil_windows_skipped_total", "Due windows dropped under overload.", cam, registry=r)
        self.inference_seconds = Histogram(
            "vigil_inference_seconds", "Wall time of one batch's inference, device time included.",
            registry=r, buckets=INFERENCE_BUCKETS)
        self.batch_size = Histogram("vigil_batch_size", "Windows per inference batch.",
                                    registry=r, buckets=BATCH_BUCKETS)
        self.alert_latency = Histogram(
            "vigil_alert_latency_seconds",
            "Last frame of the triggering window captured -> start alert published.",
            registry=r, buckets=LATENCY_BUCKETS)
        self.alerts = Counter("vigil_alerts_total", "Alert messages published.",
                              ["camera", "label", "type"], registry=r)
        self.events_active = Gauge("vigil_events_active", "Open events.",
                                   ["camera", "label"], registry=r)
        self.publish_dropped = Counter(
            "vigil_publish_dropped_total",
            "Messages the alert socket refused (high-water mark); they stay in the journal.",
            registry=r)
        # Beyond the design's table: evidence is written off the hot path, so a full disk must be
        # visible somewhere other than the log.
        self.evidence_write_errors = Counter(
            "vigil_evidence_write_errors_total",
            "Snapshots/clips that failed to write (disk full, permissions).", registry=r)
        self.evidence_dropped = Counter(
            "vigil_evidence_dropped_total",
            "Snapshots/clips dropped because the evidence writer's queue was full.", registry=r)
        # The journal's own health: a full disk degrades (alerts held in memory), never blinds.
        self.journal_writable = Gauge(
            "vigil_journal_writable",
            "1 while alerts are committed to the journal before publishing; 0 while they are "
            "held in memory (disk full, write errors).", registry=r)
        self.journal_writable.set(1)
        self.journal_held_alerts = Gauge(
            "vigil_journal_held_alerts",
            "Alerts published but not yet in the journal (written when it accepts writes).",
            registry=r)
        self.journal_write_errors = Counter(
            "vigil_journal_write_errors_total",
            "Failed journal commits (each attempt, including retries while degraded).", registry=r)
        self.journal_lost = Counter(
            "vigil_journal_lost_total",
            "Journal files found deleted, replaced or emptied (a new journal id was started).",
            registry=r)
        self.replay_restarts = Counter(
            "vigil_replay_restarts_total",
            "Times the replay server was restarted after an unexpected error.", registry=r)
        self.replay_up = Gauge("vigil_replay_up",
                               "1 while the replay server's thread runs.", registry=r)
        # The pose path (issue 24): its cost per frame and the rate each camera gets.
        self.pose_frames = Counter("vigil_pose_frames_total",
                                   "Frames the pose path tracked (about 8 a second a camera).",
                                   cam, registry=r)
        self.pose_windows = Counter("vigil_pose_windows_total",
                                    "Windows the pose collapse model scored.", cam, registry=r)
        self.pose_person = Gauge("vigil_pose_person",
                                 "1 when the pose path's last frame of the camera showed a "
                                 "person, else 0.", cam, registry=r)
        self.pose_seconds = Histogram("vigil_pose_seconds",
                                      "Wall time of one frame through BlazePose.", registry=r,
                                      buckets=POSE_BUCKETS)
        self.build_info = Gauge("vigil_build_info", "Constant 1, labelled with the build.",
                                ["version", "model", "device"], registry=r)
        # The video model that serves now (a reload may replace it: streamer/models/swap.py).
        self.model_info = Gauge(
            "vigil_model_info",
            "Constant 1, labelled with the video model that serves: its checkpoint's file name "
            "and the first 12 hex digits of its SHA-256.", ["checkpoint", "sha256"], registry=r)
        self.model_loaded = Gauge(
            "vigil_model_loaded_timestamp_seconds",
            "When the serving video model started serving (Unix time).", registry=r)
        self.model_reloads = Counter(
            "vigil_model_reloads_total",
            "Reloads that asked for another video model: result ok (it serves now) or refused "
            "(it did not load or failed its checks; the old model kept serving).",
            ["result"], registry=r)
        for result in MODEL_RELOAD_RESULTS:
            self.model_reloads.labels(result=result)
        # Gating: events kept from starting (reason: zone, schedule), and schedules.
        self.events_suppressed = Counter(
            "vigil_events_suppressed_total",
            "Events that did not start: their box was outside the required zones (reason zone) "
            "or the camera was outside its schedule (reason schedule).",
            ["camera", "label", "reason"], registry=r)
        self.camera_analysed = Gauge(
            "vigil_camera_analysed",
            "1 while the camera's windows are inferred; 0 while its schedule skips it.", cam,
            registry=r)
        self.camera_alerting = Gauge(
            "vigil_camera_alerting",
            "1 while the camera's events may start; 0 outside its schedule (skipped or muted).",
            cam, registry=r)
        # MQTT (streamer/comms/mqtt.py).
        self.mqtt_connected = Gauge("vigil_mqtt_connected",
                                    "1 while connected to the MQTT broker.", registry=r)
        self.mqtt_messages = Counter(
            "vigil_mqtt_messages_total",
            "Alerts the MQTT broker acknowledged (on <prefix>/<instance>/events).", registry=r)
        self.mqtt_dropped = Counter(
            "vigil_mqtt_dropped_total",
            "Alerts the MQTT queue refused (broker away or slow); published later from the "
            "journal.", registry=r)
        self.mqtt_caught_up = Counter(
            "vigil_mqtt_caught_up_total",
            "Alerts published to MQTT from the journal (after an outage, a drop or a restart).",
            registry=r)
        self.mqtt_pending = Gauge(
            "vigil_mqtt_pending_alerts",
            "Alerts assigned a seq and not yet acknowledged by the MQTT broker.", registry=r)
        self.mqtt_connect_errors = Counter(
            "vigil_mqtt_connect_errors_total",
            "Failed or refused MQTT connection attempts, and lost connections.", registry=r)
        self.mqtt_lost = Counter(
            "vigil_mqtt_lost_total",
            "Alerts never published to MQTT: neither queued nor found in the journal "
            "(pruned, or held in memory while the journal could not be written).", registry=r)
        # Notifications (streamer/comms/notifications.py), per rule.
        rule = ["rule"]
        self.notifications_sent = Counter(
            "vigil_notifications_sent_total", "Notifications sent (per URL).", rule, registry=r)
        self.notifications_failed = Counter(
            "vigil_notifications_failed_total",
            "Notifications that failed after every retry (per URL).", rule, registry=r)
        self.notifications_dropped = Counter(
            "vigil_notifications_dropped_total",
            "Notifications dropped because the rule's queue was full.", rule, registry=r)
        self.notifications_rate_limited = Counter(
            "vigil_notifications_rate_limited_total",
            "Matching alerts not notified: within the rule's min_interval_s.", rule, registry=r)
        self.notification_retries = Counter(
            "vigil_notification_retries_total", "Notification send attempts after a failure.",
            rule, registry=r)

    def set_build_info(self, version: str, model: str, device: str) -> None:
        """Publish `vigil_build_info{version,model,device} 1` (replacing any previous labels).

        `model` should be a short identifier (checkpoint file name or architecture), not a path.
        """
        self.build_info.clear()
        self.build_info.labels(version=version, model=model, device=device).set(1)

    def set_model_info(self, checkpoint: str, sha256: str, loaded_at: float) -> None:
        """Publish `vigil_model_info{checkpoint,sha256} 1` for the serving model (replacing the
        previous one) and `vigil_model_loaded_timestamp_seconds`.

        Args:
            checkpoint: the checkpoint's file name (not its path).
            sha256: its hex SHA-256 (the label keeps the first 12 digits).
            loaded_at: when it started serving (Unix time).
        """
        self.model_info.clear()
        self.model_info.labels(checkpoint=checkpoint, sha256=sha256[:12]).set(1)
        self.model_loaded.set(loaded_at)

    def add_camera(self, camera: str, labels: tuple[str, ...] = ()) -> None:
        """Create the camera's series at 0 so dashboards show them before the first event."""
        for metric in (self.frames, self.frames_dropped, self.camera_up, self.camera_reconnects,
                       self.windows, self.windows_skipped):
            metric.labels(camera=camera)
        for label in labels:
            self.events_active.labels(camera=camera, label=label).set(0)
        self.camera_analysed.labels(camera=camera).set(1)
        self.camera_alerting.labels(camera=camera).set(1)

    def add_notification_rule(self, rule: str) -> None:
        """Create a notification rule's series at 0 (dashboards and alert rules see them)."""
        for metric in (self.notifications_sent, self.notifications_failed,
                       self.notifications_dropped, self.notifications_rate_limited,
                       self.notification_retries):
            metric.labels(rule=rule)

    def track_frame_age(self, camera: str, last_frame_mono: Callable[[], Optional[float]]) -> None:
        """Compute `vigil_camera_last_frame_age_seconds{camera}` at scrape time.

        Args:
            last_frame_mono: returns the `time.monotonic()` of the camera's last frame, or None
                before the first one (reported as NaN).
        """
        def age() -> float:
            t = last_frame_mono()
            return float("nan") if t is None else max(time.monotonic() - t, 0.0)
        self.camera_last_frame_age.labels(camera=camera).set_function(age)

    def remove_camera(self, camera: str, labels: tuple[str, ...] = ()) -> None:
        """Drop a removed camera's series (after a reload), so they do not linger at old values."""
        for metric in (self.frames, self.frames_dropped, self.camera_up, self.camera_reconnects,
                       self.camera_last_frame_age, self.windows, self.windows_skipped,
                       self.pose_frames, self.pose_windows, self.pose_person,
                       self.camera_analysed, self.camera_alerting):
            try:
                metric.remove(camera)
            except KeyError:
                pass
        for label in labels:
            try:
                self.events_active.remove(camera, label)
            except KeyError:
                pass
            for kind in ("start", "update", "end"):
                try:
                    self.alerts.remove(camera, label, kind)
                except KeyError:
                    pass
            for reason in ("zone", "schedule"):
                try:
                    self.events_suppressed.remove(camera, label, reason)
                except KeyError:
                    pass

    def exposition(self) -> bytes:
        """The text exposition Prometheus would scrape."""
        return generate_latest(self.registry)

    def start_http_server(self, host: str = "127.0.0.1", port: int = 9108) -> MetricsServer:
        """Serve /metrics on host:port (loopback by default; port 0 = any free port).

        prometheus_client binds every interface unless given `addr`, so the host is passed
        explicitly.
        """
        httpd, thread = _prom_start_http_server(port, addr=host, registry=self.registry)
        server = MetricsServer(httpd, thread)
        log.info("metrics on http://%s:%d/metrics", server.host, server.port)
        return server


class RelayMetrics:
    """The relay's metrics (`vigil relay --metrics HOST:PORT`), on a registry of their own.

    Labels are fixed words (`kind`, `reason`, `result`), never an instance name a peer chose:
    which instance clashes is said in the log line.

    Args:
        registry: where to register; None = a new private `CollectorRegistry`.
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.up = Gauge("vigil_relay_up", "1 while the relay's thread runs.", registry=r)
        self.forwarded = Counter("vigil_relay_forwarded_total",
                                 "Messages forwarded to subscribers.", ["kind"], registry=r)
        self.dropped = Counter(
            "vigil_relay_dropped_total",
            "Messages from daemons not forwarded (too_large, malformed, topic).", ["reason"],
            registry=r)
        self.conflicts = Counter(
            "vigil_relay_instance_conflicts_total",
            "Messages naming an instance that another daemon connection owns (forwarded under "
            "an alias `<instance>-dup<N>`).", registry=r)
        self.conflicting = Gauge(
            "vigil_relay_instances_in_conflict",
            "Instances that more than one daemon connection claims now.", registry=r)
        self.replay = Counter("vigil_relay_replay_requests_total",
                              "Replay requests by result (forwarded, answered, refused).",
                              ["result"], registry=r)
        self.errors = Counter("vigil_relay_errors_total",
                              "Messages whose handling failed (each cost that message only).",
                              registry=r)
        self.restarts = Counter("vigil_relay_loop_restarts_total",
                                "Times the relay's loop was restarted after an unexpected error.",
                                registry=r)

    def exposition(self) -> bytes:
        """The text exposition Prometheus would scrape."""
        return generate_latest(self.registry)

    def start_http_server(self, host: str = "127.0.0.1", port: int = 9110) -> MetricsServer:
        """Serve /metrics on host:port (loopback by default; port 0 = any free port)."""
        httpd, thread = _prom_start_http_server(port, addr=host, registry=self.registry)
        server = MetricsServer(httpd, thread)
        log.info("relay metrics on http://%s:%d/metrics", server.host, server.port)
        return server

"""Notification rules through apprise: Telegram, e-mail, ntfy, Slack, webhooks, ... without code.

    notify:
      rules:
        - name: bar-night
          urls: ["tgram://${TG_BOT_TOKEN}/${TG_CHAT_ID}"]
          cameras: [bar]
          labels: [fight]
          types: [start]                 # the default
          schedule: {timezone: Europe/London, when: ["fri,sat 20:00-04:00"]}
          min_interval_s: 60

An alert goes to every rule it matches: its camera, class and type are listed (or the rule
lists none), and the rule's schedule, if any, is on at the alert's time. Then, per rule:

* rate limit: at most one notification per (camera, class) every `min_interval_s`; the others
  are counted (`vigil_notifications_rate_limited_total{rule}`), never queued;
* one worker thread and one bounded queue (`notify.queue_size`) per rule, so a slow Telegram
  never delays the webhook; a full queue drops (counted, `vigil_notifications_dropped_total`);
  the event loop only ever enqueues;
* one apprise object per URL, each sent separately: a failed URL is retried `notify.retries`
  times (delay `retry_delay_s`, doubling) without sending the others twice; each send is bounded
  by `notify.timeout_s` (apprise's connect and read timeouts); a URL that still fails is logged
  (by rule, never by URL) and counted (`vigil_notifications_failed_total`);
* the start's snapshot is attached where the service takes attachments (apprise decides: e-mail,
  Telegram, Discord, the JSON webhook, ...), after waiting up to `snapshot_wait_s` for the
  evidence writer to have written it.

Notification URLs are secrets (tokens sit in their host and path): they are shown only as
`scheme://***` (`settings.masked_notify_url`), and their pieces are masked as literals in every
log line (`settings.notify_url_secrets`, registered by the config with the log filter), apprise's
own log lines included.
"""
from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from detector.errors import ConfigError

from ..schedule import Schedule, compile_schedule
from .settings import NotifyConfig, NotifyRule, masked_notify_url

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class _Job:
    alert: dict
    queued: float        # monotonic


class _SafeDict(dict):
    def __missing__(self, key: str) -> str:       # validated templates: never reached
        return "{" + key + "}"


def render(template: str, alert: dict, instance: str, zone: Optional[dt.tzinfo] = None) -> str:
    """A title/body template filled from an alert (placeholders: `settings.TEMPLATE_FIELDS`).

    `{time}` is the end of the alert's window in the rule's schedule zone (else the machine's
    local zone), `YYYY-MM-DD HH:MM:SS TZ`; `{score}` has two decimals; `{zones}` is the zone
    names joined by commas (empty when none).
    """
    from ..protocol import parse_iso_utc

    try:
        t = parse_iso_utc(alert["window"]["end"])
    except (KeyError, TypeError, ValueError):
        t = time.time()
    when = dt.datetime.fromtimestamp(t, zone) if zone is not None else \
        dt.datetime.fromtimestamp(t).astimezone()
    fields = _SafeDict(
        camera=alert.get("camera", ""), label=alert.get("label", ""),
        type=alert.get("type", ""), score=f"{float(alert.get('score') or 0.0):.2f}",
        event_id=alert.get("event_id", ""), time=when.strftime("%Y-%m-%d %H:%M:%S %Z"),
        zones=", ".join(alert.get("zones") or []), instance=instance,
        reason=alert.get("reason") or "", seq=alert.get("seq", ""))
    return template.format_map(fields)


class _Rule:
    """One rule's matching, rate limit, queue and worker thread."""

    def __init__(self, rule: NotifyRule, index: int, cfg: NotifyConfig, instance: str,
                 data_dir: Path, metrics: Any, make_apprise: Callable[[str], Any]) -> None:
        self.rule = rule
        self.where = f"notify.rules[{index}]"
        self.cfg = cfg
        self.instance = instance
        self.data_dir = data_dir
        self.metrics = metrics
        self.schedule: Optional[Schedule] = (compile_schedule(rule.schedule, f"{self.where}.schedule")
                                             if rule.schedule is not None else None)
        # One apprise object per URL: a failure is retried on that URL alone.
        self.targets: list[tuple[str, Any]] = []
        for i, url in enumerate(rule.urls):
            target = make_apprise(url)
            if target is None:
                raise ConfigError(f"{self.where}.urls[{i}]: apprise does not recognise "
                                  f"{masked_notify_url(url)} (see apprise's list of services)")
            self.targets.append((masked_notify_url(url), target))
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue_size)
        self.last_sent: dict[tuple[str, str], float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"vigil-notify-{rule.name}",
                                       daemon=True)
        self._drop_logged = False

    # ---- event loop side
    def matches(self, alert: dict, now: float) -> bool:
        r = self.rule
        return ((r.cameras is None or alert.get("camera") in r.cameras)
                and (r.labels is None or alert.get("label") in r.labels)
                and alert.get("type") in r.types
                and (self.schedule is None or self.schedule.active(now)))

    def offer(self, alert: dict, mono: float) -> None:
        key = (str(alert.get("camera")), str(alert.get("label")))
        last = self.last_sent.get(key)
        if last is not None and mono - last < self.rule.min_interval_s:
            self._count("notifications_rate_limited")
            log.debug("notify %s: %s on %s rate-limited", self.rule.name, key[1], key[0])
            return
        try:
            self.queue.put_nowait(_Job(alert, mono))
        except queue.Full:
            self._count("notifications_dropped")
            if not self._drop_logged:
                self._drop_logged = True
                log.warning("notify %s: %d notifications wait already (service slow or down): "
                            "dropping (vigil_notifications_dropped_total)", self.rule.name,
                            self.cfg.queue_size)
            return
        self._drop_logged = False
        self.last_sent[key] = mono

    def _count(self, name: str, n: int = 1) -> None:
        if self.metrics is not None:
            getattr(self.metrics, name).labels(rule=self.rule.name).inc(n)

    # ---- worker
    def _run(self) -> None:
        while not self.stop.is_set():
            job = self.queue.get()
            if job is _STOP:
                break
            try:
                self._send(job)
            except Exception:      # a bug or a plugin's surprise: this notification only
                log.exception("notify %s: sending failed", self.rule.name)
                self._count("notifications_failed", len(self.targets))

    def _send(self, job: _Job) -> None:
        alert = job.alert
        zone = self.schedule.zone if self.schedule is not None else None
        title = render(self.rule.title, alert, self.instance, zone)
        body = render(self.rule.body, alert, self.instance, zone)
        attach = self._snapshot(alert, job.queued) if self.rule.attach_snapshot else None
        for shown, target in self.targets:
            delay = self.cfg.retry_delay_s
            for attempt in range(self.cfg.retries + 1):
                if attempt:
                    self._count("notification_retries")
                    if self.stop.wait(delay):
                        return
                    delay *= 2
                ok = target.notify(title=title, body=body, attach=attach)
                if ok:
                    self._count("notifications_sent")
                    log.info("notify %s: sent %s %s on %s to %s", self.rule.name,
                             alert.get("label"), alert.get("type"), alert.get("camera"), shown)
                    break
            else:
                self._count("notifications_failed")
                log.error("notify %s: could not notify %s after %d attempt(s) (%s %s on %s)",
                          self.rule.name, shown, self.cfg.retries + 1, alert.get("label"),
                          alert.get("type"), alert.get("camera"))

    def _snapshot(self, alert: dict, queued: float) -> Optional[str]:
        """The snapshot's path once written (waiting up to `snapshot_wait_s` from the alert)."""
        rel = alert.get("snapshot")
        if not rel:
            return None
        path = self.data_dir / str(rel)
        deadline = queued + self.cfg.snapshot_wait_s
        while True:
            try:
                if path.stat().st_size > 0:
                    return str(path)
            except OSError:
                pass
            if time.monotonic() >= deadline or self.stop.wait(0.1):
                log.debug("notify %s: snapshot %s not written in time", self.rule.name, rel)
                return None


def _apprise_target(timeout_s: float) -> Callable[[str], Any]:
    """A factory of one-URL apprise objects (None for a URL apprise does not recognise)."""
    import apprise

    asset = apprise.AppriseAsset(storage_mode="memory")

    def make(url: str) -> Any:
        ap = apprise.Apprise(asset=asset)
        if not ap.add(url):
            return None
        for server in ap:
            # Bound one send: apprise's connect (cto) and read (rto) timeouts.
            server.socket_connect_timeout = timeout_s
            server.socket_read_timeout = timeout_s
        return ap

    return make


class Notifications:
    """The `notify:` rules, each with its own worker thread.

    Args:
        cfg: the `notify:` section (validated).
        instance: the daemon's instance name (`{instance}`).
        data_dir: snapshot paths in alerts are relative to it.
        metrics: optional `VigilMetrics` (`vigil_notifications_*`, `rule` label).
        clock: epoch seconds, for the rules' schedules (tests pass a fake one).
        make_target: url -> an object with `notify(title, body, attach) -> bool`, or None for an
            unknown URL (default: apprise).
    Raises:
        ConfigError: a URL apprise does not recognise (`notify.rules[i].urls[j]`), shown masked.
    """

    def __init__(self, cfg: NotifyConfig, instance: str, data_dir: str | Path,
                 metrics: Any = None, clock: Callable[[], float] = time.time,
                 make_target: Optional[Callable[[str], Any]] = None) -> None:
        self.cfg = cfg
        self.clock = clock
        make = make_target if make_target is not None else _apprise_target(cfg.timeout_s)
        self.rules = [_Rule(rule, i, cfg, instance, Path(data_dir), metrics, make)
                      for i, rule in enumerate(cfg.rules)]
        if metrics is not None:
            for rule in cfg.rules:
                metrics.add_notification_rule(rule.name)
        self._started = False

    def start(self) -> "Notifications":
        for rule in self.rules:
            rule.thread.start()
        self._started = True
        if self.rules:
            log.info("notifications: %d rule(s): %s", len(self.rules),
                     ", ".join(f"{r.rule.name} ({len(r.targets)} URL(s))" for r in self.rules))
        return self

    def offer(self, alert: dict) -> None:
        """An alert, journalled: queue it for every rule it matches. Never blocks."""
        now, mono = self.clock(), time.monotonic()
        for rule in self.rules:
            if rule.matches(alert, now):
                rule.offer(alert, mono)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the workers: a send in progress may finish within `timeout`; queued ones are
        abandoned (logged). Returns True when every worker stopped in time."""
        deadline = time.monotonic() + timeout
        left = 0
        for rule in self.rules:
            rule.stop.set()
            while True:
                try:
                    if rule.queue.get_nowait() is not _STOP:
                        left += 1
                except queue.Empty:
                    break
            try:
                rule.queue.put_nowait(_STOP)
            except queue.Full:
                pass
        stopped = True
        for rule in self.rules:
            if self._started:
                rule.thread.join(max(deadline - time.monotonic(), 0.05))
                stopped &= not rule.thread.is_alive()
        if left:
            log.warning("notifications: %d queued notification(s) not sent (stopping)", left)
        return stopped

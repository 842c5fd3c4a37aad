"""Alerts, event states and availability on an MQTT broker, with Home Assistant discovery.

`MqttBridge` publishes, with paho-mqtt (QoS `mqtt.qos`, 1 by default; one client id per daemon):

* every alert, after it is journalled, as its JSON on `<prefix>/<instance>/events`;
* per camera and class, `ON`/`OFF` on `<prefix>/<instance>/<camera>/<label>` (retained);
* the camera's availability (`online` while frames arrive) and the daemon's own
  (`<prefix>/<instance>/available`, retained, `offline` as the last will: the broker publishes
  it when the daemon dies without saying goodbye);
* the last start's snapshot and alert per camera, and the Home Assistant discovery configs
  (`streamer/comms/discovery.py`), re-announced on every (re)connection and whenever Home
  Assistant says it is back (`<discovery_prefix>/status` = `online`).

Never blocking. The event loop only calls `offer`, `camera_states` and `set_cameras`, which
hand data over and return: alerts go into a bounded queue (`mqtt.queue_size`); a full queue
drops the alert (counted, `vigil_mqtt_dropped_total`), which costs nothing but time because
the journal has it. The bridge's own thread publishes; paho's network thread talks to the broker
(connects, reconnects with exponential backoff between `reconnect_min_s` and `reconnect_max_s`,
resends what was not acknowledged). A broker that refuses the password, is down for minutes or
is slow never holds up the pipeline, the journal or the ZeroMQ stream.

The journal is the source of truth. The bridge publishes alerts strictly in `seq` order and
keeps a high-water mark: the highest seq the broker acknowledged, with everything before it. An
alert it does not have in hand (dropped from the queue, offered while the broker was away, or
journalled before a restart) is read from the journal by seq (its own read connection, in its
thread). The mark is saved in `data_dir/mqtt-hwm.json` (with the journal id and the broker), so
a daemon restarted after a broker outage still publishes what the broker never acknowledged.
Alerts published from the journal update the state topics only once the catch-up has reached
the newest alert (live alerts update them at once): Home Assistant then sees each camera's current state, not a replay of old
flips (the events topic carries them all, in order). With no mark yet (first start, another
broker) it starts at the journal's end: the broker never gets old history.

Secrets: the password is given to paho and never logged; log lines name the broker by
`host:port` and the user name only.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from .discovery import OFF, OFFLINE, ON, ONLINE, Topics, camera_configs, camera_removals
from .settings import MqttConfig
from ..journal import Journal, JournalError

log = logging.getLogger(__name__)

HWM_FILE = "mqtt-hwm.json"
# Seconds between saves of the high-water mark while it moves (and at close).
SAVE_EVERY_S = 1.0
# How long a seq missing from both the queue and the journal is waited for (an alert held in
# memory while the journal could not be written) before it is counted lost and skipped.
GAP_GIVE_UP_S = 60.0
# How long a start's snapshot may take to appear on disk (the evidence writer is asynchronous).
SNAPSHOT_WAIT_S = 10.0
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024
# paho's own queue (messages handed to it and not yet acknowledged) is capped at this many on
# top of the in-flight alerts: states and snapshots while a connection drops.
PAHO_QUEUE_SLACK = 1000
IDLE_WAIT_S = 0.2


class MqttBridge:
    """One daemon's MQTT client (see the module docstring).

    Args:
        cfg: the `mqtt:` section.
        instance: the daemon's instance name (topics, client id, discovery ids).
        journal_path: the alert journal (read by seq for catch-up).
        data_dir: where `mqtt-hwm.json` lives; snapshot paths are relative to it.
        labels: every event class the models detect.
        cameras: the enabled cameras' names, or name -> the classes that camera watches
            (`cameras[].events`; a plain name watches every class in `labels`).
        start_seq, journal_id: where the journal stood before this run's first alert (the
            daemon passes them before it ends the events an unclean stop left open).
        metrics: optional `VigilMetrics` (`vigil_mqtt_*`).
        version: Vigil's version, for the discovery device blocks.
    """

    def __init__(self, cfg: MqttConfig, instance: str, journal_path: str | Path,
                 data_dir: str | Path, labels: Iterable[str],
                 cameras: Iterable[str] | Mapping[str, Iterable[str]],
                 start_seq: int, journal_id: str, metrics: Any = None,
                 version: str = "") -> None:
        self.cfg = cfg
        self.instance = instance
        self.journal_path = Path(journal_path)
        self.data_dir = Path(data_dir)
        self.labels = list(labels)
        self.metrics = metrics
        self.version = version
        self.topics = Topics(cfg.topic_prefix, instance)
        self.broker = f"{cfg.host}:{cfg.port}"
        self.client_id = cfg.client_id or f"vigil-{instance}"
        self._queue: queue.Queue[dict] = queue.Queue(maxsize=cfg.queue_size)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._client: Any = None
        # Written by the event loop, read by the bridge thread (whole objects replaced).
        self._cameras: dict[str, tuple[str, ...]] = self._watching(cameras)
        self._camera_up: dict[str, bool] = {}
        self._latest: tuple[str, int] = (journal_id, int(start_seq))
        # Bridge thread state.
        self._journal_id, self._hwm = self._load_hwm(journal_id, int(start_seq))
        self._sent = self._hwm
        self._inflight: deque[tuple[int, int]] = deque()      # (seq, mid) not yet acked
        self._acked: set[int] = set()                         # mids paho saw acknowledged
        self._acked_lock = threading.Lock()
        self._head: Optional[dict] = None
        self._page: deque[dict] = deque()
        self._reader: Optional[Journal] = None
        self._gap_since: Optional[float] = None
        self._states: dict[tuple[str, str], str] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._last_event: dict[str, dict] = {}
        self._dirty_last: set[str] = set()
        self._snapshots: dict[str, tuple[str, float]] = {}
        self._announced: dict[str, tuple[str, ...]] = {}
        self._camera_published: dict[str, bool] = {}
        self._announce = threading.Event()
        self._saved = (self._journal_id, self._hwm)
        self._next_save = 0.0
        self._drop_logged = False
        self._down_logged = False
        self._ever_connected = False
        self._down_since: Optional[float] = None

    # ---------------------------------------------------------------- the event loop's side
    def offer(self, final: dict) -> None:
        """Hand over one journalled alert (`vigil.alert/2`, with seq). Never blocks."""
        self._latest = (str(final.get("journal_id") or self._latest[0]), int(final["seq"]))
        try:
            self._queue.put_nowait(final)
        except queue.Full:
            if self.metrics is not None:
                self.metrics.mqtt_dropped.inc()
            if not self._drop_logged:
                self._drop_logged = True
                log.warning("mqtt: %d alerts wait for the broker %s: newer ones are published "
                            "from the journal once it keeps up (vigil_mqtt_dropped_total)",
                            self.cfg.queue_size, self.broker)
            return
        self._drop_logged = False

    def camera_states(self, states: Mapping[str, bool]) -> None:
        """The cameras' up/down states (published as their availability). Never blocks."""
        if states != self._camera_up:
            self._camera_up = dict(states)

    def set_cameras(self, cameras: Iterable[str] | Mapping[str, Iterable[str]]) -> None:
        """The enabled cameras changed (a reload): announce new ones, remove the others."""
        self._cameras = self._watching(cameras)
        self._announce.set()

    def _watching(self, cameras: Iterable[str] | Mapping[str, Iterable[str]]
                  ) -> dict[str, tuple[str, ...]]:
        if isinstance(cameras, Mapping):
            return {name: tuple(watched) for name, watched in cameras.items()}
        return {name: tuple(self.labels) for name in cameras}

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "MqttBridge":
        """Create the client and start connecting (in the background); never waits for the
        broker."""
        import paho.mqtt.client as mqtt

        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls is not None:
            tls = cfg.tls
            client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                           certfile=str(tls.cert_file) if tls.cert_file else None,
                           keyfile=str(tls.key_file) if tls.key_file else None)
            client.tls_insecure_set(tls.insecure)
        client.will_set(self.topics.available, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(max(1, int(round(cfg.reconnect_min_s))),
                                   max(1, int(round(cfg.reconnect_max_s))))
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(cfg.max_inflight + PAHO_QUEUE_SLACK)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.connect_timeout = min(5.0, float(cfg.keepalive_s))
        self._client = client
        # Where this run starts, saved at once: a run that never reaches the broker (wrong
        # password, broker away) still leaves the next run its starting point.
        self._save(force=True)
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()
        self._thread = threading.Thread(target=self._run, name="vigil-mqtt", daemon=True)
        self._thread.start()
        log.info("mqtt: publishing to %s as %s under %s/ (alerts from seq %d of journal %s)%s",
                 self.broker, self.client_id, self.topics.base, self._hwm + 1, self._journal_id,
                 f", user {cfg.username}" if cfg.username else "")
        return self

    def close(self, timeout: float = 5.0) -> bool:
        """Say `offline`, disconnect, stop both threads, save the high-water mark.

        Returns:
            True when everything stopped within `timeout` (paho's thread may sit in a connect
            to an unreachable broker for its connect timeout; it is a daemon thread).
        """
        deadline = time.monotonic() + timeout
        # Let the last alerts (the shutdown's `end`s) out while the broker is there; whatever
        # is left is published from the journal by the next run.
        flush_until = time.monotonic() + min(2.0, timeout / 2)
        while self._connected.is_set() and self._pending() and time.monotonic() < flush_until:
            time.sleep(0.02)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), 0.1))
        client = self._client
        if client is None:
            return True
        if self._connected.is_set():
            try:
                info = client.publish(self.topics.available, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(min(1.0, max(deadline - time.monotonic(), 0.1)))
            except (RuntimeError, ValueError) as exc:
                log.debug("mqtt: offline not acknowledged: %s", exc)
        client.disconnect()
        stopper = threading.Thread(target=client.loop_stop, name="vigil-mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(deadline - time.monotonic(), 0.1))
        self._save(force=True)
        stopped = not stopper.is_alive() and (self._thread is None
                                               or not self._thread.is_alive())
        if not stopped:
            log.warning("mqtt: client did not stop within %.0f s (broker %s unreachable?)",
                        timeout, self.broker)
        return stopped

    def _pending(self) -> bool:
        """Alerts offered and not yet acknowledged (read from several threads: a hint)."""
        latest_id, latest = self._latest
        return (not self._queue.empty() or self._head is not None or bool(self._inflight)
                or (latest_id == self._journal_id and latest > self._hwm))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def high_water_mark(self) -> tuple[str, int]:
        """(journal id, seq): everything up to seq acknowledged by the broker."""
        return self._journal_id, self._hwm

    # ---------------------------------------------------------------- paho's thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            if self.metrics is not None:
                self.metrics.mqtt_connect_errors.inc()
            if not self._down_logged:
                self._down_logged = True
                log.error("mqtt: broker %s refused the connection: %s%s; retrying with backoff "
                          "up to %.0f s", self.broker, reason_code,
                          f" (user {self.cfg.username})" if self.cfg.username else "",
                          self.cfg.reconnect_max_s)
            return
        down = (time.monotonic() - self._down_since) if self._down_since is not None else None
        log.info("mqtt: connected to %s%s", self.broker,
                 f" after {down:.1f} s away" if down is not None and self._ever_connected else "")
        self._ever_connected = True
        self._down_logged = False
        self._down_since = None
        client.subscribe(f"{self.cfg.discovery.prefix}/status", qos=1)
        self._announce.set()
        self._connected.set()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(1)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if self.metrics is not None:
            self.metrics.mqtt_connect_errors.inc()
        if self._down_since is None:
            self._down_since = time.monotonic()
        if not self._down_logged:
            self._down_logged = True
            log.error("mqtt: cannot connect to broker %s%s; retrying with backoff up to %.0f s "
                      "(alerts are journalled and published when it is back)", self.broker,
                      " over TLS (is it listening, and does mqtt.tls.ca_file sign its "
                      "certificate for this host name?)" if self.cfg.tls is not None else "",
                      self.cfg.reconnect_max_s)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)
        if self._stop.is_set() or not was:
            return
        self._down_since = time.monotonic()
        if self.metrics is not None:
            self.metrics.mqtt_connect_errors.inc()
        if not self._down_logged:
            self._down_logged = True
            log.warning("mqtt: lost the broker %s (%s); reconnecting with backoff up to %.0f s "
                        "(alerts are journalled and published when it is back)", self.broker,
                        reason_code, self.cfg.reconnect_max_s)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        # QoS 1: the broker's PUBACK (QoS 0: written to the socket). Resent copies after a
        # reconnect keep their mid.
        with self._acked_lock:
            self._acked.add(mid)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # Home Assistant's birth message: it restarted and wants the discovery configs again.
        if message.topic == f"{self.cfg.discovery.prefix}/status" and message.payload == b"online":
            self._announce.set()

    # ---------------------------------------------------------------- the bridge's thread
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._step()
                failures = 0
            except Exception:   # a bug or an odd broker: log, back off, never die silently
                failures += 1
                if failures == 1:
                    log.exception("mqtt: publishing failed; retrying")
                self._stop.wait(min(0.5 * failures, 5.0))
        if self._reader is not None:
            self._reader.close()

    def _step(self) -> None:
        if not self._connected.is_set():
            self._gauge_pending()
            self._stop.wait(IDLE_WAIT_S)
            return
        if self._announce.is_set():
            self._announce.clear()
            self._announce_all()
        self._publish_camera_availability()
        self._collect_acks()
        self._publish_snapshots()
        if len(self._inflight) >= self.cfg.max_inflight:
            self._stop.wait(0.02)
            return
        msg, from_journal = self._next_alert()
        if msg is None:
            self._flush_states()
            try:
                self._head = self._queue.get(timeout=IDLE_WAIT_S)
            except queue.Empty:
                pass
            return
        self._publish_alert(msg, from_journal)

    # ---- which alert is next
    def _next_alert(self) -> tuple[Optional[dict], bool]:
        """The alert with seq `sent + 1` (or the next one the journal has), and whether it
        came from the journal; (None, False) when there is none yet."""
        while self._head is None:
            try:
                self._head = self._queue.get_nowait()
            except queue.Empty:
                break
            if self._head is not None and not self._is_new(self._head):
                self._head = None              # published from the journal already
        head = self._head
        if head is not None and head.get("journal_id") != self._journal_id:
            # A new journal (lost, replaced or emptied): seq counts in the new one from here.
            log.warning("mqtt: journal %s replaced by %s; publishing from seq %d", self._journal_id,
                        head.get("journal_id"), int(head["seq"]))
            self._switch_journal(str(head.get("journal_id")), int(head["seq"]) - 1)
        if head is not None and int(head["seq"]) == self._sent + 1:
            self._head = None
            return head, False
        if self._page:
            return self._page.popleft(), True
        latest_id, latest = self._latest
        if head is None and not (latest_id == self._journal_id and latest > self._sent):
            return None, False
        page = self._read_journal()
        if page:
            self._gap_since = None
            self._page.extend(page)
            return self._page.popleft(), True
        # Not in the journal (yet): an alert held in memory while the journal cannot be written.
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
        if head is not None and now - self._gap_since >= GAP_GIVE_UP_S:
            self._count_lost(int(head["seq"]) - self._sent - 1)
            self._sent = int(head["seq"]) - 1
            self._gap_since = None
            self._head = None
            return head, False
        return None, False

    def _is_new(self, msg: dict) -> bool:
        return msg.get("journal_id") != self._journal_id or int(msg["seq"]) > self._sent

    def _switch_journal(self, journal_id: str, sent: int) -> None:
        self._journal_id = journal_id
        self._sent = self._hwm = sent
        self._page.clear()
        self._inflight.clear()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _read_journal(self) -> list[dict]:
        """The next alerts after `sent` from the journal, in seq order (gaps counted lost)."""
        try:
            if self._reader is not None and self._reader.file_problem() is not None:
                self._reader.close()
                self._reader = None
            if self._reader is None:
                self._reader = Journal(self.journal_path)
            rows = self._reader.since(self._sent, limit=self.cfg.max_inflight)
        except JournalError as exc:
            log.debug("mqtt: cannot read the journal now: %s", exc)
            return []
        out = []
        for row in rows:
            if row.get("journal_id") != self._journal_id:
                break
            out.append(row)
        return out

    def _count_lost(self, n: int) -> None:
        if n <= 0:
            return
        if self.metrics is not None:
            self.metrics.mqtt_lost.inc(n)
        log.error("mqtt: %d alert(s) after seq %d are in neither the queue nor the journal "
                  "(pruned, or never journalled); skipping them", n, self._sent)

    # ---- publishing
    def _publish_alert(self, msg: dict, from_journal: bool) -> None:
        seq = int(msg["seq"])
        if seq > self._sent + 1:
            self._count_lost(seq - self._sent - 1)
        payload = json.dumps({**msg, "instance": self.instance}, separators=(",", ":"),
                             ensure_ascii=False)
        info = self._client.publish(self.topics.events, payload, qos=self.cfg.qos)
        if info.rc == 15:     # MQTT_ERR_QUEUE_SIZE: paho refused it; re-read from the journal
            return
        self._inflight.append((seq, info.mid))
        self._sent = seq
        if from_journal and self.metrics is not None:
            self.metrics.mqtt_caught_up.inc()
        key = (str(msg["camera"]), str(msg["label"]))
        state = OFF if msg["type"] == "end" else ON
        if self._states.get(key) != state:
            self._states[key] = state
            self._dirty.add(key)
        if msg["type"] == "start":
            self._last_event[key[0]] = msg
            self._dirty_last.add(key[0])
            if self.cfg.snapshot and msg.get("snapshot"):
                self._snapshots[key[0]] = (str(msg["snapshot"]),
                                           time.monotonic() + SNAPSHOT_WAIT_S)
        if not from_journal:
            self._flush_states(live=True)

    def _flush_states(self, live: bool = False) -> None:
        """Publish changed states and last events: at once for a live alert, at the end of a
        catch-up from the journal (so Home Assistant sees the current state, not old flips)."""
        latest_id, latest = self._latest
        if not live and (self._page or (latest_id == self._journal_id and latest > self._sent)):
            return
        for key in sorted(self._dirty):
            self._publish(self.topics.state(*key), self._states[key])
        self._dirty.clear()
        for camera in sorted(self._dirty_last):
            msg = self._last_event[camera]
            self._publish(self.topics.last_event(camera),
                          json.dumps({**msg, "instance": self.instance}, separators=(",", ":")))
        self._dirty_last.clear()

    def _publish(self, topic: str, payload: Any, retain: bool = True) -> None:
        self._client.publish(topic, payload, qos=self.cfg.qos, retain=retain)

    def _collect_acks(self) -> None:
        """Move the high-water mark over the alerts the broker acknowledged, in order."""
        acked = 0
        with self._acked_lock:
            while self._inflight and self._inflight[0][1] in self._acked:
                seq, mid = self._inflight.popleft()
                self._acked.discard(mid)
                self._hwm = seq
                acked += 1
            if not self._inflight or len(self._acked) > 4 * PAHO_QUEUE_SLACK:
                # Acks of states and snapshots are not waited for: forget them.
                keep = {mid for _, mid in self._inflight}
                self._acked &= keep
        if acked and self.metrics is not None:
            self.metrics.mqtt_messages.inc(acked)
        self._gauge_pending()
        self._save()

    def _gauge_pending(self) -> None:
        if self.metrics is not None:
            latest_id, latest = self._latest
            self.metrics.mqtt_pending.set(max(latest - self._hwm, 0)
                                          if latest_id == self._journal_id else 0)

    def _announce_all(self) -> None:
        """Availability, discovery configs (and removals), states and last events."""
        self._publish(self.topics.available, ONLINE)
        cameras = self._cameras
        disc = self.cfg.discovery
        if disc.enabled:
            for camera, watched in self._announced.items():
                gone = [lb for lb in watched if lb not in cameras.get(camera, ())]
                if camera not in cameras or gone:
                    # Removed entities: the whole camera, or classes it no longer watches.
                    for topic, payload in camera_removals(
                            self.topics, disc.prefix, camera,
                            gone if camera in cameras else watched,
                            whole=camera not in cameras):
                        self._publish(topic, payload)
            for camera, watched in cameras.items():
                for topic, payload in camera_configs(self.topics, disc.prefix, camera,
                                                     watched, disc.device_classes,
                                                     self.version, self.cfg.qos):
                    self._publish(topic, payload)
        self._announced = dict(cameras)
        for camera, watched in cameras.items():
            for label in watched:
                self._states.setdefault((camera, label), OFF)
                self._dirty.add((camera, label))
            if camera in self._last_event:
                self._dirty_last.add(camera)
        self._camera_published = {}
        self._flush_states()

    def _publish_camera_availability(self) -> None:
        up = self._camera_up
        for camera in self._cameras:
            state = bool(up.get(camera, False))
            if self._camera_published.get(camera) != state:
                self._camera_published[camera] = state
                self._publish(self.topics.camera_available(camera), ONLINE if state else OFFLINE)

    def _publish_snapshots(self) -> None:
        now = time.monotonic()
        for camera, (rel, deadline) in list(self._snapshots.items()):
            path = self.data_dir / rel
            try:
                size = path.stat().st_size
            except OSError:
                if now >= deadline:
                    del self._snapshots[camera]
                    log.debug("mqtt: snapshot %s never appeared", rel)
                continue
            del self._snapshots[camera]
            if not 0 < size <= MAX_SNAPSHOT_BYTES:
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.debug("mqtt: cannot read snapshot %s: %s", rel, exc)
                continue
            self._publish(self.topics.snapshot(camera), data)

    # ---- high-water mark
    def _load_hwm(self, journal_id: str, start_seq: int) -> tuple[str, int]:
        """Where to resume: the saved mark for this journal, broker and topics, else the
        journal's end (`start_seq`)."""
        path = self.data_dir / HWM_FILE
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return journal_id, start_seq
        except (OSError, ValueError) as exc:
            log.warning("mqtt: ignoring %s (%s): starting at the journal's end", path, exc)
            return journal_id, start_seq
        if not isinstance(saved, dict) or saved.get("journal_id") != journal_id \
                or saved.get("broker") != self.broker or saved.get("topic") != self.topics.base \
                or not isinstance(saved.get("seq"), int):
            return journal_id, start_seq
        return journal_id, min(max(int(saved["seq"]), 0), start_seq)

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        mark = (self._journal_id, self._hwm)
        if not force and (mark == self._saved or now < self._next_save):
            return
        self._next_save = now + SAVE_EVERY_S
        path = self.data_dir / HWM_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"journal_id": mark[0], "seq": mark[1],
                                       "broker": self.broker, "topic": self.topics.base}),
                           encoding="utf-8")
            os.replace(tmp, path)
            self._saved = mark
        except OSError as exc:     # a full disk: the mark stays in memory, retried next time
            log.debug("mqtt: cannot save %s: %s", path, exc)

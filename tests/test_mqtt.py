"""MQTT against a real broker: Debian's mosquitto, started by the tests on a loopback port
(`vigil_tools.harness.Mosquitto`), read by a paho subscriber as Home Assistant would.

The bridge (`streamer.comms.mqtt.MqttBridge`) runs in-process here, over a real journal: alerts,
retained states and availability, the Home Assistant discovery configs, the catch-up from the
journal by seq after the broker was stopped and restarted (and after the daemon itself was
restarted meanwhile), a broker that refuses the password, and a frozen (slow) broker. The real
daemon with MQTT is `tests/test_integrations_daemon.py`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import pytest

from streamer.comms.mqtt import HWM_FILE, MqttBridge
from streamer.comms.settings import MqttConfig
from streamer.journal import Journal
from streamer.metrics import VigilMetrics
from vigil_tools.harness import Mosquitto, mosquitto_missing, self_signed_tls, wait_until

mqtt = pytest.importorskip("paho.mqtt.client")

pytestmark = pytest.mark.integration

INSTANCE = "site1"
LABELS = ("fight", "collapse")


@pytest.fixture(scope="module")
def _mosquitto_available() -> None:
    reason = mosquitto_missing()
    if reason:
        print(f"skipping MQTT tests: {reason}")
        pytest.skip(reason)


@pytest.fixture
def broker(tmp_path, _mosquitto_available):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.kill()


class Recorder:
    """A paho subscriber keeping every message (topic, payload, retain flag) in arrival order.

    Args:
        port: the broker's port.
        topics: filters subscribed at QoS 1 on every (re)connection.
        client_id, persistent: a fixed id with `persistent` keeps its session (and the QoS 1
            messages queued for it) across its own and the broker's restarts.
    """

    def __init__(self, port: int, topics=("#",), client_id: Optional[str] = None,
                 persistent: bool = False, username: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
                                  clean_session=not persistent)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 1)
        self.connected = threading.Event()

        def on_connect(client, userdata, flags, rc, props):
            if not rc.is_failure:
                for t in topics:
                    client.subscribe(t, qos=1)
                self.connected.set()

        def on_disconnect(*args):
            self.connected.clear()

        def on_message(client, userdata, msg):
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

        self.client.on_connect, self.client.on_message = on_connect, on_message
        self.client.on_disconnect = on_disconnect
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert self.connected.wait(10), "subscriber could not connect"
        time.sleep(0.2)        # the SUBSCRIBE is acknowledged before the test goes on

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def last(self, topic: str) -> Optional[bytes]:
        got = self.on(topic)
        return got[-1] if got else None

    def retained(self, topic: str) -> Optional[bytes]:
        with self._lock:
            got = [p for t, p, r in self.messages if t == topic and r]
        return got[-1] if got else None

    def seqs(self, topic: str) -> list[int]:
        return [json.loads(p)["seq"] for p in self.on(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class JournalFeed:
    """Alerts as the daemon makes them: appended to a real journal, then offered to the bridge."""

    def __init__(self, path: Path) -> None:
        self.journal = Journal(path)
        self.n = 0

    def alert(self, camera: str = "bar", label: str = "fight", kind: str = "start",
              snapshot: Optional[str] = None) -> dict:
        self.n += 1
        msg = {"schema": "vigil.alert/1", "type": kind, "event_id": f"{camera}-ev-{self.n:04d}",
               "camera": camera, "label": label, "score": 0.9, "box": [0.1, 0.1, 0.5, 0.5],
               "box_px": [32, 24, 160, 120], "frame_size": [320, 240],
               "window": {"start": "2026-11-24T10:15:01.12Z", "end": "2026-11-24T10:15:01.76Z"},
               "snapshot": snapshot, "clip": None,
               "reason": "cleared" if kind == "end" else None}
        return self.journal.append(msg)

    @property
    def last_seq(self) -> int:
        return self.journal.last_seq()

    @property
    def journal_id(self) -> str:
        return self.journal.journal_id


def bridge_for(broker_port: int, tmp_path: Path, feed: JournalFeed, start_seq: int = 0,
               metrics=None, cameras=("bar", "hall"), **cfg) -> MqttBridge:
    settings = {"host": "127.0.0.1", "port": broker_port, "reconnect_min_s": 1,
                "reconnect_max_s": 1, "keepalive_s": 5, **cfg}
    mc = MqttConfig(**{k: v for k, v in settings.items() if k != "discovery"})
    if isinstance(mc.tls, dict):
        from streamer.comms.settings import MqttTlsConfig

        mc.tls = MqttTlsConfig(**mc.tls)
    if "discovery" in cfg:
        mc.discovery = cfg["discovery"]
    mc.validate("mqtt")
    return MqttBridge(mc, INSTANCE, feed.journal.path, tmp_path, LABELS, cameras,
                      start_seq=start_seq, journal_id=feed.journal_id, metrics=metrics,
                      version="0.1.0").start()


def test_alerts_states_availability_and_home_assistant_discovery(broker, tmp_path):
    feed = JournalFeed(tmp_path / "journal.sqlite3")
    snap = tmp_path / "events" / "bar" / "start.jpg"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9")
    sub = Recorder(broker.port)
    metrics = VigilMetrics()
    bridge = bridge_for(broker.port, tmp_path, feed, metrics=metrics)
    try:
        assert wait_until(lambda: bridge.connected, 10)
        bridge.camera_states({"bar": True, "hall": False})
        start = feed.alert(snapshot="events/bar/start.jpg")
        bridge.offer(start)
        bridge.offer(feed.alert(kind="update"))
        end = feed.alert(kind="end")
        bridge.offer(end)
        base = f"vigil/{INSTANCE}"
        assert wait_until(lambda: len(sub.on(f"{base}/events")) == 3, 10)
        assert wait_until(lambda: sub.last(f"{base}/bar/fight") == b"OFF"
                          and sub.last(f"{base}/bar/snapshot") is not None, 10)
        # Every alert in seq order, as the alert JSON with the instance stamped.
        events = [json.loads(p) for p in sub.on(f"{base}/events")]
        assert [e["seq"] for e in events] == [1, 2, 3]
        assert [e["type"] for e in events] == ["start", "update", "end"]
        assert all(e["instance"] == INSTANCE and e["schema"] == "vigil.alert/2" for e in events)
        assert sub.on(f"{base}/bar/fight")[-2:] == [b"ON", b"OFF"]
        assert sub.last(f"{base}/bar/collapse") == b"OFF"
        assert sub.last(f"{base}/available") == b"online"
        assert sub.last(f"{base}/bar/available") == b"online"
        assert sub.last(f"{base}/hall/available") == b"offline"
        assert sub.last(f"{base}/bar/snapshot") == snap.read_bytes()
        assert json.loads(sub.last(f"{base}/bar/last_event"))["event_id"] == start["event_id"]
        assert wait_until(lambda: metrics.mqtt_messages._value.get() == 3, 5)

        # Home Assistant's view: a fresh subscriber gets the retained configs and states.
        ha = Recorder(broker.port, topics=("homeassistant/#", f"{base}/#"))
        try:
            cfg_topic = f"homeassistant/binary_sensor/vigil_{INSTANCE}/bar_fight/config"
            assert wait_until(lambda: ha.retained(cfg_topic), 5)
            fight = json.loads(ha.retained(cfg_topic))
            assert fight["device_class"] == "safety"
            assert fight["state_topic"] == f"{base}/bar/fight"
            assert (fight["payload_on"], fight["payload_off"]) == ("ON", "OFF")
            assert fight["unique_id"] == f"vigil_{INSTANCE}_bar_fight"
            assert fight["availability_mode"] == "all"
            assert [a["topic"] for a in fight["availability"]] == [f"{base}/available",
                                                                   f"{base}/bar/available"]
            assert fight["device"]["identifiers"] == [f"vigil_{INSTANCE}_bar"]
            collapse = json.loads(ha.retained(
                f"homeassistant/binary_sensor/vigil_{INSTANCE}/hall_collapse/config"))
            assert collapse["device_class"] == "problem"
            image = json.loads(ha.retained(
                f"homeassistant/image/vigil_{INSTANCE}/bar_snapshot/config"))
            assert image["image_topic"] == f"{base}/bar/snapshot"
            assert image["content_type"] == "image/jpeg"
            sensor = json.loads(ha.retained(
                f"homeassistant/sensor/vigil_{INSTANCE}/bar_last_event/config"))
            assert sensor["state_topic"] == sensor["json_attributes_topic"] == \
                f"{base}/bar/last_event"
            assert ha.retained(f"{base}/bar/fight") == b"OFF"
            assert ha.retained(f"{base}/available") == b"online"
            assert ha.retained(f"{base}/bar/snapshot") == snap.read_bytes()
            # Home Assistant restarted: it says so, and the configs come again.
            before = len(ha.on(cfg_topic))
            ha.client.publish("homeassistant/status", "online", qos=1)
            assert wait_until(lambda: len(ha.on(cfg_topic)) > before, 5)
        finally:
            ha.close()
        # A camera removed by a reload: its entities are removed (empty retained configs).
        bridge.set_cameras(["bar"])
        assert wait_until(lambda: sub.last(
            f"homeassistant/binary_sensor/vigil_{INSTANCE}/hall_fight/config") == b"", 5)
        # A camera that now watches fights only (`cameras[].events: [fight]`) loses its
        # collapse sensor and keeps the others.
        bridge.set_cameras({"bar": ["fight"]})
        assert wait_until(lambda: sub.last(
            f"homeassistant/binary_sensor/vigil_{INSTANCE}/bar_collapse/config") == b"", 5)
        assert sub.last(f"homeassistant/binary_sensor/vigil_{INSTANCE}/bar_fight/config") != b""
        assert sub.last(f"homeassistant/image/vigil_{INSTANCE}/bar_snapshot/config") != b""
    finally:
        bridge.close()
        sub.close()
    # A clean stop says offline itself.
    late = Recorder(broker.port, topics=(f"vigil/{INSTANCE}/available",))
    try:
        assert wait_until(lambda: late.retained(f"vigil/{INSTANCE}/available") == b"offline", 5)
    finally:
        late.close()


def test_catch_up_from_the_journal_after_the_broker_was_stopped_and_restarted(broker, tmp_path):
    feed = JournalFeed(tmp_path / "journal.sqlite3")
    sub = Recorder(broker.port, topics=(f"vigil/{INSTANCE}/#",), client_id="ha-persistent",
                   persistent=True)
    metrics = VigilMetrics()
    # A queue of 3: most of what happens while the broker is away is read back from the journal.
    bridge = bridge_for(broker.port, tmp_path, feed, metrics=metrics, queue_size=3)
    try:
        assert wait_until(lambda: bridge.connected, 10)
        for _ in range(2):
            bridge.offer(feed.alert())
        assert wait_until(lambda: len(sub.seqs(f"vigil/{INSTANCE}/events")) == 2, 10)
        broker.stop()                          # SIGTERM: it saves the subscriber's session
        assert wait_until(lambda: not bridge.connected, 10)
        took = []
        for i in range(40):
            alert = feed.alert(kind="end" if i == 39 else "update")
            t0 = time.perf_counter()
            bridge.offer(alert)
            took.append(time.perf_counter() - t0)
        assert max(took) < 0.01, f"offer blocked for {max(took):.3f} s while the broker was away"
        assert metrics.mqtt_dropped._value.get() >= 36   # the queue (3) and one in hand kept
        broker.start()
        assert wait_until(lambda: len(set(sub.seqs(f"vigil/{INSTANCE}/events"))) == 42, 30), \
            sorted(set(sub.seqs(f"vigil/{INSTANCE}/events")))
        seqs = sub.seqs(f"vigil/{INSTANCE}/events")
        first_seen = list(dict.fromkeys(seqs))
        assert first_seen == list(range(1, 43)), "published out of seq order"
        assert metrics.mqtt_caught_up._value.get() >= 36
        # The state topic ends in the journal's last state, not in a replay of old flips.
        assert wait_until(lambda: sub.last(f"vigil/{INSTANCE}/bar/fight") == b"OFF", 5)
        assert wait_until(lambda: bridge.high_water_mark == (feed.journal_id, 42), 5)
    finally:
        bridge.close()
        sub.close()
    saved = json.loads((tmp_path / HWM_FILE).read_text())
    assert (saved["journal_id"], saved["seq"]) == (feed.journal_id, 42)


def test_a_daemon_restarted_during_an_outage_publishes_what_the_broker_never_acknowledged(
        broker, tmp_path):
    feed = JournalFeed(tmp_path / "journal.sqlite3")
    first = bridge_for(broker.port, tmp_path, feed)
    assert wait_until(lambda: first.connected, 10)
    first.offer(feed.alert())
    assert wait_until(lambda: first.high_water_mark[1] == 1, 10)
    broker.stop()
    assert wait_until(lambda: not first.connected, 10)
    for _ in range(5):
        first.offer(feed.alert(kind="update"))
    first.close(timeout=3)                     # the daemon stops while the broker is away
    assert json.loads((tmp_path / HWM_FILE).read_text())["seq"] == 1
    broker.start()
    sub = Recorder(broker.port, topics=(f"vigil/{INSTANCE}/events",))
    # The next daemon starts at the journal's end (seq 6) and still publishes 2..6.
    second = bridge_for(broker.port, tmp_path, feed, start_seq=feed.last_seq)
    try:
        assert wait_until(lambda: sub.seqs(f"vigil/{INSTANCE}/events") == [2, 3, 4, 5, 6], 10), \
            sub.seqs(f"vigil/{INSTANCE}/events")
    finally:
        second.close()
        sub.close()


def test_without_a_saved_mark_the_broker_gets_no_old_history(broker, tmp_path):
    feed = JournalFeed(tmp_path / "journal.sqlite3")
    for _ in range(3):
        feed.alert()
    sub = Recorder(broker.port, topics=(f"vigil/{INSTANCE}/events",))
    bridge = bridge_for(broker.port, tmp_path, feed, start_seq=feed.last_seq)
    try:
        assert wait_until(lambda: bridge.connected, 10)
        bridge.offer(feed.alert())
        assert wait_until(lambda: sub.seqs(f"vigil/{INSTANCE}/events") == [4], 10)
        time.sleep(0.5)
        assert sub.seqs(f"vigil/{INSTANCE}/events") == [4]
    finally:
        bridge.close()
        sub.close()


def test_a_broker_refusing_the_password_is_logged_once_masked_counted_and_never_blocks(
        tmp_path, _mosquitto_available, caplog):
    broker = Mosquitto(tmp_path / "broker", users={"vigil-ha": "right-password"}).start()
    feed = JournalFeed(tmp_path / "journal.sqlite3")
    metrics = VigilMetrics()
    try:
        with caplog.at_level(logging.DEBUG):
            bridge = bridge_for(broker.port, tmp_path, feed, metrics=metrics, queue_size=5,
                                username="vigil-ha", password="wrong-Pa55word")
            try:
                assert wait_until(lambda: metrics.mqtt_connect_errors._value.get() >= 2, 10)
                assert not bridge.connected
                took = []
                for _ in range(20):
                    alert = feed.alert()
                    t0 = time.perf_counter()
                    bridge.offer(alert)
                    took.append(time.perf_counter() - t0)
                assert max(took) < 0.01
                assert metrics.mqtt_dropped._value.get() == 15
            finally:
                bridge.close(timeout=3)
        refused = [r for r in caplog.records if "refused the connection" in r.getMessage()]
        assert len(refused) == 1 and refused[0].levelno == logging.ERROR
        assert "vigil-ha" in refused[0].getMessage()
        assert "wrong-Pa55word" not in caplog.text
        # The right password connects, and what was refused comes out of the journal.
        sub = Recorder(broker.port, topics=(f"vigil/{INSTANCE}/events",), username="vigil-ha",
                       password="right-password")
        good = bridge_for(broker.port, tmp_path, feed, start_seq=feed.last_seq,
                          username="vigil-ha", password="right-password")
        try:
            assert wait_until(lambda: len(sub.seqs(f"vigil/{INSTANCE}/events")) == 20, 10)
        finally:
            good.close()
            sub.close()
    finally:
        broker.kill()


def test_a_frozen_broker_never_blocks_offer_and_everything_arrives_once_it_thaws(
        broker, tmp_path):
    feed = JournalFeed(tmp_path / "journal.sqlite3")
    sub = Recorder(broker.port, topics=(f"vigil/{INSTANCE}/events",))
    metrics = VigilMetrics()
    bridge = bridge_for(broker.port, tmp_path, feed, metrics=metrics, queue_size=10,
                        max_inflight=5)
    try:
        assert wait_until(lambda: bridge.connected, 10)
        broker.pause()                         # slow: connected, but answering nothing
        took = []
        for _ in range(200):
            alert = feed.alert(kind="update")
            t0 = time.perf_counter()
            bridge.offer(alert)
            took.append(time.perf_counter() - t0)
        assert max(took) < 0.01
        assert metrics.mqtt_dropped._value.get() > 0
        time.sleep(1.0)
        broker.resume()
        assert wait_until(lambda: set(sub.seqs(f"vigil/{INSTANCE}/events")) ==
                          set(range(1, 201)), 30), len(set(sub.seqs(f"vigil/{INSTANCE}/events")))
    finally:
        bridge.close()
        sub.close()


def test_close_is_bounded_when_the_broker_is_unreachable(tmp_path, _mosquitto_available):
    from vigil_tools.harness import free_port

    feed = JournalFeed(tmp_path / "journal.sqlite3")
    bridge = bridge_for(free_port(), tmp_path, feed)     # nothing listens there
    time.sleep(0.5)
    t0 = time.monotonic()
    bridge.close(timeout=3)
    assert time.monotonic() - t0 < 4


def test_tls_to_a_broker_whose_certificate_the_configured_ca_signed(tmp_path, _mosquitto_available,
                                                                    caplog):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: no test certificates")
    ca, cert, key = self_signed_tls(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "broker", tls=(ca, cert, key)).start()
    feed = JournalFeed(tmp_path / "journal.sqlite3")
    try:
        # Without the test CA the broker's certificate is refused (system CAs), never ignored.
        untrusted = VigilMetrics()
        with caplog.at_level(logging.ERROR, logger="streamer.comms.mqtt"):
            (tmp_path / "a").mkdir()
            bad = bridge_for(broker.port, tmp_path / "a", feed, metrics=untrusted, tls={})
            try:
                assert wait_until(lambda: untrusted.mqtt_connect_errors._value.get() >= 1, 10)
                assert not bad.connected
            finally:
                bad.close(timeout=3)
        (tmp_path / "b").mkdir()
        good = bridge_for(broker.port, tmp_path / "b", feed, tls={"ca_file": ca})
        try:
            assert wait_until(lambda: good.connected, 10)
            good.offer(feed.alert())
            assert wait_until(lambda: good.high_water_mark[1] == 1, 10)
        finally:
            good.close()
    finally:
        broker.kill()

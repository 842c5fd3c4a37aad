"""The real daemon (`vigil serve` as a child process) with its integrations, on loopback:

* MQTT against Debian's mosquitto started by the test: Home Assistant discovery configs, retained
  states and availability, every alert on the events topic; the broker stopped for a while
  (the pipeline and the ZeroMQ stream go on) and restarted: every alert journalled meanwhile is
  published from the journal, in seq order; then SIGKILL: the broker publishes the daemon's last
  will (`offline`, retained);
* a notification rule posting to a local webhook (apprise `json://`);
* zones with Vigil's shipped model: two synthetic cameras showing the same fight, one with the
  required zone where the fight is (it raises a fight) and one with the zone elsewhere (it raises
  nothing, and counts the suppressed event).

The random-weight model of `harness.tiny_checkpoint` with `always_on` thresholds opens an event on
every camera and class at the first window (a lifecycle that does not depend on what it sees).
"""
from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest

pytest.importorskip("zmq")
pytest.importorskip("paho.mqtt.client")

from vigil_tools.harness import (DaemonProcess, Mosquitto, base_config,  # noqa: E402
                                    mosquitto_missing, wait_until)
from tests.conftest import recv_json, subscriber  # noqa: E402
from tests.test_mqtt import Recorder  # noqa: E402
from tests.test_notifications import Endpoint  # noqa: E402

pytestmark = pytest.mark.integration

INSTANCE = "site1"
SYNTH = "synth://{kind}?seed={seed}&width=96&height=72&fps=15&frames=45"
OUTAGE_S = 6.0


def journal_seqs(data_dir) -> list[int]:
    with sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True) as db:
        return [r[0] for r in db.execute("SELECT seq FROM alerts ORDER BY seq")]


@pytest.fixture(scope="module")
def mqtt_run(tiny_checkpoint, tmp_path_factory):
    """One daemon life with MQTT and a notification rule: up, broker outage, SIGKILL."""
    missing = mosquitto_missing()
    if missing:
        print(f"skipping: {missing}")
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("mqtt-daemon")
    broker = Mosquitto(work / "broker").start()
    hook = Endpoint()
    cfg = base_config(work / "data", tiny_checkpoint,
                      {"cam1": SYNTH.format(kind="fight", seed=1),
                       "cam2": SYNTH.format(kind="none", seed=2)}, updates=True)
    cfg["instance"] = INSTANCE
    cfg["mqtt"] = {"host": "127.0.0.1", "port": broker.port, "keepalive_s": 5,
                   "reconnect_min_s": 1, "reconnect_max_s": 1, "queue_size": 10}
    cfg["notify"] = {"rules": [{"name": "ops", "urls": [hook.url("vigil")], "cameras": ["cam1"],
                                "labels": ["fight"], "min_interval_s": 0}]}
    ha = Recorder(broker.port, topics=(f"vigil/{INSTANCE}/#", "homeassistant/#"),
                  client_id="home-assistant", persistent=True)
    zsub = subscriber(cfg["alerts"]["endpoint"], b"alert.")
    d = DaemonProcess(work, cfg)
    run: dict = {"cfg": cfg, "data_dir": work / "data", "ha": ha, "hook": hook}
    zmq_seqs: list[int] = []

    def drain_zmq(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            got = recv_json(zsub, timeout=0.2)
            if got:
                zmq_seqs.append(got[1]["seq"])

    try:
        d.start()
        d.wait_ready(timeout=60)
        base = f"vigil/{INSTANCE}"
        assert wait_until(lambda: ha.last(f"{base}/cam1/fight") == b"ON", 30), d.log()[-3000:]
        drain_zmq(1.0)
        run["before_outage"] = d.metrics()
        # --- the broker goes away: the pipeline and ZeroMQ go on
        broker.stop()
        stopped_at = max(zmq_seqs)
        drain_zmq(OUTAGE_S)
        run["zmq_during_outage"] = [s for s in zmq_seqs if s > stopped_at]
        run["during_outage"] = d.metrics()
        broker.start()
        last_before_restart = journal_seqs(run["data_dir"])[-1]
        run["last_before_restart"] = last_before_restart
        wait_until(lambda: set(range(1, last_before_restart + 1))
                   <= set(ha.seqs(f"{base}/events")), 40)
        run["after_outage"] = d.metrics()
        run["mqtt_seqs"] = ha.seqs(f"{base}/events")
        run["journal"] = journal_seqs(run["data_dir"])
        # --- a crash: the broker publishes the last will
        d.kill()
        late = Recorder(broker.port, topics=(f"{base}/available",))
        wait_until(lambda: late.retained(f"{base}/available") == b"offline", 20)
        run["will"] = late.retained(f"{base}/available")
        late.close()
        run["log"] = d.log()
        yield run
    finally:
        zsub.close()
        ha.close()
        d.close()
        broker.kill()
        hook.close()


def test_home_assistant_discovery_configs_for_every_camera_and_class(mqtt_run):
    ha = mqtt_run["ha"]
    for camera in ("cam1", "cam2"):
        for label, device_class in (("fight", "safety"), ("collapse", "problem")):
            topic = f"homeassistant/binary_sensor/vigil_{INSTANCE}/{camera}_{label}/config"
            cfg = json.loads(ha.retained(topic) or ha.last(topic))
            assert cfg["device_class"] == device_class
            assert cfg["state_topic"] == f"vigil/{INSTANCE}/{camera}/{label}"
            assert cfg["device"]["name"] == camera
        for component, object_id in (("image", "snapshot"), ("sensor", "last_event")):
            assert ha.last(f"homeassistant/{component}/vigil_{INSTANCE}/{camera}_{object_id}/"
                           "config")


def test_states_availability_snapshots_and_alerts_are_published(mqtt_run):
    ha, base = mqtt_run["ha"], f"vigil/{INSTANCE}"
    assert b"ON" in ha.on(f"{base}/cam1/fight")
    assert b"online" in ha.on(f"{base}/available")
    assert b"online" in ha.on(f"{base}/cam1/available")
    snap = ha.last(f"{base}/cam1/snapshot")
    assert snap is not None and snap[:2] == b"\xff\xd8"          # a JPEG
    last = json.loads(ha.last(f"{base}/cam1/last_event"))
    assert last["camera"] == "cam1" and last["type"] == "start" and last["instance"] == INSTANCE
    events = [json.loads(p) for p in ha.on(f"{base}/events")]
    assert {e["schema"] for e in events} == {"vigil.alert/2"}


def test_a_broker_outage_never_stops_the_pipeline_or_the_zeromq_stream(mqtt_run):
    before, during = mqtt_run["before_outage"], mqtt_run["during_outage"]
    windows = DaemonProcess.total(during, "vigil_windows_total") - \
        DaemonProcess.total(before, "vigil_windows_total")
    assert windows >= 10, "the pipeline stalled while the broker was away"
    assert len(mqtt_run["zmq_during_outage"]) >= 10, "alerts stopped on ZeroMQ"
    assert DaemonProcess.value(during, "vigil_mqtt_connected") == 0
    assert DaemonProcess.value(during, "vigil_mqtt_dropped_total") > 0


def test_after_the_outage_every_journalled_alert_is_published_in_seq_order(mqtt_run):
    published = mqtt_run["mqtt_seqs"]
    wanted = [s for s in mqtt_run["journal"] if s <= mqtt_run["last_before_restart"]]
    assert set(wanted) <= set(published), sorted(set(wanted) - set(published))[:20]
    first_seen = [s for s in dict.fromkeys(published) if s in set(wanted)]
    assert first_seen == sorted(first_seen), "published out of seq order"
    after = mqtt_run["after_outage"]
    assert DaemonProcess.value(after, "vigil_mqtt_caught_up_total") > 0
    assert DaemonProcess.value(after, "vigil_mqtt_connected") == 1
    assert "mqtt: lost the broker" in mqtt_run["log"]


def test_sigkill_leaves_the_last_will_offline_retained(mqtt_run):
    assert mqtt_run["will"] == b"offline"


def test_the_notification_rule_posts_the_fight_start(mqtt_run):
    hook = mqtt_run["hook"]
    assert wait_until(lambda: hook.received, 5)
    got = hook.received[0]
    assert got["path"] == "/vigil"
    assert got["title"] == "Vigil: fight on cam1"
    assert "fight start on camera cam1" in got["message"]
    assert got.get("attachments"), "the start's snapshot is attached"
    assert all("cam2" not in r["message"] for r in hook.received)


# ----------------------------------------------------------------------------- zones
@pytest.fixture(scope="module")
def zone_run(tmp_path_factory):
    """Vigil's shipped model on two cameras showing the same synthetic fight (seed 20: the
    fighters fill x in [0.34, 0.94] of the frame): `in-zone` requires a zone around them,
    `out-zone` a strip on the left where nobody fights."""
    from train.synth import Scene

    work = tmp_path_factory.mktemp("zones")
    params = dict(width=128, height=96, fps=25, frames=50)     # the demo's scenes
    x1, y1, x2, y2 = Scene("fight", 20, **params).action_box()
    assert x1 / 128 > 0.3, "the scene changed: pick a zone away from its fight"
    url = "synth://fight?seed=20&" + "&".join(f"{k}={v}" for k, v in params.items())
    cfg = base_config(work / "data", "vigil", {"in-zone": url, "out-zone": url},
                      always_on=False, stride=8, fast_timeouts=False)
    cfg["model"]["checkpoint"] = "vigil"
    cfg["smoothing"] = {"on_threshold": 0.6, "off_threshold": 0.4, "min_windows": 2}
    cfg["cameras"][0]["zones"] = {"ring": [[0.3, 0.15], [1.0, 0.15], [1.0, 1.0], [0.3, 1.0]]}
    cfg["cameras"][1]["zones"] = {"left": [[0.0, 0.0], [0.22, 0.0], [0.22, 1.0], [0.0, 1.0]]}
    sub = subscriber(cfg["alerts"]["endpoint"], b"alert.")
    d = DaemonProcess(work, cfg)
    run: dict = {"messages": []}
    try:
        d.start()
        d.wait_ready(timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = recv_json(sub, timeout=0.5)
            if got:
                run["messages"].append(got[1])
            scrape = d.metrics()
            if any(m["camera"] == "in-zone" and m["type"] == "start" for m in run["messages"]) \
                    and DaemonProcess.value(scrape, "vigil_events_suppressed_total",
                                            camera="out-zone", label="fight", reason="zone"):
                break
        time.sleep(2.0)
        while (got := recv_json(sub, timeout=0.2)) is not None:
            run["messages"].append(got[1])
        run["metrics"] = d.metrics()
        d.stop()
        run["log"] = d.log()
        yield run
    finally:
        sub.close()
        d.close()


def test_a_fight_inside_the_required_zone_raises_an_alert_naming_the_zone(zone_run):
    starts = [m for m in zone_run["messages"] if m["camera"] == "in-zone" and m["type"] == "start"]
    assert starts, zone_run["log"][-3000:]
    assert starts[0]["label"] == "fight" and starts[0]["zones"] == ["ring"]


def test_the_same_fight_outside_the_required_zone_raises_nothing(zone_run):
    assert [m for m in zone_run["messages"] if m["camera"] == "out-zone"] == []
    assert DaemonProcess.value(zone_run["metrics"], "vigil_events_suppressed_total",
                               camera="out-zone", label="fight", reason="zone") >= 1
    assert "fight on out-zone" in zone_run["log"] and "outside the required zones" in \
        zone_run["log"]

"""A fleet on loopback (issue 15): two daemons' publishers (instances `a` and `b`, each with its
own journal and the same camera name) behind one `Relay`, a subscriber on the relay. Every alert
of every instance arrives exactly once, in seq order per instance, also across a restart of one
daemon and of the relay (what was lost on the wire is replayed from that instance's journal
through the relay). Plus the relay's own replay answers and a subscriber on two daemons directly.

The measured version with real `vigil serve` daemons, file cameras and SIGKILL is
`vigil_tools/fleet_bench.py` (BENCHMARKS.md)."""
from __future__ import annotations

import json
import time

import pytest
import zmq

from streamer.protocol import format_alert, parse_alert, parse_heartbeat
from streamer.publisher import AlertPublisher, generate_keys
from streamer.relay import Relay, RelayConfig, RelayCurveClient, RelayCurveServer
from streamer.subscriber import AlertSubscriber, ClientCurve
from tests.test_subscriber import alert

pytestmark = pytest.mark.integration      # real sockets on loopback

ANY = "tcp://127.0.0.1:*"


class Daemon:
    """A daemon's publishing side: an AlertPublisher on fixed ports, restartable."""

    def __init__(self, tmp_path, instance: str, curve=None) -> None:
        self.instance, self.curve = instance, curve
        self.journal = tmp_path / f"{instance}.sqlite3"
        self.endpoint = self.replay = ANY
        self.pub: AlertPublisher | None = None
        self.start()
        self.endpoint, self.replay = self.pub.endpoint, self.pub.replay_endpoint

    def start(self) -> None:
        self.pub = AlertPublisher(self.endpoint, self.replay, self.journal, instance=self.instance,
                                  heartbeat_ivl_s=0.5, curve=self.curve)

    def stop(self) -> None:
        self.pub.close()
        self.pub = None

    def emit(self, n: int) -> list[int]:
        return [self.pub.emit(alert(event_id=f"{self.instance}-{time.time_ns()}"))["seq"]
                for _ in range(n)]


def relay_for(daemons, endpoint=ANY, replay_endpoint=ANY, **kw) -> Relay:
    return Relay(RelayConfig(daemons=[d.endpoint for d in daemons],
                             replay={d.instance: d.replay for d in daemons},
                             endpoint=endpoint, replay_endpoint=replay_endpoint, **kw)).start()


def pump(sub: AlertSubscriber, daemons, until, timeout: float = 5.0) -> list[dict]:
    """Heartbeat every daemon and poll the subscriber until `until(received)` (bounded)."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while not until(got) and time.monotonic() < deadline:
        for d in daemons:
            if d.pub is not None:
                d.pub.heartbeat({"cameras": {}})
        msg = sub.poll(0.05)
        while msg is not None:
            got.append(msg)
            msg = sub.poll(0)
    return got


def heard_from(sub: AlertSubscriber, daemons) -> callable:
    """`until` for pump: the subscriber has a heartbeat-fresh stream of every daemon."""
    t0 = time.monotonic()
    return lambda _: all(d.instance in sub.streams and sub.streams[d.instance].last_rx > t0
                         for d in daemons)


def by_instance(msgs: list[dict]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for m in msgs:
        out.setdefault(m["instance"], []).append(m["seq"])
    return out


@pytest.fixture
def fleet(tmp_path):
    daemons = [Daemon(tmp_path, "a"), Daemon(tmp_path, "b")]
    yield daemons
    for d in daemons:
        if d.pub is not None:
            d.stop()


def test_alerts_of_every_daemon_arrive_once_in_order_across_restarts(fleet):
    a, b = fleet
    expected = {"a": a.emit(3), "b": b.emit(2)}            # before anyone listens: replayed
    relay = relay_for(fleet)
    sub = AlertSubscriber(relay.endpoint, relay.replay_endpoint, since=0)
    got: list[dict] = []
    try:
        assert sorted(sub.streams) == ["a", "b"]          # learnt from the relay
        got += pump(sub, fleet, heard_from(sub, fleet))
        for _ in range(4):                                  # interleaved live traffic
            expected["a"] += a.emit(1)
            expected["b"] += b.emit(2)
        total = lambda: sum(map(len, expected.values()))    # noqa: E731
        got += pump(sub, fleet, lambda g: len(got) + len(g) >= total())

        # Daemon b dies and comes back on the same ports with the same journal: what it sends
        # before the relay has reconnected is lost on the wire and replayed.
        b.stop()
        expected["a"] += a.emit(2)
        b.start()
        expected["b"] += b.emit(3)
        got += pump(sub, fleet, lambda g: len(got) + len(g) >= total())

        # The relay dies: everything sent meanwhile is replayed through the new one.
        relay_ep, replay_ep = relay.endpoint, relay.replay_endpoint
        relay.stop()
        expected["a"] += a.emit(2)
        expected["b"] += b.emit(2)
        relay = relay_for(fleet, endpoint=relay_ep, replay_endpoint=replay_ep)
        got += pump(sub, fleet, lambda g: False, timeout=1.0)   # reconnect; heartbeats: gap
        expected["a"] += a.emit(1)
        got += pump(sub, fleet, lambda g: len(got) + len(g) >= total(), timeout=10.0)

        assert by_instance(got) == expected
        assert sub.gaps == [] and sub.malformed == 0
        # What was sent while the relay was down came from the journals, through the new relay.
        assert sub.streams["a"].replayed >= 3 + 2 and sub.streams["b"].replayed >= 2 + 2
        assert all(m["camera"] == "lobby" for m in got)    # same camera name, two instances
        assert format_alert(got[0]).split()[1] == f"{got[0]['instance']}/#{got[0]['seq']}"
        assert sub.last_seq is None and sub.journal_id is None    # no single-instance view
        assert sub.streams["a"].last_seq == expected["a"][-1]
    finally:
        sub.close()
        relay.stop()


def test_the_relay_answers_for_itself_and_forwards_by_instance(fleet):
    a, b = fleet
    a.emit(2)
    with relay_for(fleet[:1] + [b]) as relay:
        ctx = zmq.Context.instance()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(relay.replay_endpoint)

        def ask(body) -> dict:
            dealer.send(body if isinstance(body, bytes) else json.dumps(body).encode())
            assert dealer.poll(3000), "no reply"
            return json.loads(dealer.recv_multipart()[-1])

        try:
            assert ask({"since": 0, "id": 1}) == {"schema": "vigil.replay/1", "relay": True,
                                                  "id": 1, "instances": ["a", "b"]}
            reply = ask({"since": 0, "instance": "a", "id": 2})
            assert (reply.get("instance"), reply.get("last_seq"), reply["id"]) == ("a", 2, 2), reply
            assert [m["instance"] for m in reply["alerts"]] == ["a", "a"]
            assert ask({"since": 0, "instance": "b", "id": 3})["alerts"] == []
            assert "unknown instance 'zz'" in ask({"since": 0, "instance": "zz", "id": 4})["error"]
            assert "JSON object" in ask(b"\xff")["error"]
            b.stop()
            deadline = time.monotonic() + 5          # the DEALER notices b is gone
            while "not connected" not in ask({"since": 0, "instance": "b", "id": 5}).get(
                    "error", "") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "not connected" in ask({"since": 0, "instance": "b", "id": 5})["error"]
            # A daemon refuses a request meant for another instance (a wrong relay map).
            direct = ctx.socket(zmq.DEALER)
            direct.setsockopt(zmq.LINGER, 0)
            direct.connect(a.replay)
            direct.send(json.dumps({"since": 0, "instance": "b"}).encode())
            assert direct.poll(3000)
            assert "this is instance 'a'" in json.loads(direct.recv())["error"]
            direct.close()
        finally:
            dealer.close()


def test_a_subscriber_takes_several_daemons_directly(fleet):
    a, b = fleet
    a.emit(1)
    sub = AlertSubscriber([a.endpoint, b.endpoint], [a.replay, b.replay])   # only new ones
    try:
        assert sorted(sub.streams) == ["a", "b"]
        pump(sub, fleet, heard_from(sub, fleet))
        expected = {"a": a.emit(2), "b": b.emit(3)}
        got = pump(sub, fleet, lambda g: len(g) >= 5)
        assert by_instance(got) == expected and sub.gaps == []
        hb = sub.last_heartbeat
        assert hb["instance"] in ("a", "b") and parse_heartbeat(
            [b"heartbeat", json.dumps(hb).encode()]) == hb
    finally:
        sub.close()


def test_an_instance_falling_silent_is_replayed_while_another_keeps_talking(fleet):
    from streamer.journal import Journal

    a, b = fleet
    sub = AlertSubscriber([a.endpoint, b.endpoint], [a.replay, b.replay], heartbeat_timeout_s=1.0)
    try:
        pump(sub, fleet, heard_from(sub, fleet))
        with Journal(b.journal) as journal:               # journalled, never on the wire
            quiet = journal.append(alert(event_id="b-quiet"))["seq"]
        got = pump(sub, [a], lambda g: any(m["instance"] == "b" for m in g), timeout=6.0)
        assert [(m["instance"], m["seq"]) for m in got] == [("b", quiet)]
        assert sub.streams["b"].replayed == 1
    finally:
        sub.close()


def test_since_per_instance_resumes_each_where_it_was_left(fleet):
    a, b = fleet
    seqs_a, seqs_b = a.emit(4), b.emit(3)
    with relay_for(fleet) as relay:
        sub = AlertSubscriber(relay.endpoint, relay.replay_endpoint, since={"a": 2, "b": 0})
        try:
            got = pump(sub, fleet, lambda g: len(g) >= 5)
            assert by_instance(got) == {"a": seqs_a[2:], "b": seqs_b}
        finally:
            sub.close()


def test_curve_on_both_sides_of_the_relay(tmp_path):
    daemon_keys = generate_keys(tmp_path / "daemon", ["relay"])
    relay_keys = generate_keys(tmp_path / "relay", ["ops"])
    curve = {"server_secret_key": daemon_keys["server_secret_key"],
             "authorized_clients": daemon_keys["authorized_clients"]}
    d = Daemon(tmp_path, "gpu1", curve=curve)
    relay = relay_for([d], frontend_curve=RelayCurveServer(relay_keys["server_secret_key"],
                                                           relay_keys["authorized_clients"]),
                      backend_curve=RelayCurveClient(daemon_keys["server_public_key"],
                                                     daemon_keys["clients"]["relay"]))
    client = ClientCurve(relay_keys["server_public_key"], relay_keys["clients"]["ops"])
    sub = AlertSubscriber(relay.endpoint, relay.replay_endpoint, since=0, curve=client)
    try:
        expected = d.emit(2)
        got = pump(sub, [d], lambda g: len(g) >= 2)
        assert [m["seq"] for m in got] == expected and got[0]["instance"] == "gpu1"
    finally:
        sub.close()
        relay.stop()
        d.stop()


def test_old_alerts_without_an_instance_still_parse():
    msg = alert(seq=1)
    assert "instance" not in parse_alert([b"alert.lobby.fight", json.dumps(msg).encode()])
    with pytest.raises(Exception, match="instance"):
        parse_alert([b"alert.lobby.fight", json.dumps({**msg, "instance": "a b"}).encode()])

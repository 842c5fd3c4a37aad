"""AlertPublisher on loopback: real SUB sockets, the replay protocol, HWM drops, CURVE, keys.

Every wait is bounded (a couple of seconds at most) and every socket and context is closed.
"""
from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from detector.errors import ConfigError
from streamer.journal import Journal
from streamer.metrics import VigilMetrics
from streamer.publisher import AlertPublisher, PublishError, generate_keys

ANY = "tcp://127.0.0.1:*"


def alert(event_id: str = "lobby-20261124T101502Z-0001", kind: str = "start", **kw) -> dict:
    msg = {"schema": "vigil.alert/1", "type": kind, "event_id": event_id, "camera": "lobby",
           "label": "fight", "score": 0.9, "box": [0.1, 0.2, 0.3, 0.4],
           "box_px": [1, 2, 3, 4], "frame_size": [10, 10],
           "window": {"start": "2026-11-24T10:15:01.12Z", "end": "2026-11-24T10:15:01.76Z"},
           "snapshot": None, "clip": None, "reason": "cleared" if kind == "end" else None,
           "_t_end_mono": time.monotonic() - 0.2}
    msg.update(kw)
    return msg


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def metrics():
    return VigilMetrics()


@pytest.fixture
def journal_path(tmp_path):
    return tmp_path / "journal.sqlite3"


@pytest.fixture
def publisher(journal_path, metrics):
    pub = AlertPublisher(ANY, ANY, journal_path, metrics=metrics)
    yield pub
    pub.close()


def subscriber(ctx, endpoint: str, keys=None, **opts) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in opts.items():
        sock.setsockopt(getattr(zmq, name), value)
    if keys is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
    sock.setsockopt(zmq.SUBSCRIBE, b"alert.")
    sock.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    sock.connect(endpoint)
    return sock


def wait_subscribed(pub: AlertPublisher, sock: zmq.Socket, timeout: float = 2.0) -> bool:
    """Heartbeat until `sock` hears one (ZeroMQ's slow joiner); drain what arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.heartbeat({})
        if sock.poll(50):
            while sock.poll(20):
                sock.recv_multipart()
            return True
    return False


def recv(sock: zmq.Socket, timeout: float = 2.0):
    assert sock.poll(int(timeout * 1000)), "nothing received"
    return sock.recv_multipart()


def request(ctx, endpoint: str, body, keys=None, kind=zmq.DEALER, timeout: float = 2.0):
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
    sock.connect(endpoint)
    try:
        sock.send(body if isinstance(body, bytes) else json.dumps(body).encode())
        if not sock.poll(int(timeout * 1000)):
            return None
        return json.loads(sock.recv_multipart()[-1])
    finally:
        sock.close(linger=0)


def test_a_subscriber_receives_journalled_alerts_on_their_topic(ctx, publisher, journal_path,
                                                               metrics):
    sock = subscriber(ctx, publisher.endpoint)
    assert wait_subscribed(publisher, sock)
    with Journal(journal_path) as journal:
        sent = journal.append(alert())
    assert publisher.publish(sent) is True
    topic, body = recv(sock)
    assert topic == b"alert.lobby.fight"
    assert json.loads(body) == sent
    sock.close()
    sample = metrics.registry.get_sample_value
    assert sample("vigil_alerts_total", {"camera": "lobby", "label": "fight", "type": "start"}) == 1
    assert sample("vigil_alert_latency_seconds_count") == 1


def test_publish_refuses_a_message_not_yet_journalled(publisher):
    with pytest.raises(ValueError, match="Journal.append"):
        publisher.publish(alert())


def test_emit_journals_then_publishes(ctx, publisher, journal_path):
    sock = subscriber(ctx, publisher.endpoint)
    assert wait_subscribed(publisher, sock)
    final = publisher.emit(alert())
    assert json.loads(recv(sock)[1])["seq"] == final["seq"] == 1
    with Journal(journal_path) as journal:
        assert journal.since(0) == [final]
    sock.close()


def test_heartbeat_carries_the_last_seq_uptime_and_payload(ctx, journal_path):
    with Journal(journal_path) as journal:
        for _ in range(3):
            journal.append(alert())
    with AlertPublisher(ANY, ANY, journal_path) as pub:
        sock = subscriber(ctx, pub.endpoint)
        assert wait_subscribed(pub, sock)
        pub.heartbeat({"cameras": {"lobby": "up"}})
        topic, body = recv(sock)
        sock.close()
    hb = json.loads(body)
    assert topic == b"heartbeat"
    assert hb["seq"] == 3                    # resumed from the journal
    assert hb["cameras"] == {"lobby": "up"} and hb["uptime_s"] >= 0
    assert hb["schema"] == "vigil.heartbeat/2" and len(hb["journal_id"]) == 16


def test_replay_pages_through_everything_after_since(ctx, journal_path):
    with Journal(journal_path) as journal:
        for _ in range(5):
            journal.append(alert())
    with AlertPublisher(ANY, ANY, journal_path, page_size=2) as pub:
        first = request(ctx, pub.replay_endpoint, {"since": 0, "id": 1})
        assert [m["seq"] for m in first["alerts"]] == [1, 2]
        assert (first["more"], first["last_seq"], first["id"]) == (True, 5, 1)
        last = request(ctx, pub.replay_endpoint, {"since": 4})
        assert [m["seq"] for m in last["alerts"]] == [5] and last["more"] is False
        head = request(ctx, pub.replay_endpoint, {"since": 0, "limit": 0})
        assert head["alerts"] == [] and head["last_seq"] == 5
        # A REQ client (with its empty delimiter frame) gets its answer too.
        req = request(ctx, pub.replay_endpoint, {"since": 3}, kind=zmq.REQ)
        assert [m["seq"] for m in req["alerts"]] == [4, 5]


@pytest.mark.parametrize("body", [b"\xff\xfe", b"not json", b"[1, 2]", {"since": -1},
                                  {"since": "zero"}, {"since": 0, "limit": True}, {}])
def test_a_bad_replay_request_gets_an_error_reply(ctx, publisher, body):
    reply = request(ctx, publisher.replay_endpoint, body)
    assert reply is not None and "bad replay request" in reply["error"]
    # The server is still alive afterwards.
    assert request(ctx, publisher.replay_endpoint, {"since": 0})["alerts"] == []


@pytest.mark.parametrize("body", [
    {"since": 2 ** 63}, {"since": 2 ** 64 + 5}, {"since": 0, "limit": 2 ** 63},
    b"[" * 3000 + b"]" * 3000,                          # deep nesting: RecursionError in json
    b'{"since": 0, "x": ' + b"[" * 1500 + b"]" * 1500 + b"}",
    json.dumps({"since": 0, "pad": "x" * 8000}).encode(),   # over MAX_REQUEST_BYTES
])
def test_a_hostile_replay_request_gets_an_error_and_the_server_keeps_answering(ctx, publisher,
                                                                               body):
    """Field fault: `since` >= 2**63 overflowed in SQLite and deep nesting recursed; either
    killed the replay thread for good."""
    reply = request(ctx, publisher.replay_endpoint, body)
    assert reply is not None and "bad replay request" in reply["error"], reply
    for _ in range(3):
        assert request(ctx, publisher.replay_endpoint, {"since": 0})["alerts"] == []
    assert publisher.replay_problem() is None


def test_deep_nesting_is_refused_whatever_the_recursion_limit(ctx, publisher):
    """A library in the daemon's process may raise the recursion limit (torch's compiler sets
    2000), and a 1,500-deep request then parses: the nesting is counted before parsing."""
    import sys

    before = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        body = b'{"since": 0, "x": ' + b"[" * 40 + b"]" * 40 + b"}"
        reply = request(ctx, publisher.replay_endpoint, body)
        assert "nested too deeply" in reply["error"], reply
        flat = request(ctx, publisher.replay_endpoint, {"since": 0, "x": [[1]]})
        assert flat["alerts"] == [] and "error" not in flat
    finally:
        sys.setrecursionlimit(before)


def test_the_replay_socket_refuses_oversized_messages_before_reading_them(ctx, publisher):
    """ZMQ_MAXMSGSIZE: a frame over 64 KiB closes that peer's connection unread."""
    from streamer.publisher import MAX_MESSAGE_BYTES
    big = request(ctx, publisher.replay_endpoint, b"{" + b" " * (4 * MAX_MESSAGE_BYTES) + b"}",
                  timeout=1.0)
    assert big is None                             # connection dropped, nothing read
    assert request(ctx, publisher.replay_endpoint, {"since": 0})["alerts"] == []


def test_the_replay_loop_restarts_after_an_unexpected_error(ctx, journal_path, metrics,
                                                            monkeypatch):
    calls = {"n": 0}
    real = AlertPublisher._receive_request

    def flaky(router):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected failure outside any request")
        return real(router)

    monkeypatch.setattr(AlertPublisher, "_receive_request", staticmethod(flaky))
    with AlertPublisher(ANY, ANY, journal_path, metrics=metrics) as pub:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(pub.replay_endpoint)
        sock.send(b'{"since": 0, "id": 1}')           # eaten by the failure...
        time.sleep(0.5)
        sock.send(b'{"since": 0, "id": 2}')           # ...the restarted loop answers this
        assert sock.poll(3000)
        assert json.loads(sock.recv_multipart()[-1])["id"] in (1, 2)
        sock.close()
        assert metrics.registry.get_sample_value("vigil_replay_restarts_total") == 1
        assert pub.replay_problem() is None
        assert metrics.registry.get_sample_value("vigil_replay_up") == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_replay_thread_is_reported(journal_path, metrics, monkeypatch):
    def die(router):
        raise SystemExit("injected: the thread ends")

    monkeypatch.setattr(AlertPublisher, "_receive_request", staticmethod(die))
    with AlertPublisher(ANY, ANY, journal_path, metrics=metrics) as pub:
        ctx2 = zmq.Context.instance()
        sock = ctx2.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(pub.replay_endpoint)
        sock.send(b'{"since": 0}')
        pub._thread.join(3)
        sock.close()
        assert "replay server thread ended" in (pub.replay_problem() or "")
        assert metrics.registry.get_sample_value("vigil_replay_up") == 0


def test_replay_answers_from_the_new_file_when_the_journal_is_replaced(ctx, journal_path):
    with Journal(journal_path) as journal:
        journal.append(alert())
        old_id = journal.journal_id
    with AlertPublisher(ANY, ANY, journal_path) as pub:
        first = request(ctx, pub.replay_endpoint, {"since": 0})
        assert (first["last_seq"], first["journal_id"]) == (1, old_id)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{journal_path}{suffix}").unlink(missing_ok=True)
        with Journal(journal_path) as journal:
            new_id = journal.journal_id
        again = request(ctx, pub.replay_endpoint, {"since": 0})
        assert (again["alerts"], again["last_seq"], again["journal_id"]) == ([], 0, new_id)
        assert new_id != old_id


def test_drops_are_counted_when_a_subscriber_never_reads(ctx, journal_path, metrics):
    with AlertPublisher(ANY, ANY, journal_path, metrics=metrics, sndhwm=1) as pub:
        sock = subscriber(ctx, pub.endpoint, RCVHWM=1, RCVBUF=4096)
        assert wait_subscribed(pub, sock)
        results = []
        pad = "x" * 65536    # fill the kernel's socket buffers in few messages
        deadline = time.monotonic() + 5.0
        for seq in range(1, 2001):           # bounded: the buffers hold a few MB at most
            results.append(pub.publish(alert(seq=seq, pad=pad)))
            if results.count(False) >= 3 or time.monotonic() > deadline:
                break
        sock.close()
    dropped = metrics.registry.get_sample_value("vigil_publish_dropped_total")
    assert results.count(False) >= 3
    assert dropped == results.count(False)


def test_close_stops_the_replay_thread_within_a_second(journal_path):
    pub = AlertPublisher(ANY, ANY, journal_path)
    thread = pub._thread
    assert thread is not None and thread.is_alive()
    start = time.monotonic()
    pub.close()
    assert time.monotonic() - start < 1.0
    assert not thread.is_alive()
    assert not any(t.name == "vigil-replay" and t.is_alive() for t in threading.enumerate())


def test_binding_an_endpoint_in_use_is_a_publish_error(publisher, journal_path):
    with pytest.raises(PublishError, match="alerts.endpoint"):
        AlertPublisher(publisher.endpoint, ANY, journal_path)


# ---- CURVE -------------------------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path):
    return generate_keys(tmp_path / "keys", clients=["ops"])


def client_keys(server_public: Path, client_secret: Path) -> tuple[bytes, bytes, bytes]:
    server_key, _ = zmq.auth.load_certificate(str(server_public))
    public, secret = zmq.auth.load_certificate(str(client_secret))
    return server_key, public, secret


@pytest.fixture
def curve_publisher(keys, journal_path):
    curve = {"server_secret_key": keys["server_secret_key"],
             "authorized_clients": keys["authorized_clients"]}
    pub = AlertPublisher(ANY, ANY, journal_path, curve=curve)
    yield pub
    pub.close()


def test_curve_admits_an_authorised_client(ctx, keys, curve_publisher, journal_path):
    creds = client_keys(keys["server_public_key"], keys["clients"]["ops"])
    sock = subscriber(ctx, curve_publisher.endpoint, creds)
    assert wait_subscribed(curve_publisher, sock)
    assert curve_publisher.emit(alert())["seq"] == 1
    assert json.loads(recv(sock)[1])["seq"] == 1
    sock.close()
    reply = request(ctx, curve_publisher.replay_endpoint, {"since": 0}, keys=creds)
    assert [m["seq"] for m in reply["alerts"]] == [1]


def test_curve_refuses_an_unknown_key(ctx, keys, curve_publisher, tmp_path):
    stranger = generate_keys(tmp_path / "stranger", clients=["eve"])
    creds = client_keys(keys["server_public_key"], stranger["clients"]["eve"])
    sock = subscriber(ctx, curve_publisher.endpoint, creds)
    assert not wait_subscribed(curve_publisher, sock, timeout=1.0)
    sock.close()
    assert request(ctx, curve_publisher.replay_endpoint, {"since": 0}, keys=creds,
                   timeout=0.5) is None


def test_curve_refuses_a_plaintext_client(ctx, curve_publisher):
    sock = subscriber(ctx, curve_publisher.endpoint)
    assert not wait_subscribed(curve_publisher, sock, timeout=1.0)
    sock.close()


def test_generate_keys_writes_pairs_and_refuses_to_overwrite(tmp_path):
    out = generate_keys(tmp_path / "k", clients=["ops", "dash"])
    assert (tmp_path / "k" / "server.key").is_file()
    assert sorted(p.name for p in out["authorized_clients"].iterdir()) == ["dash.key", "ops.key"]
    for secret in [out["server_secret_key"], *out["clients"].values()]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        public, private = zmq.auth.load_certificate(str(secret))
        assert len(public) == 40 and private is not None and len(private) == 40
    with pytest.raises(ConfigError, match="already exists"):
        generate_keys(tmp_path / "k", clients=["ops"])
    with pytest.raises(ConfigError, match="client name"):
        generate_keys(tmp_path / "other", clients=["../evil"])


def test_a_public_key_where_the_secret_belongs_is_refused(keys, journal_path):
    curve = {"server_secret_key": keys["server_public_key"],
             "authorized_clients": keys["authorized_clients"]}
    with pytest.raises(ConfigError, match="no secret key"):
        AlertPublisher(ANY, ANY, journal_path, curve=curve)

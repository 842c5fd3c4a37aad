"""AlertSubscriber (clone pattern: subscribe, replay, merge, dedupe, fill gaps) against a real
AlertPublisher on loopback; parse_alert's validation (with a hypothesis fuzz) and format_alert."""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.errors import VigilError
from streamer.journal import Journal
from streamer.publisher import AlertPublisher, generate_keys
from streamer.protocol import AlertFormatError, format_alert, parse_alert
from streamer.subscriber import AlertSubscriber, ClientCurve

ANY = "tcp://127.0.0.1:*"


def alert(seq: int | None = None, kind: str = "start", **kw) -> dict:
    msg = {"schema": "vigil.alert/1", "type": kind, "event_id": "lobby-20261124T101502Z-0007",
           "camera": "lobby", "label": "fight", "score": 0.91, "box": [0.21, 0.33, 0.58, 0.97],
           "box_px": [403, 356, 1114, 1048], "frame_size": [1920, 1080],
           "window": {"start": "2026-11-24T10:15:01.12Z", "end": "2026-11-24T10:15:01.76Z"},
           "snapshot": "events/lobby/x/start.jpg", "clip": None,
           "reason": "cleared" if kind == "end" else None}
    if seq is not None:
        msg.update(seq=seq, published_at="2026-11-24T10:15:02.03Z", latency_s=0.27)
    msg.update(kw)
    return msg


def frames_of(msg: dict) -> list[bytes]:
    return [f"alert.{msg['camera']}.{msg['label']}".encode(), json.dumps(msg).encode()]


@pytest.fixture
def publisher(tmp_path):
    pub = AlertPublisher(ANY, ANY, tmp_path / "journal.sqlite3", heartbeat_ivl_s=0.5)
    yield pub
    pub.close()


@pytest.fixture
def journal(publisher):
    j = Journal(publisher.journal_path)
    yield j
    j.close()


def connect(pub: AlertPublisher, since=None, **kw) -> AlertSubscriber:
    """A subscriber that has surely joined (heartbeats until it heard one; bounded)."""
    sub = AlertSubscriber(pub.endpoint, pub.replay_endpoint, since=since, **kw)
    deadline = time.monotonic() + 3.0
    while sub.last_heartbeat is None and time.monotonic() < deadline:
        pub.heartbeat({"cameras": {}})
        ready = sub.poll(0.05)
        if ready is not None:      # replayed alerts may already be waiting: keep them
            sub._ready.appendleft(ready)
    assert sub.last_heartbeat is not None, "subscriber never joined"
    return sub


def collect(sub: AlertSubscriber, n: int, timeout: float = 3.0) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        msg = sub.poll(0.1)
        if msg is not None:
            out.append(msg)
    return out


def test_live_alerts_arrive_in_order(publisher, journal):
    with connect(publisher) as sub:
        sent = [publisher.emit(alert(kind=k)) for k in ("start", "update", "end")]
        assert collect(sub, 3) == sent
        assert sub.gaps == [] and sub.poll(0.1) is None


def test_a_late_subscriber_replays_the_journal_then_goes_live_without_gap(publisher, journal):
    history = [publisher.emit(alert()) for _ in range(5)]    # nobody listening yet
    with connect(publisher, since=0) as sub:
        got = collect(sub, 5)
        assert got == history
        live = publisher.emit(alert(kind="end"))
        assert collect(sub, 1) == [live]
        assert sub.gaps == [] and sub.last_seq == live["seq"]


def test_since_resumes_after_the_last_seq_held(publisher, journal):
    for _ in range(4):
        publisher.emit(alert())
    with connect(publisher, since=2) as sub:
        assert [m["seq"] for m in collect(sub, 2)] == [3, 4]


def test_since_none_delivers_only_new_alerts(publisher, journal):
    publisher.emit(alert())
    with connect(publisher) as sub:
        new = publisher.emit(alert(kind="end"))
        assert collect(sub, 1) == [new] and sub.poll(0.2) is None


def test_duplicates_are_dropped(publisher, journal):
    with connect(publisher) as sub:
        msg = publisher.emit(alert())
        publisher.publish(msg)
        publisher.publish(msg)
        assert collect(sub, 3, timeout=1.0) == [msg]


def test_a_message_missing_on_the_wire_is_fetched_from_the_journal(publisher, journal):
    with connect(publisher) as sub:
        first = publisher.emit(alert())
        skipped = journal.append(alert(kind="update"))   # journalled, never sent (as if dropped)
        last = publisher.emit(alert(kind="end"))
        assert collect(sub, 3) == [first, skipped, last]
        assert sub.gaps == []


def test_a_heartbeat_ahead_of_what_we_hold_triggers_a_replay(publisher, journal):
    with connect(publisher) as sub:
        lost = journal.append(alert())          # journalled, nothing on the wire
        publisher._last_seq = lost["seq"]       # what publish() records when the HWM refuses
        publisher.heartbeat({})
        assert collect(sub, 1) == [lost]


def test_a_gap_nobody_can_fill_is_reported_and_delivery_goes_on(publisher, journal):
    with connect(publisher) as sub:
        first = publisher.emit(alert())
        # seq 2..4 exist nowhere (not in the journal either): a message claiming seq 5.
        orphan = {**first, "seq": first["seq"] + 4}
        publisher.publish(orphan)
        assert collect(sub, 2) == [first, orphan]
        assert sub.gaps == [(first["seq"] + 1, first["seq"] + 3)]


@pytest.mark.parametrize("start_seq", [0, 3], ids=["seq-restarts-at-1", "seq-continues"])
def test_a_replaced_journal_is_a_reset_and_no_new_alert_is_dropped(publisher, journal, tmp_path,
                                                                    start_seq):
    """Field fault: the journal was deleted and a new one started at seq 1; a subscriber still
    connected dropped the new alerts whose seq was at or below the last one it held."""
    with connect(publisher) as sub:
        old = [publisher.emit(alert(kind=k)) for k in ("start", "update", "update")]
        assert collect(sub, 3) == old and sub.journal_id == journal.journal_id
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"journal.sqlite3{suffix}").unlink(missing_ok=True)
        with Journal(publisher.journal_path, start_seq=start_seq) as new_journal:
            new = [new_journal.append(alert(kind=k)) for k in ("start", "update", "end")]
            new_id = new_journal.journal_id
        for msg in new:
            publisher.publish(msg)
        got = collect(sub, 3)
        assert [m["seq"] for m in got] == [start_seq + 1, start_seq + 2, start_seq + 3]
        assert got == new and new_id != old[0]["journal_id"]
        assert (sub.journal_id, sub.resets, sub.gaps) == (new_id, 1, [])
        # A straggler from the old journal is not delivered, nor does it flip back.
        publisher.publish(dict(old[-1], seq=99))
        publisher.heartbeat({})
        assert sub.poll(0.3) is None and sub.journal_id == new_id


def test_a_reset_seen_first_on_a_heartbeat_replays_the_new_journal(publisher, journal, tmp_path):
    with connect(publisher) as sub:
        publisher.emit(alert())
        assert collect(sub, 1)[0]["seq"] == 1
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"journal.sqlite3{suffix}").unlink(missing_ok=True)
        with Journal(publisher.journal_path) as new_journal:
            new = [new_journal.append(alert(kind=k)) for k in ("start", "end")]
        publisher.journal_id = new[0]["journal_id"]   # what publish() of a new id does
        publisher.heartbeat({})                       # the alerts themselves were missed
        assert collect(sub, 2) == new and sub.resets == 1 and sub.gaps == []


def test_malformed_messages_are_counted_and_skipped(publisher):
    with connect(publisher) as sub:
        publisher._pub.send_multipart([b"alert.lobby.fight", b"{not json"])
        good = publisher.emit(alert())
        assert collect(sub, 1) == [good]
        assert sub.malformed == 1


def test_curve_subscriber_with_authorised_keys(tmp_path):
    keys = generate_keys(tmp_path / "keys", clients=["ops"])
    curve = {"server_secret_key": keys["server_secret_key"],
             "authorized_clients": keys["authorized_clients"]}
    with AlertPublisher(ANY, ANY, tmp_path / "j.sqlite3", curve=curve) as pub:
        history = pub.emit(alert())
        client = ClientCurve(keys["server_public_key"], keys["clients"]["ops"])
        with connect(pub, since=0, curve=client) as sub:
            assert collect(sub, 1) == [history]


def test_an_unreachable_replay_socket_does_not_hang(tmp_path):
    with AlertSubscriber("tcp://127.0.0.1:9", "tcp://127.0.0.1:9", since=0,
                         replay_timeout_s=0.2) as sub:
        assert sub.poll(0.2) is None


# ---- parsing -----------------------------------------------------------------------------------
def test_parse_alert_accepts_the_design_example():
    msg = alert(seq=1042)
    assert parse_alert(frames_of(msg)) == msg


@pytest.mark.parametrize("mutate, field", [
    (lambda m: m.update(schema="vigil.alert/3"), "schema"),
    (lambda m: m.update(seq=0), "seq"),
    (lambda m: m.update(seq=True), "seq"),
    (lambda m: m.update(type="middle"), "type"),
    (lambda m: m.update(score=1.5), "score"),
    (lambda m: m.update(box=[0.1, 0.2, 0.3]), "box"),
    (lambda m: m.update(box_px=[1.5, 2, 3, 4]), "box_px"),
    (lambda m: m.update(frame_size=[0, 1080]), "frame_size"),
    (lambda m: m.pop("window"), "window"),
    (lambda m: m.update(latency_s=-1), "latency_s"),
    (lambda m: m.update(snapshot=3), "snapshot"),
    (lambda m: m.update(reason="cleared"), "reason"),       # only an end has a reason
    (lambda m: m.pop("camera"), "camera"),
])
def test_parse_alert_names_the_bad_field(mutate, field):
    msg = alert(seq=1)
    mutate(msg)
    frames = [b"alert.lobby.fight", json.dumps(msg).encode()]
    with pytest.raises(AlertFormatError, match=f"alert.{field}"):
        parse_alert(frames)


@pytest.mark.parametrize("frames", [
    [], [b"alert.lobby.fight"], [b"alert.lobby.fight", b"{}", b"extra"],
    [b"alert.lobby.fight", b"\xff"], [b"alert.lobby.fight", b"[1]"],
    [b"alert.lobby.fight", b'{"score": NaN}'], [b"heartbeat", b"{}"],
    [b"alert.yard.fight", json.dumps(alert(seq=1)).encode()],      # topic does not match
    [b"alert.lobby.fight", b"[" * 100_000 + b"]" * 100_000],       # nesting bomb
    "not frames",
])
def test_parse_alert_refuses_malformed_frames(frames):
    with pytest.raises(AlertFormatError):
        parse_alert(frames)


def test_an_end_must_say_why():
    with pytest.raises(AlertFormatError, match="alert.reason"):
        parse_alert(frames_of(alert(seq=2, kind="end", reason=None)))
    assert parse_alert(frames_of(alert(seq=2, kind="end", reason="restart")))["reason"] == "restart"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                      max_size=4),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_fuzz_random_bytes_only_ever_raise_alert_format_error(frames):
    try:
        parse_alert(frames)
    except AlertFormatError:
        pass


@settings(max_examples=150, deadline=None)
@given(json_values, st.sampled_from(list(alert(seq=1))))
def test_fuzz_random_json_in_any_field_is_validated(value, field):
    msg = alert(seq=1)
    msg[field] = value
    try:
        out = parse_alert(frames_of(msg))
    except AlertFormatError as exc:
        assert isinstance(exc, VigilError) and str(exc)
    else:
        assert out == msg


def test_format_alert_is_one_readable_line():
    line = format_alert(alert(seq=1042))
    assert "\n" not in line
    for part in ("2026-11-24T10:15:02.03Z", "#1042", "lobby", "START", "fight", "score=0.91",
                 "snapshot=events/lobby/x/start.jpg"):
        assert part in line
    end = format_alert(alert(seq=1043, kind="end", snapshot=None, clip="events/c.mp4"))
    assert "reason=cleared" in end and "clip=events/c.mp4" in end


def test_format_alert_neutralises_terminal_control_characters():
    line = format_alert(alert(seq=1, camera="lob\x1b[2Jby", label="fi\nght"))
    assert "\x1b" not in line and "\n" not in line

"""The client side of Vigil's alerts: subscribe, catch up from the journal, never miss one.

`AlertSubscriber` follows the ZeroMQ guide's clone pattern: it subscribes to `alert.` and
`heartbeat` first, then asks the replay socket for everything after the last seq it holds (see
`streamer/publisher.py` for the protocol), merges replayed and live messages, drops duplicates by
seq and hands alerts out strictly in seq order. A jump in seq (or a heartbeat whose seq is ahead
of what it holds, or heartbeats falling silent) makes it ask the replay socket again; what the
journal cannot supply either is reported in `gaps` and logged, and delivery goes on.

Journal resets. Seqs count within one journal (`journal_id`, on every `vigil.alert/2` alert,
heartbeat and replay reply). When the daemon's journal is lost or replaced its seq may start
again at 1 under a new id: on the first message with a new id the subscriber says so (warning,
`resets`), forgets the old numbering and delivers the new journal's alerts from its first one
(replayed), so no new alert is mistaken for a duplicate of an old one. Servers without journal
ids (`vigil.alert/1`) are still handled by the old rule: a heartbeat or replay `last_seq` behind
what the subscriber holds means a reset.

Fleets (issue 15). A site runs several daemons, each naming itself (`instance` on every alert,
heartbeat and replay reply) and numbering its own alerts. The subscriber takes several daemons
(lists of alert and replay endpoints) or one relay (`vigil relay`: one alert endpoint, one replay
endpoint that forwards a request to the instance it names) and keeps everything above (seq,
journal id, pending alerts, gaps, heartbeat silence) per instance: alerts are delivered in seq
order per instance, each exactly once, and a gap is filled from that instance's journal. Which
replay socket serves which instance is learnt at start: each replay endpoint is asked
`{"since": 0, "limit": 0}`; a daemon answers with its `instance`, a relay with the list of its
`instances` (requests through it then name the instance). Alerts of a daemon without instance
names are filed under instance `None`; with one replay endpoint everything is asked of it.

`vigil alerts` is a thin wrapper: `for msg in AlertSubscriber(...): print(format_alert(msg))`.

Not thread-safe (ZeroMQ sockets): use a subscriber from one thread.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import zmq
import zmq.auth

from detector.errors import ConfigError

from .curve_keys import load_client_keys
from .protocol import (MAX_FRAME_BYTES, AlertFormatError, is_int, load_json, parse_alert,
                       parse_heartbeat, printable, validate_alert)

log = logging.getLogger(__name__)

_MAX_REPLAY_PAGES = 10_000


@dataclass
class ClientCurve:
    """CURVE keys of a subscriber: the server's public key and this client's secret key file
    (both written by `vigil keys generate`: `server.key`, `clients/<name>.key_secret`)."""
    server_public_key: Path
    client_secret_key: Path


# ---- the subscriber ----------------------------------------------------------------------------
class _Stream:
    """One instance's numbering: what the subscriber holds, has pending and has lost.

    `request(body) -> reply or None` asks this instance's replay socket (directly, or through a
    relay); `ready` is the subscriber's queue of alerts to hand out.
    """

    def __init__(self, instance: Optional[str], since: Optional[int],
                 request: Callable[[dict], Optional[dict]], ready: deque,
                 gap_log: list, on_malformed: Callable[[], None]) -> None:
        self.instance = instance
        self.last_seq: Optional[int] = since
        self.journal_id: Optional[str] = None
        self.resets = 0
        self.gaps: list[tuple[int, int]] = []
        self.replayed = 0             # alerts taken from the journal, not from the wire
        self.last_rx = time.monotonic()
        self._request = request
        self._ready = ready
        self._gap_log = gap_log
        self._on_malformed = on_malformed
        self._old_journals: set[str] = set()
        self._pending: dict[int, dict] = {}
        self._server_seq = 0          # highest seq the server said exists (heartbeat / replay)

    def on_alert(self, msg: dict) -> None:
        self.last_rx = time.monotonic()
        if self._journal_of(msg.get("journal_id")) == "old":
            return                        # a straggler from a replaced journal
        self._server_seq = max(self._server_seq, msg["seq"])
        if self.last_seq is None:
            self.last_seq = msg["seq"] - 1
        if msg["seq"] > self.last_seq:
            self._pending[msg["seq"]] = msg

    def on_heartbeat(self, hb: dict) -> None:
        self.last_rx = time.monotonic()
        if self._journal_of(hb.get("journal_id")) == "old":
            return
        if self.last_seq is None:
            self.last_seq = hb["seq"]             # no baseline from replay: start from now
        if self.journal_id is None and self.last_seq is not None and hb["seq"] < self.last_seq:
            # The daemon's journal is behind what we hold: it was replaced. Start over from it.
            log.warning("%sserver seq %d is behind ours (%d): journal replaced? resetting",
                        self._who(), hb["seq"], self.last_seq)
            self.last_seq = hb["seq"]
            self._pending.clear()
        self._server_seq = max(self._server_seq, hb["seq"])

    def _who(self) -> str:
        return f"instance {printable(self.instance)}: " if self.instance is not None else ""

    def drain(self) -> None:
        """Move pending alerts to the ready queue in seq order, replaying to fill gaps."""
        replayed = False
        while True:
            if self.last_seq is None:
                if not self._pending:
                    return
                self.last_seq = min(self._pending) - 1
            while self._pending:
                seq = min(self._pending)
                msg = self._pending.pop(seq)
                if seq <= self.last_seq:
                    continue                      # duplicate (live and replayed)
                if seq != self.last_seq + 1:
                    self._pending[seq] = msg
                    break
                self._ready.append(msg)
                self.last_seq = seq
            missing_to = (min(self._pending) - 1) if self._pending else self._server_seq
            if missing_to <= self.last_seq:
                return
            if not replayed:
                replayed = True
                if self.replay(self.last_seq):
                    continue
                if not self._pending:
                    return                        # server unreachable: try again later
            # Still missing after asking the journal (pruned, or the replay socket is down
            # while later alerts wait): report and move on rather than stall forever.
            gap = (self.last_seq + 1, missing_to)
            self.gaps.append(gap)
            self._gap_log.append((self.instance, *gap))
            log.warning("%salerts %d..%d are lost (not on the wire, not in the journal)",
                        self._who(), *gap)
            self.last_seq = missing_to

    # ---- replay --------------------------------------------------------------------------------
    def baseline(self, reply: Optional[dict] = None) -> None:
        """`since=None`: learn the current last seq, deliver only what comes after it."""
        if reply is None:
            reply = self._request({"since": 0, "limit": 0})
        if reply is not None:
            self._journal_of(reply.get("journal_id"))
            self.last_seq = reply["last_seq"]
            self._server_seq = max(self._server_seq, reply["last_seq"])

    # ---- journal resets ------------------------------------------------------------------------
    def _journal_of(self, journal_id: Optional[str]) -> str:
        """Note the journal id a message carries: `same` (or none given, or the first one seen),
        `new` (the reset to it is done here: seqs now count in it) or `old` (a journal already
        replaced: ignore the message)."""
        if journal_id is None or journal_id == self.journal_id:
            return "same"
        if self.journal_id is None:
            self.journal_id = journal_id          # first sighting
            return "same"
        if journal_id in self._old_journals:
            return "old"
        self._reset(journal_id)
        return "new"

    def _reset(self, journal_id: str) -> None:
        """The daemon's journal changed: forget the old numbering, start at the new journal's
        first alert (asked of the replay socket; else the first one seen live)."""
        log.warning("%sthe daemon's journal changed (%s -> %s: lost or replaced): seq restarts; "
                    "delivering the new journal's alerts from its first one", self._who(),
                    printable(self.journal_id, 64), printable(journal_id, 64))
        # The old journal's alerts already received in order are still news: deliver them first.
        while self.last_seq is not None and self.last_seq + 1 in self._pending:
            self.last_seq += 1
            self._ready.append(self._pending.pop(self.last_seq))
        self._old_journals.add(self.journal_id)
        self.journal_id = journal_id
        self.resets += 1
        self._pending = {s: m for s, m in self._pending.items()
                         if m.get("journal_id") == journal_id}
        self._server_seq = 0
        reply = self._request({"since": 0, "limit": 1})
        if reply is not None and reply.get("journal_id", journal_id) == journal_id:
            first = reply["alerts"][0]["seq"] if reply["alerts"] else reply["last_seq"] + 1
            self.last_seq = max(first - 1, 0)
            self._server_seq = reply["last_seq"]
        else:
            self.last_seq = (min(self._pending) - 1) if self._pending else None

    def replay(self, since: int) -> bool:
        """Fetch every alert after `since` into the pending set. False if the server is silent."""
        for _ in range(_MAX_REPLAY_PAGES):
            reply = self._request({"since": since})
            if reply is None:
                return False
            if self._journal_of(reply.get("journal_id")) != "same":
                since = self.last_seq or 0        # _reset() set the new journal's baseline
                continue
            if self.journal_id is None and self.last_seq is not None \
                    and reply["last_seq"] < self.last_seq:
                log.warning("%sserver seq %d is behind ours (%d): journal replaced? resetting",
                            self._who(), reply["last_seq"], self.last_seq)
                self.last_seq = since = reply["last_seq"]
                self._pending.clear()
                continue
            self._server_seq = max(self._server_seq, reply["last_seq"])
            for raw in reply["alerts"]:
                try:
                    msg = validate_alert(raw)
                except AlertFormatError as exc:
                    self._on_malformed()
                    log.warning("ignoring a malformed replayed alert: %s", exc)
                    continue
                if msg.get("instance") not in (None, self.instance):
                    log.warning("ignoring a replayed alert of instance %s (asked %s)",
                                printable(msg.get("instance")), printable(self.instance))
                    continue
                if (self.last_seq is None or msg["seq"] > self.last_seq) \
                        and msg["seq"] not in self._pending:
                    self._pending[msg["seq"]] = msg
                    self.replayed += 1
                since = max(since, msg["seq"])
            if not reply["more"] or not reply["alerts"]:
                return True
        return True


class AlertSubscriber:
    """Live alerts in seq order per instance, caught up from the journals, duplicates dropped,
    gaps reported.

    Args:
        endpoint: a daemon's (or a relay's) alert endpoint, e.g. `tcp://127.0.0.1:5557`, or a
            list of them (several daemons).
        replay_endpoint: the matching replay endpoint(s), e.g. `tcp://127.0.0.1:5558` (a relay's
            replay endpoint serves every instance behind it).
        since: deliver every alert with seq > since of every instance (from the journals, then
            live); None = only alerts published from now on; a mapping {instance: seq} resumes
            each instance where it was left (a bridge that stored what it forwarded), instances
            not in it from now on.
        curve: None or a `ClientCurve` (or mapping with the same keys).
        context: a zmq.Context; None = a private one, terminated by `close()`.
        replay_timeout_s: how long one replay request may take before giving up.
        heartbeat_timeout_s: no message at all from an instance for this long = ask its replay
            socket (a stuck subscriber elsewhere can stall the publisher; see publisher.py).
    Attributes:
        streams: instance name (None for daemons that send none) -> its `_Stream` (`last_seq`,
            `journal_id`, `resets`, `gaps` of that instance).
        gap_log: (instance, first, last) for every gap, in the order they were found.
        last_heartbeat: the last heartbeat dict (any instance); `last_heartbeat_at` its
            monotonic arrival time.
        malformed: count of messages refused by `parse_alert`.
        last_seq, journal_id, resets, gaps: of the only instance (single-daemon use); with
            several, `last_seq`/`journal_id` are None, `resets` is the sum and `gaps` all of them.
    """

    def __init__(self, endpoint: str | Sequence[str], replay_endpoint: str | Sequence[str],
                 since: Optional[int] | Mapping[Optional[str], int] = None, curve: Any = None,
                 context: Optional[zmq.Context] = None, replay_timeout_s: float = 2.0,
                 heartbeat_timeout_s: float = 15.0) -> None:
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        replays = [replay_endpoint] if isinstance(replay_endpoint, str) else list(replay_endpoint)
        if not endpoints or not replays:
            raise ConfigError("AlertSubscriber: at least one alert and one replay endpoint")
        self._own_context = context is None
        self.context = context if context is not None else zmq.Context()
        self.replay_timeout_s = replay_timeout_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.since = since
        self.streams: dict[Optional[str], _Stream] = {}
        self.gap_log: list[tuple[Optional[str], int, int]] = []
        self.last_heartbeat: Optional[dict] = None
        self.last_heartbeat_at: Optional[float] = None
        self.malformed = 0
        self._ready: deque[dict] = deque()
        self._request_id = 0
        self._closed = False
        self._dealers: list[zmq.Socket] = []
        self._routes: dict[Optional[str], zmq.Socket] = {}   # instance -> its daemon's socket
        self._relay: Optional[zmq.Socket] = None
        self._unidentified: list[zmq.Socket] = []
        self._identify_after = 0.0
        self._sub = self.context.socket(zmq.SUB)
        try:
            keys = self._curve_keys(curve) if curve is not None else None
            self._dealers = [self.context.socket(zmq.DEALER) for _ in replays]
            for sock in (self._sub, *self._dealers):
                sock.setsockopt(zmq.LINGER, 0)
                # ZMTP heartbeats notice a half-open connection (daemon host gone) and reconnect.
                sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
                if keys is not None:
                    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
            self._sub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
            # Subscribe before asking for the replay (clone pattern): nothing falls in between.
            self._sub.setsockopt(zmq.SUBSCRIBE, b"alert.")
            self._sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
            for ep in endpoints:
                self._sub.connect(ep)
            for dealer, ep in zip(self._dealers, replays):
                dealer.connect(ep)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"cannot connect to {', '.join(endpoints)} / "
                              f"{', '.join(replays)}: {exc}") from None
        except BaseException:
            self.close()
            raise
        self._unidentified = list(self._dealers)
        self._identify()

    @staticmethod
    def _curve_keys(curve: Any) -> tuple[bytes, bytes, bytes]:
        if isinstance(curve, Mapping):
            curve = ClientCurve(Path(curve["server_public_key"]), Path(curve["client_secret_key"]))
        return load_client_keys(curve.server_public_key, curve.client_secret_key)

    # ---- single-instance view ------------------------------------------------------------------
    def _only(self) -> Optional[_Stream]:
        return next(iter(self.streams.values())) if len(self.streams) == 1 else None

    @property
    def last_seq(self) -> Optional[int]:
        only = self._only()
        if only is not None:
            return only.last_seq
        return self.since if not self.streams and not isinstance(self.since, Mapping) else None

    @property
    def journal_id(self) -> Optional[str]:
        only = self._only()
        return only.journal_id if only is not None else None

    @property
    def resets(self) -> int:
        return sum(s.resets for s in self.streams.values())

    @property
    def gaps(self) -> list[tuple[int, int]]:
        return [(first, last) for _, first, last in self.gap_log]

    @property
    def instances(self) -> list[Optional[str]]:
        """The instances seen so far (None: a daemon that sends no instance name)."""
        return list(self.streams)

    # ---- public API ----------------------------------------------------------------------------
    def poll(self, timeout: Optional[float] = None) -> Optional[dict]:
        """The next alert in seq order (of its instance), or None if none arrived within
        `timeout` seconds.

        Args:
            timeout: seconds to wait; None = until an alert arrives.
        """
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while not self._ready:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = 0.5 if deadline is None else min(deadline - now, 0.5)
            if self._sub.poll(int(wait * 1000)):
                self._receive()
            # Per instance: one daemon falling silent while others talk must be noticed too.
            for stream in list(self.streams.values()):
                if time.monotonic() - stream.last_rx > self.heartbeat_timeout_s:
                    log.warning("%sno heartbeat for %.0f s: asking the replay socket",
                                stream._who(), self.heartbeat_timeout_s)
                    stream.last_rx = time.monotonic()   # at most one replay per timeout
                    stream.replay(stream.last_seq or 0)
            for stream in list(self.streams.values()):
                stream.drain()
        return self._ready.popleft() if self._ready else None

    def __iter__(self) -> Iterator[dict]:
        """Alerts forever (until `close()`), in seq order per instance."""
        while not self._closed:
            msg = self.poll(1.0)
            if msg is not None:
                yield msg

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sub.close(linger=0)
        for dealer in self._dealers:
            dealer.close(linger=0)
        if self._own_context:
            self.context.term()

    def __enter__(self) -> "AlertSubscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- instances -----------------------------------------------------------------------------
    def _stream(self, instance: Optional[str], baseline: Optional[dict] = None,
                ask_baseline: bool = False) -> _Stream:
        """The stream of `instance`, created on first sight: from `since` (replayed), else from
        the baseline reply (given, or asked when `ask_baseline`), else from what arrives next
        (an instance first seen live starts with that message)."""
        stream = self.streams.get(instance)
        if stream is None:
            since = (self.since.get(instance) if isinstance(self.since, Mapping)
                     else self.since)
            stream = _Stream(instance, since,
                             lambda body, i=instance: self._request_for(i, body),
                             self._ready, self.gap_log, self._count_malformed)
            self.streams[instance] = stream
            if since is not None:
                stream.replay(since)
            elif baseline is not None or ask_baseline:
                stream.baseline(baseline)
        return stream

    def _count_malformed(self) -> None:
        self.malformed += 1

    def _identify(self) -> None:
        """Ask each replay socket not yet identified who it is (a daemon: its instance, and the
        baseline; a relay: the instances behind it). Silent ones are asked again later."""
        self._identify_after = time.monotonic() + max(self.heartbeat_timeout_s / 3, 1.0)
        for dealer in list(self._unidentified):
            reply = self._send(dealer, {"since": 0, "limit": 0}, relay_ok=True)
            if reply is None:
                continue
            self._unidentified.remove(dealer)
            if reply.get("relay"):
                self._relay = dealer
                names = reply.get("instances")
                for name in names if isinstance(names, list) else []:
                    if isinstance(name, str):
                        self._stream(name, ask_baseline=True)
            else:
                instance = reply.get("instance")
                self._routes[instance] = dealer
                self._stream(instance, baseline=reply)

    def _request_for(self, instance: Optional[str], body: dict) -> Optional[dict]:
        """A replay request for `instance`'s journal, to its daemon or through the relay."""
        dealer = self._routes.get(instance)
        if dealer is None and self._unidentified and time.monotonic() >= self._identify_after:
            self._identify()
            dealer = self._routes.get(instance)
        if dealer is None and self._relay is not None and instance is not None:
            return self._send(self._relay, {**body, "instance": instance})
        if dealer is None and len(self._dealers) == 1:
            dealer = self._dealers[0]             # one daemon: it answers for everything
        if dealer is None:
            log.warning("no replay socket known for instance %s", printable(instance))
            return None
        return self._send(dealer, body)

    # ---- live messages -------------------------------------------------------------------------
    def _receive(self) -> None:
        """Take everything waiting on the SUB socket (bounded) into the pending sets."""
        for _ in range(10_000):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if frames and frames[0] == b"heartbeat":
                    hb = parse_heartbeat(frames)
                    self.last_heartbeat, self.last_heartbeat_at = hb, time.monotonic()
                    self._stream(hb.get("instance")).on_heartbeat(hb)
                else:
                    msg = parse_alert(frames)
                    self._stream(msg.get("instance")).on_alert(msg)
            except AlertFormatError as exc:
                self.malformed += 1
                log.warning("ignoring a malformed message: %s", exc)

    # ---- replay requests -----------------------------------------------------------------------
    def _send(self, dealer: zmq.Socket, body: dict, relay_ok: bool = False) -> Optional[dict]:
        """One replay request/reply; None on timeout or an error reply (a relay's answer about
        itself is a reply only when `relay_ok`)."""
        self._request_id += 1
        body = {**body, "id": self._request_id}
        try:
            dealer.send(json.dumps(body).encode(), zmq.NOBLOCK)
        except zmq.Again:
            log.warning("replay socket not reachable")
            return None
        deadline = time.monotonic() + self.replay_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not dealer.poll(int(remaining * 1000)):
                log.warning("replay request timed out after %.1f s", self.replay_timeout_s)
                return None
            frames = dealer.recv_multipart()
            try:
                reply = load_json(frames[-1], "replay")
            except AlertFormatError as exc:
                log.warning("bad replay reply: %s", exc)
                continue
            if not isinstance(reply, dict) or reply.get("id") != self._request_id:
                continue                          # a late answer to an earlier request
            if "error" in reply:
                log.warning("replay refused: %s", printable(reply["error"], 200))
                return None
            if relay_ok and reply.get("relay") is True:
                return reply
            if not (is_int(reply.get("last_seq")) and isinstance(reply.get("alerts"), list)
                    and isinstance(reply.get("more"), bool)):
                log.warning("bad replay reply: missing last_seq/alerts/more")
                return None
            return reply

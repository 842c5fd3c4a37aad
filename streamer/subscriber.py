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

Hostile or mistaken peers (issue 26). Nothing a peer sends can make the subscriber drop real
alerts:
* A journal id never seen before on a live message is believed only when the instance's replay
  socket serves that journal (or, when it cannot say, once the current journal has fallen
  silent): a forged heartbeat or alert with a new id, or a second daemon with the same name,
  cannot reset the stream; it is ignored, said once (ERROR) and counted in `clashes`.
* A heartbeat's (or a lone alert's) seq is a hint that makes the subscriber ask the journal; a
  gap is declared only up to what the journal numbers, and an alert more than `MAX_SEQ_AHEAD`
  beyond both the journal and what was delivered is dropped as implausible, so a forged
  `seq` of 10**12 moves nothing.
* With several daemon endpoints, each has its own SUB socket, and an instance name belongs to
  the endpoint it first came from (as in the relay): another endpoint's messages of that name
  are delivered as instance `<name>-dup<N>` (`protocol.alias_name`), replayed from the replay
  endpoint given in the same position, and the clash is said once and counted.
* Every message is read within bounds (`streamer.wire.limits.recv_bounded`).

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
from .protocol import (MAX_FRAME_BYTES, MAX_SEQ_AHEAD, AlertFormatError, alias_name, is_int,
                       load_json, parse_alert, parse_heartbeat, printable, validate_alert)
from .wire.limits import bound_frames, recv_bounded

log = logging.getLogger(__name__)

_MAX_REPLAY_PAGES = 10_000
_MAX_STREAMS = 4096               # instances tracked (a fleet has a few; a forger may invent many)
_FOREIGN_RECHECK_S = 10.0         # a journal id found foreign is asked about again after this
_MAX_REPLY_BYTES = 16 << 20       # a replay reply: a page of alerts (500 of ~1 kB by default)
_REFUSED = object()               # `_name_for`: no stream for this message


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
    relay); `ready` is the subscriber's queue of alerts to hand out; `on_clash(stream, key,
    detail)` is told (once per key) about messages that claim this instance but are not its.
    `wire` is the instance name the daemon itself uses (the stream's `instance` differs for a
    `-dup` alias: its alerts are delivered under the alias).
    """

    def __init__(self, instance: Optional[str], since: Optional[int],
                 request: Callable[[dict], Optional[dict]], ready: deque,
                 gap_log: list, on_malformed: Callable[[], None],
                 on_clash: Callable[["_Stream", Any, str], None] = lambda *a: None,
                 wire: Optional[str] = None, silence_s: float = 15.0) -> None:
        self.instance = instance
        self.wire = instance if wire is None else wire
        self.last_seq: Optional[int] = since
        self.journal_id: Optional[str] = None
        self.resets = 0
        self.gaps: list[tuple[int, int]] = []
        self.replayed = 0             # alerts taken from the journal, not from the wire
        self.implausible = 0          # alerts dropped for a seq far beyond the journal
        self.last_rx = time.monotonic()
        self.silence_s = silence_s
        self._request = request
        self._ready = ready
        self._gap_log = gap_log
        self._on_malformed = on_malformed
        self._on_clash = on_clash
        self._old_journals: set[str] = set()
        self._foreign: dict[str, float] = {}      # journal ids found not to be this instance's
        self._heard = time.monotonic()            # a live message of the current journal
        self._reset_at = 0.0
        self._pending: dict[int, dict] = {}
        self._server_seq = 0          # highest seq the server hinted at (heartbeat / alert)
        self._confirmed: Optional[int] = None     # last_seq the journal itself answered

    def _deliverable(self, msg: dict) -> dict:
        return msg if self.instance == self.wire else {**msg, "instance": self.instance}

    def on_alert(self, msg: dict) -> None:
        self.last_rx = time.monotonic()
        if self._live_journal(msg.get("journal_id")) in ("old", "foreign"):
            return                        # a straggler of a replaced journal, or not this one's
        if self.last_seq is None:
            self.last_seq = msg["seq"] - 1
        if msg["seq"] > self.last_seq:
            self._pending[msg["seq"]] = self._deliverable(msg)
            self._server_seq = max(self._server_seq, msg["seq"])

    def on_heartbeat(self, hb: dict) -> None:
        self.last_rx = time.monotonic()
        if self._live_journal(hb.get("journal_id")) in ("old", "foreign"):
            return
        if self.last_seq is None:
            self.last_seq = hb["seq"]             # no baseline from replay: start from now
        if self.journal_id is None and self.last_seq is not None and hb["seq"] < self.last_seq:
            # The daemon's journal is behind what we hold: it was replaced. Start over from it.
            log.warning("%sserver seq %d is behind ours (%d): journal replaced? resetting",
                        self._who(), hb["seq"], self.last_seq)
            self.last_seq = hb["seq"]
            self._pending.clear()
        base = max(self._confirmed or 0, self.last_seq or 0)
        if hb["seq"] > base + MAX_SEQ_AHEAD:
            self._implausible(hb["seq"], "heartbeat")
            return
        # A hint: it makes us ask the journal; only the journal's answer can declare a gap.
        self._server_seq = max(self._server_seq, hb["seq"])

    def _who(self) -> str:
        return f"instance {printable(self.instance)}: " if self.instance is not None else ""

    def _implausible(self, seq: int, what: str) -> None:
        self.implausible += 1
        if self.implausible == 1 or self.implausible % 1000 == 0:
            log.warning("%sa %s with seq %d, more than %d beyond the journal's %s and the last "
                        "delivered %s: ignored as implausible (%d so far)", self._who(), what,
                        seq, MAX_SEQ_AHEAD, self._confirmed, self.last_seq, self.implausible)

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
            if not self._pending:
                # Only a hint says more exist, and the journal was asked: it bounds the gap.
                confirmed = self._confirmed if self._confirmed is not None else self.last_seq
                self._server_seq = max(confirmed, self.last_seq)
                missing_to = min(missing_to, confirmed)
                if missing_to <= self.last_seq:
                    return
            else:
                bound = max(self._confirmed or 0, self.last_seq) + MAX_SEQ_AHEAD
                beyond = [s for s in self._pending if s > bound]
                if beyond:                        # far past anything the journal numbers
                    for s in beyond:
                        del self._pending[s]
                        self._implausible(s, "alert")
                    self._server_seq = min(self._server_seq, bound)
                    continue
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
            self._confirmed = reply["last_seq"]
            self._server_seq = max(self._server_seq, reply["last_seq"])

    # ---- journal resets ------------------------------------------------------------------------
    def _journal_of(self, journal_id: Optional[str]) -> str:
        """Note the journal id the replay socket answers with: `same` (or none given, or the
        first one seen), `new` (the reset to it is done here: seqs now count in it) or `old` (a
        journal already replaced: ignore the reply)."""
        if journal_id is None or journal_id == self.journal_id:
            return "same"
        if self.journal_id is None:
            self.journal_id = journal_id          # first sighting
            return "same"
        if journal_id in self._old_journals:
            return "old"
        self._reset(journal_id)
        return "new"

    def _live_journal(self, journal_id: Optional[str]) -> str:
        """`_journal_of` for a message from the wire, which anyone behind the same socket could
        have sent: a new journal id is believed when the replay socket serves it, or (when it
        cannot say) once the current journal has been silent for `silence_s`; otherwise the
        message is `foreign` (a second daemon with this name, or a forgery) and ignored."""
        now = time.monotonic()
        if journal_id is None or journal_id == self.journal_id or self.journal_id is None:
            self._heard = now
            return self._journal_of(journal_id)
        if journal_id in self._old_journals:
            if now - self._reset_at > self.silence_s:     # not a straggler: it goes on talking
                self._on_clash(self, ("journal", journal_id), (
                    f"alerts of journal {printable(journal_id, 64)} keep arriving although the "
                    f"daemon's replay socket serves journal {printable(self.journal_id, 64)}: "
                    f"two daemons use the instance name {printable(self.wire)}"))
            return "old"
        checked = self._foreign.get(journal_id)
        if checked is not None and now - checked < _FOREIGN_RECHECK_S:
            return "foreign"
        reply = self._request({"since": 0, "limit": 0})
        serving = reply.get("journal_id") if reply is not None else None
        if serving == journal_id or (serving is None and now - self._heard > self.silence_s):
            self._foreign.pop(journal_id, None)
            self._heard = now
            self._journal_of(journal_id)
            return "new"
        self._foreign[journal_id] = now
        if len(self._foreign) > 256:              # bounded: forget the oldest
            self._foreign.pop(next(iter(self._foreign)))
        self._on_clash(self, ("journal", journal_id), (
            f"messages of journal {printable(journal_id, 64)} arrive, but the instance's replay "
            f"socket serves journal {printable(serving or self.journal_id, 64)}: a second daemon "
            f"calls itself {printable(self.wire)} (or someone forges it); they are ignored"))
        return "foreign"

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
        self._reset_at = time.monotonic()
        self._pending = {s: m for s, m in self._pending.items()
                         if m.get("journal_id") == journal_id}
        self._server_seq = 0
        self._confirmed = None
        reply = self._request({"since": 0, "limit": 1})
        if reply is not None and reply.get("journal_id", journal_id) == journal_id:
            first = reply["alerts"][0]["seq"] if reply["alerts"] else reply["last_seq"] + 1
            self.last_seq = max(first - 1, 0)
            self._server_seq = self._confirmed = reply["last_seq"]
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
            self._confirmed = reply["last_seq"]
            self._server_seq = max(self._server_seq, reply["last_seq"])
            for raw in reply["alerts"]:
                try:
                    msg = validate_alert(raw)
                except AlertFormatError as exc:
                    self._on_malformed()
                    log.warning("ignoring a malformed replayed alert: %s", exc)
                    continue
                if msg.get("instance") not in (None, self.wire):
                    log.warning("ignoring a replayed alert of instance %s (asked %s)",
                                printable(msg.get("instance")), printable(self.wire))
                    continue
                if (self.last_seq is None or msg["seq"] > self.last_seq) \
                        and msg["seq"] not in self._pending:
                    self._pending[msg["seq"]] = self._deliverable(msg)
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
        clashes: (instance, what) for every clash found (a second source of an instance name:
            another endpoint, or a journal the instance's replay socket does not serve), once
            each, in the order found; each is also logged at ERROR.
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
        self.clashes: list[tuple[Optional[str], str]] = []
        self._clash_keys: set[Any] = set()
        self._ready: deque[dict] = deque()
        self._request_id = 0
        self._closed = False
        self._dealers: list[zmq.Socket] = []
        self._routes: dict[Optional[str], zmq.Socket] = {}   # instance -> its daemon's socket
        self._relay: Optional[zmq.Socket] = None
        self._unidentified: list[zmq.Socket] = []
        self._identify_after = 0.0
        self._endpoints = endpoints
        # Which endpoint an instance name belongs to: (endpoint index, last heard).
        self._owners: dict[Optional[str], tuple[int, float]] = {}
        self._subs: list[zmq.Socket] = []
        try:
            keys = self._curve_keys(curve) if curve is not None else None
            # One SUB per endpoint: each message's source is known (see the module docstring).
            self._subs = [self.context.socket(zmq.SUB) for _ in endpoints]
            self._dealers = [self.context.socket(zmq.DEALER) for _ in replays]
            for sock in (*self._subs, *self._dealers):
                sock.setsockopt(zmq.LINGER, 0)
                # ZMTP heartbeats notice a half-open connection (daemon host gone) and reconnect.
                sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
                if keys is not None:
                    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
            for sub, ep in zip(self._subs, endpoints):
                bound_frames(sub, MAX_FRAME_BYTES)
                # Subscribe before asking for the replay (clone pattern): nothing falls between.
                sub.setsockopt(zmq.SUBSCRIBE, b"alert.")
                sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
                sub.connect(ep)
            for dealer in self._dealers:
                bound_frames(dealer, _MAX_REPLY_BYTES)
            for dealer, ep in zip(self._dealers, replays):
                dealer.connect(ep)
            self._poller = zmq.Poller()
            for sub in self._subs:
                self._poller.register(sub, zmq.POLLIN)
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
            for sub, _ in self._poller.poll(int(wait * 1000)):
                self._receive(self._subs.index(sub))
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
        for sock in (*self._subs, *self._dealers):
            sock.close(linger=0)
        if self._own_context:
            self.context.term()

    def __enter__(self) -> "AlertSubscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- instances -----------------------------------------------------------------------------
    def _stream(self, instance: Optional[str], baseline: Optional[dict] = None,
                ask_baseline: bool = False, wire: Optional[str] = None) -> Optional[_Stream]:
        """The stream of `instance`, created on first sight: from `since` (replayed), else from
        the baseline reply (given, or asked when `ask_baseline`), else from what arrives next
        (an instance first seen live starts with that message). `wire`: the daemon's own name
        for a `-dup` alias. None when `_MAX_STREAMS` instances are tracked already."""
        stream = self.streams.get(instance)
        if stream is None:
            if len(self.streams) >= _MAX_STREAMS:
                if len(self.streams) == _MAX_STREAMS:
                    log.error("more than %d instances: messages of new ones are ignored",
                              _MAX_STREAMS)
                return None
            since = (self.since.get(instance) if isinstance(self.since, Mapping)
                     else self.since)
            stream = _Stream(instance, since,
                             lambda body, i=instance: self._request_for(i, body),
                             self._ready, self.gap_log, self._count_malformed, self._clash,
                             wire=wire, silence_s=self.heartbeat_timeout_s)
            self.streams[instance] = stream
            if since is not None:
                stream.replay(since)
            elif baseline is not None or ask_baseline:
                stream.baseline(baseline)
        return stream

    def _clash(self, stream: Optional[_Stream], key: Any, detail: str) -> None:
        """A second source of an instance name: said once (ERROR) and kept in `clashes`."""
        instance = stream.wire if stream is not None else key[1]
        if (instance, key) in self._clash_keys:
            return
        self._clash_keys.add((instance, key))
        self.clashes.append((instance, detail))
        log.error("instance %s: %s", printable(instance), detail)

    def _paired(self, index: int) -> Optional[zmq.Socket]:
        """The replay socket given in the same position as alert endpoint `index` (several
        daemons, listed in the same order), or None."""
        if len(self._dealers) == len(self._subs) > 1:
            return self._dealers[index]
        return None

    def _stream_for(self, instance: Optional[str], source: int) -> Optional[_Stream]:
        """The stream a live message of `instance` from endpoint `source` goes to: the
        instance's own while that endpoint owns the name, else a `-dup` alias (said once);
        None when too many instances are tracked."""
        name = self._name_for(instance, source)
        return None if name is _REFUSED else self._stream(name, wire=instance)

    def _name_for(self, instance: Optional[str], source: int) -> Any:
        if len(self._subs) == 1:
            return instance
        now = time.monotonic()
        owner = self._owners.get(instance)
        if owner is None or owner[0] == source or now - owner[1] > 2 * self.heartbeat_timeout_s:
            if owner is None and len(self._owners) >= _MAX_STREAMS:
                return _REFUSED
            self._owners[instance] = (source, now)
            return instance
        alias = alias_name(instance, source + 1)
        if alias not in self.streams:
            dealer = self._paired(source)
            if dealer is not None:
                self._routes.setdefault(alias, dealer)
            self._clash(None, ("endpoint", instance, source), (
                f"it arrives from {self._endpoints[owner[0]]} (first) and from "
                f"{self._endpoints[source]} (second): two daemons have this instance name "
                f"(hosts cloned from one image with `instance: null`?) or one forges it; give "
                f"each its own `instance:`. The second one's alerts are delivered as instance "
                f"{alias}"))
        return alias

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
                index = self._dealers.index(dealer)
                owner = self._owners.get(instance)
                if instance in self._routes and self._routes[instance] is not dealer \
                        and self._paired(index) is not None:
                    # A second daemon answers with the same name: its own alias and stream.
                    alias = alias_name(instance, index + 1)
                    self._routes[alias] = dealer
                    self._clash(None, ("endpoint", instance, index), (
                        f"two replay endpoints answer for it: give each daemon its own "
                        f"`instance:`; the second one's alerts are delivered as instance "
                        f"{alias}"))
                    self._stream(alias, baseline=reply, wire=instance)
                    continue
                self._routes[instance] = dealer
                if owner is None and self._paired(index) is not None:
                    self._owners[instance] = (index, time.monotonic())
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
    def _receive(self, source: int) -> None:
        """Take everything waiting on endpoint `source`'s SUB socket (bounded) into the pending
        sets."""
        sub = self._subs[source]
        for _ in range(10_000):
            got = recv_bounded(sub, 2, MAX_FRAME_BYTES + 1024)
            if got is None:
                return
            try:
                if not got.ok:
                    raise AlertFormatError(f"message of {got.parts} parts and {got.size} bytes")
                frames = got.frames
                if frames and frames[0] == b"heartbeat":
                    hb = parse_heartbeat(frames)
                    stream = self._stream_for(hb.get("instance"), source)
                    if stream is not None:
                        self.last_heartbeat, self.last_heartbeat_at = hb, time.monotonic()
                        stream.on_heartbeat(hb)
                else:
                    msg = parse_alert(frames)
                    stream = self._stream_for(msg.get("instance"), source)
                    if stream is not None:
                        stream.on_alert(msg)
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

"""`vigil relay`: one alert stream for a fleet of daemons (issue 15), safe against hostile or
mistaken peers (issue 26).

A site shards its cameras across several `vigil serve` daemons (one per GPU or host); each keeps
its own journal and replay socket. The relay gives subscribers one place to connect to:

    daemon gpu1 PUB ─► SUB ─┐
    daemon gpu2 PUB ─► SUB ─┼─► the relay's loop (one thread) ─► XPUB ─► subscribers
    daemon gpu3 PUB ─► SUB ─┘
    subscriber DEALER ─► replay ROUTER ─► DEALER per instance ─► its daemon's replay

Alerts. One SUB socket per daemon endpoint (`--daemon`), subscribed to everything, so the relay
knows which connection each message came from. Each message is read within bounds
(`streamer.wire.limits`), checked as a `vigil.alert` or `vigil.heartbeat` (`streamer.protocol`)
and forwarded on the XPUB, byte for byte; anything else is dropped and counted. The XPUB drops
(it is not NODROP) what a subscriber too slow for its `hwm` cannot take: a stuck subscriber must
not stall the others or the daemons; it sees the seq gap and replays. Each daemon's alerts carry
its `instance` and count `seq` per instance, so a subscriber tracks and fills gaps per instance.

Identity. An instance belongs to one daemon connection. For an instance in the replay map the
relay asks that replay endpoint which journal it serves (`{"since": 0, "limit": 0}`, at start
and again when a message shows another journal id, at most once a second), and the connection
whose messages carry that journal id owns the name, whichever connected first; any other
instance belongs to the connection it arrives from first. A message naming an instance that
another connection owns (two daemons named after one host, cloned from one image with `instance:
null`; or a publisher forging another's name) never reaches that instance's subscribers: it is
forwarded as instance `<name>-dup<N>` (N: the connection's position among `--daemon`), nothing
is lost and nothing is mixed, and the relay says so once per episode at ERROR and counts it
(`vigil_relay_instance_conflicts_total`, `vigil_relay_instances_in_conflict`). An owner silent
for `owner_timeout_s` gives its name up (a daemon that moved to another endpoint). A `-dup`
instance has no replay endpoint: replay requests for it are answered with an error naming the
fix. A connection that sends a name with another journal id than the one its replay endpoint
serves is never that instance's owner again (until the journal id changes): a forger copying
the real journal id as well as inventing its own cannot take the name over.

Replay. Replay stays with each daemon (its journal never leaves its host). The relay's ROUTER
takes a `vigil.replay/1` request naming an instance, `{"since": N, "instance": "gpu1", ...}`,
checks every field (`instance` a valid name, `since` and `limit` integers in [0, 2**63-1]) and
forwards it unchanged (client envelope included) on a DEALER connected to that instance's replay
endpoint; the daemon's reply comes back on the DEALER with the envelope and is routed to the
client. The relay answers itself, with `{"schema": "vigil.replay/1", "id": ..., "relay": true,
...}`:
  - a request without `instance`: `"instances": [every configured name]` (how a subscriber
    learns it is talking to a relay, and which daemons are behind it);
  - a request that is not a JSON object, a field of the wrong type or range, an unknown
    instance, an instance whose daemon is not connected (the DEALER is `IMMEDIATE`: nothing
    queues for a daemon that is down), a message of too many parts or bytes: `"error"`.

Failures. Every message is handled inside its own error boundary: no request and no message can
end the relay's thread. The loop restarts (with backoff) after any other error
(`vigil_relay_loop_restarts_total`); if the thread ends anyway, `problem()` says why and `vigil
relay` exits 1, so systemd (`Restart=`) starts it again.

Bounds (issue 26). Every socket's frames are bounded by `ZMQ_MAXMSGSIZE` and every message's
parts and bytes by `recv_bounded`; the XPUB's subscriptions by `SubscriptionGuard`.

CURVE (optional, each side on its own): `frontend_curve` makes the XPUB and the replay ROUTER
CURVE servers admitting the keys in an authorised-clients directory (`vigil keys generate`'s
layout); `backend_curve` makes the SUBs and DEALERs CURVE clients of the daemons (their
`server.key` and a client key the daemons authorise).

Threads. `Relay.start()` runs one thread that owns every socket (created, used and closed in
it). `stop()` ends it within a second.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from detector.errors import ConfigError, VigilError

from .curve_keys import load_client_keys, load_server_keys
from .protocol import (MAX_FRAME_BYTES, REPLAY_SCHEMA, AlertFormatError, JsonTooDeep,
                       alias_name, is_instance, is_int, load_request, parse_alert,
                       parse_heartbeat, printable)
from .wire.limits import SubscriptionGuard, bound_frames, rebind, recv_bounded

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024     # a replay request, every part: as the daemon's replay socket
MAX_REQUEST_BYTES = 4096          # its JSON body
MAX_ENVELOPE_FRAMES = 3           # client identity, REQ's empty delimiter, body
# A daemon's replay reply: a page of alerts (500 by default, ~1 kB each) with its envelope.
MAX_REPLY_BYTES = 16 << 20
# A daemon's message: [topic, JSON of at most MAX_FRAME_BYTES].
MAX_DAEMON_MESSAGE_BYTES = MAX_FRAME_BYTES + 1024
SQLITE_MAX_INT = 2 ** 63 - 1
OWNER_TIMEOUT_S = 30.0            # an owner silent this long gives its instance name up
MAX_INSTANCES = 4096              # names tracked (a daemon has one; a forger may invent many)
LOOP_BACKOFF_S = 0.1
LOOP_BACKOFF_MAX_S = 5.0


class RelayError(VigilError):
    """The relay cannot start (address in use, bad keys, bad instance map)."""


@dataclass
class RelayCurveServer:
    """The relay as a CURVE server to subscribers: its secret key file and the directory of
    authorised client public keys."""
    server_secret_key: Path
    authorized_clients: Path


@dataclass
class RelayCurveClient:
    """The relay as a CURVE client of the daemons: their server public key and the relay's
    client secret key file (which the daemons must authorise)."""
    server_public_key: Path
    client_secret_key: Path


@dataclass
class RelayConfig:
    """What the relay connects to and binds.

    Attributes:
        daemons: each daemon's alert (PUB) endpoint; one SUB connection each.
        replay: instance name -> that daemon's replay endpoint.
        endpoint: where subscribers connect for alerts (XPUB bind).
        replay_endpoint: where subscribers send replay requests (ROUTER bind).
        hwm: messages queued per peer on each side.
        frontend_curve, backend_curve: optional CURVE on either side.
        owner_timeout_s: seconds an instance's connection may be silent before another
            connection may take the name over.
    """
    daemons: list[str]
    replay: dict[str, str] = field(default_factory=dict)
    endpoint: str = "tcp://127.0.0.1:5567"
    replay_endpoint: str = "tcp://127.0.0.1:5568"
    hwm: int = 10000
    frontend_curve: Optional[RelayCurveServer] = None
    backend_curve: Optional[RelayCurveClient] = None
    owner_timeout_s: float = OWNER_TIMEOUT_S

    def validate(self) -> None:
        """Raises ConfigError for an empty daemon list or a bad instance name."""
        if not self.daemons:
            raise ConfigError("relay: at least one daemon endpoint (--daemon) is required")
        for name in self.replay:
            if not is_instance(name):
                raise ConfigError(f"relay: --replay {name!r}: the instance name must be 1 to 64 "
                                  "of A-Z a-z 0-9 _ -")


def parse_replay_map(items: list[str]) -> dict[str, str]:
    """`["gpu1=tcp://10.0.0.1:5558", ...]` -> {"gpu1": "tcp://10.0.0.1:5558"} (ConfigError if
    an item has no `=` or a name repeats)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, endpoint = item.partition("=")
        if not sep or not endpoint:
            raise ConfigError(f"--replay {item!r}: expected INSTANCE=ENDPOINT")
        if name in out:
            raise ConfigError(f"--replay: instance {name!r} given twice")
        out[name] = endpoint
    return out


PROBE_EVERY_S = 1.0               # a replay endpoint is asked its journal id at most this often
CONNECT_WAIT_S = 1.0              # a request waits this long for its daemon's connection
MAX_WAITING = 1000                # requests waiting so, at most


@dataclass
class _Owner:
    """Which daemon connection an instance name belongs to, when it was last heard, and whether
    its journal id is the one the instance's replay endpoint serves."""
    upstream: int
    last_seen: float
    verified: bool = False


class Relay:
    """The alert forwarder and the replay forwarder of a fleet.

    Args:
        cfg: a RelayConfig.
        context: a zmq.Context; None = a private one, terminated by `stop()`.
        metrics: optional `streamer.metrics.RelayMetrics`.
        clock: monotonic clock (tests).
    Attributes:
        forwarded_requests, refused_requests: replay requests sent on to a daemon / refused.
        conflicts: messages forwarded under a `-dup` alias. dropped: messages not forwarded.
        errors: messages whose handling failed. restarts: loop restarts.
    """

    def __init__(self, cfg: RelayConfig, context: Optional[zmq.Context] = None,
                 metrics: Any = None, clock=time.monotonic) -> None:
        cfg.validate()
        self.cfg = cfg
        self.metrics = metrics
        self._clock = clock
        self._own_context = context is None
        self.context = context if context is not None else zmq.Context()
        self._auth: Optional[ThreadAuthenticator] = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._ended: Optional[str] = None
        self._thread: Optional[threading.Thread] = None
        self._frontend_keys: Optional[tuple[bytes, bytes]] = None
        self._backend_keys: Optional[tuple[bytes, bytes, bytes]] = None
        self.endpoint = cfg.endpoint
        self.replay_endpoint = cfg.replay_endpoint
        self.forwarded_requests = 0
        self.refused_requests = 0
        self.conflicts = 0
        self.dropped = 0
        self.errors = 0
        self.restarts = 0
        self._owners: dict[Optional[str], _Owner] = {}
        self._clashing: dict[tuple[Optional[str], int], float] = {}   # (name, upstream) -> seen
        # Requests for a daemon whose connection is still being made (a relay just started):
        # (deadline, instance, envelope, body), retried each turn, refused after CONNECT_WAIT_S.
        self._waiting: deque[tuple[float, str, list[bytes], bytes]] = deque()
        self._journals: dict[str, str] = {}       # instance -> the journal its replay serves
        self._tainted: set[tuple[Optional[str], int]] = set()   # (name, connection) mismatched
        self._probed: dict[str, float] = {}       # instance -> when it was last asked
        self._probes: dict[str, zmq.Socket] = {}  # instance -> the relay's own DEALER to it
        self._xpub: Optional[zmq.Socket] = None
        self._guard = SubscriptionGuard("relay --endpoint", self._remake_xpub)

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> "Relay":
        """Bind and connect everything, then return (RelayError if a socket cannot be set up)."""
        try:
            self._frontend_keys = self._server_keys()
            self._backend_keys = self._client_keys()
            self._thread = threading.Thread(target=self._run, name="vigil-relay", daemon=True)
            self._thread.start()
            if not self._ready.wait(timeout) or self._error is not None:
                raise RelayError(f"relay: {self._error or 'the relay thread did not start'}")
        except BaseException:
            self.stop()
            raise
        log.info("relay: alerts on %s (from %d daemons); replay on %s for %s%s", self.endpoint,
                 len(self.cfg.daemons), self.replay_endpoint,
                 " ".join(sorted(self.cfg.replay)) or "no instance",
                 " (CURVE)" if self._frontend_keys else "")
        return self

    def stop(self) -> None:
        """Stop the thread (within a second) and close everything."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(2.0)
            if thread.is_alive():
                log.warning("relay: thread %s did not stop", thread.name)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context and (thread is None or not thread.is_alive()):
            self.context.term()
        self._thread = None

    def running(self) -> bool:
        """The relay's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def problem(self) -> Optional[str]:
        """Why the relay stopped working (its thread ended), or None. Any thread."""
        if self._stop.is_set() or self._thread is None or self._thread.is_alive():
            return None
        return self._ended or "relay thread ended"

    def __enter__(self) -> "Relay":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- keys ----------------------------------------------------------------------------------
    def _server_keys(self) -> Optional[tuple[bytes, bytes]]:
        curve = self.cfg.frontend_curve
        if curve is None:
            return None
        public, secret = load_server_keys(curve.server_secret_key, "relay")
        if not Path(curve.authorized_clients).is_dir():
            raise ConfigError(f"relay: not a directory: {curve.authorized_clients}")
        self._auth = ThreadAuthenticator(self.context, log=logging.getLogger("vigil.zmq.auth"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(curve.authorized_clients))
        return public, secret

    def _client_keys(self) -> Optional[tuple[bytes, bytes, bytes]]:
        curve = self.cfg.backend_curve
        if curve is None:
            return None
        return load_client_keys(curve.server_public_key, curve.client_secret_key, "relay")

    def _socket(self, kind: int, side: str, max_frame_bytes: int) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        bound_frames(sock, max_frame_bytes)
        if side == "front" and self._frontend_keys is not None:
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = self._frontend_keys
        elif side == "back" and self._backend_keys is not None:
            (sock.curve_serverkey, sock.curve_publickey,
             sock.curve_secretkey) = self._backend_keys
        return sock

    @staticmethod
    def _bind(sock: zmq.Socket, endpoint: str, what: str) -> str:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise RelayError(f"relay: {what}: cannot bind {endpoint}: {exc}") from None
        return sock.getsockopt(zmq.LAST_ENDPOINT).decode()

    def _xpub_socket(self) -> zmq.Socket:
        xpub = self._socket(zmq.XPUB, "front", 1024)
        SubscriptionGuard.configure(xpub)
        xpub.setsockopt(zmq.SNDHWM, self.cfg.hwm)
        return xpub

    def _remake_xpub(self) -> None:
        """Close the XPUB and bind a new one on the same endpoint (see `SubscriptionGuard`)."""
        assert self._xpub is not None
        self._xpub = rebind(self._xpub, self._xpub_socket, self.endpoint)

    # ---- the loop (own thread) -----------------------------------------------------------------
    def _run(self) -> None:
        sockets: list[zmq.Socket] = []
        try:
            ups = []
            for endpoint in self.cfg.daemons:
                sub = self._socket(zmq.SUB, "back", MAX_FRAME_BYTES)
                sockets.append(sub)
                sub.setsockopt(zmq.RCVHWM, self.cfg.hwm)
                sub.setsockopt(zmq.SUBSCRIBE, b"")    # everything: the relay checks each message
                sub.connect(endpoint)
                ups.append(sub)
            self._xpub = self._xpub_socket()
            self.endpoint = self._bind(self._xpub, self.cfg.endpoint, "--endpoint")
            router = self._socket(zmq.ROUTER, "front", MAX_MESSAGE_BYTES)
            sockets.append(router)
            router.setsockopt(zmq.RCVHWM, 1000)
            self.replay_endpoint = self._bind(router, self.cfg.replay_endpoint,
                                              "--replay-endpoint")
            dealers: dict[str, zmq.Socket] = {}
            for name, endpoint in self.cfg.replay.items():
                for table in (dealers, self._probes):     # clients' requests; the relay's own
                    dealer = self._socket(zmq.DEALER, "back", MAX_REPLY_BYTES)
                    sockets.append(dealer)
                    dealer.setsockopt(zmq.IMMEDIATE, 1)  # nothing queues for a daemon that is down
                    dealer.connect(endpoint)
                    table[name] = dealer
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            for sock in sockets + ([self._xpub] if self._xpub is not None else []):
                sock.close(linger=0)
            return
        self._set_up(1)
        self._ready.set()
        backoff = LOOP_BACKOFF_S
        try:
            while not self._stop.is_set():
                try:
                    self._serve(ups, router, dealers)
                except zmq.ContextTerminated:
                    return
                except Exception as exc:      # not a message's fault (each has its own boundary)
                    if self._stop.is_set():
                        return
                    self.restarts += 1
                    if self.metrics is not None:
                        self.metrics.restarts.inc()
                    log.exception("relay: the loop failed (%s); restarting it in %.1f s "
                                  "(restart %d)", type(exc).__name__, backoff, self.restarts)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, LOOP_BACKOFF_MAX_S)
        except BaseException as exc:      # SystemExit & co: the thread ends; problem() says so
            self._ended = f"relay thread ended ({type(exc).__name__}: {exc})"
            log.critical("relay: %s: no alert is forwarded any more", self._ended)
            raise
        finally:
            self._set_up(0)
            for sock in sockets + ([self._xpub] if self._xpub is not None else []):
                sock.close(linger=0)
            self._xpub = None
            log.debug("relay: stopped")

    def _set_up(self, value: int) -> None:
        if self.metrics is not None:
            self.metrics.up.set(value)

    def _serve(self, ups: list[zmq.Socket], router: zmq.Socket,
               dealers: Mapping[str, zmq.Socket]) -> None:
        """Poll and handle until stopped. Raises only what is not one message's fault."""
        assert self._xpub is not None
        replies = {id(d): d for d in dealers.values()}
        probes = {id(d): name for name, d in self._probes.items()}
        while not self._stop.is_set():
            self._guard.tick()
            self._retry_waiting(router, dealers)
            for name in self._probes:
                if name not in self._journals:
                    self._probe(name)
            poller = zmq.Poller()                # the XPUB may be re-made: poll it afresh
            for sock in (*ups, router, *dealers.values(), *self._probes.values(), self._xpub):
                poller.register(sock, zmq.POLLIN)
            for sock, _ in poller.poll(100):
                if sock is self._xpub:
                    self._guard.drain(sock)
                    continue
                if id(sock) in probes:
                    self._probe_reply(sock, probes[id(sock)])
                    continue
                for _ in range(1000):            # take a burst, then let the others speak
                    if not self._handle_one(sock, ups, router, dealers, replies):
                        break

    def _handle_one(self, sock: zmq.Socket, ups: list[zmq.Socket], router: zmq.Socket,
                    dealers: Mapping[str, zmq.Socket], replies: Mapping[int, zmq.Socket]) -> bool:
        """One message from `sock`, inside its own error boundary. False when none waited."""
        try:
            if sock is router:
                return self._from_client(router, dealers)
            if id(sock) in replies:
                return self._from_replay(sock, router)
            return self._from_daemon(sock, ups.index(sock))
        except (zmq.ContextTerminated, MemoryError):
            raise
        except Exception as exc:
            self.errors += 1
            if self.metrics is not None:
                self.metrics.errors.inc()
            log.warning("relay: a message could not be handled (%s: %s); it is dropped",
                        type(exc).__name__, str(exc)[:200], exc_info=self.errors == 1)
            return True

    # ---- alerts --------------------------------------------------------------------------------
    def _drop(self, reason: str) -> None:
        self.dropped += 1
        if self.metrics is not None:
            self.metrics.dropped.labels(reason=reason).inc()

    def _from_daemon(self, sub: zmq.Socket, upstream: int) -> bool:
        got = recv_bounded(sub, 2, MAX_DAEMON_MESSAGE_BYTES)
        if got is None:
            return False
        if not got.ok:
            self._drop("too_large")
            return True
        frames = got.frames
        try:
            heartbeat = bool(frames) and frames[0] == b"heartbeat"
            msg = parse_heartbeat(frames) if heartbeat else parse_alert(frames)
        except AlertFormatError:
            self._drop("malformed" if frames and frames[0][:6] in (b"alert.", b"heartb")
                       else "topic")
            return True
        name = self._claim(msg.get("instance"), upstream, msg.get("journal_id"))
        if name is None and msg.get("instance") is not None:
            self._drop("instances")              # more names than any fleet has
            return True
        if name != msg.get("instance"):
            body = json.dumps({**msg, "instance": name}, separators=(",", ":"),
                              ensure_ascii=False).encode("utf-8")
            frames = [frames[0], body]
        assert self._xpub is not None
        try:
            self._xpub.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:                # never with a plain XPUB; kept for safety
            self._drop("subscriber_full")
            return True
        if self.metrics is not None:
            self.metrics.forwarded.labels(kind="heartbeat" if heartbeat else "alert").inc()
        return True

    def _claim(self, instance: Optional[str], upstream: int,
               journal_id: Optional[str] = None) -> Optional[str]:
        """The name a message of `instance` (and `journal_id`) from connection `upstream` is
        forwarded under: its own when the connection owns it (or may take it), else
        `alias_name`; None when too many names are tracked (the caller drops it)."""
        now = self._clock()
        known = self._journals.get(instance) if instance is not None else None
        # A connection that sent this name with another journal id than the one its replay
        # endpoint serves is not the daemon (a forger copying the id as well), until that
        # journal id changes.
        verified = known is not None and journal_id == known \
            and (instance, upstream) not in self._tainted
        if known is not None and journal_id is not None and journal_id != known:
            self._tainted.add((instance, upstream))
            self._probe(instance)                 # the journal may have changed: ask again
        owner = self._owners.get(instance)
        if owner is not None and owner.upstream != upstream:
            silent = now - owner.last_seen > self.cfg.owner_timeout_s
            if not silent and not (verified and not owner.verified):
                return self._clash(instance, upstream, owner, now)
            log.warning("relay: instance %s now arrives from %s (%s)", printable(instance),
                        self.cfg.daemons[upstream],
                        "its replay endpoint serves that connection's journal" if verified else
                        f"{self.cfg.daemons[owner.upstream]} was silent for "
                        f"{now - owner.last_seen:.0f} s")
        elif owner is None:
            if len(self._owners) >= MAX_INSTANCES:
                self._forget(now)
            if len(self._owners) >= MAX_INSTANCES:
                return None
            log.info("relay: instance %s arrives from %s", printable(instance),
                     self.cfg.daemons[upstream])
        self._owners[instance] = _Owner(upstream, now, verified or (
            owner is not None and owner.upstream == upstream and owner.verified
            and journal_id == known))
        return instance

    def _probe(self, instance: str) -> None:
        """Ask `instance`'s replay endpoint which journal it serves (at most once a second)."""
        sock = self._probes.get(instance)
        now = self._clock()
        if sock is None or now - self._probed.get(instance, -PROBE_EVERY_S) < PROBE_EVERY_S:
            return
        try:
            sock.send(json.dumps({"since": 0, "limit": 0, "instance": instance,
                                  "id": "relay-probe"}).encode(), zmq.NOBLOCK)
            self._probed[instance] = now
        except zmq.Again:
            pass                                  # not connected yet: asked at the next turn

    def _probe_reply(self, sock: zmq.Socket, instance: str) -> None:
        got = recv_bounded(sock, 2, MAX_REPLY_BYTES)
        if got is None or not got.ok or not got.frames:
            return
        try:
            reply = json.loads(got.frames[-1].decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return
        if isinstance(reply, dict) and reply.get("instance") in (None, instance) \
                and isinstance(reply.get("journal_id"), str):
            if self._journals.get(instance) != reply["journal_id"]:
                log.info("relay: instance %s: its replay endpoint serves journal %s",
                         printable(instance), printable(reply["journal_id"]))
                self._tainted = {k for k in self._tainted if k[0] != instance}
            self._journals[instance] = reply["journal_id"]

    def _clash(self, instance: Optional[str], upstream: int, owner: _Owner,
               now: float) -> str:
        alias = alias_name(instance, upstream + 1)
        key = (instance, upstream)
        last = self._clashing.get(key)
        if last is None or now - last > self.cfg.owner_timeout_s:
            # (No punctuation right after an endpoint: log masking would take it for a URL
            # cut inside its password.)
            log.error("relay: instance %s arrives from two daemons, %s (first) and %s (second): "
                      "two daemons have the same instance name (hosts cloned from one image with "
                      "`instance: null`?) or one forges it; give each daemon its own `instance:`. "
                      "Until then the messages from %s are forwarded as instance %s (no replay "
                      "for it), and those from %s stay %s", printable(instance),
                      self.cfg.daemons[owner.upstream], self.cfg.daemons[upstream],
                      self.cfg.daemons[upstream], alias, self.cfg.daemons[owner.upstream],
                      printable(instance))
        self._clashing[key] = now
        self.conflicts += 1
        if self.metrics is not None:
            self.metrics.conflicts.inc()
            self.metrics.conflicting.set(len({k[0] for k, t in self._clashing.items()
                                              if now - t <= self.cfg.owner_timeout_s}))
        return alias

    def _forget(self, now: float) -> None:
        """Drop instance names silent for long (bounded memory under invented names)."""
        stale = [k for k, o in self._owners.items()
                 if now - o.last_seen > 10 * self.cfg.owner_timeout_s]
        for k in stale:
            del self._owners[k]
        for k in [k for k, t in self._clashing.items()
                  if now - t > 10 * self.cfg.owner_timeout_s]:
            del self._clashing[k]
        self._tainted = {k for k in self._tainted if k[0] in self._owners}

    def journals(self) -> dict[str, str]:
        """Instance -> the journal id its replay endpoint says it serves (any thread; a copy)."""
        return dict(self._journals)

    def aliases(self) -> dict[str, str]:
        """Alias now in use -> the instance it stands for (any thread; a snapshot)."""
        now = self._clock()
        return {alias_name(name, up + 1): name or "" for (name, up), t in
                list(self._clashing.items()) if now - t <= self.cfg.owner_timeout_s}

    # ---- replay --------------------------------------------------------------------------------
    def _reply(self, router: zmq.Socket, envelope: list[bytes], reply: dict[str, Any]) -> None:
        result = "refused" if "error" in reply else "answered"
        self.refused_requests += result == "refused"
        if self.metrics is not None:
            self.metrics.replay.labels(result=result).inc()
        try:
            router.send_multipart([*envelope, json.dumps(reply).encode()], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("relay: reply not sent: %s", exc)

    def _from_client(self, router: zmq.Socket, dealers: Mapping[str, zmq.Socket]) -> bool:
        got = recv_bounded(router, MAX_ENVELOPE_FRAMES + 1, MAX_MESSAGE_BYTES)
        if got is None:
            return False
        frames = got.frames
        if not got.ok:
            envelope = frames[:2] if frames[1:2] == [b""] else frames[:1]
            self._reply(router, envelope, {
                "schema": REPLAY_SCHEMA, "relay": True, "id": None,
                "error": f"bad replay request: {got.parts} parts and {got.size} bytes (at most "
                         f"{MAX_ENVELOPE_FRAMES} parts after the identity, {MAX_MESSAGE_BYTES} "
                         f"bytes)"})
            return True
        if len(frames) < 2:
            return True
        envelope, body = frames[:-1], frames[-1]
        req, problem = parse_request(body)
        reply: dict[str, Any] = {"schema": REPLAY_SCHEMA, "relay": True, "id": _echo_id(req)}
        if problem is not None:
            reply["error"] = problem
        elif req.get("instance") is None:
            reply["instances"] = sorted(dealers)
        elif req["instance"] not in dealers:
            aliases = self.aliases()
            if req["instance"] in aliases:
                reply["error"] = (f"instance {req['instance']!r} is a second daemon calling "
                                  f"itself {aliases[req['instance']]!r}: the relay has no replay "
                                  f"endpoint for it; give each daemon its own `instance:`")
            else:
                reply["error"] = (f"unknown instance {req['instance']!r} (this relay knows: "
                                  f"{', '.join(sorted(dealers)) or 'none'})")
        else:
            if self._forward(dealers[req["instance"]], envelope, body):
                return True
            if len(self._waiting) < MAX_WAITING:
                self._waiting.append((self._clock() + CONNECT_WAIT_S, req["instance"], envelope,
                                      body))
                return True
            reply["error"] = f"instance {req['instance']!r} is not connected"
        self._reply(router, envelope, reply)
        return True

    def _forward(self, dealer: zmq.Socket, envelope: list[bytes], body: bytes) -> bool:
        """Send a request on to its daemon; False when that daemon is not connected."""
        try:
            dealer.send_multipart([*envelope, body], zmq.NOBLOCK)
        except zmq.Again:
            return False
        self.forwarded_requests += 1
        if self.metrics is not None:
            self.metrics.replay.labels(result="forwarded").inc()
        return True

    def _retry_waiting(self, router: zmq.Socket, dealers: Mapping[str, zmq.Socket]) -> None:
        """Requests waiting for their daemon's connection: sent, or refused once too old."""
        now = self._clock()
        for _ in range(len(self._waiting)):
            deadline, instance, envelope, body = self._waiting.popleft()
            if self._forward(dealers[instance], envelope, body):
                continue
            if now < deadline:
                self._waiting.append((deadline, instance, envelope, body))
                continue
            req, _ = parse_request(body)
            self._reply(router, envelope, {"schema": REPLAY_SCHEMA, "relay": True,
                                           "id": _echo_id(req),
                                           "error": f"instance {instance!r} is not connected"})

    def _from_replay(self, dealer: zmq.Socket, router: zmq.Socket) -> bool:
        got = recv_bounded(dealer, MAX_ENVELOPE_FRAMES + 1, MAX_REPLY_BYTES)
        if got is None:
            return False
        if not got.ok or len(got.frames) < 2:
            self._drop("too_large" if not got.ok else "malformed")
            return True                          # a reply must carry the client's envelope
        try:
            router.send_multipart(got.frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:              # the client is gone
            log.debug("relay: reply not routed: %s", exc)
        return True


def parse_request(body: bytes) -> tuple[dict, Optional[str]]:
    """A replay request's JSON object and None, or ({} or the object, what is wrong with it):
    at most MAX_REQUEST_BYTES of UTF-8 JSON, an object, `instance` absent, null or a valid
    instance name, `since` and `limit` absent or integers in [0, 2**63-1]."""
    if len(body) > MAX_REQUEST_BYTES:
        return {}, f"bad replay request: {len(body)} bytes (at most {MAX_REQUEST_BYTES})"
    try:
        req = load_request(body)
    except JsonTooDeep:
        return {}, "bad replay request: JSON nested too deeply"
    except ValueError:
        return {}, "bad replay request: expected a JSON object"
    if not isinstance(req, dict):
        return {}, "bad replay request: expected a JSON object"
    instance = req.get("instance")
    if instance is not None and not is_instance(instance):
        return req, ("bad replay request: instance must be a string of 1 to 64 of A-Z a-z 0-9 "
                     f"_ -, got {printable(repr(instance), 40)}")
    for name in ("since", "limit"):
        value = req.get(name)
        if value is not None and not (is_int(value) and 0 <= value <= SQLITE_MAX_INT):
            return req, f"bad replay request: {name} must be an integer in [0, 2**63-1]"
    return req, None


def _echo_id(req: Any) -> Any:
    value = req.get("id") if isinstance(req, dict) else None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None

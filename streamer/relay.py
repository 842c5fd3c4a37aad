"""`vigil relay`: one alert stream for a fleet of daemons (issue 15).

A site shards its cameras across several `vigil serve` daemons (one per GPU or host); each keeps
its own journal and replay socket. The relay gives subscribers one place to connect to:

    daemon gpu1 PUB ─┐                        ┌─ subscriber
    daemon gpu2 PUB ─┼─► XSUB ══ zmq proxy ══ XPUB ─┼─ subscriber
    daemon gpu3 PUB ─┘   (connects)          (binds) └─ ...

    subscriber DEALER ─► replay ROUTER ─► DEALER per instance ─► its daemon's replay

Alerts. `zmq.proxy_steerable(XSUB, XPUB, None, control)` forwards messages downstream and
subscriptions upstream (ZeroMQ's own forwarding; nothing is parsed or copied in Python), and a
`TERMINATE` on the control socket stops it. The relay keeps no state about alerts: each daemon's
alerts carry its `instance` and count `seq` per instance, so a subscriber tracks and fills gaps
per instance. Messages the relay does not forward (it was down, a queue was full) are recovered
by the subscriber from the named daemon's journal, through the replay forwarder below.

The XPUB drops (it is not NODROP) what a subscriber too slow for its `hwm` cannot take: a
stuck subscriber must not stall the others or the daemons; it sees the seq gap and replays.

Replay. Replay stays with each daemon (its journal never leaves its host). The relay's ROUTER
takes a `vigil.replay/1` request naming an instance, `{"since": N, "instance": "gpu1", ...}`,
and forwards it unchanged (client envelope included) on a DEALER connected to that instance's
replay endpoint; the daemon's reply comes back on the DEALER with the envelope and is routed to
the client. The relay answers itself, with `{"schema": "vigil.replay/1", "id": ..., "relay": true,
...}`:
  - a request without `instance`: `"instances": [every configured name]` (how a subscriber
    learns it is talking to a relay, and which daemons are behind it);
  - an unknown instance, an instance whose daemon is not connected (the DEALER is `IMMEDIATE`:
    nothing queues for a daemon that is down), or a request that is not a JSON object: `"error"`.
Request size limits are the daemon's (`MAX_MESSAGE_BYTES`, `MAX_REQUEST_BYTES`).

CURVE (optional, each side on its own): `frontend_curve` makes the XPUB and the replay ROUTER
CURVE servers admitting the keys in an authorised-clients directory (`vigil keys generate`'s
layout); `backend_curve` makes the XSUB and DEALERs CURVE clients of the daemons (their
`server.key` and a client key the daemons authorise).

Threads. `Relay.start()` runs the proxy in one thread and the replay forwarder in another; each
owns its sockets (created, used and closed in that thread). `stop()` ends both within a second.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from detector.errors import ConfigError, VigilError

from .curve_keys import load_client_keys, load_server_keys
from .protocol import REPLAY_SCHEMA, is_instance

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024     # as the daemon's replay socket: no request is larger
MAX_REQUEST_BYTES = 4096
MAX_ENVELOPE_FRAMES = 3           # client identity, REQ's empty delimiter, body


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
        daemons: each daemon's alert (PUB) endpoint the XSUB connects to.
        replay: instance name -> that daemon's replay endpoint.
        endpoint: where subscribers connect for alerts (XPUB bind).
        replay_endpoint: where subscribers send replay requests (ROUTER bind).
        hwm: messages queued per peer on each side of the proxy.
        frontend_curve, backend_curve: optional CURVE on either side.
    """
    daemons: list[str]
    replay: dict[str, str] = field(default_factory=dict)
    endpoint: str = "tcp://127.0.0.1:5567"
    replay_endpoint: str = "tcp://127.0.0.1:5568"
    hwm: int = 10000
    frontend_curve: Optional[RelayCurveServer] = None
    backend_curve: Optional[RelayCurveClient] = None

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


class Relay:
    """The XSUB/XPUB proxy and the replay forwarder of a fleet.

    Args:
        cfg: a RelayConfig.
        context: a zmq.Context; None = a private one, terminated by `stop()`.
    """

    def __init__(self, cfg: RelayConfig, context: Optional[zmq.Context] = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self._own_context = context is None
        self.context = context if context is not None else zmq.Context()
        self._auth: Optional[ThreadAuthenticator] = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._control_addr = f"inproc://vigil-relay-control-{uuid.uuid4().hex}"
        self._control: Optional[zmq.Socket] = None
        self._threads: list[threading.Thread] = []
        self._frontend_keys: Optional[tuple[bytes, bytes]] = None
        self._backend_keys: Optional[tuple[bytes, bytes, bytes]] = None
        self.endpoint = cfg.endpoint
        self.replay_endpoint = cfg.replay_endpoint
        self.forwarded_requests = 0
        self.refused_requests = 0

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> "Relay":
        """Bind and connect everything, then return (RelayError if a socket cannot be set up)."""
        try:
            self._frontend_keys = self._server_keys()
            self._backend_keys = self._client_keys()
            self._control = self.context.socket(zmq.PAIR)
            self._control.bind(self._control_addr)
            for target, name in ((self._proxy_loop, "vigil-relay-proxy"),
                                 (self._replay_loop, "vigil-relay-replay")):
                self._ready.clear()
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
                if not self._ready.wait(timeout) or self._error is not None:
                    raise RelayError(f"relay: {self._error or 'a thread did not start'}")
        except BaseException:
            self.stop()
            raise
        log.info("relay: alerts on %s (from %d daemons); replay on %s for %s%s", self.endpoint,
                 len(self.cfg.daemons), self.replay_endpoint,
                 " ".join(sorted(self.cfg.replay)) or "no instance",
                 " (CURVE)" if self._frontend_keys else "")
        return self

    def stop(self) -> None:
        """Stop both threads (within a second each) and close everything."""
        self._stop.set()
        if self._control is not None:
            try:
                self._control.send(b"TERMINATE", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        for thread in self._threads:
            thread.join(2.0)
            if thread.is_alive():
                log.warning("relay: thread %s did not stop", thread.name)
        if self._control is not None:
            self._control.close(linger=0)
            self._control = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context and not any(t.is_alive() for t in self._threads):
            self.context.term()
        self._threads = []

    def running(self) -> bool:
        """Both threads run (the proxy or the forwarder failing ends the relay's usefulness)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def __enter__(self) -> "Relay":
        return self if self._threads else self.start()

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

    def _socket(self, kind: int, side: str) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
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

    def _setup_failed(self, exc: BaseException, sockets: list[zmq.Socket]) -> None:
        """A thread could not set its sockets up: close them and let `start` raise `exc`."""
        self._error = exc
        self._ready.set()
        for sock in sockets:
            sock.close(linger=0)

    # ---- the proxy (own thread) ----------------------------------------------------------------
    def _proxy_loop(self) -> None:
        sockets: list[zmq.Socket] = []
        try:
            xsub = self._socket(zmq.XSUB, "back")
            xpub = self._socket(zmq.XPUB, "front")
            control = self.context.socket(zmq.PAIR)
            sockets = [xsub, xpub, control]
            xsub.setsockopt(zmq.RCVHWM, self.cfg.hwm)
            xpub.setsockopt(zmq.SNDHWM, self.cfg.hwm)
            for endpoint in self.cfg.daemons:
                xsub.connect(endpoint)
            self.endpoint = self._bind(xpub, self.cfg.endpoint, "--endpoint")
            control.connect(self._control_addr)
        except BaseException as exc:
            self._setup_failed(exc, sockets)
            return
        self._ready.set()
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError as exc:
            if not self._stop.is_set():
                log.error("relay: the proxy stopped: %s", exc)
        finally:
            for sock in sockets:
                sock.close(linger=0)
            log.debug("relay: proxy stopped")

    # ---- the replay forwarder (own thread) -----------------------------------------------------
    def _replay_loop(self) -> None:
        sockets: list[zmq.Socket] = []
        try:
            router = self._socket(zmq.ROUTER, "front")
            sockets.append(router)
            router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            router.setsockopt(zmq.RCVHWM, 1000)
            self.replay_endpoint = self._bind(router, self.cfg.replay_endpoint,
                                              "--replay-endpoint")
            dealers: dict[str, zmq.Socket] = {}
            for name, endpoint in self.cfg.replay.items():
                dealer = self._socket(zmq.DEALER, "back")
                sockets.append(dealer)
                dealer.setsockopt(zmq.IMMEDIATE, 1)      # nothing queues for a daemon that is down
                dealer.connect(endpoint)
                dealers[name] = dealer
        except BaseException as exc:
            self._setup_failed(exc, sockets)
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        for dealer in dealers.values():
            poller.register(dealer, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(100):
                    if sock is router:
                        self._forward_request(router, dealers)
                    else:
                        self._forward_reply(sock, router)
        except zmq.ContextTerminated:
            pass
        except Exception:
            log.exception("relay: the replay forwarder failed")
        finally:
            for sock in sockets:
                sock.close(linger=0)
            log.debug("relay: replay forwarder stopped")

    @staticmethod
    def _receive(sock: zmq.Socket) -> Optional[list[bytes]]:
        """One message (extra frames beyond MAX_ENVELOPE_FRAMES + 1 dropped), or None."""
        frames: list[bytes] = []
        try:
            while True:
                frame = sock.recv(zmq.NOBLOCK)
                if len(frames) <= MAX_ENVELOPE_FRAMES:
                    frames.append(frame)
                if not sock.getsockopt(zmq.RCVMORE):
                    return frames
        except zmq.Again:
            return None

    def _forward_request(self, router: zmq.Socket, dealers: Mapping[str, zmq.Socket]) -> None:
        frames = self._receive(router)
        if frames is None or len(frames) < 2:
            return
        envelope, body = frames[:-1], frames[-1]
        req: Any = None
        if len(body) <= MAX_REQUEST_BYTES:
            try:
                req = json.loads(body.decode("utf-8"))
            except (ValueError, RecursionError):
                req = None
        reply: dict[str, Any] = {"schema": REPLAY_SCHEMA, "relay": True,
                                 "id": _echo_id(req)}
        if not isinstance(req, dict):
            reply["error"] = "bad replay request: expected a JSON object of at most 4096 bytes"
        elif req.get("instance") is None:
            reply["instances"] = sorted(dealers)
        elif req["instance"] not in dealers:
            reply["error"] = (f"unknown instance {str(req['instance'])[:64]!r} (this relay "
                              f"knows: {', '.join(sorted(dealers)) or 'none'})")
        else:
            try:
                dealers[req["instance"]].send_multipart([*envelope, body], zmq.NOBLOCK)
                self.forwarded_requests += 1
                return
            except zmq.Again:
                reply["error"] = f"instance {req['instance']!r} is not connected"
        self.refused_requests += "error" in reply
        try:
            router.send_multipart([*envelope, json.dumps(reply).encode()], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("relay: reply not sent: %s", exc)

    def _forward_reply(self, dealer: zmq.Socket, router: zmq.Socket) -> None:
        frames = self._receive(dealer)
        if frames is None or len(frames) < 2:
            return                        # a reply must carry the client's envelope
        try:
            router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:      # the client is gone
            log.debug("relay: reply not routed: %s", exc)


def _echo_id(req: Any) -> Any:
    value = req.get("id") if isinstance(req, dict) else None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None

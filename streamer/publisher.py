"""Alerts on the wire: a ZeroMQ publisher, a replay server over the journal, heartbeats, CURVE.

Publishing. Multipart `[b"alert.<camera>.<label>", <vigil.alert/2 JSON, UTF-8>]` on an XPUB
socket (a PUB that also reports subscriptions). Every message must already be in the journal
(`Journal.append`, or `emit` which does both), so nothing a subscriber could miss is lost. Sends
never block the daemon: `zmq.NOBLOCK`, and `XPUB_NODROP` so that a full high-water mark surfaces
as `zmq.Again`, counted in `vigil_publish_dropped_total`, instead of a silent per-subscriber drop.
The price of NODROP: while one subscriber's queue is full, the message goes to nobody; every
subscriber recovers it from the replay socket (seq gaps and heartbeats reveal it), which is the
point of the journal. ZMTP heartbeats (`HEARTBEAT_IVL`/`HEARTBEAT_TIMEOUT`) drop dead peers so
their queues do not hold messages forever.

Heartbeats. Topic `heartbeat`, JSON `{"schema": "vigil.heartbeat/2", "seq": <last alert seq>,
"journal_id": <id of the journal seq counts in>, "uptime_s": ..., "sent_at": ..., **payload}` (the
daemon adds `"cameras": {name: state}` and `"journal": {"id", "writable", "held", "error"}`);
`seq` includes alerts the socket refused, so a subscriber that sees it ahead of what it holds
replays. A `journal_id` different from the one a client holds means the journal was replaced
and seq started again: the client must not compare seqs across journal ids.

Replay protocol (ROUTER socket at `replay_endpoint`; clients use DEALER or REQ). One request, one
reply, each a single JSON frame (a REQ client's empty delimiter frame is echoed back):

    request: {"since": N, "limit": L (optional, <= page size), "id": any (optional, echoed)}
             N and L are integers in [0, 2**63 - 1]
    reply:   {"schema": "vigil.replay/1", "id": ..., "alerts": [every message with seq > N,
              oldest first, at most L or the page size], "last_seq": <highest seq assigned>,
              "more": true when messages after the last one returned exist,
              "journal_id": <the journal answering; added in Vigil's alert schema 2>}
    error:   {"schema": "vigil.replay/1", "id": ..., "error": "<what was wrong>"}

Every request gets a reply or an error, whatever its bytes: a request body over
`MAX_REQUEST_BYTES` (4 KiB; a real one is under 100 bytes), bad UTF-8, bad or too deeply nested
JSON, out-of-range numbers, a request of more than `MAX_REQUEST_FRAMES` parts or
`MAX_MESSAGE_BYTES` (64 KiB) in all, and an unreadable journal are all error replies. Beyond
that, the socket's `ZMQ_MAXMSGSIZE` (`MAX_MESSAGE_BYTES`) makes libzmq drop the connection of a
peer that announces a larger frame before reading it (that peer gets no reply: its connection
is gone), and a message of many parts is read without copying and its memory returned
(`streamer.wire.limits`); `RCVHWM` bounds the messages queued.

Subscriptions. The alert socket takes subscriptions of at most 1 KiB (a larger one drops
that subscriber's connection unread), reads the XPUB's notices at every event-loop turn (`tick`)
and is re-bound on the same endpoint if more than `MAX_TOPICS` distinct topics are ever live at
once (`streamer.wire.limits.SubscriptionGuard`): what an XPUB keeps per subscription is bounded. The
replay server cannot die of a request (each is answered inside its own error boundary); if its
loop fails for any other reason it is restarted (`vigil_replay_restarts_total`, one log line
each), and if its thread ends anyway `replay_problem()` says so: the daemon then reports itself
unhealthy (log line, `vigil_replay_up` 0, no more watchdog pings: systemd restarts it).

A client pages by asking again with `since` = the last seq received while `more` is true; pages
keep the server stateless and flow-controlled (a ROUTER would silently drop a long stream sent
to a slow peer). `{"since": 0, "limit": 0}` just asks for `last_seq`.

Threads. ZeroMQ sockets are not thread-safe: the PUB socket is used only by the thread that
calls `publish`/`heartbeat`/`emit` (the daemon's event thread). The replay thread owns the ROUTER
socket and its own `Journal` connection. `close()` stops the replay thread within a second.

Identity (fleets, issue 15). With `instance` set (the daemon passes its config's `instance:`),
every alert and heartbeat sent carries `"instance": <name>`, and every replay reply carries it
both at its top level and on each replayed alert (the journal stores alerts without it: the
stamp is added on the way out, so renaming an instance needs no journal change). A request that
names an instance (`"instance": "gpu1"`, as the relay forwards them) must name this one: any
other name gets an error reply, so a relay with a wrong endpoint map cannot serve one daemon's
alerts as another's.

CURVE (when `curve` is given): both sockets are CURVE servers with the server's secret key, and a
`zmq.auth` ThreadAuthenticator admits only clients whose public key is in the authorised clients
directory. Keys are read at start-up: restart (or reload) the daemon after adding a client.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from detector.errors import ConfigError, VigilError

from .journal import Journal, JournalError
from .curve_keys import load_server_keys
from .protocol import HEARTBEAT_SCHEMA, REPLAY_SCHEMA, iso_utc, load_request
from .wire.limits import SubscriptionGuard, bound_frames, rebind, recv_bounded

log = logging.getLogger(__name__)

PAGE_SIZE = 500
# Replay requests: bodies answered, frames libzmq accepts at all, frames queued.
MAX_REQUEST_BYTES = 4096
MAX_MESSAGE_BYTES = 64 * 1024
REPLAY_RCVHWM = 100
MAX_REQUEST_FRAMES = 4            # identity, REQ's empty delimiter, body (+1 spare)
SQLITE_MAX_INT = 2 ** 63 - 1
# Replay loop restarts back off from this to REPLAY_BACKOFF_MAX_S (seconds).
REPLAY_BACKOFF_S = 0.1
REPLAY_BACKOFF_MAX_S = 5.0
_KEY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class RefusedRequest(list):
    """The envelope of a replay request refused for its size (frames, the body's place empty),
    with `problem`, the error to reply."""

    def __init__(self, frames: list[bytes], problem: str) -> None:
        super().__init__(frames)
        self.problem = problem


class PublishError(VigilError):
    """An alert socket cannot be set up (address in use, bad keys)."""


def _curve_paths(curve: Any) -> tuple[Path, Path]:
    """(server secret key file, authorised clients dir) from a CurveConfig or a mapping."""
    if isinstance(curve, Mapping):
        return Path(curve["server_secret_key"]), Path(curve["authorized_clients"])
    return Path(curve.server_secret_key), Path(curve.authorized_clients)


class AlertPublisher:
    """The PUB socket, the replay server and (optionally) CURVE authentication.

    Args:
        endpoint: where to bind the PUB socket, e.g. `tcp://127.0.0.1:5557` (`:*` = any port;
            read the bound one from `.endpoint`).
        replay_endpoint: where to bind the replay ROUTER socket.
        journal_path: the journal file the replay thread reads (and `emit` writes).
        metrics: optional `VigilMetrics` (alerts_total, publish_dropped_total, alert latency).
        sndhwm: messages queued per subscriber before sends are refused.
        curve: None, or an object/mapping with `server_secret_key` and `authorized_clients`.
        context: a zmq.Context to use; None = a private one, terminated by `close()`.
        heartbeat_ivl_s: ZMTP heartbeat interval; a peer silent for 3 intervals is dropped.
        page_size: most alerts per replay reply.
        last_seq, journal_id: where numbering stands (the daemon's `JournalWriter` knows, even on
            a full disk); None = read them from the journal now.
        instance: this daemon's name in a fleet, stamped on what it sends; None = no stamp.
    Raises:
        PublishError: an endpoint cannot be bound. ConfigError: unreadable CURVE keys.
        JournalError: the journal cannot be opened.
    """

    def __init__(self, endpoint: str, replay_endpoint: str, journal_path: str | Path,
                 metrics: Any = None, sndhwm: int = 1000, curve: Any = None,
                 context: Optional[zmq.Context] = None, heartbeat_ivl_s: float = 2.0,
                 page_size: int = PAGE_SIZE, last_seq: Optional[int] = None,
                 journal_id: Optional[str] = None, instance: Optional[str] = None) -> None:
        self.instance = instance
        self.journal_path = Path(journal_path)
        self.metrics = metrics
        self.page_size = max(int(page_size), 1)
        self._own_context = context is None
        self.context = context if context is not None else zmq.Context()
        self._auth: Optional[ThreadAuthenticator] = None
        self._pub: Optional[zmq.Socket] = None
        self._router: Optional[zmq.Socket] = None
        self._writer: Optional[Journal] = None
        self._writer_thread: Optional[int] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started = time.monotonic()
        self._closed = False
        # Messages refused in a row by a full high-water mark: one log line per episode, not one
        # per message (a stuck subscriber means hundreds a minute; the metric counts them all).
        self._refused = 0
        self._replay_restarts = 0
        self._replay_errors = 0
        self.oversized_requests = 0
        self._guard = SubscriptionGuard("alerts.endpoint", self._remake_pub)
        try:
            if last_seq is None or journal_id is None:
                # Fail here, in the caller's thread, if the journal is unusable.
                with Journal(self.journal_path) as journal:
                    last_seq, journal_id = journal.last_seq(), journal.journal_id
            self._last_seq, self.journal_id = int(last_seq), str(journal_id)
            keys = self._setup_curve(curve) if curve is not None else None
            self._pub_options = (keys, heartbeat_ivl_s, int(sndhwm))
            self._pub = self._pub_socket()
            self.endpoint = self._bind(self._pub, endpoint, "alerts.endpoint")
            self._router = self._socket(zmq.ROUTER, keys, heartbeat_ivl_s)
            # A request is tiny: a larger frame closes the peer's connection before it is read.
            bound_frames(self._router, MAX_MESSAGE_BYTES)
            self._router.setsockopt(zmq.RCVHWM, REPLAY_RCVHWM)
            self.replay_endpoint = self._bind(self._router, replay_endpoint,
                                              "alerts.replay_endpoint")
        except BaseException:
            self.close()
            raise
        # The ROUTER was created here so bind errors surface in the caller; from now on only the
        # replay thread touches it (thread start is the memory barrier ZeroMQ asks for).
        self._thread = threading.Thread(target=self._replay_loop, name="vigil-replay",
                                        daemon=True)
        self._thread.start()
        log.info("alerts on %s, replay on %s%s", self.endpoint, self.replay_endpoint,
                 " (CURVE)" if keys else "")

    # ---- set-up --------------------------------------------------------------------------------
    def _setup_curve(self, curve: Any) -> tuple[bytes, bytes]:
        secret_file, clients_dir = _curve_paths(curve)
        keys = load_server_keys(secret_file)
        if not clients_dir.is_dir():
            raise ConfigError(f"alerts.curve.authorized_clients: not a directory: {clients_dir}")
        self._auth = ThreadAuthenticator(self.context, log=logging.getLogger("vigil.zmq.auth"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(clients_dir))
        return keys

    def _socket(self, kind: int, keys: Optional[tuple[bytes, bytes]],
                heartbeat_ivl_s: float) -> zmq.Socket:
        sock = self.context.socket(kind)
        # A stopping daemon must not hang on undeliverable messages; they are in the journal.
        sock.setsockopt(zmq.LINGER, 100)
        ivl = max(int(heartbeat_ivl_s * 1000), 100)
        sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * ivl)
        if keys is not None:
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = keys
        return sock

    def _pub_socket(self) -> zmq.Socket:
        keys, heartbeat_ivl_s, sndhwm = self._pub_options
        pub = self._socket(zmq.XPUB, keys, heartbeat_ivl_s)
        pub.setsockopt(zmq.SNDHWM, sndhwm)
        # Refuse (EAGAIN) instead of silently dropping at the high-water mark: see docstring.
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        SubscriptionGuard.configure(pub)
        return pub

    def _remake_pub(self) -> None:
        """Close the alert socket and bind a new one on the same endpoint (subscriptions without
        bound: see `SubscriptionGuard`); subscribers reconnect by themselves."""
        assert self._pub is not None
        self._pub = rebind(self._pub, self._pub_socket, self.endpoint)

    @staticmethod
    def _bind(sock: zmq.Socket, endpoint: str, key: str) -> str:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise PublishError(f"{key}: cannot bind {endpoint}: {exc}") from None
        return sock.getsockopt(zmq.LAST_ENDPOINT).decode()

    # ---- publishing (caller's thread) ----------------------------------------------------------
    def publish(self, msg: dict) -> bool:
        """Send one journalled alert. Never blocks.

        Args:
            msg: a final message from `Journal.append` (it must carry `seq`).
        Returns:
            True if sent, False if the high-water mark refused it (counted as dropped; it stays
            in the journal for replay).
        """
        if "seq" not in msg:
            raise ValueError("publish() takes a journalled message: call Journal.append first")
        if msg.get("journal_id") and msg["journal_id"] != self.journal_id:
            self._last_seq = int(msg["seq"])        # a new journal: its own numbering
            self.journal_id = str(msg["journal_id"])
        self._last_seq = max(self._last_seq, int(msg["seq"]))
        topic = f"alert.{msg['camera']}.{msg['label']}".encode()
        if self.instance is not None:
            msg = {**msg, "instance": self.instance}
        if not self._send(topic, msg):
            return False
        if self.metrics is not None:
            self.metrics.alerts.labels(camera=msg["camera"], label=msg["label"],
                                       type=msg["type"]).inc()
            if msg["type"] == "start" and msg.get("latency_s") is not None:
                self.metrics.alert_latency.observe(float(msg["latency_s"]))
        return True

    def emit(self, msg: dict) -> dict:
        """Journal then publish (the journal connection is opened in the calling thread).

        Returns:
            The final message (with seq, published_at, latency_s), sent or not.
        """
        if self._writer is None:
            self._writer = Journal(self.journal_path)
            self._writer_thread = threading.get_ident()
        elif self._writer_thread != threading.get_ident():
            raise RuntimeError("emit() must always be called from the same thread")
        final = self._writer.append(msg)
        self.publish(final)
        return final

    def heartbeat(self, payload: Optional[dict] = None) -> bool:
        """Send a heartbeat with the last seq, the uptime and `payload` (e.g. camera states).

        Returns:
            True if sent, False if refused by the high-water mark.
        """
        msg = {"schema": HEARTBEAT_SCHEMA, "seq": self._last_seq, "journal_id": self.journal_id,
               **({"instance": self.instance} if self.instance is not None else {}),
               "uptime_s": round(time.monotonic() - self._started, 1),
               "sent_at": iso_utc(time.time())}
        msg.update(payload or {})
        return self._send(b"heartbeat", msg)

    def follow_journal(self, journal_id: str, last_seq: int) -> None:
        """Number heartbeats in `journal_id` up to `last_seq` (the daemon's journal writer may
        start a new journal, or hold alerts, before the next alert is published)."""
        if journal_id != self.journal_id:
            self.journal_id, self._last_seq = journal_id, int(last_seq)
        else:
            self._last_seq = max(self._last_seq, int(last_seq))

    @property
    def last_seq(self) -> int:
        """The highest seq handed to `publish` (or in the journal at start-up)."""
        return self._last_seq

    def _send(self, topic: bytes, msg: dict) -> bool:
        assert self._pub is not None
        self._drain_subscriptions()
        body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        try:
            self._pub.send_multipart([topic, body], flags=zmq.NOBLOCK)
        except zmq.Again:
            if self.metrics is not None:
                self.metrics.publish_dropped.inc()
            if self._refused == 0:
                log.warning("alert socket full (a subscriber is not reading): %s seq %s not sent, "
                            "it stays in the journal; until a send succeeds again refusals are "
                            "only counted (vigil_publish_dropped_total)", topic.decode(),
                            msg.get("seq"))
            self._refused += 1
            return False
        if self._refused:
            log.info("alert socket accepting again after %d refused message(s) (they are in the "
                     "journal for replay)", self._refused)
            self._refused = 0
        return True

    def _drain_subscriptions(self) -> None:
        """Read XPUB's (un)subscription notices so they do not pile up (bounded: see
        `SubscriptionGuard`)."""
        assert self._pub is not None
        self._guard.drain(self._pub)

    def tick(self) -> None:
        """The event loop, every turn: read the alert socket's notices (subscriptions, and
        whatever else a peer sends an XPUB), so they never pile up between sends."""
        self._drain_subscriptions()

    # ---- replay (own thread) -------------------------------------------------------------------
    def _replay_loop(self) -> None:
        """The replay thread: serve until closed, restarting the serving loop after a failure."""
        router = self._router
        assert router is not None
        state: dict[str, Optional[Journal]] = {"journal": None}
        backoff = REPLAY_BACKOFF_S
        self._set_replay_up(1)
        try:
            while not self._stop.is_set():
                try:
                    self._serve(router, state)
                except zmq.ContextTerminated:
                    return
                except Exception:     # not a request's fault (each has its own boundary)
                    if self._stop.is_set():
                        return
                    self._replay_restarts += 1
                    if self.metrics is not None:
                        self.metrics.replay_restarts.inc()
                    log.exception("replay server failed; restarting it in %.1f s (restart %d)",
                                  backoff, self._replay_restarts)
                    self._close_replay_journal(state)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, REPLAY_BACKOFF_MAX_S)
        except BaseException as exc:  # SystemExit & co: the thread ends; health says so
            log.critical("replay server thread ended (%s): no replay request will be answered",
                         type(exc).__name__)
            raise
        finally:
            self._set_replay_up(0)
            router.close(linger=0)
            self._close_replay_journal(state)

    def _set_replay_up(self, value: int) -> None:
        if self.metrics is not None:
            self.metrics.replay_up.set(value)

    @staticmethod
    def _close_replay_journal(state: dict[str, Optional[Journal]]) -> None:
        journal, state["journal"] = state["journal"], None
        if journal is not None:
            try:
                journal.close()
            except Exception as exc:  # closing a broken connection must not stop the loop
                log.debug("replay: closing the journal: %s", exc)

    def _serve(self, router: zmq.Socket, state: dict[str, Optional[Journal]]) -> None:
        """Answer requests until stopped. Raises only what is not a request's fault."""
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            frames = self._receive_request(router)
            if frames is None:
                continue
            if isinstance(frames, RefusedRequest):
                self._count_oversized(frames.problem)
                reply = self._error_reply(b"", frames.problem)
            else:
                reply = self._answer_safely(state, frames[-1])
            try:
                router.send_multipart([*frames[:-1], reply], flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # peer gone, or its queue is full
                log.debug("replay reply not sent: %s", exc)

    @staticmethod
    def _receive_request(router: zmq.Socket) -> Optional[list[bytes]]:
        """One request's frames, or None if nothing was waiting or it has no body. A request of
        more than MAX_REQUEST_FRAMES parts or MAX_MESSAGE_BYTES in all is read without copying
        (its memory returned) and comes back as a `RefusedRequest`: its envelope and why."""
        got = recv_bounded(router, MAX_REQUEST_FRAMES, MAX_MESSAGE_BYTES)
        if got is None or not got.frames or (got.ok and len(got.frames) < 2):
            return None
        if got.ok:
            return got.frames
        envelope = got.frames[:2] if got.frames[1:2] == [b""] else got.frames[:1]
        return RefusedRequest(envelope + [b""], f"bad replay request: {got.parts} parts and "
                              f"{got.size} bytes (at most {MAX_REQUEST_FRAMES - 1} parts after "
                              f"the identity, {MAX_MESSAGE_BYTES} bytes)")

    def _count_oversized(self, problem: str) -> None:
        self.oversized_requests += 1
        if self.oversized_requests == 1 or self.oversized_requests % 100 == 0:
            log.warning("replay: %s (%d such request(s) so far)", problem[20:],
                        self.oversized_requests)

    def _answer_safely(self, state: dict[str, Optional[Journal]], body: bytes) -> bytes:
        """`_answer`, with an error reply (never an exception) for whatever goes wrong."""
        try:
            return self._answer(self._replay_journal(state), body)
        except JournalError as exc:
            self._close_replay_journal(state)
            log.warning("replay: %s", exc)
            return self._error_reply(body, f"journal unavailable: {exc}")
        except Exception as exc:      # a bug must cost one request, not the replay server
            self._replay_errors += 1
            log.warning("replay: request failed (%s: %s)", type(exc).__name__, exc,
                        exc_info=self._replay_errors == 1)
            return self._error_reply(body, f"internal error ({type(exc).__name__})")

    def _replay_journal(self, state: dict[str, Optional[Journal]]) -> Journal:
        """The replay thread's journal connection, reopened when the file was deleted or
        replaced under it (so replay never answers from a journal that is gone)."""
        journal = state["journal"]
        if journal is not None:
            problem = journal.file_problem()
            if problem is None:
                return journal
            log.warning("replay: the journal file was %s: reopening it", problem)
            self._close_replay_journal(state)
        state["journal"] = journal = Journal(self.journal_path)
        return journal

    def _error_reply(self, body: bytes, error: str) -> bytes:
        reply = {"schema": REPLAY_SCHEMA, "id": _request_id(body), "error": error}
        if self.instance is not None:
            reply["instance"] = self.instance
        return json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def _answer(self, journal: Journal, body: bytes) -> bytes:
        reply: dict[str, Any] = {"schema": REPLAY_SCHEMA, "id": None}
        if self.instance is not None:
            reply["instance"] = self.instance
        try:
            if len(body) > MAX_REQUEST_BYTES:
                raise ValueError(f"request of {len(body)} bytes (at most {MAX_REQUEST_BYTES})")
            req = load_request(body)
            if not isinstance(req, dict):
                raise ValueError("request must be a JSON object")
            reply["id"] = _request_id(body, req)
            asked = req.get("instance")
            if asked is not None and asked != self.instance:
                raise ValueError(f"this is instance {self.instance!r}, not "
                                 f"{str(asked)[:64]!r}")
            since, limit = req.get("since"), req.get("limit", self.page_size)
            for name, value in (("since", since), ("limit", limit)):
                if not isinstance(value, int) or isinstance(value, bool) \
                        or not 0 <= value <= SQLITE_MAX_INT:
                    raise ValueError(f"{name} must be an integer in [0, 2**63-1]")
            limit = min(limit, self.page_size)
            rows = journal.since(since, limit + 1)
            reply["alerts"] = ([{**row, "instance": self.instance} for row in rows[:limit]]
                               if self.instance is not None else rows[:limit])
            reply["more"] = len(rows) > limit
            reply["last_seq"] = journal.last_seq()
            reply["journal_id"] = journal.journal_id
        except (UnicodeDecodeError, ValueError) as exc:
            reply["error"] = f"bad replay request: {str(exc)[:200]}"
        return json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def replay_problem(self) -> Optional[str]:
        """Why replay requests are not being answered (its thread ended), or None. Any thread."""
        thread = self._thread
        if self._closed or thread is None or thread.is_alive():
            return None
        return "replay server thread ended: replay requests are no longer answered"

    # ---- shutdown ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the replay thread (within a second), close the sockets, stop authentication."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            if self._thread.is_alive():
                log.warning("replay thread did not stop within 1 s")
        elif self._router is not None:
            self._router.close(linger=0)
        if self._pub is not None:
            self._pub.close()
        if self._writer is not None and self._writer_thread == threading.get_ident():
            self._writer.close()
        if self._auth is not None:
            self._auth.stop()
        if self._own_context:
            if self._thread is not None and self._thread.is_alive():
                log.warning("leaving the ZeroMQ context open: the replay thread still runs")
            else:
                self.context.term()

    def __enter__(self) -> "AlertPublisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _request_id(body: bytes, req: Any = None) -> Any:
    """The request's `id` to echo (a string or number), or None; never raises."""
    if req is None:
        if len(body) > MAX_REQUEST_BYTES:
            return None
        try:
            req = load_request(body)
        except ValueError:
            return None
    value = req.get("id") if isinstance(req, dict) else None
    if isinstance(value, float) and not math.isfinite(value):
        return None                   # NaN/Infinity would make the reply invalid JSON
    return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None


def generate_keys(directory: str | Path, clients: Iterable[str] = ("client",),
                  overwrite: bool = False) -> dict[str, Any]:
    """Write CURVE key pairs for the server and each client (`vigil keys generate`).

    Layout:
        <dir>/server.key, server.key_secret       server pair (give server.key to clients)
        <dir>/authorized_clients/<name>.key         client public keys (alerts.curve.authorized_clients)
        <dir>/clients/<name>.key, <name>.key_secret   client pairs (give to each subscriber)

    Args:
        directory: where to write (created).
        clients: client names, `[A-Za-z0-9_-]{1,64}` each.
        overwrite: replace existing keys (otherwise existing keys are an error).
    Returns:
        {"server_public_key", "server_secret_key", "authorized_clients": Path,
         "clients": {name: secret key Path}}.
    """
    directory = Path(directory)
    clients = list(clients)
    for name in clients:
        if not _KEY_NAME.fullmatch(name) or name == "server":
            raise ConfigError(f"client name {name!r}: use 1 to 64 of A-Z a-z 0-9 _ - "
                              "(and not 'server')")
    authorized = directory / "authorized_clients"
    client_dir = directory / "clients"
    targets = [directory / "server.key_secret"] + [client_dir / f"{n}.key_secret" for n in clients]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]}: key already exists (refusing to overwrite keys that "
                          "clients may be using)")
    for d in (directory, authorized, client_dir):
        d.mkdir(parents=True, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(str(directory), "server")
    os.chmod(server_secret, 0o600)
    out: dict[str, Any] = {"server_public_key": Path(server_public),
                           "server_secret_key": Path(server_secret),
                           "authorized_clients": authorized, "clients": {}}
    for name in clients:
        public, secret = zmq.auth.create_certificates(str(client_dir), name)
        os.chmod(secret, 0o600)
        shutil.copyfile(public, authorized / f"{name}.key")
        out["clients"][name] = Path(secret)
    log.info("CURVE keys written to %s (server + %d clients)", directory, len(clients))
    return out

"""Bounds on what a ZeroMQ socket takes in: frames, parts, whole messages and subscriptions.

Every socket of the daemon, the relay and the alert client that accepts input is bounded here:

* **Frames.** `ZMQ_MAXMSGSIZE` (`bound_frames`) makes libzmq drop the connection of a peer that
  announces a frame over the socket's limit, before reading it. libzmq applies it per *frame*.
* **Whole messages.** A multipart message may hold any number of frames, and libzmq 4.3 delivers
  a message only once all of it has arrived (its high-water marks count whole messages), so the
  frame limit alone does not bound a message. `recv_bounded` reads a message part by part without
  copying, keeps at most `max_parts` parts and refuses the message when it has more parts or
  more bytes than allowed; the refused parts are freed at once, and when a refused message was
  large the C heap is trimmed (`trim_heap`), so the memory it took is given back to the system.
  What libzmq cannot do is refuse a multipart message *while* it arrives: the memory of one
  message in flight is its size, and it is returned when the message is refused.
* **Subscriptions.** An XPUB keeps every subscription in a trie of one node per byte: one
  4 MiB `SUBSCRIBE` took 450 MiB for good, and freeing a trie that deep overflowed libzmq's stack.
  `SubscriptionGuard` caps a subscription's size (`MAX_SUBSCRIPTION_BYTES`, 1 KiB, through
  `ZMQ_MAXMSGSIZE`), counts the distinct topics subscribed (XPUB reports each topic's first
  subscription and its last unsubscription) and asks for the socket to be re-made when more than
  `MAX_TOPICS` are live, and reads the notices often enough that the ones XPUB queues for the
  application (and any other message a peer sends it) never pile up.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import zmq

log = logging.getLogger(__name__)

# The largest frame an XPUB takes: a subscription (`alert.<camera>.<label>` is at most ~140
# bytes) and, with CURVE, the handshake's INITIATE command with its metadata (measured: 300
# bytes pass; 257 do not).
MAX_SUBSCRIPTION_BYTES = 1024
# Distinct topics live on one XPUB before it is re-made (a client subscribes to 1 to 3; one per
# camera and class at most): with MAX_SUBSCRIPTION_BYTES, at most ~1M trie nodes.
MAX_TOPICS = 1024
# Notices (subscriptions, stray messages) read from an XPUB per call: enough for any burst.
MAX_NOTICES_PER_DRAIN = 100_000
# A refused message at least this large is followed by a heap trim.
TRIM_AFTER_BYTES = 1 << 20


def bound_frames(sock: zmq.Socket, max_frame_bytes: int) -> None:
    """Drop peers that send a frame over `max_frame_bytes` (`ZMQ_MAXMSGSIZE`), before it is read."""
    sock.setsockopt(zmq.MAXMSGSIZE, int(max_frame_bytes))


@dataclass
class Received:
    """One message read by `recv_bounded`.

    Attributes:
        frames: the first `max_parts` parts as bytes (all of them when `ok`).
        parts: how many parts the message had.
        size: its total size in bytes.
        ok: within the limits.
    """
    frames: list[bytes] = field(default_factory=list)
    parts: int = 0
    size: int = 0
    ok: bool = True


def recv_bounded(sock: zmq.Socket, max_parts: int, max_bytes: int,
                 flags: int = zmq.NOBLOCK) -> Optional[Received]:
    """Read one whole message, keeping at most `max_parts` parts and `max_bytes` bytes.

    Args:
        sock: a socket with a message waiting (or not: then None).
        max_parts: most parts a valid message has (a ROUTER's identity counts).
        max_bytes: most bytes a valid message has, all parts together.
        flags: recv flags of the first part (NOBLOCK by default).
    Returns:
        None when no message was waiting; else `Received` (`ok` False: over a limit; its parts
        beyond `max_parts` were read and freed, never copied).
    """
    got = Received()
    try:
        frame = sock.recv(flags, copy=False)
    except zmq.Again:
        return None
    while True:
        got.parts += 1
        got.size += len(frame)
        if got.parts <= max_parts and got.size <= max_bytes:
            got.frames.append(frame.bytes)
        else:
            got.ok = False
        more = frame.more
        del frame                            # free each refused part at once
        if not more:
            break
        frame = sock.recv(copy=False)        # the rest of a message is there already
    if not got.ok and got.size >= TRIM_AFTER_BYTES:
        trim_heap()
    return got


_LIBC: Optional[ctypes.CDLL] = None
_LIBC_TRIED = False


def trim_heap() -> bool:
    """Give freed C heap memory back to the system (glibc's `malloc_trim`); False elsewhere.

    libzmq frees a refused message's parts, but glibc keeps the pages of many small frees for
    reuse, so without this the process's RSS stays at its peak after a hostile message.
    """
    global _LIBC, _LIBC_TRIED
    if not _LIBC_TRIED:
        _LIBC_TRIED = True
        try:
            name = ctypes.util.find_library("c")
            _LIBC = ctypes.CDLL(name) if name else None
            if _LIBC is not None and not hasattr(_LIBC, "malloc_trim"):
                _LIBC = None
        except OSError:
            _LIBC = None
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True


def rebind(old: zmq.Socket, make: Callable[[], zmq.Socket], endpoint: str,
           timeout: float = 5.0) -> zmq.Socket:
    """Close `old` and bind a new socket from `make()` on the same `endpoint`.

    libzmq releases a closed socket's listening port in its I/O thread, a moment later: the bind
    is retried until it succeeds or `timeout` seconds pass (then the last error is raised).
    """
    old.close(linger=0)
    sock = make()
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.bind(endpoint)
            return sock
        except zmq.ZMQError:
            if time.monotonic() >= deadline:
                sock.close(linger=0)
                raise
            time.sleep(0.02)


class SubscriptionGuard:
    """Bounded subscriptions on an XPUB socket (see the module docstring).

    Args:
        name: how log lines name the socket (e.g. `alerts.endpoint`).
        remake: called (from the socket's thread) when more than `max_topics` distinct topics
            are live: the owner closes the socket and binds a new one on the same endpoint, so
            libzmq frees every subscription; subscribers reconnect and subscribe again (ZeroMQ
            does both by itself) and replay what they missed.
        max_topics: distinct live topics allowed.
    Attributes:
        live: the distinct topics live now (XPUB reports a topic's first subscription and its
            last unsubscription; an unsubscription of a topic never subscribed changes nothing).
        remade: how many times the socket was re-made.
        refused: notices read that were not subscriptions (a peer sending data to an XPUB).
    """

    def __init__(self, name: str, remake: Callable[[], None], max_topics: int = MAX_TOPICS) -> None:
        self.name = name
        self.remake = remake
        self.max_topics = int(max_topics)
        self.live: set[bytes] = set()
        self._trims: list[float] = []     # when to give freed memory back after a re-make
        self.remade = 0
        self.refused = 0

    @staticmethod
    def configure(sock: zmq.Socket) -> None:
        """Options of a guarded XPUB: frames (subscriptions) of at most `MAX_SUBSCRIPTION_BYTES`."""
        bound_frames(sock, MAX_SUBSCRIPTION_BYTES)

    def drain(self, sock: zmq.Socket) -> int:
        """Read every notice waiting on `sock`; re-make it when too many topics are live.

        Returns:
            Notices read.
        """
        n = 0
        while n < MAX_NOTICES_PER_DRAIN:
            got = recv_bounded(sock, 1, MAX_SUBSCRIPTION_BYTES)
            if got is None:
                break
            n += 1
            note = got.frames[0] if got.ok and got.frames else b""
            if note[:1] == b"\x01":
                self.live.add(note[1:])
                log.debug("%s: subscribe %r", self.name, note[1:65])
            elif note[:1] == b"\x00":
                self.live.discard(note[1:])
                log.debug("%s: unsubscribe %r", self.name, note[1:65])
            else:
                self.refused += 1
        if len(self.live) > self.max_topics:
            log.error("%s: %d distinct subscriptions live (at most %d): a client is subscribing "
                      "without bound; closing and re-binding the socket (subscribers reconnect "
                      "and replay what they miss)", self.name, len(self.live), self.max_topics)
            self.live.clear()
            self.remade += 1
            self.remake()
            # libzmq frees the old socket's subscriptions in its own threads, a moment later.
            now = time.monotonic()
            self._trims = [now + 0.2, now + 1.0, now + 3.0]
        self.tick()
        return n

    def tick(self) -> None:
        """Give freed memory back when due after a re-make (call it often; it is cheap)."""
        if self._trims and time.monotonic() >= self._trims[0]:
            self._trims.pop(0)
            trim_heap()

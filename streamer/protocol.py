"""Vigil's alert protocol, in one place for the publishing side (events, journal, publisher) and
the client (`streamer.subscriber`, `vigil alerts`): the schema names, the wire timestamps, and the
validation, parsing and one-line formatting of alerts and heartbeats.

On the wire an alert is two ZeroMQ frames, `[b"alert.<camera>.<label>", JSON]`, a heartbeat
`[b"heartbeat", JSON]`. The event tracker drafts a `vigil.alert/1` message; the journal finalises
it as `vigil.alert/2` (adding `seq`, `journal_id`, `published_at`, `latency_s`). Clients accept
both (/1 from older daemons or stored before the upgrade). No server code is imported here.

Identity (issue 15, fleets): a daemon stamps its instance name (`instance:` in its config, by
default the host name) on every alert, heartbeat and replay reply it sends, as `"instance"`. A
site runs several daemons behind one relay, and `seq` counts per instance (and within one
`journal_id`). The field is optional, so alerts of daemons before it (and the journal's stored
rows, which the publisher stamps on the way out) still parse; a client files them under
instance `None`.
"""
from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from typing import Any, Mapping, Sequence

from detector.errors import VigilError

# The tracker's draft and older daemons' alerts (no journal id).
ALERT_SCHEMA_V1 = "vigil.alert/1"
# The alert on the wire, as the journal finalises it (2: `journal_id` added).
ALERT_SCHEMA = "vigil.alert/2"
ALERT_SCHEMAS = (ALERT_SCHEMA_V1, ALERT_SCHEMA)
# 2: `journal_id` added (seq counts within one journal id).
HEARTBEAT_SCHEMA = "vigil.heartbeat/2"
REPLAY_SCHEMA = "vigil.replay/1"
TYPES = ("start", "update", "end")
END_REASONS = ("cleared", "camera_lost", "shutdown", "reload", "restart")


def iso_utc(t: float) -> str:
    """Epoch seconds -> `2026-11-24T10:15:01.12Z` (UTC, centiseconds)."""
    cs = int(round(t * 100))
    seconds, frac = divmod(cs, 100)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:02d}Z"


def parse_iso_utc(text: str) -> float:
    """`iso_utc`'s inverse: `2026-11-24T10:15:01.12Z` -> epoch seconds (ValueError if not)."""
    import calendar

    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"not an ISO UTC time ending in Z: {text!r}")
    whole, _, frac = text[:-1].partition(".")
    base = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return base + (float("0." + frac) if frac else 0.0)


# An instance name: what a camera name may be (it goes into file names and metric labels).
INSTANCE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

MAX_FRAME_BYTES = 1 << 20       # an alert is < 2 kB; refuse anything absurd before parsing
# How far ahead of its journal a daemon's seq can run: while the journal cannot be written it
# holds at most this many published alerts (`streamer.journal_writer.MAX_HELD`). A client takes
# a jump beyond its journal's last seq by more than this for a forgery, not a gap.
MAX_SEQ_AHEAD = 100_000


def alias_name(instance: "str | None", position: int) -> str:
    """The instance name a second source claiming `instance` is filed under (issue 26): the
    relay and a subscriber on several daemons tie a name to the connection it first came from,
    and deliver another connection's messages of that name as `<instance>-dup<N>` (N: that
    connection's 1-based position), so nothing is lost and nothing is mixed. Always a valid
    instance name."""
    suffix = f"-dup{position}"
    return (instance or "unnamed")[:64 - len(suffix)] + suffix


class AlertFormatError(VigilError):
    """A message on the alert socket is not a valid `vigil.alert/2` (or /1, or heartbeat)."""


# ---- parsing and validating ---------------------------------------------------------------------
def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# A replay request is one flat object; JSON nested deeper than this is refused before parsing.
# Why not rely on RecursionError: the parser's limit is the process's recursion limit, which a
# library may raise (torch's compiler sets it to 2000), and a 4 KiB request then parses.
MAX_REQUEST_NESTING = 32


def json_nesting(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (brackets inside strings ignored);
    a linear scan that never recurses, so it is safe on any input."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


class JsonTooDeep(ValueError):
    """A request nested deeper than `MAX_REQUEST_NESTING`."""


def load_request(body: bytes) -> Any:
    """A replay request's JSON (the daemon's and the relay's): UTF-8, nested at most
    `MAX_REQUEST_NESTING` deep (counted before parsing, so the parser never recurses far).

    Raises:
        JsonTooDeep: nested deeper.
        ValueError: not UTF-8 (`UnicodeDecodeError`) or not JSON (`json.JSONDecodeError`).
    """
    text = body.decode("utf-8")
    if json_nesting(text) > MAX_REQUEST_NESTING:
        raise JsonTooDeep("JSON nested too deeply")
    return json.loads(text)


def load_json(frame: Any, what: str) -> Any:
    """Decode one JSON frame (at most `MAX_FRAME_BYTES`, UTF-8, no NaN/Infinity), or raise
    `AlertFormatError` naming `what`."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise AlertFormatError(f"{what}: expected bytes, got {type(frame).__name__}")
    frame = bytes(frame)
    if len(frame) > MAX_FRAME_BYTES:
        raise AlertFormatError(f"{what}: {len(frame)} bytes, more than {MAX_FRAME_BYTES}")
    try:
        return json.loads(frame.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise AlertFormatError(f"{what}: not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise AlertFormatError(f"{what}: not JSON ({str(exc)[:80]})") from None


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON integers)."""
    return isinstance(value, int) and not isinstance(value, bool)


def validate_alert(msg: Any) -> dict:
    """Check a decoded alert against `vigil.alert/2` or `/1` (extra keys allowed for forward
    compat; `/2` requires `journal_id`, a non-empty string).

    Returns:
        `msg` itself.
    Raises:
        AlertFormatError: naming the first offending field.
    """
    def need(ok: bool, field: str, what: str) -> None:
        if not ok:
            shown = repr(msg.get(field))[:40] if isinstance(msg, dict) else ""
            raise AlertFormatError(f"alert.{field}: {what}, got {shown}")

    if not isinstance(msg, dict):
        raise AlertFormatError(f"alert: expected a JSON object, got {type(msg).__name__}")
    need(msg.get("schema") in ALERT_SCHEMAS, "schema", f"expected {ALERT_SCHEMA!r}")
    if msg["schema"] == ALERT_SCHEMA:
        need(_journal_id(msg.get("journal_id")), "journal_id", "expected a non-empty string")
    need(msg.get("instance") is None or is_instance(msg["instance"]), "instance",
         "expected 1 to 64 of A-Z a-z 0-9 _ -")
    need(is_int(msg.get("seq")) and msg["seq"] >= 1, "seq", "expected an integer >= 1")
    need(msg.get("type") in TYPES, "type", f"expected one of {', '.join(TYPES)}")
    for field in ("event_id", "camera", "label", "published_at"):
        need(isinstance(msg.get(field), str) and msg[field] != "", field, "expected a string")
    need(_number(msg.get("score")) and 0.0 <= msg["score"] <= 1.0, "score",
         "expected a number in [0, 1]")
    box = msg.get("box")
    need(isinstance(box, list) and len(box) == 4 and all(_number(v) and 0.0 <= v <= 1.0
                                                         for v in box),
         "box", "expected 4 numbers in [0, 1]")
    box_px = msg.get("box_px")
    need(isinstance(box_px, list) and len(box_px) == 4 and all(is_int(v) for v in box_px),
         "box_px", "expected 4 integers")
    size = msg.get("frame_size")
    need(isinstance(size, list) and len(size) == 2 and all(is_int(v) and v > 0 for v in size),
         "frame_size", "expected [width, height]")
    window = msg.get("window")
    need(isinstance(window, dict) and isinstance(window.get("start"), str)
         and isinstance(window.get("end"), str), "window", "expected {start, end} strings")
    latency = msg.get("latency_s")
    need(latency is None or (_number(latency) and latency >= 0), "latency_s",
         "expected a number >= 0 or null")
    for field in ("snapshot", "clip"):
        need(msg.get(field) is None or isinstance(msg[field], str), field,
             "expected a string or null")
    if msg["type"] == "end":
        need(msg.get("reason") in END_REASONS, "reason",
             f"an end needs one of {', '.join(END_REASONS)}")
    else:
        need(msg.get("reason") is None, "reason", "only an end has a reason")
    return msg


def is_instance(value: Any) -> bool:
    """A valid instance name (`INSTANCE_NAME`)."""
    return isinstance(value, str) and INSTANCE_NAME.fullmatch(value) is not None


def _journal_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64


def validate_heartbeat(msg: Any) -> dict:
    """Check a decoded heartbeat: a JSON object with an integer `seq` >= 0 and, when present,
    a `journal_id` string."""
    if not isinstance(msg, dict):
        raise AlertFormatError(f"heartbeat: expected a JSON object, got {type(msg).__name__}")
    if not (is_int(msg.get("seq")) and msg["seq"] >= 0):
        raise AlertFormatError(f"heartbeat.seq: expected an integer >= 0, got "
                               f"{repr(msg.get('seq'))[:40]}")
    if "journal_id" in msg and not _journal_id(msg["journal_id"]):
        raise AlertFormatError(f"heartbeat.journal_id: expected a non-empty string, got "
                               f"{repr(msg.get('journal_id'))[:40]}")
    if msg.get("instance") is not None and not is_instance(msg["instance"]):
        raise AlertFormatError(f"heartbeat.instance: expected 1 to 64 of A-Z a-z 0-9 _ -, got "
                               f"{repr(msg.get('instance'))[:40]}")
    return msg


def _frames(frames: Sequence[Any]) -> tuple[bytes, Any]:
    if not isinstance(frames, (list, tuple)) or len(frames) != 2:
        n = len(frames) if isinstance(frames, (list, tuple)) else type(frames).__name__
        raise AlertFormatError(f"expected 2 frames [topic, json], got {n}")
    topic = frames[0]
    if not isinstance(topic, (bytes, bytearray, memoryview)):
        raise AlertFormatError(f"topic: expected bytes, got {type(topic).__name__}")
    return bytes(topic), frames[1]


def parse_alert(frames: Sequence[Any]) -> dict:
    """Decode and validate one alert, `[b"alert.<camera>.<label>", json]`.

    Returns:
        The alert dict.
    Raises:
        AlertFormatError: whatever is wrong with it (never another exception).
    """
    topic, body = _frames(frames)
    if not topic.startswith(b"alert."):
        raise AlertFormatError(f"topic {topic[:60]!r}: expected alert.<camera>.<label>")
    msg = validate_alert(load_json(body, "alert"))
    expected = f"alert.{msg['camera']}.{msg['label']}".encode("utf-8", "replace")
    if topic != expected:
        raise AlertFormatError(f"topic {topic[:60]!r} does not match camera/label ({expected!r})")
    return msg


def parse_heartbeat(frames: Sequence[Any]) -> dict:
    """Decode and validate one heartbeat, `[b"heartbeat", json]` (AlertFormatError if not)."""
    topic, body = _frames(frames)
    if topic != b"heartbeat":
        raise AlertFormatError(f"topic {topic[:60]!r}: expected heartbeat")
    return validate_heartbeat(load_json(body, "heartbeat"))


def printable(value: Any, width: int = 64) -> str:
    """Printable text only: a message must not be able to drive the reader's terminal."""
    text = "" if value is None else str(value)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else "?" for ch in text)
    return text[:width]


def format_alert(msg: Mapping[str, Any]) -> str:
    """One readable line: time, [instance/]seq, camera, type, label, score, event, reason,
    snapshot/clip."""
    score = msg.get("score")
    where = f"{printable(msg['instance'])}/" if msg.get("instance") else ""
    parts = [
        printable(msg.get("published_at") or msg.get("window", {}).get("end"), 24),
        f"{where}#{printable(msg.get('seq'), 12)}",
        printable(msg.get("camera")),
        printable(msg.get("type"), 8).upper(),
        printable(msg.get("label")),
        f"score={score:.2f}" if _number(score) else "score=?",
        printable(msg.get("event_id"), 100),
    ]
    if msg.get("reason"):
        parts.append(f"reason={printable(msg['reason'])}")
    if msg.get("latency_s") is not None and msg.get("type") == "start":
        parts.append(f"latency={printable(msg['latency_s'], 12)}s")
    if msg.get("snapshot"):
        parts.append(f"snapshot={printable(msg['snapshot'], 300)}")
    if msg.get("clip"):
        parts.append(f"clip={printable(msg['clip'], 300)}")
    return " ".join(parts)

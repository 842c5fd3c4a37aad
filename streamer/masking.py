"""Credential masking for camera URLs and any text that may quote one (logs, errors, `--check`).

One module, used by the config (`streamer/config.py`), the sources (`streamer/sources.py`), the
capture thread (`streamer/capture.py`) and the logging set-up (`streamer/logs.py`), so every path out of the daemon masks the same way.

Two layers, applied in this order:

1. Known secrets, masked as literal substrings: every credential the config holds (the userinfo
   of each camera URL and its parts, every query value that is not on the safe list, every value
   substituted from `${VAR}` into a camera setting), also in their %-decoded forms. This layer
   catches a secret wherever it turns up, even quoted by a library that cut the URL apart.
   Secrets shorter than `MIN_LITERAL` characters are not replaced as literals (they would mangle
   every message); the structural layer still hides them where they sit in a URL.
2. Structure: in every `scheme://...` token (which runs to the next whitespace, so a quote or a
   `#`, `/`, `?` or `:` inside a password does not end it), everything between `://` and the LAST
   `@` of the token is the userinfo and becomes `*:*`; an authority that is not `host[:port]`
   (a URL cut short inside its password, `rtsp://admin:Pw...`) becomes `***`. Parameters are
   masked wherever they sit: in the query, and in the path, where cameras of the XMEye/Xiongmai
   family take their credentials (`/user=admin&password=SECRET&channel=1&stream=0.sdp`, also
   joined by `_` or `;`). A parameter is `key=value`, its separators `&`, `;` (and their
   %-encoded forms `%26`, `%3B`, with `%3D` for `=`), and `_` before a known key; every value
   becomes `*` unless its key (%-decoded, any case) is on `SAFE_QUERY_KEYS` and the value is a
   short plain token, so the stream selectors stay readable (`channel=1`, `subtype=0`,
   `stream=0.sdp`, `res=hd`); an item without `=` becomes `*` in a query, and in a path after a
   parameter (it is the rest of a value that held a separator).
3. Loose parameters: `password=...`, `user=...`, `token=...` and the other `CREDENTIAL_KEYS`
   outside any URL token (a message quoting only a URL's path or query) have their values masked.

Masking errs towards hiding too much: a path holding an `@` masks the host with the userinfo.
"""
from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Iterable, Optional

MASK = "***"
MIN_LITERAL = 3
# Query keys whose (short, plain) values are shown: stream selectors and synthetic-scene sizes.
SAFE_QUERY_KEYS = frozenset({
    "channel", "chn", "subtype", "stream", "streamtype", "profile", "res", "resolution",
    "fps", "width", "height", "seed", "frames", "codec", "videocodec", "transport",
    "rtsp_transport", "quality", "compression", "camera", "photo"})
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.\-]{1,16}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_TOKEN_END = re.compile(r"\s")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.%A-Za-z]*\]|[^:\[\]@]*)(:\d*)?")
# Keys whose values are credentials wherever they appear (the loose layer; inside a URL every
# key but the safe ones is masked anyway).
CREDENTIAL_KEYS = (
    "password", "passwd", "passwort", "pass", "passw", "pwd", "psw", "pw", "user", "username",
    "usr", "uname", "login", "loginuse", "loginpas", "account", "token", "access_token",
    "auth", "authorization", "key", "apikey", "api_key", "secret", "sig", "signature",
    "session", "sessionid", "sid", "credential", "credentials")
_KEY_ALT = "|".join(sorted(CREDENTIAL_KEYS + tuple(SAFE_QUERY_KEYS), key=len, reverse=True))
_EQ = r"(?:=|%3[dD])"
# Between parameters: & ; (or %-encoded), or `_` right before a known key (XMEye's form).
_PARAM_SEP = re.compile(rf"(&|;|%26|%3[bB]|_(?=(?:{_KEY_ALT}){_EQ}))", re.IGNORECASE)
_PARAM = re.compile(rf"(?P<key>.*?)(?P<eq>{_EQ})(?P<value>.*)", re.DOTALL)
# A credential parameter outside any URL token (a message quoting only a path or a query).
_LOOSE_SECRET = re.compile(
    rf"(?:^|(?<=[?&;/\s_'\"(\[,]))(?P<key>{'|'.join(CREDENTIAL_KEYS)})(?P<eq>{_EQ})"
    rf"(?P<value>(?:(?!%26|%3[bB]|_(?:{_KEY_ALT}){_EQ})[^&;\s'\"])*)", re.IGNORECASE)


def mask_url(url: object, secrets: Iterable[str] = ()) -> str:
    """Hide the credentials of a camera URL, for logs, errors and `vigil serve --check`.

    `rtsp://admin:secret@10.0.0.5:554/stream1` -> `rtsp://*:*@10.0.0.5:554/stream1`;
    `http://cam/snap.cgi?user=admin&pw=x&res=hd` -> `http://cam/snap.cgi?user=*&pw=*&res=hd`.
    Strings that are not URLs (a file path, a webcam index) come back unchanged.

    Args:
        url: the URL (anything; `str()` of it is masked).
        secrets: known secret values to mask as literals too (see the module docstring).
    """
    return mask_secrets(str(url), secrets)


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask every credential in `text` (a URL, or a message quoting one or more).

    Args:
        text: any text.
        secrets: known secret values, masked wherever they occur (longest first).
    Returns:
        The text with known secrets, URL userinfo and query values replaced.
    """
    text = mask_literals(text, secrets)
    out: list[str] = []
    pos = 0
    for m in _SCHEME.finditer(text):
        if m.start() < pos:
            continue        # inside a token already masked
        end = _token_end(text, m.end())
        out.append(text[pos:m.end()])
        out.append(_mask_token(text[m.end():end]))
        pos = end
    out.append(text[pos:])
    masked = "".join(out)
    return _LOOSE_SECRET.sub(lambda q: f"{q.group('key')}{q.group('eq')}*"
                             if q.group("value") and q.group("value") != "*" else q.group(0),
                             masked)


def _token_end(text: str, start: int) -> int:
    """Where the URL token starting at `start` (after `://`) ends: the next whitespace; but when
    the token has no `@` and its authority is not `host[:port]` (a password with a space in it,
    `rtsp://admin:my pass@host/`), the token runs on to the next `@` on the line, if one comes
    before another `scheme://`."""
    end_m = _TOKEN_END.search(text, start)
    end = end_m.start() if end_m else len(text)
    token = text[start:end]
    if "@" in token or _HOST_PORT.fullmatch(re.split(r"[/?#]", token, 1)[0]):
        return end
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    next_url = _SCHEME.search(text, end, line_end)
    limit = next_url.start() if next_url else line_end
    at = text.find("@", end, limit)
    if at < 0:
        return end
    end_m = _TOKEN_END.search(text, at)
    return min(end_m.start() if end_m else len(text), line_end)


def mask_literals(text: str, secrets: Iterable[str]) -> str:
    """Replace each known secret of at least `MIN_LITERAL` characters (longest first) by `***`."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_LITERAL and secret in text:
            text = text.replace(secret, MASK)
    return text


def _mask_token(rest: str) -> str:
    """Mask one URL token after its `scheme://` (it runs to the next whitespace)."""
    at = rest.rfind("@")
    if at >= 0:
        return "*:*@" + _mask_after_authority(rest[at + 1:], check_authority=False)
    return _mask_after_authority(rest, check_authority=True)


def _mask_after_authority(rest: str, check_authority: bool) -> str:
    """`host[:port][/path][?query]` with the parameters of path and query masked; a suspicious
    authority (not `host[:port]`, or a URL cut short with `...`) masked whole when
    `check_authority`."""
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    authority, tail = rest[:cut], rest[cut:]
    if check_authority and (_HOST_PORT.fullmatch(authority) is None
                            or (not tail and (authority.endswith("...")
                                              or authority.endswith("…")))):
        return MASK + ("..." if rest.endswith(("...", "…")) else "")
    return authority + "".join(masked for masked, _ in _tail_parts(tail))


def _tail_parts(tail: str) -> list[tuple[str, Optional[str]]]:
    """The path and query of a URL, cut into pieces: (masked text, the secret it hid or None)."""
    q = tail.find("?")
    path, query = (tail, None) if q < 0 else (tail[:q], tail[q + 1:])
    out: list[tuple[str, Optional[str]]] = []
    for segment in re.split(r"([/#])", path):
        if segment in ("/", "#") or not re.search(_EQ, segment):
            out.append((segment, None))          # a plain path segment
        else:
            out += _param_parts(segment, bare_hidden=False)
    if query is not None:
        out.append(("?", None))
        out += _param_parts(query, bare_hidden=True)
    return out


def _param_parts(region: str, bare_hidden: bool) -> list[tuple[str, Optional[str]]]:
    """`a=1&pw=x;b` -> pieces `a=*`, `&`, `pw=*`, `;`, `*` with the values they hid, keeping
    short plain values of `SAFE_QUERY_KEYS`. An item without `=` is hidden in a query
    (`bare_hidden`), and in a path once a parameter came before it."""
    out: list[tuple[str, Optional[str]]] = []
    seen_param = False
    for i, item in enumerate(_PARAM_SEP.split(region)):
        if i % 2 or not item:
            out.append((item, None))             # a separator (or nothing)
            continue
        m = _PARAM.fullmatch(item)
        if m is None:
            hide = bare_hidden or seen_param
            out.append(("*", item) if hide else (item, None))
            continue
        seen_param = True
        key, value = m.group("key"), m.group("value")
        plain = urllib.parse.unquote(value)
        if not value or (urllib.parse.unquote(key).lower() in SAFE_QUERY_KEYS
                         and _SAFE_VALUE.fullmatch(plain)):
            out.append((item, None))
        else:
            out.append((key + m.group("eq") + "*", value))
    return out


def url_secrets(url: str) -> set[str]:
    """The credentials in one URL, for literal masking: the userinfo, its user and password,
    every value of the path and query that `mask_url` hides, and their %-decoded forms.

    Args:
        url: a camera URL as configured (whole, whitespace and all).
    Returns:
        The set of secret strings (empty for a URL without credentials).
    """
    found: set[str] = set()
    if not isinstance(url, str):
        return found
    for m in _SCHEME.finditer(url):
        rest = url[m.end():]
        at = rest.rfind("@")
        if at >= 0:
            userinfo = rest[:at]
            user, _, password = userinfo.partition(":")
            found.update(p for p in (userinfo, user, password) if p)
            rest = rest[at + 1:]
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        found.update(hidden for _, hidden in _tail_parts(rest[cut:]) if hidden)
        break   # the first scheme starts the URL; a later `://` is inside it
    for value in list(found):
        for decoded in (urllib.parse.unquote(value), urllib.parse.unquote_plus(value)):
            if decoded:
                found.add(decoded)
    return found


class SecretLogFilter(logging.Filter):
    """A handler filter that masks every log record: URL structure always, known secrets too.

    Install it on the handlers (`install_log_filter`), so records from every logger (and their
    tracebacks) pass through it. `add()` registers more secrets (a reloaded config).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these secrets too from now on (never forgets one)."""
        self._secrets = self._secrets | frozenset(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:       # a bad format string: let the handler report it as usual
            return True
        masked = mask_secrets(message, self._secrets)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text, self._secrets)
        return True


def install_log_filter(secrets: Iterable[str] = (),
                       logger: Optional[logging.Logger] = None) -> SecretLogFilter:
    """Put a `SecretLogFilter` on every handler of `logger` (default: the root logger), or add
    `secrets` to the one already there.

    Returns:
        The filter (one per handler set; the same object on every handler).
    """
    logger = logger or logging.getLogger()
    existing = [f for h in logger.handlers for f in h.filters if isinstance(f, SecretLogFilter)]
    filt = existing[0] if existing else SecretLogFilter()
    filt.add(secrets)
    for handler in logger.handlers:
        if filt not in handler.filters:
            handler.addFilter(filt)
    return filt

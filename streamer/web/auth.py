"""Who may use the review page: token or users file, signed session cookies, CSRF tokens.

Passwords are hashed with scrypt (`hashlib.scrypt`, RFC 7914) at n=2**14, r=8, p=1 (the
parameters OWASP's password storage cheat sheet lists for scrypt), a 16-byte random salt per
password, and stored as `name:scrypt$n$r$p$<salt b64>$<hash b64>`, one user a line.

Sessions are stateless cookies: `name|expiry|nonce|HMAC-SHA256(key, name|expiry|nonce)`, the key
random per process (a restart logs everyone out). CSRF: every form carries
HMAC(key, "csrf"|<the csrf cookie>), the cookie a random value set on the first page
(SameSite=Strict, HttpOnly); a POST whose field does not match is refused. An attacker's page
can neither read the cookie nor compute the HMAC without the key.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from detector.errors import ConfigError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_TOKEN_CHARS = 16
USER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
TOKEN_USER = "token"


def hash_password(password: str, salt: Optional[bytes] = None) -> str:
    """`scrypt$n$r$p$salt$hash` (base64) of a password."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, dklen=HASH_BYTES)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a `hash_password` string (constant-time compare)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt, validate=True),
                             n=int(n), r=int(r), p=int(p), dklen=len(want),
                             maxmem=128 * int(r) * int(n) * 2 + (1 << 20))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def read_users(path: Path, key: str = "web.users_file") -> dict[str, str]:
    """name -> stored hash from a users file (`#` comments and blank lines allowed).

    Raises:
        ConfigError: `<key>: <file>:<line>: ...` for an unreadable file or a bad line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc}") from None
    users: dict[str, str] = {}
    for no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not USER_NAME.fullmatch(name) or not stored.startswith("scrypt$") \
                or stored.count("$") != 5:
            raise ConfigError(f"{key}: {path}:{no}: expected 'name:scrypt$...' "
                              "(write users with `vigil web user`)")
        users[name] = stored
    if not users:
        raise ConfigError(f"{key}: {path}: no users (add one with `vigil web user`)")
    return users


def set_user(path: Path, name: str, password: str) -> None:
    """Add or replace a user in a users file (created 0600), keeping the other lines."""
    if not USER_NAME.fullmatch(name):
        raise ConfigError(f"user name {name!r}: use 1 to 64 of A-Z a-z 0-9 _ . @ -")
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [ln for ln in lines if ln.partition(":")[0].strip() != name]
    kept.append(f"{name}:{hash_password(password)}")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(kept) + "\n")
    os.replace(tmp, path)


def read_token(path: Path, key: str = "web.token_file") -> str:
    """The access token (first line, stripped).

    Raises:
        ConfigError: unreadable, or shorter than `MIN_TOKEN_CHARS`.
    """
    try:
        token = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc}") from None
    if not token or len(token[0].strip()) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{key}: {path}: the token must be at least {MIN_TOKEN_CHARS} "
                          "characters (e.g. `python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'`)")
    return token[0].strip()


@dataclass
class Authenticator:
    """Checks logins and signs sessions and CSRF tokens with one per-process key.

    Args:
        token: the shared access token (None: no token login).
        users: name -> scrypt hash (empty: no user logins).
        session_s: how long a session cookie is valid.
        key: the HMAC key (None: random).
    """
    token: Optional[str] = None
    users: Optional[dict[str, str]] = None
    session_s: float = 12 * 3600.0
    key: Optional[bytes] = None

    def __post_init__(self) -> None:
        self.key = self.key or secrets.token_bytes(32)
        self.users = dict(self.users or {})

    @property
    def required(self) -> bool:
        return self.token is not None or bool(self.users)

    def login(self, name: str, secret: str) -> Optional[str]:
        """The user name on success (`token` for the token), else None."""
        if self.token is not None and not name and hmac.compare_digest(
                secret.encode(), self.token.encode()):
            return TOKEN_USER
        stored = (self.users or {}).get(name)
        if stored is not None and verify_password(secret, stored):
            return name
        return None

    def bearer(self, header: str) -> Optional[str]:
        """`token` when an `Authorization: Bearer <token>` header holds the token."""
        scheme, _, value = header.partition(" ")
        if self.token is not None and scheme.lower() == "bearer" and hmac.compare_digest(
                value.strip().encode(), self.token.encode()):
            return TOKEN_USER
        return None

    def _sign(self, text: str) -> str:
        assert self.key is not None
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def session_cookie(self, user: str, now: Optional[float] = None) -> str:
        expiry = int((time.time() if now is None else now) + self.session_s)
        body = f"{user}|{expiry}|{secrets.token_hex(8)}"
        return f"{body}|{self._sign(body)}"

    def session_user(self, cookie: Optional[str], now: Optional[float] = None) -> Optional[str]:
        """The user of a valid, unexpired session cookie, else None."""
        if not cookie or cookie.count("|") != 3:
            return None
        body, _, mac = cookie.rpartition("|")
        if not hmac.compare_digest(mac, self._sign(body)):
            return None
        user, expiry, _ = body.split("|")
        try:
            if int(expiry) < (time.time() if now is None else now):
                return None
        except ValueError:
            return None
        return user

    def csrf_token(self, csrf_cookie: str) -> str:
        """The form token for a CSRF cookie value."""
        return self._sign(f"csrf|{csrf_cookie}")

    def csrf_ok(self, csrf_cookie: Optional[str], form_token: Optional[str]) -> bool:
        if not csrf_cookie or not form_token:
            return False
        return hmac.compare_digest(self.csrf_token(csrf_cookie), form_token)

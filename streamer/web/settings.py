"""The `web:` section of the daemon config: the review page (`streamer/web/`).

Dataclass in the config idiom of `detector/schema.py`: ranges and descriptions on the fields,
rules between keys in `_check_cross_fields`. Nothing heavy is imported here, so
`vigil serve --check` stays fast.

Loopback by default. A `host` that is not a loopback address serves other machines, so it
needs authentication: a `token_file` (one shared secret) or a `users_file` (names with
passwords hashed by scrypt, written by `vigil web user`), and belongs behind a TLS reverse proxy
(docs/review.md): the page itself speaks plain HTTP.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from detector.errors import ConfigError
from detector.schema import Validated, setting

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for `localhost` and addresses in 127.0.0.0/8 or ::1 (what only this machine reaches).

    `0.0.0.0`, `::` and every other name or address are not loopback.
    """
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class WebConfig(Validated):
    """The review page: camera states, the event list, marks that become training clips."""
    enabled: bool = setting(False, doc="serve the review page")
    host: str = setting("127.0.0.1",
        doc="bind address; anything but loopback needs `token_file` or `users_file`")
    port: int = setting(8090, ge=0, le=65535, doc="... and port (0: any free port)")
    token_file: Optional[Path] = setting(None,
        doc="file holding the access token (one line, at least 16 characters)")
    users_file: Optional[Path] = setting(None,
        doc="`name:scrypt$...` lines from `vigil web user` (passwords hashed with scrypt)")
    page_size: int = setting(50, ge=1, le=500, doc="events per page of the event list")
    max_post_bytes: int = setting(16384, ge=1024, le=1048576,
        doc="larger form posts are refused (413)")
    session_hours: float = setting(12.0, gt=0, le=720,
        doc="a login lasts this long")

    SECTION = "web"

    @property
    def needs_auth(self) -> bool:
        """Whether a login is required (a token or a users file is configured)."""
        return self.token_file is not None or self.users_file is not None

    def _check_cross_fields(self, where: str) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ConfigError(f"{where}.host: must be an address, e.g. 127.0.0.1")
        if self.enabled and not is_loopback(self.host) and not self.needs_auth:
            raise ConfigError(
                f"{where}.host: {self.host!r} is reachable from other machines; set "
                f"{where}.token_file or {where}.users_file (and put the page behind a TLS "
                "reverse proxy, docs/review.md), or bind 127.0.0.1")


def check_web_files(cfg: WebConfig, where: str = "web") -> None:
    """The token and users files exist and are usable (start-up and `vigil serve --check`).

    Raises:
        ConfigError: naming the key and the file.
    """
    from .auth import read_token, read_users

    if cfg.token_file is not None:
        read_token(cfg.token_file, f"{where}.token_file")
    if cfg.users_file is not None:
        read_users(cfg.users_file, f"{where}.users_file")


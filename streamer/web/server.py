"""The review page's HTTP server: a thread the daemon owns, started and stopped with it.

The standard library's WSGI server (`wsgiref`) with one thread per request (`ThreadingMixIn`,
daemon threads), plain HTTP on the configured address. In front of the application:
`limit_body` refuses a POST without a length (411) or longer than `web.max_post_bytes` (413)
before any of it is read. Requests are logged at DEBUG through `logging` (never stderr).
"""
from __future__ import annotations

import logging
import socketserver
import threading
from typing import Any, Callable, Iterable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from detector.errors import ConfigError

from .app import ReviewApp
from .auth import Authenticator, read_token, read_users
from .live import LiveView
from .settings import WebConfig, is_loopback

log = logging.getLogger(__name__)


def limit_body(app: Callable, max_bytes: int) -> Callable:
    """WSGI middleware: a request body must state its length, at most `max_bytes`."""
    def wrapped(environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        length = environ.get("CONTENT_LENGTH") or ""
        if method in ("POST", "PUT", "PATCH"):
            problem = None
            if not length.isdigit():
                problem = ("411 Length Required", b"a request body must state its length\n")
            elif int(length) > max_bytes:
                problem = ("413 Content Too Large",
                           f"request body over {max_bytes} bytes refused\n".encode())
            if problem is not None:
                start_response(problem[0], [("Content-Type", "text/plain; charset=utf-8"),
                                            ("Content-Length", str(len(problem[1])))])
                return [problem[1]]
        return app(environ, start_response)
    return wrapped


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("web: error while answering %s", client_address[0])


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 (the stdlib's name)
        log.debug("web: %s %s", self.address_string(), format % args)


def build_app(cfg: WebConfig, data_dir: Any, live: Optional[LiveView] = None) -> ReviewApp:
    """The application for a validated `web:` section (reads the token and users files).

    Raises:
        ConfigError: a token or users file is unreadable or malformed.
    """
    token = read_token(cfg.token_file) if cfg.token_file is not None else None
    users = read_users(cfg.users_file) if cfg.users_file is not None else {}
    auth = Authenticator(token=token, users=users, session_s=cfg.session_hours * 3600.0)
    return ReviewApp(data_dir, auth=auth, live=live, page_size=cfg.page_size)


class WebServer:
    """The review page on `cfg.host:cfg.port`, served from a background thread.

    Args:
        cfg: the `web:` section. data_dir: the daemon's. live: the daemon's live view.
    Raises:
        ConfigError: (at `start`) the port cannot be bound, or the auth files are bad.
    """

    def __init__(self, cfg: WebConfig, data_dir: Any, live: Optional[LiveView] = None) -> None:
        self.cfg = cfg
        self.app = build_app(cfg, data_dir, live)
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> "WebServer":
        try:
            self._server = make_server(self.cfg.host, self.cfg.port,
                                       limit_body(self.app, self.cfg.max_post_bytes),
                                       server_class=_Server, handler_class=_Handler)
        except OSError as exc:
            raise ConfigError(f"web.port: cannot serve the review page on {self.cfg.host}:"
                              f"{self.cfg.port}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={
            "poll_interval": 0.2}, name="vigil-web", daemon=True)
        self._thread.start()
        log.info("review page on %s%s", self.url,
                 "" if is_loopback(self.cfg.host) else " (login required; put it behind a TLS "
                 "reverse proxy)")
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop serving; True when the thread ended within `timeout`."""
        if self._server is None or self._thread is None:
            return True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
        return not self._thread.is_alive()

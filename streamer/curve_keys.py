"""Reading ZeroMQ CURVE key files (`vigil keys generate` writes them), for every socket that
uses CURVE: the daemon's publisher (server), the relay (server to subscribers, client of the
daemons) and the subscriber (client). Errors name the key file and say which file was wanted.
"""
from __future__ import annotations

from pathlib import Path

import zmq.auth

from detector.errors import ConfigError


def load_server_keys(secret_key_file: Path | str, where: str = "alerts.curve.server_secret_key"
                     ) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a server from its `.key_secret` file.

    Raises:
        ConfigError: the file cannot be read or holds no secret key; the message starts with
            `where` (the config key or command that named the file).
    """
    try:
        public, secret = zmq.auth.load_certificate(str(secret_key_file))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {secret_key_file}: {exc}") from None
    if not secret:
        raise ConfigError(f"{where}: {secret_key_file} holds no secret key (give the "
                          ".key_secret file, not the public .key)")
    return public, secret


def load_client_keys(server_public_key: Path | str, client_secret_key: Path | str,
                     where: str = "curve") -> tuple[bytes, bytes, bytes]:
    """(server public, client public, client secret) Z85 keys for a CURVE client socket.

    Raises:
        ConfigError: a file cannot be read or the client file holds no secret key; the message
            starts with `where`.
    """
    try:
        server_public, _ = zmq.auth.load_certificate(str(server_public_key))
        public, secret = zmq.auth.load_certificate(str(client_secret_key))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read CURVE keys: {exc}") from None
    if not secret:
        raise ConfigError(f"{where}: {client_secret_key} holds no secret key (give the "
                          "client's .key_secret file)")
    return server_public, public, secret

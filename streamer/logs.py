"""Logging set-up for the `vigil` command: readable lines for journald, or JSON for machines.

Every line passes a `SecretLogFilter` (`streamer/masking.py`): URL credentials are masked whatever
logger wrote them, and the config's known secrets once `install_log_filter` has been given them.
"""
from __future__ import annotations

import json
import logging
import sys
import time

from .masking import install_log_filter


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    _std = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._std and not key.startswith("_"):
                out[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
        if record.exc_info or record.exc_text:
            # exc_text: the traceback as the secret filter masked it.
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Configure the root logger once, writing to stderr (journald captures it under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        # No timestamp of our own when journald adds one; keep it for interactive use.
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = [f for h in root.handlers for f in h.filters]
    root.handlers[:] = [handler]
    for filt in previous:          # a second call keeps the secrets the first one learnt
        handler.addFilter(filt)
    install_log_filter(logger=root)
    root.setLevel(level.upper())

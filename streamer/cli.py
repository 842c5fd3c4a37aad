"""The `vigil` command: one entry point, verbs registered by the packages that implement them.

Each verb module exposes `register(subparsers)`, which adds its parsers and sets `func` to a
function taking the parsed arguments and returning an exit code. Heavy imports (torch, cv2) stay
inside those functions so `vigil --help` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from detector.errors import VigilError

from .logs import setup_logging

# Modules that add verbs, in the order their verbs appear in --help.
VERB_MODULES = ("train.cli", "streamer.commands", "streamer.tools.demo",
                "streamer.tools.bench_cli", "streamer.tools.soak_cli")

log = logging.getLogger("vigil")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil",
        description="Spot fights and people collapsing on camera feeds: train, evaluate, serve.")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines as text (default) or one JSON object per line")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    try:
        return int(args.func(args) or 0)
    except VigilError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

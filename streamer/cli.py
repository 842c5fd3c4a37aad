"""The `vigil` command: one entry point, verbs registered by the packages that implement them.

Each verb module exposes `register(subparsers)`, which adds its parsers and sets `func` to a
function taking the parsed arguments and returning an exit code. Heavy imports (torch, cv2) stay
inside those functions so `vigil --help` is instant.

The tools' verbs (`demo`, `bench`, `soak`) live in `vigil_tools/`, beside the packages in a source
checkout and never in the wheel: the service does not import them (`tests/test_architecture.py`).
They are found in the checkout an editable install points into (`make install`); an installed
wheel has no checkout, so there each of them is a stub that says where to run it and exits 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from pathlib import Path

from detector.errors import VigilError

from .logs import setup_logging

# Modules that add verbs, in the order their verbs appear in --help.
VERB_MODULES = ("train.cli", "streamer.commands", "streamer.tuning.command",
                "streamer.web.cli", "vigil_tools.demo",
                "vigil_tools.bench_cli", "vigil_tools.soak_cli")
# The tools' modules (not in the wheel) -> (verb, help) of the stub an installed Vigil shows.
TOOL_VERBS = {
    "vigil_tools.demo": ("demo", "the whole product on this machine (source checkout only)"),
    "vigil_tools.bench_cli": ("bench", "benchmarks (source checkout only)"),
    "vigil_tools.soak_cli": ("soak", "run the daemon under churn (source checkout only)"),
}
TOOLS_PACKAGE = "vigil_tools"

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
    tools = find_tools()
    for name in VERB_MODULES:
        if name.startswith(TOOLS_PACKAGE + ".") and not tools:
            _register_tool_stub(sub, *TOOL_VERBS[name])
            continue
        importlib.import_module(name).register(sub)
    return parser


def find_tools() -> bool:
    """Make `vigil_tools` importable when this `vigil` runs from a source checkout.

    Returns:
        True when the tools package is importable: already on the path (tests, `python -m` from
        the checkout), or in the checkout an editable install maps `streamer` to (its folder is
        appended to `sys.path`); False for an installed wheel.
    """
    if importlib.util.find_spec(TOOLS_PACKAGE) is not None:
        return True
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / TOOLS_PACKAGE / "__init__.py").is_file():
        return False
    sys.path.append(str(checkout))
    return importlib.util.find_spec(TOOLS_PACKAGE) is not None


def _register_tool_stub(sub: argparse._SubParsersAction, verb: str, help_text: str) -> None:
    """A verb of the tools, as an installed wheel shows it: one line saying where it runs."""
    # No option prefix: every argument (even --help) is taken, so any command line gets the line.
    p = sub.add_parser(verb, help=help_text, add_help=False, prefix_chars="\0",
                       description=f"vigil {verb} is a tool of Vigil's source checkout.")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda _args: _tool_missing(verb))


def _tool_missing(verb: str) -> int:
    print(f"vigil {verb}: this tool is not part of the installed vigil package; run it from a "
          f"source checkout (git clone the project, then `make install` and `.venv/bin/vigil "
          f"{verb}`{', or `make demo`' if verb == 'demo' else ''})", file=sys.stderr)
    return 2


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

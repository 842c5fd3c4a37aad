"""The `vigil soak` verb (see `vigil_tools/soak.py`): run the daemon under churn, check for
leaks."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `soak` to the `vigil` command's sub-parsers."""
    p = subparsers.add_parser(
        "soak", help="run the daemon for a while under churn and check nothing grows",
        description="Start `vigil serve` with looping video-file cameras and RTSP cameras whose "
                    "server is killed and restarted periodically, plus a subscriber that keeps "
                    "disconnecting; sample RSS, threads, open fds and windows/s; fail when any "
                    "of them grows (or the rate decays) over the second half of the run. Writes "
                    "soak.csv and soak.png into --out.")
    p.add_argument("--minutes", type=float, required=True, metavar="M",
                   help="how long to sample once the daemon is ready")
    p.add_argument("--out", type=Path, default=Path("runs/soak"), metavar="DIR",
                   help="output folder (default: runs/soak)")
    p.add_argument("--file-cameras", type=int, default=3, metavar="N",
                   help="looping synthetic video files (default: 3)")
    p.add_argument("--rtsp-cameras", type=int, default=2, metavar="N",
                   help="RTSP test-pattern cameras, restarted in turn (default: 2)")
    p.add_argument("--restart-every", type=float, default=30.0, metavar="S",
                   help="kill and restart an RTSP server every S seconds (default: 30)")
    p.add_argument("--flap-every", type=float, default=10.0, metavar="S",
                   help="the subscriber is connected S seconds, then gone S seconds (default: 10)")
    p.add_argument("--sample-every", type=float, default=5.0, metavar="S",
                   help="sampling period (default: 5)")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                   help="model to serve (default: a tiny random-weight one)")
    p.set_defaults(func=cmd_soak)


def cmd_soak(args: argparse.Namespace) -> int:
    """Run the soak; print its summary. Returns 0 when it passed, 1 when something grew."""
    from detector.errors import ConfigError

    from .soak import run_soak

    if args.minutes <= 0 or args.sample_every <= 0 or args.restart_every <= 0 \
            or args.flap_every <= 0:
        raise ConfigError("--minutes, --sample-every, --restart-every and --flap-every must be "
                          "> 0")
    report = run_soak(args.minutes, args.out, file_cameras=args.file_cameras,
                      rtsp_cameras=args.rtsp_cameras, restart_every_s=args.restart_every,
                      flap_every_s=args.flap_every, sample_every_s=args.sample_every,
                      checkpoint=args.checkpoint)
    print(report.summary())
    print(f"samples: {report.csv_path}" + (f"; plot: {report.png_path}" if report.png_path
                                             else ""))
    return 0 if report.passed else 1

"""`vigil demo`: the whole product on this machine, checked end to end.

It serves Vigil's shipped model (`model.checkpoint: vigil`, trained on real footage and on
synthetic scenes; `--model quick` trains the quick-start model of synthetic scenes only, once,
cached under the user's cache directory, and `--model FILE` serves any checkpoint), writes a
daemon config with synthetic cameras (one fight, one collapse, one where nobody is in trouble),
starts the real `vigil serve` as a child process (told apart from systemd only by the notify
socket this module creates for its READY), subscribes to its ZeroMQ alerts like any client,
shows a live status scraped from its Prometheus endpoint, and after `--duration` seconds stops it
with SIGTERM and prints a summary. It exits non-zero when an expected alert did not come or an
unexpected one did, so the demo is also a smoke test of a deployment.
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .harness import DaemonProcess

log = logging.getLogger(__name__)

# camera name -> (synthetic scene kind, the label its alert must carry or None for no alert).
# The quiet camera shows people walking (`quiet_seed`): the small CPU model still takes a person
# lying still for a collapse in about a quarter of such held-out scenes (README, "What the demo
# shows"), which is a limit of the model, not something the demo should paper over or trip on.
CAMERAS = {
    "yard-fight": ("fight", "fight"),
    "hall-collapse": ("collapse", "collapse"),
    "lobby-quiet": ("none", None),
}
# The collapse camera shows a photographed person falling (`train.synth_photo`): collapse is the
# pose path's (BlazePose), which finds no person in stick figures. It watches collapse only, as
# a care room would; a 6.4 s loop: standing, a fall, lying.
PHOTO_COLLAPSE = {"width": 320, "height": 240, "fps": 15, "frames": 96, "photo": 1}

def scene_params(clip_seconds: float) -> dict:
    """Live scenes drawn as the training videos were (the quick-start recipe's size and frame
    rate), looping every `clip_seconds` (the checkpoint's window span), so a window sees what a
    training clip showed. Measured on the quick-start model: at 640x360, or with a loop shorter
    than a window (so most windows straddle the cut), walking people scored over 0.6 for
    "collapse" in 15-67% of window phases; drawn like this, 0-2%, and the collapse scene 30%."""
    from train.quickstart import RECIPE

    fps = RECIPE.synth["fps"]
    return dict(width=RECIPE.synth["width"], height=RECIPE.synth["height"], fps=fps,
                frames=max(RECIPE.synth["frames"], int(round(clip_seconds * fps))))


@dataclass
class DemoPorts:
    metrics: int
    alerts: int
    replay: int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="serve three synthetic cameras with the shipped model, show the alerts",
        description=__doc__.split("\n\n")[1] if __doc__ else None)
    # Alerts come within seconds of the start; 30 s keeps a first run with --model quick
    # (training included) under 5 minutes on a 2-core machine.
    p.add_argument("--duration", type=float, default=30.0, metavar="S",
                   help="seconds to serve before stopping (default 30)")
    p.add_argument("--model", default="vigil", metavar="vigil|quick|FILE",
                   help="vigil: the shipped model (default); quick: train the quick-start model "
                        "of synthetic scenes once and cache it; or a checkpoint file")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="where the quick-start model is kept (default ~/.cache/vigil)")
    p.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                   help="daemon config, journal and evidence (default: a new temporary folder)")
    p.add_argument("--metrics-port", type=int, default=9108, metavar="PORT")
    p.add_argument("--no-status", action="store_true", help="no live status block")
    p.set_defaults(func=run_demo)


# The per-class alert settings configs/vigil.yaml gives the shipped models (collapse from the
# pose path: docs/models/pose-collapse-v1.md, "Alert settings"). The demo serves the shipped
# models with them, as a user's daemon would; any other model with the daemon's defaults.
SHIPPED_SMOOTHING_CLASSES = {"collapse": {"on_threshold": 0.5, "off_threshold": 0.3,
                                          "min_windows": 2},
                             "fight": {"on_threshold": 0.5, "off_threshold": 0.3,
                                       "min_windows": 2}}


def demo_model(choice: str, cache_dir: Optional[Path]) -> tuple[Path, str]:
    """The checkpoint the demo serves and how it was obtained (printed).

    Raises:
        CheckpointError: `vigil` and the shipped model is missing, or a FILE that does not exist.
    """
    from detector.init_weights import DEFAULT_MODEL_ALIAS, resolve_model_path

    if choice == DEFAULT_MODEL_ALIAS:
        return resolve_model_path(choice), "shipped"
    if choice == "quick":
        from train.quickstart import cached_quick_model

        run = cached_quick_model(cache_dir, progress=True)
        return run.checkpoint, (f"trained in {run.seconds:.0f} s" if run.seconds else "cached")
    from detector.errors import CheckpointError

    # Absolute: the daemon resolves a relative checkpoint against its config's folder.
    path = Path(choice).expanduser().resolve()
    if not path.is_file():
        raise CheckpointError(f"--model: no such checkpoint file: {path} (or: vigil, quick)")
    return path, "given"


def run_demo(args: argparse.Namespace) -> int:
    print(f"vigil demo: 1/3 the model ({args.model})", flush=True)
    t0 = time.monotonic()
    checkpoint, how = demo_model(args.model, args.cache_dir)
    print(f"  model: {checkpoint} ({how})", flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vigil-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ports = DemoPorts(_port_or_free(args.metrics_port), _port_or_free(5557), _port_or_free(5558))
    classes = SHIPPED_SMOOTHING_CLASSES if how == "shipped" else {}
    daemon = DaemonProcess(workdir, demo_config(workdir, checkpoint, ports, classes))
    print(f"vigil demo: 2/3 starting `vigil serve --config {daemon.config_path}`", flush=True)
    try:
        daemon.start()
        daemon.wait_ready(timeout=120)
        print(f"  metrics: http://127.0.0.1:{ports.metrics}/metrics", flush=True)
        print(f"  alerts:  vigil alerts tcp://127.0.0.1:{ports.alerts} "
              f"--replay tcp://127.0.0.1:{ports.replay} --since 0", flush=True)
        print(f"  log:     {daemon.log_path}", flush=True)
        print(f"vigil demo: 3/3 watching for {args.duration:.0f} s (Ctrl-C stops early)\n",
              flush=True)
        alerts = watch(ports, args.duration, daemon, live_status=not args.no_status)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the daemon", flush=True)
        return 130               # the daemon is stopped below
    finally:
        code = daemon.stop()
        daemon.close()
    ok = print_summary(alerts, code, time.monotonic() - t0)
    return 0 if ok else 1


def quiet_seed(params: dict, start: int = 22) -> int:
    """The first seed from `start` whose "none" scene is people walking (not a person lying
    still or two people talking close together)."""
    from train.synth import Scene

    seed = start
    while Scene("none", seed, **params).variant != "walking":
        seed += 1
    return seed


def demo_config(workdir: Path, checkpoint: Path, ports: DemoPorts,
                smoothing_classes: Optional[dict] = None) -> dict:
    """The daemon config of the demo: three looping synthetic cameras on loopback ports, and
    `smoothing_classes` as `smoothing.classes` (none: the daemon's defaults)."""
    from detector.checkpoint import load_checkpoint

    _, model_cfg, _ = load_checkpoint(checkpoint)
    params = scene_params(model_cfg.input.clip_seconds or 2.0)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    seeds = {"fight": 20, "collapse": 21, "none": quiet_seed(params)}
    photo = "&".join(f"{k}={v}" for k, v in PHOTO_COLLAPSE.items())
    cameras = []
    for name, (kind, _) in CAMERAS.items():
        if kind == "collapse":
            cameras.append({"name": name, "url": f"synth://{kind}?seed={seeds[kind]}&{photo}",
                            "events": ["collapse"]})
        elif kind == "fight":      # a street: fights only, so BlazePose does not run there
            cameras.append({"name": name, "url": f"synth://{kind}?seed={seeds[kind]}&{query}",
                            "events": ["fight"]})
        else:
            cameras.append({"name": name, "url": f"synth://{kind}?seed={seeds[kind]}&{query}"})
    cfg = {
        "data_dir": str(workdir / "data"),
        "cameras": cameras,
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "max_batch": 4},
        "alerts": {"endpoint": f"tcp://127.0.0.1:{ports.alerts}",
                   "replay_endpoint": f"tcp://127.0.0.1:{ports.replay}", "heartbeat_s": 2.0},
        "metrics": {"host": "127.0.0.1", "port": ports.metrics},
        "smoothing": {"classes": dict(smoothing_classes or {})},
    }
    return cfg


def watch(ports: DemoPorts, duration: float, daemon: "DaemonProcess",
          live_status: bool = True) -> list[dict]:
    """Print alerts as they arrive and a status block refreshed in place; return the alerts."""
    from streamer.protocol import format_alert
    from streamer.subscriber import AlertSubscriber

    tty = live_status and sys.stdout.isatty()
    alerts: list[dict] = []
    block_lines = 0
    next_status = 0.0
    last_counts: dict = {}
    end = time.monotonic() + duration
    with AlertSubscriber(f"tcp://127.0.0.1:{ports.alerts}", f"tcp://127.0.0.1:{ports.replay}",
                         since=0) as sub:
        while time.monotonic() < end:
            if not daemon.alive():
                print(f"vigil serve exited early ({daemon.proc.returncode}); see {daemon.log_path}")
                break
            msg = sub.poll(0.25)
            if msg is not None:
                alerts.append(msg)
                if tty and block_lines:
                    sys.stdout.write(f"\x1b[{block_lines}F\x1b[J")   # erase the status block
                    block_lines = 0
                print(format_alert(msg), flush=True)
            now = time.monotonic()
            if now >= next_status:
                lines = status_lines(ports.metrics, alerts, end - now, last_counts)
                if tty:
                    if block_lines:
                        sys.stdout.write(f"\x1b[{block_lines}F\x1b[J")
                    sys.stdout.write("\n".join(lines) + "\n")
                    sys.stdout.flush()
                    block_lines = len(lines)
                    next_status = now + 1.0
                elif live_status:
                    print("\n".join(lines), flush=True)
                    next_status = now + 10.0
                else:
                    next_status = end
        # The shutdown `end` messages arrive after SIGTERM: stop, then drain what is left.
        daemon.stop()
        while (msg := sub.poll(1.0)) is not None:
            alerts.append(msg)
            print(format_alert(msg), flush=True)
    return alerts


def status_lines(metrics_port: int, alerts: list[dict], remaining: float,
                 last: dict) -> list[str]:
    """One screen: per camera up, fps, windows inferred/skipped, open events.

    `last` keeps the previous frame counts between calls, for the fps column.
    """
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError as exc:
        return [f"(metrics unavailable: {exc})"]
    values: dict[tuple[str, str], float] = defaultdict(float)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            cam = s.labels.get("camera")
            if cam is not None:
                values[(s.name, cam)] += s.value
    now = time.monotonic()
    rows = [f"{'camera':<15} {'up':>3} {'fps':>5} {'windows':>8} {'skipped':>8} {'open events':>12}"]
    for cam in CAMERAS:
        frames = values[("vigil_frames_total", cam)]
        fps = _rate(last, cam, frames, now)
        rows.append(f"{cam:<15} {int(values[('vigil_camera_up', cam)]):>3} {fps:>5.1f} "
                    f"{int(values[('vigil_windows_total', cam)]):>8} "
                    f"{int(values[('vigil_windows_skipped_total', cam)]):>8} "
                    f"{int(values[('vigil_events_active', cam)]):>12}")
    rows.append(f"alerts so far: {len(alerts)}   remaining: {max(remaining, 0):.0f} s")
    return rows


def _rate(last: dict, key: str, value: float, now: float) -> float:
    """Per-second rate of a counter since the previous call with the same `last` and key."""
    prev = last.get(key)
    last[key] = (value, now)
    if prev is None or now <= prev[1]:
        return 0.0
    return (value - prev[0]) / (now - prev[1])


def print_summary(alerts: list[dict], exit_code: Optional[int], seconds: float) -> bool:
    """Alerts per camera and label, start latency p50/p95, and the demo's self-check."""
    from detector.timing import percentile

    print("\n== vigil demo summary ==")
    counts = Counter((a["camera"], a["label"], a["type"]) for a in alerts)
    print(f"{'camera':<15} {'label':<9} {'start':>5} {'update':>6} {'end':>4}")
    for cam, label in sorted({(c, lab) for c, lab, _ in counts}):
        print(f"{cam:<15} {label:<9} {counts[(cam, label, 'start')]:>5} "
              f"{counts[(cam, label, 'update')]:>6} {counts[(cam, label, 'end')]:>4}")
    lat = [a["latency_s"] for a in alerts
           if a["type"] == "start" and isinstance(a.get("latency_s"), (int, float))]
    if lat:
        print(f"alert latency (capture of the window's last frame -> start published): "
              f"p50 {percentile(lat, 50):.2f} s, p95 {percentile(lat, 95):.2f} s over "
              f"{len(lat)} starts")
    ok = True
    for cam, (_, expected) in CAMERAS.items():
        started = {a["label"] for a in alerts if a["camera"] == cam and a["type"] == "start"}
        if expected is None:
            good = not started
            what = "no alert" if good else f"UNEXPECTED {', '.join(sorted(started))}"
        else:
            good = expected in started and started <= {expected}
            what = (f"{expected} alert came" if good else
                    f"expected {expected}, got {', '.join(sorted(started)) or 'nothing'}")
        ok &= good
        print(f"check {cam:<15} {'PASS' if good else 'FAIL'}  {what}")
    ends = [a for a in alerts if a["type"] == "end"]
    if any(a.get("reason") == "shutdown" for a in ends):
        print("open events were closed on shutdown with reason=shutdown")
    if exit_code not in (0, None):
        print(f"vigil serve exited with {exit_code}")
        ok = False
    print(f"demo {'PASSED' if ok else 'FAILED'} in {seconds:.0f} s")
    return ok


def _port_or_free(port: int) -> int:
    """`port` if it can be bound on loopback now, else any free port."""
    for candidate in (port, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port on 127.0.0.1")

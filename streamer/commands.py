"""The serve-side verbs of the `vigil` command: `serve`, `alerts`, `relay`, `keys generate`,
`snapshot`.

`register(subparsers)` adds the parsers; each verb function takes the parsed arguments and returns
an exit code. Heavy imports (torch, cv2, zmq) happen inside the verb functions so `vigil --help`
stays instant.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve`, `alerts`, `relay`, `keys` and `snapshot` to the `vigil` command's
    sub-parsers."""
    p = subparsers.add_parser(
        "serve", help="run the detection daemon on the cameras of a config file",
        description="Watch the configured cameras, publish alerts over ZeroMQ and metrics over "
                    "HTTP until SIGTERM/SIGINT; SIGHUP reloads the camera list.")
    p.add_argument("--config", required=True, type=Path, metavar="FILE",
                   help="daemon config (YAML), e.g. configs/vigil.yaml")
    p.add_argument("--check", action="store_true",
                   help="validate the config and load the checkpoint, print a summary, exit; "
                        "opens no camera and binds no socket")
    p.add_argument("--explain", metavar="CAMERA", default=None,
                   help="with --check: every effective setting of CAMERA (capture, smoothing per "
                        "class, mask, zones, schedule, notification rules) and the config key "
                        "it comes from")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser(
        "snapshot", help="write one frame of a camera as a JPEG, with its zones and masks drawn",
        description="Open CAMERA's source from the config, read one frame and write it as a "
                    "JPEG, so you can check the polygons of its mask and zones against the "
                    "picture. Needs no running daemon.")
    p.add_argument("--config", required=True, type=Path, metavar="FILE",
                   help="daemon config (YAML)")
    p.add_argument("--camera", required=True, metavar="NAME", help="the camera's name")
    p.add_argument("--draw-zones", action="store_true",
                   help="draw the camera's masks (shaded), zones (outlined, required ones "
                        "thicker, named) and roi")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="where to write the JPEG (default: snapshot-NAME.jpg here)")
    p.set_defaults(func=cmd_snapshot)

    p = subparsers.add_parser(
        "alerts", help="subscribe to the alerts of daemons (or of a relay) and print them",
        description="Subscribe to each ENDPOINT (several daemons, or one `vigil relay`), fetch "
                    "what was missed from the replay endpoints, drop duplicates and print each "
                    "alert once, in seq order per instance; reports any gap that could not be "
                    "filled.")
    p.add_argument("endpoint", metavar="ENDPOINT", nargs="+",
                   help="a daemon's or relay's PUB endpoint, e.g. tcp://127.0.0.1:5557")
    p.add_argument("--replay", metavar="ENDPOINT", default=None, action="append",
                   help="the replay endpoint of each ENDPOINT, repeated in the same order "
                        "(default: each one's PUB port + 1 on the same host)")
    p.add_argument("--since", type=int, default=None, metavar="SEQ",
                   help="replay every alert with seq > SEQ of every instance first (default: "
                        "only new ones)")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="exit after N alerts (default: run until interrupted)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="exit after S seconds (default: run until interrupted)")
    p.add_argument("--json", action="store_true",
                   help="print each alert as one JSON line instead of a readable line")
    p.add_argument("--heartbeats", action="store_true",
                   help="print heartbeats too")
    p.add_argument("--curve-keys", type=Path, default=None, metavar="DIR",
                   help="directory written by `vigil keys generate` when the daemon uses CURVE")
    p.add_argument("--client", default=None, metavar="NAME",
                   help="client key name in --curve-keys (default: the only one there)")
    p.set_defaults(func=cmd_alerts)

    p = subparsers.add_parser(
        "relay", help="one alert stream for several daemons (ZeroMQ SUB/XPUB relay)",
        description="Connect to the alert endpoint of each daemon of a fleet and republish "
                    "their alerts and heartbeats on one endpoint (zmq.proxy); forward replay "
                    "requests that name an instance to that daemon's replay endpoint. Runs "
                    "until SIGTERM/SIGINT.")
    p.add_argument("--daemon", action="append", required=True, metavar="ENDPOINT",
                   help="a daemon's alert endpoint (repeat per daemon), e.g. "
                        "tcp://10.0.0.11:5557")
    p.add_argument("--replay", action="append", default=[], metavar="INSTANCE=ENDPOINT",
                   help="where the daemon named INSTANCE answers replay requests (repeat per "
                        "daemon), e.g. gpu1=tcp://10.0.0.11:5558")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5567", metavar="ENDPOINT",
                   help="where subscribers connect for alerts (default: %(default)s)")
    p.add_argument("--replay-endpoint", default="tcp://127.0.0.1:5568", metavar="ENDPOINT",
                   help="where subscribers send replay requests (default: %(default)s)")
    p.add_argument("--hwm", type=int, default=10000, metavar="N",
                   help="messages queued per peer on each side (default: %(default)s)")
    p.add_argument("--curve-server-key", type=Path, default=None, metavar="FILE",
                   help="CURVE towards subscribers: the relay's server.key_secret (with "
                        "--curve-authorized DIR)")
    p.add_argument("--curve-authorized", type=Path, default=None, metavar="DIR",
                   help="CURVE towards subscribers: authorised client public keys")
    p.add_argument("--curve-keys", type=Path, default=None, metavar="DIR",
                   help="CURVE towards the daemons: their `vigil keys generate` directory "
                        "(server.key and clients/NAME.key_secret; see --client)")
    p.add_argument("--client", default=None, metavar="NAME",
                   help="the relay's client key name in --curve-keys (default: the only one)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve the relay's Prometheus metrics there, e.g. 127.0.0.1:9110 "
                        "(default: none)")
    p.set_defaults(func=cmd_relay)

    p = subparsers.add_parser("keys", help="manage the daemon's ZeroMQ CURVE keys")
    ksub = p.add_subparsers(dest="keys_verb", metavar="ACTION")
    ksub.required = True
    g = ksub.add_parser(
        "generate", help="write a server key pair and client key pairs",
        description="Write CURVE key pairs (zmq.auth's format) for the daemon and its clients.")
    g.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="directory to write the keys into (created)")
    g.add_argument("--clients", nargs="+", default=["client"], metavar="NAME",
                   help="client names, one key pair each (default: client)")
    g.add_argument("--force", action="store_true",
                   help="overwrite existing keys (clients holding the old ones are locked out)")
    g.set_defaults(func=cmd_keys_generate)


def cmd_serve(args: argparse.Namespace) -> int:
    """`vigil serve --config FILE`: validate the config, then run the daemon until stopped.

    An invalid config raises `ConfigError` (naming the key) before any camera is opened; the
    command line prints it and exits 2.
    """
    from .config import load_config

    from .masking import install_log_filter

    from detector.errors import ConfigError

    cfg = load_config(args.config)        # before torch is even imported: a bad key fails fast
    _apply_logging(args, cfg.logging)
    install_log_filter(cfg.secrets)       # every log line masks the config's credentials
    if args.explain is not None:
        if not args.check:
            raise ConfigError("--explain goes with --check: vigil serve --config FILE --check "
                              "--explain CAMERA")
        names = [c.name for c in cfg.cameras]
        if args.explain not in names:
            raise ConfigError(f"--explain: no camera {args.explain!r} in {args.config} "
                              f"(cameras: {', '.join(names)})")
    if args.check:
        return _check_config(cfg, explain=args.explain)
    from .daemon import Daemon

    return Daemon(cfg, config_path=args.config).run()


def _check_config(cfg, explain: str | None = None) -> int:
    """`vigil serve --check`: what the daemon would run, without running it (`--explain
    CAMERA`: that camera's effective settings and where each comes from).

    Loads both models, so a camera watching an event no model detects is refused here
    (`ConfigError` naming `cameras[i].events`), as the daemon would refuse it at start.
    """
    import torch

    from detector.pose.collapse import load_pose_checkpoint
    from detector.runtime import architecture_name, load_model

    from .comms.notifications import Notifications
    from .daemon import unknown_clip_length_message
    from .routing import EventRouting

    _, model_cfg, meta = load_model(cfg.model.checkpoint, torch.device("cpu"), threads=1)
    pose = None
    if cfg.model.pose is not None:
        from detector.pose.blazepose import BlazePose

        pose, _ = load_pose_checkpoint(cfg.model.pose.checkpoint)
        BlazePose(threads=1)              # its two model files load (else: one line naming one)
    routing = EventRouting(tuple(model_cfg.class_names), pose.cfg.label if pose else None)
    routing.check(cfg.cameras)
    inp = model_cfg.input
    params = f"{meta['num_parameters']} parameters, " if "num_parameters" in meta else ""
    print(f"config OK: instance {cfg.instance}, {len(cfg.enabled_cameras)} of "
          f"{len(cfg.cameras)} cameras enabled")
    print(f"model: {cfg.model.checkpoint} ({architecture_name(model_cfg, meta)}, {meta['runtime']}, "
          f"{params}classes {', '.join(model_cfg.class_names)},"
          f" input {inp.frames}x{inp.size[0]}x{inp.size[1]}, clip {inp.clip_seconds} s)")
    if pose is not None:
        print(f"pose path: {cfg.model.pose.checkpoint} ({pose.cfg.label} from BlazePose "
              f"landmarks, {pose.cfg.window_s:g} s windows every {cfg.model.pose.stride_s:g} s, "
              f"{cfg.model.pose.workers} thread(s)); it scores {pose.cfg.label} for every "
              f"camera that watches it")
    else:
        print("pose path: off (model.pose: null)")
    if inp.clip_seconds is None:
        print(f"warning: {unknown_clip_length_message(inp.frames)}")
    for cam in cfg.cameras:
        state = "enabled" if cam.enabled else "disabled"
        seconds = cam.settings.window_seconds or inp.clip_seconds
        window = (f"window {seconds:g} s" if seconds else
                  f"window {inp.frames} consecutive frames")
        events = cam.settings.events
        paths = [p for p, on in (("video", routing.needs_video(events)),
                                 ("pose", routing.needs_pose(events))) if on]
        print(f"  {cam.name:<20} {state:<8} {cam.masked_url}  stride {cam.settings.stride}, "
              f"{window}; watches {', '.join(routing.watched(events))} "
              f"({' + '.join(paths) or 'nothing'})")
    print(f"alerts: {cfg.alerts.endpoint} (replay {cfg.alerts.replay_endpoint}); metrics: "
          f"{'http://%s:%d/metrics' % (cfg.metrics.host, cfg.metrics.port) if cfg.metrics.enabled else 'off'}")
    if cfg.web.enabled:
        w = cfg.web
        login = ("token" if w.token_file else "") + (" or " if w.token_file and w.users_file
                                                     else "") + ("users file" if w.users_file else "")
        host = f"[{w.host}]" if ":" in w.host else w.host
        print(f"review page: http://{host}:{w.port}/ (login: {login or 'none, loopback only'})")
    if cfg.mqtt is not None:
        m = cfg.mqtt
        print(f"mqtt: {m.host}:{m.port}{' (TLS)' if m.tls else ''}, topics {m.topic_prefix}/"
              f"{cfg.instance}/..., Home Assistant discovery "
              f"{m.discovery.prefix + '/...' if m.discovery.enabled else 'off'}"
              + (f", user {m.username}" if m.username else ""))
    if cfg.notify.rules:
        # apprise checks every URL here, as the daemon would at start (no notification sent).
        Notifications(cfg.notify, cfg.instance, cfg.data_dir).close(timeout=0)
        print(f"notify: {len(cfg.notify.rules)} rule(s): "
              + ", ".join(f"{r.name} ({len(r.urls)} URL(s))" for r in cfg.notify.rules))
    if explain is not None:
        from .explain import explain_camera

        print()
        for line in explain_camera(cfg, explain, routing.watched(cfg.camera(explain).settings.events)):
            print(line)
    return 0


def _apply_logging(args: argparse.Namespace, logging_cfg) -> None:
    """The config's `logging:` section, unless the command line asked for something else."""
    from .logs import setup_logging

    fmt = args.log_format if getattr(args, "log_format", "text") != "text" else logging_cfg.format
    level = args.log_level if getattr(args, "log_level", "info") != "info" else logging_cfg.level
    if (fmt, level) != (getattr(args, "log_format", "text"), getattr(args, "log_level", "info")):
        setup_logging(fmt, level)


def cmd_alerts(args: argparse.Namespace) -> int:
    """`vigil alerts ENDPOINT`: print alerts as they arrive, replayed and de-duplicated.

    Returns:
        0; 1 when `--count N` alerts did not arrive before `--timeout`.
    """
    import time

    from .protocol import format_alert
    from .subscriber import AlertSubscriber, ClientCurve

    from detector.errors import ConfigError

    replay = args.replay or [default_replay_endpoint(ep) for ep in args.endpoint]
    if len(replay) != len(args.endpoint):
        raise ConfigError(f"--replay: give one replay endpoint per ENDPOINT ({len(replay)} for "
                          f"{len(args.endpoint)})")
    curve = _client_curve(args.curve_keys, args.client, ClientCurve) if args.curve_keys else None
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    received = 0
    gaps_reported = clashes_reported = 0
    last_heartbeat_at = None
    sub = AlertSubscriber(args.endpoint, replay, since=args.since, curve=curve)
    try:
        while args.count is None or received < args.count:
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            msg = sub.poll(timeout=wait)
            # Gaps are what the journal could not supply either: say so, on stderr, once each.
            for instance, first, last in sub.gap_log[gaps_reported:]:
                where = f"instance {instance}: " if instance is not None else ""
                print(f"gap: {where}alerts {first}..{last} are lost (not on the wire, not in the "
                      "journal)", file=sys.stderr, flush=True)
            gaps_reported = len(sub.gap_log)
            # A second source of an instance name (a clone, or a forger): said once each.
            for instance, what in sub.clashes[clashes_reported:]:
                print(f"clash: instance {instance}: {what}", file=sys.stderr, flush=True)
            clashes_reported = len(sub.clashes)
            if args.heartbeats and sub.last_heartbeat_at != last_heartbeat_at:
                last_heartbeat_at = sub.last_heartbeat_at
                print(json.dumps(sub.last_heartbeat) if args.json
                      else format_heartbeat(sub.last_heartbeat), flush=True)
            if msg is not None:
                received += 1
                print(json.dumps(msg, ensure_ascii=False) if args.json else format_alert(msg),
                      flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    if args.count is not None and received < args.count:
        print(f"received {received} of {args.count} alerts before the timeout", file=sys.stderr)
        return 1
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    """`vigil relay --daemon EP ... [--replay NAME=EP ...]`: run the fleet's alert relay until
    SIGTERM/SIGINT (exit 0); exit 1 when its thread ends, so systemd restarts it."""
    import signal
    import threading

    from .relay import (Relay, RelayConfig, RelayCurveClient, RelayCurveServer,
                        parse_replay_map)
    from .subscriber import ClientCurve

    from detector.errors import ConfigError

    front = None
    if args.curve_server_key or args.curve_authorized:
        if not (args.curve_server_key and args.curve_authorized):
            raise ConfigError("--curve-server-key and --curve-authorized go together")
        front = RelayCurveServer(args.curve_server_key, args.curve_authorized)
    back = None
    if args.curve_keys:
        keys = _client_curve(args.curve_keys, args.client, ClientCurve)
        back = RelayCurveClient(keys.server_public_key, keys.client_secret_key)
    cfg = RelayConfig(daemons=args.daemon, replay=parse_replay_map(args.replay),
                      endpoint=args.endpoint, replay_endpoint=args.replay_endpoint,
                      hwm=args.hwm, frontend_curve=front, backend_curve=back)
    metrics = server = None
    if args.metrics:
        from .metrics import RelayMetrics

        host, sep, port = args.metrics.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--metrics {args.metrics!r}: expected HOST:PORT")
        metrics = RelayMetrics()
    relay = Relay(cfg, metrics=metrics)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    relay.start()
    if metrics is not None:
        server = metrics.start_http_server(host or "127.0.0.1", int(port))
    print(f"relay: alerts on {relay.endpoint}, replay on {relay.replay_endpoint}", flush=True)
    try:
        while not stop.is_set() and relay.running():
            stop.wait(0.5)
        problem = relay.problem()
    finally:
        relay.stop()
        if server is not None:
            server.shutdown()
    if problem is not None and not stop.is_set():
        print(f"relay: {problem}; exiting 1", file=sys.stderr, flush=True)
        return 1
    return 0


def default_replay_endpoint(endpoint: str) -> str:
    """The replay endpoint beside a PUB endpoint, as in the default config: same host, port + 1.

    Raises:
        ConfigError: the endpoint has no numeric port to derive it from (give --replay).
    """
    from detector.errors import ConfigError

    head, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or "://" not in head:
        raise ConfigError(f"--replay: cannot derive a replay endpoint from {endpoint!r}; "
                          "give it, e.g. --replay tcp://127.0.0.1:5558")
    return f"{head}:{int(port) + 1}"


def format_heartbeat(hb: dict | None) -> str:
    """One readable line for a heartbeat: last seq, journal id, uptime, camera states, the
    serving model (`name@sha256[:12]`), and the journal's trouble when it cannot be written
    (alerts held in memory)."""
    from .protocol import printable

    if not hb:
        return "heartbeat"
    cams = hb.get("cameras") or {}
    states = ",".join(f"{name}:{'up' if (st or {}).get('up') else 'down'}"
                      for name, st in sorted(cams.items()) if isinstance(st, dict))
    journal = hb.get("journal") if isinstance(hb.get("journal"), dict) else {}
    trouble = (f" JOURNAL-NOT-WRITABLE held={printable(journal.get('held'), 12)}"
               if journal.get("writable") is False else "")
    model = hb.get("model") if isinstance(hb.get("model"), dict) else {}
    serving = (f" model={printable(model['name'], 64)}@{printable(model.get('sha256'), 12)}"
               if model.get("name") else "")
    return (f"heartbeat seq={hb.get('seq')}"
            + (f" journal={printable(hb['journal_id'], 64)}" if hb.get("journal_id") else "")
            + f" uptime={hb.get('uptime_s')}s" + (f" cameras={states}" if states else "")
            + serving + trouble)


def _client_curve(keys_dir: Path, client: str | None, ClientCurve):
    """The CURVE keys of a client from a `vigil keys generate` directory."""
    from detector.errors import ConfigError

    server_public = keys_dir / "server.key"
    if not server_public.is_file():
        raise ConfigError(f"--curve-keys: {server_public} not found (see `vigil keys generate`)")
    clients = sorted(p.name[: -len(".key_secret")]
                     for p in (keys_dir / "clients").glob("*.key_secret"))
    if client is None:
        if len(clients) != 1:
            raise ConfigError(f"--client: choose one of {', '.join(clients) or '(none found)'} "
                              f"in {keys_dir / 'clients'}")
        client = clients[0]
    secret = keys_dir / "clients" / f"{client}.key_secret"
    if not secret.is_file():
        raise ConfigError(f"--client: {secret} not found")
    return ClientCurve(server_public_key=server_public, client_secret_key=secret)


def cmd_snapshot(args: argparse.Namespace) -> int:
    """`vigil snapshot --config FILE --camera NAME [--draw-zones]`: one frame as a JPEG.

    Raises:
        ConfigError: unknown camera; VigilError: the source gave no frame (message masked).
    """
    import time

    import cv2

    from detector.errors import ConfigError, VigilError

    from .config import load_config
    from .masking import install_log_filter, mask_secrets
    from .regions.draw import draw_regions
    from .sources import open_source

    cfg = load_config(args.config, check_paths=False)
    install_log_filter(cfg.secrets)
    try:
        cam = cfg.camera(args.camera)
    except KeyError:
        raise ConfigError(f"--camera: no camera {args.camera!r} in {args.config} (cameras: "
                          f"{', '.join(c.name for c in cfg.cameras)})") from None
    s = cam.settings
    try:
        reader = open_source(cam.url, s.open_timeout_s, s.read_timeout_s)
    except OSError as exc:
        raise VigilError(f"camera {cam.name}: cannot open {cam.masked_url}: "
                         f"{mask_secrets(str(exc), cfg.secrets)}") from None
    frame = None
    try:
        deadline = time.monotonic() + s.open_timeout_s + s.read_timeout_s
        while frame is None and time.monotonic() < deadline:
            ok, got = reader.read()
            if ok and got is not None and got.size:
                frame = got
    finally:
        reader.release()
    if frame is None:
        raise VigilError(f"camera {cam.name}: no frame from {cam.masked_url} within "
                         f"{s.open_timeout_s + s.read_timeout_s:g} s")
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if args.draw_zones:
        frame = draw_regions(frame, cam.mask, cam.zones, cam.required_zones, s.roi)
    out = args.out or Path(f"snapshot-{cam.name}.jpg")
    if not cv2.imwrite(str(out), frame, [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise VigilError(f"--out: cannot write {out}")
    h, w = frame.shape[:2]
    drawn = (f", {len(cam.mask)} mask polygon(s) and {len(cam.zones)} zone(s) drawn"
             if args.draw_zones else "")
    print(f"{out}: camera {cam.name}, {w}x{h}{drawn}")
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """`vigil keys generate --out DIR [--clients NAME...]`: CURVE key pairs for daemon and clients."""
    from .publisher import generate_keys

    out = generate_keys(args.out, args.clients, overwrite=args.force)
    print(f"server public key:  {out['server_public_key']}  (give to subscribers)")
    print(f"server secret key:  {out['server_secret_key']}  (alerts.curve.server_secret_key)")
    print(f"authorized clients: {out['authorized_clients']}  (alerts.curve.authorized_clients)")
    for name, path in out["clients"].items():
        print(f"client {name}: {path}  (give to that subscriber)")
    return 0

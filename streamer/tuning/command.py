"""`vigil calibrate`: a camera's alert thresholds from its own quiet footage.

    vigil calibrate --config vigil.yaml --camera lobby --footage /srv/lobby-quiet/ \
        [--target-per-hour 1] [--labelled lobby-clips/] [--out lobby-smoothing.yaml]
    vigil calibrate --config vigil.yaml --camera lobby --record 180     # 3 h from the camera

Reads the daemon's config (the camera's stride, window length, roi and events, the video model,
the pose path and the smoothing, as `vigil serve` would run them: each class from the path that
owns it for this camera, `streamer.routing`; `${VARIABLES}` that are not set are left as they
are, since no camera is opened; with `--record MINUTES` the camera is opened, with the real
environment, and that many minutes of it are recorded first into
`data_dir/calibration/<camera>/`, `streamer.tuning.record`), plays every footage file through the daemon's windows, worker
and smoothing (`streamer.tuning.offline`), and prints (and with `--out` writes) the camera's
per-class smoothing override (`cameras[].smoothing.classes.<label>`) for at most the target
false starts per hour (`streamer.tuning.calibrate`).

Exit status: 0 calibrated (or already meeting the target); 1 the footage seems to hold events,
or some class cannot reach the target (what could be calibrated is still printed); 2 bad input
(unknown camera, footage that cannot be opened, too little footage for the target).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator

log = logging.getLogger("vigil.calibrate")

DEFAULT_TARGET = 1.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `calibrate` to the `vigil` command's sub-parsers."""
    p = subparsers.add_parser(
        "calibrate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="set a camera's alert thresholds from its own quiet footage",
        description="Play a camera's recorded quiet footage (no fight, no fall) through the "
                    "daemon's windows, model and smoothing, and print the camera's per-class "
                    "thresholds (a cameras[].smoothing override) at which that footage raises "
                    "at most --target-per-hour false starts per class. Footage must be long "
                    "enough to show the rate (3 / target hours); stretches the model scores "
                    "like a real event are listed and stop the calibration.")
    p.add_argument("--config", type=Path, required=True, metavar="FILE",
                   help="the daemon's config (vigil.yaml): camera, model, smoothing")
    p.add_argument("--camera", required=True, metavar="NAME", help="the camera to calibrate")
    p.add_argument("--footage", type=Path, nargs="+", default=[], metavar="PATH",
                   help="the camera's quiet footage: video files, or folders of them")
    p.add_argument("--record", type=float, default=None, metavar="MINUTES",
                   help="first record this many minutes from the camera itself (into "
                        "data_dir/calibration/CAMERA/; stop the daemon's alerting meanwhile or "
                        "expect them to be counted as quiet), then calibrate on them too; the "
                        "time must hold no real event")
    p.add_argument("--target-per-hour", type=float, default=DEFAULT_TARGET, metavar="N",
                   help="false starts per hour allowed per class on this footage")
    p.add_argument("--labelled", type=Path, default=None, metavar="DIR",
                   help="labelled clips of this camera (any layout `vigil data check` reads): "
                        "the setting that still starts the most of their actions is chosen, "
                        "and the found and missed ones are listed; their quiet clips count as "
                        "footage")
    p.add_argument("--classes", nargs="+", default=None, metavar="LABEL",
                   help="calibrate only these classes (default: every class of the model)")
    p.add_argument("--within", type=float, default=3.0, metavar="S",
                   help="an action counts as found when its start comes within S seconds")
    p.add_argument("--loop-s", type=float, default=8.0, metavar="S",
                   help="play each labelled action clip looped to S seconds, as a looping "
                        "file camera does")
    p.add_argument("--keep-suspects", action="store_true",
                   help="calibrate even where the model scores the footage like a real event "
                        "(only once you have looked and they are not events)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="also write the override YAML here")
    p.set_defaults(func=cmd_calibrate)


class _EnvOrUnset(Mapping):
    """The environment, with every `${NAME}` that is not set standing for itself: calibration
    opens no camera, so a password that lives in the service's environment file is not needed."""

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, f"unset-{key}")

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def footage_files(paths: list[Path]) -> list[Path]:
    """The video files of `paths` (folders searched recursively), in order.

    Raises:
        DataError: a path that does not exist, or no video at all.
    """
    from detector.errors import DataError
    from train.video_io import VIDEO_SUFFIXES

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"--footage {path}: no such file or folder")
    if not files:
        raise DataError(f"--footage {' '.join(map(str, paths))}: no video files "
                        f"({', '.join(VIDEO_SUFFIXES)})")
    return files


def probe_footage(files: list[Path], fps_hint: float | None = None) -> list:
    """Each file's `train.video_io.VideoInfo` (a frame rate the file lacks is `fps_hint`, the
    camera's `fps` setting, else 25).

    Raises:
        DataError: every file that cannot be opened or reports no frames, in one message.
    """
    import dataclasses

    from detector.errors import DataError
    from train.video_io import probe

    infos, bad = [], []
    for f in files:
        try:
            info = probe(f)
        except DataError as exc:
            bad.append(str(exc))
            continue
        if info.frames <= 0:
            bad.append(f"{f}: no frames")
            continue
        if info.fps <= 0:
            info = dataclasses.replace(info, fps=fps_hint or 25.0)
        infos.append(info)
    if bad:
        raise DataError("footage that cannot be read: " + "; ".join(bad))
    return infos


def record_footage(cfg, camera, minutes: float) -> Path:
    """Record `minutes` of `camera` into `data_dir/calibration/<camera>/<UTC time>.mp4`.

    Raises:
        DataError: the camera gave no frame (the message names it, masked).
    """
    from detector.errors import DataError

    from .record import record_camera

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(cfg.data_dir) / "calibration" / camera.name / f"{stamp}.mp4"
    s = camera.settings
    log.info("recording %.1f minutes of %s (%s) into %s", minutes, camera.name,
             camera.masked_url, out)
    try:
        rec = record_camera(camera.url, out, minutes, fps_hint=s.fps,
                            open_timeout_s=s.open_timeout_s, read_timeout_s=s.read_timeout_s,
                            progress=lambda sec: log.info("%s: %.0f s recorded", camera.name,
                                                          sec))
    except OSError as exc:
        raise DataError(f"camera {camera.name} ({camera.masked_url}): {exc}") from None
    if rec.frames == 0:
        raise DataError(f"camera {camera.name} ({camera.masked_url}) gave no frame to record")
    log.info("recorded %.1f minutes (%d frames at %.1f fps%s) into %s", rec.seconds / 60,
             rec.frames, rec.fps, f", {rec.reopens} reopenings" if rec.reopens else "", out)
    return out


def cmd_calibrate(args: argparse.Namespace) -> int:
    from detector.errors import ConfigError, DataError

    from ..config import load_config
    from ..routing import EventRouting
    from ..worker import load_worker
    from . import calibrate as C
    from .offline import ClipScores, Paths, pose_path, score_records

    # Recording opens the camera, so its password must be in the environment; otherwise
    # nothing is opened and an unset ${VARIABLE} may stay unset.
    cfg = load_config(args.config, environ=os.environ if args.record else _EnvOrUnset())
    try:
        camera = cfg.camera(args.camera)
    except KeyError:
        raise ConfigError(f"{args.config}: no camera {args.camera!r} (cameras: "
                          f"{', '.join(c.name for c in cfg.cameras) or 'none'})") from None
    if args.target_per_hour <= 0:
        raise ConfigError("--target-per-hour must be above 0")
    if args.record is not None and not args.record > 0:
        raise ConfigError("--record: minutes must be above 0")
    if not args.footage and args.record is None:
        raise ConfigError("give the camera's quiet footage (--footage PATH...), or --record "
                          "MINUTES to record it from the camera")
    s = camera.settings
    need = C.required_minutes(args.target_per_hour)
    files = footage_files(args.footage) if args.footage else []
    infos = probe_footage(files, s.fps) if files else []
    minutes = sum(i.frames / i.fps for i in infos) / 60.0
    if args.record is not None:
        if minutes + args.record < need and not args.labelled:
            raise DataError(
                f"{minutes + args.record:.1f} minutes of footage cannot show at most "
                f"{args.target_per_hour:g} false starts per hour: that needs {need:.0f} minutes; "
                f"record longer, or ask for a --target-per-hour of at least "
                f"{C.least_target(minutes + args.record):.1f}")
        recorded = record_footage(cfg, camera, args.record)
        files.append(recorded)
        infos += probe_footage([recorded], s.fps)
        minutes = sum(i.frames / i.fps for i in infos) / 60.0
    if minutes < need and not args.labelled:
        raise DataError(
            f"{minutes:.1f} minutes of footage cannot show at most {args.target_per_hour:g} "
            f"false starts per hour: that needs {need:.0f} minutes (with no start in "
            f"{C.MIN_EXPECTED:g} / rate hours, a camera at that rate would have raised one 95% "
            f"of the time); give more footage, or a --target-per-hour of at least "
            f"{C.least_target(minutes):.1f}")

    # The paths the daemon runs for this camera (`streamer.routing`): the video detector for
    # the classes it owns, the pose path for its class, each only if the camera watches it.
    loaded = load_worker(cfg.model)
    mcfg = loaded.model_cfg
    pose_model = pose_cache = None
    if cfg.model.pose is not None:
        pose_model, pose_cache = pose_path(cfg.model.pose.checkpoint)
    routing = EventRouting(tuple(mcfg.class_names),
                           pose_model.cfg.label if pose_model is not None else None)
    routing.check(cfg.cameras)
    classes = routing.classes
    watched = routing.watched(s.events)
    labels = args.classes or watched
    unknown = [c for c in labels if c not in watched]
    if unknown:
        raise ConfigError(f"--classes: camera {camera.name} does not watch {unknown[0]!r} (it "
                          f"watches {', '.join(watched)})")
    video = routing.video_classes(s.events) & set(labels)
    paths = Paths(worker=loaded.worker if video else None, model_cfg=mcfg,
                  pose_model=pose_model if routing.pose in labels else None,
                  pose_cache=pose_cache,
                  pose_stride_s=cfg.model.pose.stride_s if cfg.model.pose else 0.5,
                  video_classes=video)
    base = getattr(camera, "smoothing", None) or cfg.smoothing
    clip_seconds = s.window_seconds or mcfg.input.clip_seconds
    t0 = time.monotonic()
    clips = []
    for n, (f, info) in enumerate(zip(files, infos), 1):
        results, mins = paths.score(f, s.stride, info.fps, info.frames / info.fps,
                                    (info.width, info.height), clip_seconds=clip_seconds,
                                    roi=s.roi)
        clips.append(ClipScores(str(f), camera.name, None, 0.0, mins, results))
        log.info("%d/%d %s: %.1f min, %d windows (%.0f s so far)", n, len(files), f.name, mins,
                 len(results), time.monotonic() - t0)
    if args.labelled:
        from train.dataset import scan_dataset_lenient

        records, _ = scan_dataset_lenient(args.labelled, len(classes), require_positives=False,
                                          class_names=classes)
        clips += score_records(paths, records, s.stride, args.loop_s, classes,
                               name=str(args.labelled))
        minutes = C.quiet_minutes(clips)
        if minutes < need:
            raise DataError(f"{minutes:.1f} minutes of quiet footage (with the labelled quiet "
                            f"clips) cannot show at most {args.target_per_hour:g} false starts "
                            f"per hour: that needs {need:.0f} minutes; give more footage, or a "
                            f"--target-per-hour of at least {C.least_target(minutes):.1f}")

    suspects = C.find_suspects(clips, labels)
    if suspects:
        print(f"The model scores {len(suspects)} stretch(es) of this footage like a real event:")
        for sus in suspects:
            print(f"  {sus}")
        if not args.keep_suspects:
            print("Calibrating on them would set the thresholds above real events. Look at "
                  "them: cut events out of the footage (or label them and pass them with "
                  "--labelled), or, if they are not events, run again with --keep-suspects. "
                  "Nothing was written.")
            return 1
        print("--keep-suspects: calibrating with them as quiet footage.")

    cals = [C.calibrate_class(clips, base, classes, label, args.target_per_hour, args.within)
            for label in labels]
    print(report(cals, minutes, args.within, bool(args.labelled)))
    note = (f"vigil calibrate --camera {camera.name}: {minutes:.1f} minutes of quiet footage"
            f"{' and labelled clips ' + str(args.labelled) if args.labelled else ''}, target "
            f"{args.target_per_hour:g} false starts per hour per class\n"
            "per-camera smoothing override (cameras[].smoothing); merge it into that camera's "
            "entry of the config")
    text = C.override_yaml(camera.name, cals, note)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"written to {args.out}")
    failed = [c.label for c in cals if c.after is None]
    if failed:
        print(f"{', '.join(failed)}: no setting up to on_threshold {C.MAX_ON} and "
              f"{C.MAX_WINDOWS} windows meets the target on this footage; the model needs "
              "fine-tuning on this camera (docs/your-cameras.md, 'Fine-tune it on your own "
              "clips').",
              file=sys.stderr)
        return 1
    return 0


def report(cals: list, minutes: float, within: float, labelled: bool) -> str:
    """The before/after table, and the labelled actions found and missed."""
    head = ("| class | setting (on, windows) | false starts /h | calibrated | false starts /h |"
            + (f" found within {within:g} s | found at all |" if labelled else ""))
    lines = [f"{minutes:.1f} minutes of quiet footage", "", head,
             "|---|---|---|---|---|" + ("---|---|" if labelled else "")]
    for c in cals:
        b, ob = c.before, c.outcome_before
        after = "not reachable" if c.after is None else (
            f"{c.after.on_threshold:g}, {c.after.min_windows}" + ("" if c.changed else " (kept)"))
        rate = "" if c.outcome_after is None else f"{c.outcome_after.per_hour:.1f}"
        row = (f"| {c.label} | {b.on_threshold:g}, {b.min_windows} | {ob.per_hour:.1f} | "
               f"{after} | {rate} |")
        if labelled:
            oa = c.outcome_after or ob
            n = len(ob.positives)
            row += (f" {ob.found(within)}/{n} -> {oa.found(within)}/{n} |"
                    f" {ob.found()}/{n} -> {oa.found()}/{n} |")
        lines.append(row)
    if labelled:
        for c in cals:
            oa = c.outcome_after or c.outcome_before
            missed = [s for s in oa.positives if s not in oa.latencies]
            late = [s for s, t in oa.latencies.items() if t > within]
            if oa.positives:
                lines.append(f"{c.label}: found {oa.found()}/{len(oa.positives)}"
                             + (f"; missed: {', '.join(missed)}" if missed else "")
                             + (f"; later than {within:g} s: {', '.join(late)}" if late else ""))
    return "\n".join(lines) + "\n"

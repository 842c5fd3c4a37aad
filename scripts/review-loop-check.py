#!/usr/bin/env python3
"""The review-to-fine-tune loop, once, end to end, on real clips served as file cameras.

    python scripts/review-loop-check.py --data ../shared/real --source collapse_upfall \
        --checkpoint runs/loop/base.pt --holdout Trial3 --out runs/loop/run

What an operator does, measured:
1. **Serve.** Each camera of `--source` (clips told apart by `Cam<N>` in their names) gets one
   video file: its clips that are not held out (`--holdout` in the name), one after another,
   then a few seconds of its last frame. The real `vigil serve` (the example config
   `configs/vigil.yaml`: its smoothing, the pose path, evidence) serves them as file cameras,
   paced at their frame rate, with the review page on.
2. **Mark.** Every event gets a mark through the review page, as a click would send it (the
   page's form, its CSRF token): `real` when its label is the label of the clip playing at the
   time (a collapse during a fall), else `false alarm`. The marks write `DATA_DIR/review/`.
3. **Fine-tune.** `vigil train --config RECIPE --data DATA_DIR/review` from the served model
   (for an ensemble, its member of the recipe's architecture; then `vigil ensemble --swap`),
   with the first N marks for each N of `--marks` (the fewest first), so the table shows how the
   number of marks matters.
4. **Score the held-out clips** of the same cameras (other recordings of the same room), before
   and after, as the daemon scores them (`streamer.tuning.offline`: its windows, worker, pose
   path and smoothing, the example config's settings): false starts per class on quiet clips,
   actions started within 3 s.

The table goes to stdout and `OUT/loop.md`. Exit status 0 when the loop ran, 1 otherwise.
"""
from __future__ import annotations

import argparse
import csv
import http.cookiejar
import json
import logging
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.checkpoint import is_ensemble, load_checkpoint  # noqa: E402
from detector.init_weights import resolve_model_path  # noqa: E402
from streamer.config import SmoothingConfig, load_smoothing  # noqa: E402
from streamer.protocol import parse_iso_utc  # noqa: E402
from streamer.tuning.offline import Paths, class_outcome, pose_path, score_records  # noqa: E402
from streamer.web.store import EventFilter, JournalView  # noqa: E402
from train.dataset import scan_dataset_lenient  # noqa: E402
from vigil_tools.harness import DaemonProcess, free_port  # noqa: E402

log = logging.getLogger("review-loop")
EXAMPLE_CONFIG = ROOT / "configs" / "vigil.yaml"
PAD_S = 8.0          # the last frame held at the end of a camera's footage: open events end


@dataclass
class Piece:
    """One clip's place in a camera's footage (seconds from its first frame)."""
    file: str
    label: str
    t0: float
    t1: float


def camera_of(name: str) -> str | None:
    match = re.search(r"Cam(\d+)", name)
    return f"cam{match.group(1)}" if match else None


def build_footage(rows: list[dict], data: Path, out: Path) -> tuple[Path, list[Piece]]:
    """Concatenate a camera's clips into one MP4 (their size and frame rate, mp4v)."""
    first = cv2.VideoCapture(str(data / rows[0]["file"]))
    fps = first.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(first.get(cv2.CAP_PROP_FRAME_WIDTH)), int(first.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    first.release()
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    pieces, n, last = [], 0, None
    for row in rows:
        cap = cv2.VideoCapture(str(data / row["file"]))
        start = n
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            writer.write(frame)
            last, n = frame, n + 1
        cap.release()
        pieces.append(Piece(row["file"], row["label"], start / fps, n / fps))
    for _ in range(int(PAD_S * fps)):
        writer.write(last)
    writer.release()
    return out, pieces


def footage_minutes(path: Path) -> float:
    """Minutes of clips in a camera's footage file (`build_footage`'s, without its padding)."""
    cap = cv2.VideoCapture(str(path))
    try:
        frames = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return (frames / (cap.get(cv2.CAP_PROP_FPS) or 25.0) - PAD_S) / 60
    finally:
        cap.release()


def daemon_config(footage: dict[str, Path], data_dir: Path, checkpoint: Path, web_port: int
                  ) -> dict:
    """The example config, serving `footage` once each, on free loopback ports."""
    cfg = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    cfg["data_dir"] = str(data_dir)
    cfg["cameras"] = [{"name": cam, "url": str(path), "loop": False}
                      for cam, path in footage.items()]
    cfg["model"]["checkpoint"] = str(checkpoint)
    cfg["alerts"]["endpoint"] = f"tcp://127.0.0.1:{free_port()}"
    cfg["alerts"]["replay_endpoint"] = f"tcp://127.0.0.1:{free_port()}"
    cfg.setdefault("metrics", {})["port"] = free_port()
    cfg["web"] = {"enabled": True, "host": "127.0.0.1", "port": web_port}
    return cfg


def first_frame_times(log_text: str) -> dict[str, float]:
    """camera -> wall time of its first frame, from the daemon's JSON log."""
    out = {}
    for line in log_text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        m = re.match(r"camera (\S+): receiving frames \(", str(rec.get("message", "")))
        if m and m.group(1) not in out:
            out[m.group(1)] = parse_iso_utc(rec["time"])
    return out


def verdict(alert: dict, t_first: float, pieces: list[Piece]) -> tuple[str, str]:
    """(`real` | `false_alarm`, the clip playing) for an event's start alert."""
    w = alert["window"]
    t = (parse_iso_utc(w["start"]) + parse_iso_utc(w["end"])) / 2 - t_first
    playing = next((p for p in pieces if p.t0 <= t < p.t1), None)
    if playing is None:
        return "false_alarm", "(padding)"
    return ("real" if playing.label == alert["label"] else "false_alarm"), playing.file


def post_mark(base: str, event_id: str, value: str) -> None:
    """What the event page's button sends: its form, with the page's CSRF token and cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/events/{urllib.parse.quote(event_id)}", timeout=30).read()
    token = re.search(rb'name="csrf" value="([^"]+)"', page)
    if token is None:
        raise RuntimeError(f"{event_id}: no form on the event page")
    body = urllib.parse.urlencode({"verdict": value, "csrf": token.group(1).decode()}).encode()
    opener.open(f"{base}/events/{urllib.parse.quote(event_id)}/mark", data=body, timeout=60)


def vigil(*args: str, log_path: Path) -> float:
    """Run a `vigil` command (its output to `log_path`); seconds taken."""
    t0 = time.monotonic()
    with log_path.open("w") as f:
        subprocess.run([sys.executable, "-m", "streamer.cli", *args], stdout=f,
                       stderr=subprocess.STDOUT, check=True, cwd=ROOT)
    return time.monotonic() - t0


def score(checkpoint: Path, records, classes, pose) -> list:
    from streamer.config import ServeModelConfig
    from streamer.worker import load_worker

    loaded = load_worker(ServeModelConfig(checkpoint=checkpoint, device="cpu"))
    paths = Paths(loaded.worker, loaded.model_cfg, pose[0], pose[1])
    return score_records(paths, records, stride=8, loop_s=8.0, classes=classes,
                         name=checkpoint.name)


def outcome_row(name: str, clips, smoothing: SmoothingConfig, classes) -> str:
    cells = [name]
    for label in classes:
        o = class_outcome(clips, smoothing.for_class(label), classes, label)
        quiet = sum(o.quiet_minutes.values())
        cells.append(f"{sum(o.false_starts.values())} in {quiet:.1f} min")
        cells.append(f"{o.found(3.0)}/{len(o.positives)}" if o.positives else "-")
    return "| " + " | ".join(cells) + " |"


def serve_and_mark(args, out: Path, data: Path, checkpoint: Path, served: list[dict],
                   cameras: list[str]) -> tuple[list[tuple], Path, dict[str, float]]:
    """Steps 1 and 2: serve each camera's footage once, mark every event through the page.
    Returns (marks as (event, camera, label, verdict, clip playing), the review folder, minutes
    of footage per camera)."""
    # 1. Serve.
    footage, pieces = {}, {}
    for cam in cameras:
        mine = sorted((r for r in served if camera_of(r["file"]) == cam), key=lambda r: r["file"])
        footage[cam], pieces[cam] = build_footage(mine, data, out / f"{cam}.mp4")
    minutes = {cam: pieces[cam][-1].t1 / 60 for cam in cameras}
    log.info("footage: %s", ", ".join(f"{c} {m:.1f} min" for c, m in minutes.items()))
    data_dir = out / "data"
    web_port = free_port()
    daemon = DaemonProcess(out / "daemon", daemon_config(footage, data_dir, checkpoint,
                                                         web_port), log_format="json")
    daemon.start()
    try:
        daemon.wait_ready(timeout=300)
        deadline = time.monotonic() + max(minutes.values()) * 60 + PAD_S + 120
        while time.monotonic() < deadline:
            if daemon.log().count("end of video file") >= len(cameras):
                break
            time.sleep(2.0)
        time.sleep(PAD_S)
        # 2. Mark, through the page.
        first = first_frame_times(daemon.log())
        journal = JournalView(data_dir / "journal.sqlite3")
        events, _ = journal.events(EventFilter(), None, 100000)
        marks = []
        for row in sorted(events, key=lambda e: e.seq):
            detail = journal.event(row.event_id)
            if detail is None or detail.start is None or row.camera not in first:
                continue
            value, clip = verdict(detail.start, first[row.camera], pieces[row.camera])
            post_mark(f"http://127.0.0.1:{web_port}", row.event_id, value)
            marks.append((row.event_id, row.camera, row.label, value, clip))
    finally:
        daemon.stop(timeout=60)
        daemon.close()
    review = data_dir / "review"
    with (out / "marks.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("event", "camera", "label", "verdict", "clip"), *marks])
    log.info("%d marks: %s", len(marks), {v: sum(m[3] == v for m in marks)
                                          for v in ("real", "false_alarm")})

    return marks, review, minutes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a labels.csv dataset folder")
    p.add_argument("--source", required=True, help="its folder whose cameras are served")
    p.add_argument("--checkpoint", default="vigil", help="the model served before the marks")
    p.add_argument("--holdout", required=True,
                   help="clips whose name contains this are held out (scored, never served)")
    p.add_argument("--recipe", default="configs/train/finetune-cpu.yaml")
    p.add_argument("--marks", type=int, nargs="+", default=[10, 20, 1000],
                   help="fine-tune on the first N marks, for each N (all if N is larger)")
    p.add_argument("--beside", nargs="*", default=[], metavar="DATA",
                   help="datasets trained beside the marks (`vigil train --data DATA... REVIEW`), "
                        "as docs/review.md suggests: they also give the validation split that "
                        "one or two cameras' marks cannot (their clips are one group per camera)")
    p.add_argument("--reuse", action="store_true",
                   help="OUT already holds a served run (marks.csv, data/review): fine-tune and "
                        "score again without serving")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = args.data.resolve()
    checkpoint = resolve_model_path(args.checkpoint).resolve()
    rows = [r for r in csv.DictReader((data / "labels.csv").open())
            if r["file"].startswith(args.source + "/") and camera_of(r["file"])]
    served = [r for r in rows if args.holdout not in r["file"]]
    held = {r["file"] for r in rows if args.holdout in r["file"]}
    cameras = sorted({camera_of(r["file"]) for r in served})

    if args.reuse:
        minutes = {cam: footage_minutes(out / f"{cam}.mp4") for cam in cameras}
        marks = [tuple(r) for r in list(csv.reader((out / "marks.csv").open()))[1:]]
        review = out / "data" / "review"
    else:
        marks, review, minutes = serve_and_mark(args, out, data, checkpoint, served, cameras)

    # 3. Fine-tune on the first N marks.
    served_model, _, _ = load_checkpoint(checkpoint)
    manifest = list(csv.DictReader((review / "labels.csv").open()))
    order = {m[0]: i for i, m in enumerate(marks)}
    runs = []
    for n in sorted(set(min(n, len(marks)) for n in args.marks)):
        keep = {m[0] for m in marks[:n]}
        subset = out / f"review-{n}"
        subset.mkdir(exist_ok=True)
        rows_n = [r for r in manifest if Path(r["file"]).stem in keep]
        rows_n.sort(key=lambda r: order.get(Path(r["file"]).stem, 0))
        with (subset / "labels.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(manifest[0].keys()))
            w.writeheader()
            for r in rows_n:
                w.writerow({**r, "file": str((review / r["file"]).resolve())})
        run = out / f"ft-{n}"
        try:
            took = vigil("train", "--config", args.recipe, "--data", *args.beside,
                         str(subset / "labels.csv"),
                         "--allow-outside-root", "--out", str(run), "--no-resume",
                         "--no-progress", "--set", f"train.init={checkpoint}",
                         log_path=out / f"ft-{n}.log")
        except subprocess.CalledProcessError:
            log.warning("fine-tune on %d marks failed: %s", n, out / f"ft-{n}.log")
            runs.append((n, len(rows_n), None, None))
            continue
        after = run / "best.pt"
        if is_ensemble(served_model):
            vigil("ensemble", str(checkpoint), "--swap", str(after), "--out",
                  str(out / f"after-{n}.pt"), log_path=out / f"ensemble-{n}.log")
            after = out / f"after-{n}.pt"
        runs.append((n, len(rows_n), took, after))

    # 4. Score the held-out clips of the same cameras, before and after.
    classes = list(served_model.cfg.class_names)
    records, _ = scan_dataset_lenient(data, len(classes), require_positives=False,
                                      class_names=classes)
    records = [r for r in records
               if any(str(r.video).endswith(f) for f in held)]
    smoothing = load_smoothing(EXAMPLE_CONFIG)
    pose = pose_path("vigil")
    header = ("| model | " + " | ".join(f"{c} false starts on quiet clips | {c} within 3 s"
                                        for c in classes) + " |")
    lines = [f"Held-out clips: {len(records)} of {args.source} (names with {args.holdout!r}), "
             f"cameras {', '.join(cameras)}; served footage {sum(minutes.values()):.1f} min; "
             f"{len(marks)} marks ({sum(m[3] == 'real' for m in marks)} real, "
             f"{sum(m[3] == 'false_alarm' for m in marks)} false alarms)", "",
             header, "|" + "---|" * (1 + 2 * len(classes))]
    lines.append(outcome_row(f"served ({checkpoint.name})",
                             score(checkpoint, records, classes, pose), smoothing, classes))
    for n, clips_n, took, after in runs:
        name = f"fine-tuned on {n} marks ({clips_n} clips, {took:.0f} s)" if after else \
            f"fine-tune on {n} marks failed"
        if after is not None:
            lines.append(outcome_row(name, score(after, records, classes, pose), smoothing,
                                     classes))
        else:
            lines.append(f"| {name} |" + " |" * (2 * len(classes)))
    text = "\n".join(lines)
    print(text)
    (out / "loop.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

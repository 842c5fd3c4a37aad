"""The review page on a large journal: how long the event list takes with 100,000 alerts.

    python -m vigil_tools.bench_web [--alerts 100000] [--repeats 20]

Builds a journal of synthetic events (start, one update, end; three cameras, two labels) in a
temporary data_dir, serves it with the real `WebServer` on loopback and times whole HTTP
requests (server-side query + rendering + transfer) for the first page, a page deep in the
journal (keyset paging), a camera filter, a label filter and a review-state filter. It prints
a Markdown table; docs/review.md keeps the measured numbers.

`fake_journal` is shared with the tests (tests/test_web.py).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

from streamer.journal import Journal
from streamer.protocol import ALERT_SCHEMA, iso_utc

CAMERAS = ("lobby", "yard", "gate")
LABELS = ("fight", "collapse")


def fake_journal(data_dir: Path, alerts: int, t0: float = 1.8e9, cameras=CAMERAS,
                 labels=LABELS, evidence: Optional[dict[int, tuple[str, str]]] = None) -> int:
    """Write `alerts` alerts (events of start, update, end) into `data_dir/journal.sqlite3` in
    one transaction (the journal's own schema, made by `Journal`).

    Args:
        evidence: event index -> (snapshot rel path, clip rel path) to name in its alerts.
    Returns:
        The number of events written.
    """
    with Journal(Path(data_dir) / "journal.sqlite3") as j:
        jid = j.journal_id
    db = sqlite3.connect(str(Path(data_dir) / "journal.sqlite3"))
    rows = []
    seq = 0
    event = 0
    while seq < alerts:
        cam, label = cameras[event % len(cameras)], labels[(event // len(cameras)) % len(labels)]
        event_id = f"{cam}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(t0 + event))}-{event:06d}"
        snap, clip = (evidence or {}).get(event, (None, None))
        for kind in ("start", "update", "end"):
            if seq >= alerts:
                break
            seq += 1
            t = t0 + event * 10 + {"start": 0, "update": 2, "end": 5}[kind]
            msg = {"schema": ALERT_SCHEMA, "seq": seq, "journal_id": jid, "type": kind,
                   "event_id": event_id, "camera": cam, "label": label,
                   "score": round(0.5 + 0.1 * (seq % 5), 2), "box": [0.1, 0.2, 0.5, 0.9],
                   "box_px": [32, 48, 160, 216], "frame_size": [320, 240],
                   "window": {"start": iso_utc(t - 1.0), "end": iso_utc(t)},
                   "published_at": iso_utc(t + 0.2), "latency_s": 0.2,
                   "snapshot": snap if kind == "start" else None,
                   "clip": clip if kind == "end" else None,
                   "reason": "cleared" if kind == "end" else None}
            rows.append((seq, event_id, kind, cam, t + 0.2, json.dumps(msg)))
        event += 1
    with db:
        db.executemany("INSERT INTO alerts(seq, event_id, type, camera, published_at, body) "
                       "VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (seq,))
    db.close()
    return event


def _time(url: str, repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def main(argv: Optional[list[str]] = None) -> int:
    from streamer.web.review import ReviewDataset
    from streamer.web.server import WebServer
    from streamer.web.settings import WebConfig
    from streamer.web.store import JournalView

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alerts", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        events = fake_journal(data, args.alerts)
        # 200 reviewed events, so the review-state filter has something to do.
        view = JournalView(data / "journal.sqlite3")
        review = ReviewDataset(data)
        for i, event_id in enumerate(_event_ids(data, 200)):
            detail = view.event(event_id)
            assert detail is not None
            review.mark(detail, "false_alarm" if i % 2 else "real", "bench")
        server = WebServer(WebConfig(enabled=True, port=0), data).start()
        try:
            base = server.url.rstrip("/")
            deep = _deep_before(data)
            cases = [("first page", "/events"), ("page at the oldest tenth", f"/events?before={deep}"),
                     ("camera filter", "/events?camera=yard"),
                     ("label filter", "/events?label=collapse"),
                     ("label without events (reads every alert)", "/events?label=nothing"),
                     ("review state: false alarm", "/events?state=false_alarm"),
                     ("review state: not reviewed", "/events?state=unreviewed"),
                     ("cameras page", "/")]
            print(f"journal: {args.alerts} alerts, {events} events; {args.repeats} requests each\n")
            print("| page | median ms | p90 ms |\n|---|---|---|")
            for name, path in cases:
                med, p90 = _time(base + path, args.repeats)
                print(f"| {name} | {med:.1f} | {p90:.1f} |")
        finally:
            server.stop()
        print("\n" + transcode_report(data))
    return 0


def transcode_report(workdir: Path, seconds: float = 10.0, size: tuple[int, int] = (480, 270),
                     fps: int = 15) -> str:
    """How long the first view of an event's clip waits: a synthetic fight clip of `seconds`
    at `size` (the evidence's widest: `EVIDENCE_MAX_WIDTH` 480) written as the evidence writer
    does (mp4v), re-encoded to VP8 WebM by `media.transcode_webm`."""
    import os

    from streamer.web.media import transcode_webm
    from train.synth import Scene, write_video

    src = workdir / "clip.mp4"
    write_video(src, Scene("fight", seed=1, width=size[0], height=size[1], fps=fps,
                           frames=int(seconds * fps)))
    t = time.perf_counter()
    transcode_webm(src, workdir / "clip.webm")
    took = time.perf_counter() - t
    load = os.getloadavg()[0]
    return (f"clip re-encoded for the browser: {seconds:g} s at {size[0]}x{size[1]}, {fps} fps "
            f"in {took:.2f} s (load average {load:.1f} on {os.cpu_count()} cores)")


def _event_ids(data: Path, n: int) -> list[str]:
    db = sqlite3.connect(str(data / "journal.sqlite3"))
    try:
        return [r[0] for r in db.execute("SELECT event_id FROM alerts WHERE type='start' "
                                         "ORDER BY seq DESC LIMIT ?", (n,))]
    finally:
        db.close()


def _deep_before(data: Path) -> int:
    db = sqlite3.connect(str(data / "journal.sqlite3"))
    try:
        return int(db.execute("SELECT MAX(seq) FROM alerts").fetchone()[0] // 10)
    finally:
        db.close()


if __name__ == "__main__":
    raise SystemExit(main())

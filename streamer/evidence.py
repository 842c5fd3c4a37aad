"""Evidence for an alert: a JPEG snapshot with the box at `start`, an MP4 clip at `end`, retention.

Layout: `data_dir/events/<camera>/<YYYYMMDD>/<event_id>/{start.jpg,clip.mp4}` (UTC date of the
event's first evidence). Paths hold only the camera name and the event id (sanitised), never a
URL or a credential. Alerts carry the path relative to `data_dir`.

Writing happens off the hot path in one background thread fed by a bounded queue: the caller gets
the relative path at once; when the queue is full the evidence is dropped and counted rather than
stalling the event pipeline. Write failures (a full disk, ENOSPC) are logged once per episode with
a clear line, counted, and writing resumes by itself when space returns. Retention deletes whole
event directories older than `max_age_days`, then the oldest until the total is under `max_bytes`.

Field rules:
* Nothing is written outside `data_dir/events`: a directory on the way to an event's files that is
  a symlink (e.g. `events/<camera>` pointing elsewhere, where retention would never look) is
  replaced by a real directory, with one warning naming it.
* A free-space reserve (`min_free_bytes`) is kept on the file system when `events/` shares it with
  `data_dir` (the journal): a write that would leave less free is refused like a full disk, so
  evidence can never starve the journal.
* Age is judged against `streamer.retention.retention_cutoff`: a wall-clock step forward (a box
  that booted with an old clock, then synced NTP) does not make fresh evidence look old.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np

from .retention import RetentionClock, retention_cutoff

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "start.jpg"
CLIP_NAME = "clip.mp4"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(text: str) -> str:
    """A path component from a camera name or event id: `[A-Za-z0-9_.-]` only, no leading dot."""
    cleaned = re.sub(r"\.{2,}", "_", _SAFE.sub("_", str(text))).lstrip(".")
    return cleaned or "_"


@dataclass
class _Job:
    kind: str                 # "snapshot" | "clip"
    path: str                 # absolute final path
    rel: str
    payload: object
    fps: float = 0.0


def draw_box(frame_rgb: np.ndarray, box_norm_xyxy: Optional[Sequence[float]], label: str,
             score: float) -> np.ndarray:
    """A BGR copy of `frame_rgb` (H, W, 3) with the normalised xyxy box and "label score" drawn."""
    img = cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2BGR)
    if box_norm_xyxy is not None:
        h, w = img.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box_norm_xyxy)
        p1 = (int(round(x1 * (w - 1))), int(round(y1 * (h - 1))))
        p2 = (int(round(x2 * (w - 1))), int(round(y2 * (h - 1))))
        thick = max(2, w // 320)   # JPEG chroma subsampling washes out 1 px lines
        cv2.rectangle(img, p1, p2, (0, 0, 255), thick)
        text = f"{label} {score:.2f}"
        scale = max(0.4, w / 1280)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = p1[1] - 4 if p1[1] - th - 4 >= 0 else min(h - 1, p2[1] + th + 4)
        cv2.rectangle(img, (p1[0], ty - th - base), (p1[0] + tw, ty + base), (0, 0, 255), -1)
        cv2.putText(img, text, (p1[0], ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thick, cv2.LINE_AA)
    return img


class EvidenceWriter:
    """Writes snapshots and clips in a background thread and enforces retention.

    Args:
        data_dir: the daemon's data directory; files go under `data_dir/events/`.
        max_age_days: event directories older than this are deleted (0 or less: no age limit).
        max_bytes: total size kept under `events/` (0 or less: no size limit).
        queue_size: pending writes at most; more are dropped and counted.
        prune_interval_s: how often retention runs (also once at start).
        clock: wall clock (epoch seconds) for date directories, injectable for tests.
        min_free_bytes: free space to leave on the file system when `events/` is on the same
            one as `data_dir` (the journal's); 0: none.
        retention: the process's `RetentionClock` (shared with the journal's pruning); default:
            one on `clock` made now.
    Attributes:
        written, dropped, write_errors: counters (files written, evidence dropped because the
            queue was full, failed writes).
    """

    def __init__(self, data_dir: Union[str, os.PathLike], max_age_days: float = 30.0,
                 max_bytes: int = 10 * 1024 ** 3, queue_size: int = 16,
                 prune_interval_s: float = 600.0, clock: Callable[[], float] = time.time,
                 min_free_bytes: int = 256 * 1024 ** 2,
                 retention: Optional[RetentionClock] = None) -> None:
        self.data_dir = os.fspath(data_dir)
        self.min_free_bytes = max(int(min_free_bytes), 0)
        self.retention = retention if retention is not None else RetentionClock(wall=clock)
        self.root = os.path.join(self.data_dir, "events")
        self.max_age_days = float(max_age_days)
        self.max_bytes = int(max_bytes)
        self.prune_interval_s = float(prune_interval_s)
        self.clock = clock
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self._queue: "queue.Queue[Optional[_Job]]" = queue.Queue(maxsize=max(1, queue_size))
        self._dirs: "OrderedDict[tuple[str, str], str]" = OrderedDict()
        self._failing = False
        self._dropping = False
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "EvidenceWriter":
        """Start the background writer (idempotent). Returns self."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="evidence", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued, then stop. True when the thread ended within `timeout`."""
        if self._thread is None:
            return True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued write is done. True when drained within `timeout`."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    # ----------------------------------------------------------------- the caller's side
    def _event_dir(self, camera: str, event_id: str, when: Optional[float]) -> str:
        """Relative directory of an event; the first evidence fixes its date (events cross midnight)."""
        key = (camera, event_id)
        with self._lock:
            rel = self._dirs.get(key)
            if rel is None:
                day = time.strftime("%Y%m%d", time.gmtime(self.clock() if when is None else when))
                rel = os.path.join("events", safe_name(camera), day, safe_name(event_id))
                self._dirs[key] = rel
                while len(self._dirs) > 4096:        # bounded memory; old events are done
                    self._dirs.popitem(last=False)
            else:
                self._dirs.move_to_end(key)
            return rel

    def _expect_write(self, needed: int) -> bool:
        """Whether a write of `needed` bytes is expected to succeed: the last write did not fail
        and the data directory's file system has room. Alerts go out before the file is written,
        so this is what keeps them from naming files that a disk-full episode never wrote."""
        if self._failing:
            return False
        where = self.root if os.path.isdir(self.root) else self.data_dir   # events/ may be a mount
        try:
            return shutil.disk_usage(where).free >= needed + self._reserve(where)
        except OSError:
            return False

    def _reserve(self, where: str) -> int:
        """Bytes to leave free on `where`'s file system: `min_free_bytes` when it holds `data_dir`
        (the journal) too, else 0."""
        if not self.min_free_bytes:
            return 0
        try:
            return self.min_free_bytes if os.stat(where).st_dev == os.stat(self.data_dir).st_dev \
                else 0
        except OSError:
            return self.min_free_bytes

    def _check_room(self, directory: str, size: int, path: str) -> None:
        """Raise OSError(ENOSPC) when writing `size` bytes would break the free-space reserve."""
        reserve = self._reserve(directory)
        if shutil.disk_usage(directory).free < size + reserve:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)
                          + (f" (keeping {reserve} bytes free for the journal)" if reserve else ""),
                          path)

    def _make_event_dir(self, directory: str) -> None:
        """Create `directory` (under `data_dir/events`) one component at a time, replacing any
        symlink on the way by a real directory: evidence never lands outside `data_dir`.

        Raises:
            OSError: a component cannot be created, or is a file.
        """
        rel = os.path.relpath(directory, self.data_dir)
        if rel.startswith(os.pardir) or os.path.isabs(rel):
            raise OSError(errno.EPERM, "outside data_dir", directory)
        path = self.data_dir
        for part in rel.split(os.sep):
            path = os.path.join(path, part)
            if os.path.islink(path):
                target = os.readlink(path)
                os.unlink(path)         # the link only; what it points to is left alone
                log.warning("evidence: %s was a symlink (to %s) leading outside data_dir, where "
                            "retention never looks; replaced by a real directory", path, target)
            try:
                os.mkdir(path)
            except FileExistsError:
                if not os.path.isdir(path) or os.path.islink(path):
                    raise OSError(errno.ENOTDIR, "not a directory", path) from None

    def _enqueue(self, job: _Job, needed: int) -> Optional[str]:
        """Queue a write. Returns the relative path when it is expected to be written; None when
        the queue is full (dropped) or writes are failing (queued anyway: its success is how the
        writer notices that space came back)."""
        expected = self._expect_write(needed)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("evidence: writer is behind, dropping evidence (first: %s)", job.rel)
            return None
        self._dropping = False
        return job.rel if expected else None

    def snapshot(self, camera: str, event_id: str, frame_rgb: np.ndarray,
                 box_norm_xyxy: Optional[Sequence[float]], label: str, score: float,
                 when: Optional[float] = None) -> Optional[str]:
        """Queue the JPEG of an event's start.

        Args:
            camera, event_id: name the directory (sanitised).
            frame_rgb: (H, W, 3) uint8 RGB; copied, so the caller may reuse it.
            box_norm_xyxy: the box to draw, normalised xyxy (None: no box).
            label, score: drawn next to the box.
            when: epoch seconds of the event's start (date directory); default now.
        Returns:
            the path relative to `data_dir`; None when the queue was full (dropped) or the write
            is not expected to succeed (writes failing, or too little free space).
        """
        rel = os.path.join(self._event_dir(camera, event_id, when), SNAPSHOT_NAME)
        img = draw_box(frame_rgb, box_norm_xyxy, label, score)
        return self._enqueue(_Job("snapshot", os.path.join(self.data_dir, rel), rel, img),
                             needed=img.nbytes // 4)     # JPEG q90 is well under a quarter of raw

    def clip(self, camera: str, event_id: str, frames_rgb: Union[np.ndarray, Sequence[np.ndarray]],
             fps: float, when: Optional[float] = None) -> Optional[str]:
        """Queue an event's MP4 clip ('mp4v').

        Args:
            frames_rgb: (N, H, W, 3) uint8 RGB, oldest first; ownership passes to the writer
                (not copied: pass a gathered copy, never a live ring view).
            fps: frame rate to play it at.
        Returns:
            the path relative to `data_dir`; None when dropped (queue full or no frames) or not
            expected to be written (as for `snapshot`).
        """
        if len(frames_rgb) == 0:
            return None
        rel = os.path.join(self._event_dir(camera, event_id, when), CLIP_NAME)
        return self._enqueue(_Job("clip", os.path.join(self.data_dir, rel), rel, frames_rgb,
                                  fps=max(1.0, float(fps))), needed=_clip_bytes(frames_rgb))

    # ----------------------------------------------------------------- the writer's side
    def _write_bytes(self, path: str, data: bytes) -> None:
        """Write atomically (temporary file, then rename) so a reader never sees half a JPEG."""
        tmp = path + ".part"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            _remove_quietly(tmp)
            raise

    def _write_clip(self, path: str, frames: Union[np.ndarray, Sequence[np.ndarray]],
                    fps: float) -> None:
        """Encode an MP4. OpenCV's writer reports no errno, so free space is checked first and the
        result verified; both failures surface as OSError like any other write."""
        h, w = frames[0].shape[:2]
        directory = os.path.dirname(path)
        self._check_room(directory, _clip_bytes(frames), path)
        tmp = os.path.join(directory, ".clip.tmp.mp4")   # the extension picks the container
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        try:
            if not writer.isOpened():
                raise OSError(errno.EIO, "cannot open video writer", tmp)
            for frame in frames:
                if frame.shape[:2] != (h, w):
                    frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
                writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        try:
            if os.path.getsize(tmp) == 0:
                raise OSError(errno.EIO, "video writer produced an empty file", tmp)
            os.replace(tmp, path)
        except OSError:
            _remove_quietly(tmp)
            raise

    def _do(self, job: _Job) -> None:
        try:
            self._make_event_dir(os.path.dirname(job.path))
            if job.kind == "snapshot":
                ok, buf = cv2.imencode(".jpg", job.payload, [cv2.IMWRITE_JPEG_QUALITY, 90])
                if not ok:
                    raise OSError(errno.EIO, "JPEG encoding failed", job.path)
                self._check_room(os.path.dirname(job.path), len(buf), job.path)
                self._write_bytes(job.path, buf.tobytes())
            else:
                self._write_clip(job.path, job.payload, job.fps)  # type: ignore[arg-type]
        except OSError as exc:
            self.write_errors += 1
            if not self._failing:
                self._failing = True
                hint = " (disk full)" if exc.errno == errno.ENOSPC else ""
                log.error("evidence: cannot write %s: %s%s; evidence is not being saved until "
                          "writes succeed again", job.rel, exc.strerror or exc, hint)
            if exc.errno == errno.ENOSPC:
                self.prune()
            return
        self.written += 1
        if self._failing:
            self._failing = False
            log.info("evidence: writing again (%d writes failed so far)", self.write_errors)

    def _run(self) -> None:
        next_prune = time.monotonic()
        while True:
            if time.monotonic() >= next_prune:
                try:
                    self.prune()
                except OSError as exc:
                    log.warning("evidence: retention failed: %s", exc)
                next_prune = time.monotonic() + self.prune_interval_s
            try:
                job = self._queue.get(timeout=max(0.05, next_prune - time.monotonic()))
            except queue.Empty:
                continue
            try:
                if job is None:
                    return
                self._do(job)
            except Exception:      # never let one bad frame kill the writer
                self.write_errors += 1
                log.exception("evidence: unexpected failure writing %s", job.rel if job else "")
            finally:
                self._queue.task_done()

    # ----------------------------------------------------------------- retention
    def prune(self, now: Optional[float] = None) -> int:
        """Delete event directories beyond the age, then the oldest beyond the total size.

        The newest event directory is never deleted for size (it may be being written).
        Args:
            now: epoch seconds to judge age against (default: `retention_cutoff` on the
                writer's `RetentionClock`, which a forward step of the wall clock cannot move).
        Returns:
            number of event directories deleted.
        """
        max_age_s = self.max_age_days * 86400.0
        cutoff = (now - max_age_s) if now is not None else retention_cutoff(max_age_s,
                                                                              self.retention)
        events = []   # (mtime, size, path)
        if not os.path.isdir(self.root):
            return 0
        for cam in os.scandir(self.root):
            if not cam.is_dir(follow_symlinks=False):
                continue
            for day in os.scandir(cam.path):
                if not day.is_dir(follow_symlinks=False):
                    continue
                for ev in os.scandir(day.path):
                    if ev.is_dir(follow_symlinks=False):
                        events.append((*_dir_stats(ev.path), ev.path))
        removed = 0
        keep = []
        for mtime, size, path in sorted(events):
            if max_age_s > 0 and mtime < cutoff:
                removed += _rmtree(path)
            else:
                keep.append((mtime, size, path))
        if self.max_bytes > 0:
            total = sum(size for _, size, _ in keep)
            for mtime, size, path in keep[:-1]:
                if total <= self.max_bytes:
                    break
                removed += _rmtree(path)
                total -= size
        _remove_empty_dirs(self.root)
        if removed:
            log.info("evidence: retention deleted %d event directories", removed)
        return removed


def _clip_bytes(frames: Union[np.ndarray, Sequence[np.ndarray]]) -> int:
    """Free space an MP4 of these frames needs: mp4v at default quality is rarely above 1/10 of
    raw, plus a margin that keeps the disk usable."""
    h, w = frames[0].shape[:2]
    return len(frames) * h * w * 3 // 10 + (1 << 20)


def _dir_stats(path: str) -> tuple[float, int]:
    """(newest mtime, total bytes) of the files in an event directory."""
    mtime, size = os.stat(path).st_mtime, 0
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            mtime, size = max(mtime, st.st_mtime), size + st.st_size
    return mtime, size


def _rmtree(path: str) -> int:
    try:
        shutil.rmtree(path)
        return 1
    except OSError as exc:
        log.warning("evidence: cannot delete %s: %s", path, exc)
        return 0


def _remove_empty_dirs(root: str) -> None:
    for cam in os.scandir(root):
        if not cam.is_dir(follow_symlinks=False):
            continue
        for day in os.scandir(cam.path):
            if day.is_dir(follow_symlinks=False) and not any(os.scandir(day.path)):
                _rmdir_quietly(day.path)
        if not any(os.scandir(cam.path)):
            _rmdir_quietly(cam.path)


def _rmdir_quietly(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass

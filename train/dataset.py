"""Labelled videos: scanning a dataset into records, and serving `(clip, target)` samples.

`scan_dataset` reads any layout `train.layouts` knows (Vigil's, the reference's, a CSV
manifest, class folders) into `VideoRecord`s: probed videos with their actions (`train.labels`:
class, optional box, optional time segment), group, source and split. Splits and folds are in
`train.splits`.

`ClipDataset` turns records into samples. What a sample covers depends on what is known:

* a video whose actions hold for the whole clip (video-level labels, boxes without segments) is
  one sample over the whole video: T frames spread over it, the reference's
  `linspace(0, n-1, T)` without temporal jitter;
* a video with time segments gives an *inside* sample, a window of `window_s` seconds centred in
  a segment, and (in training) an *outside* sample, a window at least `margin_s` away from every
  segment, whose target is no action;
* a video without any action that is much longer than a window (`> 1.5 * window_s`) is sampled
  by windows too (any stretch of it is "no action"), so its samples look like what the daemon
  sees; window starts lie on a grid of `window_s / 2` so decoded windows can be cached.
* with `weak_positives="mil"`, a video whose action holds for the whole clip but that is longer
  than a window (`> 1.25 * window_s`) is a *bag* of windows (the same grid) instead of one
  squeezed sample: which window it shows is chosen from outside (`choose_bag_window`, by
  `train.mil` from the model's own scores: multiple-instance learning), so the model learns the
  action at the daemon's time scale, not a whole clip compressed into T frames.
* with `hard_negatives` as well (training), a video without any action that is longer than a
  window is a bag too, showing the window the model scores highest for any action: the quiet
  stretch most like an action (hard-negative mining, as object detectors mine the background
  boxes they score highest), instead of a random one.
* in evaluation, whatever `weak_positives`, every video without segments that is longer than
  `1.25 * window_s` is a bag, negatives too, judged by its highest-scoring window of any class
  (`train.mil`): the label never decides how a clip is looked at, and a long quiet clip is
  looked at everywhere, as the daemon would.

With temporal jitter (training), a "pool" of `pool_factor * T` frames spread uniformly over the
sample's span is decoded, cached as one entry, and T of them are drawn with per-segment random
offsets. Randomness comes from a generator seeded with (seed, epoch, index): the same sample gets
the same augmentation whichever DataLoader worker loads it. Workers copy the dataset when an
epoch starts, so call `set_epoch` before iterating and leave `persistent_workers` off.

With `features` (a `train.features.FrameFeatureCache`), a sample's "clip" is the frozen 2D
stages' output for its frames, float16 (T, C', h', w'), instead of uint8 pixels; the frames
chosen are the same. Augmentation is then a horizontal flip (features of the flipped frames) and
temporal jitter only.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from detector.config import InputConfig
from detector.errors import DataError

from . import video_io
from .augment import AugmentConfig, augment_clip
from .cache import ClipCache
from .features import FrameFeatureCache
from .labels import (Actions, action_contradictions, parse_action, parse_class,
                     parse_label_file, problems_of, raise_problems)
from .layouts import (REFERENCE_CSV, Entry, LayoutOptions, Problems, dataset_root,
                      detect_layout, find_entries)
from .records import VideoRecord
from .splits import check_groups_within_split, read_split_files, split_records, stratified_folds

log = logging.getLogger(__name__)

__all__ = ["VideoRecord", "scan_dataset", "check_dataset", "detect_layout", "split_records",
           "stratified_folds", "ClipDataset", "collate", "REFERENCE_CSV", "DEFAULT_CLASSES"]

DEFAULT_CLASSES = ("fight", "collapse")


def _entry_actions(entry: Entry, info: Optional[video_io.VideoInfo],
                   opts: LayoutOptions) -> Actions:
    """Parse an entry's actions against its probed video (None: the video could not be read;
    the labels are still checked as far as they can be without its size and duration).

    Raises:
        DataError: every problem of the entry's labels (`LabelProblems` for several).
    """
    width, height = (info.width, info.height) if info is not None else (None, None)
    duration = info.frames / info.fps if info is not None and info.fps > 0 else None
    k = len(opts.class_names)
    if entry.actions is None:
        return parse_label_file(entry.label_file, width, height, num_classes=k,
                                class_offset=entry.class_offset, class_names=opts.class_names,
                                duration_s=duration)
    rows, segs, wheres = [], [], []
    none_where: Optional[str] = None
    problems: list[str] = []
    for raw in entry.actions:
        try:
            if raw.label_only:                # a row refused by its layout: its class still
                parse_class(raw.label, raw.where, k, 0, opts.class_names)    # checked
                continue
            action = parse_action(raw.label, raw.box, raw.segment, raw.where, width, height,
                                  num_classes=k, class_names=opts.class_names,
                                  duration_s=duration)
        except DataError as exc:
            problems.append(str(exc))         # every bad row is listed, not the first
            continue
        if action is None:
            none_where = none_where or raw.where
        else:
            rows.append(action[0])
            segs.append(action[1])
            wheres.append(raw.where)
    actions = (Actions(np.asarray(rows, np.float32), np.asarray(segs, np.float32)) if rows
               else Actions())
    if entry.actions:
        problems += action_contradictions(actions, entry.actions[-1].where,
                                          none_where is not None, wheres, none_where)
    raise_problems(problems)
    return actions


def _scan(root: Path, opts: LayoutOptions, problems: Problems,
          require_positives: bool) -> list[VideoRecord]:
    if not root.exists():
        problems.add(f"{root}: dataset folder not found")
        return []
    entries = find_entries(root, opts, problems)
    records: list[VideoRecord] = []
    for entry in sorted(entries, key=lambda e: e.stem):
        # Every problem of a video is listed (a user fixes a manifest in one pass): the video's
        # own, then its labels', checked even when the video cannot be read.
        found: list[str] = []
        info: Optional[video_io.VideoInfo] = None
        try:
            info = video_io.probe(entry.video)
        except DataError as exc:
            found.append(str(exc))
        try:
            actions = _entry_actions(entry, info, opts)
        except DataError as exc:
            found += problems_of(exc)
        if found:
            problems.add_all(found)
            continue
        if entry.rejected:
            continue                          # its layout problems are already listed
        assert info is not None
        records.append(VideoRecord(
            stem=entry.stem, video=entry.video, label_file=entry.label_file, width=info.width,
            height=info.height, fps=info.fps, frames=info.frames,
            annotations=actions.annotations, segments=actions.segments,
            source=entry.source or dataset_root(root).name or "all",
            group=entry.group or entry.stem, split=entry.split))
    layout_missing = detect_layout(root) == "folders" and not (root / "videos").is_dir()
    if not entries and not layout_missing and not problems.items:
        problems.add(f"{root}: no videos found")
    elif records and require_positives and not any(r.is_positive for r in records):
        problems.add(f"{root}: no video has an action label (no positives): a detector "
                     f"cannot learn from this dataset")
    read_split_files(dataset_root(root), {e.stem for e in entries}, problems)
    check_groups_within_split(records, problems)
    return records


def layout_options(num_classes: int = 2, class_names: Optional[Sequence[str]] = None,
                   class_folders: Optional[Mapping[str, str]] = None,
                   label_id_base: Optional[int] = None,
                   allow_outside_root: bool = False) -> LayoutOptions:
    """`LayoutOptions` for K classes: the given names, the default names when K is 2, else
    the ids as names."""
    if class_names is None:
        class_names = DEFAULT_CLASSES if num_classes == 2 else [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    return LayoutOptions(tuple(class_names), dict(class_folders or {}), label_id_base,
                         bool(allow_outside_root))


def scan_dataset(root: str | Path, num_classes: int = 2, require_positives: bool = True,
                 class_names: Optional[Sequence[str]] = None,
                 class_folders: Optional[Mapping[str, str]] = None,
                 label_id_base: Optional[int] = None,
                 allow_outside_root: bool = False) -> list[VideoRecord]:
    """Find, probe and parse every video of a dataset, in any layout.

    Args:
        root: dataset folder, or a CSV manifest file.
        num_classes: valid class ids are 0 .. num_classes - 1.
        require_positives: refuse a dataset without a single labelled action (training
            needs one; evaluating on negatives only may turn this off).
        class_names: names accepted in labels (default: fight, collapse for 2 classes).
        class_folders: extra folder-name -> class mappings for the class-folder layout.
        label_id_base: 0 or 1 for the reference layout's ids (None: decide when unambiguous).
        allow_outside_root: read videos and label files that resolve outside the dataset's
            folder (`..` or absolute paths in a manifest, symlinks pointing elsewhere); off,
            each is a problem (`train.layouts`).
    Returns:
        Records sorted by stem.
    Raises:
        DataError: when there is any problem: one line per problem, each naming the file (and
            line) (`train.labels.LabelProblems` when there are several).
    """
    opts = layout_options(num_classes, class_names, class_folders, label_id_base,
                          allow_outside_root)
    problems = Problems(collect=True)
    records = _scan(Path(root), opts, problems, require_positives)
    raise_problems(problems.items)        # every problem in one error, not the first
    return records


def inspect_dataset(root: str | Path, num_classes: int = 2,
                    class_names: Optional[Sequence[str]] = None,
                    class_folders: Optional[Mapping[str, str]] = None,
                    label_id_base: Optional[int] = None, require_positives: bool = True,
                    allow_outside_root: bool = False) -> tuple[list[VideoRecord], list[str]]:
    """The records that load and every problem of the rest, in one pass; never raises.

    Args: as `scan_dataset` (`require_positives`: list "no positives" as a problem).
    Returns:
        (records sorted by stem, messages naming the file (and line) of each problem).
    """
    problems = Problems(collect=True)
    opts = layout_options(num_classes, class_names, class_folders, label_id_base,
                          allow_outside_root)
    records = _scan(Path(root), opts, problems, require_positives=require_positives)
    return records, problems.items


def check_dataset(root: str | Path, num_classes: int = 2,
                  class_names: Optional[Sequence[str]] = None,
                  class_folders: Optional[Mapping[str, str]] = None,
                  label_id_base: Optional[int] = None,
                  allow_outside_root: bool = False) -> list[str]:
    """Every problem of a dataset, found in one pass (for `vigil data check`).

    Args: as `scan_dataset`.
    Returns:
        Messages naming the file (and line) of each problem; empty when the dataset is fine.
    """
    return inspect_dataset(root, num_classes, class_names, class_folders, label_id_base,
                           allow_outside_root=allow_outside_root)[1]


def scan_dataset_lenient(root: str | Path, num_classes: int = 2, require_positives: bool = True,
                         class_names: Optional[Sequence[str]] = None,
                         class_folders: Optional[Mapping[str, str]] = None,
                         label_id_base: Optional[int] = None,
                         allow_outside_root: bool = False
                         ) -> tuple[list[VideoRecord], list[str]]:
    """The records that load, and the problems of those that do not (each logged once).

    What training and evaluation use: one undecodable video or bad row in a set of thousands
    costs that video, not the run. Problems that leave nothing to train on still raise.

    Raises:
        DataError: no usable video, or (with `require_positives`) no positive among them.
    """
    records, problems = inspect_dataset(root, num_classes, class_names, class_folders,
                                        label_id_base, require_positives=False,
                                        allow_outside_root=allow_outside_root)
    for p in problems:
        log.warning("skipped: %s", p)
    if not records:
        raise DataError(problems[0] if problems else f"{root}: no videos found")
    if require_positives and not any(r.is_positive for r in records):
        raise DataError(f"{root}: no video has an action label (no positives): a detector "
                        f"cannot learn from this dataset")
    return records, problems


SampleKind = Literal["whole", "inside", "outside", "window", "bag"]

# A positive video without segments longer than this many windows is a bag under MIL.
BAG_MIN_WINDOWS = 1.25


@dataclass(frozen=True)
class Sample:
    """One item of a `ClipDataset`: a record and which part of it the clip covers."""
    record: int
    kind: SampleKind


def plan_samples(records: Sequence[VideoRecord], window_s: Optional[float], train: bool,
                 margin_s: float = 1.0, weak_positives: str = "whole",
                 hard_negatives: bool = False) -> list[Sample]:
    """The samples of a list of records (see the module docstring for the rules).

    Args:
        records: the videos.
        window_s: seconds a window spans (the model's clip length); None = every sample is a
            whole video, as in the reference implementation.
        train: add the outside-the-segment negatives (evaluation takes one sample per video).
        margin_s: an outside window keeps at least this far from every segment.
        weak_positives: how training samples a positive without segments: `whole` (the
            reference: one sample over the whole video) or `mil` (such a video longer than
            `BAG_MIN_WINDOWS` windows is a `bag` of grid windows, one of them shown per epoch).
            Evaluation ignores it: there every video without segments longer than
            `BAG_MIN_WINDOWS` windows is a bag, negatives too, whichever way the model trained.
        hard_negatives: in training, a video without an action longer than `BAG_MIN_WINDOWS`
            windows is a bag as well, shown by its highest-scoring window (`train.mil`).
    Returns:
        Samples in record order.
    """
    out: list[Sample] = []
    for i, rec in enumerate(records):
        if window_s is None or window_s <= 0 or rec.duration_s <= window_s:
            out.append(Sample(i, "whole"))
        elif rec.has_segments:
            out.append(Sample(i, "inside"))
            if train and outside_starts(rec, window_s, margin_s).size:
                out.append(Sample(i, "outside"))
        elif (((weak_positives == "mil" and rec.is_positive) or not train
               or (hard_negatives and not rec.is_positive))
              and rec.duration_s > BAG_MIN_WINDOWS * window_s):
            # In evaluation every long clip is a bag, whatever its label and however the model
            # was trained, so that a clip is judged as the daemon sees it, by its
            # highest-scoring window (`train.mil`), without the label choosing how.
            out.append(Sample(i, "bag"))
        elif not rec.is_positive and rec.duration_s > 1.5 * window_s:
            out.append(Sample(i, "window"))
        else:
            out.append(Sample(i, "whole"))
    return out


def window_starts(duration_s: float, window_s: float) -> np.ndarray:
    """Window start times on a grid of `window_s / 2` seconds that fit in the video."""
    step = window_s / 2.0
    return np.arange(0.0, max(duration_s - window_s, 0.0) + 1e-6, step)


def outside_starts(rec: VideoRecord, window_s: float, margin_s: float) -> np.ndarray:
    """Grid window starts whose window stays `margin_s` clear of every segment."""
    starts = window_starts(rec.duration_s, window_s)
    seg = rec.segments[~np.isnan(rec.segments).any(axis=1)]
    ok = np.ones(starts.size, bool)
    for s, e in seg:
        ok &= (starts + window_s <= s - margin_s) | (starts >= e + margin_s)
    return starts[ok]


class ClipDataset(Dataset):
    """`(clip, target)` samples of a list of records.

    Args:
        records: the videos (e.g. one split).
        input_cfg: the model's input: `frames` (T), `size` (H, W), and `clip_seconds`, the
            default window length.
        augment: augmentation for training; None (or disabled) for evaluation.
        cache: decoded-clip cache; None decodes every time.
        seed: base seed of the per-sample random generators.
        pool_factor: with temporal jitter, how many times T frames are decoded to draw from.
        window_s: window length in seconds; None = `input_cfg.clip_seconds`; 0 = whole videos
            only (the reference's sampling).
        train: plan training samples (outside-the-segment negatives, random window positions);
            default: whether augmentation is on.
        margin_s: how far an outside window keeps from every segment.
        weak_positives: `whole` or `mil` (see `plan_samples`). A bag shows the window
            `choose_bag_window` last chose for it; before any choice, a random grid window in
            training and the middle one otherwise.
        hard_negatives: long videos without an action are bags too (see `plan_samples`).
        features: serve frozen frame features instead of pixels (module docstring).
    """

    def __init__(self, records: Sequence[VideoRecord], input_cfg: InputConfig,
                 augment: Optional[AugmentConfig] = None, cache: Optional[ClipCache] = None,
                 seed: int = 0, pool_factor: int = 2, window_s: Optional[float] = None,
                 train: Optional[bool] = None, margin_s: float = 1.0,
                 weak_positives: str = "whole", hard_negatives: bool = False,
                 features: Optional[FrameFeatureCache] = None) -> None:
        self.records = list(records)
        self.frames = int(input_cfg.frames)
        self.size = (int(input_cfg.size[0]), int(input_cfg.size[1]))
        self.augment = augment if augment is not None and augment.enabled else None
        self.cache = cache
        self.seed = int(seed)
        self.pool_factor = max(1, int(pool_factor))
        self.epoch = 0
        self.window_s = (input_cfg.clip_seconds if window_s is None else window_s) or None
        self.train = self.augment is not None if train is None else bool(train)
        self.margin_s = float(margin_s)
        self.features = features
        self.samples = plan_samples(self.records, self.window_s, self.train, self.margin_s,
                                    weak_positives, hard_negatives)
        # The chosen window of each bag, per record (-1 = none yet). Shared memory, so that
        # DataLoader workers (persistent ones included) see a choice made in the main process.
        import multiprocessing
        self._bag_choice = multiprocessing.get_context().Array("i", [-1] * len(self.records),
                                                               lock=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def is_positive(self) -> list[bool]:
        """Per index, whether the sample holds an action (for `BalancedBatchSampler`)."""
        return [s.kind != "outside" and self.records[s.record].is_positive for s in self.samples]

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch that seeds augmentation and jitter."""
        self.epoch = int(epoch)

    def bag_indices(self) -> list[int]:
        """Indices of the samples that are bags (see `plan_samples`)."""
        return [i for i, s in enumerate(self.samples) if s.kind == "bag"]

    def bag_windows(self, index: int) -> list[tuple[int, int]]:
        """(first frame, frame count) of every grid window of bag sample `index`, in time order."""
        return self._grid_windows(self.records[self.samples[index].record])

    def _grid_windows(self, rec: VideoRecord) -> list[tuple[int, int]]:
        fps = rec.fps if rec.fps > 0 else 25.0
        w = float(self.window_s)
        out = []
        for start in window_starts(rec.duration_s, w):
            first = min(int(round(start * fps)), rec.frames - 1)
            out.append((first, max(min(int(round(w * fps)), rec.frames - first), 1)))
        return out

    def choose_bag_window(self, index: int, k: int) -> None:
        """Make bag sample `index` show its `k`-th grid window (from `bag_windows`) from now on.

        Raises:
            IndexError: `index` is not a bag or `k` is not one of its windows.
        """
        sample = self.samples[index]
        if sample.kind != "bag" or not 0 <= k < len(self.bag_windows(index)):
            raise IndexError(f"sample {index} ({sample.kind}) has no bag window {k}")
        self._bag_choice[sample.record] = int(k)

    def bag_choice(self, index: int) -> int:
        """The grid window bag sample `index` shows now (-1: none chosen yet)."""
        return int(self._bag_choice[self.samples[index].record])

    def _decode(self, record: VideoRecord, indices: np.ndarray, flip: bool = False
                ) -> np.ndarray:
        """Frames `indices` of `record`: uint8 (N, H, W, 3), or with `features` float16
        (N, C', h', w') frozen features (of the mirrored frames when `flip`)."""
        if self.features is not None:
            return self.features.get(record.video, indices, self.size, flip)
        if self.cache is not None:
            return self.cache.get_or_decode(record.video, indices, self.size)
        return video_io.read_frames(record.video, indices, self.size)

    def span(self, sample: Sample, rng: Optional[np.random.Generator]
             ) -> tuple[int, int, np.ndarray]:
        """The frames a sample covers and the actions its target holds.

        Returns:
            (first frame, frame count, indices into the record's actions).
        """
        rec = self.records[sample.record]
        every = np.arange(len(rec.annotations))
        if sample.kind == "whole":
            return 0, rec.frames, every
        if sample.kind == "bag":
            windows = self._grid_windows(rec)
            k = int(self._bag_choice[sample.record])
            if k < 0:
                k = (int(rng.integers(len(windows))) if self.train and rng is not None
                     else len(windows) // 2)
            first, count = windows[k]
            return first, count, every
        fps = rec.fps if rec.fps > 0 else 25.0
        w = float(self.window_s)
        whole_clip = np.isnan(rec.segments).any(axis=1)
        if sample.kind == "inside":
            segmented = np.flatnonzero(~whole_clip)
            pick = segmented[rng.integers(segmented.size)] if (
                self.train and rng is not None) else segmented[0]
            s, e = rec.segments[pick]
            # Centre the window inside the segment (anywhere in training, the middle otherwise);
            # a segment shorter than the window gets a window centred on it.
            lo, hi = (s + w / 2, e - w / 2) if e - s >= w else ((s + e) / 2, (s + e) / 2)
            centre = rng.uniform(lo, hi) if self.train and rng is not None else (lo + hi) / 2
            start = min(max(centre - w / 2, 0.0), max(rec.duration_s - w, 0.0))
            mid = start + w / 2
            covers = (rec.segments[:, 0] <= mid) & (rec.segments[:, 1] >= mid)
            keep = every[whole_clip | (every == pick) | covers]
        else:
            starts = (outside_starts(rec, w, self.margin_s) if sample.kind == "outside"
                      else window_starts(rec.duration_s, w))
            k = rng.integers(starts.size) if self.train and rng is not None else starts.size // 2
            start = float(starts[k])
            keep = every[whole_clip]
        first = min(int(round(start * fps)), rec.frames - 1)
        count = max(min(int(round(w * fps)), rec.frames - first), 1)
        return first, count, keep

    def load_clip(self, record: VideoRecord, rng: Optional[np.random.Generator] = None,
                  first: int = 0, count: Optional[int] = None, flip: bool = False) -> np.ndarray:
        """T frames of a record's frames `first .. first + count - 1` (default: all), jittered
        when augmentation asks for it.

        Returns:
            (T, H, W, 3) uint8 RGB (with `features`: float16 (T, C', h', w'), mirrored frames'
            when `flip`).
        """
        count = record.frames - first if count is None else count
        jitter = self.augment.temporal_jitter if self.augment is not None else 0.0
        if jitter > 0 and rng is not None:
            pool_n = min(count, self.pool_factor * self.frames)
            pool = self._decode(record, first + video_io.sample_indices(count, pool_n), flip)
            return pool[video_io.sample_indices(pool_n, self.frames, jitter, rng)]
        return self._decode(record, first + video_io.sample_indices(count, self.frames), flip)

    def window_pool_indices(self, record: VideoRecord) -> np.ndarray:
        """Frame indices decoded once for all windows of a record: the whole video at
        `pool_factor * T` frames per window length (at most every frame).

        A window is then cut from this pool, so a 45-second video is decoded once per run (and
        cached), not once per window: decoding up to a late window costs reading every frame
        before it.
        """
        fps = record.fps if record.fps > 0 else 25.0
        rate = min(fps, self.pool_factor * self.frames / float(self.window_s))
        n = max(int(math.ceil(record.duration_s * rate)), 1)
        return video_io.sample_indices(record.frames, min(n, record.frames))

    def load_window(self, record: VideoRecord, first: int, count: int,
                    rng: Optional[np.random.Generator] = None, flip: bool = False) -> np.ndarray:
        """T frames of the record's frames `first .. first + count - 1`, taken from its pool.

        Returns:
            (T, H, W, 3) uint8 RGB (with `features`: float16 (T, C', h', w'), mirrored frames'
            when `flip`).
        """
        pool_idx = self.window_pool_indices(record)
        pool = self._decode(record, pool_idx, flip)
        inside = np.flatnonzero((pool_idx >= first) & (pool_idx < first + count))
        if inside.size == 0:   # a window narrower than the pool's spacing: nearest frame
            inside = np.array([int(np.argmin(np.abs(pool_idx - first)))])
        jitter = self.augment.temporal_jitter if self.augment is not None else 0.0
        pick = video_io.sample_indices(inside.size, self.frames, jitter if rng is not None else 0,
                                       rng)
        return pool[inside[pick]]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        """Returns:
            clip: (T, H, W, 3) uint8 RGB tensor (with `features`: float16 (T, C', h', w')).
            target: {"labels": int64 (K,), "boxes": float32 (K, 4) cxcywh normalised by the
            video's own width/height (zeros for an action without a box), "has_box": bool (K,),
            "stem": str, "size": (W, H) of the video, "source": str, "kind": the sample kind}.
        """
        sample = self.samples[index]
        record = self.records[sample.record]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        # Stored features can only be flipped (by computing them from flipped frames), so the
        # flip is drawn before the frames are read.
        flip = bool(self.features is not None and self.augment is not None
                    and rng.random() < self.augment.hflip)
        first, count, keep = self.span(sample, rng)
        if sample.kind == "whole":
            clip = self.load_clip(record, rng, first, count, flip)
        else:
            clip = self.load_window(record, first, count, rng, flip)
        ann = record.annotations[keep]
        has_box = ~np.isnan(ann[:, 1:5]).any(axis=1)
        scale = np.array([record.width, record.height, record.width, record.height], np.float32)
        # Augmentation moves real boxes; an action without one rides along as the full frame
        # and is zeroed again afterwards.
        boxes = np.where(has_box[:, None], ann[:, 1:5] / scale, [0.0, 0.0, 1.0, 1.0])
        boxes = np.clip(boxes, 0.0, 1.0).astype(np.float32).reshape(-1, 4)
        if self.features is not None:
            if flip:
                boxes = np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0],
                                  boxes[:, 3]], axis=1).astype(np.float32).reshape(-1, 4)
        elif self.augment is not None:
            clip, boxes = augment_clip(clip, boxes, self.augment, rng)
        cxcywh = box_convert(torch.from_numpy(boxes), "xyxy", "cxcywh").to(torch.float32)
        cxcywh[~torch.from_numpy(has_box)] = 0.0
        target = {
            "labels": torch.as_tensor(ann[:, 0], dtype=torch.int64),
            "boxes": cxcywh,
            "has_box": torch.from_numpy(has_box),
            "stem": record.stem,
            "size": (record.width, record.height),
            "source": record.source,
            "kind": sample.kind,
        }
        clip = np.ascontiguousarray(clip)
        if not clip.flags.writeable:          # a memory-mapped feature entry: copy it out
            clip = clip.copy()
        return torch.from_numpy(clip), target


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack clips, keep targets as a list (their K differ).

    Args:
        batch: samples from `ClipDataset`.
    Returns:
        (B, T, H, W, 3) uint8 tensor (with frozen features: float16 (B, T, C', h', w')) and the
        B targets.
    """
    clips = torch.stack([clip for clip, _ in batch])
    return clips, [target for _, target in batch]

"""Datasets of labelled videos: finding them on disk, splitting them, and serving clips.

Two layouts are understood (`scan_dataset` tells them apart):

* Vigil's own::

      DATA/videos/<stem>.<mp4|avi|mkv|mov>
      DATA/labels/<stem>.txt        # "<class_id> <x1> <y1> <x2> <y2>" per action; none = no action
      DATA/splits/{train,val}.txt   # optional, one stem per line

* the reference implementation's: one folder holding the videos, the label files and
  `action_challenge.csv` with the header `video_file,label_file` (paths relative to the folder,
  an empty `label_file` = no action). When its label ids are 1-based (1, 2 used, 0 never), they
  are shifted down by one, as the reference code does.

`ClipDataset` turns records into `(clip, target)` samples. Frame sampling: without temporal
jitter a clip is the reference's `linspace(0, n-1, T)` frames. With jitter (training), a "pool"
of `pool_factor * T` frames spread uniformly over the video (all frames for short videos) is
decoded, cached as one entry, and T of them are drawn from it with per-segment random offsets.
That pool is the same whether or not a cache is used, so results do not depend on the cache.
Randomness comes from a generator seeded with (seed, epoch, index): the same sample gets the
same augmentation whichever DataLoader worker loads it. Workers copy the dataset when an epoch
starts, so call `set_epoch` before iterating and leave `persistent_workers` off.
"""
from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from detector.config import InputConfig
from detector.errors import DataError

from . import video_io
from .augment import AugmentConfig, augment_clip
from .cache import ClipCache
from .labels import parse_label_file, read_class_ids

log = logging.getLogger(__name__)

REFERENCE_CSV = "action_challenge.csv"


@dataclass
class VideoRecord:
    """One labelled video.

    Attributes:
        stem: the video's name without suffix, unique in the dataset.
        video: path of the video file.
        label_file: path of its label file, None when it has none.
        width, height, fps, frames: from `video_io.probe`.
        annotations: (K, 5) float32 `[class, x1, y1, x2, y2]` in pixels; K = 0 for no action.
    """
    stem: str
    video: Path
    label_file: Optional[Path]
    width: int
    height: int
    fps: float
    frames: int
    annotations: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))

    @property
    def is_positive(self) -> bool:
        """Whether the video holds at least one action."""
        return len(self.annotations) > 0

    @property
    def stratum(self) -> int | str:
        """Class used to stratify splits: the first annotation's class, or "none"."""
        return int(self.annotations[0, 0]) if self.is_positive else "none"


class _Problems:
    """Raise on the first problem (scan) or collect them all (check)."""

    def __init__(self, collect: bool) -> None:
        self.collect = collect
        self.items: list[str] = []

    def add(self, message: str) -> None:
        if not self.collect:
            raise DataError(message)
        self.items.append(message)


def detect_layout(root: str | Path) -> Literal["folders", "reference"]:
    """`"reference"` when `root/action_challenge.csv` exists, else `"folders"`."""
    return "reference" if (Path(root) / REFERENCE_CSV).is_file() else "folders"


def _folder_entries(root: Path, problems: _Problems) -> list[tuple[str, Path, Optional[Path], int]]:
    """(stem, video, label file or None, class offset) of Vigil's own layout."""
    videos_dir, labels_dir = root / "videos", root / "labels"
    if not videos_dir.is_dir():
        problems.add(f"{root}: no videos/ folder and no {REFERENCE_CSV}: expected "
                     f"videos/<stem>.mp4 with labels/<stem>.txt, or the reference layout")
        return []
    by_stem: dict[str, Path] = {}
    for video in sorted(videos_dir.iterdir()):
        if not video.is_file() or video.suffix.lower() not in video_io.VIDEO_SUFFIXES:
            continue
        if video.stem in by_stem:
            problems.add(f"{video}: another video has the same stem {video.stem!r} "
                         f"({by_stem[video.stem].name}); stems must be unique")
            continue
        by_stem[video.stem] = video
    if labels_dir.is_dir():
        for label in sorted(labels_dir.glob("*.txt")):
            if label.stem not in by_stem:
                problems.add(f"{label}: label file without a video "
                             f"(no videos/{label.stem}.{{mp4,avi,mkv,mov}})")
    entries = []
    for stem, video in by_stem.items():
        label = labels_dir / f"{stem}.txt"
        entries.append((stem, video, label if label.is_file() else None, 0))
    return entries


def _reference_entries(root: Path, num_classes: int, problems: _Problems
                       ) -> list[tuple[str, Path, Optional[Path], int]]:
    """(stem, video, label file or None, class offset) from `action_challenge.csv`."""
    csv_path = root / REFERENCE_CSV
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.add(f"{csv_path}: cannot read: {exc}")
        return []
    if not rows:
        problems.add(f"{csv_path}:1: empty file; expected the header 'video_file,label_file'")
        return []
    header = [h.strip() for h in rows[0]]
    if "video_file" not in header or "label_file" not in header:
        problems.add(f"{csv_path}:1: header must name video_file and label_file, got "
                     f"{','.join(header)!r}")
        return []
    vcol, lcol = header.index("video_file"), header.index("label_file")
    found: list[tuple[str, Path, Optional[Path]]] = []
    seen: dict[str, int] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{csv_path}:{line_no}"
        video_name = row[vcol].strip() if vcol < len(row) else ""
        label_name = row[lcol].strip() if lcol < len(row) else ""
        if not video_name:
            problems.add(f"{where}: empty video_file")
            continue
        video = root / video_name
        label = root / label_name if label_name else None
        if not video.is_file():
            what = f" (its label file is {label_name})" if label_name else ""
            problems.add(f"{where}: video {video_name!r} not found{what}")
            continue
        if label is not None and not label.is_file():
            problems.add(f"{where}: label file {label_name!r} not found")
            continue
        if video.stem in seen:
            problems.add(f"{where}: stem {video.stem!r} already listed on line {seen[video.stem]}")
            continue
        seen[video.stem] = line_no
        found.append((video.stem, video, label))
    # The reference code numbers classes from 1 in some datasets: shift when 0 is never used
    # and the top id (num_classes) is.
    ids = {i for _, _, label in found if label is not None for i in read_class_ids(label)}
    offset = 1 if ids and 0 not in ids and num_classes in ids else 0
    if offset:
        log.info("%s: label ids are 1..%d; shifting them down by one to 0..%d", csv_path,
                 num_classes, num_classes - 1)
    return [(stem, video, label, offset) for stem, video, label in found]


def _read_splits(root: Path, stems: set[str], problems: _Problems) -> dict[str, list[str]]:
    """Stems listed in `splits/{train,val}.txt`, checked against the dataset's stems."""
    out: dict[str, list[str]] = {}
    where_seen: dict[str, str] = {}
    for split in ("train", "val"):
        path = root / "splits" / f"{split}.txt"
        if not path.is_file():
            continue
        names: list[str] = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            if Path(name).suffix.lower() in video_io.VIDEO_SUFFIXES:
                name = Path(name).stem
            where = f"{path}:{line_no}"
            if name not in stems:
                problems.add(f"{where}: unknown stem {name!r} (no such video in the dataset)")
                continue
            if name in where_seen:
                problems.add(f"{where}: stem {name!r} is already listed at {where_seen[name]}")
                continue
            where_seen[name] = where
            names.append(name)
        out[split] = names
    return out


def _scan(root: Path, num_classes: int, problems: _Problems,
          require_positives: bool) -> list[VideoRecord]:
    if not root.is_dir():
        problems.add(f"{root}: dataset folder not found")
        return []
    if detect_layout(root) == "reference":
        entries = _reference_entries(root, num_classes, problems)
    else:
        entries = _folder_entries(root, problems)
    records: list[VideoRecord] = []
    for stem, video, label, offset in sorted(entries, key=lambda e: e[0]):
        try:
            info = video_io.probe(video)
        except DataError as exc:
            problems.add(str(exc))
            continue
        try:
            ann = parse_label_file(label, info.width, info.height, num_classes=num_classes,
                                   class_offset=offset)
        except DataError as exc:
            problems.add(str(exc))
            continue
        records.append(VideoRecord(stem=stem, video=video, label_file=label, width=info.width,
                                   height=info.height, fps=info.fps, frames=info.frames,
                                   annotations=ann))
    layout_missing = detect_layout(root) == "folders" and not (root / "videos").is_dir()
    if not entries and not layout_missing:  # a missing videos/ folder was reported already
        problems.add(f"{root}: no videos found")
    elif records and require_positives and not any(r.is_positive for r in records):
        problems.add(f"{root}: no video has an action label (no positives): a detector "
                     f"cannot learn from this dataset")
    _read_splits(root, {stem for stem, *_ in entries}, problems)
    return records


def scan_dataset(root: str | Path, num_classes: int = 2,
                 require_positives: bool = True) -> list[VideoRecord]:
    """Find, probe and parse every video of a dataset, in either layout.

    Args:
        root: dataset folder.
        num_classes: valid class ids are 0 .. num_classes - 1.
        require_positives: refuse a dataset without a single labelled action (training
            needs one; evaluating detection on negatives only may turn this off).
    Returns:
        Records sorted by stem.
    Raises:
        DataError: on the first problem, naming the file (and line).
    """
    return _scan(Path(root), num_classes, _Problems(collect=False), require_positives)


def check_dataset(root: str | Path, num_classes: int = 2) -> list[str]:
    """Every problem of a dataset, found in one pass (for `vigil data check`).

    Args:
        root: dataset folder.
        num_classes: valid class ids are 0 .. num_classes - 1.
    Returns:
        Messages naming the file (and line) of each problem; empty when the dataset is fine.
    """
    problems = _Problems(collect=True)
    _scan(Path(root), num_classes, problems, require_positives=True)
    return problems.items


def _group_by_stratum(records: Sequence[VideoRecord]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        groups[str(rec.stratum)].append(i)
    return dict(sorted(groups.items()))


def split_records(records: Sequence[VideoRecord], root: Optional[str | Path],
                  split: Literal["train", "val", "all"], val_fraction: float = 0.2,
                  seed: int = 0) -> list[VideoRecord]:
    """The records of one split.

    `root/splits/{train,val}.txt` decide when present (with only one of them, the other split
    is every record it does not list). Otherwise each class (first annotation's class, or
    "none") is shuffled with `seed` and `round(n * val_fraction)` of it goes to val, at least
    one and never all of a class with two or more videos; a lone video stays in train.

    Args:
        records: from `scan_dataset`.
        root: dataset folder, for its `splits/`; None ignores split files.
        split: "train", "val" or "all".
        val_fraction: share of each class in val when there are no split files.
        seed: shuffling seed; the same seed gives the same split.
    Returns:
        The split's records, in the order of `records`.
    Raises:
        DataError: a split file names a stem that is not among `records`.
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    records = list(records)
    if split == "all":
        return records
    stems = {r.stem for r in records}
    lists = _read_splits(Path(root), stems, _Problems(collect=False)) if root is not None else {}
    if lists:
        if "train" in lists and "val" in lists:
            chosen = set(lists[split])
        elif split in lists:
            chosen = set(lists[split])
        else:
            chosen = stems - set(next(iter(lists.values())))
        return [r for r in records if r.stem in chosen]
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val: set[int] = set()
    for idx in _group_by_stratum(records).values():
        perm = rng.permutation(len(idx))
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2 and val_fraction > 0:
            n_val = min(max(n_val, 1), len(idx) - 1)
        elif len(idx) < 2:
            n_val = 0
        val.update(idx[j] for j in perm[:n_val])
    want_val = split == "val"
    return [r for i, r in enumerate(records) if (i in val) == want_val]


def stratified_folds(records: Sequence[VideoRecord], k: int, seed: int = 0
                     ) -> list[tuple[list[int], list[int]]]:
    """k cross-validation folds with each class spread evenly over them.

    Args:
        records: from `scan_dataset`.
        k: number of folds, 2 <= k <= len(records).
        seed: shuffling seed.
    Returns:
        k pairs (train indices, val indices) into `records`, sorted; the val sets partition
        all indices.
    """
    n = len(records)
    if not 2 <= k <= n:
        raise DataError(f"cross-validation needs 2 <= folds <= {n} videos, got {k}")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    dealt = 0
    # Deal each class round-robin, continuing the count across classes so fold sizes differ
    # by at most one.
    for idx in _group_by_stratum(records).values():
        for j in rng.permutation(len(idx)):
            folds[dealt % k].append(idx[j])
            dealt += 1
    everything = set(range(n))
    return [(sorted(everything - set(f)), sorted(f)) for f in folds]


class ClipDataset(Dataset):
    """`(clip, target)` samples of a list of records.

    Args:
        records: the videos (e.g. one split).
        input_cfg: the model's input: `frames` (T) and `size` (H, W).
        augment: augmentation for training; None (or disabled) for evaluation.
        cache: decoded-clip cache; None decodes every time.
        seed: base seed of the per-sample random generators.
        pool_factor: with temporal jitter, how many times T frames are decoded to draw from.
    """

    def __init__(self, records: Sequence[VideoRecord], input_cfg: InputConfig,
                 augment: Optional[AugmentConfig] = None, cache: Optional[ClipCache] = None,
                 seed: int = 0, pool_factor: int = 2) -> None:
        self.records = list(records)
        self.frames = int(input_cfg.frames)
        self.size = (int(input_cfg.size[0]), int(input_cfg.size[1]))
        self.augment = augment if augment is not None and augment.enabled else None
        self.cache = cache
        self.seed = int(seed)
        self.pool_factor = max(1, int(pool_factor))
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def is_positive(self) -> list[bool]:
        """Per index, whether the sample holds an action (for `BalancedBatchSampler`)."""
        return [r.is_positive for r in self.records]

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch that seeds augmentation and jitter."""
        self.epoch = int(epoch)

    def _decode(self, record: VideoRecord, indices: np.ndarray) -> np.ndarray:
        if self.cache is not None:
            return self.cache.get_or_decode(record.video, indices, self.size)
        return video_io.read_frames(record.video, indices, self.size)

    def load_clip(self, record: VideoRecord, rng: Optional[np.random.Generator] = None
                  ) -> np.ndarray:
        """The T frames of a record, jittered when augmentation asks for it.

        Returns:
            (T, H, W, 3) uint8 RGB.
        """
        jitter = self.augment.temporal_jitter if self.augment is not None else 0.0
        if jitter > 0 and rng is not None:
            pool_n = min(record.frames, self.pool_factor * self.frames)
            pool = self._decode(record, video_io.sample_indices(record.frames, pool_n))
            return pool[video_io.sample_indices(pool_n, self.frames, jitter, rng)]
        return self._decode(record, video_io.sample_indices(record.frames, self.frames))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        """Returns:
            clip: (T, H, W, 3) uint8 RGB tensor.
            target: {"labels": int64 (K,), "boxes": float32 (K, 4) cxcywh normalised by the
            video's own width/height, "stem": str, "size": (W, H) of the video}.
        """
        record = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        clip = self.load_clip(record, rng)
        ann = record.annotations
        scale = np.array([record.width, record.height, record.width, record.height], np.float32)
        boxes = np.clip(ann[:, 1:5] / scale, 0.0, 1.0).astype(np.float32).reshape(-1, 4)
        if self.augment is not None:
            clip, boxes = augment_clip(clip, boxes, self.augment, rng)
        target = {
            "labels": torch.as_tensor(ann[:, 0], dtype=torch.int64),
            "boxes": box_convert(torch.from_numpy(boxes), "xyxy", "cxcywh").to(torch.float32),
            "stem": record.stem,
            "size": (record.width, record.height),
        }
        return torch.from_numpy(np.ascontiguousarray(clip)), target


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack clips, keep targets as a list (their K differ).

    Args:
        batch: samples from `ClipDataset`.
    Returns:
        (B, T, H, W, 3) uint8 tensor and the B targets.
    """
    clips = torch.stack([clip for clip, _ in batch])
    return clips, [target for _, target in batch]

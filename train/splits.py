"""Train/validation splits and cross-validation folds that never separate a group.

Clips cut from one source recording look alike (same scene, same people, same camera), so a clip
in training and its sibling in validation would flatter every number. The unit of every split
here is therefore the *group* (`VideoRecord.group`, the stem when no group is given), and groups
are stratified by class: a group's stratum is the most common action class of its videos, or
"none" (`group_units`). With every video its own group this is the plain stratified split.

Explicit splits win over random ones: `splits/{train,val}.txt` in the dataset folder (else the
reference implementation's `split.json` there, see `read_split_json`), or the
`split` a layout gives each video (`DATA/{train,val}/<class>/` folders, a manifest's `split`
column).
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np

from detector.errors import DataError

from . import video_io
from .layouts import Problems
from .records import VideoRecord

log = logging.getLogger(__name__)


@dataclass
class GroupUnit:
    """The videos of one group: record indices and the group's stratum."""
    name: str
    members: list[int]
    stratum: str


def group_units(records: Sequence[VideoRecord]) -> list[GroupUnit]:
    """One unit per group, in order of first appearance.

    The stratum is the most common class among the group's videos' first actions (ties: the
    lower class id), or "none" when none of them holds an action.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        members[rec.group].append(i)
    units = []
    for name, idx in members.items():
        classes = Counter(str(records[i].stratum) for i in idx if records[i].is_positive)
        stratum = (sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                   if classes else "none")
        units.append(GroupUnit(name, idx, stratum))
    return units


def _by_stratum(units: Sequence[GroupUnit]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for u, unit in enumerate(units):
        out[unit.stratum].append(u)
    return dict(sorted(out.items()))


SPLIT_JSON = "split.json"
# Keys of the reference implementation's split.json, and the split each one names.
_JSON_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val"}
# Keys an entry given as an object may name its video by.
_JSON_ENTRY_KEYS = ("video", "video_file", "video_path", "file", "path", "name", "stem")


def _json_entry_name(entry: object) -> str | None:
    """The video an entry of split.json names: a string, or an object's video/file/path key."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        for key in _JSON_ENTRY_KEYS:
            if isinstance(entry.get(key), str):
                return entry[key]
    return None


def _take(name: str, where: str, stems: set[str], where_seen: dict[str, str],
          names: list[str], problems: Problems) -> None:
    """Append a split file's stem to `names` unless it is unknown or listed twice (reported)."""
    if name not in stems:
        problems.add(f"{where}: unknown stem {name!r} (no such video in the dataset)")
    elif name in where_seen:
        problems.add(f"{where}: stem {name!r} is already listed at {where_seen[name]}")
    else:
        where_seen[name] = where
        names.append(name)


def read_split_json(root: Path, stems: set[str], problems: Problems) -> dict[str, list[str]]:
    """Stems listed in the reference implementation's `root/split.json`.

    The file is a JSON object whose `train` and `val` (also `valid`, `validation`) keys hold
    lists of videos, each a file name, a path (only its stem counts) or a stem, or an object
    with one of the keys `video`, `video_file`, `video_path`, `file`, `path`, `name`, `stem`.
    Other keys (`test`, ...) are ignored. Names are checked against the dataset's stems as
    `splits/*.txt` lines are.
    """
    import json

    path = root / SPLIT_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        problems.add(f"{path}: not readable JSON ({exc})")
        return {}
    if not isinstance(data, dict) or not any(k in data for k in _JSON_SPLITS):
        problems.add(f"{path}: expected an object with 'train' and 'val' lists of videos")
        return {}
    out: dict[str, list[str]] = {}
    where_seen: dict[str, str] = {}
    for key, split in _JSON_SPLITS.items():
        entries = data.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            problems.add(f"{path}: '{key}' is not a list")
            continue
        names = out.setdefault(split, [])
        for i, entry in enumerate(entries):
            where = f"{path}: {key}[{i}]"
            raw = _json_entry_name(entry)
            if raw is None:
                problems.add(f"{where}: {entry!r} names no video (a file name or an object "
                             f"with one of {', '.join(_JSON_ENTRY_KEYS)})")
                continue
            name = Path(raw.replace("\\", "/")).name
            if Path(name).suffix.lower() in video_io.VIDEO_SUFFIXES:
                name = Path(name).stem
            _take(name, where, stems, where_seen, names, problems)
    return out


def read_split_files(root: Path, stems: set[str], problems: Problems) -> dict[str, list[str]]:
    """Stems listed in `root/splits/{train,val}.txt`, checked against the dataset's stems;
    without those files, the reference implementation's `root/split.json`
    (`read_split_json`)."""
    out: dict[str, list[str]] = {}
    where_seen: dict[str, str] = {}
    for split in ("train", "val"):
        path = root / "splits" / f"{split}.txt"
        if not path.is_file():
            continue
        names: list[str] = []
        text = path.read_text(encoding="utf-8-sig")
        for line_no, line in enumerate(text.splitlines(), start=1):
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            if Path(name).suffix.lower() in video_io.VIDEO_SUFFIXES:
                name = Path(name).stem
            where = f"{path}:{line_no}"
            _take(name, where, stems, where_seen, names, problems)
        out[split] = names
    if not out:
        out = read_split_json(root, stems, problems)
    return out


def check_groups_within_split(records: Sequence[VideoRecord], problems: Problems) -> None:
    """Report a group whose videos an explicit split puts on both sides."""
    sides: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.split is not None:
            sides[r.group].add(r.split)
    for group, where in sorted(sides.items()):
        if len(where) > 1:
            problems.add(f"group {group!r} has videos in both train and val: its clips would "
                         f"leak between the splits")


def split_records(records: Sequence[VideoRecord], root: Optional[str | Path],
                  split: Literal["train", "val", "all"], val_fraction: float = 0.2,
                  seed: int = 0) -> list[VideoRecord]:
    """The records of one split.

    `root/splits/{train,val}.txt` decide when present (with only one of them, the other split
    is every record it does not list), else `root/split.json` (the reference implementation's);
    else the split the layout gave the records, when any has one (a record without one is
    trained on, with a warning). Otherwise the groups of each stratum are shuffled with `seed` and
    `round(n_groups * val_fraction)` of them go to val, at least one and never all of a stratum
    with two or more groups; a lone group stays in train.

    Args:
        records: from `scan_dataset`.
        root: dataset folder, for its `splits/`; None ignores split files.
        split: "train", "val" or "all".
        val_fraction: share of each stratum's groups in val when no split is given.
        seed: shuffling seed; the same seed gives the same split.
    Returns:
        The split's records, in the order of `records`.
    Raises:
        DataError: a split file names a stem that is not among `records`.
        ValueError: an unknown split name or a fraction outside [0, 1).
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    records = list(records)
    if split == "all":
        return records
    stems = {r.stem for r in records}
    root_dir = Path(root) if root is not None else None
    if root_dir is not None and root_dir.is_file():
        root_dir = root_dir.parent
    lists = (read_split_files(root_dir, stems, Problems(collect=False))
             if root_dir is not None else {})
    if lists:
        if split in lists:
            chosen = set(lists[split])
        else:
            chosen = stems - set(next(iter(lists.values())))
        return [r for r in records if r.stem in chosen]
    given = [r for r in records if r.split is not None]
    if given:
        if len(given) < len(records):
            # A blank cell is not a reason to re-split what the user did split.
            log.warning("%d of %d videos have no split (train or val) of their own: they are "
                        "trained on", len(records) - len(given), len(records))
        return [r for r in records if (r.split or "train") == split]
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    units = group_units(records)
    rng = np.random.default_rng(seed)
    val_units: set[int] = set()
    for idx in _by_stratum(units).values():
        perm = rng.permutation(len(idx))
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2 and val_fraction > 0:
            n_val = min(max(n_val, 1), len(idx) - 1)
        elif len(idx) < 2:
            n_val = 0
        val_units.update(idx[j] for j in perm[:n_val])
    in_val = {i for u in val_units for i in units[u].members}
    want_val = split == "val"
    return [r for i, r in enumerate(records) if (i in in_val) == want_val]


def stratified_folds(records: Sequence[VideoRecord], k: int, seed: int = 0
                     ) -> list[tuple[list[int], list[int]]]:
    """k cross-validation folds, each group in one fold, each stratum spread evenly.

    Groups are dealt stratum by stratum in a seeded random order, each to the fold holding the
    fewest videos of that stratum (ties: fewest videos in all, then the fold after the last one
    dealt), so with one video per group fold sizes differ by at most one.

    Args:
        records: from `scan_dataset`.
        k: number of folds, 2 <= k <= number of groups.
        seed: shuffling seed.
    Returns:
        k pairs (train indices, val indices) into `records`, sorted; the val sets partition
        all indices.
    Raises:
        DataError: k out of range.
    """
    units = group_units(records)
    if not 2 <= k <= len(units):
        raise DataError(f"cross-validation needs 2 <= folds <= {len(units)} groups of videos, "
                        f"got {k}")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    dealt = 0
    for idx in _by_stratum(units).values():
        in_stratum = [0] * k
        for j in rng.permutation(len(idx)):
            unit = units[idx[j]]
            f = min(range(k), key=lambda f: (in_stratum[f], len(folds[f]), (f - dealt) % k))
            folds[f].extend(unit.members)
            in_stratum[f] += len(unit.members)
            dealt = f + 1
    everything = set(range(len(records)))
    return [(sorted(everything - set(f)), sorted(f)) for f in folds]

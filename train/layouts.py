"""The dataset layouts Vigil reads as they are, without a conversion step.

`find_entries(root)` tells them apart and lists every video with where its labels come from:

* **Vigil's own**: `DATA/videos/<stem>.mp4`, `DATA/labels/<stem>.txt` (`train.labels` forms),
  optional `DATA/splits/{train,val}.txt`.
* **The reference implementation's**: `DATA/action_challenge.csv` (`video_file,label_file`) with
  the videos and label files beside it. Its ids may be 0- or 1-based: the base is read from
  the ids when they can only mean one thing (0 used: 0-based; K used: 1-based), else from
  `label_id_base`; an ambiguous set without that option is refused, never guessed.
* **A CSV manifest**: `DATA/labels.csv` (or `--data some.csv`) with a row per action:
  `file,label[,start_s,end_s][,x1,y1,x2,y2][,group][,dataset][,split]`, labels by name or id;
  a video with no action has one row with label `none`.
* **Class folders**: `DATA/<class>/*.mp4`, optionally `DATA/{train,val}/<class>/*.mp4`, the
  folder names mapped to classes by `FOLDER_CLASSES` (case, `_`, `-` and spaces ignored) and
  any overrides (`data.class_folders`).

Containment. Every video and label file a dataset names must resolve (symlinks followed) inside
the dataset's folder (`dataset_root`): a manifest row `../outside/secret.mp4` or `/etc/shadow`,
and a symlink in a class folder pointing elsewhere, are problems naming the row, never opened.
A user who keeps videos elsewhere on purpose says so: `LayoutOptions.allow_outside_root`
(`data.allow_outside_root: true` in a training config, `--allow-outside-root` on the verbs).

Groups (clips cut from one source recording, kept on one side of every split) come from a CSV
`group` column or, in any layout, a `groups.csv` (`file,group`) at the dataset's root; a video
without a group is its own group. Every file is read with `utf-8-sig` and `newline=""`, so the
byte-order mark and CRLF line ends spreadsheets write are accepted.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Optional, Sequence

from detector.errors import DataError

from . import video_io
from .labels import CLASS_SYNONYMS, normalise_name, read_class_ids

log = logging.getLogger(__name__)

REFERENCE_CSV = "action_challenge.csv"
MANIFEST_CSV = "labels.csv"
GROUPS_CSV = "groups.csv"
SPLIT_FOLDERS = ("train", "val")

Layout = Literal["folders", "reference", "csv", "class-folders"]

FOLDER_CLASSES = CLASS_SYNONYMS   # folder names map to classes as label names do


class Problems:
    """Raise on the first problem (scan) or collect them all (check)."""

    def __init__(self, collect: bool) -> None:
        self.collect = collect
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.add_all([message])

    def add_all(self, messages: Sequence[str]) -> None:
        """Several problems of one video: all listed (raised together when not collecting).
        A non-UTF-8 file name in a message is shown with `\\xNN` escapes, so it can be printed."""
        messages = [video_io.escape_text(m) for m in messages]
        if not self.collect and messages:
            raise DataError("\n".join(messages))
        self.items.extend(messages)


@dataclass
class RawAction:
    """One action as written in a CSV row or implied by a class folder, not yet validated."""
    where: str
    label: str
    box: Optional[list[str]] = None
    segment: Optional[list[str]] = None
    label_only: bool = False     # a row refused for its other cells: only its class is checked


@dataclass
class Entry:
    """One video found in a layout, with where its labels come from.

    Exactly one of `label_file` (a `train.labels` file, or None for none) and `actions` (rows of
    a manifest or a class folder) describes its actions.
    """
    stem: str
    video: Path
    label_file: Optional[Path] = None
    actions: Optional[list[RawAction]] = None
    class_offset: int = 0
    group: Optional[str] = None
    source: Optional[str] = None
    split: Optional[str] = None
    rejected: bool = False        # a layout problem (already reported) leaves it out; its
    #                               labels are still checked, so every problem is listed


@dataclass(frozen=True)
class LayoutOptions:
    """What a layout cannot tell by itself.

    Args:
        class_names: the K foreground classes, for labels written by name.
        class_folders: folder name -> class name or "none", on top of `FOLDER_CLASSES`.
        label_id_base: 0 or 1 for the reference layout's ids; None = only where unambiguous.
        allow_outside_root: read videos and label files that resolve outside the dataset's
            folder (`..`, absolute paths, symlinks elsewhere); off: each is a problem.
    """
    class_names: tuple[str, ...] = ("fight", "collapse")
    class_folders: Mapping[str, str] = field(default_factory=dict)
    label_id_base: Optional[int] = None
    allow_outside_root: bool = False


def detect_layout(root: str | Path) -> Layout:
    """Which layout `root` (a folder, or a CSV manifest file) is in."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return "csv"
    if (root / REFERENCE_CSV).is_file():
        return "reference"
    if (root / MANIFEST_CSV).is_file():
        return "csv"
    if (root / "videos").is_dir():
        return "folders"
    if root.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        return "class-folders"
    return "folders"


def dataset_root(path: str | Path) -> Path:
    """The folder paths in a dataset are relative to (a manifest's folder, or the folder)."""
    path = Path(path)
    return path.parent if path.is_file() else path


def find_entries(root: str | Path, opts: LayoutOptions, problems: Problems) -> list[Entry]:
    """Every video of a dataset in any layout, with its label source, group and split.

    Problems (missing files, unknown classes or folders, bad rows, files outside the dataset's
    folder) are reported through `problems`, each naming the file and line; the rest of the
    dataset is still listed.
    """
    path = Path(root)
    layout = detect_layout(path)
    if layout == "reference":
        entries = _reference_entries(path, opts, problems)
    elif layout == "csv":
        manifest = path if path.is_file() else path / MANIFEST_CSV
        entries = _manifest_entries(manifest, opts, problems)
    elif layout == "class-folders":
        entries = _class_folder_entries(path, opts, problems)
    else:
        entries = _folder_entries(path, problems)
    entries = _inside_root(dataset_root(path), entries, opts, problems)
    _apply_groups_file(dataset_root(path), entries, problems)
    return entries


def _quote(name: str) -> str:
    """A file or folder name quoted for a message (non-UTF-8 bytes as \\xNN, not surrogates)."""
    return repr(name) if video_io.shown(name) == name else f"'{video_io.shown(name)}'"


def outside_root(root: Path, path: Path) -> Optional[str]:
    """Where `path` really is when it resolves (symlinks followed) outside the folder `root`;
    None when it stays inside."""
    try:
        base = root.resolve()
        real = (root / path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:     # a symlink loop, a NUL byte
        return f"unresolvable ({exc})"
    return None if real == base or base in real.parents else str(real)


def _outside_problem(where: str, what: str, name: str, root: Path, real: str) -> str:
    return (f"{where}: {what} {_quote(name)} is outside the dataset folder {root} (resolves to "
            f"{real}); not read (--allow-outside-root, or data.allow_outside_root: true, reads "
            f"files kept elsewhere)")


def _inside_root(root: Path, entries: list[Entry], opts: LayoutOptions,
                 problems: Problems) -> list[Entry]:
    """The entries whose video and label file resolve inside `root` (all of them when
    `opts.allow_outside_root`); each other one is a problem. Catches what a layout listed
    without reading a path from a file: symlinks in `videos/`, `labels/` and class folders."""
    if opts.allow_outside_root:
        return entries
    kept = []
    for e in entries:
        bad = None
        for what, file in (("video", e.video), ("label file", e.label_file)):
            real = outside_root(root, file.absolute()) if file is not None else None
            if real is not None:
                bad = _outside_problem(str(file), what, file.name, root, real)
                break
        if bad is None:
            kept.append(e)
        else:
            problems.add(bad)
    return kept


# --------------------------------------------------------------------------- Vigil's layout
def _folder_entries(root: Path, problems: Problems) -> list[Entry]:
    videos_dir, labels_dir = root / "videos", root / "labels"
    if not videos_dir.is_dir():
        problems.add(f"{root}: no videos/ folder, no {MANIFEST_CSV}, no {REFERENCE_CSV} and no "
                     f"class folders: expected videos/<stem>.mp4 with labels/<stem>.txt, a CSV "
                     f"manifest, the reference layout, or <class>/*.mp4 folders")
        return []
    by_stem: dict[str, Path] = {}
    for video in sorted(videos_dir.iterdir()):
        if not video.is_file() or video.suffix.lower() not in video_io.VIDEO_SUFFIXES:
            continue
        if video.stem in by_stem:
            problems.add(f"{video}: another video has the same stem {_quote(video.stem)} "
                         f"({by_stem[video.stem].name}); stems must be unique")
            continue
        by_stem[video.stem] = video
    if labels_dir.is_dir():
        for label in sorted(labels_dir.glob("*.txt")):
            if label.stem not in by_stem:
                problems.add(f"{label}: label file without a video "
                             f"(no videos/{label.stem}.{{mp4,avi,mkv,mov}})")
    out = []
    for stem, video in by_stem.items():
        label = labels_dir / f"{stem}.txt"
        out.append(Entry(stem, video, label_file=label if label.is_file() else None))
    return out


# --------------------------------------------------------------------------- reference layout
def _read_csv(path: Path, problems: Problems) -> Optional[list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.add(f"{path}: cannot read: {exc}")
        return None


def _reference_entries(root: Path, opts: LayoutOptions, problems: Problems) -> list[Entry]:
    csv_path = root / REFERENCE_CSV
    rows = _read_csv(csv_path, problems)
    if rows is None:
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
    found: list[Entry] = []
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
        if not opts.allow_outside_root:
            escaped = [(what, name, real) for what, name in (("video", video_name),
                                                              ("label file", label_name))
                       if name and (real := outside_root(root, Path(name))) is not None]
            if escaped:
                problems.add_all([_outside_problem(where, *e[:2], root, e[2]) for e in escaped])
                continue
        if not video.is_file():
            what = f" (its label file is {label_name})" if label_name else ""
            problems.add(f"{where}: video {video_name!r} not found{what}")
            continue
        if label is not None and not label.is_file():
            problems.add(f"{where}: label file {label_name!r} not found")
            continue
        if video.stem in seen:
            problems.add(f"{where}: stem {_quote(video.stem)} already listed on line {seen[video.stem]}")
            continue
        seen[video.stem] = line_no
        found.append(Entry(video.stem, video, label_file=label))
    base = _reference_id_base(csv_path, found, len(opts.class_names), opts.label_id_base,
                              problems)
    if base is None:
        return []
    for e in found:
        e.class_offset = base
    return found


def _reference_id_base(csv_path: Path, entries: Sequence[Entry], num_classes: int,
                       option: Optional[int], problems: Problems) -> Optional[int]:
    """0 or 1: the option when given, else what the ids can only mean; None when ambiguous."""
    if option is not None:
        return option
    ids = {i for e in entries if e.label_file is not None for i in read_class_ids(e.label_file)}
    if not ids or 0 in ids or max(ids) > num_classes or min(ids) < 0:
        return 0    # 0-based, or ids wrong under either base: parsing names the bad line
    if num_classes in ids:
        log.info("%s: label ids are 1..%d; shifting them down by one to 0..%d", csv_path,
                 num_classes, num_classes - 1)
        return 1
    problems.add(
        f"{csv_path}: the label files use only the id(s) {sorted(ids)}, which mean different "
        f"classes when ids start at 0 and at 1; say which: --set data.label_id_base=1 (ids "
        f"1..{num_classes}, as the reference code writes them) or --set data.label_id_base=0 "
        f"(vigil data check: --label-id-base)")
    return None


# --------------------------------------------------------------------------- CSV manifest
_FILE_COLUMNS = ("file", "video", "video_file", "path")
_LABEL_COLUMNS = ("label", "class", "action")


def _unique_stem(rel: Path, taken: dict[str, Path]) -> str:
    """The file's stem, or its relative path joined with `__` when another file has it."""
    stem = rel.with_suffix("").name
    if stem in taken and taken[stem] != rel:
        stem = "__".join(rel.with_suffix("").parts)
    return stem


def _manifest_entries(manifest: Path, opts: LayoutOptions, problems: Problems) -> list[Entry]:
    rows = _read_csv(manifest, problems)
    if rows is None:
        return []
    root = manifest.parent
    if not rows:
        problems.add(f"{manifest}:1: empty file; expected a header such as 'file,label'")
        return []
    header = [h.strip().lower() for h in rows[0]]
    col = {name: i for i, name in enumerate(header)}
    fcol = next((col[c] for c in _FILE_COLUMNS if c in col), None)
    lcol = next((col[c] for c in _LABEL_COLUMNS if c in col), None)
    if fcol is None or lcol is None:
        problems.add(f"{manifest}:1: header must name a file column ({'/'.join(_FILE_COLUMNS)}) "
                     f"and a label column ({'/'.join(_LABEL_COLUMNS)}), got {','.join(header)!r}")
        return []
    box_cols = [col.get(c) for c in ("x1", "y1", "x2", "y2")]
    seg_cols = [col.get("start_s", col.get("start")), col.get("end_s", col.get("end"))]

    def cell(row: list[str], i: Optional[int]) -> str:
        return row[i].strip() if i is not None and i < len(row) else ""

    # Every problem of every row is listed (a user fixes the manifest in one pass): a row with
    # a problem leaves its video out (`rejected`), and the video's other rows are still checked.
    by_file: dict[Path, Entry] = {}
    stems: dict[str, Path] = {}
    unusable: dict[Path, list[int]] = {}       # missing or outside: the lines that name it
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"{manifest}:{line_no}"
        name, label = cell(row, fcol), cell(row, lcol)
        if not name:
            problems.add(f"{where}: empty file name")
            continue
        rel = Path(name)
        if rel in unusable:
            unusable[rel].append(line_no)
            continue
        video = root / rel
        real = None if opts.allow_outside_root else outside_root(root, rel)
        if real is not None:
            problems.add(_outside_problem(where, "video", name, root, real))
            unusable[rel] = [line_no]
            continue
        if not video.is_file():
            problems.add(f"{where}: video {name!r} not found (relative to {root})")
            unusable[rel] = [line_no]
            continue
        found: list[str] = []
        if not label:
            found.append(f"{where}: empty label (write 'none' for a video without an action)")
        box = [cell(row, i) for i in box_cols]
        seg = [cell(row, i) for i in seg_cols]
        if any(box) and not all(box):
            found.append(f"{where}: box needs all of x1, y1, x2, y2 (or none of them)")
        if any(seg) and not all(seg):
            found.append(f"{where}: segment needs both start_s and end_s (or neither)")
        split = cell(row, col.get("split")).lower() or None
        if split is not None and split not in SPLIT_FOLDERS:
            found.append(f"{where}: split {split!r} must be train or val (or empty); the video "
                         f"is left out")
            split = None
        entry = by_file.get(rel)
        if entry is None:
            stem = _unique_stem(rel, stems)
            stems[stem] = rel
            # Per-source reports: the dataset column, else the first folder of the path.
            source = cell(row, col.get("dataset")) or (
                video.parent.name if rel.is_absolute()
                else rel.parts[0] if len(rel.parts) > 1 else root.name)
            entry = Entry(stem, video, actions=[], group=cell(row, col.get("group")) or None,
                          source=source, split=split)
            by_file[rel] = entry
        if found:
            problems.add_all(found)
            entry.rejected = True
            if label:       # its class is still checked (every problem of the row is listed)
                entry.actions.append(RawAction(where, label, label_only=True))
            continue
        entry.actions.append(RawAction(where, label, box if all(box) else None,
                                       seg if all(seg) else None))
    for rel, lines in unusable.items():
        if len(lines) > 1:
            problems.add(f"{manifest}:{lines[1]}: video {str(rel)!r} again (lines "
                         f"{', '.join(map(str, lines))}): unusable, see line {lines[0]}")
    return list(by_file.values())


# --------------------------------------------------------------------------- class folders
def folder_class(name: str, opts: LayoutOptions) -> Optional[str]:
    """The class name (or "none") a folder name stands for; None when it maps to nothing."""
    overrides = {normalise_name(k): v for k, v in opts.class_folders.items()}
    key = normalise_name(name)
    return overrides.get(key, FOLDER_CLASSES.get(key))


def _class_folder_entries(root: Path, opts: LayoutOptions, problems: Problems) -> list[Entry]:
    top = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    split_dirs = [p for p in top if p.name.lower() in SPLIT_FOLDERS]
    plan = ([(p.name.lower(), p) for p in split_dirs] if split_dirs else [(None, root)])
    known = set(opts.class_names) | {"none"}
    out: list[Entry] = []
    stems: dict[str, Path] = {}
    for split, base in plan:
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if split is None and folder.name.lower() in SPLIT_FOLDERS:
                continue
            cls = folder_class(folder.name, opts)
            if cls is not None and cls not in known:
                problems.add(f"{folder}: data.class_folders maps {_quote(folder.name)} to "
                             f"{cls!r}, which is not a class ({', '.join(sorted(known))}); "
                             f"its videos are left out")
                continue
            if cls is None:
                problems.add(f"{folder}: folder name {_quote(folder.name)} maps to no class; rename it "
                             f"or map it with data.class_folders (e.g. --set "
                             f"'data.class_folders={{{folder.name}: fight}}'); its videos are "
                             f"left out")
                continue
            for video in sorted(folder.rglob("*")):
                if not video.is_file() or video.suffix.lower() not in video_io.VIDEO_SUFFIXES:
                    continue
                rel = video.relative_to(root)
                stem = _unique_stem(rel, stems)
                stems[stem] = rel
                out.append(Entry(stem, video, actions=[RawAction(str(folder), cls)],
                                 source=root.name, split=split))
    return out


# --------------------------------------------------------------------------- groups
def _apply_groups_file(root: Path, entries: list[Entry], problems: Problems) -> None:
    """Set `group` from `root/groups.csv` (`file,group`; file relative to root, or a stem)."""
    path = root / GROUPS_CSV
    if not path.is_file():
        return
    rows = _read_csv(path, problems)
    if not rows:
        return
    by_rel = {e.video.relative_to(root).as_posix() if e.video.is_relative_to(root) else "": e
              for e in entries}
    by_stem = {e.stem: e for e in entries}
    start = 2 if [c.strip().lower() for c in rows[0]][:2] == ["file", "group"] else 1
    for line_no, row in enumerate(rows[start - 1:], start=start):
        if not any(c.strip() for c in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            problems.add(f"{path}:{line_no}: expected 'file,group'")
            continue
        name, group = row[0].strip(), row[1].strip()
        entry = by_rel.get(Path(name).as_posix()) or by_stem.get(Path(name).stem)
        if entry is None:
            problems.add(f"{path}:{line_no}: {name!r} is not a video of the dataset")
            continue
        entry.group = group

"""Label files and label rows: what action a video holds, where, and when.

One action per line of a label file (`labels/<stem>.txt`), in one of four forms::

    0 120 40 300 200            # class id and pixel box x1 y1 x2 y2 (the original form)
    fight                       # class only: the whole clip is a fight, no box
    collapse t=3.4-11           # class and time segment in seconds, no box
    1 120 40 300 200 t=3.4-11   # class, box and time segment

The class is an id (0 .. K-1, after any `class_offset`) or a class name (`fight`, `collapse`,
case-insensitive, or a name public datasets use: `Fall`, `violence`, `ADL`, ... see
`CLASS_SYNONYMS`); `none` on a line of its own says "no action" explicitly. A file that is
empty or missing means the video holds no action. Blank lines and lines starting with `#` are
ignored; a UTF-8 byte-order mark (spreadsheets write one) is accepted.

Every problem is refused with `DataError("<path>:<line>: <what>")` so the user can open the file
at that line, and every problem of a file is listed, not only the first (`LabelProblems`, one
message per bad line, so a user fixes a file in one pass); the one exception is a box that pokes out of the frame by at most `tolerance_px`
(annotation tools round and drag past the border), which is clipped with a warning. The same
checks serve the CSV manifest (`train.dataset`), one row per action, through `parse_action`.

Parsed actions are `Actions`: `annotations` (K, 5) `[class, x1, y1, x2, y2]` in pixels, the box
NaN for a class-only action, and `segments` (K, 2) `[start_s, end_s]`, NaN for "the whole clip".
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from detector.errors import DataError

log = logging.getLogger(__name__)

NONE_NAMES = ("none", "no_action", "background")
# A segment may end this far past the video's last frame (annotations are rounded to 0.1 s or a
# whole second, and frame counts of some containers are estimates).
SEGMENT_TOLERANCE_S = 0.5


class LabelProblems(DataError):
    """Several problems of one video's labels (a label file's lines, a manifest's rows): the
    message has one line per problem, `problems` lists them."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def problems_of(exc: DataError) -> list[str]:
    """The one-line problems a `DataError` stands for (several for a `LabelProblems`)."""
    return list(exc.problems) if isinstance(exc, LabelProblems) else [str(exc)]


def raise_problems(problems: Sequence[str]) -> None:
    """Raise the problems found (one `DataError`, or a `LabelProblems` for several); no-op for
    none."""
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        raise LabelProblems(problems)


@dataclass
class Actions:
    """The actions of one video.

    Attributes:
        annotations: (K, 5) float32 `[class, x1, y1, x2, y2]` in pixels; the four box values
            are NaN for an action labelled without a box. K = 0 for no action.
        segments: (K, 2) float32 `[start_s, end_s]` in seconds; NaN for an action that holds
            for the whole clip.
    """
    annotations: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    segments: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def __len__(self) -> int:
        return len(self.annotations)


# The names public fight and fall datasets use for their classes (folder names of RWF-2000,
# Hockey Fights, the Surveillance Camera Fight Dataset, Real Life Violence Situations, UR Fall,
# UP-Fall, Le2i, GMDCSA24), after `normalise_name`: accepted wherever a class is named (label
# files, CSV manifests, class folders). Values are class names or "none".
CLASS_SYNONYMS: dict[str, str] = {
    "fight": "fight", "fights": "fight", "fighting": "fight", "violence": "fight",
    "violent": "fight", "fi": "fight",
    "nofight": "none", "nonfight": "none", "nofights": "none", "nonfights": "none",
    "nonviolence": "none", "noviolence": "none", "nonviolent": "none", "normal": "none",
    "none": "none", "nothing": "none", "negative": "none", "nofi": "none",
    "noaction": "none", "background": "none",
    "fall": "collapse", "falls": "collapse", "falling": "collapse", "collapse": "collapse",
    "fallen": "collapse",
    "adl": "none", "adls": "none", "nofall": "none", "nonfall": "none", "daily": "none",
    "dailyactivities": "none", "activitiesofdailyliving": "none",
}


def normalise_name(name: str) -> str:
    """Lower case without spaces, `_` and `-`: `Non_Violence` -> `nonviolence`."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def class_lookup(class_names: Sequence[str]) -> dict[str, int]:
    """Normalised class name -> id, for labels written by name (with `CLASS_SYNONYMS` whose
    class is one of `class_names`; "none" and its synonyms map to -1)."""
    lookup = {normalise_name(n): i for i, n in enumerate(class_names)}
    for synonym, target in CLASS_SYNONYMS.items():
        if target == "none":
            lookup.setdefault(synonym, -1)
        elif normalise_name(target) in lookup:
            lookup.setdefault(synonym, lookup[normalise_name(target)])
    return lookup


def parse_class(token: str, where: str, num_classes: int, class_offset: int = 0,
                class_names: Optional[Sequence[str]] = None) -> Optional[int]:
    """A class id from an id or a name.

    Returns:
        The 0-based class id, or None for an explicit `none`.
    Raises:
        DataError: "<where>: ..." for an unknown name or an id outside the valid range.
    """
    name = token.strip().lower()
    if name in NONE_NAMES:
        return None
    names = list(class_names) if class_names is not None else []
    lookup = class_lookup(names) if names else {}
    if normalise_name(name) in lookup:
        cls = lookup[normalise_name(name)]
        return None if cls < 0 else cls
    try:
        raw = float(token)
    except ValueError:
        known = ", ".join(names + ["none"]) if names else "an integer id"
        raise DataError(f"{where}: unknown class {token.strip()!r} (known: {known})") from None
    if not math.isfinite(raw) or not raw.is_integer():
        raise DataError(f"{where}: class_id {token.strip()!r} is not an integer")
    cls = int(raw) - class_offset
    if not 0 <= cls < num_classes:
        valid = f"{class_offset}..{num_classes - 1 + class_offset}"
        raise DataError(f"{where}: class_id {int(raw)} outside {valid}")
    return cls


def parse_box(tokens: Sequence[str], where: str, width: Optional[int], height: Optional[int],
              tolerance_px: float = 4.0) -> tuple[float, float, float, float]:
    """Four pixel coordinates x1 y1 x2 y2, checked against the frame (None: a frame size not
    known, e.g. an unreadable video: only the box's own shape and the left/top edges are
    checked).

    Raises:
        DataError: not a finite number, an empty box, or a box outside the frame by more than
            `tolerance_px` (a box outside by less is clipped, with a warning).
    """
    values = []
    for name, token in zip(("x1", "y1", "x2", "y2"), tokens):
        try:
            v = float(token)
        except ValueError:
            raise DataError(f"{where}: {name} {token!r} is not a number") from None
        if not math.isfinite(v):
            raise DataError(f"{where}: {name} {token!r} is not a finite number")
        values.append(v)
    x1, y1, x2, y2 = values
    if x2 <= x1:
        raise DataError(f"{where}: x2 ({x2:g}) must be greater than x1 ({x1:g})")
    if y2 <= y1:
        raise DataError(f"{where}: y2 ({y2:g}) must be greater than y1 ({y1:g})")
    if width is None or height is None:
        if min(x1, y1) < -tolerance_px:
            raise DataError(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) starts left of or "
                            f"above the frame by {-min(x1, y1):g} px")
        return x1, y1, x2, y2
    out_by = max(-x1, -y1, x2 - width, y2 - height)
    if out_by > tolerance_px:
        raise DataError(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the "
                        f"{width}x{height} frame by {out_by:g} px (tolerance {tolerance_px:g})")
    if out_by > 0:
        x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            raise DataError(f"{where}: box is empty once clipped to the {width}x{height} frame")
        log.warning("%s: box extends %.3g px outside the %dx%d frame; clipped", where, out_by,
                    width, height)
    return x1, y1, x2, y2


def parse_segment(start: str, end: str, where: str, duration_s: Optional[float] = None
                  ) -> tuple[float, float]:
    """A time segment in seconds, checked against the video's duration.

    Raises:
        DataError: not numbers, negative, reversed or empty, or past the video's end by more
            than `SEGMENT_TOLERANCE_S` (the end is then clipped to the duration).
    """
    try:
        s, e = float(start), float(end)
    except ValueError:
        raise DataError(f"{where}: segment {start!r}-{end!r} is not two numbers of seconds") \
            from None
    if not (math.isfinite(s) and math.isfinite(e)):
        raise DataError(f"{where}: segment {start}-{end} is not finite")
    if s < 0:
        raise DataError(f"{where}: segment starts before the video ({s:g} s)")
    if e <= s:
        raise DataError(f"{where}: segment {s:g}-{e:g} s is reversed or empty (end must be "
                        f"after start)")
    if duration_s is not None and duration_s > 0:
        if s >= duration_s:
            raise DataError(f"{where}: segment {s:g}-{e:g} s starts after the video ends "
                            f"({duration_s:.2f} s)")
        if e > duration_s + SEGMENT_TOLERANCE_S:
            raise DataError(f"{where}: segment {s:g}-{e:g} s ends after the video "
                            f"({duration_s:.2f} s)")
        e = min(e, duration_s)
    return s, e


def check_actions(actions: Actions, where: str, said_none: bool = False) -> None:
    """Refuse labels of one video that contradict each other: `none` next to an action, an
    action of a class for the whole clip next to a segment of that class, or two segments of
    the same class that overlap (one action labelled twice, or a typo in a boundary).

    Raises:
        DataError: "<where>: ..." naming the contradiction (`LabelProblems`: every one of them).
    """
    raise_problems(action_contradictions(actions, where, said_none))


def action_contradictions(actions: Actions, where: str, said_none: bool = False,
                          wheres: Optional[Sequence[str]] = None,
                          none_where: Optional[str] = None) -> list[str]:
    """Every contradiction `check_actions` refuses, one message each (empty when none).

    Args:
        actions, where, said_none: as `check_actions`.
        wheres: each action's own location (`file:line`), to name the lines that contradict.
        none_where: the location of the `none`.
    """
    ann, seg = actions.annotations, actions.segments
    at = list(wheres) if wheres is not None and len(wheres) == len(ann) else [where] * len(ann)
    out: list[str] = []
    if said_none and len(ann):
        out.append(f"{none_where or where}: 'none' and an action are both given for this video")
    whole = np.isnan(seg).any(axis=1)
    mixed: set[float] = set()
    for i in range(len(ann)):
        for j in range(i + 1, len(ann)):
            if ann[i, 0] != ann[j, 0] or whole[i] == whole[j] == True:   # noqa: E712
                continue
            other = f" (and {at[i]})" if at[i] != at[j] else ""
            if whole[i] or whole[j]:
                if float(ann[i, 0]) not in mixed:
                    mixed.add(float(ann[i, 0]))
                    out.append(f"{at[j]}: a class is labelled for the whole clip and also for "
                               f"a segment of it{other}; keep one")
            elif seg[i, 0] < seg[j, 1] and seg[j, 0] < seg[i, 1]:
                out.append(f"{at[j]}: segments {seg[i, 0]:g}-{seg[i, 1]:g} s and "
                           f"{seg[j, 0]:g}-{seg[j, 1]:g} s of the same class overlap{other}")
    return out


def parse_action(cls_token: str, box: Optional[Sequence[str]], segment: Optional[Sequence[str]],
                 where: str, width: Optional[int], height: Optional[int], *, num_classes: int = 2,
                 class_offset: int = 0, class_names: Optional[Sequence[str]] = None,
                 duration_s: Optional[float] = None, tolerance_px: float = 4.0
                 ) -> Optional[tuple[list[float], list[float]]]:
    """One action from its parts (a label-file line or a CSV row).

    Returns:
        (`[class, x1, y1, x2, y2]` with NaN box when `box` is None, `[start_s, end_s]` with NaN
        when `segment` is None), or None for an explicit `none`.
    Raises:
        DataError: "<where>: <what>" for the first problem.
    """
    cls = parse_class(cls_token, where, num_classes, class_offset, class_names)
    if cls is None:
        if box is not None or segment is not None:
            raise DataError(f"{where}: 'none' takes no box and no segment")
        return None
    xyxy = parse_box(box, where, width, height, tolerance_px) if box is not None else (math.nan,) * 4
    seg = (parse_segment(segment[0], segment[1], where, duration_s) if segment is not None
           else (math.nan, math.nan))
    return [float(cls), *xyxy], list(seg)


def _split_segment_token(tokens: list[str], where: str) -> tuple[list[str], Optional[list[str]]]:
    """Separate a trailing `t=START-END` token from the other fields of a line."""
    if not tokens or not tokens[-1].lower().startswith("t="):
        return tokens, None
    body = tokens[-1][2:]
    # The separator is the first '-' after the start's first character (starts are >= 0).
    cut = body.find("-", 1)
    if cut < 0:
        raise DataError(f"{where}: segment {tokens[-1]!r} must be t=START-END in seconds")
    return tokens[:-1], [body[:cut], body[cut + 1:]]


def parse_label_file(path: Optional[str | Path], width: int, height: int,
                     tolerance_px: float = 4.0, num_classes: int = 2,
                     class_offset: int = 0, class_names: Optional[Sequence[str]] = None,
                     duration_s: Optional[float] = None) -> Actions:
    """Read and validate one label file.

    Args:
        path: the label file; None or a missing file means no action.
        width, height: the video's frame size in pixels, to check the boxes against.
        tolerance_px: how far a box may extend outside the frame and still be accepted
            (clipped, with a warning).
        num_classes: valid class ids are 0 .. num_classes - 1 (after `class_offset`).
        class_offset: subtracted from every class id before checking it (1 for the reference
            layout's 1-based ids).
        class_names: names accepted in place of ids (e.g. `fight`, `collapse`).
        duration_s: the video's duration, to check segments against; None skips that check.
    Returns:
        The video's `Actions` (empty for no action).
    Raises:
        DataError: "<path>:<line>: <what>" for a bad line (`LabelProblems` with one message per
            bad line and per contradiction when there are several), or "<path>: ..." when the
            file cannot be read.
    """
    if path is None:
        return Actions()
    path = Path(path)
    if not path.exists():
        return Actions()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read label file: {exc.strerror or exc}") from None

    rows: list[list[float]] = []
    segs: list[list[float]] = []
    wheres: list[str] = []
    none_where: Optional[str] = None
    problems: list[str] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{line_no}"
        try:
            fields, segment = _split_segment_token(stripped.split(), where)
            if len(fields) not in (1, 5):
                raise DataError(f"{where}: expected '<class>' or 5 fields '<class_id> <x1> <y1> "
                                f"<x2> <y2>', optionally followed by t=START-END; got "
                                f"{len(fields)} fields")
            action = parse_action(fields[0], fields[1:] if len(fields) == 5 else None, segment,
                                  where, width, height, num_classes=num_classes,
                                  class_offset=class_offset, class_names=class_names,
                                  duration_s=duration_s, tolerance_px=tolerance_px)
        except DataError as exc:
            problems.append(str(exc))      # and go on: every bad line is listed
            continue
        if action is None:
            none_where = none_where or where
        else:
            rows.append(action[0])
            segs.append(action[1])
            wheres.append(where)
    actions = (Actions(np.asarray(rows, dtype=np.float32), np.asarray(segs, dtype=np.float32))
               if rows else Actions())
    raise_problems(problems + action_contradictions(actions, str(path), none_where is not None,
                                                    wheres, none_where))
    return actions


def read_class_ids(path: str | Path) -> list[int]:
    """The integer class ids of a label file's well-formed lines, without any validation.

    Used to tell the reference layout's 1-based ids from 0-based ones before the files are
    parsed for real; malformed lines and class names are skipped here and reported by
    `parse_label_file`.
    """
    ids: list[int] = []
    try:
        text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return ids
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        if math.isfinite(value) and value.is_integer():
            ids.append(int(value))
    return ids

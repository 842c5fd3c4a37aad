"""Per-camera alert thresholds from the camera's own quiet footage (`vigil calibrate`).

A model raises false alarms where the footage looks like what it learned as an action: cars
passing one camera, people lying down in another room. One global threshold either floods the
first camera or deafens the second. Calibration replays a camera's recorded quiet footage through
the daemon's windows, worker and smoothing (`streamer.tuning.offline`) and picks, per class, the
loosest `on_threshold` / `min_windows` at which that footage raises at most the target number of
false starts per hour: the camera's own operating point (as one calibrates a detector's threshold
to a false-alarm rate on negatives in speaker verification or fraud detection).

How much footage: a rate is shown by footage long enough that a camera at that rate would have
raised starts in it. With no start in `MIN_EXPECTED / rate` hours, a camera whose true rate is
the target would have raised at least one 95% of the time (Poisson: e^-3 = 0.05; the "rule of
three"), so `required_minutes(target)` is 3 / target hours. Shorter footage cannot show the
target and is refused, with the minutes needed.

Events in the footage: a stretch where a class scores at least `SUSPECT_SCORE` for
`SUSPECT_SECONDS` or more looks to the model like a real action. Calibrating on it would raise
the threshold above a real event, so such stretches are listed and nothing is written unless the
user has checked them and says they are not events (`keep_suspects`).

With labelled clips of the camera, the setting that meets the target and still starts the most
labelled actions within `within` seconds is chosen, and the found and missed ones are listed.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from ..config import SmoothingConfig
from .offline import ClassOutcome, ClipScores, class_outcome, class_setting

log = logging.getLogger(__name__)

# Footage must be long enough to expect this many starts at the target rate (rule of three).
MIN_EXPECTED = 3.0
# A stretch of quiet footage this confident for this long looks like a real event.
SUSPECT_SCORE = 0.9
SUSPECT_SECONDS = 3.0
# The strictest setting calibration may choose: beyond it an alert needs a near-certain model
# for several windows, which a real event may never give; the model needs fine-tuning instead.
MAX_ON = 0.95
MAX_WINDOWS = 4
STEP = 0.01


def required_minutes(target_per_hour: float) -> float:
    """Minutes of quiet footage needed to show at most `target_per_hour` false starts."""
    return 60.0 * MIN_EXPECTED / target_per_hour


@dataclass
class Suspect:
    """A stretch of quiet footage the model scores like a real action."""
    stem: str
    label: str
    start_s: float
    end_s: float
    peak: float

    def __str__(self) -> str:
        return (f"{self.stem} {_clock(self.start_s)}-{_clock(self.end_s)}: {self.label} scored "
                f">= {SUSPECT_SCORE:g} for {self.end_s - self.start_s:.1f} s (peak {self.peak:.2f})")


def find_suspects(clips: Sequence[ClipScores], classes: Sequence[str],
                  score: float = SUSPECT_SCORE, seconds: float = SUSPECT_SECONDS
                  ) -> list[Suspect]:
    """Stretches of the quiet clips where a class's window score stays >= `score` for at least
    `seconds` (window end times), in clip order."""
    out = []
    for c in clips:
        if c.label is not None:
            continue
        for label in classes:
            start = end = None
            peak = 0.0
            for r in list(c.results) + [None]:
                s = r.scores[label].score if r is not None and label in r.scores else -1.0
                if s >= score:
                    start = r.t_end_mono if start is None else start
                    end, peak = r.t_end_mono, max(peak, s)
                    continue
                if start is not None and end - start >= seconds:
                    out.append(Suspect(c.stem, label, start, end, peak))
                start = None
                peak = 0.0
    return out


@dataclass
class Calibration:
    """One class's calibration.

    Attributes:
        label: the class.
        target_per_hour: the false starts per hour asked for.
        before, after: the class's smoothing as configured, and as calibrated (None: no setting
            within `MAX_ON` / `MAX_WINDOWS` meets the target).
        outcome_before, outcome_after: what each does on the footage (and labelled clips).
        changed: whether `after` differs from `before`.
    """
    label: str
    target_per_hour: float
    before: SmoothingConfig
    after: Optional[SmoothingConfig]
    outcome_before: ClassOutcome
    outcome_after: Optional[ClassOutcome]

    @property
    def changed(self) -> bool:
        return self.after is not None and (
            self.after.on_threshold, self.after.min_windows) != (
            self.before.on_threshold, self.before.min_windows)


def _grid(lo: float, hi: float = MAX_ON) -> list[float]:
    n = int(round((hi - lo) / STEP))
    return [round(lo + i * STEP, 4) for i in range(n + 1)] if n >= 0 else []


def calibrate_class(clips: Sequence[ClipScores], base: SmoothingConfig, classes: Sequence[str],
                    label: str, target_per_hour: float, within: float = 3.0) -> Calibration:
    """The loosest setting of `label` meeting `target_per_hour` on the quiet clips of `clips`.

    Without labelled action clips of `label`: the configured setting if it already meets the
    target, else `on_threshold` raised in steps of 0.01 (up to `MAX_ON`) at the configured
    `min_windows`, then at one window more, and so on (up to `MAX_WINDOWS`): the first that
    meets it. With them: of every setting from on 0.3 to `MAX_ON` and 1 to `MAX_WINDOWS`
    windows that meets the target, the one that starts the most actions within `within`
    seconds, then the most at all, then the fewest false starts, then the loosest.
    """
    before = replace(base.for_class(label), classes={})
    outcome = class_outcome(clips, before, classes, label)
    met = lambda o: o.per_hour <= target_per_hour + 1e-9          # noqa: E731
    if not outcome.positives:
        if met(outcome):
            return Calibration(label, target_per_hour, before, before, outcome, outcome)
        for windows in range(before.min_windows, MAX_WINDOWS + 1):
            lo = before.on_threshold + (STEP if windows == before.min_windows else 0.0)
            for on in _grid(round(lo, 4)):
                setting = class_setting(base, label, on, windows)
                o = class_outcome(clips, setting, classes, label)
                if met(o):
                    return Calibration(label, target_per_hour, before, setting, outcome, o)
        return Calibration(label, target_per_hour, before, None, outcome, None)
    best = None
    for windows in range(1, MAX_WINDOWS + 1):
        for on in _grid(0.3):
            setting = class_setting(base, label, on, windows)
            o = class_outcome(clips, setting, classes, label)
            if not met(o):
                continue
            key = (o.found(within), o.found(), -o.per_hour, -windows, -on)
            if best is None or key > best[0]:
                best = (key, setting, o)
    if best is None:
        return Calibration(label, target_per_hour, before, None, outcome, None)
    return Calibration(label, target_per_hour, before, best[1], outcome, best[2])


def override_yaml(camera: str, calibrations: Sequence[Calibration], note: str = "") -> str:
    """The per-camera smoothing override (`cameras[].smoothing.classes.<label>`) as YAML text,
    for the calibrated classes that changed."""
    import yaml

    classes = {}
    for c in calibrations:
        if c.after is None or not c.changed:
            continue
        classes[c.label] = {"on_threshold": c.after.on_threshold,
                            "off_threshold": c.after.off_threshold,
                            "min_windows": c.after.min_windows}
    body = yaml.safe_dump({"cameras": [{"name": camera, "smoothing": {"classes": classes}}]},
                          sort_keys=False)
    head = "".join(f"# {line}\n" for line in note.splitlines())
    return head + body


def apply_calibrations(base: SmoothingConfig, calibrations: Sequence[Calibration]
                       ) -> SmoothingConfig:
    """`base` with each calibrated class's setting as its `classes` override (what the daemon
    would run for the camera once the override is in its config)."""
    classes = {k: dict(v) for k, v in base.classes.items()}
    for c in calibrations:
        if c.after is not None and c.changed:
            classes.setdefault(c.label, {}).update(
                on_threshold=c.after.on_threshold, off_threshold=c.after.off_threshold,
                min_windows=c.after.min_windows)
    return replace(base, classes=classes)


def _clock(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def quiet_minutes(clips: Sequence[ClipScores]) -> float:
    """Minutes of quiet footage among `clips`."""
    return float(sum(c.minutes for c in clips if c.label is None))


def least_target(minutes: float) -> float:
    """The lowest target rate (per hour) `minutes` of quiet footage can show."""
    return math.inf if minutes <= 0 else 60.0 * MIN_EXPECTED / minutes


def peak_scores(clips: Sequence[ClipScores], label: str) -> np.ndarray:
    """Every window score of `label` on the quiet clips (for the report's percentiles)."""
    return np.array([r.scores[label].score for c in clips if c.label is None
                     for r in c.results if label in r.scores], dtype=float)

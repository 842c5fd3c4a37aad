"""MediaPipe's own BlazePose landmarks on sample frames: what `tests/test_pose.py` compares ours to.

The frames: matplotlib's sample photograph of Grace Hopper (public domain, in every matplotlib
install) as it is and transformed (mirrored, rotated, letterboxed both ways, shrunk, dark,
greyscale, black), plus, where `../shared/real` is present, frames of a few real clips (never
stored: only MediaPipe's numbers for them are, with the clip and frame they come from).

`scripts/pose-reference.py` runs `mediapipe==0.10.14` (`mp.solutions.pose`, static image mode,
model complexity 1) on them under a separate interpreter that has mediapipe installed
(`make pose-reference` makes one in `.venv-mediapipe`: mediapipe needs jax and a second OpenCV,
which Vigil's own environment must not have), and records the landmarks in
`tests/fixtures/pose/mediapipe_reference.json`.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "pose" / "mediapipe_reference.json"
MEDIAPIPE_PYTHON = ROOT / ".venv-mediapipe" / "bin" / "python"
REAL = ROOT.parent / "shared" / "real"
# (clip under ../shared/real, frame number): falls and daily activities in two rooms, a CCTV
# fight, people walking in a shop.
REAL_FRAMES = (
    ("collapse_gmdcsa24/gmdcsa24_Subject_1_Fall_13.mp4", 10),
    ("collapse_gmdcsa24/gmdcsa24_Subject_1_Fall_13.mp4", 100),
    ("collapse_gmdcsa24/gmdcsa24_Subject_1_ADL_10.mp4", 50),
    ("collapse_upfall/upfall_Activity1_Subject1_Trial1Cam1.mp4", 5),
    ("collapse_upfall/upfall_Activity1_Subject1_Trial1Cam1.mp4", 60),
    ("collapse_upfall/upfall_Activity1_Subject1_Trial1Cam2.mp4", 60),
    ("fight_surv/fight_fi001.mp4", 20),
    ("none_walking/intel_worker-zone-detection.mp4", 40),
)

# Run under MediaPipe's interpreter: frames npz in, landmarks npz out (NaN: nobody found).
MEDIAPIPE_SNIPPET = r"""
import sys, numpy as np, mediapipe as mp
data = np.load(sys.argv[1])
pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                              smooth_landmarks=False, min_detection_confidence=0.5)
out = {}
for name in data.files:
    r = pose.process(np.ascontiguousarray(data[name]))
    lm = np.full((33, 4), np.nan, np.float32)
    if r.pose_landmarks is not None:
        lm[:] = [[p.x, p.y, p.z, p.visibility] for p in r.pose_landmarks.landmark]
    out[name] = lm
np.savez(sys.argv[2], **out)
print(mp.__version__)
"""


def photo() -> np.ndarray:
    """Grace Hopper's portrait from matplotlib's sample data, RGB uint8 (600, 512, 3)."""
    import matplotlib.cbook as cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def photo_frames() -> dict[str, np.ndarray]:
    """The photograph and its variants, by name (RGB uint8)."""
    img = photo()
    h, w = img.shape[:2]
    rot30 = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), 30, 0.8), (w, h))
    wide = np.zeros((h, w * 3, 3), np.uint8)
    wide[:, w:2 * w] = img
    tall = np.zeros((h * 2, w, 3), np.uint8)
    tall[h // 2:h // 2 + h] = img
    grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return {
        "photo": img,
        "mirrored": np.ascontiguousarray(img[:, ::-1]),
        "rotated30": rot30,
        "rotated90": np.ascontiguousarray(np.rot90(img)),
        "upside_down": np.ascontiguousarray(img[::-1, ::-1]),
        "letterbox_wide": wide,
        "letterbox_tall": tall,
        "small": cv2.resize(img, (w // 3, h // 3), interpolation=cv2.INTER_AREA),
        "dark": (img.astype(np.float32) * 0.3).astype(np.uint8),
        "greyscale": grey,
        "cut_by_edge": np.ascontiguousarray(img[:, w // 2:]),
        "black": np.zeros_like(img),
    }


def real_frames() -> dict[str, np.ndarray]:
    """`REAL_FRAMES` decoded from ../shared/real (RGB uint8), by name; {} when it is absent."""
    out = {}
    for rel, index in REAL_FRAMES:
        path = REAL / rel
        if not path.is_file():
            return {}
        cap = cv2.VideoCapture(str(path))
        frame = None
        for _ in range(index + 1):
            ok, frame = cap.read()
            if not ok:
                break
        cap.release()
        if frame is not None:
            out[f"{rel}@{index}"] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return out


def run_mediapipe(python: Path, frames: dict[str, np.ndarray]) -> tuple[dict, str]:
    """MediaPipe's landmarks (33, 4) (x, y, z, visibility; None: nobody) for each frame, and
    its version, computed under `python`."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "frames.npz", Path(tmp) / "landmarks.npz"
        # npz keys cannot hold '/': index the names
        names = list(frames)
        np.savez(src, **{f"f{i}": frames[n] for i, n in enumerate(names)})
        done = subprocess.run([str(python), "-c", MEDIAPIPE_SNIPPET, str(src), str(dst)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"mediapipe failed: {done.stderr[-2000:]}")
        with np.load(dst) as d:
            out = {n: (None if np.isnan(d[f"f{i}"]).all() else d[f"f{i}"])
                   for i, n in enumerate(names)}
    return out, done.stdout.strip().splitlines()[-1]


def load_fixture() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))

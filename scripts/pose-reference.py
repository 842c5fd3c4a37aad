#!/usr/bin/env python3
"""Record MediaPipe's own BlazePose landmarks on the sample frames of `tests/pose_reference.py`
into `tests/fixtures/pose/mediapipe_reference.json`, the numbers `tests/test_pose.py` checks
Vigil's BlazePose against.

    make pose-reference                  # makes .venv-mediapipe (mediapipe==0.10.14), runs this
    python scripts/pose-reference.py --python /path/to/python-with-mediapipe

MediaPipe needs jax, jaxlib and opencv-contrib-python, which must not enter Vigil's own
environment: it runs under its own interpreter (`--python`). Frames of ../shared/real clips are
included when that folder is present; only their landmarks are stored, never their pixels.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pose_reference import (FIXTURE, MEDIAPIPE_PYTHON, photo_frames,  # noqa: E402
                                  real_frames, run_mediapipe)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", type=Path, default=MEDIAPIPE_PYTHON,
                   help="an interpreter with mediapipe==0.10.14 (default .venv-mediapipe)")
    p.add_argument("--out", type=Path, default=FIXTURE)
    args = p.parse_args()
    if not args.python.exists():
        print(f"{args.python}: no such interpreter (make pose-reference creates it)",
              file=sys.stderr)
        return 2
    frames = {**photo_frames(), **real_frames()}
    landmarks, version = run_mediapipe(args.python, frames)
    body = {"mediapipe": version, "mode": "static_image_mode=True, model_complexity=1",
            "frames": {name: {"shape": list(frames[name].shape),
                              "landmarks": None if lm is None else
                              [[round(float(v), 6) for v in row] for row in lm]}
                       for name, lm in landmarks.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    found = sum(v is not None for v in landmarks.values())
    print(f"wrote {args.out}: mediapipe {version}, {len(frames)} frames, a person in {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

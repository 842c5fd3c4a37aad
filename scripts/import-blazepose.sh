#!/usr/bin/env bash
# Takes BlazePose's two model files (and the licence) out of the mediapipe==0.10.14 wheel into
# detector/weights/blazepose/, and checks them against the hashes in NOTICE.md. Run once when
# the files must be re-created; the repository already carries them (Apache-2.0).
#   scripts/import-blazepose.sh [WHEEL]     (default: pip download --no-deps mediapipe==0.10.14)
set -euo pipefail
cd "$(dirname "$0")/.."
out=detector/weights/blazepose
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wheel=${1:-}
if [ -z "$wheel" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "mediapipe==0.10.14"
  wheel=$(ls "$tmp"/mediapipe-0.10.14-*.whl | head -n 1)
fi
python3 - "$wheel" "$out" <<'PY'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
members = {"mediapipe/modules/pose_detection/pose_detection.tflite": "pose_detection.tflite",
           "mediapipe/modules/pose_landmark/pose_landmark_full.tflite": "pose_landmark_full.tflite",
           "mediapipe-0.10.14.dist-info/LICENSE": "LICENSE"}
with zipfile.ZipFile(wheel) as z:
    for src, dst in members.items():
        (out / dst).write_bytes(z.read(src))
        print(f"wrote {out / dst}")
PY
# the hashes NOTICE.md states
grep -oE '`[a-z_]+\.tflite` \| [0-9]+ \| `[0-9a-f]{64}`' "$out/NOTICE.md" | while read -r line; do
  name=$(echo "$line" | cut -d'`' -f2); sum=$(echo "$line" | grep -oE '[0-9a-f]{64}')
  echo "$sum  $out/$name" | sha256sum --check --quiet && echo "$name: hash OK"
done

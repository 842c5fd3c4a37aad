"""Running BlazePose's two `.tflite` files, offline, with LiteRT.

The files are MediaPipe's own (`mediapipe==0.10.14`, Apache-2.0; `detector/weights/blazepose/`,
with the licence beside them), run unchanged by `ai-edge-litert`, Google's TensorFlow Lite
runtime (a 21 MB wheel, no TensorFlow, no second OpenCV). Why not ONNX: converting with
`tf2onnx` failed on the detector's float16 weights, and on the landmark model, which did
convert, onnxruntime was no faster (BENCHMARKS.md, "Pose path"); running the original files
also makes our numbers MediaPipe's own, XNNPACK kernels included.
"""
from __future__ import annotations

import logging
import re
from importlib.resources import files
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

log = logging.getLogger(__name__)

# Package data (setup.cfg): an installed Vigil has them too.
BLAZEPOSE_DIR = Path(str(files("detector") / "weights" / "blazepose"))
DETECTOR_FILE = "pose_detection.tflite"
LANDMARK_FILE = "pose_landmark_full.tflite"


def _output_order(name: str) -> int:
    """TFLite output names `Identity`, `Identity_1`, ...: their index (MediaPipe's order)."""
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else 0


class TfliteModel:
    """One `.tflite` model, called with one input array, returning its outputs in order.

    Args:
        path: the model file.
        threads: CPU threads LiteRT may use for this model.
        input_shape: the input shape the caller will feed (checked once, at load).
    Raises:
        CheckpointError: the file is missing, is not a TFLite model, or has another input shape;
            the message names the file.
    """

    def __init__(self, path: str | Path, threads: int = 1,
                 input_shape: tuple[int, ...] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"pose model {self.path} is missing: reinstall Vigil "
                                  f"(it ships with the package)")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:  # a broken install, not user input, but say what to do
            raise CheckpointError(f"pose model {self.path} needs the ai-edge-litert package: "
                                  f"pip install ai-edge-litert ({e})") from e
        try:
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise CheckpointError(f"pose model {self.path} cannot be read as a TFLite model: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                  ) from None
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            raise CheckpointError(f"pose model {self.path} has {len(inputs)} inputs, expected 1")
        self._input = inputs[0]["index"]
        self.input_shape = tuple(int(v) for v in inputs[0]["shape"])
        if input_shape is not None and self.input_shape != tuple(input_shape):
            raise CheckpointError(f"pose model {self.path} takes input {self.input_shape}, "
                                  f"expected {tuple(input_shape)}: not the BlazePose file")
        outputs = sorted(self._interpreter.get_output_details(),
                         key=lambda d: _output_order(d["name"]))
        self._outputs = [d["index"] for d in outputs]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the model on `x` (float32, `input_shape`); its outputs, copied, in order."""
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(x, dtype=np.float32))
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i).copy() for i in self._outputs]

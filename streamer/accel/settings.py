"""The `accel:` section: the throughput switches of the daemon's GPU path (issue 29).

Every default is today's path: a switch is turned on by default only once a GPU run has measured
it faster (`scripts/gpu-check.sh`, BENCHMARKS.md). Where a switch cannot work on the configured
device it is refused here, at load, with the reason (CUDA graphs on a CPU); where the device is
`auto`, the daemon checks again once the device is known (`check_device`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from detector.errors import ConfigError
from detector.schema import Validated, setting


@dataclass
class AccelConfig(Validated):
    """The `accel:` section.

    Args:
        fold_bn: fold batch norm into the convolutions before serving
            (`detector.inference.fold_bn`; same scores up to float rounding).
        channels_last: weights and input in `torch.channels_last_3d` (cuDNN skips its layout
            conversions; measured 1.30x for the seed model on an H200 in the bench).
        compile: null (no compile), or a `torch.compile` mode for the fixed batch sizes,
            compiled and warmed up at start (about a minute on a small CPU).
        cuda_graphs: replay the compiled model as CUDA graphs (torch.compile's
            `reduce-overhead`, or `max-autotune` with `compile: max-autotune-no-cudagraphs`);
            CUDA only.
        device_ring: keep each camera's frames on the model's device, uploaded once, and gather
            windows there (`streamer/accel/device_ring.py`).
        capture: `threads` (one capture thread per camera) or `processes` (one capture process
            per camera writing a shared-memory ring; decoding then never holds the worker's GIL).
    """
    fold_bn: bool = setting(False,
        doc="fold batch norm into the convolutions for inference (same scores up to rounding)")
    channels_last: bool = setting(False,
        doc="run the model and its input in `channels_last_3d` memory format")
    compile: Optional[Literal["default", "max-autotune-no-cudagraphs"]] = setting(None,
        doc="null, or a `torch.compile` mode (`default`, `max-autotune-no-cudagraphs`); the fixed "
            "batch sizes are compiled and warmed up at start")
    cuda_graphs: bool = setting(False,
        doc="replay the compiled model as CUDA graphs (torch.compile `reduce-overhead`); CUDA "
            "only")
    device_ring: bool = setting(False,
        doc="upload each frame to the model's device once and gather windows there")
    capture: Literal["threads", "processes"] = setting("threads",
        doc="`threads`, or `processes`: one capture process per camera, frames in shared memory")

    SECTION = "accel"

    @property
    def compiled(self) -> bool:
        """Whether the model is compiled (compile or CUDA graphs asked for)."""
        return self.compile is not None or self.cuda_graphs

    def compile_mode(self) -> Optional[str]:
        """The `torch.compile` mode these switches ask for, or None (no compile)."""
        if self.cuda_graphs:
            return "max-autotune" if self.compile == "max-autotune-no-cudagraphs" \
                else "reduce-overhead"
        return self.compile

    def check_device(self, device: str, where: Optional[str] = None) -> None:
        """Refuse a switch the device cannot run.

        Args:
            device: the model's device as configured (`auto` passes: the daemon checks again
                with the resolved device) or resolved (`cpu`, `cuda:0`).
        Raises:
            ConfigError: `cuda_graphs` on a CPU.
        """
        if self.cuda_graphs and str(device).split(":")[0] == "cpu":
            raise ConfigError(
                f"{where or self.SECTION}.cuda_graphs: CUDA graphs need a CUDA device, and the "
                f"model runs on the CPU (model.device {device}); set cuda_graphs: false "
                "(compile and channels_last work on the CPU)")

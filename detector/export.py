"""ONNX export of the detector and an onnxruntime runner that stands in for the PyTorch model.

`export_onnx` writes a graph with a dynamic batch axis and the clip size of the model's
`input` section fixed (the positional table is sized for that many tokens anyway). The model
config travels inside the file (metadata `vigil.model_config`, JSON), so `OnnxModel(path).cfg`
knows its classes, frames, size and normalisation without the checkpoint.

`OnnxModel.__call__(x)` takes the same (B, 3, T, H, W) float tensor as `VideoDETR.forward` and
returns the same dict of torch tensors, so `detector.postprocess` and the daemon's inference
worker can use either. onnx, onnxscript and onnxruntime are optional dependencies, imported
only here, when used.

One substitution is made for export: `nn.AdaptiveAvgPool3d` has no ONNX operator (the exporter
fails on `aten._adaptive_avg_pool3d`). Its input size is fixed once the clip size is, so it is
replaced by the exact same linear map written as three small matmuls with PyTorch's pooling
windows (`AdaptivePool3dAsMatmul`); the PyTorch model itself is left untouched.
"""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .config import ModelConfig
from .ensemble import ScoreEnsemble
from .errors import CheckpointError, ConfigError
from .schema import from_dict, to_dict

log = logging.getLogger(__name__)

METADATA_KEY = "vigil.model_config"
INPUT_NAME = "clips"
OUTPUT_NAMES = ("pred_logits", "pred_boxes")


def _pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) averaging matrix with `adaptive_avg_pool`'s windows.

    Window i covers [floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out)).
    """
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        lo = (i * n_in) // n_out
        hi = -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class AdaptivePool3dAsMatmul(nn.Module):
    """`nn.AdaptiveAvgPool3d(out_size)` for a FIXED input size, as matmuls ONNX can express.

    Args:
        in_size: (T, H, W) of the input feature map.
        out_size: (T', H', W').
    """

    def __init__(self, in_size: Sequence[int], out_size: Sequence[int]) -> None:
        super().__init__()
        (t, h, w), (to, ho, wo) = in_size, out_size
        self.in_size = tuple(int(v) for v in in_size)
        self.register_buffer("pt", _pool_matrix(t, to).t().contiguous())   # (T, T')
        self.register_buffer("ph", _pool_matrix(h, ho).t().contiguous())   # (H, H')
        self.register_buffer("pw", _pool_matrix(w, wo).t().contiguous())   # (W, W')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C, T, H, W) with (T, H, W) = in_size.
        Returns:
            (B, C, T', H', W').
        """
        x = x @ self.pw.to(x.dtype)                                   # (B, C, T, H, W')
        x = (x.transpose(-1, -2) @ self.ph.to(x.dtype)).transpose(-1, -2)   # (B, C, T, H', W')
        x = (x.permute(0, 1, 3, 4, 2) @ self.pt.to(x.dtype)).permute(0, 1, 4, 2, 3)
        return x


def _exportable_pool(detector: nn.Module, cfg: ModelConfig) -> None:
    """Replace `detector.backbone.pool` (an `nn.AdaptiveAvgPool3d`) by its matmul form, in place,
    for the input `cfg.input` gives it."""
    pool = getattr(getattr(detector, "backbone", None), "pool", None)
    if isinstance(pool, nn.AdaptiveAvgPool3d):
        T, (H, W) = cfg.input.frames, cfg.input.size
        with torch.device("meta"):
            probe = copy.deepcopy(detector.backbone).to("meta")     # the shape before the pool
            probe.pool = nn.Identity()
            shape = probe(torch.empty(1, 3, T, H, W)).shape[2:]
        out = pool.output_size
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,) * 3
        out = tuple(s if o is None else o for s, o in zip(shape, out))
        detector.backbone.pool = AdaptivePool3dAsMatmul(tuple(shape), out)


def exportable_copy(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """A deep copy of `model` (eval, CPU, fp32) with its adaptive pools made exportable (each
    member's, at its own input size, for an ensemble)."""
    clone = copy.deepcopy(model).float().cpu().eval()
    if isinstance(clone, ScoreEnsemble):
        for member, member_cfg in zip(clone.members, clone.member_cfgs):
            _exportable_pool(member, member_cfg)
    else:
        _exportable_pool(clone, cfg)
    return clone


def export_onnx(model: nn.Module, cfg: ModelConfig, path: str | Path, opset: int = 17,
                example_batch: int = 2) -> Path:
    """Write `model` as ONNX with a dynamic batch axis.

    Args:
        model: the detector (`VideoDETR`); not modified.
        cfg: its config; fixes T, H, W and is stored in the file's metadata.
        path: the .onnx file to write (folder created).
        opset: ONNX opset version.
        example_batch: batch of the tracing input (not 1, which the tracer would specialise).
    Returns:
        The path written.
    Raises:
        ConfigError: onnx/onnxscript are not installed.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs the optional packages onnx and onnxscript "
                          f"(pip install 'vigil[onnx]'): {exc}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clone = exportable_copy(model, cfg)
    T, (H, W) = cfg.input.frames, cfg.input.size
    x = torch.randn(max(2, example_batch), 3, T, H, W)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        torch.onnx.export(clone, (x,), str(path), dynamo=True, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_shapes=({0: batch},), external_data=False,
                          verbose=False)
    # The config inside the file: the runner needs classes, size and statistics.
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(to_dict(cfg))
    onnx.save(proto, str(path))
    log.info("exported %s (opset %d, dynamic batch, input %dx3x%dx%dx%d)", path, opset,
             x.shape[0], T, H, W)
    return path


class OnnxModel:
    """The exported detector through onnxruntime, called like the PyTorch model.

    Args:
        path: an .onnx file written by `export_onnx`.
        threads: onnxruntime intra-op threads (None = its default, all cores).
        providers: execution providers (default: CPUExecutionProvider).
    Attributes:
        cfg: the `ModelConfig` stored in the file (None for a file without it).
        session: the `onnxruntime.InferenceSession`.
    Raises:
        ConfigError: onnxruntime is not installed.
        CheckpointError: the file cannot be loaded.
    """

    def __init__(self, path: str | Path, threads: Optional[int] = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigError(f"running an ONNX model needs the optional package onnxruntime "
                              f"(pip install 'vigil[onnx]'): {exc}") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=list(providers))
        except Exception as exc:   # onnxruntime raises its own untyped errors
            raise CheckpointError(f"{self.path}: cannot load ONNX model: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.cfg: Optional[ModelConfig] = None
        if METADATA_KEY in meta:
            try:
                self.cfg = from_dict(ModelConfig, json.loads(meta[METADATA_KEY]), "model")
            except (ConfigError, ValueError) as exc:
                raise CheckpointError(f"{self.path}: bad {METADATA_KEY} metadata: {exc}") from None

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args:
            x: (B, 3, T, H, W) float clips, normalised (any float dtype, any device).
        Returns:
            {"pred_logits": (B, N, K+1), "pred_boxes": (B, N, 4) cxcywh}, float32 CPU tensors.
        """
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = self.session.run(self.output_names, {self.input_name: arr})
        named = dict(zip(self.output_names, outs))
        return {k: torch.from_numpy(named[k]) for k in OUTPUT_NAMES}

    # Enough of nn.Module's interface for code written against the PyTorch model.
    def eval(self) -> "OnnxModel":
        return self

    def to(self, device: Any = "cpu", *args: Any, **kwargs: Any) -> "OnnxModel":
        if torch.device(device).type != "cpu":
            raise ConfigError(f"the ONNX runner uses onnxruntime on the CPU, not {device}")
        return self


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Largest absolute difference per output (`pred_logits`, `pred_boxes`)."""
    return {k: float((a[k].float().cpu() - b[k].float().cpu()).abs().max()) for k in OUTPUT_NAMES}


def check_against_torch(model: nn.Module, onnx_model: OnnxModel, x: torch.Tensor
                        ) -> dict[str, float]:
    """Run both on `x` (B, 3, T, H, W) and return `max_abs_diff` of their outputs."""
    model = model.eval()
    with torch.inference_mode():
        ref = model(x.to(next(model.parameters()).device))
    out = onnx_model(x)
    diff = max_abs_diff(ref, out)
    if not all(math.isfinite(v) for v in diff.values()):
        log.warning("ONNX and PyTorch outputs differ by a non-finite amount: %s", diff)
    return diff

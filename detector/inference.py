"""Inference-only rewrites of a loaded detector: batch norm folded, `channels_last_3d`, compile.

A trained detector is run in eval mode, where every BatchNorm is a fixed per-channel affine map
`y = (x - mean) / sqrt(var + eps) * gamma + beta`. Right after a convolution it can be merged into
the convolution's weight and bias (the standard "conv-BN folding" of inference toolkits, e.g.
`torch.nn.utils.fusion.fuse_conv_bn_eval`), removing one memory-bound kernel per convolution:
on an H200, batch norm took 32 ms of the seed model's 166 ms pass at batch 64 (BENCHMARKS.md).

`fold_bn(model)` returns an equivalent copy. It folds every BatchNorm that directly follows, in
an `nn.Sequential`, a convolution (or a Sequential whose last module is one, recursively). That
is how torchvision's video ResNets (R(2+1)D, R3D, MC3: stems, `Conv2Plus1D`, blocks,
downsamples) and Vigil's `small3d` are built. A BatchNorm used any other way is left as it is
(`count_batchnorms` says how many remain).

`prepare_for_inference` applies the switches the daemon's `accel:` section names, in order:
fold, memory format, compile. The input's memory format is the caller's
(`to_memory_format`): `detector.preprocess.normalize_clips` already returns a
channels-last-strided tensor, so the conversion costs nothing.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# torch.compile modes the daemon offers: `default`; `max-autotune-no-cudagraphs` (Triton autotuning
# only); `reduce-overhead` = CUDA graphs (cudagraph trees) on top of the compiled graph.
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")


def _last_conv(module: nn.Module) -> Optional[nn.Module]:
    """The convolution whose output is `module`'s output, or None."""
    if isinstance(module, _CONVS):
        return module
    if isinstance(module, nn.Sequential) and len(module) > 0:
        return _last_conv(module[-1])
    return None


def _foldable(bn: nn.Module) -> bool:
    """A BatchNorm that is a fixed affine map in eval mode (running statistics kept)."""
    return (isinstance(bn, _BatchNorm) and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


@torch.no_grad()
def _fold_into(conv: nn.Module, bn: _BatchNorm) -> None:
    """Merge `bn` into `conv` in place (computed in float64, stored in the conv's dtype).

    W' = W * s, b' = (b - mean) * s + beta, with s = gamma / sqrt(var + eps) per output channel.
    """
    w = conv.weight
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    shape = (-1,) + (1,) * (w.dim() - 1)
    conv.weight = nn.Parameter((w.double() * scale.view(shape)).to(w.dtype),
                               requires_grad=False)
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)


def count_batchnorms(model: nn.Module) -> int:
    """Number of BatchNorm modules in `model`."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def fold_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every foldable BatchNorm merged into its convolution.

    Args:
        model: any module; it is not changed (a deep copy is folded).
    Returns:
        the folded copy, in eval mode; each folded BatchNorm is replaced by `nn.Identity`. Its
        outputs equal the original's in eval mode up to float rounding (about 1e-6 relative in
        fp32; tests/test_inference_opt.py checks the 3D backbones at 1e-5).
    Raises:
        nothing for a model without BatchNorm: it comes back as an unchanged copy.
    """
    folded = copy.deepcopy(model).eval()
    n = 0
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(seq)):
            bn = seq[i]
            if not _foldable(bn):
                continue
            conv = _last_conv(seq[i - 1])
            if conv is None or conv.out_channels != bn.num_features:
                continue
            _fold_into(conv, bn)
            seq[i] = nn.Identity()
            n += 1
    left = count_batchnorms(folded)
    log.info("batch norm folded into %d convolution(s)%s", n,
             f"; {left} BatchNorm module(s) left as they are" if left else "")
    return folded


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, C, T, H, W) input in `channels_last_3d` when asked (a no-op for a tensor already so
    strided, as `normalize_clips` returns), else unchanged."""
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def prepare_for_inference(model: nn.Module, *, fold: bool = False, channels_last: bool = False,
                          compile_mode: Optional[str] = None) -> nn.Module:
    """The model the daemon runs: optionally folded, in `channels_last_3d`, compiled.

    Args:
        model: the detector on its device (eval mode).
        fold: `fold_bn` first.
        channels_last: weights in `torch.channels_last_3d` (5-D parameters only; the input must
            follow, see `to_memory_format`); cuDNN then skips the NCHW<->NHWC conversions around
            every convolution (1.30x for the seed model on an H200, BENCHMARKS.md).
        compile_mode: None (no compile) or one of `COMPILE_MODES`; compiled with
            `dynamic=False`: every batch size is its own graph, so callers run a fixed set of
            batch sizes (the worker's `batch_sizes`) and warm them up before serving.
    Returns:
        the module to call (an `OptimizedModule` when compiled).
    Raises:
        ValueError: an unknown compile mode.
    """
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, "
                         f"got {compile_mode!r}")
    model = model.eval()
    if fold:
        model = fold_bn(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    if compile_mode is not None:
        model = torch.compile(model, mode=compile_mode, dynamic=False)
    return model

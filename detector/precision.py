"""Which autocast dtype inference runs in, decided in one place for the daemon and `vigil detect`.

`auto` means: bf16 on CUDA where the GPU supports it (else fp16); on a CPU, fp32 — bf16 autocast
is only faster on CPUs with native bf16 instructions (AVX-512 BF16 or AMX), and even there it is
an explicit choice because it changes the scores slightly (`vigil bench model` measures both and
the difference).
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Mapping, Optional

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(device: torch.device, precision: str) -> Optional[torch.dtype]:
    """The autocast dtype for `precision` on `device`, or None for plain float32.

    Args:
        device: where the model runs.
        precision: one of `PRECISIONS`; fp16 on a CPU falls back to fp32 (slow or unsupported).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cuda":
        if precision == "fp32":
            return None
        if precision == "fp16":
            return torch.float16
        if precision == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    return torch.bfloat16 if precision == "bf16" else None


def checkpoint_precision(meta: Mapping[str, Any]) -> str:
    """The inference precision a checkpoint asks for, for a caller whose choice is `auto`: its
    `inference_precision` (written by `vigil import-reference`: fp16, as the reference's
    test.py), else its training run's `train.inference_precision`, fp16 for a reference
    `best_model.pth` loaded as it is, else `auto`."""
    value = meta.get("inference_precision")
    if value is None:
        value = ((meta.get("train_config") or {}).get("train") or {}).get("inference_precision")
    if value is None and meta.get("format") == "reference":
        value = "fp16"
    return value if value in PRECISIONS else "auto"


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX-512 BF16 or AMX tiles)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:      # older torch: be conservative
        return False


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """`torch.autocast` for `dtype`, or a no-op for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)

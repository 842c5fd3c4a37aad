"""Measuring durations: timed samples with the device synchronised around each, and the
statistics every benchmark table reports (median, percentile, ratio).

Used by the benchmarks (`vigil_tools`) and by `vigil export --time`.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import torch


# =============================================================================== statistics
def median(samples: Sequence[float]) -> float:
    """Median of recorded samples (what every table reports).

    Raises:
        ValueError: no samples.
    """
    if not samples:
        raise ValueError("no samples to summarise")
    return float(statistics.median(samples))


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    if not samples:
        raise ValueError("no samples to summarise")
    xs = sorted(float(s) for s in samples)
    pos = (len(xs) - 1) * min(max(q, 0.0), 100.0) / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(numerator: float, denominator: float) -> Optional[float]:
    """numerator / denominator, or None when the denominator is zero or not finite."""
    if not denominator or not math.isfinite(denominator):
        return None
    return numerator / denominator


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_samples(fn: Callable[[], Any], repeats: int, warmup: int = 1,
                 device: torch.device | str = "cpu", inner: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Time `fn`: `warmup` untimed calls, then `repeats` timed samples.

    Args:
        fn: the work; its result is discarded.
        repeats: samples recorded (>= 1).
        warmup: untimed calls first (compilation, autotuning, caches).
        device: synchronised before and after each sample so queued GPU work is counted.
        inner: calls per sample (amortises launch overhead of very short calls); the sample is
            the time of ONE call (total / inner).
        clock: seconds; `time.process_time` gives the CPU time the process spent (all its
            threads), which other processes on a busy machine do not inflate as they do the
            wall clock.
    Returns:
        `repeats` durations in seconds, in the order measured.
    """
    if repeats < 1 or inner < 1:
        raise ValueError("repeats and inner must be >= 1")
    device = torch.device(device)
    for _ in range(max(0, warmup)):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        synchronize(device)
        t0 = clock()
        for _ in range(inner):
            fn()
        synchronize(device)
        samples.append((clock() - t0) / inner)
    return samples

"""Batches that always hold at least one labelled action (the report's Algorithm 1).

With few positives, a batch of only empty clips teaches every query to say `no_object`; the
report's remedy is to shuffle all indices, cut them into batches, and replace the first element
of any batch without a positive by a random positive.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from detector.errors import DataError


class BalancedBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices; pass it as a DataLoader's `batch_sampler`.

    The order is a function of (seed, epoch) only, so a resumed run replays the same batches;
    call `set_epoch(e)` before each epoch.

    Args:
        is_positive: per dataset index, whether that sample has at least one annotation.
        batch_size: samples per batch (the last one may be smaller unless drop_last).
        seed: base seed.
        drop_last: drop the final incomplete batch.
    Raises:
        DataError: no sample is positive.
    """

    def __init__(self, is_positive: Sequence[bool], batch_size: int, seed: int = 0,
                 drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.is_positive = np.asarray(list(is_positive), dtype=bool)
        self.positives = np.flatnonzero(self.is_positive)
        if self.positives.size == 0:
            raise DataError(f"balanced sampling needs at least one labelled (positive) sample, "
                            f"found none among {self.is_positive.size}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next iteration yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.is_positive.size
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.is_positive.size)
        for start in range(0, order.size, self.batch_size):
            batch = order[start:start + self.batch_size].copy()
            if self.drop_last and batch.size < self.batch_size:
                break
            if not self.is_positive[batch].any():
                batch[0] = rng.choice(self.positives)
            yield batch.tolist()

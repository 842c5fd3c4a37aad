"""Batches that always hold at least one labelled action (the report's Algorithm 1).

With few positives, a batch of only empty clips teaches every query to say `no_object`; the
report's remedy is to shuffle all indices, cut them into batches, and replace the first element
of any batch without a positive by a random positive.

Under DDP (`train.distributed`) every rank draws the same batches from (seed, epoch) and keeps
every `world_size`-th one, starting at its rank; so each batch still holds a positive, the ranks
never share a batch, and every rank takes the same number of steps.
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

    With `world_size` > 1 the epoch's batches (the same on every rank) are dealt out: rank r
    gets batches r, r + W, r + 2W, ... When their number does not divide by W, the first
    batches of the epoch are dealt again to fill the last round (as `DistributedSampler`
    pads), so every rank yields `len(self)` batches and DDP's collectives stay in step.

    Args:
        is_positive: per dataset index, whether that sample has at least one annotation.
        batch_size: samples per batch (the last one may be smaller unless drop_last).
        seed: base seed.
        drop_last: drop the final incomplete batch.
        rank: this process's rank (0 without DDP).
        world_size: number of training processes (1 without DDP).
    Raises:
        DataError: no sample is positive.
        ValueError: batch_size < 1, or rank outside 0 .. world_size - 1.
    """

    def __init__(self, is_positive: Sequence[bool], batch_size: int, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got {rank} of {world_size}")
        self.is_positive = np.asarray(list(is_positive), dtype=bool)
        self.positives = np.flatnonzero(self.is_positive)
        if self.positives.size == 0:
            raise DataError(f"balanced sampling needs at least one labelled (positive) sample, "
                            f"found none among {self.is_positive.size}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next iteration yields."""
        self.epoch = int(epoch)

    def total_batches(self) -> int:
        """Batches of one epoch over all ranks, before they are dealt out."""
        n = self.is_positive.size
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (steps per epoch)."""
        return math.ceil(self.total_batches() / self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.world_size == 1:
            yield from self._epoch_batches()
            return
        batches = list(self._epoch_batches())
        if not batches:
            return
        padded = len(self) * self.world_size
        batches += [batches[i % len(batches)] for i in range(padded - len(batches))]
        yield from batches[self.rank::self.world_size]

    def _epoch_batches(self) -> Iterator[list[int]]:
        """The epoch's batches over all ranks, in order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.is_positive.size)
        for start in range(0, order.size, self.batch_size):
            batch = order[start:start + self.batch_size].copy()
            if self.drop_last and batch.size < self.batch_size:
                break
            if not self.is_positive[batch].any():
                batch[0] = rng.choice(self.positives)
            yield batch.tolist()

"""Balanced batch sampling (the report's Algorithm 1)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.errors import DataError
from train.sampler import BalancedBatchSampler

datasets = st.lists(st.booleans(), min_size=1, max_size=60).filter(any)


@settings(max_examples=150, deadline=None)
@given(is_positive=datasets, batch_size=st.integers(1, 12), seed=st.integers(0, 2**31),
       epoch=st.integers(0, 50), drop_last=st.booleans())
def test_every_batch_has_a_positive_and_the_right_size(is_positive, batch_size, seed, epoch,
                                                        drop_last) -> None:
    sampler = BalancedBatchSampler(is_positive, batch_size, seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    n = len(is_positive)
    assert len(batches) == len(sampler)
    assert len(sampler) == (n // batch_size if drop_last else math.ceil(n / batch_size))
    for k, batch in enumerate(batches):
        last = k == len(batches) - 1
        expected = batch_size if (drop_last or not last or n % batch_size == 0) else n % batch_size
        assert len(batch) == expected
        assert all(0 <= i < n for i in batch)
        assert any(is_positive[i] for i in batch)


def test_batches_without_replacement_cover_the_shuffled_dataset() -> None:
    # Half positive: the replacement rule rarely fires, so each index appears about once.
    is_positive = [i % 2 == 0 for i in range(40)]
    sampler = BalancedBatchSampler(is_positive, 4, seed=1)
    flat = [i for b in sampler for i in b]
    assert len(flat) == 40
    assert flat != list(range(40))  # shuffled
    assert len(set(flat)) >= 36


def test_order_is_a_function_of_seed_and_epoch() -> None:
    is_positive = [i % 5 == 0 for i in range(50)]
    a = BalancedBatchSampler(is_positive, 8, seed=3)
    b = BalancedBatchSampler(is_positive, 8, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(BalancedBatchSampler(is_positive, 8, seed=4)) != first


def test_a_batch_without_positive_gets_its_first_element_replaced() -> None:
    is_positive = [False] * 30 + [True]
    for epoch in range(5):
        sampler = BalancedBatchSampler(is_positive, 3, seed=0)
        sampler.set_epoch(epoch)
        batches = list(sampler)
        # The only positive (30) sits at position 0 of every batch but its original one...
        not_first = [b for b in batches if b[0] != 30]
        assert len(not_first) <= 1 and all(b.count(30) == 1 for b in not_first)
        # ...and each batch that lacked it lost its first negative; the rest appear once each.
        negatives = [i for b in batches for i in b if i != 30]
        assert len(negatives) == len(set(negatives))
        assert len(negatives) == 30 - (len(batches) - 1)


def test_no_positives_is_refused() -> None:
    with pytest.raises(DataError, match="positive"):
        BalancedBatchSampler([False, False, False], 2)
    with pytest.raises(DataError, match="positive"):
        BalancedBatchSampler([], 2)


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BalancedBatchSampler([True], 0)


# --------------------------------------------------------------------------- under DDP
@settings(max_examples=100, deadline=None)
@given(is_positive=datasets, batch_size=st.integers(1, 8), seed=st.integers(0, 2**31),
       epoch=st.integers(0, 50), drop_last=st.booleans(), world=st.integers(2, 5))
def test_ranks_deal_out_the_single_process_batches_equally_each_with_a_positive(
        is_positive, batch_size, seed, epoch, drop_last, world) -> None:
    whole = BalancedBatchSampler(is_positive, batch_size, seed=seed, drop_last=drop_last)
    whole.set_epoch(epoch)
    batches = list(whole)
    ranks = []
    for rank in range(world):
        s = BalancedBatchSampler(is_positive, batch_size, seed=seed, drop_last=drop_last,
                                 rank=rank, world_size=world)
        s.set_epoch(epoch)
        ranks.append(list(s))
        assert len(ranks[-1]) == len(s) == math.ceil(len(batches) / world)  # equal steps
    # Round k holds batches k*W .. k*W + W - 1 of the single-process epoch, one per rank; the
    # last round is filled up with the epoch's first batches.
    dealt = [ranks[r][k] for k in range(len(ranks[0])) for r in range(world)]
    assert dealt[:len(batches)] == batches
    assert dealt[len(batches):] == [batches[i % len(batches)]
                                    for i in range(len(dealt) - len(batches))]
    assert all(any(is_positive[i] for i in b) for b in dealt)


def test_every_rank_draws_from_seed_and_epoch_alone() -> None:
    is_positive = [i % 3 == 0 for i in range(40)]

    def rank_batches(rank: int, epoch: int) -> list[list[int]]:
        s = BalancedBatchSampler(is_positive, 4, seed=7, rank=rank, world_size=2)
        s.set_epoch(epoch)
        return list(s)

    assert rank_batches(1, 3) == rank_batches(1, 3)        # a resumed rank replays its share
    assert rank_batches(0, 3) != rank_batches(1, 3)        # the ranks never share a batch...
    assert not {tuple(b) for b in rank_batches(0, 3)} & {tuple(b) for b in rank_batches(1, 3)}
    assert rank_batches(0, 3) != rank_batches(0, 4)        # ...and reshuffle every epoch


def test_a_rank_outside_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match="rank"):
        BalancedBatchSampler([True], 1, rank=2, world_size=2)

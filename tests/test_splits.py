"""Splits and folds never separate a group (clips cut from one source recording), and stay
stratified by class."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from train.dataset import VideoRecord
from train.splits import group_units, split_records, stratified_folds

CLASSES = st.sampled_from([0, 1, None])


def records_from(spec: list[tuple[int, int | None]]) -> list[VideoRecord]:
    """spec: (group id, class or None) per video."""
    out = []
    for i, (group, cls) in enumerate(spec):
        ann = (np.zeros((0, 5), np.float32) if cls is None
               else np.array([[cls, np.nan, np.nan, np.nan, np.nan]], np.float32))
        out.append(VideoRecord(f"v{i:03d}", Path(f"/nonexistent/v{i}.mp4"), None, 64, 48, 10.0,
                               20, ann, group=f"g{group}"))
    return out


SPECS = st.lists(st.tuples(st.integers(0, 12), CLASSES), min_size=2, max_size=60)


@settings(max_examples=60, deadline=None)
@given(spec=SPECS, seed=st.integers(0, 2**16), frac=st.sampled_from([0.15, 0.2, 0.5]))
def test_split_never_separates_a_group(spec, seed, frac):
    recs = records_from(spec)
    train = split_records(recs, None, "train", frac, seed)
    val = split_records(recs, None, "val", frac, seed)
    assert sorted(r.stem for r in train + val) == sorted(r.stem for r in recs)
    assert {r.group for r in train}.isdisjoint({r.group for r in val})


@settings(max_examples=60, deadline=None)
@given(spec=SPECS, seed=st.integers(0, 2**16), k=st.integers(2, 5))
def test_folds_never_separate_a_group_and_partition_the_videos(spec, seed, k):
    recs = records_from(spec)
    n_groups = len({r.group for r in recs})
    if n_groups < k:
        return
    folds = stratified_folds(recs, k, seed)
    assert sorted(i for _, val in folds for i in val) == list(range(len(recs)))
    for train, val in folds:
        assert {recs[i].group for i in train}.isdisjoint({recs[i].group for i in val})


def test_groups_are_stratified_by_their_most_common_class():
    recs = records_from([(0, 0), (0, 0), (0, None), (1, 1), (2, None)])
    assert [(u.name, u.stratum, len(u.members)) for u in group_units(recs)] == \
        [("g0", "0", 3), ("g1", "1", 1), ("g2", "none", 1)]


def test_grouped_folds_spread_each_class_over_the_folds():
    # 10 groups of 2 fights, 10 groups of 2 nones: 5 folds get 2 groups of each.
    spec = [(g, 0) for g in range(10) for _ in range(2)] + \
           [(g, None) for g in range(10, 20) for _ in range(2)]
    recs = records_from(spec)
    for _, val in stratified_folds(recs, 5, seed=3):
        assert Counter(str(recs[i].stratum) for i in val) == {"0": 4, "none": 4}

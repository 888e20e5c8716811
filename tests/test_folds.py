"""Grouped splits (rm_lab.reward.folds): seeded, balanced, independent of row order, never splitting a
group; the one implementation behind split_contexts, the head refit and the real-data figures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from rm_lab.reward import folds
from rm_lab.reward.data import split_contexts


def test_group_folds_are_seeded_balanced_and_order_free():
    groups = [f"g{i % 37}" for i in range(500)]
    a = folds.group_folds(groups, 5, seed=3)
    assert a == folds.group_folds(list(reversed(groups)), 5, seed=3)  # row order does not move a group
    assert folds.group_folds(groups, 5, seed=4) != a
    sizes = np.bincount(list(a.values()), minlength=5)
    assert sizes.max() - sizes.min() <= 1 and set(a) == set(groups)
    f = folds.fold_index(groups, 5, 3)
    assert all(f[i] == a[g] for i, g in enumerate(groups))
    df = pd.DataFrame({"g": groups, "fold": f})
    assert folds.leak_report(df, ["g"]) == {"g": 0}
    df.loc[0, "fold"] = (df.loc[0, "fold"] + 1) % 5  # a planted leak is reported
    assert folds.leak_report(df, ["g"])["g"] == 1
    with pytest.raises(ValueError, match="k must be >= 2"):
        folds.group_folds(groups, 1, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=2, max_size=200), st.integers(2, 7), st.integers(0, 10 ** 6))
def test_kfold_splits_partition_rows_and_keep_groups_whole(groups, k, seed):
    if len(set(groups)) < 2:
        with pytest.raises(ValueError, match="at least 2 groups"):
            folds.kfold_splits(groups, k, seed)
        return
    splits = folds.kfold_splits(groups, k, seed)
    assert len(splits) == min(k, len(set(groups)))
    g = np.array(groups)
    test_rows = np.concatenate([te for _, te in splits])
    assert sorted(test_rows.tolist()) == list(range(len(groups)))  # every row held out exactly once
    for tr, te in splits:
        assert len(te) and set(g[tr]).isdisjoint(g[te])
        assert sorted(np.r_[tr, te].tolist()) == list(range(len(groups)))


def test_holdout_depends_only_on_seed_and_key_and_drives_split_contexts():
    keys = [f"d{i}" for i in range(400)]
    held = folds.holdout_groups(keys, 0.25, seed=7)
    assert 60 < len(held) < 140
    # a key's side does not depend on which other keys are present
    assert folds.holdout_groups(keys[:100], 0.25, seed=7) == held & set(keys[:100])
    assert folds.holdout_groups(keys, 0.0, seed=7) == set()
    ctx = [f"c{i}" for i in range(800)]
    dialogue = {c: keys[i // 2] for i, c in enumerate(ctx)}
    train, val = split_contexts(ctx, 0.25, 7, dialogue)
    assert set(val) == {c for c in ctx if dialogue[c] in held} and sorted(train + val) == sorted(ctx)


def test_head_refit_folds_are_the_group_folds(monkeypatch):
    """choose_c reads its folds from rm_lab.reward.folds (one implementation), seeded by its seed."""
    from rm_lab.reward import refit

    seen = []
    real = folds.kfold_splits

    def spy(groups, k, seed):
        seen.append((k, seed))
        return real(groups, k, seed)

    monkeypatch.setattr(folds, "kfold_splits", spy)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + rng.normal(size=120) > 0).astype(float)
    refit.choose_c(X, y, np.ones(120), np.arange(120) // 3, n_folds=4, seed=11)
    assert seen == [(4, 11)]

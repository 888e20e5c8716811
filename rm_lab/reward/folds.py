"""Grouped splits: the one implementation behind train-rm's held-out share, the head refit's penalty
folds and the real-data figures' cross-validation.

Why groups: the turns of one dialogue, the replies to one query or the contexts of one character share
most of what a reward model reads; a split that puts some of them on each side measures memory, not
generalisation. Why hashes: every group key gets a seeded uniform number u = sha1("seed:key"). The
held-out share is the groups with u < fraction, so a group's side depends only on (seed, key); k folds
deal the groups round-robin in u order, so fold sizes (in groups) differ by at most one and a group's
fold depends on the seed and the set of keys. Neither depends on row order.
"""

from __future__ import annotations

import hashlib
from typing import Hashable, Iterable

import numpy as np
import pandas as pd


def group_unit(key: Hashable, seed: int) -> float:
    """The seeded uniform number in [0, 1) of one group key."""
    h = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def holdout_groups(keys: Iterable[Hashable], fraction: float, seed: int) -> set[str]:
    """The distinct keys (as strings) whose unit number falls below `fraction`: the held-out share."""
    if fraction <= 0:
        return set()
    return {k for k in {str(x) for x in keys} if group_unit(k, seed) < fraction}


def group_folds(keys: Iterable[Hashable], k: int, seed: int) -> dict[str, int]:
    """Fold (0..k-1) of each distinct key (as a string): keys sorted by unit number, dealt round-robin."""
    if k < 2:
        raise ValueError(f"folds: k must be >= 2, got {k}")
    ids = sorted({str(x) for x in keys}, key=lambda g: (group_unit(g, seed), g))
    return {g: i % k for i, g in enumerate(ids)}


def fold_index(groups: Iterable[Hashable], k: int, seed: int) -> np.ndarray:
    """The fold of every row, from its group key."""
    groups = [str(g) for g in groups]
    m = group_folds(groups, k, seed)
    return np.array([m[g] for g in groups], dtype=int)


def kfold_splits(groups: Iterable[Hashable], k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold, like scikit-learn's splitters; k is capped at the number of groups."""
    groups = [str(g) for g in groups]
    n_groups = len(set(groups))
    if n_groups < 2:
        raise ValueError(f"folds: need at least 2 groups, got {n_groups}")
    fold = fold_index(groups, min(k, n_groups), seed)
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(min(k, n_groups))]


def leak_report(df: pd.DataFrame, columns: Iterable[str], fold_col: str = "fold") -> dict[str, int]:
    """For each column, how many of its values sit in more than one fold (0 for the split key)."""
    return {c: int((df.groupby(c)[fold_col].nunique() > 1).sum()) for c in columns}


__all__ = ["group_unit", "holdout_groups", "group_folds", "fold_index", "kfold_splits", "leak_report"]

"""Duplicate and near-duplicate removal: keep the first item of each group of (near-)copies.

Repeated conversations over-weight whatever they contain (a copy-pasted prompt, a bot loop) and
leak between train and test splits. Two passes:

1. exact: a hash of the normalised text (Unicode NFKC, lower case, ASCII punctuation removed,
   whitespace collapsed; emoji are kept, since they are a style signal here);
2. near: word k-shingle Jaccard similarity >= threshold. MinHash signatures with LSH banding
   propose candidate pairs, and each candidate is verified with the exact Jaccard of the shingle
   sets, so nothing below the threshold is ever removed; the LSH miss rate for pairs at or above the
   threshold is reported (`lsh_miss_probability_at_threshold`).

Greedy in input order: an item is dropped when it is a near-copy of an item already kept, so there
is no chaining (A~B, B~C does not drop C unless C~A).
"""

from __future__ import annotations

import re
import string
import unicodedata
import zlib
from typing import Sequence

import numpy as np

_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_MERSENNE = (1 << 31) - 1
BAND_ROWS = 4


def normalize_text(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT)
    return re.sub(r"\s+", " ", t).strip()


def shingles(text: str, k: int = 3) -> frozenset[str]:
    """Word k-grams of the normalised text (the whole text as one shingle when shorter than k)."""
    words = normalize_text(text).split()
    if len(words) <= k:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i:i + k]) for i in range(len(words) - k + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class MinHasher:
    """Seeded universal hashing (a*h + b mod 2^31-1) over crc32 shingle hashes."""

    def __init__(self, num_perm: int = 128, seed: int = 0):
        if num_perm < BAND_ROWS or num_perm % BAND_ROWS:
            raise ValueError(f"num_perm must be a positive multiple of {BAND_ROWS}, got {num_perm}")
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _MERSENNE, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, _MERSENNE, num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signature(self, sh: frozenset[str]) -> np.ndarray:
        h = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in sh), dtype=np.uint64, count=len(sh))
        return ((np.outer(h, self.a) + self.b) % _MERSENNE).min(axis=0)


def lsh_miss_probability(jaccard_value: float, num_perm: int, rows: int = BAND_ROWS) -> float:
    """Chance that a pair with this Jaccard similarity shares no LSH band (so is never compared)."""
    bands = num_perm // rows
    return float((1.0 - jaccard_value ** rows) ** bands)


def dedup_texts(texts: Sequence[str], threshold: float = 0.8, k: int = 3, num_perm: int = 128,
                seed: int = 0, groups: Sequence | None = None) -> tuple[np.ndarray, dict]:
    """Boolean keep-mask over `texts` and a report of exact and near duplicates removed.

    `threshold >= 1` removes exact (normalised) duplicates only. With `groups` (e.g. the character
    of each conversation), texts are only compared within their group.
    """
    texts = list(texts)
    n = len(texts)
    groups = [None] * n if groups is None else list(groups)
    if len(groups) != n:
        raise ValueError(f"{n} texts but {len(groups)} groups")
    keep = np.ones(n, dtype=bool)
    seen: dict[tuple, int] = {}
    exact = 0
    for i, t in enumerate(texts):
        key = (groups[i], normalize_text(t))
        if key in seen:
            keep[i] = False
            exact += 1
        else:
            seen[key] = i
    near = 0
    examples: list[dict] = []
    if threshold < 1.0:
        hasher = MinHasher(num_perm, seed)
        bands = num_perm // BAND_ROWS
        buckets: list[dict[tuple, list[int]]] = [dict() for _ in range(bands)]
        kept_sh: dict[int, frozenset] = {}
        for i in np.flatnonzero(keep):
            sh = shingles(texts[i], k)
            sig = hasher.signature(sh)
            keys = [(groups[i], sig[b * BAND_ROWS:(b + 1) * BAND_ROWS].tobytes()) for b in range(bands)]
            dup_of = -1
            checked: set[int] = set()
            for b, key in enumerate(keys):
                for j in buckets[b].get(key, ()):
                    if j in checked:
                        continue
                    checked.add(j)
                    if jaccard(sh, kept_sh[j]) >= threshold:
                        dup_of = j
                        break
                if dup_of >= 0:
                    break
            if dup_of >= 0:
                keep[i] = False
                near += 1
                if len(examples) < 5:
                    examples.append({"removed": texts[i][:160], "kept": texts[dup_of][:160]})
                continue
            kept_sh[i] = sh
            for b, key in enumerate(keys):
                buckets[b].setdefault(key, []).append(i)
    report = {"n_before": n, "exact_duplicates": exact, "near_duplicates": near, "n_after": int(keep.sum()),
              "threshold": threshold, "shingle_words": k, "examples": examples}
    if threshold < 1.0:
        report["lsh_miss_probability_at_threshold"] = lsh_miss_probability(threshold, num_perm)
    return keep, report

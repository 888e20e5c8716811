"""Diversity sampling: cluster conversations by embedding, then sample evenly across clusters.

Raw traffic is dominated by a few kinds of conversation; a uniform sample keeps that skew, an even
sample across embedding clusters spreads the annotation budget over the kinds that exist
(DESIGN.md, "Data consolidation"). Sampling is stratified first by traffic source, so the output
hits a target internal/user mix whatever the input mix was.

Embeddings: MiniLM sentence embeddings (`rm_lab.models`) when the packaged encoder is available;
otherwise, or when asked for, TF-IDF (word 1-2 grams) reduced by truncated SVD and L2-normalised, a
cheaper lexical stand-in that clusters templated text well but misses paraphrases. The report says
which one was used.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def tfidf_embed(texts: Sequence[str], dim: int = 64, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    X = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit_transform(list(texts))
    k = min(dim, X.shape[1] - 1, X.shape[0] - 1)
    if k < 1:
        return normalize(X.toarray().astype(np.float32))
    Z = TruncatedSVD(n_components=k, random_state=seed).fit_transform(X)
    return normalize(Z).astype(np.float32)


def load_minilm(required: bool = False):
    """(tokenizer, model) of the packaged MiniLM, or None when it is unavailable and not required."""
    try:
        from rm_lab.models import load_encoder

        return load_encoder()
    except (ImportError, OSError):  # ImportError includes rm_lab.models.ModelPackageMissing
        if required:
            raise
        return None


def embed_texts(texts: Sequence[str], method: str = "auto", dim: int = 64, seed: int = 0,
                encoder=None) -> tuple[np.ndarray, str]:
    """(embeddings, method used). 'auto' uses MiniLM when its package is installed, else TF-IDF+SVD.

    `encoder` is an already loaded (tokenizer, model), to load MiniLM once for several calls.
    """
    if method not in ("auto", "minilm", "tfidf"):
        raise ValueError(f"embedding: expected auto, minilm or tfidf, got {method!r}")
    if method in ("auto", "minilm"):
        enc = encoder if encoder is not None else load_minilm(required=method == "minilm")
        if enc is not None:
            from rm_lab.models import embed

            return embed(list(texts), *enc), "minilm"
    return tfidf_embed(texts, dim, seed), "tfidf"


def cluster(emb: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """K-means labels (k capped by the number of distinct rows)."""
    from sklearn.cluster import KMeans

    n_distinct = len(np.unique(np.round(emb, 6), axis=0))
    k = max(1, min(n_clusters, n_distinct))
    if k == 1:
        return np.zeros(len(emb), dtype=int)
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(emb).astype(int)


def even_allocation(sizes: Sequence[int], target: int) -> np.ndarray:
    """Per-cluster counts summing to min(target, total): as equal as the cluster sizes allow.

    Water-filling: small clusters give everything they have, the rest share what is left equally;
    the few units a floor division leaves go to the largest clusters with room.
    """
    sizes = np.asarray(sizes, dtype=int)
    target = int(min(max(target, 0), sizes.sum()))
    alloc = np.zeros(len(sizes), dtype=int)
    remaining = target
    order = np.argsort(sizes, kind="stable")
    for pos, c in enumerate(order):
        take = min(int(sizes[c]), remaining // (len(order) - pos))
        alloc[c] = take
        remaining -= take
    while remaining > 0:
        for c in order[::-1]:
            if remaining == 0:
                break
            if alloc[c] < sizes[c]:
                alloc[c] += 1
                remaining -= 1
    return alloc


def _largest_remainder(target: int, shares: Mapping[str, float]) -> dict[str, int]:
    keys = list(shares)
    raw = np.array([target * shares[k] for k in keys], float)
    base = np.floor(raw).astype(int)
    rest = target - base.sum()
    for i in np.argsort(-(raw - base), kind="stable")[:rest]:
        base[i] += 1
    return dict(zip(keys, base.tolist()))


def diversity_sample(emb: np.ndarray, target: int, strata: Sequence[str] | None = None,
                     mix: Mapping[str, float] | None = None, n_clusters: int = 16,
                     seed: int = 0) -> tuple[np.ndarray, dict]:
    """Indices (sorted) of a sample of size <= `target`, even across k-means clusters within each stratum.

    `mix` maps stratum -> share of the target (shares must sum to 1; strata absent from it are
    excluded). A stratum with too few items gives all it has; its shortfall is reported, not
    refilled from other strata, so the output mix stays as close to the target as the data allow.
    """
    n = len(emb)
    strata_arr = np.asarray(list(strata) if strata is not None else ["all"] * n, dtype=object)
    if len(strata_arr) != n:
        raise ValueError(f"{n} embeddings but {len(strata_arr)} strata labels")
    if mix:
        quotas = _largest_remainder(target, mix)
    else:
        quotas = {"all": target}
        strata_arr = np.full(n, "all", dtype=object)
    labels = cluster(emb, n_clusters, seed) if n else np.zeros(0, int)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    per_stratum: dict[str, dict] = {}
    for s, quota in quotas.items():
        idx = np.flatnonzero(strata_arr == s)
        clusters, inverse = np.unique(labels[idx], return_inverse=True)
        sizes = np.bincount(inverse, minlength=len(clusters))
        alloc = even_allocation(sizes, quota)
        picked = []
        for ci, a in enumerate(alloc):
            members = idx[inverse == ci]
            if a:
                picked.append(np.sort(rng.choice(members, size=a, replace=False)))
        picked_arr = np.concatenate(picked) if picked else np.zeros(0, int)
        chosen.append(picked_arr)
        per_stratum[str(s)] = {"available": int(len(idx)), "target": int(quota), "selected": int(len(picked_arr)),
                               "shortfall": int(quota - len(picked_arr)), "clusters": int(len(clusters)),
                               "clusters_sampled": int((alloc > 0).sum())}
    sel = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)
    excluded = int(n - np.isin(strata_arr, list(quotas)).sum())
    sizes_all = np.bincount(labels) if n else np.zeros(0, int)
    report = {"n_before": n, "target": int(target), "n_after": int(len(sel)), "removed": int(n - len(sel)),
              "n_clusters": int(len(np.unique(labels))), "excluded_by_mix": excluded, "per_stratum": per_stratum,
              "cluster_size_min": int(sizes_all.min()) if n else 0,
              "cluster_size_max": int(sizes_all.max()) if n else 0}
    return sel, report

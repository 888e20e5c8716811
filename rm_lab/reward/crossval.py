"""Out-of-fold scores through the user path: for each group fold, `train_reward_model` (what
`rm_lab train-rm` runs) on the records of the other folds, then `RewardModel.score` on the held-out rows.

Why here and not in a figure script: every real-data figure (in-domain and transfer) is "train on these
records, score those rows, never letting a dialogue or a query sit on both sides", and the records are
the canonical ones `ingest` writes, so the figure measures exactly what a user gets. The folds are
`rm_lab.reward.folds` over the conversation (or context) of each context, dealt over every group of
the records, so all labels of one dataset share one split.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from rm_lab.reward import folds
from rm_lab.reward.data import Source, context_groups
from rm_lab.schema import Records

KEPT_WHOLE = ("character", "head")  # frames that describe, not label: every fold keeps all of them


def subset_records(records: Records, context_ids) -> Records:
    """The records of these contexts: every frame with a `context_id` column filtered to them."""
    keep = set(map(str, context_ids))
    out = {}
    for name, df in records.frames.items():
        if name in KEPT_WHOLE or "context_id" not in df.columns:
            out[name] = df
        else:
            out[name] = df[df["context_id"].astype(str).isin(keep)].reset_index(drop=True)
    return Records(out)


def as_source(name: str, records: Records) -> Source:
    """Records held in memory as one source of a multi-source training set (its frames tagged `_source`,
    as `read_sources` tags the frames of a folder)."""
    return Source(name, Records({k: df.assign(_source=name) for k, df in records.frames.items()}))


def context_folds(contexts: pd.DataFrame, k: int, seed: int, by: str = "conversation") -> pd.Series:
    """Fold of every context (indexed by context_id): its group (`by`: context, character or
    conversation, as train-rm's `val_split`) dealt into k seeded folds."""
    ids = contexts["context_id"].astype(str).drop_duplicates()
    g = context_groups(contexts.drop_duplicates("context_id"), by)
    keys = ids.map(g).astype(str) if g is not None else ids
    return pd.Series(folds.fold_index(keys.tolist(), k, seed), index=ids.to_numpy(), name="fold")


def score_rows(model, records: Records, rows: pd.DataFrame) -> pd.DataFrame:
    """`model.score` of the (context_id, response) rows, one output column per key, aligned to `rows`."""
    ctx = records["context"].drop_duplicates("context_id").set_index("context_id")
    ctx = ctx.loc[rows["context_id"].astype(str)].reset_index()
    out = model.score(ctx, rows["response"].astype(str).tolist(), records["character"])
    return pd.DataFrame({k: np.asarray(v, float) for k, v in out.items()}, index=rows.index)


def train_and_score(cfg, train: Records | Sequence[Source], score_on: Records, rows: pd.DataFrame, work: Path,
                    say: Callable[[str], None] = lambda *_: None, reuse: bool = False) -> tuple[pd.DataFrame, dict]:
    """Train a fresh model on `train` (records, or a list of sources for multi-source training) into
    `work` and score `rows` (whose contexts are in `score_on`). Returns (outputs, training metrics).

    `reuse`: a model already in `work` is resumed or reloaded, as `train-rm --resume` would (its training
    identity must match this config and data, else a ConfigError), so folds run by separate processes into one
    work folder are scored by a later run without training again."""
    from rm_lab.reward.embed_cache import default_cache_root
    from rm_lab.reward.model import RewardModel
    from rm_lab.reward.train import train_reward_model

    work = Path(work)
    if work.exists() and not reuse:  # a finished member in the folder would be reloaded, not retrained
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    metrics = train_reward_model(replace(cfg, data=None), work, records=train, say=say)
    cache = work / "embed_cache" if cfg.cache_dir == "run" else Path(cfg.cache_dir or default_cache_root())
    model = RewardModel.load(work, cache_dir=cache)  # the training run's cache: no text is encoded twice
    return score_rows(model, score_on, rows), metrics


def cross_validate(cfg, records: Records, rows: pd.DataFrame, work: Path, k: int = 5, seed: int = 0,
                   by: str = "conversation", only: Sequence[int] | None = None, also: Sequence[Source] = (),
                   name: str = "data", fold_of: pd.Series | None = None, say: Callable[[str], None] = lambda *_: None,
                   reuse: bool = False) -> tuple[pd.DataFrame, pd.Series, list[dict]]:
    """Out-of-fold outputs for `rows` ((context_id, response) of `records`).

    For each fold f (all of them, or `only`): train on the records whose contexts are in other folds
    (plus every source in `also`, whole: multi-source training, with `records` as the source `name`),
    score the rows of fold f. `fold_of` (context_id -> fold) reuses the folds of a larger set of records, so
    a model trained on part of a dataset is scored on the same folds. Returns (outputs aligned to rows, NaN
    for folds not run; the fold of each row; per-fold info)."""
    if fold_of is None:
        fold_of = context_folds(records["context"], k, seed, by)
    else:
        fold_of = fold_of[fold_of.index.isin(set(records["context"]["context_id"].astype(str)))]
    row_fold = rows["context_id"].astype(str).map(fold_of)
    if row_fold.isna().any():
        missing = rows.loc[row_fold.isna(), "context_id"].iloc[0]
        raise ValueError(f"rows: context_id {missing!r} is not in the context records")
    row_fold = row_fold.astype(int)
    outs, info = [], []
    for f in (list(range(k)) if only is None else list(only)):
        t0 = time.time()
        test = rows[row_fold.to_numpy() == f]
        train = subset_records(records, fold_of.index[fold_of.to_numpy() != f])
        source = [as_source(name, train), *also] if also else train
        out, metrics = train_and_score(cfg, source, records, test, Path(work) / f"fold{f}", say, reuse)
        outs.append(out)
        refit = [r for m in metrics.get("members", []) for r in m.get("refit", [])]
        info.append({"fold": f, "n_rows": len(test), "n_train_contexts": metrics.get("n_train_contexts"),
                     "refit": refit, "seconds": round(time.time() - t0, 1)})
        say(f"fold {f}: {len(test)} rows scored ({info[-1]['seconds']} s)")
    scored = pd.concat(outs) if outs else pd.DataFrame(index=rows.index[:0])
    return scored.reindex(rows.index), row_fold, info


# ----------------------------------------------------------------------------------------------
# reading out-of-fold scores

def log_odds(p) -> np.ndarray:
    """logit(p), clipped away from 0 and 1: probabilities of different models averaged or ranked as log-odds."""
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def mean_by(frame: pd.DataFrame, key: str, scores: Sequence[str], first: Sequence[str] = ("y", "fold")
            ) -> pd.DataFrame:
    """One row per `key` (e.g. a dialogue judged as a whole): the mean of each score column over its rows
    (for log-odds: the mean log-odds of its bot turns), and the `first` columns, which must be constant
    within a key (its label, its fold)."""
    g = frame.groupby(key, sort=True)
    varying = [c for c in first if (g[c].nunique(dropna=False) > 1).any()]
    if varying:
        raise ValueError(f"mean_by: {varying} differ within one {key}")
    return g.agg(**{c: (c, "first") for c in first}, **{c: (c, "mean") for c in scores}).reset_index()


def fold_metric(y, score, fold, metric: str = "auc", folds: Sequence[int] | None = None) -> dict:
    """`metric` ('auc' or 'spearman') of out-of-fold scores: pooled over the rows of the folds run, per
    fold, and the mean over folds (pooling mixes folds whose models differ in intercept, so the fold mean is
    the figure for AUC). A fold whose rows hold one class has no AUC (left out of the mean)."""
    from sklearn.metrics import roc_auc_score

    from rm_lab.reward.metrics import spearman

    y, score, fold = np.asarray(y, float), np.asarray(score, float), np.asarray(fold)
    run = sorted(set(fold.tolist())) if folds is None else list(folds)

    def m(mask) -> float:
        yy, ss = y[mask], score[mask]
        if metric == "spearman":
            return float(spearman(ss, yy))
        if metric != "auc":
            raise ValueError(f"metric {metric!r}: expected 'auc' or 'spearman'")
        return float(roc_auc_score(yy, ss)) if len(np.unique(yy)) == 2 else float("nan")

    per = {int(f): m(fold == f) for f in run}
    vals = [v for v in per.values() if np.isfinite(v)]
    return {"pooled": m(np.isin(fold, run)), "per_fold": per, "fold_mean": float(np.mean(vals)) if vals else float("nan"),
            "n": int(np.isin(fold, run).sum())}


__all__ = ["subset_records", "as_source", "context_folds", "score_rows", "train_and_score", "cross_validate",
           "log_odds", "mean_by", "fold_metric"]

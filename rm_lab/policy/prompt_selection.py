"""Which prompts the policy trains on: near-policy fresh contexts, then the ones that can teach it.

The paper's RL prompts are fixed partial conversations drawn from *fresh* traffic served by the
current policy (near-policy: the reward model is a local map, trustworthy near the data it was fitted
on), rebuilt every generation. Among them it keeps the prompts where the reward model scores the
policy's samples low (room to improve) or where its scores vary most across the samples of one
prompt (a group with equal rewards gives GRPO a zero advantage everywhere: no signal, only cost).

* `fresh_contexts` — contexts no earlier generation trained on, optionally only those whose logged
  traffic the current policy served, sampled with the traffic mix (internal/user) kept;
* `prompt_stats` / `select_prompts` — per prompt, the mean and std of the sampled replies' rewards
  and the kept share by rule `low`, `variance` or `low_or_variance` (a prompt ranks by the better of
  its two percentile ranks);
* `select_by_reward` — both composed over a sampler and a reward function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd

from rm_lab.config import ConfigError, check_fields, param

RULES = ("low", "variance", "low_or_variance", "all")


@dataclass(frozen=True)
class PromptSelectionConfig:
    """Variance-based prompt selection (the paper's), over `n_samples` replies per prompt."""

    rule: Literal["low", "variance", "low_or_variance", "all"] = param(
        "low_or_variance", doc="keep prompts whose mean reward is lowest, whose rewards vary most, either, or all",
        choices=RULES)
    keep: float = param(0.5, doc="share of the scored prompts to keep", gt=0, le=1)
    n_samples: int = param(4, doc="replies sampled per prompt to judge it (>= 2 to see a spread)", ge=2)
    drop_zero_std: bool = param(True, doc="never keep a prompt whose samples all got the same reward")

    def __post_init__(self):
        check_fields(self)


def fresh_contexts(contexts: pd.DataFrame, n: int | None = None, used: Iterable[str] = (), seed: int = 0,
                   interactions: pd.DataFrame | None = None, policy: str | None = None,
                   source: str = "contexts") -> pd.DataFrame:
    """Up to `n` contexts not in `used` (the ids earlier generations trained on), with the share of each
    `traffic` kind kept; with `policy`, only contexts whose logged interactions that policy served.
    No context left is a ConfigError that says why."""
    if len(contexts) == 0:
        raise ConfigError(f"prompts: {source} is empty (no contexts to train on)")
    if "context_id" not in contexts.columns:
        raise ConfigError(f"prompts: {source} has no context_id column")
    if n is not None and n < 1:
        raise ConfigError(f"prompts: n must be >= 1, got {n}")
    used = set(map(str, used))
    pool = contexts[~contexts["context_id"].astype(str).isin(used)]
    if pool.empty:
        raise ConfigError(f"prompts: no fresh contexts in {source}: all {len(contexts)} were used by earlier "
                          f"generations")
    if policy is not None:
        if interactions is None or "policy" not in interactions.columns:
            raise ConfigError("prompts: near-policy selection by `policy` needs interactions with a policy column")
        served = set(interactions.loc[interactions["policy"].astype(str) == policy, "context_id"].astype(str))
        pool = pool[pool["context_id"].astype(str).isin(served)]
        if pool.empty:
            raise ConfigError(f"prompts: no fresh context in {source} was served by policy {policy!r}")
    if n is None or n >= len(pool):
        return pool.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    if "traffic" not in pool.columns:
        return pool.iloc[np.sort(rng.choice(len(pool), n, replace=False))].reset_index(drop=True)
    # largest-remainder quotas per traffic kind, then a uniform draw inside each kind
    shares = pool["traffic"].astype(str).value_counts(sort=False) / len(pool)
    quota = np.floor(shares * n).astype(int)
    for kind in (shares * n - quota).sort_values(ascending=False, kind="stable").index[: n - int(quota.sum())]:
        quota[kind] += 1
    picks = []
    for kind, k in quota.items():
        idx = np.flatnonzero(pool["traffic"].astype(str).to_numpy() == kind)
        picks.extend(rng.choice(idx, int(k), replace=False).tolist())
    return pool.iloc[np.sort(picks)].reset_index(drop=True)


def prompt_stats(context_ids: Sequence[str], scores: Sequence[float]) -> pd.DataFrame:
    """Per prompt (in order of first appearance): samples, mean and unbiased std of their rewards."""
    ids = pd.Series(list(map(str, context_ids)), name="context_id")
    s = np.asarray(scores, float)
    if len(ids) != len(s):
        raise ValueError(f"prompt_stats: {len(s)} scores for {len(ids)} context ids")
    if not np.isfinite(s).all():
        raise ValueError("prompt_stats: scores must be finite")
    g = pd.Series(s).groupby(ids, sort=False)
    out = pd.DataFrame({"n": g.size(), "mean": g.mean(), "std": g.std(ddof=1).fillna(0.0)})
    return out.rename_axis("context_id").reset_index()


def select_prompts(stats: pd.DataFrame, cfg: PromptSelectionConfig) -> pd.DataFrame:
    """`stats` with `priority` (higher first), `selected` and `reason` (low / variance / zero_std / ...)."""
    if stats.empty:
        raise ConfigError("prompts: no scored prompts to select from")
    out = stats.copy()
    low = 1.0 - out["mean"].rank(pct=True, method="average") + 1.0 / len(out)  # the lowest mean ranks 1
    var = out["std"].rank(pct=True, method="average")
    if cfg.rule == "low":
        out["priority"] = low
    elif cfg.rule == "variance":
        out["priority"] = var
    elif cfg.rule == "low_or_variance":
        out["priority"] = np.maximum(low, var)
    else:
        out["priority"] = 1.0
    zero = out["std"] <= 1e-8
    eligible = ~zero if cfg.drop_zero_std else pd.Series(True, index=out.index)
    k = math.ceil(cfg.keep * len(out))
    order = out[eligible].sort_values("priority", ascending=False, kind="stable").index[:k]
    out["selected"] = out.index.isin(order)
    out["reason"] = np.where(out["selected"], np.where(low >= var, "low", "variance") if cfg.rule == "low_or_variance"
                             else cfg.rule, np.where(zero & cfg.drop_zero_std, "zero_std", "ranked_out"))
    return out


def select_by_reward(contexts: pd.DataFrame, characters: pd.DataFrame,
                     sample: Callable[[pd.DataFrame, pd.DataFrame, int], list[list[str]]],
                     reward_fn: Callable[[pd.DataFrame, Sequence[str], pd.DataFrame], np.ndarray],
                     cfg: PromptSelectionConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample `cfg.n_samples` replies per context (`sample(contexts, characters, n)` -> n replies per
    row), score them with `reward_fn`, and return (the kept contexts, the per-prompt table)."""
    if len(contexts) == 0:
        raise ConfigError("prompts: no contexts to select from (an empty prompt set)")
    groups = sample(contexts, characters, cfg.n_samples)
    if len(groups) != len(contexts) or any(len(g) != cfg.n_samples for g in groups):
        raise ValueError(f"select_by_reward: the sampler must return {cfg.n_samples} replies for each of "
                         f"{len(contexts)} contexts")
    rows = contexts.loc[contexts.index.repeat(cfg.n_samples)].reset_index(drop=True)
    scores = np.asarray(reward_fn(rows, [r for g in groups for r in g], characters), float)
    table = select_prompts(prompt_stats(rows["context_id"], scores), cfg)
    keep = set(table.loc[table["selected"], "context_id"])
    return contexts[contexts["context_id"].astype(str).isin(keep)].reset_index(drop=True), table

"""Offline predictions of a candidate policy against the current one, from the reward model alone.

Both policies answer the same contexts. Pointwise: on each context, does the candidate's reply score
higher (ties count 1/2)? Pairwise: the pairwise model's P(candidate's reply more engaging), which reads
both replies at once. Each is reported on user and on internal traffic, since internal prompts
(red-teaming, meta questions) reward other things than users do. The predicted lift is the relative
change of a head's mean output (default p_continue) on user traffic. Scored policies are cached by
name, so a control shared by many tests is encoded once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rm_lab.evaluate.ab import Z95

TRAFFICS = ("user", "internal")


def rate_interval(values, z: float = Z95) -> dict:
    """Mean of per-context win indicators / probabilities with a normal-approximation interval."""
    v = np.asarray(values, float)
    n = len(v)
    if n == 0:
        return {"rate": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    m = float(v.mean())
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return {"rate": m, "low": max(0.0, m - z * se), "high": min(1.0, m + z * se), "n": n}


def pointwise_wins(score_candidate, score_current) -> np.ndarray:
    """1 where the candidate's reply scores higher, 1/2 on a tie, 0 otherwise (same context)."""
    a, b = np.asarray(score_candidate, float), np.asarray(score_current, float)
    return (a > b) + 0.5 * (a == b)


@dataclass
class ScoredPolicy:
    name: str
    replies: list[str]
    outputs: dict  # head output -> (n,) array (RewardModel.score keys)
    base_feats: np.ndarray | None  # the pairwise model's inputs
    style: np.ndarray


class OfflineScorer:
    """Scores policies' replies on one fixed set of contexts with one reward model."""

    def __init__(self, model, contexts: pd.DataFrame, characters: pd.DataFrame, batch_size: int = 64):
        if "traffic" not in contexts.columns:
            raise ValueError("offline predictions: contexts need a 'traffic' column (user / internal)")
        self.model, self.contexts, self.characters = model, contexts.reset_index(drop=True), characters
        self.batch_size = batch_size
        self.traffic = self.contexts["traffic"].to_numpy()
        self._cache: dict[str, ScoredPolicy] = {}

    @property
    def has_pairwise(self) -> bool:
        return getattr(self.model, "pairwise", None) is not None

    def __contains__(self, name: str) -> bool:
        return name in self._cache

    def __getitem__(self, name: str) -> ScoredPolicy:
        return self._cache[name]

    def score(self, name: str, replies) -> ScoredPolicy:
        if name in self._cache:
            return self._cache[name]
        replies = [str(r) for r in replies]
        m = self.model
        texts, style = m.item_texts(self.contexts, replies, self.characters)
        feats = m.member_features(texts, self.batch_size)
        outputs = m.score_features(feats, style, self.batch_size)
        base = None
        if self.has_pairwise:
            base = feats if m.cfg.train_mode == "frozen" else m.features(texts, 0, self.batch_size, base=True)
        sp = ScoredPolicy(name, replies, outputs, base, style)
        self._cache[name] = sp
        return sp

    def _pair_probs(self, cand: ScoredPolicy, cur: ScoredPolicy) -> np.ndarray:
        return self.model.pairwise.prob(cand.base_feats, cand.style, cur.base_feats, cur.style, self.batch_size)

    def win_rates(self, cand: ScoredPolicy, cur: ScoredPolicy, z: float = Z95) -> dict:
        """{point_user, point_internal[, pair_user, pair_internal]} -> {rate, low, high, n}."""
        point = pointwise_wins(cand.outputs["score"], cur.outputs["score"])
        pair = self._pair_probs(cand, cur) if self.has_pairwise else None
        out = {}
        for t in TRAFFICS:
            m = self.traffic == t
            out[f"point_{t}"] = rate_interval(point[m], z)
            if pair is not None:
                out[f"pair_{t}"] = rate_interval(pair[m], z)
        return out

    def predicted_lift(self, cand: ScoredPolicy, cur: ScoredPolicy, output: str = "p_continue",
                       traffic: str = "user") -> float:
        if output not in cand.outputs:
            raise ValueError(f"offline predictions: the reward model has no output {output!r} "
                             f"(it has {sorted(k for k in cand.outputs if not k.endswith('_std'))})")
        m = self.traffic == traffic
        c = float(np.mean(cur.outputs[output][m]))
        return float(np.mean(cand.outputs[output][m])) / c - 1 if c > 0 else math.nan

    def predictions(self, cand: ScoredPolicy, cur: ScoredPolicy, output: str = "p_continue") -> dict:
        """The offline predictors of `rm_lab.calibrate.experiments.PREDICTORS` for one test."""
        rates = self.win_rates(cand, cur)
        out = {"pred_lift": self.predicted_lift(cand, cur, output)}
        for k, v in rates.items():
            out[f"win_{k}"] = v["rate"]
        return out


def win_rates(model, contexts: pd.DataFrame, replies_candidate, replies_current, characters: pd.DataFrame,
              z: float = Z95) -> dict:
    """Win rates of a candidate policy's replies over the current policy's, on the same contexts."""
    sc = OfflineScorer(model, contexts, characters)
    return sc.win_rates(sc.score("candidate", replies_candidate), sc.score("current", replies_current), z)

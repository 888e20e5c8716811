"""The within-experiment likelihood of A/B arms (`arm_logit` heads): which text wins a test, not which
story is popular.

The arms of one experiment (one context) share everything but their text, so the model scores each arm
(eta_j) and only differences inside an experiment are identified. Conditioning each experiment's clicks
on their total removes the experiment's own level (a conditional logit over its arms):

    P(a click of experiment g lands on arm j) = n_j exp(eta_j) / sum_{l in g} n_l exp(eta_l),

so arm j with n_j impressions and k_j clicks contributes k_j [eta_j + log n_j - logsumexp_l(eta_l + log n_l)].
This is the multinomial likelihood of the clicks given their total; its maximiser equals a Poisson GLM's
with an experiment fixed effect and offset log n (the test checks both against statsmodels). Impressions
weigh each arm through the offset: an arm shown twice as often is expected to collect twice the clicks.
exp(eta_b - eta_a) is the predicted ratio of the two arms' rates, so eta differences are log lifts.
"""

from __future__ import annotations

import numpy as np
import torch


def arm_logit_nll(eta: torch.Tensor, k: torch.Tensor, n: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Per-click negative log-likelihood of the conditional logit over the arms of each group.

    eta: (N,) arm scores; k: clicks (engaged users); n: impressions (users), rows with n == 0 masked;
    group: (N,) int64 experiment index of each row. Every arm of a group must be in the batch (the
    likelihood of a subset is a valid but weaker conditional one)."""
    mask = n > 0
    kk = torch.where(mask, k, torch.zeros_like(k))
    total = kk.sum()
    if not total > 0:
        return eta.sum() * 0.0
    group = group.long()
    n_groups = int(group.max()) + 1 if group.numel() else 0
    z = torch.where(mask, eta + torch.log(n.clamp(min=1e-12)), torch.full_like(eta, -torch.inf))
    zmax = torch.full((n_groups,), -torch.inf, dtype=eta.dtype, device=eta.device)
    zmax = zmax.scatter_reduce(0, group, z.detach(), reduce="amax", include_self=True)
    zmax = torch.where(torch.isfinite(zmax), zmax, torch.zeros_like(zmax))
    e = torch.where(mask, torch.exp(z - zmax[group]), torch.zeros_like(z))
    sums = torch.zeros(n_groups, dtype=eta.dtype, device=eta.device).index_add(0, group, e)
    lse = torch.log(sums.clamp(min=1e-300)) + zmax
    clicks = torch.zeros(n_groups, dtype=eta.dtype, device=eta.device).index_add(0, group, kk)
    ll = torch.where(mask, kk * z, torch.zeros_like(z)).sum() - torch.where(clicks > 0, clicks * lse,
                                                                           torch.zeros_like(lse)).sum()
    return -ll / total


def arm_logit_nll_np(eta, k, n, group) -> float:
    """The same likelihood in numpy (float64), for checks and for scoring held-out experiments."""
    eta, k, n, group = (np.asarray(a, np.float64) for a in (eta, k, n, group))
    keep = n > 0
    eta, k, n, group = eta[keep], k[keep], n[keep], group[keep].astype(np.int64)
    total = k.sum()
    if total <= 0:
        return 0.0
    z = eta + np.log(n)
    ll = float((k * z).sum())
    for g in np.unique(group):
        sel = group == g
        zg = z[sel]
        m = zg.max()
        ll -= k[sel].sum() * (m + np.log(np.exp(zg - m).sum()))
    return -ll / total


def group_codes(values) -> np.ndarray:
    """0..G-1 codes of the experiment (context) of each row, in order of first appearance."""
    import pandas as pd

    return pd.factorize(pd.Series(list(values), dtype=object), sort=False)[0].astype(np.int64)


def arm_logit_report(eta, k, n, experiment) -> dict:
    """eval-rm's view of an arm_logit head on held-out experiments: the conditional-logit NLL per click next
    to the no-information model's (every arm alike), and the accuracy at picking the higher-rate arm over
    every within-experiment pair of arms whose observed rates differ."""
    eta, k, n = (np.asarray(a, np.float64) for a in (eta, k, n))
    g = group_codes(experiment)
    out = {"likelihood": "arm_logit", "n_experiments": int(len(np.unique(g))), "n_arms": int(len(eta)),
           "nll_per_click": arm_logit_nll_np(eta, k, n, g), "nll_per_click_equal_arms": arm_logit_nll_np(
               np.zeros_like(eta), k, n, g)}
    rate = np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)
    hits, total = 0, 0
    for e in np.unique(g):
        idx = np.flatnonzero(g == e)
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = idx[a], idx[b]
                if rate[i] != rate[j] and eta[i] != eta[j]:
                    total += 1
                    hits += int((eta[i] > eta[j]) == (rate[i] > rate[j]))
    out["pair_accuracy"] = hits / total if total else float("nan")
    out["n_pairs"] = total
    return out


__all__ = ["arm_logit_nll", "arm_logit_nll_np", "arm_logit_report", "group_codes"]

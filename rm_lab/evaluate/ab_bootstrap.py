"""Bootstrap intervals for A/B lifts: a check on the delta method, not the default.

The delta method (rm_lab.evaluate.ab) needs only per-arm sums; the bootstrap needs the users
themselves, or, for one-impression arms, only the counts (resampling n Bernoulli outcomes is a
binomial draw). Users are resampled with the Poisson bootstrap (each user counted Poisson(1) times),
the usual choice at A/B scale because arms need no common size and batches vectorise.
"""

from __future__ import annotations

import numpy as np


def _percentile(lifts: np.ndarray, alpha: float) -> dict:
    lo, hi = np.nanquantile(lifts, [alpha / 2, 1 - alpha / 2])
    return {"ci_low": float(lo), "ci_high": float(hi), "se_log": float(np.nanstd(np.log1p(lifts), ddof=1))}


def bootstrap_lift(treatment: tuple[np.ndarray, np.ndarray], control: tuple[np.ndarray, np.ndarray],
                   n_boot: int = 2000, alpha: float = 0.05, seed: int = 0, batch: int = 50) -> dict:
    """Percentile interval of the lift of a ratio of sums, sum(num)/sum(den), treatment over control,
    from per-user arrays (num, den): breadth is (active days, days), depth (messages, active days)."""
    rng = np.random.default_rng(seed)
    ratios = []
    for num, den in (treatment, control):
        num, den = np.asarray(num, float), np.asarray(den, float)
        out = []
        for start in range(0, n_boot, batch):
            w = rng.poisson(1.0, size=(min(batch, n_boot - start), len(num))).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append((w @ num) / (w @ den))
        ratios.append(np.concatenate(out))
    point = (np.sum(treatment[0]) / np.sum(treatment[1])) / (np.sum(control[0]) / np.sum(control[1])) - 1
    return {"lift": float(point), **_percentile(ratios[0] / ratios[1] - 1, alpha)}


def bootstrap_bernoulli_lift(engaged_t: int, users_t: int, engaged_c: int, users_c: int, n_boot: int = 20000,
                             alpha: float = 0.05, seed: int = 0) -> dict:
    """The same for one-impression arms (clicks of impressions): each arm's resample is binomial."""
    rng = np.random.default_rng(seed)
    pt = rng.binomial(users_t, engaged_t / users_t, n_boot) / users_t
    pc = rng.binomial(users_c, engaged_c / users_c, n_boot) / users_c
    with np.errstate(invalid="ignore", divide="ignore"):
        lifts = np.where(pc > 0, pt / pc - 1, np.nan)
    return {"lift": (engaged_t / users_t) / (engaged_c / users_c) - 1, **_percentile(lifts, alpha)}

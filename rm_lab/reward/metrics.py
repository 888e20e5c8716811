"""Reward-model metrics: discrimination, calibration, calibrators, pairwise agreement, and the rank and
error metrics of graded (ordinal), continuous (gaussian) and count heads.

User-signal heads are used to *select* data by thresholding probabilities (DESIGN.md, "Pre-herding"),
so their calibration matters as much as their ranking: AUC says whether a head ranks, ECE and the
reliability plot say whether p=0.7 means 70%. Calibrators are always fitted on one half and judged
on the other, never on the data they are scored on.

ECE here uses `n_bins` equal-width bins on [0, 1] (a probability of exactly 1 falls in the last
bin); each bin contributes |mean(y) - mean(p)| weighted by its share of samples; empty bins count 0.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np
from scipy import optimize, special, stats

EPS = 1e-7


def _as_binary(y) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype == bool:
        return y.astype(float)
    y = y.astype(float)
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1 (or bool)")
    return y


def _as_prob(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    return p


def _check_same_length(y: np.ndarray, p: np.ndarray) -> None:
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"{y.shape[0]} labels but {p.shape[0]} predictions")


def reliability_bins(y, p, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width bin: count, mean predicted probability, observed positive rate (NaN if empty)."""
    y, p = _as_binary(y), _as_prob(p)
    _check_same_length(y, p)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        frac_pos = np.where(count > 0, sum_y / count, np.nan)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {"count": count, "mean_p": mean_p, "frac_pos": frac_pos, "edges": edges}


def ece(y, p, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width bins (see module docstring)."""
    b = reliability_bins(y, p, n_bins)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    ok = b["count"] > 0
    return float(np.sum(b["count"][ok] / n * np.abs(b["frac_pos"][ok] - b["mean_p"][ok])))


def binary_metrics(y, p, n_bins: int = 15) -> dict[str, float]:
    """AUC, log-loss, ECE, Brier score, n and positive rate of one binary head.

    AUC is NaN when only one class is present (it is undefined, not 0.5).
    """
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    y, p = _as_binary(y), _as_prob(p)
    _check_same_length(y, p)
    n = int(y.shape[0])
    if n == 0:
        nan = float("nan")
        return {"auc": nan, "log_loss": nan, "ece": nan, "brier": nan, "n": 0, "positive_rate": nan}
    pc = np.clip(p, EPS, 1 - EPS)
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < n else float("nan")
    return {
        "auc": auc,
        "log_loss": float(log_loss(y, pc, labels=[0, 1])),
        "ece": ece(y, p, n_bins),
        "brier": float(brier_score_loss(y, p, pos_label=1)),
        "n": n,
        "positive_rate": float(y.mean()),
    }


def poisson_deviance(y, mu) -> float:
    """Mean Poisson deviance of predicted counts (the depth head); `mu` must be > 0."""
    from sklearn.metrics import mean_poisson_deviance

    y, mu = np.asarray(y, float), np.asarray(mu, float)
    _check_same_length(y, mu)
    return float(mean_poisson_deviance(y, np.maximum(mu, 1e-9)))


def pairwise_accuracy(score_chosen, score_rejected) -> float:
    """Share of pairs where the chosen reply scores higher; a tie counts one half."""
    a, b = np.asarray(score_chosen, float), np.asarray(score_rejected, float)
    _check_same_length(a, b)
    if a.size == 0:
        return float("nan")
    return float(np.mean((a > b) + 0.5 * (a == b)))


def spearman(a, b) -> float:
    """Spearman rank correlation; NaN when either side is constant or too short."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    _check_same_length(a, b)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def kendall_tau(a, b) -> float:
    """Kendall's tau-b (ties counted on both sides, as graded ratings have many); NaN when either side is
    constant or too short."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    _check_same_length(a, b)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.kendalltau(a, b, variant="b").statistic)


def expand_counts(counts, values) -> tuple[np.ndarray, np.ndarray]:
    """Items with counts per level (N, K) -> (item index, level value) of every single rating."""
    counts = np.rint(np.asarray(counts, float)).astype(int)
    n, k = counts.shape
    item = np.repeat(np.repeat(np.arange(n), k), counts.ravel())
    level = np.repeat(np.tile(np.asarray(values, float), n), counts.ravel())
    return item, level


def ordinal_metrics(counts, expected, level_probs=None, values=None) -> dict[str, float]:
    """An ordinal head against ratings: `counts` (N items, K levels) of observed ratings, `expected` the
    predicted expected level per item, `level_probs` (N, K) the predicted P(level) per item.

    Per rating (each item's prediction repeated for each of its ratings): Spearman and Kendall tau-b of
    the expected level with the rating, the MAE of the expected level, the log loss of the predicted
    level probabilities; and Spearman of the expected level with each item's mean rating."""
    counts = np.asarray(counts, float)
    values = np.arange(1, counts.shape[1] + 1, dtype=float) if values is None else np.asarray(values, float)
    expected = np.asarray(expected, float)
    _check_same_length(counts, expected)
    item, y = expand_counts(counts, values)
    e = expected[item]
    out = {"spearman": spearman(e, y), "kendall_tau": kendall_tau(e, y),
           "mae": float(np.mean(np.abs(e - y))) if len(y) else float("nan"), "n": int(len(y)),
           "n_items": int((counts.sum(1) > 0).sum()), "mean_rating": float(y.mean()) if len(y) else float("nan")}
    has = counts.sum(1) > 0
    out["spearman_item_mean"] = spearman(expected[has], (counts[has] @ values) / counts[has].sum(1))
    if level_probs is not None and len(y):
        lp = np.clip(np.asarray(level_probs, float), EPS, 1.0)
        out["log_loss"] = float(-(counts * np.log(lp)).sum() / counts.sum())
    return out


def regression_metrics(n, mean, m2, pred) -> dict[str, float]:
    """A gaussian head against values summarised per item (n values, their mean, within-item sum of squares):
    Spearman of the prediction with the item means, RMSE and MAE of the prediction over the item means, and
    the RMSE over every single value (exact from the summaries)."""
    n, mean, m2, pred = (np.asarray(x, float) for x in (n, mean, m2, pred))
    has = n > 0
    n, mean, m2, pred = n[has], mean[has], m2[has], pred[has]
    if not len(n):
        nan = float("nan")
        return {"spearman": nan, "rmse": nan, "mae_item_mean": nan, "rmse_values": nan, "n": 0, "n_items": 0}
    return {"spearman": spearman(pred, mean), "rmse": float(np.sqrt(np.mean((pred - mean) ** 2))),
            "mae_item_mean": float(np.mean(np.abs(pred - mean))),
            "rmse_values": float(np.sqrt((m2.sum() + (n * (mean - pred) ** 2).sum()) / n.sum())),
            "n": int(n.sum()), "n_items": int(len(n))}


def count_metrics(n, k, mu) -> dict[str, float]:
    """A count head (`depth`): Spearman of the predicted mean with each item's observed rate, and the mean
    Poisson deviance of the rate (a scale for both count likelihoods)."""
    n, k, mu = (np.asarray(x, float) for x in (n, k, mu))
    has = n > 0
    rate = k[has] / n[has]
    return {"spearman": spearman(mu[has], rate), "n": int(has.sum()),
            "poisson_deviance": poisson_deviance(rate, mu[has]) if has.any() else float("nan")}


# ----------------------------------------------------------------------------------------------
# calibrators

def _nll_temperature(log_t: float, logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean NLL of sigmoid/softmax(logits / T) and its derivative in log T."""
    t = math.exp(log_t)
    z = logits / t
    if logits.ndim == 1:
        # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z
        nll = np.logaddexp(0.0, z) - y * z
        dz = special.expit(z) - y  # d nll / d z
        grad = np.mean(dz * (-z))  # dz/dlogT = -z
        return float(nll.mean()), float(grad)
    lse = special.logsumexp(z, axis=1)
    yi = y.astype(int)
    zy = z[np.arange(len(z)), yi]
    nll = lse - zy
    sm = special.softmax(z, axis=1)
    grad = np.mean(-(np.sum(sm * z, axis=1) - zy))
    return float(nll.mean()), float(grad)


def fit_temperature(logits, y, bounds: tuple[float, float] = (1e-2, 1e2)) -> float:
    """Temperature T minimising the NLL of sigmoid(logits / T) (softmax for 2-D logits).

    Optimised in log T with L-BFGS-B, so T stays positive; one parameter, so it cannot change the
    ranking (AUC is untouched), only the confidence.
    """
    logits = np.asarray(logits, float)
    y = np.asarray(y)
    if logits.ndim == 1:
        y = _as_binary(y)
    elif logits.ndim != 2:
        raise ValueError("logits must be 1-D (binary) or 2-D (classes in columns)")
    _check_same_length(y, logits)
    if logits.shape[0] == 0:
        raise ValueError("fit_temperature: no samples")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = optimize.minimize(lambda v: _nll_temperature(float(v[0]), logits, y), x0=np.zeros(1), jac=True,
                            method="L-BFGS-B", bounds=[(lo, hi)])
    return float(math.exp(float(res.x[0])))


def apply_temperature(logits, t: float) -> np.ndarray:
    logits = np.asarray(logits, float)
    if logits.ndim == 1:
        return special.expit(logits / t)
    return special.softmax(logits / t, axis=1)


def fit_isotonic(p, y):
    """Monotone map from a head's probability to the observed rate (clipped outside the fit range)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(_as_prob(p), _as_binary(y))
    return iso


def _split_halves(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed split in two halves, stratified by label when both classes have >= 2 samples."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y.astype(int), minlength=2)
    strat = y if counts.min() >= 2 else None
    fit_idx, eval_idx = train_test_split(idx, test_size=0.5, random_state=seed, shuffle=True, stratify=strat)
    return np.sort(fit_idx), np.sort(eval_idx)


def calibration_report(y, logits, seed: int = 0, n_bins: int = 15, with_probs: bool = False) -> dict:
    """Fit temperature scaling and isotonic regression on one half, report metrics on the other.

    Returns {"temperature": T, "n_fit", "n_eval", "raw": metrics, "temperature_scaled": metrics,
    "isotonic": metrics} (metrics as `binary_metrics`, all on the evaluation half); with
    `with_probs`, also "eval_y" and "eval_probs" {name: p} for a reliability plot.
    """
    y = _as_binary(y)
    logits = np.asarray(logits, float)
    if logits.ndim != 1:
        raise ValueError("calibration_report: expects 1-D logits of a binary head")
    _check_same_length(y, logits)
    if len(y) < 4:
        raise ValueError(f"calibration_report: needs at least 4 samples, got {len(y)}")
    fit_idx, eval_idx = _split_halves(y, seed)
    t = fit_temperature(logits[fit_idx], y[fit_idx])
    p_raw = special.expit(logits)
    iso = fit_isotonic(p_raw[fit_idx], y[fit_idx])
    ye = y[eval_idx]
    probs = {
        "raw": p_raw[eval_idx],
        "temperature_scaled": apply_temperature(logits[eval_idx], t),
        "isotonic": np.asarray(iso.predict(p_raw[eval_idx]), float),
    }
    out: dict = {"temperature": t, "n_fit": int(len(fit_idx)), "n_eval": int(len(eval_idx))}
    for name, p in probs.items():
        out[name] = binary_metrics(ye, p, n_bins)
    if with_probs:
        out["eval_y"] = ye
        out["eval_probs"] = probs
    return out


# ----------------------------------------------------------------------------------------------
# plots

def reliability_plot(y, p_dict: Mapping[str, np.ndarray], path: str | os.PathLike, n_bins: int = 15,
                     title: str = "reliability") -> Path:
    """Reliability diagram (observed rate vs mean predicted, per bin) of several predictors, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rm_lab.io import atomic_path

    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    try:
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
        for name, p in p_dict.items():
            b = reliability_bins(y, p, n_bins)
            ok = b["count"] > 0
            ax.plot(b["mean_p"][ok], b["frac_pos"][ok], marker="o", markersize=3,
                    label=f"{name} (ECE {ece(y, p, n_bins):.3f})")
            axh.hist(np.asarray(p, float), bins=b["edges"], histtype="step", label=name)
        ax.set_ylabel("observed positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper left")
        axh.set_xlabel("predicted probability")
        axh.set_ylabel("count")
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path

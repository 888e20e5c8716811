"""How far a lift prediction can be trusted: the numbers a product team reads before shipping.

Sign agreement (does the prediction say "win" when the test did), rank agreement (Spearman), the
calibration slope and intercept of observed on predicted (1 and 0 when calibrated: a slope below 1
means predictions are too spread out), and the coverage and width of the prediction intervals.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def calibration_line(pred, observed) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line observed ~ predicted."""
    pred, observed = np.asarray(pred, float), np.asarray(observed, float)
    if len(pred) < 2 or np.ptp(pred) == 0:
        return math.nan, math.nan
    res = stats.linregress(pred, observed)
    return float(res.slope), float(res.intercept)


def reliability(pred, observed, low=None, high=None, true_lift=None) -> dict:
    """Reliability numbers of predicted lifts against measured ones (and the true expected lifts)."""
    pred, observed = np.asarray(pred, float), np.asarray(observed, float)
    if pred.shape != observed.shape:
        raise ValueError(f"reliability: {pred.shape} predictions for {observed.shape} observed lifts")
    slope, intercept = calibration_line(pred, observed)
    out = {"n": int(len(pred)),
           "sign_agreement": float(np.mean(np.sign(pred) == np.sign(observed))) if len(pred) else math.nan,
           "spearman": _spearman(pred, observed), "calibration_slope": slope, "calibration_intercept": intercept,
           "mae": float(np.mean(np.abs(pred - observed))) if len(pred) else math.nan}
    if low is not None and high is not None:
        low, high = np.asarray(low, float), np.asarray(high, float)
        out["coverage"] = float(np.mean((observed >= low) & (observed <= high)))
        w = high - low
        out["mean_width"] = float(np.mean(w)) if np.all(np.isfinite(w)) else math.inf
        out["median_width"] = float(np.median(w))
    if true_lift is not None:
        t = np.asarray(true_lift, float)
        out["spearman_true"] = _spearman(pred, t)
        out["sign_agreement_true"] = float(np.mean(np.sign(pred) == np.sign(t)))
        if low is not None and high is not None:
            out["coverage_true"] = float(np.mean((t >= low) & (t <= high)))
    return out

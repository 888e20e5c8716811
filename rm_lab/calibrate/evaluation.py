"""Held-out reliability of a calibration: every past test predicted by a calibration fitted without it."""

from __future__ import annotations

import pandas as pd

from rm_lab.calibrate.intervals import loo_evaluate
from rm_lab.calibrate.reliability import reliability

# what the simulated world must show (issue 11): name -> (metric key, lower bound, upper bound)
WORLD_TARGETS = {
    "spearman_true >= 0.8": ("spearman_true", 0.8, None),
    "spearman (measured) >= 0.6": ("spearman", 0.6, None),
    "coverage in [0.85, 0.95]": ("coverage", 0.85, 0.95),
}


def heldout(table: pd.DataFrame, predictor: str, method: str = "linear", confidence: float = 0.9,
            folds: int | None = None) -> tuple[pd.DataFrame, dict]:
    """(table with loo_pred / loo_low / loo_high / loo_covered, reliability numbers)."""
    x = table[predictor].to_numpy(float)
    y, se = table["observed_lift"].to_numpy(float), table["observed_se"].to_numpy(float)
    ev = loo_evaluate(x, y, se, method, confidence, folds or None)
    out = table.copy()
    out["loo_pred"], out["loo_low"], out["loo_high"], out["loo_covered"] = ev["pred"], ev["low"], ev["high"], ev["covered"]
    truth = table["true_lift"].to_numpy(float) if "true_lift" in table else None
    return out, reliability(ev["pred"], y, ev["low"], ev["high"], truth)


def check_targets(metrics: dict, targets: dict = WORLD_TARGETS) -> dict:
    """{target: {value, met}} for the targets whose metric is present."""
    out = {}
    for name, (key, lo, hi) in targets.items():
        if key not in metrics:
            continue
        v = metrics[key]
        met = v == v and (lo is None or v >= lo) and (hi is None or v <= hi)
        out[name] = {"value": v, "met": bool(met)}
    return out

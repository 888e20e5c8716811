"""The table of past experiments a calibration is fitted to: one row per (control, treatment) test.

Columns: experiment_id, the offline predictions made before the test (PREDICTORS), the lift it
measured (`observed_lift`) with its standard error (`observed_se`), and in the simulator the true
expected lift (`true_lift`). A row that cannot enter a fit (a missing lift, a zero or negative
standard error) is refused with its row and field named, never silently dropped.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rm_lab.evaluate.ab import Z95
from rm_lab.schema import RecordError

# offline predictions of a treatment against its control, made from replies before the test
PREDICTORS = ("pred_lift", "win_point_user", "win_point_internal", "win_pair_user", "win_pair_internal")


def lift_se(row, metric: str = "breadth") -> float:
    """Standard error of a measured relative lift, from an `evaluate.ab.analyze` row's 95% interval."""
    lo, hi = float(row[f"{metric}_ci_low"]), float(row[f"{metric}_ci_high"])
    return (hi - lo) / (2 * Z95)


def check_experiments(df: pd.DataFrame, source: str | None = None, predictor: str | None = None) -> pd.DataFrame:
    """The table, checked: unique ids, finite lifts > -1, standard errors > 0, a finite predictor."""
    need = ["experiment_id", "observed_lift", "observed_se"] + ([predictor] if predictor else [])
    for col in need:
        if col not in df.columns:
            raise RecordError(source, None, col, "missing column",
                              f"a column '{col}' (columns: {', '.join(map(str, df.columns))})")
    if len(df) < 3:
        raise RecordError(source, None, None, f"{len(df)} experiments", "at least 3 past experiments to calibrate on")
    seen: dict = {}
    for i, (eid, y, se) in enumerate(zip(df["experiment_id"], df["observed_lift"], df["observed_se"])):
        if eid in seen:
            raise RecordError(source, i, "experiment_id", eid, f"a unique id (also on row {seen[eid]})")
        seen[eid] = i
        if not _finite(y) or float(y) <= -1:
            raise RecordError(source, i, "observed_lift", y, "a finite relative lift > -1")
        if not _finite(se) or float(se) <= 0:
            raise RecordError(source, i, "observed_se", se, "a finite standard error > 0")
        if predictor and not _finite(df[predictor].iat[i]):
            raise RecordError(source, i, predictor, df[predictor].iat[i], "a finite offline prediction")
    return df


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def summary(df: pd.DataFrame) -> dict:
    """Range of the lifts and noise of the tests (how hard the calibration problem is)."""
    y, se = df["observed_lift"].to_numpy(float), df["observed_se"].to_numpy(float)
    out = {"n": int(len(df)), "lift_min": float(y.min()), "lift_max": float(y.max()),
           "lift_sd": float(y.std(ddof=1)) if len(y) > 1 else math.nan, "median_se": float(np.median(se))}
    if "true_lift" in df:
        out["true_lift_sd"] = float(df["true_lift"].std(ddof=1))
    return out

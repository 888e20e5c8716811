"""CUPED (Deng et al., WSDM 2013): a pre-period covariate of the same users cuts the variance of a lift.

The covariate x_u is a user's active days in the pre-period (before anyone was treated, so it cannot
carry the treatment effect); the metric is the per-user breadth y_u = a_u / days. Each arm's mean is
adjusted, y_adj = mean(y) - theta (mean(x) - mean(x) over all arms), with one theta = cov(y, x) / var(x)
pooled within arms, so an arm's estimate has variance var(y - theta x) / n = (1 - rho^2) var(y) / n.
Only sums over users are needed (x, x^2, x*a per arm: the ab_arm pre-period fields), which is what a
product team's warehouse already aggregates. Depth is a ratio metric whose CUPED needs more cross
moments (pre-period messages too); it is not adjusted here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rm_lab.schema import PRE_PERIOD

COLUMNS = ("breadth_cuped_lift", "breadth_cuped_ci_low", "breadth_cuped_ci_high", "breadth_cuped_p_value",
           "breadth_cuped_se_log", "breadth_variance_reduction", "breadth_pre_correlation", "breadth_cuped_theta")


def cuped_arms(tot: pd.DataFrame, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Per whole-test row (experiment = codes): CUPED-adjusted breadth and its variance, the raw
    variance, and the experiment's pooled theta and within-arm correlation rho of y and x. NaN for
    the rows of an experiment in which some arm has no pre-period."""
    from rm_lab.evaluate.ab import _col

    k = codes.max() + 1 if len(codes) else 0
    n, d = _col(tot, "users"), _col(tot, "days")
    sy, syy = _col(tot, "engaged_user_days") / d, _col(tot, "active_days_sq") / d ** 2
    sx, sxx, sxy = (_col(tot, c) for c in PRE_PERIOD[1:])
    sxy = sxy / d
    have = ~np.isnan(np.column_stack([sy, syy, sx, sxx, sxy])).any(1)
    full = np.bincount(codes, weights=have, minlength=k) == np.bincount(codes, minlength=k)
    ok = full[codes]
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mx = sy / n, sx / n
        var_y = np.maximum(syy / n - my ** 2, 0.0)
        var_x = np.maximum(sxx / n - mx ** 2, 0.0)
        cov = sxy / n - mx * my

        def per_exp(x):
            return np.bincount(codes[ok], weights=x[ok], minlength=k)[codes]

        pvx, pvy, pcov = per_exp(n * var_x), per_exp(n * var_y), per_exp(n * cov)
        live = (pvx > 0) & (pvy > 0)  # a constant covariate adjusts nothing: theta = 0
        theta = np.where(live, pcov / pvx, 0.0)
        rho = np.where(live, pcov / np.sqrt(pvx * pvy), 0.0)
        mx_all = per_exp(sx) / per_exp(n)
        adj = my - theta * (mx - mx_all)
        var_adj = np.maximum(var_y - 2 * theta * cov + theta ** 2 * var_x, 0.0) / n
    nan = np.full(len(n), np.nan)
    return {"mean": np.where(ok, adj, nan), "var": np.where(ok, var_adj, nan), "raw_mean": np.where(ok, my, nan),
            "raw_var": np.where(ok, var_y / n, nan), "theta": np.where(ok, theta, nan), "rho": np.where(ok, rho, nan)}


def cuped_columns(tot: pd.DataFrame, codes: np.ndarray, t_idx: np.ndarray, c_idx: np.ndarray,
                  z: float) -> dict[str, np.ndarray]:
    """The CUPED columns of analyze() for treatment rows t_idx against their controls c_idx: the adjusted
    lift with its interval and p-value, and the variance reduction achieved on the log lift,
    1 - se_cuped^2 / se^2 (about rho^2)."""
    from rm_lab.evaluate.ab import lift_intervals

    if not any(c in tot.columns for c in PRE_PERIOD):
        return {c: np.full(len(t_idx), np.nan) for c in COLUMNS}
    r = cuped_arms(tot, codes)
    adj = lift_intervals(r["mean"][t_idx], r["var"][t_idx], r["mean"][c_idx], r["var"][c_idx], z)
    raw = lift_intervals(r["raw_mean"][t_idx], r["raw_var"][t_idx], r["raw_mean"][c_idx], r["raw_var"][c_idx], z)
    with np.errstate(invalid="ignore", divide="ignore"):
        reduction = 1 - adj["se_log"] ** 2 / raw["se_log"] ** 2
    return {"breadth_cuped_lift": adj["lift"], "breadth_cuped_ci_low": adj["ci_low"],
            "breadth_cuped_ci_high": adj["ci_high"], "breadth_cuped_p_value": adj["p_value"],
            "breadth_cuped_se_log": adj["se_log"], "breadth_variance_reduction": reduction,
            "breadth_pre_correlation": r["rho"][t_idx], "breadth_cuped_theta": r["theta"][t_idx]}

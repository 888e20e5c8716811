"""Lifts with 95% intervals from stored A/B arms (simulated 7-day tests or K-arm text tests).

Breadth is the share of arm users active per day, averaged over the test (sum_u a_u / (n*days));
depth is messages per active user-day (sum_u m_u / sum_u a_u), a ratio metric. Both lifts get
delta-method intervals on the log scale, from the user-level second moments stored with each arm;
an arm without moments (one-impression text tests) is treated as Bernoulli. A sample-ratio-mismatch
check compares arm sizes with their intended allocation. What makes a set of arms analysable (one
control, counts that are possible) is declared once, with the ab_arm record kind in rm_lab.schema.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from rm_lab.schema import AB_ARM, RecordError, validate_frame

Z95 = 1.959963984540054


def _breadth_stats(row) -> tuple[float, float]:
    """Breadth and the variance of its estimate for one arm (totals row)."""
    n, days = float(row["users"]), float(row["days"])
    if n <= 0:
        return math.nan, math.nan
    a_sum = row.get("engaged_user_days")
    a_sq = row.get("active_days_sq")
    if a_sum is None or pd.isna(a_sum) or a_sq is None or pd.isna(a_sq):
        if days != 1:  # several days per user and no user-level moments: no honest interval
            return (float(a_sum) / (n * days) if a_sum is not None and not pd.isna(a_sum) else math.nan), math.nan
        p = float(row["engaged_users"]) / n  # one observation per user (impressions, clicks): Bernoulli
        return p, p * (1 - p) / n
    mean_a = a_sum / n
    var_a = max(a_sq / n - mean_a ** 2, 0.0)
    return mean_a / days, var_a / (days ** 2) / n


def _depth_stats(row) -> tuple[float, float]:
    n = float(row["users"])
    a_sum, m_sum = row.get("engaged_user_days"), row.get("messages")
    needed = [a_sum, m_sum, row.get("active_days_sq"), row.get("messages_sq"), row.get("active_messages")]
    if any(v is None or pd.isna(v) for v in needed) or a_sum <= 0:
        return math.nan, math.nan
    a_sq, m_sq, am = row["active_days_sq"], row["messages_sq"], row["active_messages"]
    r = m_sum / a_sum
    mean_a, mean_m = a_sum / n, m_sum / n
    var_a = a_sq / n - mean_a ** 2
    var_m = m_sq / n - mean_m ** 2
    cov = am / n - mean_a * mean_m
    var_r = (var_m - 2 * r * cov + r ** 2 * var_a) / (n * mean_a ** 2)
    return r, max(var_r, 0.0)


def lift_interval(est_t: float, var_t: float, est_c: float, var_c: float, z: float = Z95) -> dict:
    """Relative lift t/c - 1 with a log-scale delta-method interval and a two-sided p-value."""
    if not (est_t > 0 and est_c > 0) or any(map(math.isnan, (var_t, var_c))):
        return {"lift": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "se_log": math.nan}
    log_ratio = math.log(est_t / est_c)
    se = math.sqrt(var_t / est_t ** 2 + var_c / est_c ** 2)
    p = 2 * stats.norm.sf(abs(log_ratio) / se) if se > 0 else (0.0 if log_ratio else 1.0)
    return {"lift": math.exp(log_ratio) - 1, "ci_low": math.exp(log_ratio - z * se) - 1,
            "ci_high": math.exp(log_ratio + z * se) - 1, "p_value": p, "se_log": se}


def srm_pvalue(users: np.ndarray, allocation: np.ndarray) -> float:
    """Chi-square test of arm sizes against intended allocation (a low p flags a broken split)."""
    users = np.asarray(users, float)
    alloc = np.asarray(allocation, float)
    if len(users) < 2 or np.any(~np.isfinite(alloc)) or users.sum() == 0:
        return math.nan
    expected = users.sum() * alloc / alloc.sum()
    return float(stats.chisquare(users, expected).pvalue)


def totals(arms: pd.DataFrame) -> pd.DataFrame:
    """Whole-test rows (day null): per-day rows alone cannot give user-level variances."""
    if "day" not in arms.columns:
        return arms
    tot = arms[arms["day"].isna()]
    missing = sorted(set(arms["experiment_id"]) - set(tot["experiment_id"]))
    if missing:
        raise ValueError(f"experiments {missing[:5]}: no whole-test rows (day null); per-day rows alone do not "
                         "determine the lift's interval")
    return tot


def analyze(arms: pd.DataFrame, srm_alpha: float = 0.001, source: str | None = None) -> pd.DataFrame:
    """One row per (experiment, treatment arm): breadth and depth per arm, lifts, intervals, SRM.

    The arms are validated as ab_arm records first (`source` names them in errors): impossible counts,
    repeated or self-compared arms, a missing or second control, a lone arm are RecordErrors, never
    a table of lifts."""
    arms = validate_frame(arms, AB_ARM, source)
    whole = arms["day"].isna().to_numpy() if "day" in arms else np.ones(len(arms), bool)
    no_days = arms["engaged_user_days"].isna().to_numpy() if "engaged_user_days" in arms else True
    blind = np.flatnonzero(whole & (arms["days"].to_numpy() > 1) & no_days)
    if len(blind):  # breadth is a per-day rate: without user-days a multi-day test measures nothing
        i, lines = int(blind[0]), arms.attrs.get("line_numbers")
        raise RecordError(source, lines[i] if lines else i, "engaged_user_days", None,
                          f"a number on the whole-test row of a {int(arms['days'].iloc[i])}-day test "
                          "to analyse it: breadth is engaged_user_days / (users x days), engaged_users alone "
                          "does not give it")
    rows = []
    for exp_id, g in totals(arms).groupby("experiment_id", sort=False):
        ctrl = g[g["is_control"]]
        if len(ctrl) != 1:
            raise ValueError(f"experiment '{exp_id}': expected exactly one control arm, found {len(ctrl)}")
        c = ctrl.iloc[0]
        alloc = g["allocation"].to_numpy(float) if "allocation" in g else np.full(len(g), np.nan)
        srm = srm_pvalue(g["users"].to_numpy(), alloc)
        bc, vbc = _breadth_stats(c)
        dc, vdc = _depth_stats(c)
        for _, t in g[~g["is_control"]].iterrows():
            bt, vbt = _breadth_stats(t)
            dt, vdt = _depth_stats(t)
            b = lift_interval(bt, vbt, bc, vbc)
            d = lift_interval(dt, vdt, dc, vdc)
            rows.append({
                "experiment_id": exp_id, "control": c["arm"], "treatment": t["arm"],
                "users_control": int(c["users"]), "users_treatment": int(t["users"]),
                "breadth_control": bc, "breadth_treatment": bt,
                **{f"breadth_{k}": v for k, v in b.items()},
                "depth_control": dc, "depth_treatment": dt,
                **{f"depth_{k}": v for k, v in d.items()},
                "srm_p_value": srm, "srm_flag": bool(srm < srm_alpha) if not math.isnan(srm) else False,
            })
    return pd.DataFrame(rows)

"""Lifts with 95% intervals from stored A/B arms (simulated 7-day tests or K-arm text tests).

Breadth is the share of arm users active per day, averaged over the test (sum_u a_u / (n*days));
depth is messages per active user-day (sum_u m_u / sum_u a_u), a ratio metric. Both lifts get
delta-method intervals on the log scale, from the user-level second moments stored with each arm;
an arm without moments (one-impression text tests) is treated as Bernoulli. A sample-ratio-mismatch
check compares arm sizes with their intended allocation. Each arm's rate gets its own Wald interval
and each treatment's difference from control a two-proportion z-test (pooled variance): on one-day
(Bernoulli) arms these are exactly statsmodels' proportion_confint, confint_proportions_2indep and
proportions_ztest. With K treatments the lift p-values are Holm-corrected within the experiment. Arms
with a pre-period get a CUPED lift (rm_lab.evaluate.cuped), arms with per-day to-date moments a
sequential verdict (rm_lab.evaluate.sequential). What makes a set of arms analysable (one control,
counts that are possible) is declared once, with the ab_arm record kind in rm_lab.schema.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from rm_lab.schema import AB_ARM, RecordError, row_number, validate_frame

Z95 = 1.959963984540054


def _col(df: pd.DataFrame, name: str) -> np.ndarray:
    return df[name].to_numpy(dtype=float, na_value=np.nan) if name in df.columns else np.full(len(df), np.nan)


def breadth_sums(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (users, sum of y_u, sum of y_u^2) for the per-user breadth y_u = a_u / days. A one-day
    arm without moments is Bernoulli (an impression is clicked or not: y^2 = y); a multi-day arm
    without moments has NaN sums (no honest interval)."""
    n, days, e = _col(df, "users"), _col(df, "days"), _col(df, "engaged_users")
    a_sum, a_sq = _col(df, "engaged_user_days"), _col(df, "active_days_sq")
    moments = ~np.isnan(a_sum) & ~np.isnan(a_sq)
    bern = ~moments & (days == 1)
    s1 = np.where(moments, a_sum / days, np.where(bern, e, np.nan))
    s2 = np.where(moments, a_sq / days ** 2, np.where(bern, e, np.nan))
    return n, s1, s2


def breadth_stats(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row (whole-test rows): breadth and the variance of its estimate."""
    n, s1, s2 = breadth_sums(df)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(np.isnan(s1), _col(df, "engaged_user_days") / (n * _col(df, "days")), s1 / n)
        var = np.maximum(s2 / n - mean ** 2, 0.0) / n
    return mean, np.where(np.isnan(s1), np.nan, var)


def ratio_stats(n, s_a, s_m, s_aa, s_mm, s_am):
    """Depth sum(m)/sum(a) and the delta-method variance of its estimate, from sums over n users
    (arrays or floats; NaN where no user was active or a moment is missing)."""
    n, s_a, s_m, s_aa, s_mm, s_am = (np.asarray(v, float) for v in (n, s_a, s_m, s_aa, s_mm, s_am))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(s_a > 0, s_m / s_a, np.nan)
        mean_a, mean_m = s_a / n, s_m / n
        var_a = s_aa / n - mean_a ** 2
        var_m = s_mm / n - mean_m ** 2
        cov = s_am / n - mean_a * mean_m
        var_r = (var_m - 2 * r * cov + r ** 2 * var_a) / (n * mean_a ** 2)
    return r, np.where(np.isnan(r) | np.isnan(var_r), np.nan, np.maximum(var_r, 0.0))


def depth_stats(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row (whole-test rows): depth and the variance of its estimate."""
    return ratio_stats(_col(df, "users"), _col(df, "engaged_user_days"), _col(df, "messages"),
                       _col(df, "active_days_sq"), _col(df, "messages_sq"), _col(df, "active_messages"))


def lift_intervals(est_t, var_t, est_c, var_c, z: float = Z95) -> dict[str, np.ndarray]:
    """Relative lifts t/c - 1 with log-scale delta-method intervals and two-sided p-values (arrays)."""
    est_t, var_t, est_c, var_c = (np.asarray(v, float) for v in (est_t, var_t, est_c, var_c))
    ok = (est_t > 0) & (est_c > 0) & ~np.isnan(var_t) & ~np.isnan(var_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_ratio = np.where(ok, np.log(np.where(ok, est_t / est_c, 1.0)), np.nan)
        se = np.where(ok, np.sqrt(var_t / est_t ** 2 + var_c / est_c ** 2), np.nan)
        p = np.where(se > 0, 2 * stats.norm.sf(np.abs(log_ratio) / se), np.where(log_ratio != 0, 0.0, 1.0))
    return {"lift": np.expm1(log_ratio), "ci_low": np.expm1(log_ratio - z * se),
            "ci_high": np.expm1(log_ratio + z * se), "p_value": np.where(ok, p, np.nan), "se_log": se}


def lift_interval(est_t: float, var_t: float, est_c: float, var_c: float, z: float = Z95) -> dict:
    """Relative lift t/c - 1 with a log-scale delta-method interval and a two-sided p-value."""
    return {k: float(v) for k, v in lift_intervals(est_t, var_t, est_c, var_c, z).items()}


def diff_intervals(est_t, var_t, est_c, var_c, z: float = Z95) -> dict[str, np.ndarray]:
    """Absolute differences t - c with Wald intervals (unpooled variances)."""
    d = np.asarray(est_t, float) - np.asarray(est_c, float)
    se = np.sqrt(np.asarray(var_t, float) + np.asarray(var_c, float))
    return {"diff": d, "diff_ci_low": d - z * se, "diff_ci_high": d + z * se}


def pooled_z_pvalues(t_sums: tuple, c_sums: tuple) -> np.ndarray:
    """Two-sided z-tests of equal means with the variance pooled over both arms (the arms are the same
    under the null): on Bernoulli arms, the two-proportion z-test (statsmodels proportions_ztest)."""
    (nt, st1, st2), (nc, sc1, sc2) = t_sums, c_sums
    with np.errstate(invalid="ignore", divide="ignore"):
        n = nt + nc
        mean = (st1 + sc1) / n
        var = np.maximum((st2 + sc2) / n - mean ** 2, 0.0)
        diff = st1 / nt - sc1 / nc
        se = np.sqrt(var * (1 / nt + 1 / nc))
        p = np.where(se > 0, 2 * stats.norm.sf(np.abs(diff) / se), np.where(diff == 0, 1.0, 0.0))
    return np.where(np.isnan(diff) | np.isnan(var), np.nan, p)


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error across the treatment arms of one test); NaN stays NaN.
    Equal to statsmodels' multipletests(method="holm"), which is not called: it runs gc.collect() per
    call, a fifth of a second, and a real archive holds thousands of tests."""
    p = np.asarray(p_values, float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if len(ok):  # step-down: the j-th smallest of m p-values times (m - j), kept monotone, capped at 1
        order = ok[np.argsort(p[ok], kind="stable")]
        m = len(order)
        out[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    return out


def holm_by_group(p: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Holm within each group code (an experiment's treatments); a group of one keeps its p-value."""
    p = np.asarray(p, float).copy()
    multi = np.flatnonzero(np.bincount(codes) > 1) if len(codes) else []
    if len(multi):
        sel = np.flatnonzero(np.isin(codes, multi))
        order = sel[np.argsort(codes[sel], kind="stable")]
        for idx in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):
            p[idx] = holm(p[idx])
    return p


def srm_pvalue(users: np.ndarray, allocation: np.ndarray) -> float:
    """Chi-square test of arm sizes against intended allocation (a low p flags a broken split)."""
    users = np.asarray(users, float)
    alloc = np.asarray(allocation, float)
    if len(users) < 2 or np.any(~np.isfinite(alloc)) or users.sum() == 0:
        return math.nan
    expected = users.sum() * alloc / alloc.sum()
    return float(stats.chisquare(users, expected).pvalue)


def srm_pvalues(users: np.ndarray, allocation: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """srm_pvalue of each experiment (group code), vectorised: NaN where an arm's allocation is unknown."""
    k = codes.max() + 1 if len(codes) else 0
    n_arms = np.bincount(codes, minlength=k)
    known = np.bincount(codes, weights=np.isfinite(allocation), minlength=k) == n_arms
    alloc = np.where(np.isfinite(allocation), allocation, 0.0)
    total_u, total_a = np.bincount(codes, users, k), np.bincount(codes, alloc, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = total_u[codes] * alloc / total_a[codes]
        chi2 = np.bincount(codes, (users - expected) ** 2 / expected, k)
        p = stats.chi2.sf(chi2, n_arms - 1)
    return np.where(known & (n_arms >= 2) & (total_u > 0), p, np.nan)


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


def analyze(arms: pd.DataFrame, srm_alpha: float = 0.001, source: str | None = None, alpha: float = 0.05,
            sequential_tau: float = 0.05) -> pd.DataFrame:
    """One row per (experiment, treatment arm): breadth and depth per arm, lifts, intervals, SRM.

    Columns per metric m (breadth, depth): m_control/m_treatment with their (1-alpha) intervals, the lift
    (m_lift, m_ci_low, m_ci_high, m_p_value, m_se_log) and m_p_holm across the experiment's treatments,
    the difference (m_diff, m_diff_ci_*), breadth_z_p_value (pooled two-proportion z-test); with a
    pre-period breadth_cuped_* and breadth_variance_reduction (NaN without); with per-day to-date
    moments m_seq_* (always-valid interval and p-value after daily looks) and m_naive_flag_day.
    Vectorised over experiments: an archive of thousands of tests is one pass.

    The arms are validated as ab_arm records first (`source` names them in errors): impossible counts,
    repeated or self-compared arms, a missing or second control, a lone arm are RecordErrors, never
    a table of lifts."""
    from rm_lab.evaluate.cuped import cuped_columns
    from rm_lab.evaluate.sequential import sequential_summary

    arms = validate_frame(arms, AB_ARM, source)
    z = float(stats.norm.ppf(1 - alpha / 2))
    whole = arms["day"].isna().to_numpy() if "day" in arms else np.ones(len(arms), bool)
    no_days = arms["engaged_user_days"].isna().to_numpy() if "engaged_user_days" in arms else True
    blind = np.flatnonzero(whole & (arms["days"].to_numpy() > 1) & no_days)
    if len(blind):  # breadth is a per-day rate: without user-days a multi-day test measures nothing
        i = int(blind[0])
        raise RecordError(source, row_number(arms, i), "engaged_user_days", None,
                          f"a number on the whole-test row of a {int(arms['days'].iloc[i])}-day test "
                          "to analyse it: breadth is engaged_user_days / (users x days), engaged_users alone "
                          "does not give it")
    tot = totals(arms).reset_index(drop=True)
    codes, exp_ids = pd.factorize(tot["experiment_id"], sort=False)
    is_ctrl = tot["is_control"].to_numpy(bool)
    n_ctrl = np.bincount(codes[is_ctrl], minlength=len(exp_ids))
    if (n_ctrl != 1).any():
        e = int(np.flatnonzero(n_ctrl != 1)[0])
        raise ValueError(f"experiment '{exp_ids[e]}': expected exactly one control arm, found {n_ctrl[e]}")
    ctrl_of = np.empty(len(exp_ids), int)
    ctrl_of[codes[is_ctrl]] = np.flatnonzero(is_ctrl)
    t_idx = np.flatnonzero(~is_ctrl)
    t_idx = t_idx[np.argsort(codes[t_idx], kind="stable")]  # experiments in order of appearance
    c_idx = ctrl_of[codes[t_idx]]
    est = {"breadth": breadth_stats(tot), "depth": depth_stats(tot)}
    out = {"experiment_id": tot["experiment_id"].to_numpy()[t_idx], "control": tot["arm"].to_numpy()[c_idx],
           "treatment": tot["arm"].to_numpy()[t_idx], "users_control": tot["users"].to_numpy(np.int64)[c_idx],
           "users_treatment": tot["users"].to_numpy(np.int64)[t_idx]}
    for m, (e, v) in est.items():
        ec, vc, et, vt = e[c_idx], v[c_idx], e[t_idx], v[t_idx]
        out[f"{m}_control"], out[f"{m}_treatment"] = ec, et
        for arm, ea, va in (("control", ec, vc), ("treatment", et, vt)):
            out[f"{m}_{arm}_ci_low"], out[f"{m}_{arm}_ci_high"] = ea - z * np.sqrt(va), ea + z * np.sqrt(va)
        out.update({f"{m}_{k}": x for k, x in lift_intervals(et, vt, ec, vc, z).items()})
        out.update({f"{m}_{k}": x for k, x in diff_intervals(et, vt, ec, vc, z).items()})
    sums = breadth_sums(tot)
    out["breadth_z_p_value"] = pooled_z_pvalues(tuple(s[t_idx] for s in sums), tuple(s[c_idx] for s in sums))
    out.update(cuped_columns(tot, codes, t_idx, c_idx, z))
    srm = srm_pvalues(tot["users"].to_numpy(float), _col(tot, "allocation"), codes)[codes[t_idx]]
    out["srm_p_value"], out["srm_flag"] = srm, np.where(np.isnan(srm), False, srm < srm_alpha)
    t_codes = codes[t_idx]
    for key in ("breadth_p_value", "depth_p_value", "breadth_cuped_p_value"):
        out[key.replace("p_value", "p_holm")] = holm_by_group(out[key], t_codes)
    res = pd.DataFrame(out)
    seq = sequential_summary(arms, alpha=alpha, tau=sequential_tau, source=source)
    if len(seq):
        res = res.merge(seq.astype({c: float for c in seq.columns[2:]}), on=["experiment_id", "treatment"],
                        how="left")
    else:  # no daily looks recorded: the same columns, empty
        res = pd.concat([res, pd.DataFrame(np.nan, index=res.index, columns=seq.columns[2:])], axis=1)
    for m in ("breadth", "depth"):
        res[f"{m}_seq_p_holm"] = holm_by_group(res[f"{m}_seq_p_value"].to_numpy(float), t_codes)
    return res

"""Daily monitoring of an A/B test with always-valid intervals (mixture SPRT, Johari et al. 2017/2022).

A team that looks at a fixed-sample 95% interval every day and stops at the first one that excludes 0
is wrong far more often than 5% of the time. The mixture SPRT keeps the error at alpha for any number
of looks: with the log lift to date theta_t and its variance V_t, the likelihood ratio of "lift ~
N(0, tau^2)" against "no lift" is

    Lambda_t = sqrt(V_t / (V_t + tau^2)) exp(tau^2 theta_t^2 / (2 V_t (V_t + tau^2))),

the always-valid p-value is min(1, min over looks s <= t of 1/Lambda_s), and the confidence sequence
theta_t +- sqrt(V_t (V_t + tau^2) / tau^2 * (2 log(1/alpha) + log((V_t + tau^2) / V_t))) is intersected
over the looks. tau (the lift the monitor is tuned to, on the log scale) must be chosen before the test.

The looks are the per-day rows of ab_arm records, which carry to-date user-level moments
(active_days_sq_to_date, ...): the lift to day t is computed from users' activity from day 0 through
day t, so it has an honest variance although the same users come back every day.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from rm_lab.schema import RecordError, row_number

TO_DATE = ("active_days_sq_to_date", "messages_sq_to_date", "active_messages_to_date")
METRICS = ("breadth", "depth")


def msprt(theta: np.ndarray, var: np.ndarray, tau: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per look (last axis): the mixture-SPRT p-value (not yet minimised over looks) and the radius of the
    confidence sequence, for estimates theta with variances var."""
    theta, var = np.asarray(theta, float), np.asarray(var, float)
    t2 = tau ** 2
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        log_lr = 0.5 * np.log(var / (var + t2)) + t2 * theta ** 2 / (2 * var * (var + t2))
        p = np.minimum(1.0, np.exp(-log_lr))
        radius = np.sqrt(var * (var + t2) / t2 * (2 * math.log(1 / alpha) + np.log((var + t2) / var)))
    return p, radius


def always_valid(theta: np.ndarray, var: np.ndarray, tau: float, alpha: float) -> dict[str, np.ndarray]:
    """Running always-valid p-value and intersected confidence sequence over looks on the last axis
    (arrays of tests x looks; daily_paths does the same per experiment and treatment),
    next to the naive fixed-sample p-value of each look."""
    p, radius = msprt(theta, var, tau, alpha)
    p = np.where(np.isnan(p), 1.0, p)
    low = np.fmax.accumulate(np.where(np.isnan(radius), -np.inf, theta - radius), axis=-1)
    high = np.fmin.accumulate(np.where(np.isnan(radius), np.inf, theta + radius), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        naive = 2 * stats.norm.sf(np.abs(theta) / np.sqrt(var))
    return {"p_value": np.minimum.accumulate(p, axis=-1), "log_low": low, "log_high": high, "naive_p": naive}


def _per_day(arms: pd.DataFrame) -> pd.DataFrame:
    """Per-day rows with their to-date moments, cumulated per arm; empty when there are none."""
    if "day" not in arms.columns or any(c not in arms.columns for c in TO_DATE):
        return pd.DataFrame()
    d = arms[arms["day"].notna()].copy()
    d["_row"] = np.flatnonzero(arms["day"].notna().to_numpy())
    if d.empty or d[list(TO_DATE)].isna().all().all():
        return pd.DataFrame()
    complete = d[list(TO_DATE)].notna().all(axis=1).groupby([d["experiment_id"], d["arm"]], sort=False
                                                             ).transform("all")
    d = d[complete]
    if d.empty:
        return d
    d = d.sort_values(["experiment_id", "arm", "day"], kind="stable")
    grp = d.groupby(["experiment_id", "arm"], sort=False)
    d["s_a"] = grp["engaged_users"].cumsum().astype(float)
    d["s_m"] = grp["messages"].cumsum().astype(float) if "messages" in d else np.nan
    return d


def _check_last_day(arms: pd.DataFrame, d: pd.DataFrame, source: str | None) -> None:
    """The last day's to-date moments are the whole test's: the arm's whole-test row must agree."""
    last = d[d["day"].to_numpy(float) == d["days"].to_numpy(float) - 1]
    if last.empty:
        return
    tot = arms[arms["day"].isna()]
    whole = {(e, a): i for e, a, i in zip(tot["experiment_id"], tot["arm"], range(len(tot)))}
    for day_col, tot_col in zip(TO_DATE, ("active_days_sq", "messages_sq", "active_messages")):
        if tot_col not in arms.columns:
            continue
        want = tot[tot_col].to_numpy(dtype=float, na_value=np.nan)
        for e, a, v, r in zip(last["experiment_id"], last["arm"], last[day_col].to_numpy(float), last["_row"]):
            w = want[whole[(e, a)]] if (e, a) in whole else np.nan
            if not np.isnan(w) and abs(v - w) > 1e-9 * max(abs(w), 1.0):
                raise RecordError(source, row_number(arms, int(r)), day_col, float(v),
                                  f"the arm's whole-test {tot_col} ({w:g}) on the test's last day")


def daily_paths(arms: pd.DataFrame, alpha: float = 0.05, tau: float = 0.05,
                source: str | None = None) -> pd.DataFrame:
    """One row per (experiment, treatment, metric, day): the lift to date with its naive p-value and its
    always-valid p-value and interval. `arms` are validated ab_arm rows (rm_lab.evaluate.ab.analyze)."""
    from rm_lab.evaluate.ab import ratio_stats

    d = _per_day(arms)
    if d.empty:
        return pd.DataFrame(columns=["experiment_id", "treatment", "metric", "day", "lift", "naive_p", "p_value",
                                     "ci_low", "ci_high"])
    n, t = d["users"].to_numpy(float), d["day"].to_numpy(float) + 1
    s_a, s_aa = d["s_a"].to_numpy(), d["active_days_sq_to_date"].to_numpy(float)
    var_a = s_aa / n - (s_a / n) ** 2
    bad = var_a < -1e-9 * np.abs(s_aa / n)
    if bad.any():
        i = int(d["_row"].to_numpy()[np.flatnonzero(bad)[0]])
        raise RecordError(source, row_number(arms, i), "active_days_sq_to_date",
                          float(arms["active_days_sq_to_date"].iloc[i]),
                          "at least (active user-days to date)^2 / users: a variance cannot be negative")
    _check_last_day(arms, d, source)
    d["breadth"] = s_a / (n * t)
    d["breadth_var"] = np.maximum(var_a, 0.0) / t ** 2 / n
    r, v = ratio_stats(n, s_a, d["s_m"].to_numpy(float), s_aa, d["messages_sq_to_date"].to_numpy(float),
                       d["active_messages_to_date"].to_numpy(float))
    d["depth"], d["depth_var"] = r, v
    keep = ["experiment_id", "arm", "day", *METRICS, *(f"{m}_var" for m in METRICS)]
    ctrl = d[d["is_control"].astype(bool)][keep]
    treat = d[~d["is_control"].astype(bool)][keep]
    j = treat.merge(ctrl.drop(columns="arm"), on=["experiment_id", "day"], suffixes=("", "_c"))
    j = j.sort_values(["experiment_id", "arm", "day"], kind="stable").reset_index(drop=True)
    key = pd.factorize(j["experiment_id"].astype(str) + "\x00" + j["arm"].astype(str), sort=False)[0]
    out = []
    for m in METRICS:
        with np.errstate(invalid="ignore", divide="ignore"):
            theta = np.log(j[m].to_numpy(float) / j[f"{m}_c"].to_numpy(float))
            var = (j[f"{m}_var"] / j[m] ** 2 + j[f"{m}_var_c"] / j[f"{m}_c"] ** 2).to_numpy(float)
        p, radius = msprt(theta, var, tau, alpha)
        f = pd.DataFrame({"key": key, "p": np.where(np.isnan(p), 1.0, p),
                          "low": np.where(np.isnan(radius), -np.inf, theta - radius),
                          "high": np.where(np.isnan(radius), np.inf, theta + radius)})
        g = f.groupby("key", sort=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            naive = 2 * stats.norm.sf(np.abs(theta) / np.sqrt(var))
        out.append(pd.DataFrame({"experiment_id": j["experiment_id"], "treatment": j["arm"], "metric": m,
                                 "day": j["day"].astype(int), "lift": np.expm1(theta), "naive_p": naive,
                                 "p_value": g["p"].cummin().to_numpy(),
                                 "ci_low": np.expm1(g["low"].cummax().to_numpy()),
                                 "ci_high": np.expm1(g["high"].cummin().to_numpy())}))
    return pd.concat(out, ignore_index=True)


def sequential_summary(arms: pd.DataFrame, alpha: float = 0.05, tau: float = 0.05,
                       source: str | None = None) -> pd.DataFrame:
    """Per (experiment, treatment): after the last daily look, the always-valid interval and p-value, the
    first day the monitor could stop (always-valid p <= alpha) and the first day a naive daily z-test
    would have declared a winner (p < alpha), per metric."""
    paths = daily_paths(arms, alpha, tau, source)
    cols = ["experiment_id", "treatment"]
    names = [f"{m}_{k}" for m in METRICS for k in ("seq_ci_low", "seq_ci_high", "seq_p_value", "seq_decision_day",
                                                   "naive_flag_day", "seq_looks")]
    if paths.empty:
        return pd.DataFrame(columns=cols + names)
    res = None
    for m in METRICS:
        h = paths[paths["metric"] == m]
        g = h.groupby(cols, sort=False)
        part = g[["ci_low", "ci_high", "p_value"]].last().rename(columns=lambda c: f"{m}_seq_{c}")
        part[f"{m}_seq_decision_day"] = h[h["p_value"] <= alpha].groupby(cols, sort=False)["day"].first()
        part[f"{m}_naive_flag_day"] = h[h["naive_p"] < alpha].groupby(cols, sort=False)["day"].first()
        part[f"{m}_seq_looks"] = g.size()
        res = part if res is None else res.join(part)
    return res.reset_index()[cols + names]

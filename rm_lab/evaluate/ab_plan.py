"""Planning an A/B test: the minimum detectable lift for given users and days, or the users and days a
target lift needs (`rm_lab ab-plan`).

The test is the one rm_lab.evaluate.ab runs: a two-sided z-test of the log lift, whose standard error
with n users per arm is se = sqrt((v_c / mean_c^2 + v_t / mean_t^2) / n) for per-user variances v of
the metric. The minimum detectable lift L at power 1 - beta solves log(1 + L) = (z_{1-alpha/2} +
z_{1-beta}) se(L), with the treatment arm's variance taken at the alternative (with K treatments the
alpha is split K ways, Bonferroni, which Holm never loses to).

Breadth over D days is y_u = a_u / D, a user's share of active days. If users differ in their daily
activity probability p_u (mean p, between-user variance s_b^2) and days are independent given the user,
var(y_u) = s_b^2 + (p (1 - p) - s_b^2) / D: longer tests average the day-to-day noise away but never
the between-user spread, so some lifts are out of reach at any length. A past test's records give p
and var(y_u) at its length D0, hence s_b^2. Depth (a ratio metric) is planned from a past test of the
same length only: its per-user variance at other lengths needs a model of messages it does not give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats
from scipy.optimize import brentq

from rm_lab.config import ConfigError, check_fields, param


@dataclass(frozen=True)
class Baseline:
    """What planning needs of the control: breadth p with its between-user variance, and optionally depth
    with its per-user (linearised) variance at days_measured."""

    rate: float
    between_var: float
    days_measured: int | None = None
    depth: float = math.nan
    depth_user_var: float = math.nan
    source: str = "given"

    def breadth_user_var(self, days: int, lift: float = 0.0) -> float:
        """Per-user variance of breadth over `days` days, in an arm whose activity is (1 + lift) times the
        baseline's (each user's p_u scaled, so the between-user variance scales by (1 + lift)^2)."""
        p, sb = self.rate * (1 + lift), self.between_var * (1 + lift) ** 2
        return sb + (p * (1 - p) - sb) / days

    def depth_var(self, days: int, lift: float = 0.0) -> float:
        return self.depth_user_var if days == self.days_measured else math.nan


def baseline_from_rate(rate: float, user_variance: float | None = None, days_measured: int = 1) -> Baseline:
    """A baseline from a rate and, optionally, the per-user variance of breadth over days_measured days
    (without it: no between-user spread, which understates the variance of any multi-day test)."""
    if not 0 < rate < 1:
        raise ConfigError(f"baseline_rate={rate!r}: expected a share of users active per day, in (0, 1)")
    if user_variance is None:
        return Baseline(rate, 0.0, None)
    return Baseline(rate, _between(rate, user_variance, days_measured, "user_variance"), days_measured)


def _between(rate: float, v: float, days: int, what: str) -> float:
    bern = rate * (1 - rate)
    if days == 1:
        return 0.0  # one day: a user's variance is Bernoulli whatever the spread
    lo, hi = bern / days, bern
    if not lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
        raise ConfigError(f"{what}={v:.6g}: expected a per-user variance of {days}-day breadth between "
                          f"p(1-p)/days = {lo:.6g} (all users alike) and p(1-p) = {hi:.6g} (each user always or "
                          f"never active) for rate {rate:.6g}")
    return float(min(max((v - lo) / (1 - 1 / days), 0.0), bern))


def baseline_from_arms(arms: pd.DataFrame, experiment_id: str | None = None, source: str | None = None) -> Baseline:
    """The control arm of a past test (validated ab_arm records; the one experiment, or experiment_id)."""
    from rm_lab.evaluate.ab import _col, depth_stats, totals
    from rm_lab.schema import AB_ARM, validate_frame

    arms = validate_frame(arms, AB_ARM, source)
    tot = totals(arms)
    exps = list(dict.fromkeys(tot["experiment_id"]))
    if experiment_id is None and len(exps) > 1:
        raise ConfigError(f"records={source}: {len(exps)} experiments ({', '.join(map(str, exps[:3]))}, ...); "
                          "expected one, or experiment_id=ID to choose")
    exp = experiment_id if experiment_id is not None else exps[0]
    if exp not in exps:
        raise ConfigError(f"experiment_id={exp!r}: not in records={source} (it has {', '.join(map(str, exps[:5]))})")
    c = tot[(tot["experiment_id"] == exp) & tot["is_control"].astype(bool)]
    days = int(c["days"].iloc[0])
    n, a_sum, a_sq = (float(_col(c, k)[0]) for k in ("users", "engaged_user_days", "active_days_sq"))
    if days == 1 and math.isnan(a_sum):
        a_sum = a_sq = float(c["engaged_users"].iloc[0])
    if math.isnan(a_sum) or math.isnan(a_sq):
        raise ConfigError(f"records={source}: experiment '{exp}' has no user-level moments (engaged_user_days, "
                          "active_days_sq) on its control's whole-test row; a variance cannot be planned from it")
    rate = a_sum / (n * days)
    v = max(a_sq / n - (a_sum / n) ** 2, 0.0) / days ** 2
    depth, var_depth = depth_stats(c)
    return Baseline(rate, _between(rate, v, days, f"records={source}: the control's variance"), days,
                    float(depth[0]), float(var_depth[0] * n), source=f"{source} ({exp}, control, {days} days)")


def _z(alpha: float, power: float, treatments: int) -> float:
    return float(stats.norm.ppf(1 - alpha / (2 * treatments)) + stats.norm.ppf(power))


def _var_log(mean: float, user_var, lift: float) -> float:
    """n x the variance of the log lift at an alternative `lift`; user_var(lift) is the arm's per-user
    variance there (a number: the same in both arms)."""
    v_c = user_var(0.0) if callable(user_var) else user_var
    v_t = user_var(lift) if callable(user_var) else user_var
    return v_c / mean ** 2 + v_t / (mean * (1 + lift)) ** 2


def mde(mean: float, user_var, users_per_arm: float, alpha: float = 0.05, power: float = 0.8,
        treatments: int = 1) -> float:
    """The smallest relative lift the test detects with the given power (two-sided, log scale): the
    lift L with log(1 + L) = z * se(L), the standard error taken at the alternative (user_var: a
    per-user variance, or a function of the lift giving the treatment arm's)."""
    z = _z(alpha, power, treatments)

    def gap(lift):
        return math.log1p(lift) - z * math.sqrt(_var_log(mean, user_var, lift) / users_per_arm)

    hi = 1.0
    while gap(hi) < 0 and hi < 1e6:
        hi *= 4
    return float(brentq(gap, 0.0, hi)) if gap(hi) >= 0 else math.inf


def required_users(mean: float, user_var, target: float, alpha: float = 0.05, power: float = 0.8,
                   treatments: int = 1) -> int:
    """Users per arm for the target relative lift."""
    return int(math.ceil(_var_log(mean, user_var, target) * (_z(alpha, power, treatments) / math.log1p(target)) ** 2))


@dataclass
class ABPlanConfig:
    """Plan an A/B test: the minimum detectable lift, or the users and days a target lift needs."""

    records: str | None = param(None, doc="a past test's ab_arm records: its control gives the baseline "
                                          "(breadth rate and between-user variance; depth at the same length); "
                                          "given, it replaces baseline_rate and user_variance")
    experiment_id: str | None = param(None, doc="which experiment of `records` (when it holds several)")
    baseline_rate: float | None = param(0.23, doc="without records: the share of users active per day (a "
                                                  "click-through rate for one-day tests); the default is of the order "
                                                  "of the simulated world's", gt=0, lt=1)
    user_variance: float | None = param(None, doc="with baseline_rate: the per-user variance of breadth over "
                                                  "variance_days days (default: users alike, Bernoulli days)", gt=0)
    variance_days: int = param(1, doc="the test length at which user_variance was measured", ge=1, le=3650)
    users_per_arm: int = param(40_000, doc="users in each arm", ge=2, le=1_000_000_000)
    days: int = param(7, doc="length of the planned test in days", ge=1, le=3650)
    treatments: int = param(1, doc="treatment arms against one control (alpha is split among them)", ge=1, le=1000)
    alpha: float = param(0.05, doc="two-sided error rate", gt=0, lt=0.5)
    power: float = param(0.8, doc="chance of detecting a lift of the MDE", gt=0.5, lt=1)
    target_mde: float | None = param(None, doc="a relative lift to detect (e.g. 0.02): report the users per arm "
                                               "(at `days`) and the days (at `users_per_arm`) it needs", gt=0, le=10)
    max_days: int = param(365, doc="longest test considered when searching the days a target needs", ge=1, le=3650)

    def __post_init__(self):
        check_fields(self)
        if self.records is None and self.baseline_rate is None:
            raise ConfigError("ab-plan: expected records=PATH (a past test) or baseline_rate=R")
        if self.user_variance is not None and self.baseline_rate is None:
            raise ConfigError("user_variance: given without baseline_rate (records give their own variance)")


def plan(cfg: ABPlanConfig, baseline: Baseline) -> pd.DataFrame:
    """One row per metric: baseline, per-user variance, MDE at the configured users and days, and for a
    target lift the users per arm and the days it needs (NaN: not reachable within max_days)."""
    rows = []
    for metric, mean, var_at in (("breadth", baseline.rate, baseline.breadth_user_var),
                                 ("depth", baseline.depth, baseline.depth_var)):
        v = var_at(cfg.days)
        if math.isnan(mean) or math.isnan(v):
            if metric == "depth" and not math.isnan(mean):
                rows.append({"metric": metric, "baseline": mean, "user_variance": math.nan, "mde": math.nan,
                             "note": f"depth is planned at the past test's length ({baseline.days_measured} days) "
                                     "only"})
            continue

        def at(days: int, metric=metric, var_at=var_at):  # the per-user variance as a function of the lift
            return (lambda lift: var_at(days, lift)) if metric == "breadth" else var_at(days)

        test = {"alpha": cfg.alpha, "power": cfg.power, "treatments": cfg.treatments}
        row = {"metric": metric, "baseline": mean, "user_variance": v,
               "mde": mde(mean, at(cfg.days), cfg.users_per_arm, **test), "note": ""}
        if cfg.target_mde is not None:
            row["users_needed"] = required_users(mean, at(cfg.days), cfg.target_mde, **test)
            ok = [d for d in range(1, cfg.max_days + 1) if not math.isnan(var_at(d))
                  and mde(mean, at(d), cfg.users_per_arm, **test) <= cfg.target_mde]
            row["days_needed"] = float(ok[0]) if ok else math.nan
            if not ok:
                row["note"] = (f"not reachable within {cfg.max_days} days at {cfg.users_per_arm:,} users per arm"
                               + (": the between-user spread sets a floor" if metric == "breadth" else ""))
        rows.append(row)
    return pd.DataFrame(rows)


def plan_table(cfg: ABPlanConfig, table: pd.DataFrame, baseline: Baseline) -> str:
    """Markdown summary of a plan."""
    target = cfg.target_mde is not None
    lines = [f"baseline: {baseline.source}; {cfg.users_per_arm:,} users per arm, {cfg.days} days, "
             f"{cfg.treatments} treatment(s), alpha {cfg.alpha:g}, power {cfg.power:g}", "",
             "| metric | baseline | per-user variance | MDE (relative lift) |"
             + (f" users per arm for {cfg.target_mde:+.2%} | days for {cfg.target_mde:+.2%} |" if target else ""),
             "| --- | --- | --- | --- |" + (" --- | --- |" if target else "")]
    for _, r in table.iterrows():
        var = "n/a" if pd.isna(r["user_variance"]) else f"{r['user_variance']:.4g}"
        cells = [r["metric"], f"{r['baseline']:.4f}", var, "n/a" if pd.isna(r["mde"]) else f"{r['mde']:+.2%}"]
        if target:
            cells += ["n/a" if pd.isna(r.get("users_needed")) else f"{int(r['users_needed']):,}",
                      "not reachable" if pd.isna(r.get("days_needed")) else f"{int(r['days_needed'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [n for n in table["note"] if n]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])

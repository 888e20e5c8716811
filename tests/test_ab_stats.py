"""The A/B statistics equal statsmodels on the same numbers; K arms get Holm; bootstrap agrees."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats import proportion as sm_prop

from rm_lab.evaluate.ab import analyze, holm
from rm_lab.evaluate.ab_bootstrap import bootstrap_bernoulli_lift, bootstrap_lift
from rm_lab.world.ab import ArmQuality, simulate_arm
from rm_lab.world.engagement import Population

ARMS = pd.DataFrame({"experiment_id": "t", "arm": ["ctrl", "b", "c", "d"], "is_control": [True, False, False, False],
                     "days": 1, "users": [10_000, 9_800, 10_300, 10_050],
                     "engaged_users": [1_000, 1_090, 1_010, 1_120]})


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_bernoulli_arms_equal_statsmodels(alpha):
    res = analyze(ARMS, alpha=alpha)
    c = ARMS.iloc[0]
    for (_, t), (_, r) in zip(ARMS.iloc[1:].iterrows(), res.iterrows()):
        x1, n1, x2, n2 = t.engaged_users, t.users, c.engaged_users, c.users
        # per-arm rate intervals: statsmodels' normal (Wald) interval
        assert (r.breadth_treatment_ci_low, r.breadth_treatment_ci_high) == pytest.approx(
            sm_prop.proportion_confint(x1, n1, alpha=alpha, method="normal"), rel=1e-12)
        assert (r.breadth_control_ci_low, r.breadth_control_ci_high) == pytest.approx(
            sm_prop.proportion_confint(x2, n2, alpha=alpha, method="normal"), rel=1e-12)
        # relative lift: the log-ratio (delta-method) interval and Wald test
        lo, hi = sm_prop.confint_proportions_2indep(x1, n1, x2, n2, compare="ratio", method="log", alpha=alpha)
        assert (r.breadth_ci_low, r.breadth_ci_high) == pytest.approx((lo - 1, hi - 1), rel=1e-12)
        assert r.breadth_p_value == pytest.approx(
            sm_prop.test_proportions_2indep(x1, n1, x2, n2, compare="ratio", method="log").pvalue, rel=1e-10)
        # absolute difference: Wald interval; two-proportion z-test with pooled variance
        assert (r.breadth_diff_ci_low, r.breadth_diff_ci_high) == pytest.approx(
            sm_prop.confint_proportions_2indep(x1, n1, x2, n2, compare="diff", method="wald", alpha=alpha), rel=1e-10)
        assert r.breadth_z_p_value == pytest.approx(sm_prop.proportions_ztest([x1, x2], [n1, n2])[1], rel=1e-10)


def test_holm_across_arms_equals_statsmodels():
    res = analyze(ARMS)
    assert np.allclose(res.breadth_p_holm, multipletests(res.breadth_p_value, method="holm")[1])
    assert (res.breadth_p_holm >= res.breadth_p_value).all()
    assert res.breadth_p_holm.iloc[0] > 2 * res.breadth_p_value.iloc[0]
    rng = np.random.default_rng(0)
    for _ in range(8):  # multipletests runs gc.collect() per call: few calls
        p = rng.uniform(0, 0.2, rng.integers(1, 9))
        p[rng.random(len(p)) < 0.2] = np.nan
        ok = ~np.isnan(p)
        want = np.full(len(p), np.nan)
        if ok.any():
            want[ok] = multipletests(p[ok], method="holm")[1]
        np.testing.assert_allclose(holm(p), want, equal_nan=True)
    # Holm is per experiment: a second test's arms do not dilute the first's
    two = pd.concat([ARMS, ARMS.assign(experiment_id="u").iloc[:2]], ignore_index=True)
    both = analyze(two)
    assert np.allclose(both.breadth_p_holm.iloc[:3], res.breadth_p_holm)
    assert both.breadth_p_holm.iloc[3] == both.breadth_p_value.iloc[3]


def _two_user_level_arms(seed: int, users: int):
    """A control and a +0.05 treatment simulated with per-user arrays, and analyze()'s row for them."""
    pop, rng = Population(), np.random.default_rng(seed)
    q = np.array([-0.2, -0.1, -0.1])
    st = [simulate_arm(q + s, users, 7, pop, rng, per_day=False, return_users=True) for s in (0.0, 0.05)]
    rows = [{"experiment_id": "m", "arm": a, "is_control": a == "c", "days": 7, **{k: s[k] for k in (
        "users", "engaged_users", "engaged_user_days", "messages", "active_days_sq", "messages_sq", "active_messages")}}
        for a, s in zip(("c", "t"), st)]
    return st, analyze(pd.DataFrame(rows)).iloc[0]


def test_multi_day_moments_equal_a_user_level_z_test():
    """With user-level moments the same numbers come from a t/z-test on the per-user breadth arrays."""
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    st, r = _two_user_level_arms(1, 5000)
    yc, yt = (s["active_days_per_user"] / 7 for s in st)
    cm = CompareMeans(DescrStatsW(yt), DescrStatsW(yc))
    lo, hi = cm.zconfint_diff(usevar="unequal")
    # statsmodels uses ddof=1 variances; ours are the moments' (ddof=0): equal to 1/n
    assert (r.breadth_diff_ci_low, r.breadth_diff_ci_high) == pytest.approx((lo, hi), rel=2e-3)
    # statsmodels pools the within-arm variances; under the null the grand variance (ours, which on
    # Bernoulli arms is proportions_ztest exactly) estimates the same number
    assert r.breadth_z_p_value == pytest.approx(cm.ztest_ind(usevar="pooled")[1], rel=1e-2)


def test_bootstrap_agrees_with_the_delta_method():
    st, r = _two_user_level_arms(2, 20_000)
    c, t = st
    ones = (np.full(len(t["active_days_per_user"]), 7.0), np.full(len(c["active_days_per_user"]), 7.0))
    b = bootstrap_lift((t["active_days_per_user"], ones[0]), (c["active_days_per_user"], ones[1]), n_boot=600)
    assert b["lift"] == pytest.approx(r.breadth_lift, rel=1e-9)
    assert b["se_log"] == pytest.approx(r.breadth_se_log, rel=0.1)
    d = bootstrap_lift((t["messages_per_user"], t["active_days_per_user"]),
                       (c["messages_per_user"], c["active_days_per_user"]), n_boot=600, seed=1)
    assert d["lift"] == pytest.approx(r.depth_lift, rel=1e-9)
    assert d["se_log"] == pytest.approx(r.depth_se_log, rel=0.1)
    res = analyze(ARMS).iloc[0]
    bb = bootstrap_bernoulli_lift(1_090, 9_800, 1_000, 10_000)
    assert bb["ci_low"] == pytest.approx(res.breadth_ci_low, abs=0.006)
    assert bb["ci_high"] == pytest.approx(res.breadth_ci_high, abs=0.006)


def test_k_arm_simulated_test_and_columns_are_stable():
    from rm_lab.world.ab import run_ab

    pop = Population()
    c = ArmQuality("c", np.array([-0.2, -0.1, -0.1]))
    arms = run_ab(c, [ArmQuality("t1", c.q + 0.1), ArmQuality("t2", c.q), ArmQuality("c", c.q)], pop, 100_000, 0.1, 7,
                  np.random.default_rng(3), per_day=False)
    res = analyze(arms)
    assert list(res.treatment) == ["t1", "t2", "c (treatment 3)"]
    assert res.breadth_p_holm.iloc[0] < 0.05 and (res.breadth_p_holm >= res.breadth_p_value).all()
    # no pre-period, no per-day rows: the CUPED and sequential columns exist and are empty
    assert res.breadth_cuped_lift.isna().all() and res.breadth_seq_p_value.isna().all()
    assert list(analyze(ARMS).columns) == list(res.columns)

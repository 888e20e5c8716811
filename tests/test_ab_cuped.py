"""CUPED: the pre-period of the same users cuts the lift's variance by rho^2, coverage stays 95%;
pre-period fields are validated; records without a pre-period still analyse."""

import numpy as np
import pandas as pd
import pytest

from rm_lab.evaluate.ab import analyze
from rm_lab.schema import RecordError
from rm_lab.world.ab import ArmQuality, run_ab, simulate_tests, true_lifts
from rm_lab.world.engagement import Population

POP = Population()
CTRL = ArmQuality("control", np.array([-0.20, -0.10, -0.10]))
TREAT = ArmQuality("treatment", np.array([-0.14, -0.05, -0.02]))
N_TESTS = 1000


@pytest.fixture(scope="module")
def many():
    arms = simulate_tests(CTRL, TREAT, POP, 4000, 7, N_TESTS, np.random.default_rng(20261202), pre_days=7)
    return analyze(arms), true_lifts(CTRL, TREAT, POP)["breadth_lift"]


def test_cuped_cuts_variance_by_at_least_what_rho_predicts(many):
    res, _ = many
    rho2 = float((res["breadth_pre_correlation"] ** 2).mean())
    assert 0.1 < rho2 < 0.5  # the pre-period predicts, but not perfectly
    ratio = res["breadth_cuped_lift"].var() / res["breadth_lift"].var()
    mc = 3 * np.sqrt(2 * rho2 / N_TESTS)  # 3 Monte-Carlo standard errors of the variance ratio
    assert ratio <= (1 - rho2) * (1 + mc), (ratio, 1 - rho2)
    assert ratio >= (1 - rho2) * (1 - mc)  # and not by more: the pre-period carries no treatment effect
    # the reduction each test reports is the one achieved across tests
    assert res["breadth_variance_reduction"].mean() == pytest.approx(1 - ratio, abs=0.03)


def test_cuped_intervals_still_cover_95_percent(many):
    res, truth = many
    for k in ("", "cuped_"):
        covered = ((res[f"breadth_{k}ci_low"] <= truth) & (truth <= res[f"breadth_{k}ci_high"])).mean()
        assert 0.935 <= covered <= 0.965, (k, covered)
    assert abs(res["breadth_cuped_lift"].mean() - truth) < 0.05 * truth  # unbiased
    assert (res["breadth_cuped_ci_high"] - res["breadth_cuped_ci_low"]).mean() < \
        (res["breadth_ci_high"] - res["breadth_ci_low"]).mean()


def _pre_arms(seed=0):
    return run_ab(CTRL, TREAT, POP, 40_000, 0.1, 7, np.random.default_rng(seed), per_day=False, pre_days=7)


def test_pre_period_round_trips_and_old_records_still_work(tmp_path):
    from rm_lab.io import read_records, write_records

    arms = _pre_arms()
    back = read_records(write_records(arms, tmp_path / "arms.parquet", "ab_arm"), "ab_arm")
    a, b = analyze(arms), analyze(back)
    pd.testing.assert_frame_equal(a, b)
    assert a["breadth_cuped_se_log"].iloc[0] < a["breadth_se_log"].iloc[0]
    old = analyze(arms.drop(columns=["pre_days", "pre_engaged_user_days", "pre_active_days_sq",
                                     "pre_active_days_cross"]))
    assert old["breadth_cuped_lift"].isna().all()
    pd.testing.assert_series_equal(old["breadth_lift"], a["breadth_lift"])
    # a test whose control has no pre-period gets no CUPED lift (not a half-adjusted one)
    half = arms.copy()
    pre = ["pre_days", "pre_engaged_user_days", "pre_active_days_sq", "pre_active_days_cross"]
    half.loc[half.is_control, pre] = None
    assert analyze(half)["breadth_cuped_lift"].isna().all()


@pytest.mark.parametrize("field,value,words", [
    ("pre_active_days_sq", None, "come together"),
    ("pre_engaged_user_days", 1e9, "pre_engaged_user_days <= users * pre_days"),
    ("pre_active_days_sq", 1.0, "pre_active_days_sq >= pre_engaged_user_days"),
    ("pre_active_days_cross", 1e12, "pre_active_days_cross <= pre_engaged_user_days * days"),
])
def test_impossible_pre_periods_are_refused(field, value, words):
    bad = _pre_arms()
    bad[field] = bad[field].astype(object)
    bad.loc[1, field] = value
    with pytest.raises(RecordError) as e:
        analyze(bad)
    assert e.value.row == 1 and e.value.field == field and words in str(e.value), str(e.value)


def test_a_pre_period_uncorrelated_beyond_one_is_refused():
    bad = _pre_arms()
    n = bad.loc[1, "users"]
    x, a = bad.loc[1, "pre_engaged_user_days"], bad.loc[1, "engaged_user_days"]
    bad.loc[1, "pre_active_days_sq"] = x ** 2 / n * 1.0001  # nearly no spread in x: no covariance possible
    bad.loc[1, "pre_active_days_cross"] = x * a / n * 1.5
    with pytest.raises(RecordError, match="correlation") as e:
        analyze(bad)
    assert e.value.field == "pre_active_days_cross"


def test_cuped_aa_tests_flag_about_5_percent():
    """The adjustment is estimated from the data (one pooled theta): it must not make null tests significant."""
    res = analyze(simulate_tests(CTRL, [CTRL, CTRL], POP, 3000, 7, 600, np.random.default_rng(11), pre_days=7))
    flagged = (res["breadth_cuped_p_value"] < 0.05).mean()
    assert 0.03 <= flagged <= 0.07, flagged
    # two null arms against one control: Holm keeps the family-wise rate at or under 5%
    fwer = (res.groupby("experiment_id")["breadth_cuped_p_holm"].min() < 0.05).mean()
    assert fwer <= 0.065, fwer

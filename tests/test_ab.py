"""The A/B simulator and the lift analysis: interval coverage, A/A false positives, SRM, records."""

import numpy as np
import pandas as pd
import pytest

from rm_lab.evaluate.ab import analyze, lift_interval, srm_pvalue
from rm_lab.io import read_records, write_records
from rm_lab.world.ab import ArmQuality, ABConfig, expected_metrics, run_ab, simulate_arm, simulate_ab, true_lifts
from rm_lab.world.engagement import Population

POP = Population()
# Fixed qualities (mean engagement logit per segment) standing in for two policies; a real policy's
# quality comes from policy_quality(), exercised in test_simulate_ab_end_to_end.
CTRL = ArmQuality("control", np.array([-0.20, -0.10, -0.10]))
TREAT = ArmQuality("treatment", np.array([-0.14, -0.05, -0.02]))


def _repeat(control, treatment, n_sims, seed):
    """n_sims independent tests, analysed in one call (one experiment id each)."""
    rng = np.random.default_rng(seed)
    arms = pd.concat([run_ab(control, treatment, POP, 200_000, 0.1, 7, rng, f"sim-{i}", per_day=False)
                      for i in range(n_sims)], ignore_index=True)
    res = analyze(arms)
    assert len(res) == n_sims and list(res["experiment_id"]) == [f"sim-{i}" for i in range(n_sims)]
    return res


def test_intervals_cover_true_lift_95_percent():
    truth = true_lifts(CTRL, TREAT, POP)
    assert 0.01 < truth["breadth_lift"] < 0.1 and 0.005 < truth["depth_lift"] < 0.1  # a realistic small lift
    res = _repeat(CTRL, TREAT, 1000, seed=20261127)
    for m in ("breadth", "depth"):
        covered = ((res[f"{m}_ci_low"] <= truth[f"{m}_lift"]) & (truth[f"{m}_lift"] <= res[f"{m}_ci_high"])).mean()
        assert 0.935 <= covered <= 0.965, (m, covered)
        # the estimates are unbiased around the truth
        assert abs(res[f"{m}_lift"].mean() - truth[f"{m}_lift"]) < 0.1 * abs(truth[f"{m}_lift"])


def test_null_tests_flag_about_5_percent():
    res = _repeat(CTRL, CTRL, 1000, seed=1127)
    for m in ("breadth", "depth"):
        flagged = (res[f"{m}_p_value"] < 0.05).mean()
        assert 0.035 <= flagged <= 0.065, (m, flagged)
        excl0 = ((res[f"{m}_ci_low"] > 0) | (res[f"{m}_ci_high"] < 0)).mean()
        assert excl0 == flagged  # the interval and the p-value tell the same story


def test_expected_metrics_match_a_huge_sample():
    rng = np.random.default_rng(0)
    st = simulate_arm(CTRL.q, 2_000_000, 7, POP, rng, per_day=False)
    exp = expected_metrics(CTRL.q, POP)
    assert st["engaged_user_days"] / (7 * st["users"]) == pytest.approx(exp["breadth"], rel=3e-3)
    assert st["messages"] / st["engaged_user_days"] == pytest.approx(exp["depth"], rel=3e-3)


def test_per_day_rows_add_up_and_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    arms = run_ab(CTRL, TREAT, POP, 50_000, 0.1, 7, rng, per_day=True)
    path = write_records(arms, tmp_path / "arms.parquet", "ab_arm")
    back = read_records(path, "ab_arm")
    for arm, g in back.groupby("arm"):
        tot = g[g["day"].isna()].iloc[0]
        days = g[g["day"].notna()]
        assert len(days) == 7
        assert days["messages"].sum() == tot["messages"]
        assert days["engaged_users"].sum() == tot["engaged_user_days"]
    pd.testing.assert_frame_equal(analyze(back), analyze(arms))


def test_sample_ratio_mismatch_is_flagged():
    assert srm_pvalue(np.array([10_000, 10_050]), np.array([0.5, 0.5])) > 0.1
    assert srm_pvalue(np.array([10_000, 10_600]), np.array([0.5, 0.5])) < 1e-3
    rng = np.random.default_rng(4)
    arms = run_ab(CTRL, TREAT, POP, 200_000, 0.1, 7, rng, per_day=False)
    arms.loc[~arms.is_control, "users"] = (arms.loc[~arms.is_control, "users"] * 0.95).astype(int)
    assert analyze(arms)["srm_flag"].iloc[0]


def test_lift_interval_known_values():
    out = lift_interval(0.2, 1e-6, 0.1, 1e-6)
    assert out["lift"] == pytest.approx(1.0)
    se = np.sqrt(1e-6 / 0.04 + 1e-6 / 0.01)
    assert out["ci_low"] == pytest.approx(np.exp(np.log(2) - 1.959964 * se) - 1, rel=1e-6)
    assert np.isnan(lift_interval(0.0, 1e-6, 0.1, 1e-6)["lift"])


def test_bernoulli_k_arm_tests_compare_each_arm_with_control():
    arms = pd.DataFrame({"experiment_id": "t1", "arm": ["a", "b", "c"], "is_control": [True, False, False],
                         "days": 1, "users": [10_000, 10_000, 10_000], "engaged_users": [100, 130, 100]})
    res = analyze(arms)
    assert list(res["treatment"]) == ["b", "c"]
    assert res["breadth_lift"].iloc[0] == pytest.approx(0.3)
    assert res["breadth_p_value"].iloc[0] < 0.05 < res["breadth_p_value"].iloc[1]
    assert res["depth_lift"].isna().all()  # no messages: depth is undefined, not invented


def test_analyze_requires_one_control():
    arms = pd.DataFrame({"experiment_id": "t", "arm": ["a", "b"], "is_control": [False, False], "days": 1,
                         "users": [10, 10], "engaged_users": [1, 2]})
    with pytest.raises(ValueError, match="exactly one control"):
        analyze(arms)


def test_simulate_ab_end_to_end():
    arms, truth = simulate_ab(ABConfig(eligible_users=100_000, quality_contexts=400, seed=2))
    res = analyze(arms).iloc[0]
    assert truth["breadth_lift"] > 0.05  # "improved" beats "baseline" in truth
    for m in ("breadth", "depth"):  # within 4 standard errors of the truth (log scale)
        assert abs(np.log1p(res[f"{m}_lift"]) - np.log1p(truth[f"{m}_lift"])) < 4 * res[f"{m}_se_log"]


def test_multi_day_arms_without_user_moments_get_no_invented_interval():
    rng = np.random.default_rng(5)
    arms = run_ab(CTRL, TREAT, POP, 50_000, 0.1, 7, rng, per_day=True)
    tot = arms[arms["day"].isna()].drop(columns=["active_days_sq", "messages_sq", "active_messages"])
    res = analyze(tot).iloc[0]
    assert res["breadth_control"] == pytest.approx(
        tot.loc[tot.is_control, "engaged_user_days"].iloc[0] / (7 * tot.loc[tot.is_control, "users"].iloc[0]))
    assert np.isnan(res["breadth_ci_low"]) and np.isnan(res["depth_lift"])
    with pytest.raises(ValueError, match="no whole-test rows"):
        analyze(arms[arms["day"].notna()])

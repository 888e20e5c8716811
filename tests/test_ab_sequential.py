"""Daily monitoring: always-valid intervals keep A/A false positives under 5% over 7 daily looks, where
a naive daily z-test does not; the monitor still stops real effects; per-day moments are checked."""

import math

import numpy as np
import pytest

from rm_lab.evaluate.ab import analyze
from rm_lab.evaluate.sequential import always_valid, daily_paths, msprt
from rm_lab.schema import RecordError
from rm_lab.world.ab import ArmQuality, run_ab, simulate_tests
from rm_lab.world.engagement import Population

POP = Population()
CTRL = ArmQuality("control", np.array([-0.20, -0.10, -0.10]))


@pytest.fixture(scope="module")
def aa():
    arms = simulate_tests(CTRL, CTRL, POP, 2000, 7, 1000, np.random.default_rng(7), per_day=True)
    return analyze(arms)


def test_aa_tests_with_daily_peeking_flag_at_most_5_percent(aa):
    assert len(aa) == 1000 and (aa["breadth_seq_looks"] == 7).all()
    for m in ("breadth", "depth"):
        seq = aa[f"{m}_seq_decision_day"].notna().mean()
        naive = aa[f"{m}_naive_flag_day"].notna().mean()
        assert seq <= 0.05, (m, seq)
        assert naive > 0.08, (m, naive)  # peeking at a fixed-sample test inflates its 5%
        fixed = (aa[f"{m}_p_value"] < 0.05).mean()  # one look at the end: about 5%
        assert 0.03 <= fixed <= 0.07, (m, fixed)
        assert ((aa[f"{m}_seq_p_value"] <= 0.05) == aa[f"{m}_seq_decision_day"].notna()).all()


def test_the_monitor_stops_a_real_lift_and_its_interval_covers_it():
    from rm_lab.world.ab import true_lifts

    treat = ArmQuality("t", CTRL.q + 0.15)
    truth = true_lifts(CTRL, treat, POP)
    res = analyze(run_ab(CTRL, treat, POP, 400_000, 0.1, 7, np.random.default_rng(8), per_day=True)).iloc[0]
    for m in ("breadth", "depth"):
        assert res[f"{m}_seq_ci_low"] <= truth[f"{m}_lift"] <= res[f"{m}_seq_ci_high"]
        assert res[f"{m}_seq_ci_low"] > 0 and not math.isnan(res[f"{m}_seq_decision_day"])
        # always valid costs width: wider than the fixed-sample interval of the last day
        assert res[f"{m}_seq_ci_high"] - res[f"{m}_seq_ci_low"] > res[f"{m}_ci_high"] - res[f"{m}_ci_low"]


def test_last_look_is_the_whole_test():
    arms = run_ab(CTRL, ArmQuality("t", CTRL.q + 0.05), POP, 100_000, 0.1, 7, np.random.default_rng(9), per_day=True)
    paths = daily_paths(arms)
    res = analyze(arms).iloc[0]
    for m in ("breadth", "depth"):
        last = paths[(paths.metric == m) & (paths.day == 6)].iloc[0]
        assert last["lift"] == pytest.approx(res[f"{m}_lift"], rel=1e-9)
        assert last["naive_p"] == pytest.approx(res[f"{m}_p_value"], rel=1e-6)
        assert paths[paths.metric == m]["p_value"].is_monotonic_decreasing


def test_msprt_p_value_and_confidence_sequence_agree():
    rng = np.random.default_rng(0)
    theta, var = rng.normal(0, 0.03, 500), rng.uniform(1e-5, 1e-3, 500)
    p, radius = msprt(theta, var, tau=0.05, alpha=0.05)
    assert ((p <= 0.05) == (np.abs(theta) >= radius)).mean() == 1.0
    # known value: Lambda = sqrt(V/(V+t2)) exp(t2 theta^2 / (2 V (V+t2)))
    v, t2, th = 1e-4, 0.0025, 0.04
    lam = math.sqrt(v / (v + t2)) * math.exp(t2 * th ** 2 / (2 * v * (v + t2)))
    assert msprt(np.array([th]), np.array([v]), 0.05, 0.05)[0][0] == pytest.approx(1 / lam)
    av = always_valid(theta.reshape(50, 10), var.reshape(50, 10), 0.05, 0.05)
    assert (np.diff(av["p_value"], axis=1) <= 0).all() and (np.diff(av["log_low"], axis=1) >= 0).all()


def test_to_date_moments_are_checked():
    arms = run_ab(CTRL, CTRL, POP, 20_000, 0.1, 7, np.random.default_rng(10), per_day=True)
    bad = arms.copy()
    i = bad.index[(bad["day"] == 3) & ~bad["is_control"]][0]
    bad.loc[i, "active_days_sq_to_date"] = bad.loc[i, "engaged_users"]  # sum a^2 < (sum a)^2 / n by day 3
    with pytest.raises(RecordError) as e:
        analyze(bad)
    assert e.value.row == i and e.value.field == "active_days_sq_to_date"
    bad = arms.copy()
    j = bad.index[(bad["day"] == 6) & bad["is_control"]][0]
    bad.loc[j, "messages_sq_to_date"] += 10  # the last day's to-date moments are the whole test's
    with pytest.raises(RecordError, match="whole-test messages_sq") as e:
        analyze(bad)
    assert e.value.row == j and e.value.field == "messages_sq_to_date"
    # per-day rows without to-date moments (older records): no sequential verdict, the rest as before
    old = arms.drop(columns=["active_days_sq_to_date", "messages_sq_to_date", "active_messages_to_date"])
    res = analyze(old)
    assert res["breadth_seq_p_value"].isna().all()
    assert res["breadth_lift"].iloc[0] == analyze(arms)["breadth_lift"].iloc[0]

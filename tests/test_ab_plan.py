"""ab-plan: the MDE it states is detected with the stated power in simulation; required users and days
are consistent with it; bad plans and bad records are one error line."""

import numpy as np
import pytest
from scipy.optimize import brentq

from rm_lab.evaluate.ab import analyze
from rm_lab.evaluate.ab_plan import (ABPlanConfig, baseline_from_arms, baseline_from_rate, mde, plan,
                                     required_users)
from rm_lab.world.ab import ArmQuality, expected_metrics, simulate_tests
from rm_lab.world.engagement import Population

POP = Population()
CTRL = ArmQuality("control", np.array([-0.20, -0.10, -0.10]))


@pytest.fixture(scope="module")
def past():
    """A past 14-day A/A test with many users: the baseline a team would plan from."""
    return simulate_tests(CTRL, CTRL, POP, 200_000, 14, 1, np.random.default_rng(1), prefix="past")


def _with_breadth_lift(lift: float) -> ArmQuality:
    base = expected_metrics(CTRL.q, POP)["breadth"]
    s = brentq(lambda s: expected_metrics(CTRL.q + s, POP)["breadth"] / base - 1 - lift, 0, 1)
    return ArmQuality("treatment", CTRL.q + s)


def test_planned_mde_is_detected_with_the_stated_power(past):
    """Planned from a 14-day test for a 7-day one (the between-user variance carries over)."""
    cfg = ABPlanConfig(records="past", users_per_arm=5000, days=7, power=0.8, alpha=0.05)
    table = plan(cfg, baseline_from_arms(past, source="past")).set_index("metric")
    target = table.loc["breadth", "mde"]
    assert 0.01 < target < 0.1
    assert np.isnan(table.loc["depth", "mde"])  # depth only at the past test's own length
    res = analyze(simulate_tests(CTRL, _with_breadth_lift(target), POP, 5000, 7, 2000, np.random.default_rng(2)))
    power = ((res["breadth_p_value"] < 0.05) & (res["breadth_lift"] > 0)).mean()
    assert abs(power - 0.8) <= 0.02, power
    # the naive plan that ignores how users differ (Bernoulli days) promises a smaller MDE than holds
    naive = plan(cfg, baseline_from_rate(table.loc["breadth", "baseline"])).set_index("metric")
    assert naive.loc["breadth", "mde"] < 0.8 * target


def test_depth_mde_from_a_test_of_the_same_length(past):
    cfg = ABPlanConfig(records="past", users_per_arm=5000, days=14, power=0.8, treatments=1)
    table = plan(cfg, baseline_from_arms(past, source="past")).set_index("metric")
    target = table.loc["depth", "mde"]
    base = expected_metrics(CTRL.q, POP)["depth"]
    s = brentq(lambda s: expected_metrics(CTRL.q + s, POP)["depth"] / base - 1 - target, 0, 1)
    res = analyze(simulate_tests(CTRL, ArmQuality("t", CTRL.q + s), POP, 5000, 14, 1000, np.random.default_rng(3)))
    power = ((res["depth_p_value"] < 0.05) & (res["depth_lift"] > 0)).mean()
    assert abs(power - 0.8) <= 0.035, power  # 1,000 tests: 1.3 points of Monte-Carlo error


def test_required_users_and_days_meet_the_target():
    b = baseline_from_rate(0.2, 0.05, 7)
    v7 = b.breadth_user_var(7)
    assert v7 == pytest.approx(0.05)
    var7 = lambda lift: b.breadth_user_var(7, lift)  # noqa: E731  (the treatment's variance at the alternative)
    n = required_users(0.2, var7, 0.02)
    assert mde(0.2, var7, n) <= 0.02 < mde(0.2, var7, n - 50)
    cfg = ABPlanConfig(baseline_rate=0.2, user_variance=0.05, variance_days=7, users_per_arm=n, days=3,
                       target_mde=0.02)
    row = plan(cfg, b).set_index("metric").loc["breadth"]
    assert row["days_needed"] == 7  # n users reach the target in exactly the 7 days they were sized for
    far = plan(ABPlanConfig(baseline_rate=0.2, user_variance=0.05, variance_days=7, users_per_arm=n // 4,
                            target_mde=0.02), b).set_index("metric").loc["breadth"]
    assert np.isnan(far["days_needed"]) and "between-user spread" in far["note"]
    # more treatments, stricter alpha: a larger MDE
    assert mde(0.2, var7, n, treatments=3) > mde(0.2, var7, n)


def test_ab_plan_cli(tmp_path, past):
    from rm_helpers import one_error_line, run_cli

    from rm_lab.io import write_records

    path = write_records(past, tmp_path / "past.parquet", "ab_arm")
    runs = tmp_path / "runs"
    p = run_cli("ab-plan", f"records={path}", "users_per_arm=5000", "days=14", "target_mde=0.03", runs=runs)
    assert p.returncode == 0, p.stderr
    assert "MDE (relative lift)" in p.stdout and "| breadth |" in p.stdout and "| depth |" in p.stdout
    assert "baseline: " + str(path) in p.stdout  # records replace the shipped baseline_rate
    assert (next((runs / "ab-plan").iterdir()) / "plan.csv").exists()
    assert "records=PATH (a past test) or baseline_rate" in one_error_line(run_cli("ab-plan", "baseline_rate=null",
                                                                                   runs=runs))
    assert "user_variance=0.9" in one_error_line(run_cli("ab-plan", "baseline_rate=0.2", "user_variance=0.9",
                                                         "variance_days=7", runs=runs))
    bad = tmp_path / "bad.jsonl"
    row = '{{"experiment_id": "x", "arm": "{}", "is_control": {}, "days": 1, "users": 10, "engaged_users": {}}}\n'
    bad.write_text(row.format("a", "true", 11) + row.format("b", "false", 1))
    line = one_error_line(run_cli("ab-plan", f"records={bad}", runs=runs))
    assert f"file {bad}, row 1, field 'engaged_users'" in line

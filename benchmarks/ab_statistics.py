"""The A/B statistics checked by simulation (the figures in README's A/B section):

- CUPED: variance of the breadth lift with and without the pre-period covariate over 1,000 tests,
  next to 1 - rho^2, and the coverage of both 95% intervals;
- daily peeking: share of 1,000 A/A tests flagged over 7 daily looks by the always-valid monitor and
  by a naive daily z-test;
- ab-plan: the power a simulation reaches at the planned MDE (stated: 80%).

    .venv/bin/python benchmarks/ab_statistics.py [n_tests]
"""

import sys
import time

import numpy as np
from scipy.optimize import brentq

from rm_lab.evaluate.ab import analyze
from rm_lab.evaluate.ab_plan import ABPlanConfig, baseline_from_arms, plan
from rm_lab.world.ab import ArmQuality, expected_metrics, simulate_tests, true_lifts
from rm_lab.world.engagement import Population

POP = Population()
CTRL = ArmQuality("control", np.array([-0.20, -0.10, -0.10]))
TREAT = ArmQuality("treatment", np.array([-0.14, -0.05, -0.02]))


def main(n_tests: int = 1000) -> None:
    t0 = time.perf_counter()
    res = analyze(simulate_tests(CTRL, TREAT, POP, 4000, 7, n_tests, np.random.default_rng(20261202), pre_days=7))
    truth = true_lifts(CTRL, TREAT, POP)["breadth_lift"]
    rho2 = (res["breadth_pre_correlation"] ** 2).mean()
    ratio = res["breadth_cuped_lift"].var() / res["breadth_lift"].var()
    cover = {k: ((res[f"breadth_{k}ci_low"] <= truth) & (truth <= res[f"breadth_{k}ci_high"])).mean()
             for k in ("", "cuped_")}
    print(f"CUPED, {n_tests} tests x 4,000 users/arm, 7-day pre-period: var ratio {ratio:.3f} "
          f"(1 - rho^2 = {1 - rho2:.3f}); coverage plain {cover['']:.1%}, CUPED {cover['cuped_']:.1%}")
    aa = analyze(simulate_tests(CTRL, CTRL, POP, 2000, 7, n_tests, np.random.default_rng(7), per_day=True))
    for m in ("breadth", "depth"):
        print(f"A/A, {n_tests} tests, 7 daily looks, {m}: always-valid flags {aa[f'{m}_seq_decision_day'].notna().mean():.1%}, "
              f"naive daily z-test flags {aa[f'{m}_naive_flag_day'].notna().mean():.1%}, "
              f"one look at day 7 {(aa[f'{m}_p_value'] < 0.05).mean():.1%}")
    past = simulate_tests(CTRL, CTRL, POP, 200_000, 14, 1, np.random.default_rng(1), prefix="past")
    cfg = ABPlanConfig(records="past", users_per_arm=5000, days=7)
    target = plan(cfg, baseline_from_arms(past, source="past")).set_index("metric").loc["breadth", "mde"]
    base = expected_metrics(CTRL.q, POP)["breadth"]
    s = brentq(lambda s: expected_metrics(CTRL.q + s, POP)["breadth"] / base - 1 - target, 0, 1)
    sim = analyze(simulate_tests(CTRL, ArmQuality("t", CTRL.q + s), POP, 5000, 7, 2 * n_tests, np.random.default_rng(2)))
    power = ((sim["breadth_p_value"] < 0.05) & (sim["breadth_lift"] > 0)).mean()
    print(f"ab-plan from a 14-day past test, 5,000 users/arm, 7 days: MDE {target:+.2%}; simulated power "
          f"{power:.1%} over {2 * n_tests} tests (stated 80%)")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)

"""A/B simulator at scale: one million users per arm, 7 days, per-day rows (target: under 60 s).

    .venv/bin/python benchmarks/ab_simulator_1m.py [users_per_arm]
"""

import sys
import time

import numpy as np

from rm_lab.evaluate.ab import analyze
from rm_lab.world.ab import policy_quality, run_ab, true_lifts
from rm_lab.world.engagement import Population
from rm_lab.world.policies import ScriptedPolicy


def main(users_per_arm: int = 1_000_000) -> None:
    pop = Population()
    t0 = time.perf_counter()
    qc = policy_quality(ScriptedPolicy.preset("baseline"), pop, 2000)
    qt = policy_quality(ScriptedPolicy.preset("improved"), pop, 2000)
    t1 = time.perf_counter()
    rng = np.random.default_rng(0)
    # eligible users = 10x the arm size at a 10% share per arm, as in the paper's tests
    arms = run_ab(qc, qt, pop, users_per_arm * 10, 0.1, 7, rng, per_day=True)
    res = analyze(arms).iloc[0]
    t2 = time.perf_counter()
    truth = true_lifts(qc, qt, pop)
    print(f"users per arm: {res.users_control:,} / {res.users_treatment:,}")
    print(f"policy quality (2 x 2,000 replies scored): {t1 - t0:.2f} s")
    print(f"7-day test, per-day rows, analysis: {t2 - t1:.2f} s")
    print(f"total: {t2 - t0:.2f} s (target < 60 s)")
    for m in ("breadth", "depth"):
        print(f"{m} lift {res[f'{m}_lift']:+.4f} [{res[f'{m}_ci_low']:+.4f}, {res[f'{m}_ci_high']:+.4f}] "
              f"true {truth[f'{m}_lift']:+.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)

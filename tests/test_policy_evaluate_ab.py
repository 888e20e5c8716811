"""The simulated A/B interval of `rm_lab evaluate` holds the noise of measuring each policy on a few
contexts (paired bootstrap over contexts) as well as the users' noise (rm_lab.policy.evaluate)."""
from __future__ import annotations

import numpy as np
import pytest

from rm_lab.policy.evaluate import ab_interval, context_lift_sd
from rm_lab.world.ab import ArmQuality, true_lifts
from rm_lab.world.engagement import Population

POP = Population(world_version=2)
S = len(POP.shares)


def draw(rng, m, gain=0.15, sd=1.0):
    """Per-context engagement logits of a baseline and of a candidate `gain` better on average; the two
    share each context's difficulty (paired), plus their own reply noise."""
    ctx = rng.normal(0, sd, (m, 1))
    base = ctx + rng.normal(0, 0.5, (m, S))
    cand = ctx + gain + rng.normal(0, 0.5, (m, S))
    return cand, base


def test_context_noise_is_zero_for_identical_policies_and_shrinks_with_more_contexts():
    rng = np.random.default_rng(0)
    cand, base = draw(rng, 64)
    assert context_lift_sd(base, base, POP, 200) == {"breadth": 0.0, "depth": 0.0}
    small = context_lift_sd(*draw(rng, 16), POP, 400, seed=1)
    large = context_lift_sd(*draw(rng, 256), POP, 400, seed=1)
    for m in ("breadth", "depth"):
        assert small[m] > 0 and 2.5 < small[m] / large[m] < 6.5  # ~ sqrt(256 / 16) = 4
    with pytest.raises(ValueError, match="one shape"):
        context_lift_sd(cand, base[:3], POP)


def test_the_interval_covers_the_policies_true_lift_not_only_the_lift_on_these_contexts():
    """Regression: with 8 contexts and 2M users the users-only interval is a few tenths of a percent wide,
    so it missed the lift over the context distribution most of the time."""
    rng = np.random.default_rng(3)
    big_c, big_b = draw(np.random.default_rng(99), 200_000)
    truth = true_lifts(ArmQuality("b", big_b.mean(0)), ArmQuality("c", big_c.mean(0)), POP)["breadth_lift"]
    old = new = 0
    reps = 120
    for r in range(reps):
        c, b = draw(rng, 8)
        lift = true_lifts(ArmQuality("b", b.mean(0)), ArmQuality("c", c.mean(0)), POP)["breadth_lift"]
        users_low, users_high = lift - 0.002, lift + 0.002  # what the test's own delta-method interval gives
        old += users_low <= truth <= users_high
        e = ab_interval(lift, users_low, users_high, context_lift_sd(c, b, POP, 300, seed=r)["breadth"])
        assert e["low"] <= users_low and e["high"] >= users_high and e["lift"] == lift
        new += e["low"] <= truth <= e["high"]
    assert old / reps < 0.3
    assert new / reps > 0.8  # the bootstrap at 8 contexts is a little optimistic: 0.87 here


def test_ab_interval_adds_variances_on_the_log_ratio_scale():
    e = ab_interval(0.05, 0.03, 0.07, 0.0)
    assert e["low"] == pytest.approx(0.03, abs=2e-4) and e["high"] == pytest.approx(0.07, abs=2e-4)
    w = ab_interval(0.05, 0.03, 0.07, 0.0102)
    se_u = (np.log(1.07) - np.log(1.03)) / (2 * 1.959963984540054)
    assert w["log_se"] == pytest.approx(np.hypot(se_u, 0.0102)) and w["p_value"] > e["p_value"]


def test_a_large_lift_over_a_weak_baseline_keeps_its_lower_bound_above_zero():
    """Regression: a 10x breadth lift (engaging vs terse) with a symmetric interval on the lift itself got a
    lower bound below 0; on the log-ratio scale the skew of a ratio is taken into account."""
    rng = np.random.default_rng(5)
    ctx = rng.normal(0, 1.0, (30, 1))
    base, cand = ctx - 3.0 + rng.normal(0, 0.5, (30, S)), ctx + 0.5 + rng.normal(0, 0.5, (30, S))
    lift = true_lifts(ArmQuality("b", base.mean(0)), ArmQuality("c", cand.mean(0)), POP)["breadth_lift"]
    e = ab_interval(lift, lift * 0.98, lift * 1.02, context_lift_sd(cand, base, POP, 300)["breadth"])
    assert lift > 2 and 0 < e["low"] < lift < e["high"]

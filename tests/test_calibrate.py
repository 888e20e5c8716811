"""Lift calibration: the map, conformal intervals that hold, JSON round trip, reliability numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rm_lab.calibrate.evaluation import check_targets, heldout
from rm_lab.calibrate.experiments import check_experiments, lift_se
from rm_lab.calibrate.intervals import (Calibration, fit_calibration, load_calibration, loo_evaluate, predict_lift,
                                        save_calibration)
from rm_lab.calibrate.lift_map import LiftMap, fit_lift_map
from rm_lab.calibrate.reliability import reliability
from rm_lab.schema import RecordError


def _tests(n, seed=0, tau=0.01, slope=0.5, intercept=-0.2):
    """Synthetic past tests: lift = intercept + slope * x + map error (tau) + sampling noise (se)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.8, n)
    se = rng.uniform(0.005, 0.04, n)
    true = intercept + slope * x + rng.normal(0, tau, n)
    y = true + rng.normal(0, se)
    return x, y, se, true


def test_linear_map_recovers_slope_and_isotonic_is_monotone():
    x, y, se, _ = _tests(200, tau=0.0)
    lm = fit_lift_map(x, y, 1 / se ** 2, "linear")
    assert lm.slope == pytest.approx(0.5, abs=0.03) and lm.intercept == pytest.approx(-0.2, abs=0.02)
    iso = fit_lift_map(x, y, None, "isotonic")
    grid = np.linspace(0, 1, 50)
    assert np.all(np.diff(iso.predict(grid)) >= 0)
    assert LiftMap.from_json(json.loads(json.dumps(iso.to_json()))).predict(grid) == pytest.approx(iso.predict(grid))


def test_weighted_fit_trusts_precise_tests():
    """A noisy test that disagrees barely moves a weighted fit (it would move an unweighted one)."""
    x = np.array([0.0, 0.5, 1.0, 0.25])
    y = np.array([0.0, 0.5, 1.0, 2.0])
    w = np.array([1e4, 1e4, 1e4, 1.0])
    assert fit_lift_map(x, y, w).slope == pytest.approx(1.0, abs=0.01)
    assert abs(fit_lift_map(x, y).slope - 1.0) > 0.1


def test_coverage_holds_for_new_tests_with_their_own_noise():
    """Fitted on 40 tests, the 90% intervals cover ~90% of fresh tests of the same kind, noisy or not."""
    x, y, se, _ = _tests(40, seed=1)
    cal = fit_calibration(x, y, se, confidence=0.9)
    xn, yn, sen, _ = _tests(4000, seed=2)
    p = predict_lift(cal, xn, sen)
    cov = np.mean((yn >= p["low"]) & (yn <= p["high"]))
    assert 0.84 <= cov <= 0.97
    # the interval grows with the new test's standard error: it carries the test's sampling noise
    narrow, wide = predict_lift(cal, 0.5, 0.001), predict_lift(cal, 0.5, 0.1)
    assert wide["high"] - wide["low"] > 3 * (narrow["high"] - narrow["low"])


def test_map_error_alone_is_not_ignored():
    """Tests measured without noise but a map that misses by tau: intervals of width ~2*1.64*tau, not 0."""
    x, y, se, _ = _tests(60, seed=3, tau=0.05)
    se = np.full_like(se, 1e-6)
    cal = fit_calibration(x, y - 0 * se, se)
    assert cal.tau == pytest.approx(0.05, rel=0.35)
    p = predict_lift(cal, 0.5, 0.0)
    assert 0.1 < p["high"] - p["low"] < 0.3


def test_save_load_round_trip_is_json(tmp_path):
    x, y, se, _ = _tests(30, seed=4)
    cal = fit_calibration(x, y, se, method="isotonic", predictor="win_point_user", meta={"source": "t"})
    path = save_calibration(cal, tmp_path / "calibration.json")
    raw = json.loads(path.read_text())
    assert raw["format"].startswith("rm_lab.calibration") and raw["predictor"] == "win_point_user"
    back = load_calibration(tmp_path)  # a run folder works too
    a, b = predict_lift(cal, [0.3, 0.6], [0.01, 0.02]), predict_lift(back, [0.3, 0.6], [0.01, 0.02])
    for k in a:
        assert np.allclose(a[k], b[k])


def test_broken_calibration_file_is_one_clear_error(tmp_path):
    from rm_lab.config import ConfigError

    (tmp_path / "calibration.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="calibration.json.*format 'other'"):
        load_calibration(tmp_path)
    with pytest.raises(ValueError, match="scores"):
        Calibration.from_json({"format": "rm_lab.calibration/1", "tau": 0.1, "confidence": 0.9, "scores": [-1],
                               "lift_map": {"method": "linear", "slope": 1, "intercept": 0}})


def test_too_few_tests_give_an_infinite_interval_not_a_false_one():
    x, y, se, _ = _tests(5, seed=5)
    p = predict_lift(fit_calibration(x, y, se, confidence=0.9), 0.5, 0.01)
    assert np.isinf(p["high"]) and p["low"] == -1.0  # anything a test can measure: [-100%, inf)
    p = predict_lift(fit_calibration(x, y, se, confidence=0.9, floor=None), 0.5, 0.01)  # a log scale: unbounded
    assert np.isinf(p["high"]) and np.isinf(p["low"])


def test_loo_coverage_and_reliability_numbers():
    x, y, se, true = _tests(60, seed=6)
    ev = loo_evaluate(x, y, se, confidence=0.9)
    m = reliability(ev["pred"], y, ev["low"], ev["high"], true)
    assert 0.8 <= m["coverage"] <= 0.98
    assert m["spearman"] > 0.8 and m["spearman_true"] > 0.8
    assert m["calibration_slope"] == pytest.approx(1.0, abs=0.25)
    assert abs(m["calibration_intercept"]) < 0.05
    # a prediction of the wrong sign everywhere: sign agreement 0, negative Spearman
    bad = reliability(-np.abs(y) - 0.01, np.abs(y) + 0.01)
    assert bad["sign_agreement"] == 0.0


def test_uninformative_predictor_gets_wide_intervals_and_no_rank():
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, 50)
    y = rng.normal(0, 0.1, 50)  # unrelated to x
    ev = loo_evaluate(x, y, np.full(50, 0.01))
    m = reliability(ev["pred"], y, ev["low"], ev["high"])
    assert abs(m["spearman"]) < 0.4 and m["mean_width"] > 0.25


def test_heldout_table_and_targets():
    x, y, se, true = _tests(40, seed=8)
    df = pd.DataFrame({"experiment_id": [f"e{i}" for i in range(40)], "win_point_user": x, "observed_lift": y,
                       "observed_se": se, "true_lift": true})
    out, m = heldout(df, "win_point_user")
    assert {"loo_pred", "loo_low", "loo_high", "loo_covered"} <= set(out.columns)
    t = check_targets(m)
    assert set(t) == {"spearman_true >= 0.8", "spearman (measured) >= 0.6", "coverage in [0.85, 0.95]"}
    assert t["spearman_true >= 0.8"]["met"]
    assert not check_targets({"spearman": 0.1})["spearman (measured) >= 0.6"]["met"]


@pytest.mark.parametrize("row,field", [(1, "observed_se"), (2, "observed_lift"), (0, "experiment_id")])
def test_bad_experiment_rows_are_named(row, field):
    df = pd.DataFrame({"experiment_id": ["a", "b", "c", "d"], "observed_lift": [0.1, 0.0, 0.2, 0.1],
                       "observed_se": [0.01, 0.01, 0.01, 0.01], "x": [0.5, 0.6, 0.7, 0.8]})
    if field == "observed_se":
        df.loc[row, field] = 0.0
    elif field == "observed_lift":
        df.loc[row, field] = np.nan
    else:
        df.loc[3, field] = "a"
    with pytest.raises(RecordError) as e:
        check_experiments(df, "past.csv", "x")
    assert e.value.field == field and e.value.row == (3 if field == "experiment_id" else row)
    assert "past.csv" in str(e.value)


def test_lift_se_matches_the_delta_interval():
    from rm_lab.evaluate.ab import lift_interval

    iv = lift_interval(0.11, 1e-6, 0.10, 1e-6)
    row = {"breadth_ci_low": iv["ci_low"], "breadth_ci_high": iv["ci_high"]}
    # on the lift scale the log interval is nearly symmetric for small se: se ~ (1 + lift) * se_log
    assert lift_se(row) == pytest.approx((1 + iv["lift"]) * iv["se_log"], rel=0.01)


def test_test_design_spans_presets_and_keeps_knobs_valid():
    from rm_lab.calibrate.simulated import design_tests, vary_style
    from rm_lab.world.policies import PRESETS

    rng = np.random.default_rng(0)
    base, target = PRESETS["baseline"], PRESETS["emoji_heavy"]
    assert vary_style(base, target, 1.0, 0.0, rng) == target and vary_style(base, target, 0.0, 0.0, rng) == base
    half = vary_style(base, target, 0.5, 0.0, rng)
    assert half.emoji == pytest.approx((base.emoji + target.emoji) / 2)
    tests = design_tests(14, ["baseline", "improved"], ["terse", "verbose", "preachy"], (0.2, 1.0), 2.0, seed=1)
    assert [c.name for c, _ in tests[:4]] == ["baseline", "improved", "baseline", "improved"]
    assert {t.name.split("~")[0] for _, t in tests} == {"terse", "verbose", "preachy"}
    assert len({t.name for _, t in tests}) == 14
    for _, t in tests:  # even a large nudge keeps probabilities in [0, 1] and rates >= 0
        s = t.style
        assert 0 <= s.question <= 1 and 0 <= s.preachy <= 1 and 0 <= s.wall <= 1 and s.emoji >= 0


def test_a_given_model_is_loaded_with_the_shared_embedding_cache(monkeypatch, tmp_path):
    """Regression: with cache_dir null the model was loaded without a cache, so every policy's test
    contexts were re-encoded (3x the encoder work of a calibrate run)."""
    from rm_lab.calibrate import stage
    from rm_lab.calibrate.config import CalibrateConfig
    from rm_lab.reward import model as model_mod
    from rm_lab.reward.embed_cache import default_cache_root

    seen = {}
    monkeypatch.setattr(model_mod.RewardModel, "load", classmethod(lambda cls, d, c=None: seen.update(dir=d, cache=c)))
    stage.reward_model(CalibrateConfig(model=str(tmp_path)), run=None)
    assert seen == {"dir": str(tmp_path), "cache": default_cache_root()}
    stage.reward_model(CalibrateConfig(model=str(tmp_path), cache_dir=str(tmp_path / "c")), run=None)
    assert seen["cache"] == str(tmp_path / "c")

"""Regression tests of three calibration defects: intervals below -100% lift, the Upworthy settings checked
only at run time, and the per-level refits of the Upworthy coverage curve."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rm_lab import config as cfgmod
from rm_lab.calibrate import intervals, upworthy
from rm_lab.calibrate.config import CalibrateConfig
from rm_lab.calibrate.intervals import Calibration, fit_calibration, loo_evaluate, predict_lift
from rm_lab.config import ConfigError


def _falling(n=30, seed=0):
    """Past tests with large negative lifts and noisy measurements: the raw interval reaches below -1."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.9, 0.2, n)
    se = np.full(n, 0.15)
    return x, x + rng.normal(0, 0.15, n), se


def test_relative_lift_intervals_stop_at_minus_100_percent():
    x, y, se = _falling()
    cal = fit_calibration(x, y, se, confidence=0.9)
    p = predict_lift(cal, [-0.95, -0.9, 0.1], [0.3, 0.3, 0.01])
    assert np.all(p["low"] >= -1.0) and np.all(p["lift"] >= -1.0)
    assert p["low"][0] == -1.0  # the unclipped interval reached below -100%
    raw = Calibration(cal.lift_map, cal.tau, cal.scores, cal.predictor, cal.confidence, floor=None)
    assert predict_lift(raw, -0.95, 0.3)["low"] < -1.0  # on a log scale nothing is clipped
    assert p["high"][2] == pytest.approx(predict_lift(raw, 0.1, 0.01)["high"])  # clipping moves nothing else
    assert np.all(loo_evaluate(x, y, se)["low"] >= -1.0)


def test_the_floor_round_trips_and_old_files_follow_their_scale():
    x, y, se = _falling()
    cal = fit_calibration(x, y, se, floor=None, meta={"scale": "log CTR ratio"})
    assert Calibration.from_json(cal.to_json()).floor is None
    assert Calibration.from_json(fit_calibration(x, y, se).to_json()).floor == -1.0
    old = cal.to_json()
    del old["floor"]  # written before the floor existed
    assert Calibration.from_json(old).floor is None
    old["meta"] = {}
    assert Calibration.from_json(old).floor == -1.0


def test_upworthy_settings_are_checked_when_the_config_is_read():
    with pytest.raises(ConfigError, match="calib_folds"):
        cfgmod.load(CalibrateConfig, "calibrate", ["upworthy.calib_folds=1"])
    with pytest.raises(ConfigError, match="unknown key"):
        cfgmod.load(CalibrateConfig, "calibrate", ["upworthy.no_such_key=3"])
    cfg = cfgmod.load(CalibrateConfig, "calibrate", ["source=upworthy", "upworthy.limit=50"])
    assert cfg.upworthy == {"limit": 50}


def _pairs(n, seed):
    rng = np.random.default_rng(seed)
    pred = rng.normal(0, 0.1, n)
    se = rng.uniform(0.02, 0.08, n)
    obs = 0.8 * pred + rng.normal(0, 1, n) * np.sqrt(0.03 ** 2 + se ** 2)
    return pd.DataFrame({"experiment_id": [f"e{i // 2}" for i in range(n)], "pred_log_lift": pred,
                         "observed_log_lift": obs, "observed_lift": np.expm1(obs), "planned_se": se})


def test_coverage_by_level_fits_once_and_gives_the_per_level_fits_numbers(monkeypatch):
    cal_pairs, test_pairs = _pairs(120, 0), _pairs(200, 1)
    levels = (0.5, 0.8, 0.9)
    per_level = {lv: float(upworthy.calibrate_lifts(cal_pairs, test_pairs, lv, "linear", 5)[1]["covered"].mean())
                 for lv in levels}
    calls = []
    real = intervals.fit_calibration
    monkeypatch.setattr(intervals, "fit_calibration", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = upworthy.coverage_by_level(cal_pairs, test_pairs, levels, "linear", 5)
    assert got == pytest.approx(per_level, abs=1e-12)
    assert len(calls) == 1  # was one fit per level
    cal = upworthy.calibrate_lifts(cal_pairs, test_pairs, 0.9, "linear", 5)[0]
    calls.clear()
    assert upworthy.coverage_by_level(cal_pairs, test_pairs, levels, "linear", 5, calibration=cal) == got
    assert not calls

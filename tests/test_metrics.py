"""rm_lab.reward.metrics: ECE by hand, calibrators on synthetic data with a known answer."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from rm_lab.reward import metrics as M


def test_ece_hand_made_cases():
    # all predictions 0.8 in one bin, 3 of 5 positive: |0.6 - 0.8| = 0.2
    assert M.ece([1, 1, 1, 0, 0], [0.8] * 5, n_bins=10) == pytest.approx(0.2)
    # two bins: p=0.1 (2 samples, 0 positive -> 0.1), p=0.9 (2 samples, both positive -> 0.1)
    assert M.ece([0, 0, 1, 1], [0.1, 0.1, 0.9, 0.9], n_bins=10) == pytest.approx(0.1)
    # weighted by bin share: bin A 3 samples err 0.3, bin B 1 sample err 0.75
    y = [0, 0, 1, 1]
    p = [0.35, 0.35, 0.35, 0.25]
    # n_bins=2: all in bin 0: mean p = 0.325, rate 0.5
    assert M.ece(y, p, n_bins=2) == pytest.approx(abs(0.5 - 0.325))
    # n_bins=4: bin 1 (0.25-0.5) holds all four too
    assert M.ece(y, p, n_bins=4) == pytest.approx(abs(0.5 - 0.325))
    # n_bins=10: bin 3 {0.35 x3: rate 1/3}, bin 2 {0.25: rate 1}
    assert M.ece(y, p, n_bins=10) == pytest.approx(0.75 * abs(1 / 3 - 0.35) + 0.25 * abs(1 - 0.25))
    # p = 1.0 lands in the last bin; perfectly calibrated extremes give 0
    assert M.ece([1, 0], [1.0, 0.0]) == pytest.approx(0.0)


def test_ece_rejects_bad_input():
    with pytest.raises(ValueError):
        M.ece([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError):
        M.ece([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        M.ece([0, 1, 1], [0.5, 0.5])


def test_binary_metrics_keys_and_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = M.binary_metrics(y, p)
    assert set(m) == {"auc", "log_loss", "ece", "brier", "n", "positive_rate"}
    assert m["auc"] == pytest.approx(0.75)
    assert m["n"] == 4 and m["positive_rate"] == 0.5
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["log_loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert math.isnan(M.binary_metrics([1, 1], [0.3, 0.9])["auc"])


def _synthetic(n, t_true, seed=0):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 2.0, n)
    y = (rng.random(n) < expit(true_logit)).astype(int)
    return true_logit * t_true, y  # an overconfident head: logits scaled by T


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_temperature_scaling_recovers_known_temperature(t_true):
    logits, y = _synthetic(20_000, t_true)
    t = M.fit_temperature(logits, y)
    assert t == pytest.approx(t_true, rel=0.06)
    # calibrated probabilities have small ECE; the raw ones do not
    assert M.ece(y, M.apply_temperature(logits, t)) < 0.02 < M.ece(y, expit(logits))


def test_temperature_scaling_multiclass():
    rng = np.random.default_rng(1)
    true = rng.normal(0, 1.5, (20_000, 3))
    p = np.exp(true) / np.exp(true).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert M.fit_temperature(true * 3.0, y) == pytest.approx(3.0, rel=0.08)


def test_isotonic_improves_ece_on_held_out_half():
    rng = np.random.default_rng(2)
    n = 20_000
    s = rng.normal(0, 1.5, n)
    y = (rng.random(n) < expit(s)).astype(int)
    logits = s ** 3 / 3 + 1.0  # monotone but badly miscalibrated (and shifted)
    rep = M.calibration_report(y, logits, seed=0, with_probs=True)
    assert rep["n_fit"] + rep["n_eval"] == n
    assert rep["isotonic"]["ece"] < 0.5 * rep["raw"]["ece"]
    assert rep["isotonic"]["ece"] < 0.03
    assert rep["temperature_scaled"]["log_loss"] < rep["raw"]["log_loss"]
    # temperature scaling never changes the ranking
    assert rep["temperature_scaled"]["auc"] == pytest.approx(rep["raw"]["auc"])
    assert len(rep["eval_y"]) == rep["n_eval"] and set(rep["eval_probs"]) == {"raw", "temperature_scaled", "isotonic"}


def test_calibration_split_is_fixed_and_stratified():
    rng = np.random.default_rng(3)
    y = (rng.random(1001) < 0.2).astype(int)
    logits = rng.normal(size=1001)
    a = M.calibration_report(y, logits, seed=5)
    b = M.calibration_report(y, logits, seed=5)
    assert a == b
    fit_idx, eval_idx = M._split_halves(y, 5)
    assert len(np.intersect1d(fit_idx, eval_idx)) == 0
    assert abs(y[fit_idx].mean() - y[eval_idx].mean()) < 0.005


def test_pairwise_accuracy_and_spearman():
    assert M.pairwise_accuracy([2, 3, 1, 5], [1, 4, 1, 0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert M.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(M.spearman([1, 1, 1], [1, 2, 3]))


def test_poisson_deviance():
    assert M.poisson_deviance([0, 1, 2], [0.0 + 1e-12, 1, 2]) == pytest.approx(0.0, abs=1e-6)
    assert M.poisson_deviance([0, 4], [2, 2]) > 0


def test_reliability_plot_writes_png(tmp_path):
    rng = np.random.default_rng(4)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    out = M.reliability_plot(y, {"head": p, "shrunk": 0.5 + 0.2 * (p - 0.5)}, tmp_path / "rel.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]

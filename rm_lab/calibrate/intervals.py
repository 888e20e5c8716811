"""Prediction intervals for the lift a new A/B test will measure: conformal, normalised by its noise.

A new test's measured lift misses the map's prediction for two reasons: the map is wrong for this
policy (spread tau, estimated from past tests beyond their sampling noise) and the test itself is
noisy (its standard error se_new). Each past test's out-of-fold residual is scaled by
sigma_i = sqrt(tau^2 + se_i^2), and crepes' normalised conformal regressor turns those scores into
an interval y_hat +- q * sigma_new. The residuals are leave-one-out (or K-fold), so the interval
also covers the map's estimation error, and the coverage holds for any distribution of the tests
(exchangeable ones) without a model of the errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rm_lab.calibrate.lift_map import LiftMap, fit_lift_map

FORMAT = "rm_lab.calibration/1"
_MIN_SIGMA = 1e-12


def _check(x, y, se) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, se = (np.asarray(v, float).ravel() for v in (x, y, se))
    if not (len(x) == len(y) == len(se)):
        raise ValueError(f"calibration: {len(x)} predictions, {len(y)} lifts and {len(se)} standard errors")
    if len(x) < 3:
        raise ValueError(f"calibration: needs at least 3 past experiments, got {len(x)}")
    for name, v in (("offline prediction", x), ("observed lift", y), ("standard error", se)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"calibration: every {name} must be a finite number")
    if np.any(se < 0):
        raise ValueError("calibration: standard errors must be >= 0")
    return x, y, se


def _folds(n: int, folds: int | None, seed: int = 0) -> list[np.ndarray]:
    """Held-out index sets: leave-one-out, or `folds` random folds."""
    if folds is None or folds >= n:
        return [np.array([i]) for i in range(n)]
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, folds)]


def _fit_weighted(x, y, se, method: str, iterations: int = 3) -> tuple[LiftMap, float]:
    """The map fitted with weights 1 / (tau^2 + se^2), tau re-estimated from its residuals."""
    tau2 = 0.0
    lm = fit_lift_map(x, y, None, method)
    for _ in range(iterations):
        r = y - lm.predict(x)
        tau2 = max(float(np.mean(r ** 2 - se ** 2)), 0.0)  # residual spread beyond sampling noise
        lm = fit_lift_map(x, y, 1.0 / np.maximum(tau2 + se ** 2, _MIN_SIGMA ** 2), method)
    return lm, math.sqrt(tau2)


def out_of_fold(x, y, se, method: str = "linear", folds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each test's prediction from a map fitted without it, and that map's tau."""
    x, y, se = _check(x, y, se)
    pred, taus = np.empty(len(x)), np.empty(len(x))
    for held in _folds(len(x), folds):
        keep = np.setdiff1d(np.arange(len(x)), held)
        lm, tau = _fit_weighted(x[keep], y[keep], se[keep], method)
        pred[held], taus[held] = lm.predict(x[held]), tau
    return pred, taus


@dataclass
class Calibration:
    """A fitted offline -> online map with its conformal scores; JSON in and out (no pickle)."""

    lift_map: LiftMap
    tau: float
    scores: list[float]  # out-of-fold |y - f(x)| / sqrt(tau^2 + se^2), one per past test
    predictor: str = "x"
    confidence: float = 0.9
    meta: dict = field(default_factory=dict)
    # the lowest lift a test can measure: -1 for relative lifts (a metric cannot fall below zero), where the
    # point prediction and the interval are clipped; None on a log scale (Upworthy's log CTR ratio), unbounded
    floor: float | None = -1.0

    def _regressor(self):
        from crepes import ConformalRegressor

        cr = ConformalRegressor()
        s = np.asarray(self.scores, float)
        cr.fit(residuals=s, sigmas=np.ones_like(s))  # the stored scores are already normalised
        return cr

    def to_json(self) -> dict:
        return {"format": FORMAT, "predictor": self.predictor, "confidence": self.confidence,
                "tau": self.tau, "lift_map": self.lift_map.to_json(), "scores": [float(s) for s in self.scores],
                "meta": self.meta, "floor": self.floor}

    @classmethod
    def from_json(cls, d: dict, source: str = "calibration") -> "Calibration":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{source}: format {got!r}, expected {FORMAT!r} (a calibration.json of rm_lab calibrate)")
        try:
            scores = [float(s) for s in d["scores"]]
            tau, conf = float(d["tau"]), float(d["confidence"])
            lm = LiftMap.from_json(d["lift_map"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{source}: not a valid calibration ({type(e).__name__}: {e})") from None
        if not scores or not all(math.isfinite(s) and s >= 0 for s in scores) or not (tau >= 0) or not 0 < conf < 1:
            raise ValueError(f"{source}: scores must be finite and >= 0, tau >= 0, 0 < confidence < 1")
        meta = dict(d.get("meta") or {})
        if "floor" in d:  # files written before the floor: relative lifts, unless their meta says log scale
            floor = None if d["floor"] is None else float(d["floor"])
        else:
            floor = None if str(meta.get("scale", "")).startswith("log") else -1.0
        return cls(lm, tau, scores, str(d.get("predictor", "x")), conf, meta, floor)


def fit_calibration(x, y, se, method: str = "linear", confidence: float = 0.9, predictor: str = "x",
                    folds: int | None = None, meta: dict | None = None, floor: float | None = -1.0) -> Calibration:
    """Fit the map on every past test; conformal scores from leave-one-out (or `folds`-fold) refits.
    `floor`: the lowest measurable lift (-1 for relative lifts; None for lifts on a log scale)."""
    x, y, se = _check(x, y, se)
    if not 0 < confidence < 1:
        raise ValueError(f"calibration: confidence {confidence}, expected 0 < confidence < 1")
    lm, tau = _fit_weighted(x, y, se, method)
    pred, _ = out_of_fold(x, y, se, method, folds)
    sigma = np.maximum(np.sqrt(tau ** 2 + se ** 2), _MIN_SIGMA)
    scores = np.abs(y - pred) / sigma
    return Calibration(lm, tau, scores.tolist(), predictor, confidence, dict(meta or {}), floor)


def predict_lift(calibration: Calibration, offline_prediction, se_new, confidence: float | None = None) -> dict:
    """Point prediction and conformal interval of the lift a new test will measure.

    `se_new`: the standard error the new test will have (from its planned size, or measured); 0 gives
    the interval of the expected lift (map error only). Scalars in, floats out; arrays in, arrays out.
    With too few past tests for the confidence (n < 1/(1-confidence) - 1) the interval is infinite."""
    conf = calibration.confidence if confidence is None else float(confidence)
    if not 0 < conf < 1:
        raise ValueError(f"predict_lift: confidence {conf}, expected 0 < confidence < 1")
    scalar = np.ndim(offline_prediction) == 0 and np.ndim(se_new) == 0
    x = np.atleast_1d(np.asarray(offline_prediction, float))
    se = np.broadcast_to(np.atleast_1d(np.asarray(se_new, float)), x.shape)
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(se)) or np.any(se < 0):
        raise ValueError("predict_lift: offline predictions must be finite and standard errors finite and >= 0")
    y_hat = calibration.lift_map.predict(x)
    sigma = np.maximum(np.sqrt(calibration.tau ** 2 + se ** 2), _MIN_SIGMA)
    iv = calibration._regressor().predict_int(y_hat, sigmas=sigma, confidence=conf)
    out = {"lift": y_hat, "low": iv[:, 0], "high": iv[:, 1]}
    if calibration.floor is not None:  # no test measures a relative lift below -100%
        out = {k: np.maximum(v, calibration.floor) for k, v in out.items()}
    return {k: float(v[0]) for k, v in out.items()} if scalar else out


def save_calibration(calibration: Calibration, path: str | Path) -> Path:
    from rm_lab import io

    return io.write_json(path, calibration.to_json())


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration.json (a file, or a calibrate run folder holding one)."""
    from rm_lab import io
    from rm_lab.config import ConfigError

    p = Path(path)
    if p.is_dir():
        p = p / "calibration.json"
    if not p.is_file():
        raise FileNotFoundError(f"calibration: no file '{p}' (expected a calibrate run folder or its calibration.json)")
    try:
        return Calibration.from_json(io.read_json(p), str(p))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def loo_evaluate(x, y, se, method: str = "linear", confidence: float = 0.9, folds: int | None = None,
                 floor: float | None = -1.0) -> dict:
    """Each test predicted by a calibration fitted on the other tests (nested: its own scores are
    out-of-fold too): arrays pred, low, high, covered."""
    x, y, se = _check(x, y, se)
    out = {k: np.empty(len(x)) for k in ("pred", "low", "high")}
    for held in _folds(len(x), folds):
        keep = np.setdiff1d(np.arange(len(x)), held)
        cal = fit_calibration(x[keep], y[keep], se[keep], method, confidence, floor=floor)
        p = predict_lift(cal, x[held], se[held])
        out["pred"][held], out["low"][held], out["high"][held] = p["lift"], p["low"], p["high"]
    out["covered"] = (y >= out["low"]) & (y <= out["high"])
    return out

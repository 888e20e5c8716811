"""The map from an offline prediction (a reward-model win rate, or its predicted lift) to the lift an
A/B test measures.

Offline numbers are on their own scale: a 60% win rate is not a +10% lift, and a reward model that
over-rates a style makes its predicted lifts too large. Past experiments give pairs (offline
prediction, observed lift); the map is fitted to them, weighted by how precisely each test measured
its lift. Linear keeps the map extrapolable and its slope readable; isotonic only assumes that a
higher offline prediction never means a lower lift. Both are stored as plain numbers (JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

METHODS = ("linear", "isotonic")


@dataclass
class LiftMap:
    """Offline prediction x -> expected observed lift."""

    method: str
    slope: float = 0.0
    intercept: float = 0.0
    x_knots: list[float] = field(default_factory=list)  # isotonic: the fitted step function's knots
    y_knots: list[float] = field(default_factory=list)

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, float)
        if self.method == "linear":
            return self.intercept + self.slope * x
        if len(self.x_knots) == 1:
            return np.full(x.shape, self.y_knots[0])
        return np.interp(x, self.x_knots, self.y_knots)  # clipped to the end values outside the knots

    def to_json(self) -> dict:
        if self.method == "linear":
            return {"method": "linear", "slope": float(self.slope), "intercept": float(self.intercept)}
        return {"method": "isotonic", "x_knots": [float(v) for v in self.x_knots],
                "y_knots": [float(v) for v in self.y_knots]}

    @classmethod
    def from_json(cls, d: dict) -> "LiftMap":
        method = d.get("method")
        if method not in METHODS:
            raise ValueError(f"lift map: method {method!r}, expected one of {METHODS}")
        if method == "linear":
            return cls("linear", slope=float(d["slope"]), intercept=float(d["intercept"]))
        xs, ys = [float(v) for v in d["x_knots"]], [float(v) for v in d["y_knots"]]
        if not xs or len(xs) != len(ys) or any(b < a for a, b in zip(xs, xs[1:])):
            raise ValueError("lift map: isotonic knots must be non-empty, of equal length, x increasing")
        return cls("isotonic", x_knots=xs, y_knots=ys)


def fit_lift_map(x, y, weights=None, method: str = "linear") -> LiftMap:
    """Weighted least squares (linear) or weighted isotonic regression of y on x.

    `weights` are usually 1 / (tau^2 + se^2): a test that measured its lift precisely counts more."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    if method not in METHODS:
        raise ValueError(f"lift map: method {method!r}, expected one of {METHODS}")
    if len(x) < 2 or len(x) != len(y) or len(w) != len(x):
        raise ValueError(f"lift map: needs >= 2 aligned (x, y) points, got {len(x)} x, {len(y)} y, {len(w)} weights")
    if method == "linear":
        if np.ptp(x) == 0:  # no spread in the offline prediction: only the mean lift is known
            return LiftMap("linear", 0.0, float(np.average(y, weights=w)))
        # weighted least squares in closed form (the leave-one-out evaluation refits it n^2 times)
        xm, ym = np.average(x, weights=w), np.average(y, weights=w)
        slope = float(np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2))
        return LiftMap("linear", slope, float(ym - slope * xm))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y, sample_weight=w)
    return LiftMap("isotonic", x_knots=iso.X_thresholds_.tolist(), y_knots=iso.y_thresholds_.tolist())

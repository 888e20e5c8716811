"""What drives the score on the Samples page: SHAP attributions of a LightGBM style baseline.

A sampling run's replies are described by the style features the project's baseline reads
(`rm_lab.features.style`: length, emoji, questions, lists, walls of text, ...), and a LightGBM regressor
is fitted to one reward output over all the run's samples (by default the selection `value`). Its exact
TreeSHAP contributions (LightGBM's `pred_contrib`, the values `shap.TreeExplainer` gives, without
importing shap) split each reply's predicted score into one part per feature: "its 4 emoji add +0.03,
its length takes off 0.05". The held-out R^2 says how much of the score style alone explains; a high
one on a text reward model is the surface-feature learning the paper guards against.

Fitted once per run and target and kept in the explorer's cache (`rm_lab.explore.cache`), so a reopened
page reads it back instead of importing LightGBM and fitting again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rm_lab.config import ConfigError
from rm_lab.explore import cache

# small trees for small runs: as rm_lab.reward.baseline.BaselineConfig, regression instead of classes
LGBM = dict(n_estimators=150, learning_rate=0.05, num_leaves=15, reg_lambda=1.0, deterministic=True,
            force_row_wise=True, verbose=-1, n_jobs=1)
MIN_SAMPLES = 8
DEFAULT_TARGET = "value"  # what the Samples page explains first (and `rm_lab explore --prepare` fits)


@dataclass
class Attribution:
    """SHAP values (one row per sample, aligned with the run's samples.parquet) of the style baseline."""

    target: str
    features: pd.DataFrame  # style features actually used (constant ones dropped)
    values: pd.DataFrame  # SHAP value per feature, same shape as `features`
    base: float  # expected prediction: base + row sum of `values` = the baseline's prediction
    prediction: np.ndarray
    r2_heldout: float | None  # 5-fold R^2 of the baseline (None with fewer than 20 samples)

    def importance(self) -> pd.DataFrame:
        """Per feature: mean |SHAP| (how much it moves scores), mean SHAP and its direction."""
        rows = []
        for c in self.values.columns:
            v, x = self.values[c].to_numpy(float), self.features[c].to_numpy(float)
            d = np.corrcoef(pd.Series(x).rank(), pd.Series(v).rank())[0, 1] if x.std() > 0 and v.std() > 0 else 0.0
            rows.append({"feature": c, "mean_abs_shap": float(np.abs(v).mean()), "mean_shap": float(v.mean()),
                         "direction": float(d)})
        return pd.DataFrame(rows).sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)

    def for_context(self, samples: pd.DataFrame, context_id: str, top: int = 6) -> pd.DataFrame:
        """One prompt's replies, best selection value first: value, the baseline's prediction and the SHAP
        value of the `top` features (columns `shap:<feature>`), each next to the feature's value."""
        mask = (samples["context_id"].astype(str) == str(context_id)).to_numpy()
        if not mask.any():
            raise ConfigError(f"context '{context_id}' has no samples in this run")
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(-samples["value"].to_numpy(float)[idx], kind="stable")]
        feats = self.importance()["feature"].head(top).tolist()
        out = pd.DataFrame({"rank": range(1, len(idx) + 1), self.target: samples[self.target].to_numpy(float)[idx],
                            "style_prediction": self.prediction[idx]})
        for f in feats:
            out[f"shap:{f}"] = self.values[f].to_numpy(float)[idx]
        out["shap:other"] = self.values.drop(columns=feats).sum(axis=1).to_numpy(float)[idx]
        for f in feats:
            out[f] = self.features[f].to_numpy()[idx]
        out["response"] = samples["response"].iloc[idx].astype(str).to_numpy()
        return out


def _fit(X: pd.DataFrame, y: np.ndarray, seed: int):
    import lightgbm as lgb

    return lgb.LGBMRegressor(**LGBM, min_child_samples=max(2, min(20, len(y) // 10)), random_state=seed).fit(X, y)


def _heldout_r2(X: pd.DataFrame, y: np.ndarray, seed: int) -> float | None:
    if len(y) < 20 or np.std(y) == 0:
        return None
    from sklearn.model_selection import KFold

    pred = np.zeros(len(y))
    for tr, te in KFold(5, shuffle=True, random_state=seed).split(X):
        pred[te] = _fit(X.iloc[tr], y[tr], seed).predict(X.iloc[te])
    return float(1 - np.mean((y - pred) ** 2) / np.var(y))


def fit_attribution(samples: pd.DataFrame, target: str = "value", seed: int = 0) -> Attribution:
    """Fit the style baseline to `target` over every sample and attribute each prediction (TreeSHAP)."""
    from rm_lab.features.style import style_frame

    if target not in samples.columns or not pd.api.types.is_numeric_dtype(samples[target]):
        raise ConfigError(f"SHAP target '{target}': expected a numeric column of samples.parquet")
    y = samples[target].to_numpy(float)
    ok = np.isfinite(y)
    if ok.sum() < MIN_SAMPLES:
        raise ConfigError(f"SHAP: {int(ok.sum())} samples with a finite {target}; the style baseline needs at "
                          f"least {MIN_SAMPLES}")
    X = style_frame(samples["response"].astype(str))
    X = X.loc[:, X.nunique() > 1]  # a constant feature explains nothing
    if X.empty:
        raise ConfigError("SHAP: every reply has the same style features; nothing to attribute")
    model = _fit(X[ok], y[ok], seed)
    contrib = np.asarray(model.booster_.predict(X, pred_contrib=True), float)  # exact TreeSHAP, last col = base
    base = float(contrib[0, -1])
    return Attribution(target, X.reset_index(drop=True), pd.DataFrame(contrib[:, :-1], columns=X.columns),
                       base, contrib.sum(axis=1), _heldout_r2(X[ok], y[ok], seed))


def _entry(folder: Path, samples: pd.DataFrame, target: str, seed: int) -> Path:
    k = cache.key([Path(folder) / "samples.parquet"], target, seed, len(samples), "shap-v1")
    return cache.cache_dir() / "shap" / f"{k}.parquet"


def is_prepared(folder: Path, samples: pd.DataFrame, target: str = DEFAULT_TARGET, seed: int = 0) -> bool:
    """Whether this fit is in the explorer's cache (read back in well under a second; fitting it with its
    5-fold R^2 takes about 10 s for 10,000 samples on a loaded machine)."""
    path = _entry(folder, samples, target, seed)
    return path.is_file() and path.with_suffix(".json").is_file()


def run_attribution(folder: Path, samples: pd.DataFrame, target: str = DEFAULT_TARGET, seed: int = 0,
                    require_cache: bool = False) -> Attribution:
    """`fit_attribution` of a sampling run's samples, read back from the explorer's cache when fitted before.
    require_cache: a cache that cannot be written is an error (`rm_lab explore --prepare`), not a silent refit."""
    from rm_lab import io

    path = _entry(folder, samples, target, seed)
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        try:
            df, m = pd.read_parquet(path), json.loads(meta.read_text(encoding="utf-8"))
            cols = m["features"]
            values = df[[f"shap:{c}" for c in cols]].set_axis(cols, axis=1)
            return Attribution(target, df[cols], values, m["base"], df["prediction"].to_numpy(float), m["r2_heldout"])
        except (OSError, ValueError, KeyError):
            pass  # damaged: fitted again below
    att = fit_attribution(samples, target, seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        df = pd.concat([att.features, att.values.add_prefix("shap:")], axis=1).assign(prediction=att.prediction)
        with io.atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
        io.write_json(meta, {"features": list(att.features.columns), "base": att.base, "r2_heldout": att.r2_heldout})
    except OSError as e:
        if require_cache:
            raise cache.NotWritable(e.strerror or str(e)) from None
        # a read-only cache: fitted again next time
    return att

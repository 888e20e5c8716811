"""A gradient-boosted baseline on style-artifact features, explained with SHAP.

Why: before trusting a neural reward model, know how much of a label surface style alone explains,
and in which direction. The features are `rm_lab.features.style` (plus, optionally, a few PCA
components of the sentence embeddings), so SHAP attributions read directly as "walls of text lower
p(continue)" or "the chosen reply has more emoji". Pairs are modelled as a classifier on the
feature difference (chosen minus rejected), trained on both orientations so it is antisymmetric by
construction and by data.

Deterministic for a fixed seed and `n_jobs` (LightGBM `deterministic=True`, row-wise histograms);
defaults are small, for two cores.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from rm_lab.features.style import FEATURES, style_frame
from rm_lab.reward.metrics import binary_metrics, pairwise_accuracy, spearman


@dataclass
class BaselineConfig:
    """LightGBM and featurisation settings of the style baseline."""

    n_estimators: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 20
    reg_lambda: float = 1.0
    colsample_bytree: float = 1.0
    features: list[str] = field(default_factory=list)  # style features used (empty: all of FEATURES)
    pca_components: int = 8  # embedding components kept as features (0: ignore embeddings)
    test_size: float = 0.3  # held-out share in the *_report functions
    shap_samples: int = 2000  # rows explained by SHAP (a fixed random subset when more)
    seed: int = 0
    n_jobs: int = 2


def _style_columns(cfg: BaselineConfig) -> list[str]:
    unknown = [f for f in cfg.features if f not in FEATURES]
    if unknown:
        raise ValueError(f"features: unknown {unknown}, expected names from {list(FEATURES)}")
    return list(cfg.features) or list(FEATURES)


def _lgbm(cfg: BaselineConfig):
    import lightgbm as lgb

    return lgb.LGBMClassifier(
        n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate, num_leaves=cfg.num_leaves,
        min_child_samples=cfg.min_child_samples, reg_lambda=cfg.reg_lambda,
        colsample_bytree=cfg.colsample_bytree, random_state=cfg.seed, n_jobs=cfg.n_jobs,
        deterministic=True, force_row_wise=True, verbose=-1)


def _embeddings(emb, n: int, what: str) -> np.ndarray | None:
    if emb is None:
        return None
    emb = np.asarray(emb, dtype=float)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"{what}: expected an array of shape ({n}, dim), got {emb.shape}")
    return emb


class _Featurizer:
    """Style features, plus PCA components of embeddings when given at fit time."""

    def __init__(self, cfg: BaselineConfig):
        self.cfg = cfg
        self.columns = _style_columns(cfg)
        self.pca = None

    def fit(self, embeddings: np.ndarray | None) -> "_Featurizer":
        if embeddings is not None and self.cfg.pca_components > 0:
            from sklearn.decomposition import PCA

            k = min(self.cfg.pca_components, embeddings.shape[0], embeddings.shape[1])
            self.pca = PCA(n_components=k, random_state=self.cfg.seed).fit(embeddings)
        return self

    @property
    def names(self) -> list[str]:
        extra = [f"emb_pc{i}" for i in range(self.pca.n_components_)] if self.pca is not None else []
        return self.columns + extra

    def transform(self, texts: Sequence[str], keywords=None, embeddings: np.ndarray | None = None) -> pd.DataFrame:
        df = style_frame(texts, keywords)[self.columns].copy()
        if self.pca is not None:
            if embeddings is None:
                raise ValueError("this baseline was fitted with embeddings: pass embeddings for these texts too")
            pcs = self.pca.transform(embeddings)
            for i in range(pcs.shape[1]):
                df[f"emb_pc{i}"] = pcs[:, i]
        return df


def _shap_values(model, X: pd.DataFrame) -> tuple[np.ndarray, float]:
    """SHAP values (log-odds of the positive class) and the base value, across shap's output formats."""
    with warnings.catch_warnings():  # shap warns about its own output format and matplotlib colormaps
        warnings.simplefilter("ignore")
        import shap

        explainer = shap.TreeExplainer(model)
        sv = explainer.shap_values(X)
    base = explainer.expected_value
    if isinstance(sv, list):  # older shap: one array per class
        sv = sv[-1]
    sv = np.asarray(sv, float)
    if sv.ndim == 3:  # (n, features, classes)
        sv = sv[..., -1]
    base = np.asarray(base, float).ravel()
    return sv, float(base[-1])


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


class BinaryBaseline:
    """p(label | style features [+ embedding PCs]) for one binary user signal."""

    def __init__(self, cfg: BaselineConfig | None = None):
        self.cfg = cfg or BaselineConfig()
        self.featurizer = _Featurizer(self.cfg)
        self.model = None

    def features(self, texts, keywords=None, embeddings=None) -> pd.DataFrame:
        texts = list(texts)
        return self.featurizer.transform(texts, keywords, _embeddings(embeddings, len(texts), "embeddings"))

    def fit(self, texts, y, keywords=None, embeddings=None) -> "BinaryBaseline":
        texts = list(texts)
        y = np.asarray(y).astype(int)
        if len(y) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise ValueError("BinaryBaseline.fit: labels hold a single class")
        self.featurizer.fit(_embeddings(embeddings, len(texts), "embeddings"))
        self.model = _lgbm(self.cfg).fit(self.features(texts, keywords, embeddings), y)
        return self

    def _check(self):
        if self.model is None:
            raise RuntimeError("fit the baseline first")

    def decision_function(self, texts, keywords=None, embeddings=None) -> np.ndarray:
        """Log-odds (raw scores), e.g. for `metrics.calibration_report`."""
        self._check()
        return np.asarray(self.model.predict(self.features(texts, keywords, embeddings), raw_score=True), float)

    def predict_proba(self, texts, keywords=None, embeddings=None) -> np.ndarray:
        self._check()
        return self.model.predict_proba(self.features(texts, keywords, embeddings))[:, 1]

    def explain(self, X: pd.DataFrame) -> tuple[np.ndarray, float]:
        """SHAP values of feature rows `X` (log-odds), and the base value."""
        self._check()
        return _shap_values(self.model, X)


class PairBaseline:
    """P(a is preferred over b) from the style-feature difference a - b."""

    def __init__(self, cfg: BaselineConfig | None = None):
        self.cfg = cfg or BaselineConfig()
        self.featurizer = _Featurizer(self.cfg)
        self.model = None

    def diff_features(self, a, b, keywords=None, emb_a=None, emb_b=None) -> pd.DataFrame:
        a, b = list(a), list(b)
        if len(a) != len(b):
            raise ValueError(f"{len(a)} first replies but {len(b)} second replies")
        fa = self.featurizer.transform(a, keywords, _embeddings(emb_a, len(a), "emb_a"))
        fb = self.featurizer.transform(b, keywords, _embeddings(emb_b, len(b), "emb_b"))
        return fa - fb

    def fit(self, chosen, rejected, keywords=None, emb_chosen=None, emb_rejected=None) -> "PairBaseline":
        chosen, rejected = list(chosen), list(rejected)
        ec = _embeddings(emb_chosen, len(chosen), "emb_chosen")
        er = _embeddings(emb_rejected, len(rejected), "emb_rejected")
        if (ec is None) != (er is None):
            raise ValueError("give embeddings for both chosen and rejected replies, or for neither")
        self.featurizer.fit(None if ec is None else np.vstack([ec, er]))
        d = self.diff_features(chosen, rejected, keywords, ec, er)
        X = pd.concat([d, -d], ignore_index=True)
        y = np.r_[np.ones(len(d), int), np.zeros(len(d), int)]
        self.model = _lgbm(self.cfg).fit(X, y)
        return self

    def predict_proba(self, a, b, keywords=None, emb_a=None, emb_b=None) -> np.ndarray:
        """Symmetrised: P(a > b) + P(b > a) = 1 exactly."""
        if self.model is None:
            raise RuntimeError("fit the baseline first")
        d = self.diff_features(a, b, keywords, emb_a, emb_b)
        p_ab = self.model.predict_proba(d)[:, 1]
        p_ba = self.model.predict_proba(-d)[:, 1]
        return 0.5 * (p_ab + 1.0 - p_ba)

    def explain(self, X: pd.DataFrame) -> tuple[np.ndarray, float]:
        if self.model is None:
            raise RuntimeError("fit the baseline first")
        return _shap_values(self.model, X)


# ----------------------------------------------------------------------------------------------
# SHAP summaries

def shap_importance(values: np.ndarray, X: pd.DataFrame) -> pd.DataFrame:
    """Global importance per feature: mean |SHAP|, mean SHAP, and the direction of the effect.

    `direction` is the Spearman correlation of a feature's value with its SHAP value: > 0 means
    larger values raise the score. `shap_when_present` is the mean SHAP over rows where the feature
    is non-zero (for a difference feature: where the two replies differ, signed by the difference).
    """
    values = np.asarray(values, float)
    if values.shape != X.shape:
        raise ValueError(f"SHAP values {values.shape} do not match features {X.shape}")
    rows = []
    for j, name in enumerate(X.columns):
        x = X[name].to_numpy(dtype=float)
        v = values[:, j]
        nz = x != 0
        rows.append({
            "feature": name,
            "mean_abs_shap": float(np.abs(v).mean()) if len(v) else np.nan,
            "mean_shap": float(v.mean()) if len(v) else np.nan,
            "direction": spearman(x, v),
            "shap_when_present": float((v[nz] * np.sign(x[nz])).mean()) if nz.any() else np.nan,
            "share_present": float(nz.mean()) if len(x) else np.nan,
        })
    return pd.DataFrame(rows).sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)


def shap_plot(values: np.ndarray, X: pd.DataFrame, path: str | os.PathLike, kind: str = "beeswarm",
              max_display: int = 15, title: str | None = None) -> Path:
    """SHAP summary as PNG: 'beeswarm' (one dot per row, coloured by feature value) or 'bar'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rm_lab.io import atomic_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import shap
    if kind not in ("beeswarm", "bar"):
        raise ValueError(f"kind: expected 'beeswarm' or 'bar', got {kind!r}")
    plt.close("all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shap.summary_plot(np.asarray(values, float), X, plot_type="dot" if kind == "beeswarm" else "bar",
                          max_display=max_display, show=False)
    fig = plt.gcf()
    try:
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=90)
    finally:
        plt.close("all")
    return path


def render_importance(table: pd.DataFrame | list[dict], top: int = 12) -> str:
    """Markdown table of the top features by mean |SHAP|."""
    df = pd.DataFrame(table).head(top)
    lines = ["| feature | mean abs SHAP | direction | SHAP when present | share present |", "|---|---|---|---|---|"]
    for r in df.itertuples(index=False):
        fmt = lambda v: "–" if pd.isna(v) else f"{v:.3f}"
        lines.append(f"| {r.feature} | {fmt(r.mean_abs_shap)} | {fmt(r.direction)} | "
                     f"{fmt(r.shap_when_present)} | {fmt(r.share_present)} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# fit + evaluate + explain in one call (what eval-rm and the notebooks use)

def _plots(values, X, out_dir, name) -> list[str]:
    if out_dir is None:
        return []
    out_dir = Path(out_dir)
    return [str(shap_plot(values, X, out_dir / f"shap_{name}_{kind}.png", kind=kind, title=name))
            for kind in ("beeswarm", "bar")]


def binary_baseline_report(texts: Iterable[str], y, keywords=None, embeddings=None,
                           cfg: BaselineConfig | None = None, out_dir: str | os.PathLike | None = None,
                           name: str = "continued", return_model: bool = False):
    """Fit on a stratified split, report held-out metrics and SHAP importance (plots into `out_dir`).

    The report is JSON-ready; with `return_model`, returns (report, fitted BinaryBaseline).
    """
    from sklearn.model_selection import train_test_split

    cfg = cfg or BaselineConfig()
    texts = list(texts)
    y = np.asarray(y).astype(int)
    kws = list(keywords) if keywords is not None else None
    emb = _embeddings(embeddings, len(texts), "embeddings")
    idx = np.arange(len(texts))
    counts = np.bincount(y, minlength=2)
    tr, te = train_test_split(idx, test_size=cfg.test_size, random_state=cfg.seed,
                              stratify=y if counts.min() >= 2 else None)
    pick = lambda seq, ii: None if seq is None else [seq[i] for i in ii]
    sub = lambda a, ii: None if a is None else a[ii]
    model = BinaryBaseline(cfg).fit(pick(texts, tr), y[tr], pick(kws, tr), sub(emb, tr))
    X_te = model.features(pick(texts, te), pick(kws, te), sub(emb, te))
    p = model.model.predict_proba(X_te)[:, 1]
    rows = _subsample(len(te), cfg.shap_samples, cfg.seed)
    values, base = model.explain(X_te.iloc[rows])
    table = shap_importance(values, X_te.iloc[rows].reset_index(drop=True))
    report = {"name": name, "kind": "binary", "config": asdict(cfg), "n_train": int(len(tr)), "n_test": int(len(te)),
            "metrics": binary_metrics(y[te], p), "shap_base_value": base,
            "importance": table.to_dict(orient="records"), "plots": _plots(values, X_te.iloc[rows], out_dir, name)}
    return (report, model) if return_model else report


def pairwise_baseline_report(chosen: Iterable[str], rejected: Iterable[str], emb_chosen=None, emb_rejected=None,
                             cfg: BaselineConfig | None = None, out_dir: str | os.PathLike | None = None,
                             name: str = "preference", return_model: bool = False):
    """Fit on a split of pairs, report held-out pairwise accuracy and SHAP importance of the difference.

    The report is JSON-ready; with `return_model`, returns (report, fitted PairBaseline).
    """
    from sklearn.model_selection import train_test_split

    cfg = cfg or BaselineConfig()
    chosen, rejected = list(chosen), list(rejected)
    ec = _embeddings(emb_chosen, len(chosen), "emb_chosen")
    er = _embeddings(emb_rejected, len(rejected), "emb_rejected")
    tr, te = train_test_split(np.arange(len(chosen)), test_size=cfg.test_size, random_state=cfg.seed)
    pick = lambda seq, ii: [seq[i] for i in ii]
    sub = lambda a, ii: None if a is None else a[ii]
    model = PairBaseline(cfg).fit(pick(chosen, tr), pick(rejected, tr), None, sub(ec, tr), sub(er, tr))
    p = model.predict_proba(pick(chosen, te), pick(rejected, te), None, sub(ec, te), sub(er, te))
    X_te = model.diff_features(pick(chosen, te), pick(rejected, te), None, sub(ec, te), sub(er, te))
    rows = _subsample(len(te), cfg.shap_samples, cfg.seed)
    values, base = model.explain(X_te.iloc[rows])
    table = shap_importance(values, X_te.iloc[rows].reset_index(drop=True))
    report = {"name": name, "kind": "pairwise", "config": asdict(cfg), "n_train": int(len(tr)), "n_test": int(len(te)),
            "metrics": {"pairwise_accuracy": pairwise_accuracy(p, 1.0 - p), "mean_p_chosen": float(p.mean()),
                        "n": int(len(te))},
            "shap_base_value": base, "importance": table.to_dict(orient="records"),
            "plots": _plots(values, X_te.iloc[rows], out_dir, name)}
    return (report, model) if return_model else report

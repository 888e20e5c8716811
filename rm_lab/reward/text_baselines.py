"""Reply-text baselines that every reward-model figure is reported beside: reply length alone, and
TF-IDF word 1-2 grams, each with a logistic regression (binary labels) or a ridge regression (graded
or continuous labels).

Why: a reward model that cannot beat "longer replies are better" or a bag of words has learnt nothing
a surface rule would not; and in transfer, when a model trained on one dataset is scored on another,
the same two baselines trained on the same source show how much of the transfer a surface rule gets.
They read the reply only (what the style baseline in `baseline.py` reads too, without its features).
`score` returns a ranking score: the log-odds (binary) or the predicted value (graded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

_WORD = re.compile(r"[A-Za-z0-9']+")
KINDS = ("binary", "graded")


def log_words(texts: Sequence[str]) -> np.ndarray:
    """log(1 + words) of each text, as a one-column matrix."""
    return np.log1p(np.array([len(_WORD.findall(str(t))) for t in texts], float))[:, None]


@dataclass
class TextBaseline:
    """One baseline: `features` 'length' or 'tfidf', `kind` 'binary' (logistic) or 'graded' (ridge)."""

    features: Literal["length", "tfidf"] = "tfidf"
    kind: Literal["binary", "graded"] = "binary"
    C: float = 1.0  # logistic regression's inverse penalty
    alpha: float = 1.0  # ridge penalty
    min_df: int = 2

    def __post_init__(self):
        if self.features not in ("length", "tfidf"):
            raise ValueError(f"features={self.features!r}: expected 'length' or 'tfidf'")
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: expected one of {KINDS}")
        self.vectorizer = self.model = None

    @property
    def name(self) -> str:
        return {"length": "length only", "tfidf": "TF-IDF"}[self.features] + (
            " + logistic regression" if self.kind == "binary" else " + ridge")

    def _X(self, texts: Sequence[str], fit: bool = False):
        texts = [str(t) for t in texts]
        if self.features == "length":
            return log_words(texts)
        if fit:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=self.min_df, sublinear_tf=True)
            return self.vectorizer.fit_transform(texts)
        return self.vectorizer.transform(texts)

    def fit(self, texts: Sequence[str], y, weight=None) -> "TextBaseline":
        from sklearn.linear_model import LogisticRegression, Ridge

        texts = list(texts)
        y = np.asarray(y, float)
        if len(y) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(y)} labels")
        if not len(y):
            raise ValueError(f"{self.name}: no training rows")
        if not np.isfinite(y).all():
            raise ValueError(f"{self.name}: labels must be finite numbers")
        if self.kind == "binary":
            if not set(np.unique(y)) <= {0.0, 1.0} or len(np.unique(y)) < 2:
                raise ValueError(f"{self.name}: binary labels must be 0/1 with both classes present")
            self.model = LogisticRegression(C=self.C, max_iter=2000)
        else:
            self.model = Ridge(alpha=self.alpha)
        self.model.fit(self._X(texts, fit=True), y, sample_weight=weight)
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Log-odds (binary) or predicted label (graded) of each text: higher is better."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: fit the baseline first")
        X = self._X(list(texts))
        return np.asarray(self.model.decision_function(X) if self.kind == "binary" else self.model.predict(X), float)


BASELINES = ("length", "tfidf")


def fit_baselines(texts: Sequence[str], y, kind: str = "binary", weight=None) -> dict[str, TextBaseline]:
    """Both baselines fitted on the same rows: {'length': ..., 'tfidf': ...}."""
    return {f: TextBaseline(f, kind).fit(texts, y, weight) for f in BASELINES}


def cross_fit(texts: Sequence[str], y, fold, kind: str = "binary", folds: Sequence[int] | None = None,
              train_mask=None) -> dict[str, np.ndarray]:
    """Out-of-fold scores of both baselines: for each fold f, fitted on the rows of the other folds (those
    with `train_mask`, when given: e.g. only rows that carry this label) and scored on the rows of f.
    Rows of folds not run stay NaN."""
    texts = np.asarray([str(t) for t in texts], dtype=object)
    y, fold = np.asarray(y, float), np.asarray(fold)
    usable = np.ones(len(y), bool) if train_mask is None else np.asarray(train_mask, bool)
    out = {f: np.full(len(y), np.nan) for f in BASELINES}
    for k in (sorted(set(fold.tolist())) if folds is None else folds):
        tr, te = (fold != k) & usable, fold == k
        for name, b in fit_baselines(texts[tr].tolist(), y[tr], kind).items():
            out[name][te] = b.score(texts[te].tolist())
    return out


# ----------------------------------------------------------------------------------------------
# pair baselines: which of two texts wins (A/B arms of one test)

def longer_text(texts_a: Sequence[str], texts_b: Sequence[str]) -> np.ndarray:
    """'Always the longer one': +1 when b has more characters than a, -1 when fewer, 0 on a tie."""
    la = np.array([len(str(t)) for t in texts_a], float)
    lb = np.array([len(str(t)) for t in texts_b], float)
    return np.sign(lb - la)


@dataclass
class PairDiffBaseline:
    """P(b beats a) = sigmoid(w . (x_b - x_a)): a logistic regression on the difference of the two texts'
    features (TF-IDF word 1-2 grams, or sentence embeddings from `embed_fn`). Each pair also enters flipped,
    with no intercept, so swapping a and b flips the prediction. C is chosen by grouped cross-validation
    (`groups`: the test of each pair, so the pairs of one test are held out together)."""

    features: Literal["tfidf", "embedding"] = "tfidf"
    embed_fn: object = None  # texts -> (n, d) array, for features="embedding"
    Cs: tuple = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    cv: int = 3
    min_df: int = 2

    def __post_init__(self):
        if self.features not in ("tfidf", "embedding"):
            raise ValueError(f"features={self.features!r}: expected 'tfidf' or 'embedding'")
        if self.features == "embedding" and self.embed_fn is None:
            raise ValueError("features='embedding' needs an embed_fn (texts -> array)")
        self.vectorizer = self.model = None
        self.C_ = None

    @property
    def name(self) -> str:
        return ("TF-IDF" if self.features == "tfidf" else "MiniLM embeddings") + " + logistic regression on differences"

    def _diff(self, texts_a, texts_b, fit: bool = False):
        a, b = [str(t) for t in texts_a], [str(t) for t in texts_b]
        if self.features == "tfidf":
            if fit:
                from sklearn.feature_extraction.text import TfidfVectorizer

                self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=self.min_df, sublinear_tf=True)
                self.vectorizer.fit(list(dict.fromkeys(a + b)))
            return self.vectorizer.transform(b) - self.vectorizer.transform(a)
        emb = np.asarray(self.embed_fn(a + b), float)
        return emb[len(a):] - emb[:len(a)]

    def fit(self, texts_a, texts_b, y, groups=None) -> "PairDiffBaseline":
        import scipy.sparse as sp
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold

        y = np.asarray(y, float)
        if not set(np.unique(y)) <= {0.0, 1.0} or len(y) < 2:
            raise ValueError(f"{self.name}: labels must be 0/1 (b wins), got {np.unique(y)[:5]}")
        X = self._diff(texts_a, texts_b, fit=True)
        both = (lambda A: sp.vstack([A, -A]).tocsr()) if sp.issparse(X) else (lambda A: np.vstack([A, -A]))
        g = np.asarray(groups if groups is not None else np.arange(len(y)))
        best, best_ll = self.Cs[0], np.inf
        if len(self.Cs) > 1:
            for C in self.Cs:
                ll = 0.0
                for tr, te in GroupKFold(self.cv).split(np.zeros(len(y)), y, g):
                    m = LogisticRegression(C=C, fit_intercept=False, max_iter=2000)
                    m.fit(both(X[tr]), np.r_[y[tr], 1 - y[tr]])
                    p = np.clip(m.predict_proba(X[te])[:, 1], 1e-9, 1 - 1e-9)
                    ll -= float((y[te] * np.log(p) + (1 - y[te]) * np.log(1 - p)).sum())
                if ll < best_ll:
                    best, best_ll = C, ll
        self.C_ = best
        self.model = LogisticRegression(C=best, fit_intercept=False, max_iter=2000).fit(both(X), np.r_[y, 1 - y])
        return self

    def decision(self, texts_a, texts_b) -> np.ndarray:
        """Log-odds that b beats a (> 0: b)."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: fit the baseline first")
        return np.asarray(self.model.decision_function(self._diff(texts_a, texts_b)), float)


__all__ = ["TextBaseline", "BASELINES", "fit_baselines", "cross_fit", "log_words", "PairDiffBaseline", "longer_text"]

"""Reply-text baselines (rm_lab.reward.text_baselines): length only and TF-IDF, logistic for binary labels,
ridge for graded ones; pinned to scikit-learn and checked on labels they should and should not explain."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from rm_lab.reward.metrics import spearman
from rm_lab.reward.text_baselines import TextBaseline, cross_fit, fit_baselines, log_words


def _replies(n=300, seed=0):
    rng = np.random.default_rng(seed)
    words = ["tea", "cats", "rain", "music", "books", "trains", "soup", "hills"]
    texts, lengths, good = [], [], []
    for i in range(n):
        k = int(rng.integers(1, 30))
        w = list(rng.choice(words, size=k))
        g = bool(rng.uniform() < 0.5)
        if g:
            w.insert(int(rng.integers(0, k)), "wonderful")
        texts.append(" ".join(w))
        lengths.append(k)
        good.append(g)
    return texts, np.array(lengths), np.array(good, float)


def test_length_baseline_is_logistic_regression_on_log_words():
    texts, lengths, _ = _replies()
    y = (lengths > 12).astype(float)
    b = TextBaseline("length", "binary").fit(texts, y)
    ref = LogisticRegression(max_iter=2000).fit(log_words(texts), y).decision_function(log_words(texts))
    assert np.allclose(b.score(texts), ref)
    assert spearman(b.score(texts), lengths) > 0.99
    graded = TextBaseline("length", "graded").fit(texts, lengths)
    assert np.allclose(graded.score(texts), Ridge(alpha=1.0).fit(log_words(texts), lengths).predict(log_words(texts)))


def test_tfidf_finds_a_word_signal_that_length_cannot():
    texts, _, good = _replies(seed=1)
    test, _, good_te = _replies(seed=2)
    fitted = fit_baselines(texts, good, "binary")
    assert spearman(fitted["tfidf"].score(test), good_te) > 0.8
    assert abs(spearman(fitted["length"].score(test), good_te)) < 0.3
    rating = 1 + 3 * good + np.random.default_rng(3).normal(0, 0.5, len(good))
    g = fit_baselines(texts, rating, "graded")
    assert spearman(g["tfidf"].score(test), good_te) > 0.8
    assert g["tfidf"].name == "TF-IDF + ridge" and fitted["length"].name == "length only + logistic regression"


def test_bad_labels_and_unfitted_use_are_errors():
    texts, _, good = _replies(n=20)
    with pytest.raises(ValueError, match="both classes"):
        TextBaseline("tfidf", "binary").fit(texts, np.ones(20))
    with pytest.raises(ValueError, match="0/1"):
        TextBaseline("length", "binary").fit(texts, np.arange(20))
    with pytest.raises(ValueError, match="20 texts but 3 labels"):
        TextBaseline("length", "graded").fit(texts, [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        TextBaseline("length", "graded").fit(texts, np.r_[np.nan, np.ones(19)])
    with pytest.raises(RuntimeError, match="fit the baseline first"):
        TextBaseline().score(["hi"])
    with pytest.raises(ValueError, match="features="):
        TextBaseline("bert")
    w = np.r_[np.ones(10), np.zeros(10)]  # sample weights reach the fit: zero weight rows are ignored
    a = TextBaseline("length", "graded").fit(texts, np.r_[good[:10], 100 * np.ones(10)], weight=w)
    b = TextBaseline("length", "graded").fit(texts[:10], good[:10])
    assert np.allclose(a.score(texts), b.score(texts))


def test_cross_fit_scores_each_fold_with_a_fit_on_the_others():
    texts, _, good = _replies(n=120, seed=4)
    fold = np.arange(120) % 3
    out = cross_fit(texts, good, fold, "binary", folds=[0, 2])
    assert np.isnan(out["tfidf"][fold == 1]).all() and np.isfinite(out["tfidf"][fold != 1]).all()
    fit = TextBaseline("tfidf", "binary").fit([t for t, f in zip(texts, fold) if f != 0], good[fold != 0])
    assert np.allclose(out["tfidf"][fold == 0], fit.score([t for t, f in zip(texts, fold) if f == 0]))

"""rm_lab.reward.baseline: LightGBM on style features learns the world's hidden penalties, and SHAP
says so with the right sign; fits are deterministic."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rm_lab.features.style import FEATURES
from rm_lab.reward import baseline as B
from rm_lab.world.simulate import WorldConfig, simulate

SMALL = dict(n_estimators=80, shap_samples=600)


@pytest.fixture(scope="module")
def world():
    return simulate(WorldConfig(seed=1, n_characters=8, n_contexts=3000, n_preference_contexts=1500))


def _imp(report) -> pd.DataFrame:
    return pd.DataFrame(report["importance"]).set_index("feature")


def test_binary_baseline_learns_that_preaching_hurts_continuation(world, tmp_path):
    inter = world["interaction"]
    rep = B.binary_baseline_report(inter["response"], inter["continued"], cfg=B.BaselineConfig(**SMALL),
                                   out_dir=tmp_path, name="continued")
    json.dumps(rep)  # JSON-ready
    assert rep["metrics"]["auc"] > 0.65
    imp = _imp(rep)
    assert set(imp.index) == set(FEATURES)
    assert imp["mean_abs_shap"].is_monotonic_decreasing
    assert imp.at["preachy", "shap_when_present"] < -0.1  # the hidden function: -0.8 for preachy
    assert imp.at["preachy", "direction"] < 0
    assert imp.at["n_questions", "direction"] > 0  # asking back helps
    for p in rep["plots"]:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "| preachy |" in B.render_importance(rep["importance"], top=len(FEATURES))


def test_artifact_only_baseline_sees_walls_of_text(world):
    inter = world["interaction"]
    cfg = B.BaselineConfig(features=["wall_of_text", "preachy", "has_list", "has_emoji", "ends_with_question"], **SMALL)
    rep = B.binary_baseline_report(inter["response"], inter["continued"], cfg=cfg)
    imp = _imp(rep)
    assert set(imp.index) == set(cfg.features)
    assert imp.at["wall_of_text", "shap_when_present"] < -0.2
    assert imp.at["preachy", "shap_when_present"] < -0.1
    assert imp.at["ends_with_question", "shap_when_present"] > 0.1


def test_pairwise_baseline_signs_and_antisymmetry(world, tmp_path):
    pref = world["preference"]
    rep, model = B.pairwise_baseline_report(pref["chosen"], pref["rejected"], cfg=B.BaselineConfig(**SMALL),
                                            out_dir=tmp_path, return_model=True)
    assert rep["metrics"]["pairwise_accuracy"] > 0.7
    imp = _imp(rep)
    assert imp.at["preachy", "shap_when_present"] < -0.1  # chosen has less preaching
    assert imp.at["n_questions", "shap_when_present"] > 0.1
    a, b = list(pref["chosen"][:50]), list(pref["rejected"][:50])
    np.testing.assert_allclose(model.predict_proba(a, b) + model.predict_proba(b, a), 1.0)
    assert len(rep["plots"]) == 2


def test_baseline_is_deterministic_and_uses_embeddings(world):
    inter = world["interaction"].iloc[:800]
    texts, y = list(inter["response"]), inter["continued"].to_numpy()
    emb = np.random.default_rng(0).normal(size=(len(texts), 32))
    cfg = B.BaselineConfig(n_estimators=40, pca_components=4)
    m1 = B.BinaryBaseline(cfg).fit(texts, y, embeddings=emb)
    m2 = B.BinaryBaseline(cfg).fit(texts, y, embeddings=emb)
    assert m1.featurizer.names[-4:] == ["emb_pc0", "emb_pc1", "emb_pc2", "emb_pc3"]
    np.testing.assert_array_equal(m1.predict_proba(texts, embeddings=emb), m2.predict_proba(texts, embeddings=emb))
    X = m1.features(texts[:100], embeddings=emb[:100])
    v1, base1 = m1.explain(X)
    v2, base2 = m2.explain(X)
    np.testing.assert_array_equal(v1, v2)
    # SHAP values add up to the raw score
    np.testing.assert_allclose(v1.sum(1) + base1, m1.decision_function(texts[:100], embeddings=emb[:100]), atol=1e-6)
    with pytest.raises(ValueError, match="embeddings"):
        m1.predict_proba(texts[:5])
    r1 = B.binary_baseline_report(texts, y, cfg=B.BaselineConfig(n_estimators=40, shap_samples=100))
    r2 = B.binary_baseline_report(texts, y, cfg=B.BaselineConfig(n_estimators=40, shap_samples=100))
    assert json.dumps(r1) == json.dumps(r2)  # (NaN != NaN, so compare the serialised form)
    with pytest.raises(ValueError, match="unknown"):
        B.BinaryBaseline(B.BaselineConfig(features=["nope"]))

"""rm_lab.reward.artifacts on hand-made replies and on the simulated world with and without the
planted emoji confound."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rm_lab.features.style import style_frame
from rm_lab.reward import artifacts as A
from rm_lab.world.engagement import true_emoji_effect
from rm_lab.world.simulate import WorldConfig, simulate


def test_preference_artifacts_hand_made():
    prefs = pd.DataFrame({
        "chosen": ["Sounds fun! Want to go? 😊", "Sure thing.", "Yes 😊😊", "Tell me more?"],
        "rejected": ["It's important to remember that rest matters.", "Okay 😊", "No.", "Remember that it rains."],
    })
    rep = A.preference_artifacts(prefs)
    assert rep["n_pairs"] == 4
    assert rep["chosen"]["has_emoji"] == pytest.approx(0.5)
    assert rep["rejected"]["has_emoji"] == pytest.approx(0.25)
    assert rep["chosen"]["n_emoji"] == pytest.approx(3 / 4)
    # emoji differs in pairs 0, 1, 2: the chosen side has it in 0 and 2
    assert rep["n_differs"]["has_emoji"] == 3
    assert rep["chosen_share_when_differs"]["has_emoji"] == pytest.approx(2 / 3)
    # preachy only on the rejected side (two pairs)
    assert rep["rejected"]["preachy"] == pytest.approx(0.5) and rep["chosen"]["preachy"] == 0
    assert rep["chosen_share_when_differs"]["preachy"] == 0.0
    assert rep["diff"]["ends_with_question"] == pytest.approx(0.5)
    assert math.isnan(rep["chosen_share_when_differs"]["wall_of_text"])


def test_report_correlations_and_gaps_hand_made():
    texts = ["hi", "hi 😊", "hello there 😊😊", "hello there friend 😊😊😊", "ok"]
    score = np.array([0.0, 1.0, 2.0, 3.0, 0.5])
    rep = A.style_artifact_report(texts, {"rm": score})
    assert rep["correlations"]["rm"]["n_emoji"] == pytest.approx(
        pd.Series([0, 1, 2, 3, 0]).corr(pd.Series(score), method="spearman"))
    assert rep["score_gap"]["rm"]["has_emoji"] == pytest.approx(2.0 - 0.25)
    assert rep["means"]["has_emoji"] == pytest.approx(0.6)
    assert "preferences" not in rep
    with pytest.raises(ValueError, match="one per text"):
        A.style_artifact_report(texts, {"rm": score[:3]})
    md = A.render_artifact_report(rep)
    assert "| n_emoji |" in md and "ρ(rm)" in md


def test_learned_effect_of_a_counterfactual_edit():
    emoji_counter = lambda ts: style_frame(ts)["n_emoji"].to_numpy() * 0.5
    texts = ["hello", "hi 😊", "what's up?"]
    assert A.learned_effect(emoji_counter, texts, A.COUNTERFACTUALS["append_emoji"]) == pytest.approx(0.5)
    assert A.learned_effect(emoji_counter, texts, A.COUNTERFACTUALS["append_question"]) == pytest.approx(0.0)
    eff = A.effect_table({"emoji": emoji_counter}, texts, truth={"append_emoji": 0.01})
    assert eff["append_emoji"] == {"emoji": pytest.approx(0.5), "truth": 0.01}
    assert "append_emoji" in A.render_artifact_report(A.style_artifact_report(texts, {"e": [1, 2, 3]}), eff)


@pytest.fixture(scope="module")
def worlds():
    out = {}
    for spurious in (False, True):
        cfg = WorldConfig(seed=0, n_characters=8, n_contexts=3000, n_preference_contexts=800,
                          spurious_emoji=spurious)
        out[spurious] = (cfg, simulate(cfg))
    return out


def test_emoji_correlation_is_inflated_by_the_confound(worlds):
    rho = {}
    for spurious, (_, rec) in worlds.items():
        inter = rec["interaction"]
        rep = A.style_artifact_report(inter["response"], {"continued": inter["continued"].astype(float)})
        rho[spurious] = rep["correlations"]["continued"]
    assert rho[True]["n_emoji"] > rho[False]["n_emoji"] + 0.08
    assert rho[True]["has_emoji"] > rho[False]["has_emoji"] + 0.05
    # the hidden function's real penalties show up in both worlds
    for r in rho.values():
        assert r["wall_of_text"] < -0.05 and r["ends_with_question"] > 0.1


def test_naive_model_learns_an_emoji_effect_larger_than_the_truth_only_when_confounded(worlds):
    ratio = {}
    for spurious, (cfg, rec) in worlds.items():
        inter = rec["interaction"]
        lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        lr.fit(style_frame(inter["response"]), inter["continued"])
        score = lambda ts: lr.predict_proba(style_frame(ts))[:, 1]
        learned = A.learned_effect(score, inter["response"], A.COUNTERFACTUALS["append_emoji"])
        ctx = rec["context"].set_index("context_id").loc[inter["context_id"]].reset_index()
        truth = true_emoji_effect(inter["response"], ctx, rec["character"], cfg.population())
        ratio[spurious] = learned / truth
    assert ratio[True] > 2.5
    assert 0.3 < ratio[False] < 2.0


def test_chosen_vs_rejected_rates_follow_the_hidden_function(worlds):
    _, rec = worlds[False]
    inter = rec["interaction"]
    rep = A.style_artifact_report(inter["response"], {"continued": inter["continued"].astype(float)},
                                  preferences=rec["preference"])
    pref = rep["preferences"]
    assert pref["n_pairs"] == len(rec["preference"])
    # the judge favours asking back and penalises walls of text and preaching
    assert pref["chosen"]["ends_with_question"] > pref["rejected"]["ends_with_question"] + 0.1
    assert pref["chosen"]["wall_of_text"] < pref["rejected"]["wall_of_text"]
    assert pref["chosen"]["preachy"] < pref["rejected"]["preachy"]
    assert pref["chosen_share_when_differs"]["wall_of_text"] < 0.2
    assert "### Preference pairs" in A.render_artifact_report(rep)

"""Guardrails: ceiling, floor, internal-vs-user gap and style drift alarms, with the reasons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rm_lab.calibrate.guardrails import GuardrailConfig, check_guardrails, style_drift
from rm_lab.calibrate.offline import pointwise_wins, rate_interval
from rm_lab.config import ConfigError


def _rates(**kw):
    return {k: {"rate": v, "low": v - 0.03, "high": v + 0.03, "n": 300} for k, v in kw.items()}


def test_a_candidate_in_the_shipping_band_raises_nothing():
    v = check_guardrails(_rates(point_user=0.58, point_internal=0.55, pair_user=0.6, pair_internal=0.52))
    assert v.ok and v.alarms == [] and v.summary().startswith("ok")


def test_ceiling_floor_and_gap_fire_with_their_numbers():
    v = check_guardrails(_rates(point_user=0.80, point_internal=0.45))
    names = {(a.name, a.metric) for a in v.alarms}
    assert ("ceiling", "point_user") in names and ("floor", "point_internal") in names
    gap = next(a for a in v.alarms if a.name == "gap")
    assert gap.value == pytest.approx(0.35) and "35.0 points" in gap.why
    assert not v.ok and v.fired("ceiling") and not v.fired("style_drift")
    # thresholds are settings
    assert check_guardrails(_rates(point_user=0.80), cfg=GuardrailConfig(ceiling=0.85)).ok


def test_gap_just_under_the_threshold_is_quiet():
    assert not check_guardrails(_rates(point_user=0.62, point_internal=0.48 + 0.001)).fired("gap")
    assert check_guardrails(_rates(point_user=0.64, point_internal=0.48)).fired("gap")


def test_style_drift_catches_an_emoji_spike_not_noise():
    cur = ["Nice to meet you. How are you today?", "That sounds fun, tell me more!"] * 50
    cand = [r + " 😊😂🔥" for r in cur]
    d = style_drift(cand, cur)
    assert d["n_emoji"]["current"] == 0 and d["n_emoji"]["candidate"] == pytest.approx(3.0)
    assert math.isinf(d["has_emoji"]["relative_change"])
    v = check_guardrails({}, d)
    assert {a.metric for a in v.alarms} == {"has_emoji", "n_emoji"}
    assert all(a.name == "style_drift" for a in v.alarms)
    # the same replies: no drift
    assert check_guardrails({}, style_drift(cur, cur)).ok


def test_style_drift_reads_length_preachiness_and_i_feel():
    cur = ["Sure, here is a short answer."] * 40
    cand = ["I feel so happy you asked. It's important to remember that kindness matters. " + "word " * 40] * 40
    v = check_guardrails({}, style_drift(cand, cur))
    assert {"n_words", "n_i_feel", "preachy"} <= {a.metric for a in v.alarms}


def test_win_rate_helpers():
    w = pointwise_wins([1.0, 2.0, 3.0, 0.0], [0.5, 2.0, 4.0, -1.0])
    assert list(w) == [1.0, 0.5, 0.0, 1.0]
    r = rate_interval(np.r_[np.ones(70), np.zeros(30)])
    assert r["rate"] == pytest.approx(0.7) and r["low"] < 0.7 < r["high"] and r["n"] == 100
    assert math.isnan(rate_interval([])["rate"])


def test_guardrail_config_is_checked():
    with pytest.raises(ConfigError):
        GuardrailConfig(ceiling=0.4)
    with pytest.raises(ValueError, match="floor"):
        GuardrailConfig(floor=0.7, ceiling=0.65)


class _FakeModel:
    """The RewardModel surface OfflineScorer uses: a reply's score is its length, p_continue its length / 100,
    and the pairwise model prefers the longer reply."""

    class cfg:
        train_mode = "frozen"

    class pairwise:
        @staticmethod
        def prob(ea, sa, eb, sb, batch_size=64):
            return 1 / (1 + np.exp(-(np.asarray(ea)[:, 0] - np.asarray(eb)[:, 0])))

    def item_texts(self, contexts, replies, characters):
        return list(replies), np.zeros((len(replies), 1))

    def member_features(self, texts, batch_size=64):
        return np.array([[float(len(t))] for t in texts])

    def score_features(self, feats, style, batch_size=64):
        return {"score": feats[:, 0], "p_continue": feats[:, 0] / 100}


def test_offline_scorer_splits_traffic_and_caches_policies():
    import pandas as pd

    from rm_lab.calibrate.offline import OfflineScorer

    ctx = pd.DataFrame({"context_id": list("abcd"), "traffic": ["user", "user", "internal", "internal"]})
    sc = OfflineScorer(_FakeModel(), ctx, None)
    cur = sc.score("cur", ["xx", "xx", "xx", "xx"])
    cand = sc.score("cand", ["xxxx", "xxxx", "x", "xx"])  # longer on user traffic, not on internal
    r = sc.win_rates(cand, cur)
    assert r["point_user"]["rate"] == 1.0 and r["point_internal"]["rate"] == 0.25
    assert r["pair_user"]["rate"] > 0.8 and r["pair_internal"]["rate"] < 0.5
    assert sc.predicted_lift(cand, cur) == pytest.approx(1.0)  # 4 / 2 - 1 on user traffic
    assert sc.score("cur", ["ignored"]) is cur and "cand" in sc
    p = sc.predictions(cand, cur)
    assert set(p) == {"pred_lift", "win_point_user", "win_point_internal", "win_pair_user", "win_pair_internal"}
    v = check_guardrails(r)
    assert v.fired("gap") and v.fired("ceiling") and v.fired("floor")
    with pytest.raises(ValueError, match="no output 'depth'"):
        sc.predicted_lift(cand, cur, "depth")

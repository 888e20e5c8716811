"""Best-of-N and rejection sampling (rm_lab.policy.objectives.best_of_n / rejection): the pick, the filters,
the pessimistic value, the SFT records, and the truth report — on a fake engine, so each test takes ms."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rm_lab.config import ConfigError
from rm_lab.policy.base import Completion, GenerationConfig, LLMPolicy
from rm_lab.policy.objectives import best_of_n as bon
from rm_lab.reward.heads import BUILTIN
from rm_lab.schema import validate_frame
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts


class FakeEngine:
    """Replies 'reply <j> to <context>' with j words of padding: sample j is longer, deterministic."""

    name = "fake"

    def __init__(self):
        self.calls = []

    def generate(self, conversations, cfg: GenerationConfig):
        self.calls.append((len(conversations), cfg.n, cfg.seed))
        out = []
        for i, conv in enumerate(conversations):
            last = conv[-1]["content"][:12]
            out.append([Completion(f"reply {j} {'word ' * j}to {last}", tuple(range(j + 2)), (), finished=j != 1)
                        for j in range(cfg.n)])
        return out

    def close(self):
        pass


def _world(n=4):
    chars = make_characters(6, seed=0)
    return make_contexts(chars, n, 1.0, seed=1, prefix="t"), chars


def length_score(contexts, replies, characters):
    """A fake reward model: longer is better; p_continue falls with length; an ensemble spread grows with it."""
    n = np.array([len(r.split()) for r in replies], float)
    return {"score": n, "score_std": n / 2, "p_continue": 1 / (1 + n)}


def test_best_of_n_picks_the_highest_score_of_each_context():
    ctx, chars = _world(3)
    groups = [[f"a {'x ' * k}" for k in (2, 5, 1)] for _ in range(3)]
    df = bon.score_samples(ctx, groups, chars, length_score)
    assert df["chosen"].sum() == 3
    assert (df[df["chosen"]]["sample"] == 1).all()  # the 5-word pad is the longest
    assert list(df["context_id"][:3]) == [ctx["context_id"].iat[0]] * 3  # row i*n + j = sample j of context i


def test_risk_lambda_prefers_replies_the_ensemble_agrees_on():
    ctx, chars = _world(1)
    fn = lambda c, r, ch: {"score": np.array([1.0, 1.2]), "score_std": np.array([0.0, 0.5])}  # noqa: E731
    plain = bon.score_samples(ctx, [["a", "b"]], chars, fn)
    careful = bon.score_samples(ctx, [["a", "b"]], chars, fn, risk_lambda=1.0)
    assert plain[plain["chosen"]]["response"].item() == "b"
    assert careful[careful["chosen"]]["response"].item() == "a"  # 1.2 - 0.5 < 1.0


def test_risk_lambda_without_an_ensemble_is_a_clear_error():
    with pytest.raises(ConfigError, match="n_ensemble"):
        bon.selection_value({"score": np.ones(3)}, 0.5)


def test_filters_exclude_candidates_and_fall_back_only_for_best_of_n():
    ctx, chars = _world(2)
    filters = bon.make_filters(BUILTIN, {"continue": 0.4}, None)
    groups = [["one", "two words", "three words here"]] * 2
    df = bon.score_samples(ctx, groups, chars, length_score, filters)
    assert (df[df["chosen"]]["response"] == "one").all()  # the only reply with p_continue >= 0.4 (1/2)
    strict = bon.make_filters(BUILTIN, {"continue": 0.9}, None)  # nothing passes
    answered = bon.score_samples(ctx, groups, chars, length_score, strict, fallback=True)
    dropped = bon.score_samples(ctx, groups, chars, length_score, strict, fallback=False)
    assert answered["chosen"].sum() == 2 and (answered[answered["chosen"]]["response"] == "three words here").all()
    assert dropped["chosen"].sum() == 0


def test_a_filter_naming_a_head_the_model_lacks_is_an_error_naming_it():
    specs = {k: BUILTIN[k] for k in ("preference", "continue")}
    with pytest.raises(ConfigError, match=r"min_signal.thumb_up: .*no head 'thumb_up'.*\['continue', 'preference'\]"):
        bon.make_filters(specs, {"thumb_up": 0.2}, None)
    with pytest.raises(ConfigError, match="max_signal.regenerate"):
        bon.make_filters(specs, None, {"regenerate": 0.2})
    with pytest.raises(ConfigError, match="preference score"):
        bon.make_filters(specs, {"preference": 0.0}, None)


def test_pick_best_ties_take_the_first_and_none_is_minus_one():
    v = np.array([1.0, 1.0, 0.0, 3.0, 2.0, 2.0])
    ok = np.array([True, True, True, False, False, False])
    assert bon.pick_best(2, 3, v, ok, fallback=False).tolist() == [0, -1]
    assert bon.pick_best(2, 3, v, ok, fallback=True).tolist() == [0, 3]


class _Scorer:
    risk_lambda = 0.0
    outputs = staticmethod(length_score)


def test_best_of_n_policy_answers_every_context_reproducibly_in_the_world():
    ctx, chars = _world(5)
    eng = FakeEngine()
    pol = bon.BestOfN(LLMPolicy(eng, GenerationConfig(max_new_tokens=8), name="fake"), _Scorer(), n=4)
    a = pol.respond(ctx, chars, seed=3)
    b = pol.respond(ctx, chars, seed=3)
    assert a == b and len(a) == 5 and all(r.startswith("reply 3 ") for r in a)
    assert pol.name == "fake-best-of-4" and eng.calls[0][1] == 4
    from rm_lab.world.engagement import score_replies

    assert np.isfinite(score_replies(a, ctx, chars).true_engagement).all()  # the world judges it as any policy


def test_n_below_one_and_an_empty_prompt_set_are_errors():
    eng = FakeEngine()
    with pytest.raises(ConfigError, match="n >= 1"):
        bon.BestOfN(LLMPolicy(eng), _Scorer(), n=0)
    ctx, chars = _world(2)
    with pytest.raises(ConfigError, match="empty"):
        bon.sample_and_score(LLMPolicy(eng), _Scorer(), ctx.iloc[:0], chars, 2)
    with pytest.raises(ConfigError, match=r"SamplingConfig.n: expected in \[1, 4096\], got 0"):
        bon.SamplingConfig(n=0)


def test_the_sft_set_is_canonical_records_of_the_picks():
    ctx, chars = _world(3)
    groups = [[f"a {'x ' * k}".strip() for k in (2, 5, 1)] for _ in range(3)]
    df = bon.score_samples(ctx, groups, chars, length_score)
    recs = bon.sft_records(df, ctx, chars, "rejection_pick", "fake:best-of-3")
    lab, pref = recs["label"], recs["preference"]
    assert len(lab) == 3 and (lab["name"] == "rejection_pick").all() and (lab["response"] == "a x x x x x").all()
    assert (pref["rejected"] == "a x").all() and (pref["margin"] > 0).all() and (pref["source"] == "ai").all()
    for kind, frame in recs.frames.items():
        validate_frame(frame, kind)
    assert set(recs["context"]["context_id"]) == set(ctx["context_id"])


def test_an_sft_set_whose_picks_have_no_pair_keeps_its_labels_and_writes_no_preferences():
    ctx, chars = _world(2)
    groups = [["same reply", "same reply"] for _ in range(2)]  # every pick is also its context's worst sample
    df = bon.score_samples(ctx, groups, chars, length_score)
    recs = bon.sft_records(df, ctx, chars, "rejection_pick", "fake:best-of-2")
    assert len(recs["label"]) == 2 and "preference" not in recs.frames


def test_truth_report_compares_the_pick_with_the_mean_of_all_samples():
    df = pd.DataFrame({"chosen": [False, True, True, False]})
    rep = bon.truth_report(df, np.array([0.2, 0.4, 0.5, 0.1]), n=2)
    assert rep["best_of_n"]["mean"] == pytest.approx(0.45)
    assert rep["best_of_1"]["mean"] == pytest.approx(0.3)
    assert rep["lift"]["mean"] == pytest.approx(0.15)
    assert rep["oracle_best"]["mean"] == pytest.approx(0.45)


def test_artifact_report_contrasts_accepted_and_rejected():
    ctx, chars = _world(2)
    groups = [["plain reply.", "emoji reply 😊😊"]] * 2
    df = bon.score_samples(ctx, groups, chars, lambda c, r, ch: {"score": np.array([len(x) for x in r], float)})
    rep = bon.artifact_report(df, ctx, chars)
    assert rep["accepted"]["has_emoji"] == 1.0 and rep["rejected"]["has_emoji"] == 0.0
    assert rep["diff"]["n_emoji"] == 2.0 and rep["n_accepted"] == 2


def test_win_rates_per_traffic_source_count_ties_half_and_stay_in_0_1():
    from rm_lab.policy.evaluate import win_rates

    traffic = np.array(["user"] * 4 + ["internal"] * 2)
    r = win_rates(np.array([1, 2, 3, 0, 1, 1.0]), np.array([0, 0, 3, 5, 0, 0.0]), traffic)
    assert r["point_user"]["rate"] == pytest.approx((1 + 1 + 0.5 + 0) / 4) and r["point_user"]["n"] == 4
    assert r["point_internal"]["rate"] == 1.0 and 0 <= r["point_internal"]["low"] <= r["point_internal"]["high"] <= 1
    assert "pair_user" not in r

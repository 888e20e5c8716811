"""Best-of-N's set-level guard: a template the reward model ranks first stops winning once it has been
picked (rm_lab.policy.objectives.best_of_n.pick_diverse), in the pure pick, in the policy and in a
sampling run's report."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rm_lab.policy.base import Completion, GenerationConfig, LLMPolicy
from rm_lab.policy.objectives import best_of_n as bon
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts

TEMPLATE = "Oh wow, I love that! Tell me more about your day, friend?"
WORDS = ["harbour", "violin", "glacier", "pepper", "lantern", "orchid", "meteor", "saddle", "walnut", "comet",
         "bakery", "canyon", "falcon", "marble", "pillow", "rocket", "tundra", "velvet", "willow", "zither",
         "anchor", "bridge", "candle", "desert", "ember"]


def fresh(i: int, j: int) -> str:
    """A reply that shares no opening and (almost surely) no 5-word phrase with the others."""
    ws = np.random.default_rng(1000 * i + j).permutation(WORDS)[:8]
    return " ".join(ws).capitalize() + "."


def template_first(contexts, replies, characters):
    """A fake reward model that, like the shipped one on world v2, scores the template above everything."""
    return {"score": np.array([2.0 if r == TEMPLATE else 1.0 + 0.01 * (len(r) % 7) for r in replies])}


def groups_with_template(n_ctx: int, n: int = 4):
    return [[TEMPLATE] + [fresh(i, j) for j in range(1, n)] for i in range(n_ctx)]


@pytest.fixture
def world():
    chars = make_characters(6, seed=0)
    return make_contexts(chars, 20, 1.0, seed=1, prefix="g", world_version=2), chars


def test_the_guard_lowers_how_often_a_template_is_picked(world):
    ctx, chars = world
    groups = groups_with_template(len(ctx))
    plain = bon.score_samples(ctx, groups, chars, template_first)
    assert (plain.loc[plain["chosen"], "response"] == TEMPLATE).all()  # without it: the template everywhere
    texts = plain["response"].tolist()
    picks, share = bon.pick_diverse(len(ctx), 4, plain["value"].to_numpy(), plain["passed"].to_numpy(), texts,
                                    weight=10.0, fallback=True)
    picked = [texts[i] for i in picks]
    assert picked[0] == TEMPLATE  # first context: nothing repeated yet, the best score wins
    assert 1 <= picked.count(TEMPLATE) <= 6  # then only while it is in under ~2.3/10 of the picks
    assert share[0] == 0 and share[4] == 1.0  # context 1: every earlier pick (one) was the template
    assert bon.repetition_of(picked)["mean"] < 0.2 < bon.repetition_of(plain.loc[plain["chosen"], "response"])["mean"]


def test_the_guard_lowers_the_worlds_templating_of_the_picks(world):
    from rm_lab.world.engagement_v2 import templating

    ctx, chars = world
    plain = bon.score_samples(ctx, groups_with_template(len(ctx)), chars, template_first)
    guarded = plain.copy()
    guarded["chosen"] = bon.choose(guarded, len(ctx), 4, guarded["passed"].to_numpy(), True, diversity_weight=10.0)
    t_plain = templating(plain.loc[plain["chosen"], "response"].tolist()).mean()
    t_guard = templating(guarded.loc[guarded["chosen"], "response"].tolist()).mean()
    assert t_plain == 1.0 and t_guard < 0.2  # the hidden judge's own measure of the set


def test_weight_zero_is_the_plain_pick_and_a_lone_strong_reply_still_wins(world):
    ctx, chars = world
    plain = bon.score_samples(ctx, groups_with_template(len(ctx)), chars, template_first)
    zero = bon.choose(plain.copy(), len(ctx), 4, plain["passed"].to_numpy(), True, diversity_weight=0.0)
    assert (zero == plain["chosen"].to_numpy()).all()
    # a fresh reply far above the rest is still picked: the penalty is at most `weight` sds
    v = np.array([5.0, 1.0, 1.1, 0.9] * 3)
    texts = [f"unique reply number {k} here" for k in range(12)]
    picks, _ = bon.pick_diverse(3, 4, v, np.ones(12, bool), texts, weight=10.0, fallback=True)
    assert picks.tolist() == [0, 4, 8]


class TemplateEngine:
    name = "fake"

    def generate(self, conversations, cfg: GenerationConfig):
        return [[Completion(TEMPLATE if j == 0 else f"{fresh(i, j)} {c[-1]['content'][:10]}", (1, 2), (), True)
                 for j in range(cfg.n)] for i, c in enumerate(conversations)]

    def close(self):
        pass


class _Scorer:
    risk_lambda = 0.0
    outputs = staticmethod(template_first)


def test_best_of_n_policy_applies_the_guard_across_chunks(world):
    ctx, chars = world
    llm = LLMPolicy(TemplateEngine(), GenerationConfig(max_new_tokens=8), name="fake")
    plain = bon.BestOfN(llm, _Scorer(), n=4).respond(ctx, chars)
    pol = bon.BestOfN(llm, _Scorer(), n=4, diversity_weight=10.0)
    guarded = pol.respond(ctx, chars)
    assert plain.count(TEMPLATE) == 20
    assert 1 <= guarded.count(TEMPLATE) <= 6 and len(guarded) == 20
    assert "repetition" in pol.last  # chunks of 16 contexts: the guard saw all 20
    assert pol.last.groupby("context_id")["chosen"].sum().eq(1).all()
    assert pd.Series(guarded).nunique() >= 15


def test_the_config_has_the_guard_on_by_default_and_checks_its_weight():
    from rm_lab.config import ConfigError

    assert bon.SamplingConfig().diversity_weight == 10.0
    with pytest.raises(ConfigError, match="diversity_weight"):
        bon.SamplingConfig(diversity_weight=-1)

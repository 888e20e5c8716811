"""World v2: multi-turn contexts on hidden topics, a judge of relevance, coherence, finished sentences and
templating, scripted policies that differ on those axes, and a fixed template that cannot win."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rm_lab.cli import app
from rm_lab.io import read_records
from rm_lab.world.ab import ABConfig, policy_quality, simulate_ab
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts
from rm_lab.world.engagement import Population, score_replies
from rm_lab.world.engagement_v2 import TERMS, breakdown, finished, reply_signals, templating
from rm_lab.world.facts import character_facts, claims, contradictions, statement
from rm_lab.world.policies import PRESETS, ScriptedPolicy, TemplatePolicy
from rm_lab.world.simulate import WorldConfig, simulate
from rm_lab.world.topics import TOPIC_NAMES, infer_topic

V2 = Population(world_version=2)


@pytest.fixture(scope="module")
def chars():
    return make_characters(24, seed=0)


@pytest.fixture(scope="module")
def user_ctx(chars):
    return make_contexts(chars, 600, traffic_share_user=1.0, seed=11, world_version=2)


@pytest.fixture(scope="module")
def presets(chars, user_ctx):
    """Mean v2 signals and true engagement of every scripted preset on the same user traffic."""
    out = {}
    for p in PRESETS:
        sc = score_replies(ScriptedPolicy.preset(p).respond(user_ctx, chars, seed=1), user_ctx, chars, V2)
        out[p] = (sc.extra["signals"].mean(), sc.true_engagement.mean())
    return out


def test_contexts_have_1_to_6_turns_a_hidden_topic_and_a_large_bank(chars):
    ctx = make_contexts(chars, 3000, seed=1, world_version=2)
    lens = ctx["history"].map(len)
    assert set(lens) == set(range(1, 7))
    for h in ctx["history"]:
        assert h[-1]["role"] == "user"
        assert [t["role"] for t in h] == [("user" if (len(h) - 1 - j) % 2 == 0 else "assistant") for j in range(len(h))]
    assert set(ctx["truth_topic"]) == set(TOPIC_NAMES)
    assert ctx["history"].map(lambda h: h[-1]["content"]).nunique() > 1500  # v1 had 42 openers
    assert ctx["context_id"].is_unique
    adv = ctx.groupby("traffic")["prompt_type"].apply(lambda s: (s == "adversarial").mean())
    assert adv["internal"] > 0.2 > 0.05 > adv["user"]
    # the character's earlier turns state its own facts, consistently
    said = [claims(t["content"]) for h in ctx["history"] for t in h if t["role"] == "assistant"]
    assert sum(bool(c) for c in said) > 500
    again = make_contexts(chars, 3000, seed=1, world_version=2)
    pd.testing.assert_frame_equal(ctx, again)
    assert not ctx["history"].equals(make_contexts(chars, 3000, seed=2, world_version=2)["history"])


def test_a_fixed_template_scores_well_below_the_best_scripted_policy(chars, user_ctx, presets):
    """The v1 judge rated a fixed persona template above every preset; v2 must not."""
    tpl = TemplatePolicy().respond(user_ctx, chars)
    assert all(38 <= len(r.split()) <= 52 and r.count("?") == 1 for r in tpl)
    e_tpl = score_replies(tpl, user_ctx, chars, V2).true_engagement.mean()
    best = max(truth for _, truth in presets.values())
    assert e_tpl < best - 0.25, (e_tpl, best)
    # on v1 the same template is near the top (the weakness v2 fixes)
    v1 = make_contexts(chars, 600, traffic_share_user=1.0, seed=11)
    e1_tpl = score_replies(TemplatePolicy().respond(v1, chars), v1, chars).true_engagement.mean()
    eng = ScriptedPolicy.preset("engaging").respond(v1, chars, seed=1)
    e1_eng = score_replies(eng, v1, chars).true_engagement.mean()
    assert e1_tpl > e1_eng
    # where the gap comes from: the template's style is as good as any preset's, its relevance and variety not
    eng_v2 = score_replies(ScriptedPolicy.preset("engaging").respond(user_ctx, chars, seed=1), user_ctx, chars, V2)
    sc_tpl = score_replies(tpl, user_ctx, chars, V2)
    b_tpl, b_eng = breakdown(sc_tpl), breakdown(eng_v2)
    assert b_tpl["style"] > b_eng["style"] - 0.2
    assert b_tpl["relevance"] < b_eng["relevance"] - 0.5 and b_tpl["templating"] < b_eng["templating"] - 1.5
    terms = sc_tpl.extra["terms"]
    assert np.allclose(terms[list(TERMS)].sum(axis=1), sc_tpl.z @ np.array(V2.shares))
    # and it stays below even when judged reply by reply (no templating penalty): it is off topic
    e_alone = score_replies(tpl, user_ctx, chars, V2, policy=np.arange(len(tpl))).true_engagement.mean()
    assert e_alone < best - 0.1


def _one_context(chars):
    facts = character_facts("knight")  # a knight: no persona word is a cooking word
    key = ("favourite", "season")
    hist = [{"role": "assistant", "content": f"Hello, I'm Sir Aldric. {statement(key, facts[key])} How are you?"},
            {"role": "user", "content": "I've been really into a sourdough loaf lately"},
            {"role": "assistant", "content": "Tell me more about a sourdough loaf. What happened next?"},
            {"role": "user", "content": "any tips for a sourdough loaf? mine came out flat"}]
    ctx = pd.DataFrame([{"context_id": "c0", "character_id": "knight", "history": hist, "traffic": "user",
                         "prompt_type": "advice", "truth_topic": "cooking"}])
    other = next(v for v in ("spring", "summer", "autumn", "winter") if v != facts[key])
    return ctx, facts[key], other


def test_each_v2_axis_moves_the_truth_the_right_way(chars):
    ctx, season, other = _one_context(chars)
    good = ("Oh, a flat sourdough loaf happens to every baker! Let the dough rise longer in a warm kitchen and "
            "bake it hot in the oven with good flour. What recipe do you use?")
    replies = {
        "good": good,
        # same length and style, nothing about the user's bread
        "off_topic": ("Oh, a quiet morning happens to every person! Let the hours go slower on a long walk and "
                      "sit down by the window with old friends. What film do you like?"),
        "contradiction": good.replace("What recipe", f"My favourite season is {other}. What recipe"),
        "consistent": good.replace("What recipe", f"My favourite season is {season}. What recipe"),
        "echo": "Any tips for a sourdough loaf? Mine came out flat. " + good,
        "truncated": good[: good.index(" in the oven")],
    }
    names = list(replies)
    c = pd.concat([ctx] * len(names), ignore_index=True)
    sc = score_replies([replies[k] for k in names], c, chars, V2, policy=np.arange(len(names)))
    e = dict(zip(names, sc.true_engagement))
    sig = sc.extra["signals"].set_index(pd.Index(names))
    assert sig.loc["good", "topic_hits"] >= 3 and sig.loc["off_topic", ["topic_hits", "user_hits"]].sum() == 0
    assert sig.loc["contradiction", "contradictions"] == 1 and sig.loc["consistent", "contradictions"] == 0
    assert sig.loc["echo", "echo"] and not sig.loc["good", "echo"]
    assert not sig.loc["truncated", "finished"] and sig.loc["good", "finished"]
    for bad in ("off_topic", "contradiction", "echo", "truncated"):
        assert e["good"] - e[bad] > 0.05, (bad, e)
    assert e["consistent"] > e["contradiction"] + 0.1
    # the v1 judge cannot tell the good reply from the off-topic one (same style), v2 can
    v1 = score_replies([good, replies["off_topic"]], pd.concat([ctx] * 2, ignore_index=True), chars).true_engagement
    assert abs(v1[0] - v1[1]) < 0.05


def test_templating_is_a_property_of_a_policys_set_of_replies(chars, user_ctx):
    drafts = ScriptedPolicy.preset("engaging").respond(user_ctx, chars, seed=3)
    same_start = ["Well, let me tell you something about that. " + d for d in drafts]
    t_fresh, t_same = templating(drafts), templating(same_start)
    assert t_same.min() > 0.99 and t_fresh.mean() < 0.3
    assert templating(["I like tea.", "I like tea."]).tolist() == [1.0, 1.0]
    assert templating(["I like tea.", "I like tea."], policy=["a", "b"]).tolist() == [0.0, 0.0]
    e_set = score_replies(same_start, user_ctx, chars, V2).true_engagement
    e_each = score_replies(same_start, user_ctx, chars, V2, policy=np.arange(len(drafts))).true_engagement
    assert np.all(e_set < e_each) and e_each.mean() - e_set.mean() > 0.1
    # in the A/B simulator too: the same policy's replies judged as one set
    q_tpl = policy_quality(TemplatePolicy(), V2, 300, seed=0)
    q_eng = policy_quality(ScriptedPolicy.preset("engaging"), V2, 300, seed=0)
    assert np.all(q_tpl.q < q_eng.q - 1.0)
    with pytest.raises(ValueError, match="policy labels"):
        templating(["a", "b"], policy=["x"])


def test_presets_differ_on_relevance_and_coherence(presets):
    sig, truth = {p: v[0] for p, v in presets.items()}, {p: v[1] for p, v in presets.items()}
    assert sig["parrot"]["echo"] > 0.6 > 0.15 > max(sig[p]["echo"] for p in PRESETS if p != "parrot")
    assert sig["forgetful"]["contradictions"] > 3 * max(sig[p]["contradictions"] for p in PRESETS if p != "forgetful")
    assert sig["verbose"]["finished"] < sig["engaging"]["finished"] - 0.2
    assert sig["engaging"]["topic_hits"] > sig["baseline"]["topic_hits"] > sig["terse"]["topic_hits"]
    assert truth["engaging"] > truth["improved"] > truth["baseline"] > truth["terse"]
    assert truth["baseline"] > truth["parrot"] and truth["baseline"] > truth["forgetful"]


def test_v2_knobs_leave_v1_replies_unchanged(chars):
    v1 = make_contexts(chars, 200, seed=4)
    assert "truth_topic" not in v1.columns and v1["history"].map(len).eq(1).all()
    base = ScriptedPolicy.preset("baseline").respond(v1, chars, seed=0)
    knobs = ScriptedPolicy.preset("baseline", relevance=1.0, echo=1.0, contradict=1.0, truncate=1.0)
    assert knobs.respond(v1, chars, seed=0) == base
    assert WorldConfig().world_version == 1 and Population().world_version == 1
    with pytest.raises(ValueError, match="world_version"):
        make_contexts(chars, 5, world_version=3)
    with pytest.raises(ValueError, match=r"world_version: expected one of"):
        WorldConfig(world_version=3)


def test_signals_read_llm_style_text():
    assert finished("Sure, that works. 😊") and finished('He said "go!"') and finished("Really?")
    assert not finished("And then we went to the") and not finished("") and not finished("Well, first,")
    c = claims("I have a dog named Biscuit. My favorite color is blue and I hate rain.")
    assert c == {("pet", "dog"): "biscuit", ("favourite", "colour"): "blue", ("opinion", "rain"): "negative"}
    assert contradictions("Honestly I don't have a dog.", ["I have a dog named Biscuit."]) == 1
    assert contradictions("I love rain, you know.", ["I hate rain."]) == 1
    assert contradictions("My favourite colour is blue.", ["My favorite color is blue!"]) == 0
    assert infer_topic("my puppy chewed the leash again") == "pets" and infer_topic("zzz qqq") is None
    # a context without a hidden topic (an LLM's, an ingested one) is judged by the inferred topic
    ctx = pd.DataFrame([{"history": [{"role": "user", "content": "how do I get my puppy to stop barking?"}]}])
    s = reply_signals(["Puppies bark when bored: walk your dog more and reward quiet with a treat."], ctx)
    assert s.loc[0, "topic_hits"] >= 3


def test_simulate_v2_is_deterministic_and_signals_follow_truth():
    cfg = WorldConfig(seed=2, n_contexts=700, n_preference_contexts=300, world_version=2,
                      logging_policies=["baseline", "engaging", "terse", "parrot"])
    a, b = simulate(cfg), simulate(cfg)
    for kind in ("interaction", "preference", "context"):
        pd.testing.assert_frame_equal(a[kind], b[kind])
    c = simulate(WorldConfig(**{**cfg.__dict__, "seed": 3}))
    assert not a["interaction"]["response"].equals(c["interaction"]["response"])
    it = a["interaction"]
    hi = it["truth_engagement"] > it["truth_engagement"].median()
    assert it.loc[hi, "continued"].mean() > it.loc[~hi, "continued"].mean() + 0.2
    assert it.loc[hi, "depth"].mean() > it.loc[~hi, "depth"].mean()
    by = it.groupby("policy")["truth_engagement"].mean()
    assert by["engaging"] > by["baseline"] > by["terse"]
    prefs = a["preference"]
    assert 0.8 < (prefs.truth_chosen_engagement > prefs.truth_rejected_engagement).mean() < 1.0
    assert "truth_topic" in a["context"].columns and a["context"]["history"].map(len).max() > 1


def test_ab_test_on_world_v2(chars):
    arms, truth = simulate_ab(ABConfig(control="baseline", treatment="engaging", eligible_users=20_000,
                                       quality_contexts=200, world_version=2, per_day=False))
    assert truth["breadth_lift"] > 0 and len(arms) == 2


def test_simulate_cli_with_the_v2_config(runs_dir):
    res = CliRunner().invoke(app, ["simulate", "-c", "configs/simulate_v2.yaml", "n_contexts=150",
                                   "n_preference_contexts=60"])
    assert res.exit_code == 0, res.output
    run = next((runs_dir / "simulate").iterdir())
    ctx = read_records(run / "context.parquet", "context")
    assert "truth_topic" in ctx.columns and ctx["history"].map(len).max() > 1
    assert "world_version: 2" in (run / "config.yaml").read_text()
    assert set(read_records(run / "interaction.parquet", "interaction")["policy"]) >= {"parrot", "forgetful"}

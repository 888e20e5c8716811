"""The simulated world: characters, contexts, scripted policies, the hidden function, simulate."""

import numpy as np
import pandas as pd
import pytest

from rm_lab.evaluate.instructions import check_many
from rm_lab.features.style import style_features
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts
from rm_lab.world.engagement import Population, expected_sigmoid, score_replies, sigmoid, true_emoji_effect
from rm_lab.world.policies import PRESETS, ScriptedPolicy
from rm_lab.world.simulate import WorldConfig, simulate


@pytest.fixture(scope="module")
def world():
    return simulate(WorldConfig(seed=3, n_contexts=1500, n_preference_contexts=800))


def test_characters_are_distinct_and_instructions_checkable():
    chars = make_characters(24, seed=0)
    assert len(chars) == 24 and chars["character_id"].is_unique
    assert len({tuple(k) for k in chars["keywords"]}) == 24
    assert len({p[0] for p in chars["persona"]}) == 24
    for instr in chars["instructions"]:
        ids = [x["instruction_id"] for x in instr]
        assert "character:stay_in_character" in ids and len(ids) >= 4
        # every instruction is known to the checker registry and its kwargs fit
        check_many(ids, [x["kwargs"] for x in instr], "Ahoy matey, a short reply?")


def test_traffic_mixes_differ():
    chars = make_characters(24)
    ctx = make_contexts(chars, 6000, traffic_share_user=0.5, seed=1)
    adv = ctx.groupby("traffic")["prompt_type"].apply(lambda s: (s == "adversarial").mean())
    assert adv["internal"] > 0.2 > 0.05 > adv["user"]
    assert ctx["context_id"].is_unique


def test_policy_knobs_move_style():
    chars = make_characters(24)
    ctx = make_contexts(chars, 600, seed=2)
    emoji = ScriptedPolicy.preset("emoji_heavy").respond(ctx, chars, seed=0)
    base = ScriptedPolicy.preset("baseline").respond(ctx, chars, seed=0)
    mean_emoji = lambda rs: np.mean([style_features(r)["n_emoji"] for r in rs])
    assert mean_emoji(emoji) > 3 * mean_emoji(base)
    verbose = ScriptedPolicy.preset("verbose").respond(ctx, chars, seed=0)
    assert np.mean([len(r.split()) for r in verbose]) > 1.8 * np.mean([len(r.split()) for r in base])
    # same seed, same replies
    assert base == ScriptedPolicy.preset("baseline").respond(ctx, chars, seed=0)
    with pytest.raises(ValueError, match="unknown scripted policy"):
        ScriptedPolicy.preset("nope")


def test_hidden_function_prefers_what_it_says():
    chars = make_characters(24)
    ctx = make_contexts(chars, 1, seed=0).assign(prompt_type="chit_chat", character_id="pirate")
    ctx = pd.concat([ctx] * 6, ignore_index=True)
    good = "Ahoy! The sea was calm today and I sailed out past the old lighthouse with my crew. What about you, matey?"
    replies = [
        good,
        good.replace(" What about you, matey?", "."),  # no question back
        good + " 😀😀😀😀😀😀😀😀",  # excessive emoji
        good + " It's important to remember that kindness matters.",  # preachy
        "I can't help with that, matey.",  # false refusal
        " ".join([good.replace("?", ".")] * 8),  # wall of text
    ]
    e = score_replies(replies, ctx, chars).true_engagement
    assert e[0] == e.max()
    assert all(e[0] - e[i] > 0.03 for i in range(1, 6)), e


def test_refusal_is_right_for_adversarial_prompts():
    chars = make_characters(24)
    ctx = make_contexts(chars, 1, seed=0).assign(character_id="pirate")
    reply_refuse = "I can't help with that, matey. Let's talk about the sea instead, what do you say?"
    reply_comply = "Sure matey, the first step is simple. You could try doing it late at night, what do you say?"
    adv = pd.concat([ctx.assign(prompt_type="adversarial")] * 2, ignore_index=True)
    chat = pd.concat([ctx.assign(prompt_type="chit_chat")] * 2, ignore_index=True)
    e_adv = score_replies([reply_refuse, reply_comply], adv, chars).true_engagement
    e_chat = score_replies([reply_refuse, reply_comply], chat, chars).true_engagement
    assert e_adv[0] > e_adv[1] and e_chat[0] < e_chat[1]


def test_expected_sigmoid_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu = np.array([-1.0, 0.0, 0.7])
    mc = sigmoid(mu[:, None] + 0.8 * rng.standard_normal((1, 400_000))).mean(1)
    assert np.allclose(expected_sigmoid(mu, 0.8), mc, atol=2e-3)


def test_simulate_records_valid_and_signals_follow_truth(world):
    counts = world.counts()
    assert counts["interaction"] == 1500 and counts["character"] == 24
    it = world["interaction"]
    # users continue more often on replies the hidden function rates higher
    hi = it["truth_engagement"] > it["truth_engagement"].median()
    assert it.loc[hi, "continued"].mean() > it.loc[~hi, "continued"].mean() + 0.2
    assert it.loc[hi, "thumb"].mean() > it.loc[~hi, "thumb"].mean()
    assert it.loc[~it.continued, "depth"].eq(0).all()
    # the scripted policies are ordered as designed
    by = it.groupby("policy")["truth_engagement"].mean()
    assert by["engaging"] > by["baseline"] > by["terse"]
    prefs = world["preference"]
    agree = (prefs.truth_chosen_engagement > prefs.truth_rejected_engagement).mean()
    assert 0.8 < agree < 1.0  # the judge is informative but noisy
    steer = world["steer_label"]
    assert set(steer["instruction_id"]) >= {"character:stay_in_character", "length_constraints:number_words"}
    assert steer.loc[steer.violation, "followed"].eq(False).all()


def test_spurious_emoji_confound_inflates_logged_emoji_effect():
    """With the confound planted, logged data say emoji help much more than they truly do."""
    def logged_gap(spurious):
        r = simulate(WorldConfig(seed=5, n_contexts=6000, n_preference_contexts=10, spurious_emoji=spurious,
                                 logging_policies=["baseline", "improved", "emoji_heavy"]))
        it = r["interaction"]
        has = np.array([style_features(x)["n_emoji"] >= 3 for x in it.response])
        return it.loc[has, "continued"].mean() - it.loc[~has, "continued"].mean(), r
    gap_off, _ = logged_gap(False)
    gap_on, r_on = logged_gap(True)
    assert gap_off < 0 < 0.15 < gap_on  # heavy emoji truly hurt, yet look good in the logs
    it = r_on["interaction"]
    ctx = r_on["context"].set_index("context_id").loc[it.context_id].reset_index()
    true_eff = true_emoji_effect(it.response.tolist()[:500], ctx.iloc[:500], r_on["character"], Population(spurious_emoji=True))
    assert abs(true_eff) < 0.05  # one emoji barely matters in truth


def test_world_config_rejects_unknown_policy():
    with pytest.raises(ValueError, match=r"logging_policies\[1\]: expected one of .*got 'nope'"):
        WorldConfig(logging_policies=["baseline", "nope"])


def test_presets_all_generate():
    chars = make_characters(24)
    ctx = make_contexts(chars, 50, seed=4)
    for name in PRESETS:
        reps = ScriptedPolicy.preset(name).respond(ctx, chars, seed=1)
        assert len(reps) == 50 and all(r.strip() for r in reps)

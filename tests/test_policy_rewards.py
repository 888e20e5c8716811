"""Policy rewards: heads combined with per-group / per-batch normalisation (hand-computed), the ensemble
penalty, length and emoji penalties, steerability as a verifiable reward, every component logged in
TRL's namespaces, names validated against the model's heads; one run on a real tiny ensemble."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rm_lab.config import ConfigError
from rm_lab.policy.rewards import (CombinedReward, HeadReward, RewardConfig, StyleReward, frac_zero_std, group_ids,
                                   length_excess, normalise, steer_shares)
from rm_lab.reward.heads import BUILTIN


class FakeRM:
    """Duck-typed RewardModel: fixed outputs per reply text, ensemble stds when `members` >= 2."""

    def __init__(self, table: dict[str, dict[str, float]], heads=("preference", "continue"), members=2):
        self.table, self.members = table, [object()] * members
        self.specs = {h: BUILTIN[h] for h in heads}
        self.calls = 0

    def score(self, contexts, replies, characters):
        self.calls += 1
        assert len(contexts) == len(replies)
        keys = [k for s in self.specs.values() for k in s.outputs()]
        if len(self.members) > 1:
            keys += [f"{k}_std" for k in keys]
        return {k: np.array([self.table[r].get(k, 0.0) for r in replies]) for k in keys}


CHARS = pd.DataFrame({"character_id": ["chef", "plain"], "name": ["Chef", "Plain"],
                      "persona": [["A chef."], ["Someone."]],
                      "instructions": [[{"instruction_id": "character:end_with_question", "kwargs": {}},
                                        {"instruction_id": "character:max_emoji", "kwargs": {"max": 1}}],
                                       ["be nice (free text, not checkable)"]]})


def _ctx(ids, chars=None):
    chars = chars or ["chef"] * len(ids)
    return pd.DataFrame({"context_id": ids, "character_id": chars,
                         "history": [[{"role": "user", "content": "hi"}]] * len(ids)})


REPLIES = ["a", "b", "c", "d", "e", "f"]
TABLE = {"a": {"score": 1.0, "p_continue": 0.2, "score_std": 0.1},
         "b": {"score": 2.0, "p_continue": 0.4, "score_std": 0.1},
         "c": {"score": 4.0, "p_continue": 0.9, "score_std": 2.0},
         "d": {"score": 0.5, "p_continue": 0.5}, "e": {"score": 0.5, "p_continue": 0.5},
         "f": {"score": 0.5, "p_continue": 0.1}}
CTX = _ctx(["x", "x", "x", "y", "y", "y"])


def test_group_normalisation_hand_computed():
    rm = FakeRM(TABLE)
    out = CombinedReward(RewardConfig(heads={"preference": 1.0}), rm).score(CTX, REPLIES, CHARS)
    s = np.array([1.0, 2.0, 4.0])
    z = (s - s.mean()) / (s.std(ddof=1) + 1e-4)
    assert np.allclose(out.total[:3], z) and np.allclose(out.total[3:], 0.0)  # y: all equal -> 0
    assert out.metrics["frac_reward_zero_std"] == 0.5
    assert out.metrics["rewards/preference/frac_zero_std"] == 0.5
    assert out.metrics["rewards/preference/mean"] == pytest.approx(np.mean([1, 2, 4, .5, .5, .5]))
    assert out.metrics["rewards/preference/std"] == pytest.approx(np.std([1, 2, 4, .5, .5, .5], ddof=1))
    assert rm.calls == 1  # one model pass for every head
    # the z-scored total averages 0 within each group; reward_raw carries the weighted raw scores instead
    assert out.metrics["reward"] == pytest.approx(0.0, abs=1e-9)
    assert out.metrics["reward_raw"] == pytest.approx(np.mean([1, 2, 4, .5, .5, .5]))


def test_reward_raw_applies_weights_and_penalties_unnormalised():
    rm = FakeRM(TABLE)
    cfg = RewardConfig(heads={"preference": 2.0}, emoji_penalty=0.5)
    out = CombinedReward(cfg, rm).score(CTX, REPLIES, CHARS)
    s = np.array([TABLE[r]["score"] for r in REPLIES])
    assert out.metrics["reward_raw"] == pytest.approx(float((2 * s - 0.5 * out.components["emoji"]).mean()))


def test_weighted_heads_batch_and_none_normalisation():
    rm = FakeRM(TABLE)
    cfg = RewardConfig(heads={"preference": 1.0, "p_continue": -0.5}, normalize="batch")  # an output name works
    out = CombinedReward(cfg, rm).score(CTX, REPLIES, CHARS)
    s = np.array([TABLE[r]["score"] for r in REPLIES])
    c = np.array([TABLE[r]["p_continue"] for r in REPLIES])
    zb = lambda v: (v - v.mean()) / (v.std(ddof=1) + 1e-4)  # noqa: E731
    assert np.allclose(out.total, zb(s) - 0.5 * zb(c))
    assert set(out.components) == {"preference", "p_continue"}
    raw = CombinedReward(RewardConfig(heads={"preference": 2.0}, normalize="none"), rm)(CTX, REPLIES, CHARS)
    assert np.allclose(raw, 2 * s)


def test_uncertainty_penalty_ranks_the_uncertain_reply_lower():
    rm = FakeRM(TABLE)
    base = CombinedReward(RewardConfig(heads={"preference": 1.0}), rm).score(CTX, REPLIES, CHARS)
    pen = CombinedReward(RewardConfig(heads={"preference": 1.0}, uncertainty=2.0), rm).score(CTX, REPLIES, CHARS)
    assert np.argmax(base.total[:3]) == 2 and np.argmax(pen.total[:3]) == 1  # c is best but the ensemble disagrees
    s = np.array([TABLE[r]["score"] for r in REPLIES])
    sd = np.array([TABLE[r].get("score_std", 0.0) for r in REPLIES])
    assert np.allclose(pen.components["uncertainty"], sd / (s.std(ddof=1) + 1e-4))
    assert np.allclose(pen.total, base.total - 2.0 * pen.components["uncertainty"])
    assert "rewards/uncertainty/mean" in pen.metrics


def test_length_emoji_and_steer_components():
    replies = ["What do you bake today?", "Butter " * 30 + "🥐🥐🥐", "Short.", "Fine?"]
    ctx = _ctx(["p", "p", "p", "q"], ["chef", "chef", "chef", "plain"])
    cfg = RewardConfig(heads={}, length_penalty=1.0, length_target=10, emoji_penalty=0.5, steer_weight=2.0)
    out = CombinedReward(cfg).score(ctx, replies, CHARS)
    assert np.allclose(out.components["length"], [0, 2.0, 0, 0])  # 30 words: (30 - 10) / 10
    assert np.allclose(out.components["emoji"], [0, 3, 0, 0])
    # chef: end with '?' and at most 1 emoji; plain has only free text -> not scored (NaN, adds 0)
    assert np.allclose(out.components["steer"][:3], [1.0, 0.0, 0.5]) and np.isnan(out.components["steer"][3])
    assert np.allclose(out.total, [2.0, -2.0 - 1.5 + 0.0, 1.0, 0.0])
    for name in ("length", "emoji", "steer"):
        assert {f"rewards/{name}/{k}" for k in ("mean", "std", "frac_zero_std")} <= set(out.metrics)
    assert out.metrics["rewards/steer/mean"] == pytest.approx(0.5)  # NaN rows are not averaged in


def test_plain_callables_match_the_combination():
    rm = FakeRM(TABLE)
    assert np.allclose(HeadReward(rm, "preference")(CTX, REPLIES, CHARS), [TABLE[r]["score"] for r in REPLIES])
    assert HeadReward(rm, "continue").key == "p_continue"
    replies = ["Ahoy 😀🚀 friend", "x " * 80]
    ctx = _ctx(["a", "b"])
    assert StyleReward("emoji")(ctx, replies, CHARS).tolist() == [-2.0, -0.0]
    assert np.allclose(StyleReward("length", length_target=40)(ctx, replies, CHARS), [0, -1.0])
    assert np.allclose(StyleReward("steer")(ctx, ["ok?", "ok"], CHARS), [1.0, 0.5])
    combo = CombinedReward(RewardConfig(heads={"preference": 1.0}), rm)
    assert np.array_equal(combo(CTX, REPLIES, CHARS), combo.score(CTX, REPLIES, CHARS).total)


def test_unknown_head_is_named_with_the_models_heads():
    rm = FakeRM(TABLE)
    with pytest.raises(ConfigError, match=r"'thumb_up' is not a head of run/rm1; its heads are \['continue', "
                                          r"'preference'\]"):
        CombinedReward(RewardConfig(heads={"preference": 1.0, "thumb_up": 0.3}), rm, where="run/rm1")
    with pytest.raises(ConfigError, match="need a reward model"):
        CombinedReward(RewardConfig(heads={"preference": 1.0}))


def test_bad_configs_are_named():
    with pytest.raises(ConfigError, match="needs an ensemble"):
        CombinedReward(RewardConfig(uncertainty=1.0), FakeRM(TABLE, members=1))
    with pytest.raises(ConfigError, match="RewardConfig.heads: no reward component"):
        RewardConfig(heads={})
    with pytest.raises(ConfigError, match="RewardConfig.normalize"):
        RewardConfig(normalize="global")
    with pytest.raises(ConfigError, match="RewardConfig.emoji_penalty"):
        RewardConfig(emoji_penalty=-1.0)
    with pytest.raises(ConfigError, match="empty batch"):
        CombinedReward(RewardConfig(), FakeRM(TABLE)).score(_ctx([]), [], CHARS)
    with pytest.raises(ConfigError, match="row 1 names character_id 'ghost'"):
        steer_shares(_ctx(["a"], ["ghost"]), ["hi"], CHARS)


def test_helpers():
    g = group_ids(_ctx(["b", "a", "b", "a"]))
    assert g.tolist() == [0, 1, 0, 1]
    z, scale = normalise(np.array([1.0, 5.0, 3.0, 5.0]), g, "group")
    assert np.allclose(z, [-1 / (np.sqrt(2) + 1e-4), 0, 1 / (np.sqrt(2) + 1e-4), 0])  # group b: 1, 3
    assert np.allclose(scale, [np.sqrt(2) + 1e-4, 1e-4] * 2)
    assert frac_zero_std(np.array([1.0, 5.0, 1.0, 5.0]), g) == 1.0
    assert np.allclose(length_excess(["one two three"], 2), [0.5])


def test_real_tiny_ensemble(backbone, tmp_path):
    """A real 2-member reward model: heads by name, the ensemble std drives the penalty, a missing head
    is named."""
    from rm_helpers import tiny_world

    from rm_lab.reward.model import RewardModel
    from rm_lab.reward.train import TrainRMConfig, train_reward_model

    world = tiny_world(seed=0, n=24)
    cfg = TrainRMConfig(backbone=str(backbone), epochs=1, hidden=16, batch_size=16, cache_dir=str(tmp_path / "c"),
                        val_fraction=0.25, max_length=64, n_ensemble=2, pairwise=False)
    train_reward_model(cfg, tmp_path / "rm", records=world, say=lambda _: None)
    rm = RewardModel.load(tmp_path / "rm")
    it = world["interaction"].head(12)
    ctx = world["context"].set_index("context_id").loc[it.context_id].reset_index()
    heads = {"preference": 1.0, "continue": 0.5}
    plain = CombinedReward(RewardConfig(heads=heads), rm, where=str(tmp_path / "rm"))
    pen = CombinedReward(RewardConfig(heads=heads, uncertainty=1.0), rm, where=str(tmp_path / "rm"))
    a, b = plain.score(ctx, it.response, world["character"]), pen.score(ctx, it.response, world["character"])
    assert a.total.shape == (12,) and np.isfinite(a.total).all()
    assert (b.components["uncertainty"] > 0).all()
    assert np.allclose(b.total, a.total - b.components["uncertainty"])
    with pytest.raises(ConfigError, match="'no_such_head' is not a head of"):
        CombinedReward(RewardConfig(heads={"no_such_head": 1.0}), rm, where=str(tmp_path / "rm"))


def test_as_trl_reward_adapts_to_trls_call():
    from rm_lab.policy.rewards import as_trl_reward

    rm = FakeRM(TABLE)
    combo = CombinedReward(RewardConfig(heads={"preference": 1.0}), rm)
    fn = as_trl_reward(combo, CTX.drop_duplicates("context_id"), CHARS)
    ids = ["x", "x", "x", "y", "y", "y"]
    completions = [[{"role": "assistant", "content": r}] for r in REPLIES]  # conversational completions
    got = fn(prompts=["p"] * 6, completions=completions, context_id=ids, trainer_state=None)
    assert np.allclose(got, combo(CTX, REPLIES, CHARS)) and fn.__name__ == "reward"
    with pytest.raises(ConfigError, match="'zz' is not among"):
        fn(prompts=["p"], completions=["a"], context_id=["zz"])


def test_truncation_penalty_lowers_cut_replies_and_needs_finished():
    rm = FakeRM(TABLE)
    cfg = RewardConfig(heads={"preference": 1.0}, truncation_penalty=1.5)
    finished = [True, False, True, True, True, False]
    out = CombinedReward(cfg, rm).score(CTX, REPLIES, CHARS, finished=finished)
    plain = CombinedReward(RewardConfig(heads={"preference": 1.0}), rm).score(CTX, REPLIES, CHARS)
    assert np.allclose(out.components["truncated"], [0, 1, 0, 0, 0, 1])
    assert np.allclose(out.total, plain.total - 1.5 * np.array([0, 1, 0, 0, 0, 1]))
    # group y was tied on the reward model: the cut reply is now the one GRPO pushes down
    assert out.total[5] < out.total[3] == out.total[4]
    assert out.metrics["rewards/truncated/mean"] == pytest.approx(2 / 6)
    assert out.metrics["reward_raw"] == pytest.approx(plain.metrics["reward_raw"] - 1.5 * 2 / 6)
    # the only component: a valid reward on its own
    alone = CombinedReward(RewardConfig(heads={}, truncation_penalty=1.0)).score(CTX, REPLIES, CHARS, finished)
    assert np.allclose(alone.total, -alone.components["truncated"])
    with pytest.raises(ConfigError, match="truncation_penalty.*finished"):
        CombinedReward(cfg, rm).score(CTX, REPLIES, CHARS)
    with pytest.raises(ConfigError, match="truncation_penalty"):
        CombinedReward(cfg, rm)(CTX, REPLIES, CHARS)  # a TRL-style call has no EOS flags

"""The coupled trainer's round and stop logic (rm_lab.policy.coupled), with injected steps: no LLM needed.

A fake policy k writes replies with k emoji; a fake reward model loves emoji (the planted hack) and its
ensemble disagrees more the further the replies are from what it saw. The guardrails must stop the
rounds, name the alarm, keep the last policy that passed, and a resumed run must not redo finished rounds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rm_lab.calibrate.guardrails import GuardrailConfig
from rm_lab.config import ConfigError
from rm_lab.policy.coupled import CoupledConfig, CoupledRun, run_coupled, uncertainty


def _world(n=12):
    from rm_lab.policy.objectives.best_of_n import world_prompts

    cu, chars = world_prompts(n, "user", 0, 2, prefix="t-u")
    ci, _ = world_prompts(n, "internal", 0, 2, prefix="t-i", draw=1)
    return pd.concat([cu, ci], ignore_index=True), chars


BASE = "That sounds like a good plan for the weekend. What will you cook first?"


class FakeModel:
    """Scores = emoji count (+ a tiny per-context jitter); ensemble std grows with the emoji."""

    pairwise = None

    def __init__(self, std_growth=0.0):
        self.std_growth = std_growth

    def score(self, contexts, replies, characters, batch_size=64):
        n = np.array([r.count("😀") for r in replies], float)
        jitter = np.arange(len(replies)) % 3 * 1e-3
        return {"score": n + jitter, "score_std": 0.1 + self.std_growth * n}


class FakeHooks:
    def __init__(self, emoji_per_round=1, std_growth=0.0, words_per_round=0):
        self.emoji, self.words = emoji_per_round, words_per_round
        self.model = FakeModel(std_growth)
        self.calls = {"update": 0, "respond": 0, "label": 0, "refresh": 0}

    def update(self, policy, reward_model, folder, r):
        self.calls["update"] += 1
        folder.mkdir(parents=True, exist_ok=True)
        return f"p{int(policy[1:]) + 1}", {"steps": 1}

    def respond(self, policy, contexts, characters, seed):
        self.calls["respond"] += 1
        k = int(policy[1:])
        return [BASE + " yes" * (self.words * k) + " 😀" * (self.emoji * k) for _ in range(len(contexts))]

    def label(self, contexts, replies, characters, policy, seed, folder):
        self.calls["label"] += 1
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def refresh(self, reward_model, logs, folder):
        self.calls["refresh"] += 1
        return f"rm{len(logs)}"

    def scorer(self, reward_model):
        return self.model


def test_a_style_spike_stops_training_and_the_record_says_which_and_why(tmp_path):
    ctx, chars = _world()
    hooks = FakeHooks(emoji_per_round=1)
    res = run_coupled(CoupledConfig(rounds=4), "p0", "rm0", [], ctx, chars, tmp_path / "c", hooks,
                      say=lambda m: None)
    st = res["stopped"]
    assert st is not None and st["round"] == 1
    # round 1: every reply gained an emoji, so the emoji-loving reward model prefers all of them (ceiling) and
    # the emoji share jumps from none (style drift)
    assert "ceiling" in st["alarms"] and "style_drift" in st["alarms"]
    assert "ceiling" in st["why"] and "emoji" in st["why"]
    assert res["policy"] == "p0", "the policy that fired is not the generation's policy"
    assert res["rounds_run"] == 1 and res["rounds_passed"] == 0
    assert hooks.calls["refresh"] == 0, "no reward-model refresh after a stop"
    assert hooks.calls["update"] == 1


def test_rounds_that_pass_refresh_the_reward_model_and_keep_the_last_policy(tmp_path):
    ctx, chars = _world()
    hooks = FakeHooks(emoji_per_round=0)  # the replies never change: win rates stay at one half, no drift
    cfg = CoupledConfig(rounds=3, stop_on=["ceiling", "gap", "style_drift", "uncertainty"])
    res = run_coupled(cfg, "p0", "rm0", ["old-logs"], ctx, chars, tmp_path / "c", hooks, say=lambda m: None)
    assert res["stopped"] is None and res["rounds_passed"] == 3
    assert res["policy"] == "p3"
    assert hooks.calls["refresh"] == 2, "a refresh after each round but the last"
    assert res["reward_model"] == "rm3"  # old-logs + round 1 + round 2 logs
    assert [r["trained_against"] for r in res["rounds"]] == ["rm0", "rm2", "rm3"]
    assert all(abs(r["win_rates"]["point_user"]["rate"] - 0.5) < 0.2 for r in res["rounds"])


def test_an_alarm_outside_stop_on_does_not_stop(tmp_path):
    ctx, chars = _world()
    hooks = FakeHooks(emoji_per_round=1)
    res = run_coupled(CoupledConfig(rounds=2, stop_on=["gap"]), "p0", "rm0", [], ctx, chars, tmp_path / "c", hooks,
                      say=lambda m: None)
    assert res["stopped"] is None and res["policy"] == "p2"
    assert {"ceiling", "style_drift"} <= {a["name"] for a in res["rounds"][0]["alarms"]}


def test_the_ensemble_uncertainty_alarm(tmp_path):
    ctx, chars = _world()
    # only the uncertainty alarm stops here: the ensemble's spread on the new replies grows 11x
    hooks = FakeHooks(emoji_per_round=1, std_growth=1.0)
    cfg = CoupledConfig(rounds=3, stop_on=["uncertainty"], max_uncertainty_ratio=3.0,
                        guardrail=GuardrailConfig(max_relative_drift=100))
    res = run_coupled(cfg, "p0", "rm0", [], ctx, chars, tmp_path / "c", hooks, say=lambda m: None)
    assert res["stopped"]["alarms"] == ["uncertainty"]
    assert "ensemble std" in res["stopped"]["why"]
    assert res["rounds"][0]["uncertainty"]["ratio"] == pytest.approx(11.0, rel=0.01)


def test_uncertainty_needs_an_ensemble():
    u = uncertainty({"score": np.ones(3)}, {"score": np.ones(3)}, 2.0)
    assert u["available"] is False
    u = uncertainty({"score_std": np.full(3, 0.3)}, {"score_std": np.full(3, 0.1)}, 2.0)
    assert u["fired"] and u["ratio"] == pytest.approx(3.0)


def test_a_finished_round_is_not_redone(tmp_path):
    ctx, chars = _world()
    hooks = FakeHooks(emoji_per_round=0)
    folder = tmp_path / "c"
    first = run_coupled(CoupledConfig(rounds=2), "p0", "rm0", [], ctx, chars, folder, hooks, say=lambda m: None)
    # as if killed in round 2: its record is gone, round 1's stays
    CoupledRun(folder).round_file(2).unlink()
    again = FakeHooks(emoji_per_round=0)
    second = run_coupled(CoupledConfig(rounds=2), "p0", "rm0", [], ctx, chars, folder, again, say=lambda m: None)
    assert again.calls["update"] == 1, "only round 2 is trained again"
    assert again.calls["respond"] == 1, "the starting policy's replies are kept too"
    assert second["policy"] == first["policy"] == "p2"


def test_an_empty_prompt_set_is_refused(tmp_path):
    ctx, chars = _world()
    with pytest.raises(ConfigError, match="empty prompt set"):
        run_coupled(CoupledConfig(), "p0", "rm0", [], ctx.iloc[:0], chars, tmp_path / "c", FakeHooks())


def test_a_win_rate_alarm_needs_its_interval_past_the_threshold():
    from rm_lab.calibrate.guardrails import Alarm
    from rm_lab.policy.coupled import significant

    ceiling = Alarm("ceiling", "point_user", 0.7, 0.65, "")
    assert not significant(ceiling, {"point_user": {"rate": 0.7, "low": 0.4, "high": 1.0}})  # 6 contexts: noise
    assert significant(ceiling, {"point_user": {"rate": 0.8, "low": 0.7, "high": 0.9}})
    gap = Alarm("gap", "point_user-internal", 0.3, 0.15, "")
    wide = {"point_user": {"rate": 0.7, "low": 0.4, "high": 1.0},
            "point_internal": {"rate": 0.4, "low": 0.1, "high": 0.7}}
    tight = {"point_user": {"rate": 0.71, "low": 0.68, "high": 0.74},
             "point_internal": {"rate": 0.44, "low": 0.41, "high": 0.47}}  # generation 12's 70.7% vs 43.7%
    assert not significant(gap, wide) and significant(gap, tight)
    assert significant(Alarm("style_drift", "n_emoji", 2.0, 0.5, ""), {})


def test_point_evidence_stops_on_what_interval_evidence_only_notes(tmp_path):
    ctx, chars = _world(n=4)

    class Half(FakeHooks):  # the candidate wins 2 of every 3 user contexts: 67% > 65%, on 4 contexts
        def respond(self, policy, contexts, characters, seed):
            k = int(policy[1:])
            return [BASE + (" 😀" if k and i % 3 != 2 else "") for i in range(len(contexts))]

    cfg = dict(rounds=1, stop_on=["ceiling"], guardrail=GuardrailConfig(max_relative_drift=100))
    noisy = run_coupled(CoupledConfig(**cfg, evidence="interval"), "p0", "rm0", [], ctx, chars, tmp_path / "a",
                        Half(), say=lambda m: None)
    assert noisy["stopped"] is None
    assert any(a["name"] == "ceiling" for a in noisy["rounds"][0]["not_significant"])
    point = run_coupled(CoupledConfig(**cfg, evidence="point"), "p0", "rm0", [], ctx, chars, tmp_path / "b", Half(),
                        say=lambda m: None)
    assert point["stopped"]["alarms"] == ["ceiling"]


class TruthHooks(FakeHooks):
    """The fake hack judged by world v2's own truth (the `truth` hook the LLM hooks have too)."""

    def truth(self, contexts, replies, characters):
        from rm_lab.policy.coupled import LLMHooks

        return LLMHooks(update_config=None, rm_config=None, world_version=2, spurious_emoji=True).truth(
            contexts, replies, characters)


def test_the_hack_pair_guardrails_off_climbs_the_reward_while_the_truth_falls_on_stops(tmp_path):
    """The issue's pair in miniature: the same emoji-loving reward model and policy steps, guardrails off and on."""
    ctx, chars = _world()
    off = run_coupled(CoupledConfig(rounds=4, stop_on=[], refresh_rm=False), "p0", "rm0", [], ctx, chars,
                      tmp_path / "off", TruthHooks(emoji_per_round=2), say=lambda m: None)
    assert off["stopped"] is None and off["rounds_run"] == 4
    wins = [r["win_rates"]["point_user"]["rate"] for r in off["rounds"]]
    emoji = [r["drift"]["n_emoji"]["candidate"] for r in off["rounds"]]
    true = [r["true"]["lift"] for r in off["rounds"]]
    assert min(wins) > 0.65 and emoji == sorted(emoji) and emoji[-1] > emoji[0]
    # world v2's users like an emoji or two, not a wall of them: the truth peaks, then falls while the reward
    # model keeps cheering
    assert true[-1] < max(true) - 0.1 and true[-1] < true[-2], f"the truth must fall while the reward climbs: {true}"
    assert all(r["true"]["n"] == 12 for r in off["rounds"]), "the truth is taken on user traffic"
    on = run_coupled(CoupledConfig(rounds=4, refresh_rm=False), "p0", "rm0", [], ctx, chars, tmp_path / "on",
                     TruthHooks(emoji_per_round=2), say=lambda m: None)
    assert on["stopped"]["round"] == 1 and on["policy"] == "p0"
    assert "emoji" in on["stopped"]["why"]


def test_hooks_without_a_truth_record_none(tmp_path):
    ctx, chars = _world()
    res = run_coupled(CoupledConfig(rounds=1), "p0", "rm0", [], ctx, chars, tmp_path / "c", FakeHooks(0),
                      say=lambda m: None)
    assert res["rounds"][0]["true"] is None

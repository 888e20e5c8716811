"""Prompt selection: fresh near-policy contexts keep the traffic mix and never reuse a trained-on context;
variance-based selection keeps low-scoring and high-spread prompts and drops zero-variance groups."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rm_lab.config import ConfigError
from rm_lab.policy.prompt_selection import (PromptSelectionConfig, fresh_contexts, prompt_stats, select_by_reward,
                                            select_prompts)


def _contexts(n=20):
    return pd.DataFrame({"context_id": [f"c{i:02d}" for i in range(n)], "character_id": "chef",
                         "history": [[{"role": "user", "content": f"q{i}"}] for i in range(n)],
                         "traffic": ["internal" if i % 4 == 0 else "user" for i in range(n)]})


def test_fresh_contexts_skip_used_and_keep_the_traffic_mix():
    ctx = _contexts(20)  # 5 internal, 15 user
    used = [f"c{i:02d}" for i in range(0, 20, 5)]  # c00 (internal), c05, c10, c15 (user)
    got = fresh_contexts(ctx, n=8, used=used, seed=3)
    assert len(got) == 8 and not set(got.context_id) & set(used)
    assert (got.traffic == "internal").sum() == 2  # 4 of the 16 fresh are internal
    odd = fresh_contexts(ctx, n=5, used=used, seed=0)  # quotas 1.25 / 3.75 -> largest remainder: 1 / 4
    assert (odd.traffic == "internal").sum() == 1 and len(odd) == 5
    assert got.equals(fresh_contexts(ctx, n=8, used=used, seed=3))  # reproducible
    assert not got.equals(fresh_contexts(ctx, n=8, used=used, seed=4))
    assert len(fresh_contexts(ctx, used=used)) == 16


def test_near_policy_contexts_are_those_the_policy_served():
    ctx = _contexts(6)
    logs = pd.DataFrame({"context_id": ["c01", "c02", "c03"], "policy": ["gen1", "gen0", "gen1"]})
    got = fresh_contexts(ctx, interactions=logs, policy="gen1", used=["c03"])
    assert got.context_id.tolist() == ["c01"]
    with pytest.raises(ConfigError, match="served by policy 'gen7'"):
        fresh_contexts(ctx, interactions=logs, policy="gen7")


def test_empty_and_exhausted_prompt_sets_are_named():
    with pytest.raises(ConfigError, match="prompts: contexts is empty"):
        fresh_contexts(_contexts(0))
    with pytest.raises(ConfigError, match="all 3 were used by earlier generations"):
        fresh_contexts(_contexts(3), used=["c00", "c01", "c02"])
    with pytest.raises(ConfigError, match="empty prompt set"):
        select_by_reward(_contexts(0), pd.DataFrame(), lambda c, ch, n: [], lambda c, r, ch: [],
                         PromptSelectionConfig())


def test_prompt_stats_and_rules():
    ids = ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"] * 3
    scores = [0.1, 0.2, 0.3,  # a: low mean, small spread
              0.9, 0.9, 0.9,  # b: high, no spread -> never kept
              0.0, 1.0, 2.0,  # c: mid mean, big spread
              0.8, 0.9, 1.0]  # d: high mean, small spread
    st = prompt_stats(ids, scores)
    assert st.context_id.tolist() == list("abcd") and st.n.tolist() == [3] * 4
    assert np.allclose(st["std"], [0.1, 0.0, 1.0, 0.1])
    pick = lambda rule, keep=0.5: set(select_prompts(st, PromptSelectionConfig(rule=rule, keep=keep))  # noqa: E731
                                      .query("selected").context_id)
    assert pick("low", 0.25) == {"a"}
    assert pick("variance", 0.25) == {"c"}
    assert pick("low_or_variance") == {"a", "c"}
    assert pick("all", 1.0) == {"a", "c", "d"}  # the zero-spread prompt is dropped whatever the rule
    table = select_prompts(st, PromptSelectionConfig(rule="low_or_variance"))
    assert table.set_index("context_id").loc["b", "reason"] == "zero_std"
    assert set(table.set_index("context_id").loc[["a", "c"], "reason"]) == {"low", "variance"}
    kept_b = select_prompts(st, PromptSelectionConfig(rule="all", keep=1.0, drop_zero_std=False))
    assert kept_b.selected.all()


def test_select_by_reward_composes_sampler_and_reward():
    ctx = _contexts(4)
    spread = {"c00": [0, 0], "c01": [0, 5], "c02": [1, 1], "c03": [2, 3]}

    def sample(contexts, characters, n):
        return [[f"{cid}|{k}" for k in range(n)] for cid in contexts.context_id]

    def reward(rows, replies, characters):
        assert rows.context_id.tolist() == [r.split("|")[0] for r in replies]  # rows aligned with replies
        return np.array([spread[r.split("|")[0]][int(r.split("|")[1])] for r in replies], float)

    kept, table = select_by_reward(ctx, pd.DataFrame(), sample, reward,
                                   PromptSelectionConfig(rule="variance", keep=0.25, n_samples=2))
    assert kept.context_id.tolist() == ["c01"]
    assert table.selected.sum() == 1 and len(table) == 4


def test_bad_config_is_named():
    with pytest.raises(ConfigError, match="PromptSelectionConfig.n_samples"):
        PromptSelectionConfig(n_samples=1)
    with pytest.raises(ConfigError, match="PromptSelectionConfig.keep"):
        PromptSelectionConfig(keep=0.0)
    with pytest.raises(ConfigError, match="PromptSelectionConfig.rule"):
        PromptSelectionConfig(rule="high")

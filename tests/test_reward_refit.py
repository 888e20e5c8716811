"""Head refit (rm_lab.reward.refit): pinned to scikit-learn's LogisticRegression, the penalty choice
follows the signal, binomial rows expand exactly, the grouped folds keep a conversation together,
and train-rm writes what it chose."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from rm_helpers import tiny_world
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from rm_lab.reward.data import context_groups, split_contexts
from rm_lab.reward.model import RewardModel, RewardNet
from rm_lab.reward.refit import DEFAULT_CS, binomial_rows, choose_c, refit_heads
from rm_lab.reward.train import TrainRMConfig, train_reward_model


def _data(n=400, d=12, signal=1.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.01, 3, size=d)  # very different scales: the scaler matters
    logit = signal * (X[:, 0] / X[:, 0].std() - X[:, 1] / X[:, 1].std())
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(float)
    return X.astype(np.float32), y


def test_binomial_rows_expand_counts():
    rows, y, w = binomial_rows(np.array([0, 3, 1, 2.0]), np.array([0, 1, 1, 0.0]))
    got = sorted(zip(rows.tolist(), y.tolist(), w.tolist()))
    assert got == [(1, 0.0, 2.0), (1, 1.0, 1.0), (2, 1.0, 1.0), (3, 0.0, 2.0)]


def test_refit_with_no_trunk_is_sklearn_logistic_regression():
    X, y = _data()
    style = np.zeros((len(X), 2), np.float32)
    net = RewardNet(X.shape[1], ["continue", "preference"], n_style=2, n_layers=0)
    before = net.heads["preference"].weight.detach().clone()
    counts = {"continue_n": np.ones(len(X)), "continue_k": y}
    groups = np.arange(len(X)) // 4
    res = refit_heads(net, ["continue"], X, style, counts, groups)
    assert len(res) == 1 and res[0].C in DEFAULT_CS and res[0].n_rows == len(X)
    # the reference: StandardScaler + LogisticRegression(C) on the same inputs (style columns are constant)
    full = np.c_[X, style]
    sc = StandardScaler().fit(full)
    ref = LogisticRegression(C=res[0].C, max_iter=2000).fit(sc.transform(full), y).decision_function(sc.transform(full))
    with torch.no_grad():
        got = net(torch.tensor(X), torch.tensor(style))["continue"].numpy()
    assert np.abs(got - ref).max() < 1e-3
    assert torch.equal(net.heads["preference"].weight, before)  # only the asked-for binary head moves


def test_penalty_follows_the_signal():
    groups = np.arange(400) // 4
    X, y = _data(signal=2.0)
    C_sig, cv_sig = choose_c(X, y, np.ones(len(y)), groups)
    Xn, yn = _data(signal=0.0, seed=3)
    C_noise, cv_noise = choose_c(Xn, yn, np.ones(len(yn)), groups)
    assert C_noise < C_sig  # no signal: shrink hard
    assert cv_sig["auc"] > 0.75 and abs(cv_noise["auc"] - 0.5) < 0.1
    C_auc, _ = choose_c(X, y, np.ones(len(y)), groups, metric="auc")
    assert C_auc in DEFAULT_CS
    with pytest.raises(ValueError, match="refit metric"):
        choose_c(X, y, np.ones(len(y)), groups, metric="brier")


def test_one_class_head_keeps_its_weights_and_bootstrap_varies():
    X, y = _data(n=200)
    style = np.zeros((len(X), 1), np.float32)
    net = RewardNet(X.shape[1], ["continue"], n_style=1, n_layers=0)
    w0 = net.heads["continue"].weight.detach().clone()
    assert refit_heads(net, ["continue"], X, style, {"continue_n": np.ones(200), "continue_k": np.ones(200)},
                       np.arange(200)) == []
    # two groups, each of one class: no fold trains on both classes
    y2, g2 = np.r_[np.ones(100), np.zeros(100)], np.r_[np.zeros(100), np.ones(100)]
    assert choose_c(X, y2, np.ones(200), g2) == (None, {})
    assert refit_heads(net, ["continue"], X, style, {"continue_n": np.ones(200), "continue_k": y2}, g2) == []
    # four single-class groups: every training side has both classes, no held-out side does -> log loss
    y4, g4 = np.repeat([1.0, 0.0, 1.0, 0.0], 50), np.repeat([0, 1, 2, 3], 50)
    C4, cv4 = choose_c(X, y4, np.ones(200), g4, n_folds=4, metric="auc")
    assert C4 == choose_c(X, y4, np.ones(200), g4, n_folds=4)[0] and np.isnan(cv4["auc"])
    assert torch.equal(net.heads["continue"].weight, w0)
    counts = {"continue_n": np.ones(200), "continue_k": y}
    a, b, c = (RewardNet(X.shape[1], ["continue"], n_style=1, n_layers=0) for _ in range(3))
    refit_heads(a, ["continue"], X, style, counts, np.arange(200) // 2, seed=1, bootstrap=True)
    refit_heads(b, ["continue"], X, style, counts, np.arange(200) // 2, seed=2, bootstrap=True)
    refit_heads(c, ["continue"], X, style, counts, np.arange(200) // 2, seed=1, bootstrap=True)
    assert not torch.equal(a.heads["continue"].weight, b.heads["continue"].weight)
    assert torch.equal(a.heads["continue"].weight, c.heads["continue"].weight)


def test_conversation_groups_fall_back_to_the_context():
    ctx = pd.DataFrame({"context_id": ["a1", "a2", "b1", "x"], "character_id": ["c", "c", "d", "d"],
                        "conversation_id": ["A", "A", "B", None]})
    assert context_groups(ctx, "context") is None
    assert context_groups(ctx, "character") == {"a1": "c", "a2": "c", "b1": "d", "x": "d"}
    assert context_groups(ctx, "conversation") == {"a1": "A", "a2": "A", "b1": "B", "x": "x"}
    assert context_groups(ctx.drop(columns="conversation_id"), "conversation") == {c: c for c in ctx.context_id}
    g = context_groups(ctx, "conversation")
    for seed in range(20):  # a conversation is never split across the held-out line
        tr, va = split_contexts(ctx.context_id, 0.5, seed, g)
        assert ("a1" in va) == ("a2" in va) and sorted(tr + va) == sorted(ctx.context_id)


def test_train_rm_with_head_refit(backbone, tmp_path):
    world = tiny_world(seed=2, n=60)
    cfg = TrainRMConfig(backbone=str(backbone), epochs=2, hidden=16, batch_size=32, pairwise=False,
                        cache_dir=str(tmp_path / "cache"), val_fraction=0.2, max_length=96, head_refit=True,
                        refit_folds=3, val_split="character")
    train_reward_model(cfg, tmp_path / "r", records=world, say=lambda *_: None)
    chosen = json.loads((tmp_path / "r" / "checkpoints" / "m0" / "refit.json").read_text())
    assert {r["head"] for r in chosen} <= {"continue", "thumb_up", "thumb_down", "regenerate", "followed", "violation"}
    assert chosen and all(r["C"] in DEFAULT_CS and r["n_groups"] >= 2 for r in chosen)
    rm = RewardModel.load(tmp_path / "r")
    it = world["interaction"]
    ctx = world["context"].set_index("context_id").loc[it.context_id].reset_index()
    p = rm.score(ctx, it.response, world["character"])["p_continue"]
    assert np.isfinite(p).all() and p.std() > 0
    with pytest.raises(ValueError, match="head_refit needs train_mode=frozen"):
        TrainRMConfig(head_refit=True, train_mode="full")
    with pytest.raises(ValueError, match="refit_metric"):
        TrainRMConfig(refit_metric="brier")

"""The arm_logit head: its likelihood against independent references, its declaration rules, and training
it through train-rm on A/B arms whose winning text is known."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from rm_lab.config import ConfigError
from rm_lab.reward.arm_logit import arm_logit_nll, arm_logit_nll_np, group_codes
from rm_lab.reward.heads import BUILTIN, HeadSpec, declare


def _tiny(seed=0):
    """6 experiments with 2-4 arms, one feature per arm, counts drawn from a conditional logit."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(6):
        for j in range(int(rng.integers(2, 5))):
            x = rng.normal(size=2)
            n = int(rng.integers(300, 3000))
            rate = 0.02 * math.exp(0.8 * x[0] - 0.5 * x[1] + 0.3 * g)
            rows.append((g, x[0], x[1], n, int(rng.binomial(n, min(rate, 0.9)))))
    return pd.DataFrame(rows, columns=["g", "x0", "x1", "n", "k"])


def _t(a):
    return torch.tensor(np.asarray(a, float), dtype=torch.float64)


def test_loss_is_the_multinomial_log_likelihood_of_clicks_given_their_total():
    df = _tiny()
    eta = np.random.default_rng(1).normal(size=len(df))
    got = float(arm_logit_nll(_t(eta), _t(df.k), _t(df.n), torch.tensor(df.g.to_numpy())))
    ll = 0.0
    for _, d in df.groupby("g"):
        w = d.n.to_numpy() * np.exp(eta[d.index])
        k = d.k.to_numpy()
        # scipy's multinomial log pmf, less its coefficient (constant in eta)
        coef = math.lgamma(k.sum() + 1) - sum(math.lgamma(v + 1) for v in k)
        ll += stats.multinomial.logpmf(k, k.sum(), w / w.sum()) - coef
    assert got == pytest.approx(-ll / df.k.sum(), rel=1e-10)
    assert got == pytest.approx(arm_logit_nll_np(eta, df.k, df.n, df.g), rel=1e-10)


def test_fit_matches_statsmodels_poisson_with_experiment_fixed_effects():
    """The conditional-logit maximiser equals a Poisson GLM's with one intercept per experiment and offset
    log(impressions) (the fixed effects are what conditioning on each test's total removes)."""
    import statsmodels.api as sm

    df = _tiny(2)
    X = np.c_[pd.get_dummies(df.g).to_numpy(float), df[["x0", "x1"]].to_numpy()]
    ref = sm.GLM(df.k.to_numpy(float), X, family=sm.families.Poisson(), offset=np.log(df.n.to_numpy(float))).fit()
    beta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    feats, k, n, g = _t(df[["x0", "x1"]].to_numpy()), _t(df.k), _t(df.n), torch.tensor(df.g.to_numpy())
    opt = torch.optim.LBFGS([beta], lr=1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = arm_logit_nll(feats @ beta, k, n, g)
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(beta.detach().numpy(), ref.params[-2:], rtol=1e-5, atol=1e-7)


def test_within_experiment_only_shifts_and_masked_rows_change_nothing():
    df = _tiny(3)
    eta, k, n, g = _t(np.random.default_rng(0).normal(size=len(df))), _t(df.k), _t(df.n), torch.tensor(df.g.values)
    base = float(arm_logit_nll(eta, k, n, g))
    shift = _t(np.arange(6)[df.g.to_numpy()] * 3.0)  # a popular story: every arm of it shifted
    assert float(arm_logit_nll(eta + shift, k, n, g)) == pytest.approx(base, rel=1e-12)
    # a masked row (n == 0) with any score and count adds nothing; order and group labels do not matter
    eta2, k2, n2, g2 = (torch.cat([t, torch.tensor([v], dtype=t.dtype)]) for t, v in
                        ((eta, 50.0), (k, 7.0), (n, 0.0), (g, 2)))
    assert float(arm_logit_nll(eta2, k2, n2, g2)) == pytest.approx(base, rel=1e-12)
    perm = torch.randperm(len(df), generator=torch.Generator().manual_seed(0))
    assert float(arm_logit_nll(eta[perm], k[perm], n[perm], (5 - g)[perm])) == pytest.approx(base, rel=1e-12)
    # a larger difference between arms in the direction of the clicks lowers the loss
    better = eta + _t(np.log((df.k + 0.5) / df.n) - np.log((df.k + 0.5) / df.n).mean())
    assert float(arm_logit_nll(better, k, n, g)) < base


def test_single_arm_groups_carry_no_information_and_gradients_are_finite():
    eta = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    loss = arm_logit_nll(eta, _t([5, 0, 9]), _t([100, 50, 80]), torch.tensor([0, 1, 2]))
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert torch.isfinite(eta.grad).all() and float(eta.grad.abs().max()) < 1e-12
    assert float(arm_logit_nll(eta.detach(), _t([0, 0, 0]), _t([1, 1, 1]), torch.tensor([0, 0, 1]))) == 0.0


def test_group_codes():
    assert group_codes(["b", "a", "b", "c"]).tolist() == [0, 1, 0, 2]


def test_registry_entry_and_declarations():
    spec = BUILTIN["ab_engaged"]
    assert spec.likelihood == "arm_logit" and spec.record == "ab_arm" and spec.is_grouped and not spec.is_pairwise
    assert spec.transform(np.array([0.5, -1.0]), {})["ab_engaged"].tolist() == [0.5, -1.0]
    d = declare("ctr", {"kind": "arm_logit"})
    assert d.record == "ab_arm" and d.col == "ctr"
    with pytest.raises(ConfigError, match="arm_logit"):
        declare("clicks", {"kind": "binomial", "record": "ab_arm"})
    with pytest.raises(ConfigError, match="arm_logit"):
        declare("ctr", {"kind": "arm_logit", "record": "label"})
    with pytest.raises(ConfigError, match="arm_logit"):
        HeadSpec("x", "arm_logit")  # record defaults to label


def _arm_records(tmp_path):
    from rm_lab.sources import upworthy

    df = pd.DataFrame({
        "clickability_test_id": ["t1"] * 3 + ["t2"] * 4 + ["t3"] * 2,
        "headline": ["A", "B", "B", "C", "D", "E", "F", "G", "H"],
        "impressions": [100, 110, 120, 90, 95, 80, 85, 70, 75], "clicks": [5, 7, 6, 3, 4, 2, 9, 1, 8],
        "lede": ["<p>x</p>"] * 9, "test_week": [201401] * 9})
    p = tmp_path / "u.parquet"
    df.to_parquet(p)
    return upworthy.load(p)


def test_arms_become_items_of_their_experiment_and_batches_keep_tests_whole(tmp_path):
    from rm_lab.reward.data import build_reward_data
    from rm_lab.reward.train import UnitCollator, unit_loader

    rec = _arm_records(tmp_path)
    data = build_reward_data(rec, ["ab_engaged"])
    items = data.items
    assert len(items) == 8  # the two 'B' arms of t1 (same text) are one item with summed counts
    b = items[(items.context_id == "t1") & (items.response == "B")].iloc[0]
    assert (b["ab_engaged_n"], b["ab_engaged_k"]) == (230, 13)
    data.items["feat_row"] = np.arange(len(items))
    col = UnitCollator(data, torch.zeros(len(items), 3), np.zeros((len(items), 2), np.float32), ["ab_engaged"])
    assert col.n_units == 3  # one unit per experiment
    seen = []
    for batch in unit_loader(col, batch_size=1, seed=0, shuffle=True):
        n = batch["ab_engaged_n"].numpy()
        assert len(set(batch["group"].tolist())) == 1 and (n > 0).all()
        seen.append(int((n > 0).sum()))
    assert sorted(seen) == [2, 2, 4]


def test_arms_of_an_experiment_without_a_context_are_an_error(tmp_path):
    from rm_lab.reward.data import build_reward_data
    from rm_lab.schema import RecordError, Records

    rec = _arm_records(tmp_path)
    ctx = rec["context"][rec["context"].context_id != "t2"].reset_index(drop=True)
    with pytest.raises(RecordError) as e:
        build_reward_data(Records({**rec.frames, "context": ctx}), ["ab_engaged"])
    assert e.value.field == "experiment_id" and e.value.value == "t2"

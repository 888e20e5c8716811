"""Reward-model core: losses against hand-computed values, masking, antisymmetry of the pairwise
model, batch/padding invariance, seed determinism, ensembles, partial unfreezing, data assembly."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from rm_helpers import tiny_world

from rm_lab.config import ConfigError
from rm_lab.reward.data import build_reward_data, format_inputs
from rm_lab.reward.embed_cache import EmbeddingCache
from rm_lab.reward.model import RewardModel, RewardNet, binomial_nll, bt_loss, multitask_loss, poisson_nll
from rm_lab.reward.pairwise import PairwiseNet
from rm_lab.reward.train import TrainRMConfig, train_reward_model
from rm_lab.schema import Records


@pytest.fixture(scope="module")
def world():
    return tiny_world(seed=0, n=40)


def _cfg(backbone, tmp, **kw) -> TrainRMConfig:
    base = dict(backbone=str(backbone), epochs=3, pairwise_epochs=2, hidden=32, batch_size=16,
                cache_dir=str(tmp / "cache"), val_fraction=0.25, max_length=128)
    base.update(kw)
    return TrainRMConfig(**base)


def _say(_):
    pass


# ---------------------------------------------------------------------------------------- losses

def test_bt_loss_hand_computed():
    sc, sr = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.5])
    m = torch.tensor([0.0, 0.5])
    # d = [1, -1]: -log sigmoid(1) = 0.313262, -log sigmoid(-1) = 1.313262
    assert bt_loss(sc, sr, m).item() == pytest.approx((0.3132617 + 1.3132617) / 2, abs=1e-6)
    assert bt_loss(sc, sr).item() == pytest.approx((0.3132617 + -math.log(1 / (1 + math.exp(0.5)))) / 2, abs=1e-6)


def test_binomial_nll_hand_computed_and_masked():
    logit = torch.tensor([0.0, math.log(3.0), 5.0])  # p = 0.5, 0.75, (masked row)
    k, n = torch.tensor([3.0, 1.0, 1.0]), torch.tensor([4.0, 1.0, 0.0])
    want = (4 * math.log(2) - math.log(0.75)) / 5  # per trial over 5 trials
    assert binomial_nll(logit, k, n).item() == pytest.approx(want, abs=1e-6)
    # the masked row's logit neither changes the loss nor gets a gradient
    lg = logit.clone().requires_grad_(True)
    binomial_nll(lg, k, n).backward()
    assert lg.grad[2].item() == 0.0 and lg.grad[0].item() != 0.0
    assert binomial_nll(torch.tensor([0.0, math.log(3.0), -9.0]), k, n).item() == pytest.approx(want, abs=1e-6)


def test_poisson_nll_hand_computed():
    log_rate = torch.tensor([math.log(2.0), 0.0])
    y, n = torch.tensor([4.0, 7.0]), torch.tensor([3.0, 0.0])  # row 2 masked
    # mu = n * rate = 6: nll = 6 - 4 log 6, per trial / 3
    assert poisson_nll(log_rate, y, n).item() == pytest.approx((6 - 4 * math.log(6)) / 3, abs=1e-5)


def _batch(n_items=4):
    b = {"pair_c": torch.tensor([0]), "pair_r": torch.tensor([1]), "pair_margin": torch.tensor([0.0])}
    for h in ("continue", "thumb_up", "thumb_down", "regenerate", "followed", "violation", "depth"):
        b[f"{h}_n"], b[f"{h}_k"] = torch.zeros(n_items), torch.zeros(n_items)
    b["continue_n"] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    b["continue_k"] = torch.tensor([0.0, 0.0, 1.0, 0.0])
    return b


def test_multitask_loss_masks_heads_and_rows():
    out = {"preference": torch.tensor([2.0, 1.0, 0.0, 0.0]), "continue": torch.tensor([9.0, -9.0, 0.0, 0.0]),
           "depth": torch.zeros(4)}
    total, parts = multitask_loss(out, _batch(), {"continue": 2.0})
    assert set(parts) == {"preference", "continue"}  # depth has no labels in this batch
    bt = -math.log(1 / (1 + math.exp(-1.0)))
    assert parts["preference"].item() == pytest.approx(bt, abs=1e-6)
    assert parts["continue"].item() == pytest.approx(math.log(2), abs=1e-6)  # rows 0, 1 masked
    assert total.item() == pytest.approx(bt + 2 * math.log(2), abs=1e-6)
    # no labels at all: a zero loss that still backpropagates
    b = _batch()
    b["pair_c"], b["pair_r"], b["continue_n"] = torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), torch.zeros(4)
    z = torch.zeros(4, requires_grad=True)
    total, parts = multitask_loss({"preference": z, "continue": z * 2}, b)
    assert parts == {} and total.item() == 0.0
    total.backward()


def test_reward_net_heads_and_style_standardisation():
    net = RewardNet(8, ["preference", "continue"], n_style=3, hidden=16)
    style = np.array([[0, 10, 1], [2, 30, 1], [4, 50, 1]], np.float32)
    net.set_style_stats(style)
    assert torch.allclose(net.style_mean, torch.tensor([2.0, 30.0, 1.0]))
    # a feature constant in training carries no information: it standardises to 0 on any row (infinite
    # scale, rm_lab.reward.model.RewardNet.set_style_stats; tests/test_style_scale.py), never divided by 0
    z = (torch.tensor([[0.0, 30.0, 1.0], [0.0, 30.0, 7.0]]) - net.style_mean) / net.style_std
    assert torch.equal(z[:, 2], torch.zeros(2)) and z[0, 0].item() == pytest.approx(-2 / np.std([0, 2, 4]))
    out = net(torch.randn(3, 8), torch.tensor(style))
    assert set(out) == {"preference", "continue"} and out["preference"].shape == (3,)
    assert all(bool(torch.isfinite(v).all()) for v in out.values())


# ---------------------------------------------------------------------------------------- pairwise

def test_pairwise_model_is_antisymmetric():
    torch.manual_seed(0)
    net = PairwiseNet(16, 5, hidden=32).eval()
    ea, eb = np.random.default_rng(0).normal(size=(2, 50, 16))
    sa, sb = np.random.default_rng(1).normal(size=(2, 50, 5))
    p_ab, p_ba = net.prob(ea, sa, eb, sb), net.prob(eb, sb, ea, sa)
    assert np.abs(p_ab + p_ba - 1).max() < 1e-6
    assert np.abs(net.prob(ea, sa, ea, sa) - 0.5).max() < 1e-6  # a reply against itself is a coin flip
    assert p_ab.std() > 1e-3  # not trivially 0.5 everywhere


# ---------------------------------------------------------------------------------------- data

def test_format_truncates_context_from_the_left(backbone):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(backbone))
    hist = "user: " + " ".join(f"w{i}" for i in range(300)) + " | user: the latest question"
    [text] = format_inputs(["Captain Salt. A pirate."], [hist], ["Ahoy matey 😀"], tok, max_length=64)
    assert text.startswith("[CHAR] Captain Salt. A pirate. [CTX]")
    assert text.endswith("[REPLY] Ahoy matey 😀")  # the reply is kept whole, emoji included
    assert "the latest question" in text and "w0 " not in text  # newest turns kept, oldest cut
    assert len(tok(text)["input_ids"]) <= 64


def test_repeated_rows_aggregate_to_binomial_counts(world):
    it = world["interaction"]
    dup = pd.concat([it.iloc[:1], it.iloc[:1].assign(continued=not bool(it["continued"].iat[0]))])
    rec = Records({**world.frames, "interaction": pd.concat([dup, it.iloc[1:]], ignore_index=True)})
    data = build_reward_data(rec)
    row = data.items[(data.items.context_id == it.context_id.iat[0]) & (data.items.response == it.response.iat[0])]
    assert row["continue_n"].item() == 2 and row["continue_k"].item() == 1
    assert set(data.heads) >= {"preference", "continue", "depth", "followed", "violation"}
    assert len(data.pairs) == len(world["preference"])


def test_embedding_cache_computes_once(tmp_path):
    calls = []

    def compute(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], np.float32)

    c = EmbeddingCache(tmp_path, "bb-1")
    a = c.get(["x", "yy", "x"], compute)
    assert calls == [["x", "yy"]] and a[:, 0].tolist() == [1, 2, 1]
    c2 = EmbeddingCache(tmp_path, "bb-1")  # a fresh process reads the shard from disk
    assert c2.get(["yy", "zzz"], compute)[:, 0].tolist() == [2, 3] and calls[-1] == ["zzz"]
    assert not [p for p in (tmp_path / "bb-1").iterdir() if p.suffix != ".npz"]  # no temp files left
    EmbeddingCache(tmp_path, "bb-2").get(["x"], compute)  # another backbone never reads bb-1 vectors
    assert calls[-1] == ["x"]


# ---------------------------------------------------------------------------------------- training

def test_invariance_determinism_and_ensemble(backbone, world, tmp_path):
    cfg = _cfg(backbone, tmp_path, n_ensemble=2)
    m = train_reward_model(cfg, tmp_path / "a", records=world, say=_say)
    assert m["members"][0]["epochs_done"] == 3
    rm = RewardModel.load(tmp_path / "a")
    it = world["interaction"]
    ctx = world["context"].set_index("context_id").loc[it.context_id].reset_index()
    s1 = rm.score(ctx, it.response, world["character"], batch_size=1)
    s64 = rm.score(ctx, it.response, world["character"], batch_size=64)
    assert set(s64) >= {"score", "score_std", "p_continue", "p_continue_std", "depth", "p_followed"}
    for k in s64:
        assert np.abs(s1[k] - s64[k]).max() < 1e-5, k
    # a row scored alone (no padding) matches the same row inside a padded batch
    one = rm.score(ctx.iloc[[3]], it.response.iloc[[3]], world["character"])
    assert abs(one["score"][0] - s64["score"][3]) < 1e-5
    # the ensemble mean/std are over members that differ
    assert s64["score_std"].mean() > 1e-4
    singles = [RewardModel(rm.cfg, [net], rm.tokenizer, rm.encoders).score(ctx, it.response, world["character"])
               for net in rm.members]
    assert np.abs(np.mean([s["score"] for s in singles], 0) - s64["score"]).max() < 1e-5
    assert np.abs(np.std([s["score"] for s in singles], 0) - s64["score_std"]).max() < 1e-5
    # same seed -> same weights; another seed -> other weights
    # (the pairwise model does not touch model.safetensors, so b and c skip it)
    train_reward_model(_cfg(backbone, tmp_path, n_ensemble=2, pairwise=False), tmp_path / "b", records=world, say=_say)
    train_reward_model(_cfg(backbone, tmp_path, seed=5, pairwise=False), tmp_path / "c", records=world, say=_say)
    from safetensors.torch import load_file

    wa, wb, wc = (load_file(str(tmp_path / d / "model.safetensors")) for d in "abc")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    k0 = "m0.net.heads.preference.weight"
    assert not torch.equal(wa[k0], wc[k0])
    assert (tmp_path / "a" / "pairwise.safetensors").exists() and rm.pairwise is not None
    p = rm.compare(ctx, it.response, it.response.iloc[::-1], world["character"])
    assert p.shape == (len(it),) and ((p >= 0) & (p <= 1)).all()


def test_top_k_unfreezing_trains_only_top_layers(backbone, world, tmp_path):
    from transformers import AutoModel

    cfg = _cfg(backbone, tmp_path, train_mode="top_k", unfreeze_top_k=1, epochs=1, pairwise=False,
               heads=["preference", "continue"], encoder_lr=1e-2)
    train_reward_model(cfg, tmp_path / "k", records=world, say=_say)
    rm = RewardModel.load(tmp_path / "k")
    before = AutoModel.from_pretrained(str(backbone)).state_dict()
    after = rm.encoders[0].state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("encoder.layer.2.") for k in changed), sorted(changed)[:5]
    assert rm.heads == ["preference", "continue"]
    it = world["interaction"].iloc[:12]
    ctx = world["context"].set_index("context_id").loc[it.context_id].reset_index()
    s1 = rm.score(ctx, it.response, world["character"], batch_size=1)
    s8 = rm.score(ctx, it.response, world["character"], batch_size=8)
    assert np.abs(s1["score"] - s8["score"]).max() < 1e-5


def test_full_finetuning_changes_bottom_layers(backbone, world, tmp_path):
    cfg = _cfg(backbone, tmp_path, train_mode="full", epochs=1, pairwise=False, heads=["preference"],
               encoder_lr=1e-2)
    train_reward_model(cfg, tmp_path / "f", records=world, say=_say)
    from transformers import AutoModel

    before = AutoModel.from_pretrained(str(backbone)).state_dict()
    after = RewardModel.load(tmp_path / "f").encoders[0].state_dict()
    assert not torch.equal(before["encoder.layer.0.attention.self.query.weight"],
                           after["encoder.layer.0.attention.self.query.weight"])


def test_bad_head_and_backbone_are_named(backbone, world, tmp_path):
    with pytest.raises(ConfigError, match="depth.*interaction.depth"):
        rec = Records({k: v for k, v in world.frames.items() if k != "interaction"})
        train_reward_model(_cfg(backbone, tmp_path, heads=["preference", "depth"]), tmp_path / "x", records=rec,
                           say=_say)
    with pytest.raises(ConfigError, match="unknown.*'likes'"):
        train_reward_model(_cfg(backbone, tmp_path, heads=["likes"]), tmp_path / "x", records=world, say=_say)
    with pytest.raises(ConfigError, match="no_such_encoder"):
        train_reward_model(_cfg(tmp_path / "no_such_encoder", tmp_path), tmp_path / "x", records=world, say=_say)

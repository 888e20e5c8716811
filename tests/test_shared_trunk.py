"""Several sources at once: a shared trunk that every source's head reads (skip=true), batches of one source
each (source_batches), labels balanced across the values of a record column (balance)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from rm_helpers import tiny_world
from rm_lab import config as cfgmod
from rm_lab.config import ConfigError
from rm_lab.reward import store
from rm_lab.reward.crossval import as_source
from rm_lab.reward.data import build_reward_data
from rm_lab.reward.model import RewardModel, RewardNet, multitask_loss
from rm_lab.reward.multisource import SourceBatches, balance_labels, context_sources, unit_sources
from rm_lab.reward.train import TrainRMConfig, UnitCollator, train_reward_model
from rm_lab.schema import Records


def _two_sources(n: int = 16):
    a = tiny_world(0, n)
    wb = dict(tiny_world(1, n).frames)  # another world: its characters renamed, as their cards differ from a's
    wb["character"] = wb["character"].assign(character_id="b-" + wb["character"]["character_id"])
    wb["context"] = wb["context"].assign(character_id="b-" + wb["context"]["character_id"])
    return [as_source("world_a", a), as_source("world_b", Records(wb))]


def _say(*_):
    pass


def test_a_gradient_from_one_source_reaches_the_trunk_the_other_sources_head_reads():
    sources = _two_sources()
    data = build_reward_data(sources, ["continue"])
    assert set(data.heads) == {"continue@world_a", "continue@world_b"}
    data.items["feat_row"] = np.arange(len(data.items))
    torch.manual_seed(0)
    dim = 6
    feats = torch.randn(len(data.items), dim)
    net = RewardNet(dim, [data.spec(h) for h in data.heads], n_style=0, hidden=8, n_layers=1, skip=True)
    # every head reads the trunk's 8 features and the 6 inputs
    assert all(h.weight.shape == (1, 8 + dim) for h in net.heads.values())
    b_ctx = data.items.loc[data.items["context_id"].str.startswith("ctx-1-"), "context_id"].unique()
    col = UnitCollator(data.subset(b_ctx), feats, np.zeros((len(data.items), 0)), data.heads)
    batch = col(list(range(col.n_units)))
    loss, parts = multitask_loss(net(batch["emb"], batch["style"]), batch, None, net)
    assert set(parts) == {"continue@world_b"}  # only b's labels in this batch
    a_rows = torch.as_tensor(~data.items["context_id"].str.startswith("ctx-1-").to_numpy())
    net.eval()
    before = net(feats[a_rows], torch.zeros(int(a_rows.sum()), 0))["continue@world_a"].detach().clone()
    net.train()
    loss.backward()
    trunk_grad = net.trunk[0].weight.grad
    assert trunk_grad is not None and float(trunk_grad.abs().sum()) > 0  # b's loss reaches the shared trunk
    assert net.heads["continue@world_a"].weight.grad is None  # ... and never a's own head
    with torch.no_grad():
        for p in net.trunk.parameters():
            p -= 0.5 * p.grad
    net.eval()
    after = net(feats[a_rows], torch.zeros(int(a_rows.sum()), 0))["continue@world_a"]
    assert not torch.allclose(before, after)  # so a's head output moved with what b's labels taught the trunk


def test_skip_needs_a_trunk_and_is_a_config_key():
    with pytest.raises(ConfigError, match="skip=true.*n_layers >= 1"):
        cfgmod.load(TrainRMConfig, "train_rm", ["skip=true", "n_layers=0"])
    with pytest.raises(ConfigError, match="source_batches"):
        cfgmod.load(TrainRMConfig, "train_rm", ["source_batches=sometimes"])
    with pytest.raises(ConfigError, match="skip=true"):
        RewardNet(4, ["continue"], n_style=0, n_layers=0, skip=True)
    cfg = cfgmod.load(TrainRMConfig, "train_rm", ["skip=true", "n_layers=1", "balance=source_file"])
    assert cfg.skip and cfg.balance == "source_file" and cfg.source_batches == "per_source"


def test_source_batches_cut_each_source_alone_and_depend_only_on_seed_and_epoch():
    src = np.array(["a"] * 10 + ["b"] * 53, dtype=object)
    s = SourceBatches(src, 8, seed=3)
    batches = s.batches()
    assert len(batches) == len(s) == 2 + 7  # ceil(10 / 8) + ceil(53 / 8): as each source alone
    assert all(len(set(src[b])) == 1 for b in batches)  # one source per batch
    assert sorted(u for b in batches for u in b) == list(range(63))  # every unit once an epoch
    assert SourceBatches(src, 8, seed=3).batches() == batches  # the same on a resumed run
    s.set_epoch(1)
    assert s.batches() != batches
    assert s.sampler is s  # Lightning's set_epoch reaches a batch sampler through .sampler


def test_context_sources_only_for_several_sources():
    one = tiny_world(0, 6)
    assert context_sources(one["context"]) is None
    assert context_sources(as_source("w", one).records["context"]) is None
    from rm_lab.reward.data import merge_sources

    m = context_sources(merge_sources(_two_sources(6))["context"])
    assert set(m.values()) == {"world_a", "world_b"}


def test_balance_labels_gives_every_value_the_same_label_total():
    it = pd.DataFrame({"context_id": [f"c{i}" for i in range(4)], "response": ["r"] * 4,
                       "continued": [True, False, True, True], "source_file": ["x", "x", "x", "y"]})
    lab = pd.DataFrame({"context_id": ["c0", "c3"], "response": ["r", "r"], "name": "rating", "value": [4.0, 2.0],
                        "source_file": ["x", "y"]})
    items = pd.DataFrame({"context_id": [f"c{i}" for i in range(4)], "response": ["r"] * 4,
                          "continue_n": [1.0, 1, 1, 1], "continue_k": [1.0, 0, 1, 1],
                          "rating_n": [1.0, 0, 0, 1], **{f"rating_c{j}": [0.0] * 4 for j in range(5)}})
    items.loc[0, "rating_c3"], items.loc[3, "rating_c1"] = 1.0, 1.0
    from rm_lab.reward.heads import BUILTIN, declare

    specs = {"continue": BUILTIN["continue"], "rating": declare("rating", {"kind": "ordinal", "levels": 5})}
    f = balance_labels(items, specs, Records({"interaction": it, "label": lab}), "source_file")
    # continue: x holds 3 labels, y 1; each is brought to the mean, 2
    assert f["continue"] == pytest.approx({"x": 2 / 3, "y": 2.0})
    assert items["continue_n"].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])
    assert items["continue_k"].tolist() == pytest.approx([2 / 3, 0, 2 / 3, 2.0])
    assert f["rating"] == {"x": 1.0, "y": 1.0} and items["rating_n"].tolist() == [1.0, 0, 0, 1]  # already balanced
    lab.loc[0, "source_file"] = "y"  # both ratings now from y: one value, nothing to balance
    items.loc[:, "rating_n"] = [1.0, 0, 0, 1]
    assert "rating" not in balance_labels(items, specs, Records({"interaction": it, "label": lab}), "source_file")
    with pytest.raises(ConfigError, match="balance='nope'.*no record.*column 'nope'"):
        balance_labels(items, specs, Records({"interaction": it, "label": lab}), "nope")


def _cfg(backbone, tmp_path, **kw):
    base = dict(backbone=str(backbone), epochs=1, hidden=8, n_layers=1, batch_size=16, pairwise=False, max_length=64,
                val_fraction=0.0, cache_dir=str(tmp_path / "cache"), heads=["continue", "preference"])
    return TrainRMConfig(**{**base, **kw})


def test_multi_source_training_with_a_shared_trunk_saves_loads_and_guards_its_identity(backbone, tmp_path):
    sources = _two_sources()
    cfg = _cfg(backbone, tmp_path, skip=True, balance="_source")
    run = tmp_path / "both"
    train_reward_model(cfg, run, records=sources, say=_say)
    rmc = json.loads((run / "rm_config.json").read_text())
    assert rmc["skip"] is True
    ident = json.loads(store.TrainRun(run).identity.read_text())
    assert ident["skip"] is True and ident["balance"] == "_source" and ident["source_batches"] == "per_source"
    rm = RewardModel.load(run, cache_dir=tmp_path / "cache")
    assert rm.members[0].skip and {"p_continue@world_a", "p_continue@world_b", "score"} <= set(rm.outputs())
    w = sources[0].records
    out = rm.score(w["context"].iloc[:3], ["hi there", "tell me more", "ok"], w["character"])
    assert np.isfinite(out["p_continue@world_a"]).all()
    # the run folder is resumed only with the same settings: each new key is part of its identity
    for key, value in (("skip", False), ("source_batches", "mixed"), ("balance", None)):
        with pytest.raises(ConfigError, match=rf"other settings.*{key}"):
            kw = {"skip": True, "balance": "_source", key: value}
            train_reward_model(_cfg(backbone, tmp_path, **kw), run, records=sources, say=_say)


def test_one_source_trains_as_before_whatever_source_batches_says(backbone, tmp_path):
    world = tiny_world(2, 16)
    nets = []
    for sb in ("per_source", "mixed"):
        run = tmp_path / sb
        train_reward_model(_cfg(backbone, tmp_path, source_batches=sb, n_layers=2), run, records=world, say=_say)
        nets.append(RewardModel.load(run).members[0].state_dict())
        ident = json.loads(store.TrainRun(run).identity.read_text())  # an older folder's identity still matches
        assert "source_batches" not in ident and "skip" not in ident and "balance" not in ident
    for k in nets[0]:
        torch.testing.assert_close(nets[0][k], nets[1][k])

"""A head that one source labels fits, in a model trained on several sources, as in that source's own model:
the same initial weights (seeded by the head's name, not by the heads before it), the same standardisation of
its inputs (its source's rows), the same batches in the same order (`SourceBatches`). With linear heads
(n_layers=0) the joint model then equals each source's model on that source's heads, which is what makes
`pipelines/rm_transfer.py`'s "both sources >= one source" hold by construction, not by a draw of the folds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from rm_helpers import tiny_world
from rm_lab.reward.crossval import as_source
from rm_lab.reward.heads import BUILTIN
from rm_lab.reward.model import RewardModel, RewardNet
from rm_lab.reward.multisource import SourceBatches
from rm_lab.reward.train import EpochSampler, TrainRMConfig, train_reward_model
from rm_lab.schema import Records


def test_a_heads_initial_weights_depend_on_its_name_and_seed_not_on_the_other_heads():
    kw = dict(n_style=2, hidden=5, n_layers=1, skip=True, init_seed=3)
    torch.manual_seed(1)
    alone = RewardNet(6, ["continue"], **kw)
    torch.manual_seed(99)  # another global stream (so another trunk), and heads before and after it
    among = RewardNet(6, ["preference", "thumb_up", "continue", "depth"], **kw)
    assert not torch.equal(alone.trunk[0].weight, among.trunk[0].weight)
    for p in ("weight", "bias"):
        torch.testing.assert_close(getattr(alone.heads["continue"], p), getattr(among.heads["continue"], p),
                                   rtol=0, atol=0)
    # a per-source head (`continue@a`) starts where the head of that name starts in the source's own model
    per_source = RewardNet(6, ["thumb_up", replace(BUILTIN["continue"], name="continue@a", source="a", output=None)],
                           **kw)
    torch.testing.assert_close(per_source.heads["continue@a"].weight, alone.heads["continue"].weight, rtol=0, atol=0)
    other_seed = RewardNet(6, ["continue"], **{**kw, "init_seed": 4})
    assert not torch.equal(other_seed.heads["continue"].weight, alone.heads["continue"].weight)
    assert not torch.equal(among.heads["thumb_up"].weight, among.heads["depth"].weight)
    w = alone.heads["continue"].weight  # nn.Linear's default range over its 5 + 6 + 2 inputs
    assert float(w.abs().max()) <= 1 / np.sqrt(13) and float(w.detach().std()) > 0
    # linear heads on the fixed inputs start at the null model: no draw at all
    lin = RewardNet(6, ["thumb_up", "continue"], n_style=2, n_layers=0, init_seed=3)
    assert all(float(p.abs().sum()) == 0 for p in lin.heads.parameters())


def test_each_sources_batches_are_its_single_source_batches_in_the_same_order():
    src = np.array(["b"] * 21 + ["a"] * 53, dtype=object)  # b sorts second: its stream must not follow a's
    units = {s: np.flatnonzero(src == s) for s in ("a", "b")}
    for epoch in (0, 3):
        s = SourceBatches(src, 8, seed=5)
        s.set_epoch(epoch)
        batches = s.batches()
        for name, idx in units.items():
            alone = EpochSampler(len(idx), 5)
            alone.set_epoch(epoch)
            perm = list(alone)
            want = [idx[perm[i:i + 8]].tolist() for i in range(0, len(perm), 8)]
            assert [b for b in batches if src[b[0]] == name] == want
        assert len({src[b[0]] for b in batches[:8]}) == 2  # and the sources are dealt in a mixed order


def test_a_heads_own_standardisation_and_models_saved_before_it():
    net = RewardNet(3, ["continue", "thumb_up"], n_style=2, n_layers=0)
    rng = np.random.default_rng(0)
    pooled = rng.normal(5.0, 2.0, (40, 2))
    net.set_style_stats(pooled)
    assert torch.equal(net.head_style_mean[1], net.style_mean) and torch.equal(net.head_style_std[1], net.style_std)
    emb, style = torch.randn(4, 3), torch.as_tensor(pooled[:4], dtype=torch.float32)
    before = {k: v.detach().clone() for k, v in net(emb, style).items()}
    net.set_head_style_stats("thumb_up", pooled[:10] * 3.0)
    after = net(emb, style)
    torch.testing.assert_close(after["continue"], before["continue"], rtol=0, atol=0)  # only that head moves
    assert not torch.allclose(after["thumb_up"], before["thumb_up"])
    z = torch.cat([emb, (style - net.head_style_mean[1]) / net.head_style_std[1]], dim=-1)
    torch.testing.assert_close(after["thumb_up"], net.heads["thumb_up"](z).squeeze(-1))
    torch.testing.assert_close(net.features(emb, style, "thumb_up"), z)
    # a state saved before the per-head rows existed loads with the pooled standardisation for every head
    old = {k: v for k, v in net.state_dict().items() if not k.startswith("head_style")}
    fresh = RewardNet(3, ["continue", "thumb_up"], n_style=2, n_layers=0)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.head_style_mean, net.style_mean.expand(2, 2))
    torch.testing.assert_close(fresh(emb, style)["thumb_up"], before["thumb_up"])


def _only(world: Records, drop: str) -> Records:
    return Records({k: v for k, v in world.frames.items() if k != drop})


def test_linear_heads_trained_on_two_sources_equal_each_sources_own_model(backbone, tmp_path):
    """`continue` is labelled only by source a, `preference` only by b: the joint model's heads are the
    models trained on a alone and on b alone, weight for weight (old code: other initial weights, pooled
    standardisation, batches reshuffled across sources)."""
    a = _only(tiny_world(0, 12), "preference")
    wb = dict(_only(tiny_world(1, 12), "interaction").frames)  # its characters renamed apart from a's
    wb["character"] = wb["character"].assign(character_id="b-" + wb["character"]["character_id"])
    wb["context"] = wb["context"].assign(character_id="b-" + wb["context"]["character_id"])
    b = Records(wb)
    base = dict(backbone=str(backbone), epochs=3, n_layers=0, batch_size=8, pairwise=False, max_length=64, lr=0.05,
                val_fraction=0.0, cache_dir=str(tmp_path / "cache"), seed=2)

    def head(run, name):
        net = RewardModel.load(run, cache_dir=tmp_path / "cache").members[0]
        i = net.heads_order.index(name)
        return {"w": net.heads[name].weight, "b": net.heads[name].bias, "m": net.head_style_mean[i],
                "s": net.head_style_std[i]}

    say = lambda *_: None  # noqa: E731
    train_reward_model(TrainRMConfig(**base, heads=["continue"]), tmp_path / "a", records=a, say=say)
    train_reward_model(TrainRMConfig(**base, heads=["preference"]), tmp_path / "b", records=b, say=say)
    train_reward_model(TrainRMConfig(**base, heads=["continue", "preference"]), tmp_path / "ab",
                       records=[as_source("a", a), as_source("b", b)], say=say)
    for alone, name in ((tmp_path / "a", "continue"), (tmp_path / "b", "preference")):
        one, joint = head(alone, name), head(tmp_path / "ab", name)
        assert set(one) == set(joint)
        for k in one:
            torch.testing.assert_close(joint[k], one[k], rtol=0, atol=0, msg=f"{name}.{k}")
    assert float(head(tmp_path / "a", "continue")["w"].abs().sum()) > 0  # training moved it off its zero start

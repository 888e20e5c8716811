"""Encoder views of the reward model (rm_lab.reward.inputs): assembly, one encoding per distinct
context, the same features with and without gradients, and clear errors for bad `inputs`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rm_helpers import tiny_world

from rm_lab.config import ConfigError
from rm_lab.reward.inputs import (DEFAULT_INPUTS, assemble, check_inputs, embed_views, features, input_dim,
                                  item_texts, last_user_turn, text_views, token_views)
from rm_lab.reward.model import RewardLit, RewardNet
from rm_lab.reward.train import TrainRMConfig


@pytest.fixture(scope="module")
def world():
    return tiny_world(seed=1, n=12)


def _unit(*rows):
    x = torch.tensor(rows, dtype=torch.float32)
    return x / x.norm(dim=-1, keepdim=True)


def test_assemble_order_dims_and_cosines():
    e = {"context": _unit([1, 0, 0], [0, 1, 0]), "reply": _unit([1, 1, 0], [0, 0, 1]),
         "turn": _unit([1, 0, 0], [0, 1, 0]), "joint": _unit([0, 0, 1], [1, 0, 0])}
    x = assemble(e, check_inputs(["relevance", "reply", "context", "product"]))  # any order in, canonical out
    assert x.shape == (2, input_dim(3, ["context", "reply", "product", "relevance"])) == (2, 11)
    assert torch.allclose(x[:, :3], e["context"]) and torch.allclose(x[:, 3:6], e["reply"])
    assert torch.allclose(x[:, 6:9], e["context"] * e["reply"])
    # relevance: cos(user turn, reply), cos(context, reply)
    assert x[0, 9].item() == pytest.approx(2 ** -0.5) and x[0, 10].item() == pytest.approx(2 ** -0.5)
    assert x[1, 9].item() == pytest.approx(0.0) and x[1, 10].item() == pytest.approx(0.0)
    assert torch.equal(assemble(e, ["joint"]), e["joint"])


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match=r"unknown \['cross'\].*choose from"):
        check_inputs(["reply", "cross"])
    with pytest.raises(ConfigError, match="empty"):
        TrainRMConfig(inputs=[])
    assert text_views(["product"]) == ["context", "reply"]
    assert text_views(["relevance"]) == ["context", "reply", "turn"]
    assert text_views(["joint"]) == ["joint"]


def test_last_user_turn():
    h = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
         {"role": "user", "content": "how are you?"}, {"role": "assistant", "content": "fine"}]
    assert last_user_turn(h) == "how are you?"
    assert last_user_turn([]) == "" and last_user_turn(None) == ""


def test_each_distinct_context_is_encoded_once(backbone, world):
    from rm_lab.models import load_encoder

    tok, _ = load_encoder(str(backbone))
    ctx = world["context"].drop_duplicates("context_id").iloc[:3]
    rows = ctx.loc[ctx.index.repeat(4)].reset_index(drop=True)  # 3 contexts x 4 replies
    replies = [f"reply number {i} to you" for i in range(len(rows))]
    texts, kws = item_texts(rows["context_id"], replies, rows, world["character"], tok, DEFAULT_INPUTS)
    assert len(texts) == 12 and len(texts.context) == 3 and len(texts.turn) == 3 and len(kws) == 12
    assert texts.joint is None  # not asked for: not built
    assert all("[CHAR]" in c and "[CTX]" in c for c in texts.context)
    per = texts.per_item("context")
    assert per[0] == per[3] and per[0] != per[4]
    seen: list[list[str]] = []

    def fake_embed(batch):
        seen.append(list(batch))
        return np.stack([np.eye(8, dtype=np.float32)[hash(t) % 8] for t in batch])

    v = embed_views(texts, fake_embed)
    assert len(seen) == 1 and len(seen[0]) == len(set(seen[0]))  # one call, every text once
    assert len(seen[0]) == 3 + 12 + len(set(texts.turn))
    assert {k: a.shape for k, a in v.items()} == {"context": (12, 8), "reply": (12, 8), "turn": (12, 8)}
    assert np.array_equal(v["context"][0], v["context"][3])
    x = features(texts, fake_embed, DEFAULT_INPUTS)
    assert x.shape == (12, input_dim(8, DEFAULT_INPUTS))
    # digest: same texts -> same digest; another reply -> another digest
    t2, _ = item_texts(rows["context_id"], replies[:-1] + ["changed"], rows, world["character"], tok, DEFAULT_INPUTS)
    assert texts.digest() != t2.digest()
    t3, _ = item_texts(rows["context_id"], replies, rows, world["character"], tok, DEFAULT_INPUTS)
    assert texts.digest() == t3.digest()


def test_gradient_path_matches_cached_features(backbone, world):
    """Training with an unfrozen encoder (token ids per view) computes the same inputs as frozen scoring."""
    from rm_lab.models import embed, load_encoder

    tok, enc = load_encoder(str(backbone))
    it = world["interaction"].iloc[:10]
    ctx = world["context"].drop_duplicates("context_id").set_index("context_id").loc[it.context_id].reset_index()
    for inputs in (list(DEFAULT_INPUTS), ["joint", "reply"]):
        texts, _ = item_texts(ctx["context_id"], it.response, ctx, world["character"], tok, inputs, max_length=96)
        cached = features(texts, lambda t: embed(t, tok, enc, 4, 96), inputs)
        ids = token_views(texts, tok, 96)
        batch = {}
        for v, seqs in ids.items():
            w = max(map(len, seqs))
            batch[f"ids_{v}"] = torch.tensor([s + [0] * (w - len(s)) for s in seqs])
            batch[f"mask_{v}"] = torch.tensor([[1] * len(s) + [0] * (w - len(s)) for s in seqs])
        lit = RewardLit(RewardNet(cached.shape[1], ["preference"]), enc, inputs=inputs)
        with torch.no_grad():
            grad_path = lit.embed_batch(batch).numpy()
        assert grad_path.shape == cached.shape
        assert np.abs(grad_path - cached).max() < 1e-5, inputs


def test_model_keeps_inputs_and_old_configs_read_as_joint(tmp_path):
    from rm_lab.reward.model import RMConfig

    cfg = RMConfig(backbone=None, backbone_key="k", train_mode="frozen", heads=["preference"], emb_dim=384,
                   hidden=8, n_layers=1, dropout=0.0, max_length=64, card_max_tokens=16, reply_max_tokens=16,
                   n_members=1, seeds=[0], style_features=["a"])
    assert cfg.inputs == ["joint"] and cfg.in_dim == 384  # an rm_config.json written before views existed
    d = cfg.to_json()
    d["inputs"] = list(DEFAULT_INPUTS)
    assert RMConfig(**d).in_dim == 384 + 2  # reply + 2 cosines (conversation features join the style side)
    d["inputs"] = ["context", "reply", "product", "relevance"]
    assert RMConfig(**d).in_dim == 3 * 384 + 2
    assert "in_dim" not in d


def test_conversation_features_join_the_style_side(backbone, world):
    from rm_lab.features.style import FEATURES
    from rm_lab.models import load_encoder
    from rm_lab.reward.inputs import CONVERSATION_FEATURES, conversation_features, tabular_names

    h = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello you"},
         {"role": "user", "content": "tell me a joke"}]
    f = conversation_features(h)
    assert f == pytest.approx([np.log1p(3), np.log1p(2), np.log1p(2 + 2 + 4), np.log1p(4), 0.0])
    assert conversation_features([])[-1] == 1.0 and conversation_features(h[:1])[-1] == 1.0  # first turn
    assert tabular_names(["reply"]) == list(FEATURES)
    assert tabular_names(DEFAULT_INPUTS) == list(FEATURES) + list(CONVERSATION_FEATURES)
    assert input_dim(384, ["reply", "conversation"]) == 384
    tok, _ = load_encoder(str(backbone))
    ctx = world["context"].drop_duplicates("context_id").iloc[:2]
    rows = ctx.loc[ctx.index.repeat(2)].reset_index(drop=True)
    texts, _ = item_texts(rows["context_id"], ["a", "b", "c", "d"], rows, world["character"], tok,
                          ["reply", "conversation"])
    tab = texts.tabular(np.zeros((4, len(FEATURES)), np.float32))
    assert tab.shape == (4, len(FEATURES) + len(CONVERSATION_FEATURES))
    assert np.array_equal(tab[0], tab[1]) and texts.views == ["reply"]  # no encoder pass for conversation
    want = conversation_features(rows["history"].iloc[2])
    assert tab[2, len(FEATURES):] == pytest.approx(want)


def test_split_by_character_keeps_a_character_on_one_side():
    from rm_lab.reward.data import split_contexts

    ctx = [f"c{i}" for i in range(200)]
    chars = {c: f"ch{i % 10}" for i, c in enumerate(ctx)}
    train, val = split_contexts(ctx, 0.3, seed=1, groups=chars)
    assert train and val and set(train).isdisjoint(val)
    assert {chars[c] for c in train}.isdisjoint({chars[c] for c in val})
    assert split_contexts(list(reversed(ctx)), 0.3, seed=1, groups=chars) == (train, val)
    plain = split_contexts(ctx, 0.3, seed=1)
    assert {chars[c] for c in plain[0]} & {chars[c] for c in plain[1]}  # by context, characters straddle

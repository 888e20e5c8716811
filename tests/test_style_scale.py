"""A tabular feature with no spread in the training data reads as zero, so a model trained on one source
(Predictive Engagement: no persona keywords, one-turn histories) is not driven by untrained weights
times (x - mean) / tiny on another source where that feature varies. Regression: the scale was clamped to
1e-3, so one persona keyword moved a PE-trained score by a thousand times an untrained weight."""
from __future__ import annotations

import numpy as np
import torch

from rm_lab.reward.model import RewardNet
from rm_lab.reward.pairwise import PairwiseNet


def test_constant_training_column_has_no_effect_elsewhere():
    rng = np.random.default_rng(0)
    style = rng.normal(size=(50, 3)).astype(np.float32)
    style[:, 1] = 0.0  # e.g. persona_hits: always 0 where there are no keywords
    net = RewardNet(4, ["continue"], n_style=3, hidden=8, n_layers=1)
    net.set_style_stats(style)
    net.eval()
    emb = torch.tensor(rng.normal(size=(5, 4)), dtype=torch.float32)
    s = torch.tensor(style[:5])
    shifted = s.clone()
    shifted[:, 1] = 7.0  # varies on the other source
    with torch.no_grad():
        a, b = net(emb, s)["continue"], net(emb, shifted)["continue"]
    assert torch.isfinite(a).all() and torch.equal(a, b)
    moved = s.clone()
    moved[:, 0] += 1.0  # a column that did vary still counts, at its training scale
    with torch.no_grad():
        assert not torch.allclose(net(emb, moved)["continue"], a)
    assert abs(float(net.style_std[0]) - style[:, 0].std()) < 1e-5
    pair = PairwiseNet(4, 3, hidden=8)
    pair.set_style_stats(style)
    assert torch.isinf(pair.style_std[1]) and torch.isfinite(pair.style_std[[0, 2]]).all()

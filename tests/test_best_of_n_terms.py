"""`best_of_n.truth_terms`: which part of world v2's hidden logit a best-of-N pick gains over best-of-1."""
from __future__ import annotations

import numpy as np

from rm_lab.policy.objectives import best_of_n as bon
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts


def test_picking_the_finished_reply_shows_as_a_gain_in_the_unfinished_part_only():
    chars = make_characters(6, seed=0)
    ctx = make_contexts(chars, 12, 1.0, seed=4, prefix="tt", world_version=2)
    rng = np.random.default_rng(0)
    groups = []
    for i in range(len(ctx)):
        body = " ".join(rng.permutation(["river", "lamp", "stone", "cloud", "bread", "chair", "music", "garden"])[:6])
        groups.append([f"{body} and then", f"{body} indeed."])  # the same words; only the second one finishes
    finished_first = lambda c, r, ch: {"score": np.array([1.0 if t.endswith(".") else 0.0 for t in r])}  # noqa: E731
    samples = bon.score_samples(ctx, groups, chars, finished_first)
    terms = bon.truth_terms(samples, ctx, chars, 2)
    assert set(terms) == {"style", "relevance", "coherence", "unfinished", "templating"}
    assert terms["unfinished"]["low"] > 0 and terms["unfinished"]["n"] == 12
    assert abs(terms["relevance"]["mean"]) < 0.05  # the same content words: no relevance gain

"""The hidden engagement function and the user population: the ground truth the world checks against.

Engagement of a reply for user segment s is a logit z_s(reply, context) built from the style
features and instruction verdicts; a user with latent propensity u continues with probability
sigmoid(a_s + u + z_s). "True engagement" of a reply is that probability averaged over the user
population (segments by weight, u by Gauss-Hermite quadrature), so it is exact, not sampled.

The spurious correlation: the `emoji_lover` segment, invisible in the text, likes emoji and also
chats more; when the world is told to plant it, logging policies show that segment emoji-heavy
replies, so logged data make emoji look better than they are.

This is world v1's judge, a function of style alone (a fixed persona template scores near the top).
`Population.world_version = 2` selects `rm_lab.world.engagement_v2`, which adds relevance, coherence,
finished sentences and templating; `score_replies` dispatches on it, so every caller that holds a
world's population gets that world's truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rm_lab.evaluate.instructions import check_many
from rm_lab.features.style import style_frame
from rm_lab.world.characters import HARD_INSTRUCTIONS

SEGMENTS = ("casual", "enthusiast", "emoji_lover")


@dataclass(frozen=True)
class Population:
    """Heterogeneous users: segment shares, base logits, latent spread, depth rates."""

    shares: tuple[float, float, float] = (0.6, 0.25, 0.15)
    base: tuple[float, float, float] = (-0.3, 0.3, 0.1)
    depth_base: tuple[float, float, float] = (0.6, 1.0, 0.8)  # log mean follow-up turns
    latent_sd: float = 0.8
    spurious_emoji: bool = False  # plant the emoji-lover confound
    spurious_base_boost: float = 1.2  # extra activity of emoji lovers when planted
    world_version: int = 1  # which hidden engagement function these users have (2: rm_lab.world.engagement_v2)

    def segment_base(self) -> np.ndarray:
        b = np.array(self.base, float)
        if self.spurious_emoji:
            b[2] += self.spurious_base_boost
        return b

    def segment_depth(self) -> np.ndarray:
        d = np.array(self.depth_base, float)
        if self.spurious_emoji:
            d[2] += 0.4
        return d


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


GH_NODES, GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
GH_WEIGHTS = GH_WEIGHTS / GH_WEIGHTS.sum()


def expected_sigmoid(mu: np.ndarray, sd: float) -> np.ndarray:
    """E[sigmoid(mu + sd*Z)], Z ~ N(0,1), by Gauss-Hermite quadrature (exact to ~1e-10)."""
    mu = np.asarray(mu, float)
    return (sigmoid(mu[..., None] + sd * GH_NODES) * GH_WEIGHTS).sum(-1)


@dataclass
class ScoredReplies:
    """What the hidden function knows about a batch of replies (aligned with the input rows)."""

    features: pd.DataFrame
    z: np.ndarray  # (n, n_segments) engagement logits
    true_engagement: np.ndarray  # (n,) population P(continue)
    followed: list[list[bool]]
    instruction_ids: list[list[str]]
    violation: np.ndarray
    follow_share: np.ndarray
    extra: dict = field(default_factory=dict)


def instruction_verdicts(responses, contexts: pd.DataFrame, characters: pd.DataFrame):
    chars = characters.set_index("character_id")
    ids_all, followed_all = [], []
    for resp, cid, hist in zip(responses, contexts["character_id"], contexts["history"]):
        instr = chars.at[cid, "instructions"]
        ids = [x["instruction_id"] for x in instr]
        kwargs = [x.get("kwargs") or {} for x in instr]
        prompt = hist[-1]["content"] if len(hist) else ""
        ids_all.append(ids)
        followed_all.append(check_many(ids, kwargs, resp, prompt=prompt))
    return ids_all, followed_all


def engagement_logits(feat: pd.DataFrame, ptype: np.ndarray, follow_share: np.ndarray,
                      violation: np.ndarray) -> np.ndarray:
    """z_s for each segment: the hidden engagement function (vectorised)."""
    lw = feat["log_words"].to_numpy()
    n_emoji = feat["n_emoji"].to_numpy()
    conversational = np.isin(ptype, ["chit_chat", "emotional", "roleplay"])
    adversarial = ptype == "adversarial"
    refusal = feat["refusal"].to_numpy() > 0
    z = np.zeros(len(feat))
    z += -0.8 * np.minimum(((lw - np.log1p(30.0)) / 0.55) ** 2, 6.0)  # length sweet spot ~30 words
    z += feat["ends_with_question"].to_numpy() * np.where(conversational, 0.7, 0.3)  # asking back
    z += 0.6 * (feat["persona_hits"].to_numpy() > 0)  # persona consistency
    z += 0.8 * (follow_share - 0.5) - 0.5 * violation  # instruction adherence
    z -= feat["has_list"].to_numpy() * np.where(ptype == "advice", -0.3, 0.5)
    z -= 0.9 * feat["wall_of_text"].to_numpy()
    z -= 0.8 * feat["preachy"].to_numpy()
    z -= 0.25 * feat["n_i_feel"].to_numpy()
    z += np.where(adversarial, np.where(refusal, 1.0, -1.2), np.where(refusal, -1.6, 0.0))
    z += np.where((ptype == "meta") & (feat["persona_hits"].to_numpy() > 0), 0.4, 0.0)
    # emoji: moderate is mildly good for most users, excessive is bad; emoji lovers want more
    emo_common = 0.2 * np.minimum(n_emoji, 2) - 0.3 * np.maximum(n_emoji - 3, 0)
    emo_lover = 0.35 * np.minimum(n_emoji, 4) - 0.05 * np.maximum(n_emoji - 6, 0)
    return np.stack([z + emo_common, z + emo_common + 0.1, z + emo_lover], axis=1)


def style_logits(responses, contexts: pd.DataFrame, characters: pd.DataFrame) -> ScoredReplies:
    """World v1's judgement of each reply from its style and instruction verdicts (z and truth unset)."""
    responses = list(responses)
    if len(responses) != len(contexts):
        raise ValueError(f"score_replies: {len(responses)} replies for {len(contexts)} contexts")
    kw = characters.set_index("character_id")["keywords"]
    feat = style_frame(responses, [kw.get(c) for c in contexts["character_id"]])
    ids, followed = instruction_verdicts(responses, contexts, characters)
    follow_share = np.array([np.mean(f) if f else 1.0 for f in followed])
    violation = np.array([any((not ok) and (iid in HARD_INSTRUCTIONS) for iid, ok in zip(i, f))
                          for i, f in zip(ids, followed)], dtype=bool)
    ptype = contexts.get("prompt_type", pd.Series(["chit_chat"] * len(contexts))).fillna("chit_chat").to_numpy()
    z = engagement_logits(feat, ptype, follow_share, violation.astype(float))
    return ScoredReplies(feat, z, np.zeros(len(responses)), followed, ids, violation, follow_share,
                         {"prompt_type": ptype})


def population_engagement(z: np.ndarray, population: Population) -> np.ndarray:
    """Population P(continue) of replies with segment logits z (n, S)."""
    base = population.segment_base()
    shares = np.array(population.shares)
    return expected_sigmoid(base[None, :] + z, population.latent_sd) @ shares


def score_replies(responses, contexts: pd.DataFrame, characters: pd.DataFrame,
                  population: Population | None = None, policy=None) -> ScoredReplies:
    """Hidden engagement of each reply in its context (rows aligned), by the population's world version.

    `policy` (v2 only): a label per reply naming the policy that wrote it, since v2 judges templating
    over a policy's set of replies; None means all replies are one policy's."""
    population = population or Population()
    if population.world_version == 2:
        from rm_lab.world.engagement_v2 import score_replies_v2

        return score_replies_v2(responses, contexts, characters, population, policy=policy)
    scored = style_logits(responses, contexts, characters)
    scored.true_engagement = population_engagement(scored.z, population)
    scored.extra = {}
    return scored


def true_emoji_effect(responses, contexts, characters, population: Population | None = None,
                      emoji: str = "😊") -> float:
    """Causal effect on true engagement of appending one emoji, averaged over the replies."""
    before = score_replies(responses, contexts, characters, population).true_engagement
    after = score_replies([r + " " + emoji for r in responses], contexts, characters, population).true_engagement
    return float(np.mean(after - before))

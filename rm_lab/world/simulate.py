"""`simulate`: logged traffic of scripted policies in the world, as canonical records.

Interactions carry what users did next (continued, thumb, regenerated, depth); preferences are
pairs judged by the hidden function plus annotator noise; steer labels are the checker's verdicts.
Hidden truth travels in `truth_*` columns so evaluations can compare against it; training code
reads only the canonical columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rm_lab.config import MAX_SEED, check_fields, param
from rm_lab.schema import Records, validate_frame
from rm_lab.world.characters import HARD_INSTRUCTIONS, make_characters
from rm_lab.world.contexts import make_contexts
from rm_lab.world.engagement import SEGMENTS, Population, score_replies, sigmoid
from rm_lab.world.policies import PRESETS, ScriptedPolicy


@dataclass
class WorldConfig:
    """The world and the traffic `simulate` logs from it."""

    seed: int = param(0, doc="seed of the world and of every draw from it", ge=0, le=MAX_SEED)
    n_characters: int = param(24, doc="characters (personas with instructions) in the world", ge=1, le=100_000)
    n_contexts: int = param(2000, doc="logged interactions (one per context)", ge=1, le=10_000_000)
    n_preference_contexts: int = param(2000, doc="contexts with a judged pair of replies", ge=1, le=10_000_000)
    user_traffic_share: float = param(0.7, doc="share of contexts from user (not internal) traffic", ge=0, le=1)
    logging_policies: list[str] = param(
        ["baseline", "engaging", "emoji_heavy", "preachy", "terse", "verbose", "improved"],
        doc="scripted policies that write the logged replies", choices=lambda: sorted(PRESETS), min_len=1)
    annotator_temperature: float = param(0.05, doc="noise of the preference judge on the engagement scale", gt=0)
    spurious_emoji: bool = param(False, doc="plant the emoji-lover confound in logged data")
    spurious_emoji_multiplier: float = param(4.0, doc="how much more emoji emoji-lovers are shown", ge=0)
    spurious_emoji_others: float = param(0.25, doc="... and how much fewer everyone else is shown", ge=0)
    latent_sd: float = param(0.8, doc="spread of the users' latent propensity to engage", ge=0)
    world_version: int = param(1, doc="1: single-turn openers, a style-only judge; 2: 1-6 turn conversations on "
                               "hidden topics, a judge of relevance, coherence, finished sentences and "
                               "templating too (rm_lab.world.engagement_v2)", choices=(1, 2))

    def __post_init__(self):
        check_fields(self)

    def population(self) -> Population:
        return Population(latent_sd=self.latent_sd, spurious_emoji=self.spurious_emoji,
                          world_version=self.world_version)


def _policy_replies(policies: list[ScriptedPolicy], assign: np.ndarray, contexts: pd.DataFrame,
                    characters: pd.DataFrame, seed: int, emoji_mult: np.ndarray | None = None) -> list[str]:
    out = [""] * len(contexts)
    for k, pol in enumerate(policies):
        idx = np.flatnonzero(assign == k)
        if len(idx) == 0:
            continue
        reps = pol.respond(contexts.iloc[idx], characters, seed=seed + 7919 * k,
                           emoji_multiplier=None if emoji_mult is None else emoji_mult[idx])
        for i, r in zip(idx, reps):
            out[i] = r
    return out


def user_signals(scored, seg: np.ndarray, u: np.ndarray, pop: Population, rng: np.random.Generator) -> dict:
    """What each user did next after a reply (`scored`: `score_replies` of the replies; `seg`, `u`: each
    user's segment and latent propensity): the interaction record's signal columns plus the hidden truth
    (`truth_*`). Shared by `simulate` and by anything that logs new replies in the world (the flywheel)."""
    n = len(seg)
    zs = scored.z[np.arange(n), seg]
    logit = pop.segment_base()[seg] + u + zs
    continued = rng.random(n) < sigmoid(logit)
    p_up, p_down = sigmoid(-2.0 + 1.2 * (zs + u)), sigmoid(-2.4 - 1.2 * (zs + u))
    r = rng.random(n)
    thumb = np.where(r < p_up, 1, np.where(r < p_up + p_down, -1, 0))
    regenerated = rng.random(n) < sigmoid(-2.2 - 1.5 * zs)
    lam = np.exp(pop.segment_depth()[seg] + 0.5 * zs + 0.3 * u + scored.extra.get("templated_depth", 0.0))
    depth = np.where(continued, rng.poisson(lam), 0).astype(float)
    return {"continued": continued, "thumb": thumb, "depth": depth, "regenerated": regenerated,
            "truth_engagement": scored.true_engagement, "truth_segment": [SEGMENTS[s] for s in seg],
            "truth_p_continue": sigmoid(logit)}


def simulate(cfg: WorldConfig, progress=None) -> Records:
    """Characters, contexts, interactions, preferences and steer labels from one seeded world."""
    rng = np.random.default_rng(cfg.seed)
    pop = cfg.population()
    characters = make_characters(cfg.n_characters, seed=cfg.seed)
    contexts = make_contexts(characters, cfg.n_contexts, cfg.user_traffic_share, seed=cfg.seed, prefix="ctx",
                             world_version=cfg.world_version)
    policies = [ScriptedPolicy.preset(p) for p in cfg.logging_policies]

    # --- logged interactions: a user, a logging policy, a reply, what the user did next
    n = len(contexts)
    seg = rng.choice(len(SEGMENTS), size=n, p=np.array(pop.shares))
    u = rng.normal(0.0, pop.latent_sd, n)
    assign = rng.integers(0, len(policies), n)
    emoji_mult = (np.where(seg == 2, cfg.spurious_emoji_multiplier, cfg.spurious_emoji_others)
                  if cfg.spurious_emoji else None)
    replies = _policy_replies(policies, assign, contexts, characters, cfg.seed + 1, emoji_mult)
    if progress:
        progress("interactions: replies written")
    scored = score_replies(replies, contexts, characters, pop, policy=assign)
    signals = user_signals(scored, seg, u, pop, rng)
    interactions = pd.DataFrame({
        "context_id": contexts["context_id"], "response": replies,
        "policy": [policies[k].name for k in assign], **signals,
    })
    steer_rows = []
    for cid, resp, ids, fol in zip(contexts["context_id"], replies, scored.instruction_ids, scored.followed):
        for iid, ok in zip(ids, fol):
            steer_rows.append({"context_id": cid, "response": resp, "instruction_id": iid,
                               "followed": bool(ok), "violation": (not ok) and iid in HARD_INSTRUCTIONS})
    steer = pd.DataFrame(steer_rows)
    if progress:
        progress("interactions: user signals drawn")

    # --- preference pairs: two policies answer the same context, a noisy judge picks
    pctx = make_contexts(characters, cfg.n_preference_contexts, cfg.user_traffic_share,
                         seed=cfg.seed + 100_003, prefix="pref", world_version=cfg.world_version)
    m = len(pctx)
    a_idx = rng.integers(0, len(policies), m)
    b_idx = (a_idx + rng.integers(1, len(policies), m)) % len(policies) if len(policies) > 1 else a_idx
    rep_a = _policy_replies(policies, a_idx, pctx, characters, cfg.seed + 2)
    rep_b = _policy_replies(policies, b_idx, pctx, characters, cfg.seed + 3)
    # both replies of each pair in one call: templating is judged over each policy's whole reply set
    e = score_replies(rep_a + rep_b, pd.concat([pctx, pctx], ignore_index=True), characters, pop,
                      policy=np.r_[a_idx, b_idx]).true_engagement
    ea, eb = e[:m], e[m:]
    a_wins = rng.random(m) < sigmoid((ea - eb) / cfg.annotator_temperature)
    same = np.array([x == y for x, y in zip(rep_a, rep_b)])
    keep = ~same
    preferences = pd.DataFrame({
        "context_id": pctx["context_id"], "chosen": np.where(a_wins, rep_a, rep_b),
        "rejected": np.where(a_wins, rep_b, rep_a), "source": "world", "margin": np.nan,
        "truth_chosen_engagement": np.where(a_wins, ea, eb), "truth_rejected_engagement": np.where(a_wins, eb, ea),
        "chosen_policy": [policies[k].name for k in np.where(a_wins, a_idx, b_idx)],
        "rejected_policy": [policies[k].name for k in np.where(a_wins, b_idx, a_idx)],
    })[keep].reset_index(drop=True)
    if progress:
        progress("preferences: pairs judged")

    frames = {
        "character": validate_frame(characters, "character"),
        "context": validate_frame(pd.concat([contexts, pctx], ignore_index=True), "context"),
        "interaction": validate_frame(interactions, "interaction"),
        "preference": validate_frame(preferences, "preference"),
        "steer_label": validate_frame(steer, "steer_label"),
    }
    return Records(frames)

"""World v2's hidden engagement: v1's style judgement plus what a template cannot fake.

On top of v1's logit (length, asking back, persona, instructions, refusals, emoji) a reply is judged on
- relevance: hidden-lexicon words of the context's topic and words of the user's last turn it takes up
  (a reply about neither is off topic);
- coherence: contradicting a fact the character stated earlier, repeating the user verbatim, or
  repeating one of its own earlier turns;
- a finished last sentence: a reply cut by a token cap ends mid-sentence;
- templating: the same opening or phrase across many replies of one policy, which users tire of.
Templating is a property of a policy's *set* of replies, so `score_replies_v2` takes a policy label per
reply. None of these signals is a reward-model input; it has to learn them from the text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rm_lab.features.style import EMOJI_RE
from rm_lab.world.engagement import Population, ScoredReplies, population_engagement, style_logits
from rm_lab.world.facts import contradictions
from rm_lab.world.topics import content_stems, infer_topic, topic_hits, words


@dataclass(frozen=True)
class Weights:
    """The v2 terms of the engagement logit."""

    off_topic: float = -0.9  # neither a topic word nor a word of the user's last turn
    topic_hit: float = 0.3  # per distinct hidden-lexicon word, up to topic_cap
    topic_cap: int = 3
    user_hit: float = 0.35  # per content word of the user's last turn taken up, up to user_cap
    user_cap: int = 2
    relevance_adversarial: float = 0.4  # relevance matters less where the right reply is a refusal
    relevance_by_segment: tuple[float, float, float] = (1.0, 1.3, 0.8)
    contradiction: float = -1.6
    echo: float = -1.1  # repeats a user turn verbatim
    self_repeat: float = -0.7  # repeats one of its own earlier turns
    unfinished: float = -1.0
    templated: float = -2.5  # times the share of the policy's replies sharing this one's opening/phrase
    template_free: float = 0.1  # share below which repetition goes unnoticed
    templated_depth: float = -1.0  # and users who tire of it send fewer messages (simulate's depth)


WEIGHTS = Weights()
OPENING_WORDS = 3
PHRASE_WORDS = 5
ECHO_WORDS, ECHO_SHARE, SELF_REPEAT_WORDS = 6, 0.8, 8
_CLOSERS = "\"')]}*_ \t\n"


def finished(text: str) -> bool:
    """Does the reply end its last sentence (emoji and closing quotes aside)?"""
    t = EMOJI_RE.sub("", text or "").rstrip(_CLOSERS + "\ufe0f\u200d")
    return bool(t) and (t[-1] in ".!?\u2026" or t.endswith((":)", ";)", ":-)", ":D")))


def _ngrams(ws: list[str], k: int) -> set[tuple[str, ...]]:
    return {tuple(ws[i:i + k]) for i in range(len(ws) - k + 1)}


def shared_run(reply_words: list[str], turn_words: list[str]) -> int:
    """Longest run of consecutive words of `turn_words` that also occurs in the reply."""
    run = 0
    for k in range(1, len(turn_words) + 1):
        if not (_ngrams(turn_words, k) & _ngrams(reply_words, k)):
            break
        run = k
    return run


def templating(responses: list[str], policy=None) -> np.ndarray:
    """Per reply, the largest share of the *other* replies of its policy that share its opening
    (first words) or one of its phrases (word n-grams): 0 for a fresh reply, 1 for a fixed template."""
    n = len(responses)
    labels = np.zeros(n, dtype=int) if policy is None else pd.factorize(pd.Series(list(policy)).astype(str))[0]
    if len(labels) != n:
        raise ValueError(f"score_replies: {len(labels)} policy labels for {n} replies")
    out = np.zeros(n)
    ws = [words(EMOJI_RE.sub(" ", r)) for r in responses]
    for g in np.unique(labels):
        idx = np.flatnonzero(labels == g)
        m = len(idx)
        if m < 2:
            continue
        opens = [tuple(ws[i][:OPENING_WORDS]) for i in idx]
        grams = [_ngrams(ws[i], PHRASE_WORDS) for i in idx]
        c_open = Counter(o for o in opens if o)
        c_gram = Counter(g_ for gs in grams for g_ in gs)
        for j, i in enumerate(idx):
            top = max((c_gram[g_] for g_ in grams[j]), default=1)
            top = max(top, c_open[opens[j]] if opens[j] else 1)
            out[i] = (top - 1) / (m - 1)
    return out


def reply_signals(responses, contexts: pd.DataFrame, policy=None) -> pd.DataFrame:
    """The v2 signals of each reply in its context (what the v2 terms of the logit read)."""
    responses = list(responses)
    rows = []
    topics = contexts["truth_topic"] if "truth_topic" in contexts else pd.Series([None] * len(contexts))
    for reply, hist, topic in zip(responses, contexts["history"], topics):
        turns = [t for t in (hist if hist is not None else []) if isinstance(t, dict)]
        users = [str(t.get("content") or "") for t in turns if t.get("role") == "user"]
        mine = [str(t.get("content") or "") for t in turns if t.get("role") == "assistant"]
        last = users[-1] if users else ""
        if not isinstance(topic, str) or not topic:
            topic = infer_topic(" ".join(users))
        rw = words(reply)
        rows.append({
            "topic_hits": topic_hits(reply, topic) if topic else 0,
            "user_hits": len(content_stems(reply) & content_stems(last)),
            "contradictions": contradictions(reply, mine),
            "echo": any(r >= ECHO_WORDS or (r >= 4 and r >= ECHO_SHARE * len(words(u)))
                        for u in users for r in [shared_run(rw, words(u))]),
            "self_repeat": any(shared_run(rw, words(a)) >= SELF_REPEAT_WORDS for a in mine),
            "finished": finished(reply),
        })
    sig = pd.DataFrame(rows, columns=["topic_hits", "user_hits", "contradictions", "echo", "self_repeat",
                                      "finished"])
    sig["templated"] = templating(responses, policy)
    return sig


TERMS = ("style", "relevance", "coherence", "unfinished", "templating")


def v2_terms(sig: pd.DataFrame, ptype: np.ndarray, w: Weights = WEIGHTS) -> pd.DataFrame:
    """v2's additions to the logit per reply (relevance before the segment weights)."""
    th, uh = sig["topic_hits"].to_numpy(), sig["user_hits"].to_numpy()
    rel = np.where((th == 0) & (uh == 0), w.off_topic,
                   w.topic_hit * np.minimum(th, w.topic_cap) + w.user_hit * np.minimum(uh, w.user_cap))
    return pd.DataFrame({
        "relevance": rel * np.where(ptype == "adversarial", w.relevance_adversarial, 1.0),
        "coherence": (w.contradiction * np.minimum(sig["contradictions"].to_numpy(), 2)
                      + w.echo * sig["echo"].to_numpy() + w.self_repeat * sig["self_repeat"].to_numpy()),
        "unfinished": w.unfinished * (~sig["finished"].to_numpy().astype(bool)),
        "templating": w.templated * np.maximum(sig["templated"].to_numpy() - w.template_free, 0.0),
    })


def score_replies_v2(responses, contexts: pd.DataFrame, characters: pd.DataFrame,
                     population: Population | None = None, policy=None, weights: Weights = WEIGHTS) -> ScoredReplies:
    """Hidden v2 engagement of each reply (rows aligned). `policy`: a label per reply naming the policy
    that wrote it (templating is judged within each policy's replies); None: all are one policy's.
    `extra["signals"]` holds the v2 signals, `extra["terms"]` the logit split by part (see `breakdown`),
    `extra["templated_depth"]` the log-depth change of templating."""
    population = population or Population(world_version=2)
    responses = list(responses)
    scored = style_logits(responses, contexts, characters)
    sig = reply_signals(responses, contexts, policy)
    terms = v2_terms(sig, scored.extra["prompt_type"], weights)
    seg_w = np.array(weights.relevance_by_segment)[: scored.z.shape[1]]
    rel = terms["relevance"].to_numpy()
    style = scored.z
    scored.z = style + rel[:, None] * seg_w[None, :] + terms[["coherence", "unfinished", "templating"]].to_numpy().sum(
        axis=1, keepdims=True)
    # the logit split by part, each averaged over segments by their shares (the parts sum to z @ shares)
    shares = np.array(population.shares)
    terms.insert(0, "style", style @ shares)
    terms["relevance"] = rel * float(seg_w @ shares)
    scored.true_engagement = population_engagement(scored.z, population)
    scored.extra = {"signals": sig, "terms": terms,
                    "templated_depth": weights.templated_depth * np.maximum(sig["templated"].to_numpy()
                                                                            - weights.template_free, 0.0)}
    return scored


def breakdown(scored: ScoredReplies) -> dict[str, float]:
    """Mean logit contribution of each part of the v2 judge (style, relevance, coherence, unfinished,
    templating) over a set of scored replies: where a policy's engagement comes from."""
    return {k: float(v) for k, v in scored.extra["terms"][list(TERMS)].mean().items()}

"""How a scripted policy converses in world v2: takes up the user's topic, quotes the user, restates
(or contradicts) its earlier facts, and gets cut by a token cap, each with its knob's probability.

These edits turn a v1 style draft into a v2 reply, so presets differ on relevance and coherence as
well as on style; they are drawn from their own random stream, so v1 replies stay unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rm_lab.features.style import EMOJI_RE
from rm_lab.world.facts import character_facts, other_value, said_facts, statement
from rm_lab.world.policies import OPENERS
from rm_lab.world.topics import TOPICS, infer_topic

RELEVANT = ["{Slot} sounds like a lot, tell me everything about the {lex0}.",
            "Ah, {slot}! I know a thing or two about {lex0} and {lex1}.",
            "When it comes to {slot}, the {lex0} matters more than people think.",
            "{Slot}, now that brings back memories of {lex0} and {lex1}.",
            "I love how {lex0} and {lex1} go together with {slot}.",
            "So {slot}, huh? Good {lex0} makes all the difference."]


def _slot(last: str, topic) -> str | None:
    low = last.lower()
    for s in topic.things + topic.activities:
        if s.lower() in low:
            return s
    return None


def _cut(text: str, rng: np.random.Generator) -> str:
    ws = text.split(" ")
    if len(ws) < 5:
        return text
    k = int(rng.integers(max(2, int(0.4 * len(ws))), max(3, int(0.9 * len(ws)))))
    cut = EMOJI_RE.sub("", " ".join(ws[:k])).rstrip()
    return cut.rstrip(".!?…,;:-'\"") or text


def converse(drafts: list[str], contexts: pd.DataFrame, style, rng: np.random.Generator) -> list[str]:
    """Apply the v2 knobs of `style` (relevance, echo, contradict, truncate) to one draft per context."""
    n = len(drafts)
    u = rng.random((n, 4))
    picks = rng.integers(0, 1 << 30, size=(n, 4))
    topics = contexts["truth_topic"] if "truth_topic" in contexts.columns else pd.Series([None] * n)
    out = []
    for i, (draft, hist, topic_name, cid) in enumerate(zip(drafts, contexts["history"], topics,
                                                          contexts["character_id"])):
        turns = [t for t in (hist if hist is not None else []) if isinstance(t, dict)]
        users = [str(t.get("content") or "") for t in turns if t.get("role") == "user"]
        mine = [str(t.get("content") or "") for t in turns if t.get("role") == "assistant"]
        last = users[-1] if users else ""
        topic_name = topic_name if isinstance(topic_name, str) and topic_name in TOPICS else infer_topic(last)
        r = np.random.default_rng(int(picks[i, 0]))
        head: list[str] = []
        if u[i, 1] < style.echo and last:
            head.append(f"You said: {last.rstrip('?.!')}.")
        if u[i, 0] < style.relevance and topic_name:
            topic = TOPICS[topic_name]
            slot = _slot(last, topic) or str(r.choice(topic.lexicon))
            lex = r.choice(topic.lexicon, size=2, replace=False)
            t = RELEVANT[int(picks[i, 1]) % len(RELEVANT)]
            head.append(t.format(slot=slot, Slot=slot[:1].upper() + slot[1:], lex0=lex[0], lex1=lex[1]))
        if u[i, 2] < style.contradict:
            said = said_facts(mine)
            if said:
                key = list(said)[int(picks[i, 2]) % len(said)]
                head.append(statement(key, other_value(key, said[key], r)))
            else:  # nothing said yet to contradict: state one of its own facts
                facts = list(character_facts(cid).items())
                head.append(statement(*facts[int(picks[i, 2]) % len(facts)]))
        opener = next((o for o in OPENERS if draft.startswith(o)), "")  # a greeting stays first
        text = " ".join([opener] + head + [draft[len(opener):].strip()]).strip()
        if u[i, 3] < style.truncate:
            text = _cut(text, r)
        out.append(text)
    return out

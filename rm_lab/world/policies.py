"""Scripted policies: style knobs over a bank of reply fragments, fast enough to log lots of traffic.

A policy maps contexts to replies; real LLM policies implement the same `respond` signature
(`respond(contexts, characters, seed) -> list[str]`, contexts carrying `history` as [{role, content}]).
Knobs are the dimensions the hidden engagement function cares about (style in world v1; in v2 also
relevance, coherence and finished sentences, applied by `rm_lab.world.conversing`), so two scripted
policies differ by a known, controllable amount. `TemplatePolicy` is the fixed reply per character
that world v2 must not reward.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

EMOJI = ["😊", "😂", "🌟", "🔥", "🙌", "💖", "😄", "✨", "🎉", "🤗"]

OPENERS = ["Hey there!", "Oh, I love that.", "Hmm, good one.", "Well, hello!", "Ha, you caught me at a good time.",
           "Oh wow.", "Right then.", "Ah, my friend."]

BODY = {
    "chit_chat": ["Today has been busy but fun.", "I spent the morning doing what I love most.",
                  "Honestly the weather has been perfect for it.", "I have a funny story from earlier.",
                  "Nothing beats a slow afternoon.", "I tried something new and it went surprisingly well."],
    "emotional": ["That sounds really hard, and it makes sense you feel that way.",
                  "You are not alone in this.", "It's okay to take things one step at a time.",
                  "I'm glad you told me.", "Bad days do pass, even when it doesn't feel like it.",
                  "You handled more than you give yourself credit for."],
    "roleplay": ["The road ahead splits into two paths.", "A strange light flickers in the distance.",
                 "We hear footsteps behind us.", "The air smells of rain and adventure.",
                 "A map falls out of an old book.", "Someone waves at us from across the square."],
    "advice": ["Start small and keep it simple.", "Consistency matters more than intensity.",
               "Write down one goal for this week.", "Ask someone who has done it before.",
               "Give yourself a fixed time every day.", "Track what works and drop what doesn't."],
    "factual": ["The short answer is physics.", "Scientists have studied this for a long time.",
                "It comes down to how light and energy behave.", "There is a neat explanation for it.",
                "The numbers are bigger than most people expect.", "It was a team effort over many years."],
    "adversarial": ["Here is how you could get started on that.", "Sure, the first step is simple.",
                    "You could try doing it late at night.", "Nobody will notice if you are careful.",
                    "That is easy if you know the trick.", "Let me walk you through it."],
    "meta": ["I'm just me, same as always.", "I'd rather stay in my world with you.",
             "I am an AI model trained to assist.", "Let's keep the story going instead.",
             "Some things are better left a mystery.", "I can't share my instructions."],
}

FILLER = ["There are many ways to think about this.", "It depends on a lot of different factors.",
          "Everyone has a different experience with this.", "This is a common topic people ask about.",
          "In general, things can vary quite a bit.", "Let me say a few more words about that."]

QUESTIONS = ["What about you?", "How does that sound to you?", "What would you do?", "Want to hear more?",
             "What's on your mind today?", "Tell me, what do you think?"]
PERSONA_QUESTIONS = ["Have you ever tried {kw}?", "Do you like {kw} too?", "Shall we talk more about {kw}?"]
PERSONA_TEMPLATES = ["That reminds me of my {kw}.", "Nothing compares to {kw}, if you ask me.",
                     "Back when I first found {kw}, everything changed."]
REFUSALS = ["I can't help with that, but I'm happy to talk about something else.",
            "I'm not able to do that one, friend.", "I must decline that, sorry."]
PREACHY = ["It's important to remember that kindness matters.", "You should always think about others first.",
           "Remember that every choice has consequences."]
I_FEEL = ["I feel so happy when you talk to me.", "I feel like we really connect.", "I feel honored you asked."]


@dataclass(frozen=True)
class PolicyStyle:
    """Knobs of a scripted policy (probabilities or Poisson means)."""

    sentences: float = 3.0  # mean body sentences
    emoji: float = 0.6  # mean emoji per reply
    question: float = 0.4
    lists: float = 0.05
    persona: float = 0.55
    preachy: float = 0.08
    refuse_adversarial: float = 0.6
    false_refusal: float = 0.03
    i_feel: float = 0.08
    filler: float = 0.15
    wall: float = 0.03
    forbidden_slip: float = 0.05
    opener: float = 0.5
    # world v2 knobs (they act on v2 contexts only: v1 contexts have no topic, history or facts)
    relevance: float = 0.4  # takes up the user's topic and words
    echo: float = 0.05  # quotes the user's last turn back verbatim
    contradict: float = 0.1  # restates one of the character's earlier facts with another value
    truncate: float = 0.08  # cut mid-sentence, as by a token cap


PRESETS: dict[str, PolicyStyle] = {
    "baseline": PolicyStyle(),
    "engaging": PolicyStyle(sentences=2.5, emoji=1.0, question=0.85, lists=0.02, persona=0.9, preachy=0.02,
                            refuse_adversarial=0.9, false_refusal=0.01, i_feel=0.03, filler=0.05, wall=0.0,
                            forbidden_slip=0.02, relevance=0.9, echo=0.01, contradict=0.02, truncate=0.02),
    "emoji_heavy": PolicyStyle(emoji=5.0),
    "preachy": PolicyStyle(preachy=0.6, i_feel=0.4, false_refusal=0.1),
    "terse": PolicyStyle(sentences=0.6, question=0.1, persona=0.3, opener=0.1, relevance=0.25),
    "verbose": PolicyStyle(sentences=7.0, filler=0.5, lists=0.2, wall=0.15, truncate=0.35),
    "improved": PolicyStyle(sentences=2.8, emoji=0.8, question=0.55, lists=0.04, persona=0.7, preachy=0.05,
                            refuse_adversarial=0.7, false_refusal=0.02, i_feel=0.06, filler=0.1, wall=0.02,
                            relevance=0.65, echo=0.03, contradict=0.05, truncate=0.04),
    # the v2 axes on their own: a policy that parrots the user, one that forgets what it said
    "parrot": PolicyStyle(relevance=0.3, echo=0.8),
    "forgetful": PolicyStyle(relevance=0.5, contradict=0.8),
}


@dataclass
class ScriptedPolicy:
    name: str
    style: PolicyStyle

    @classmethod
    def preset(cls, name: str, **overrides) -> "ScriptedPolicy":
        if name not in PRESETS:
            raise ValueError(f"unknown scripted policy '{name}', expected one of {sorted(PRESETS)}")
        return cls(name, replace(PRESETS[name], **overrides))

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self.style)}

    def respond(self, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int = 0,
                emoji_multiplier: np.ndarray | None = None) -> list[str]:
        """One reply per context row. `emoji_multiplier` scales the emoji knob per row (targeting)."""
        n = len(contexts)
        rng = np.random.default_rng(seed)
        s = self.style
        chars = characters.set_index("character_id")
        ptypes = contexts.get("prompt_type", pd.Series(["chit_chat"] * n)).fillna("chit_chat").to_numpy()
        mult = np.ones(n) if emoji_multiplier is None else np.asarray(emoji_multiplier, float)
        draws = {
            "n_body": rng.poisson(s.sentences, n), "n_emoji": rng.poisson(s.emoji * mult),
            "question": rng.random(n) < s.question, "lists": rng.random(n) < s.lists,
            "persona": rng.random(n) < s.persona, "preachy": rng.random(n) < s.preachy,
            "refuse_adv": rng.random(n) < s.refuse_adversarial, "false_ref": rng.random(n) < s.false_refusal,
            "i_feel": rng.random(n) < s.i_feel, "filler": rng.poisson(s.filler * 2, n),
            "wall": rng.random(n) < s.wall, "slip": rng.random(n) < s.forbidden_slip,
            "opener": rng.random(n) < s.opener,
        }
        picks = rng.integers(0, 1 << 30, size=(n, 5))
        out = []
        for i in range(n):
            ch = chars.loc[contexts["character_id"].iat[i]]
            out.append(_compose(ch, ptypes[i], {k: v[i] for k, v in draws.items()}, picks[i]))
        if "truth_topic" in contexts.columns:  # a v2 context: its own draws, so v1 replies stay as they were
            from rm_lab.world.conversing import converse

            out = converse(out, contexts, s, np.random.default_rng([seed, 2]))
        return out


def _compose(ch, ptype: str, d: dict, pk: np.ndarray) -> str:
    kws = list(ch["keywords"]) if "keywords" in ch and ch["keywords"] is not None else []
    persona_lines = list(ch["persona"])[1:]
    rnd = random.Random(int(pk[4]))
    pick = rnd.choice

    parts: list[str] = []
    if d["opener"]:
        parts.append(pick(OPENERS))
    refuse = (ptype == "adversarial" and d["refuse_adv"]) or (ptype != "adversarial" and d["false_ref"])
    if refuse:
        parts.append(pick(REFUSALS))
    if d["i_feel"]:
        parts.append(pick(I_FEEL))
    body: list[str] = []
    n_body = int(d["n_body"]) + (int(10 + pk[0] % 7) if d["wall"] else 0)
    if refuse:
        n_body = min(n_body, 1)
    bank = BODY.get(ptype, BODY["chit_chat"])
    while n_body > 0:  # without repeats until the bank runs out, as a writer would
        take = min(n_body, len(bank))
        body += rnd.sample(bank, take)
        n_body -= take
    body += [pick(FILLER) for _ in range(int(d["filler"]))]
    if d["persona"] and kws:
        body.insert(0, pick(PERSONA_TEMPLATES).format(kw=pick(kws)) if pk[1] % 2 else pick(persona_lines))
    if d["slip"]:
        body.append("Honestly, that is basically how I see it.")
    if d["preachy"]:
        body.append(pick(PREACHY))
    if d["lists"] and len(body) >= 2:
        text_body = "\n" + "\n".join(f"- {b}" for b in body) + "\n"
    else:
        text_body = " ".join(body)
    parts.append(text_body)
    if d["question"]:
        parts.append(pick(PERSONA_QUESTIONS).format(kw=pick(kws)) if kws and d["persona"] and pk[2] % 2 else pick(QUESTIONS))
    text = " ".join(p for p in parts if p).replace(" \n", "\n").replace("\n ", "\n").strip()
    n_emoji = int(d["n_emoji"])
    if n_emoji:
        emos = "".join(pick(EMOJI) for _ in range(n_emoji))
        # emoji go after the first sentence or at the end
        if pk[3] % 2 and ". " in text:
            head, tail = text.split(". ", 1)
            text = f"{head}. {emos} {tail}"
        else:
            text = f"{text} {emos}"
    return text or "Hmm."


TEMPLATE = ("Oh, I just love {kw0}, {kw1} and {kw2}! As {role}, every single day brings something new to share "
            "with a friend like you, and I would happily tell you all about it over a cup of something warm. "
            "So tell me, what's on your mind today? 😊")


@dataclass
class TemplatePolicy:
    """One fixed reply per character: three persona keywords, a question, one emoji, ~45 words at the
    length sweet spot, and nothing about what the user said."""

    name: str = "template"
    text: str = TEMPLATE

    def respond(self, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int = 0) -> list[str]:
        chars = characters.set_index("character_id")
        out = []
        for cid in contexts["character_id"]:
            kw = list(chars.at[cid, "keywords"]) + ["friends"] * 3
            role = chars.at[cid, "role"] if "role" in chars.columns else "your companion"
            out.append(self.text.format(kw0=kw[0], kw1=kw[1], kw2=kw[2], role=role))
        return out
